"""One generator per shot: training on several keyframes of one size.

A single keyframe must train exactly as before keyframes existed (compared with numbers the
earlier code wrote, see keyframe_reference.py); with K keyframes every keyframe is augmented
once in every K steps, the full-image steps cycle through the keyframes, and each keyframe's
full-image target is computed once.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest
import torch

from comfy_splice.run import TrainConfig
from comfy_splice.train import SpliceTrainer, stack_keyframes, train_generator

from .conftest import synthetic_image
from .keyframe_reference import FIXTURE, run_portable

DINO_SQUARE = (224, 224)  # what every square crop becomes before DINO


def _keyframes(count: int, height: int = 72, width: int = 96) -> torch.Tensor:
    return torch.cat([synthetic_image(height, width, seed=10 + i) for i in range(count)])


def test_one_keyframe_trains_bit_for_bit_as_before(tmp_path: Path) -> None:
    expected = json.loads(FIXTURE.read_text())
    got = run_portable(tmp_path)
    assert got["history"] == expected["history"], (
        f"a single structure image no longer trains as the code before keyframes did (fixture "
        f"written with torch {expected['torch']}, running {got['torch']}); see {FIXTURE.name}")
    assert got["weights_sha256"] == expected["weights_sha256"]


def test_a_repeated_keyframe_trains_exactly_like_one(tmp_path: Path) -> None:
    """The keyframe path itself adds no numerical change: [A, A] gives the run of [A]."""
    expected = json.loads(FIXTURE.read_text())
    got = run_portable(tmp_path, repeat=2)
    assert got["history"] == expected["history"]
    assert got["weights_sha256"] == expected["weights_sha256"]


def _record_schedule(trainer: SpliceTrainer, steps: int) -> tuple[list[int], list[int], list[tuple[int, ...]]]:
    """Run ``steps`` steps and observe which keyframe each augmentation and each full-image
    generator pass actually read, and the shapes of the no-grad ViT forwards."""
    pointers = {trainer.keyframe(i).data_ptr(): i for i in range(trainer.keyframes)}
    augmented: list[int] = []
    full: list[int] = []
    target_shapes: list[tuple[int, ...]] = []
    original_structure = trainer.augmenter.structure

    def structure(image: torch.Tensor) -> torch.Tensor:
        augmented.append(pointers[image.data_ptr()])
        return original_structure(image)

    def pre_hook(_module: torch.nn.Module, args: tuple[torch.Tensor, ...]) -> None:
        if args[0].data_ptr() in pointers and args[0].shape == trainer.keyframe(0).shape:
            full.append(pointers[args[0].data_ptr()])

    original_features = type(trainer.backbone).features

    def features(self, images, layers=(-1,), **kwargs):
        if not torch.is_grad_enabled():
            target_shapes.extend([tuple(images.shape[-2:])] * images.shape[0])
        return original_features(self, images, layers, **kwargs)

    trainer.augmenter.structure = structure  # type: ignore[method-assign]
    handle = trainer.generator.register_forward_pre_hook(pre_hook)
    type(trainer.backbone).features = features
    try:
        for _ in range(steps):
            trainer.step()
    finally:
        type(trainer.backbone).features = original_features
        handle.remove()
    return augmented, full, target_shapes


def test_keyframes_cycle_and_full_targets_are_computed_once(tiny_backbone) -> None:
    k, every, steps = 3, 2, 7
    appearance = synthetic_image(80, 64, seed=2)
    config = TrainConfig(steps=steps, log_every=steps, preview_every=0, full_image_every=every)
    trainer = SpliceTrainer(tiny_backbone, _keyframes(k), appearance, config, "cpu")
    augmented, full, target_shapes = _record_schedule(trainer, steps)

    assert len(augmented) == steps
    for start in range(steps - k + 1):
        assert set(augmented[start:start + k]) == set(range(k)), f"steps {start}..{start + k - 1}: {augmented}"
    assert full == [0, 1, 2, 0], "one full-image step every 2 steps, cycling through the keyframes"
    # No-grad forwards: the crops' targets (square, DINO 224x224) and each keyframe's whole-image
    # target exactly once, though every keyframe had a full-image step more than once.
    whole = [s for s in target_shapes if s != DINO_SQUARE]
    assert len(whole) == k
    assert len(trainer._full_targets) == k
    trainer.flush_logs()


def test_a_step_with_keyframes_costs_what_a_single_pair_costs(tiny_backbone) -> None:
    """Same ViT forwards, batch for batch, as one structure image, except one whole-image target
    per extra keyframe (each computed once)."""
    config = TrainConfig(steps=7, log_every=7, preview_every=0, full_image_every=3)
    appearance = synthetic_image(80, 64, seed=2)
    calls: dict[int, list[tuple[int, bool]]] = {}
    original = type(tiny_backbone).features
    for k in (1, 3):
        trainer = SpliceTrainer(tiny_backbone, _keyframes(k), appearance, config, "cpu")
        seen: list[tuple[int, bool]] = []

        def counting(self, images, layers=(-1,), seen=seen, **kwargs):
            seen.append((images.shape[0], torch.is_grad_enabled()))
            return original(self, images, layers, **kwargs)

        type(tiny_backbone).features = counting
        try:
            for _ in range(config.steps):
                trainer.step()
        finally:
            type(tiny_backbone).features = original
        calls[k] = seen
    # The two extra keyframes' whole-image targets (no grad, batch of one), nothing else.
    assert Counter(calls[3]) - Counter(calls[1]) == Counter({(1, False): 2})
    assert not Counter(calls[1]) - Counter(calls[3])


def test_keyframes_train_and_each_is_rendered(tiny_backbone) -> None:
    keyframes = _keyframes(3)
    config = TrainConfig(steps=3, log_every=3, preview_every=0, full_image_every=1)
    trained = train_generator(tiny_backbone, keyframes, synthetic_image(80, 64, seed=2), config, "cpu")
    assert len(trained.history["loss"]) == 3
    with torch.no_grad():
        out = trained.generator(keyframes)
    assert out.shape == keyframes.shape
    assert not torch.equal(out[0], out[1])


def test_keyframes_of_different_sizes_are_refused_with_the_fix() -> None:
    frames = [synthetic_image(72, 96, seed=1), synthetic_image(72, 96, seed=2), synthetic_image(64, 96, seed=3)]
    with pytest.raises(ValueError, match=r"keyframe 0 is 96x72 and keyframe 2 is 96x64\. Resize them"):
        stack_keyframes(frames)
    assert stack_keyframes(frames[:2]).shape == (2, 3, 72, 96)


def test_a_bad_keyframe_is_named(tiny_backbone) -> None:
    keyframes = _keyframes(3)
    keyframes[1, 0, 5, 5] = float("nan")
    with pytest.raises(ValueError, match="structure keyframe 1 image contains NaN"):
        SpliceTrainer(tiny_backbone, keyframes, synthetic_image(80, 64, seed=2), TrainConfig(steps=1), "cpu")
    with pytest.raises(ValueError, match="structure keyframe 0 image is 40x24 px"):
        stack_keyframes(torch.rand(2, 3, 24, 40))


def test_an_appearance_batch_is_refused(tiny_backbone) -> None:
    with pytest.raises(ValueError, match=r"appearance image must be one RGB image \[1, 3, H, W\]"):
        SpliceTrainer(tiny_backbone, _keyframes(2), torch.rand(2, 3, 64, 64), TrainConfig(steps=1), "cpu")
