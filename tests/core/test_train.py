"""The training loop: learns, reproducible, cancellable, no wasted ViT work, clear failures."""

from __future__ import annotations

import pytest
import torch
from torchvision.transforms.functional import resize

from comfy_splice.losses import AppearanceLoss, IdentityLoss, StructureLoss
from comfy_splice.run import TrainConfig
from comfy_splice.train import SpliceTrainer, TrainingDiverged, TrainingInterrupted, train_generator

from .conftest import synthetic_image


def _config(**kw) -> TrainConfig:
    base = dict(steps=4, log_every=2, preview_every=0, full_image_every=3)
    base.update(kw)
    return TrainConfig(**base)


PAPER_WEIGHTS = {"structure": 1.0, "appearance": 10.0, "identity": 1.0, "full_structure": 1.0,
                 "full_appearance": 10.0}
CUSTOM = dict(structure=StructureLoss(2.0), appearance=AppearanceLoss(3.0), identity=IdentityLoss(0.5),
              full_structure_weight=4.0, full_appearance_weight=20.0)
CUSTOM_WEIGHTS = {"structure": 2.0, "appearance": 3.0, "identity": 0.5, "full_structure": 4.0,
                  "full_appearance": 20.0}


@pytest.mark.parametrize("overrides, weights", [({}, PAPER_WEIGHTS), (CUSTOM, CUSTOM_WEIGHTS)],
                         ids=["defaults are the paper's", "custom"])
def test_the_step_gradient_is_the_configured_weighted_sum_of_the_terms(tiny_backbone, pair,
                                                                        overrides, weights) -> None:
    """One step with every term on: the generator's gradient equals sum(weight x term gradient),
    the term gradients taken one by one on the same draw by a twin trainer (same seed)."""
    config = _config(warmup_steps=0, full_image_every=1, **overrides)
    twin = SpliceTrainer(tiny_backbone, *pair, config, "cpu")
    params = list(twin.generator.parameters())
    a_crop = twin.augmenter.structure(twin.structure_image)
    b_crop = twin.augmenter.appearance(twin.appearance_image)
    terms = twin.loss_terms(a_crop, b_crop, warm=True, full=True)
    assert set(terms) == set(weights)
    flat = {}
    for name, value in terms.items():
        grads = torch.autograd.grad(value, params, retain_graph=True, allow_unused=True)
        flat[name] = torch.cat([(g if g is not None else torch.zeros_like(p)).flatten()
                                for g, p in zip(grads, params)])
    expected = sum(weights[name] * flat[name] for name in weights)
    for name in weights:  # every term moves the total visibly, so a wrong weight would show
        assert weights[name] * flat[name].norm() > 1e-3 * expected.norm(), name

    trainer = SpliceTrainer(tiny_backbone, *pair, config, "cpu")
    trainer.step()
    got = torch.cat([p.grad.flatten() for p in trainer.generator.parameters()])
    assert ((got - expected).norm() / expected.norm()).item() < 1e-5


def test_the_schedule_is_the_papers(tiny_backbone, pair) -> None:
    """Step 0 appearance-only, structure and identity from step 1, the whole image every 75th."""
    trainer = SpliceTrainer(tiny_backbone, *pair, TrainConfig(), "cpu")
    seen: list[tuple[int, bool, bool]] = []
    params = list(trainer.generator.parameters())

    def record(a_crop, b_crop, warm, full):
        seen.append((trainer.step_index, warm, full))
        zero = sum(p.sum() for p in params) * 0
        return {name: zero for name in PAPER_WEIGHTS}

    trainer.loss_terms = record
    for start in (0, 74, 149):  # the schedule reads step_index only: jump to the boundaries
        trainer.step_index = start
        for _ in range(3):
            trainer.step()
    assert [s for s, _, _ in seen] == [0, 1, 2, 74, 75, 76, 149, 150, 151]
    assert [s for s, warm, _ in seen if not warm] == [0]
    assert [s for s, _, full in seen if full] == [0, 75, 150]


def test_adam_runs_with_the_papers_rate_and_betas(tiny_backbone, pair) -> None:
    """Two steps match Adam(lr 2e-3, betas (0, 0.99), eps 1e-8) applied to the step's gradients."""
    trainer = SpliceTrainer(tiny_backbone, *pair, _config(), "cpu")
    params = list(trainer.generator.parameters())
    p0 = [p.detach().clone() for p in params]
    trainer.step()
    g1 = [p.grad.clone() for p in params]
    p1 = [p.detach().clone() for p in params]
    trainer.step()
    g2 = [p.grad.clone() for p in params]
    lr, beta2, eps = 2e-3, 0.99, 1e-8
    for a, b, c, d, e in zip(p0, p1, params, g1, g2):
        v1 = (1 - beta2) * d.square()
        # atol: fp32 rounding of a parameter near 1 (updates are ~lr = 2e-3 in size)
        torch.testing.assert_close(b - a, -lr * d / ((v1 / (1 - beta2)).sqrt() + eps),
                                   rtol=1e-3, atol=1e-6)
        v2 = beta2 * v1 + (1 - beta2) * e.square()  # beta1 = 0: no momentum, m = g
        torch.testing.assert_close(c.detach() - b, -lr * e / ((v2 / (1 - beta2 ** 2)).sqrt() + eps),
                                   rtol=1e-3, atol=1e-6)


def test_a_short_run_lowers_the_loss(tiny_backbone, pair) -> None:
    structure, appearance = pair
    config = _config(steps=40, log_every=10, full_image_every=0)
    trained = train_generator(tiny_backbone, structure, appearance, config, "cpu")
    loss = trained.history["loss"]
    assert len(loss) == 40
    # step 0 is the appearance-only warm-up; compare the first regular steps with the last
    assert sum(loss[-5:]) / 5 < 0.7 * sum(loss[1:6]) / 5


def test_same_seed_same_generator(tiny_backbone, pair) -> None:
    a = train_generator(tiny_backbone, *pair, _config(seed=3), "cpu")
    b = train_generator(tiny_backbone, *pair, _config(seed=3), "cpu")
    c = train_generator(tiny_backbone, *pair, _config(seed=4), "cpu")
    probe = synthetic_image(48, 48, seed=9)
    with torch.no_grad():
        assert torch.equal(a.generator(probe), b.generator(probe))
        assert not torch.equal(a.generator(probe), c.generator(probe))
    assert a.history == b.history


def test_four_vit_forwards_in_two_batched_calls_per_regular_step(tiny_backbone, pair) -> None:
    trainer = SpliceTrainer(tiny_backbone, *pair, _config(full_image_every=3), "cpu")
    calls: list[tuple[int, bool]] = []
    sizes: set[tuple[int, int]] = set()
    full_inputs: list[torch.Tensor] = []
    original = type(tiny_backbone).features

    def counting(self, images, layers=(-1,), **kw):
        calls.append((images.shape[0], torch.is_grad_enabled()))
        sizes.add(tuple(images.shape[-2:]))
        if images.shape[-2:] != (224, 224) and not torch.is_grad_enabled():
            full_inputs.append(images)
        return original(self, images, layers, **kw)

    type(tiny_backbone).features = counting
    try:
        trainer.step()  # step 0: full-image step, warm-up (appearance only)
        step0 = list(calls)
        calls.clear()
        trainer.step()  # step 1: a regular step
        step1 = list(calls)
        calls.clear()
        trainer.step()  # step 2
        calls.clear()
        trainer.step()  # step 3: full-image step after warm-up (A's target is cached)
        step3 = list(calls)
    finally:
        type(tiny_backbone).features = original
    assert step1 == [(2, False), (2, True)]
    assert step3 == [(2, False), (2, True), (1, True)]
    assert step0 == [(1, False), (1, True), (1, False), (1, True)]  # B' target, x, A target once, G(A)
    # DINO sees square crops at 224 px and the 72x96 image at short side 224, resized like the
    # reference (torchvision Resize(224, max_size=480) without antialias), ImageNet-normalised
    assert sizes == {(224, 224), (224, 298)}
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    resized = resize(pair[0], 224, max_size=480, antialias=False)
    torch.testing.assert_close(full_inputs[0], (resized - mean) / std)
    assert all(p.grad is None for p in tiny_backbone.parameters()), "no DINO weight gradients"


def test_stop_check_cancels_within_one_step(tiny_backbone, pair) -> None:
    done: list[int] = []
    with pytest.raises(TrainingInterrupted):
        train_generator(tiny_backbone, *pair, _config(steps=50), "cpu",
                        on_step=lambda step, total: done.append(step),
                        should_stop=lambda: len(done) >= 3)
    assert done == [1, 2, 3]


def test_on_step_exceptions_propagate(tiny_backbone, pair) -> None:
    class HostInterrupt(Exception):
        pass

    def interrupt(step: int, total: int) -> None:
        if step == 2:
            raise HostInterrupt

    with pytest.raises(HostInterrupt):
        train_generator(tiny_backbone, *pair, _config(steps=50), "cpu", on_step=interrupt)


def test_previews_and_logs_arrive(tiny_backbone, pair) -> None:
    previews, logs = [], []
    trained = train_generator(tiny_backbone, *pair, _config(steps=4, preview_every=2, log_every=2),
                              "cpu", on_preview=lambda step, img: previews.append((step, tuple(img.shape))),
                              on_log=lambda step, losses: logs.append((step, losses)))
    assert previews == [(2, (1, 3, 72, 96)), (4, (1, 3, 72, 96))]
    history = trained.history
    assert [s for s, _ in logs] == [2, 4]
    for step, losses in logs:
        assert losses == {name: series[step - 1] for name, series in history.items()}
    for i in range(4):  # the logged total is the weighted sum of the logged terms
        total = sum(w * history[name][i] for name, w in PAPER_WEIGHTS.items())
        assert history["loss"][i] == pytest.approx(total, rel=1e-6)
    # step 0 is appearance-only; structure and identity are on from step 1; the whole image at
    # steps 0 and 3 (full_image_every=3)
    assert history["structure"][0] == 0 == history["identity"][0]
    assert all(history["structure"][i] > 0 and history["identity"][i] > 0 for i in (1, 2, 3))
    assert [i for i in range(4) if history["full_structure"][i] > 0] == [0, 3]


def test_non_finite_loss_raises_a_clear_error(tiny_backbone, pair) -> None:
    with pytest.raises(TrainingDiverged, match="Lower the learning rate"):
        train_generator(tiny_backbone, *pair, _config(steps=6, lr=1e30), "cpu")


def test_bf16_autocast_keeps_the_keys_in_fp32(tiny_backbone, pair) -> None:
    """Under bf16 autocast the block the losses read runs in fp32, the earlier ones in bf16."""
    trainer = SpliceTrainer(tiny_backbone, *pair, _config(dtype="bf16", steps=3), "cpu")
    assert trainer.autocast_dtype == torch.bfloat16 and trainer.fp32_keys
    image = synthetic_image(64, 64, seed=5)
    with torch.no_grad():
        feats = trainer._features([image])[0][1]
        trainer.fp32_keys = False
        low = trainer._features([image])[0][1]
        trainer.fp32_keys = True
        trainer.autocast_dtype = None
        exact = trainer._features([image])[0][1]
    assert feats.keys.dtype == torch.float32 and low.keys.dtype == torch.bfloat16
    error = ((feats.keys - exact.keys).norm() / exact.keys.norm()).item()
    low_error = ((low.keys.float() - exact.keys).norm() / exact.keys.norm()).item()
    assert error < low_error, "fp32 keys are closer to an fp32 forward than bf16 keys"
    trained = train_generator(tiny_backbone, *pair, _config(steps=3, dtype="bf16"), "cpu")
    assert all(torch.isfinite(torch.tensor(trained.history["loss"])))


@pytest.mark.parametrize("size", [(8, 8), (1, 1), (20, 200)])
def test_tiny_images_are_refused_with_the_minimum_size(tiny_backbone, size) -> None:
    small = torch.rand(1, 3, *size)
    with pytest.raises(ValueError, match="at least 32 px"):
        train_generator(tiny_backbone, small, synthetic_image(64, 64, 0), _config(), "cpu")


def test_bad_configs_are_refused() -> None:
    with pytest.raises(ValueError, match="steps must be at least 1"):
        TrainConfig(steps=0)
    with pytest.raises(ValueError, match="dtype"):
        TrainConfig(dtype="fp16")


def test_config_round_trips_through_a_dict() -> None:
    config = TrainConfig(steps=7, structure=StructureLoss(2.0, 5), betas=(0.1, 0.9))
    assert TrainConfig.from_dict(config.to_dict()) == config
