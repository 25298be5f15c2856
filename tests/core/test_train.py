"""The training loop: learns, reproducible, cancellable, no wasted ViT work, clear failures."""

from __future__ import annotations

import pytest
import torch

from comfy_splice.losses import StructureLoss
from comfy_splice.train import (SpliceTrainer, TrainConfig, TrainingDiverged, TrainingInterrupted,
                                train_generator)

from .conftest import synthetic_image


def _config(**kw) -> TrainConfig:
    base = dict(steps=4, log_every=2, preview_every=0, full_image_every=3)
    base.update(kw)
    return TrainConfig(**base)


def test_defaults_are_the_papers() -> None:
    c = TrainConfig()
    assert (c.steps, c.lr, c.betas, c.full_image_every, c.warmup_steps) == (2000, 2e-3, (0.0, 0.99), 75, 1)
    assert (c.full_structure_weight, c.full_appearance_weight) == (1.0, 10.0)
    assert (c.dino_short_side, c.dino_long_side_max, c.antialias) == (224, 480, False)


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
    original = type(tiny_backbone).features

    def counting(self, images, layers=(-1,)):
        calls.append((images.shape[0], torch.is_grad_enabled()))
        return original(self, images, layers)

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
    train_generator(tiny_backbone, *pair, _config(steps=4, preview_every=2, log_every=2), "cpu",
                    on_preview=lambda step, img: previews.append((step, tuple(img.shape))),
                    on_log=lambda step, losses: logs.append((step, sorted(losses))))
    assert previews == [(2, (1, 3, 72, 96)), (4, (1, 3, 72, 96))]
    assert [s for s, _ in logs] == [2, 4] and "structure" in logs[0][1]


def test_non_finite_loss_raises_a_clear_error(tiny_backbone, pair) -> None:
    with pytest.raises(TrainingDiverged, match="Lower the learning rate"):
        train_generator(tiny_backbone, *pair, _config(steps=6, lr=1e30), "cpu")


def test_bf16_autocast_runs_on_cpu(tiny_backbone, pair) -> None:
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
