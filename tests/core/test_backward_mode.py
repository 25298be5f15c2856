"""The generator's backward mode is a per-run choice of the training plan: PLAIN (no recomputation)
where its memory is free, LEAN (checkpoints and the lean merge) where only that fits, a refusal
where not even LEAN fits; both modes train the same numbers."""

from __future__ import annotations

import logging

import pytest
import torch

from comfy_splice.apply import ApplyPlan
from comfy_splice.budget import Memory, TrainingPlan, plan_training, standalone_memory
from comfy_splice.dino.vit import DinoBackbone
from comfy_splice.generator import LEAN, PLAIN, build_generator
from comfy_splice.measure import TensorPeakTracker
from comfy_splice.memory import ViTShape, estimate_training_peak, vit_shape
from comfy_splice.refusal import MemoryBudgetError
from comfy_splice.run import TrainConfig
from comfy_splice.train import SpliceTrainer

from .conftest import synthetic_image

VIT_B8 = ViTShape(params=85_800_000, depth=12, embed_dim=768, patch_size=8)
H, W = 200, 296


def _memory(free: int) -> Memory:
    return Memory(free=lambda need: free, ram_free=lambda: free, where="RAM", overhead=1.0, shared=True)


def _needs(config: TrainConfig) -> tuple[int, int]:
    full = config.full_image_every > 0
    return (estimate_training_peak((H, W), (H, W), VIT_B8, full, 1, 1.0, backward_mode=LEAN),
            estimate_training_peak((H, W), (H, W), VIT_B8, full, 1, 1.0, backward_mode=PLAIN))


def test_the_plain_estimate_is_the_larger() -> None:
    lean, plain = _needs(TrainConfig())
    assert lean < plain
    with pytest.raises(ValueError, match="backward_mode is 'fast'"):
        estimate_training_peak((H, W), (H, W), VIT_B8, backward_mode="fast")


def test_a_large_budget_plans_plain_a_small_one_lean_and_too_small_refuses(
        caplog: pytest.LogCaptureFixture) -> None:
    config = TrainConfig(steps=10)
    lean, plain = _needs(config)
    with caplog.at_level(logging.INFO, logger="comfy_splice.budget"):
        assert plan_training((H, W), (H, W), 1, VIT_B8, config, _memory(plain), "Train") == \
            TrainingPlan((H, W), (H, W), ApplyPlan(1), PLAIN)
    assert "generator backward plain" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="comfy_splice.budget"):
        for free in (lean, plain - 1):
            assert plan_training((H, W), (H, W), 1, VIT_B8, config, _memory(free), "Train").backward_mode == LEAN
    assert "generator backward lean" in caplog.text
    # the refusal follows the LEAN estimate, the least a run needs
    with pytest.raises(MemoryBudgetError, match="max_megapixels"):
        plan_training((H, W), (H, W), 1, VIT_B8, config, _memory(lean - 1), "Train")


def test_standalone_memory_reports_free_ram() -> None:
    memory = standalone_memory("cpu")
    assert memory.shared and memory.where == "RAM" and memory.overhead > 1
    assert memory.free(1) > 0 and memory.ram_free() > 0


def test_an_unknown_mode_is_refused() -> None:
    net = build_generator(0)
    net.backward_mode = "fast"
    with pytest.raises(ValueError, match="backward_mode is 'fast'"):
        net(torch.rand(1, 3, 64, 64))


def _trainer(backbone: DinoBackbone, mode: str) -> SpliceTrainer:
    structure, appearance = synthetic_image(96, 128, seed=1), synthetic_image(112, 96, seed=2)
    config = TrainConfig(steps=3, full_image_every=2, seed=5)
    return SpliceTrainer(backbone, structure, appearance, config, "cpu", backward_mode=mode)


def test_both_modes_train_the_same_bits_side_by_side(tiny_backbone: DinoBackbone) -> None:
    """Two runs in one process, one of each mode, stepped in turn (full-image steps 0 and 2 and a
    regular step 1): each generator keeps its own mode, and gradients, losses and weights agree
    with tolerance zero."""
    lean, plain = _trainer(tiny_backbone, LEAN), _trainer(tiny_backbone, PLAIN)
    for _ in range(3):
        lean.step()
        plain.step()
        assert lean.generator.backward_mode == LEAN and plain.generator.backward_mode == PLAIN
        for (name, a), b in zip(lean.generator.named_parameters(), plain.generator.parameters()):
            assert a.grad is not None and b.grad is not None
            assert torch.equal(a.grad, b.grad), name
            assert torch.equal(a, b), name
    assert lean.flush_logs() == plain.flush_logs()


def test_the_plain_estimate_bounds_the_measured_plain_peak(tiny_backbone: DinoBackbone) -> None:
    structure, appearance = synthetic_image(160, 224, seed=1), synthetic_image(192, 144, seed=2)
    trainer = SpliceTrainer(tiny_backbone, structure, appearance, TrainConfig(steps=2), "cpu",
                            backward_mode=PLAIN)
    peak = 0
    for _ in range(2):  # step 0 with G on the whole image, then a regular step
        tracker = TensorPeakTracker()
        tracker.add([*trainer.backbone.parameters(), *trainer.generator.parameters(),
                     trainer.structure_image, trainer.appearance_image])
        for state in trainer.optimizer.state.values():
            tracker.add(v for v in state.values() if isinstance(v, torch.Tensor))
        with tracker:
            trainer.step()
        peak = max(peak, tracker.peak)
    estimate = estimate_training_peak((160, 224), (192, 144), vit_shape(tiny_backbone),
                                      backward_mode=PLAIN)
    assert peak <= estimate <= 3 * peak, (peak, estimate)
