"""Splice Output's plan (comfy_splice/apply.py): a pure function of the free bytes that picks
whole images in chunks, the streamed pass, or a refusal; and the rules every caller shares once
(comfy_splice/refusal.py, the padding, the training size, the step and dtype checks)."""

from __future__ import annotations

import pytest
import torch

from comfy_splice.apply import ApplyPlan, plan_apply, run_apply
from comfy_splice.budget import Memory, TrainingPlan, plan_training
from comfy_splice.descriptors import DescriptorMemoryError
from comfy_splice.generator import MIN_SIDE, MULTIPLE, build_generator, padding
from comfy_splice.memory import ViTShape, estimate_apply_peak, estimate_streamed_peak, estimate_training_peak
from comfy_splice.refusal import (MemoryBudgetError, SpliceRefusal, format_bytes,
                                  mentions_out_of_memory)
from comfy_splice.run import MIN_IMAGE_SIDE, TrainConfig, check_dtype, check_steps, training_size
from comfy_splice.train import TrainingDiverged, downscale

from .conftest import synthetic_image

H, W = 200, 296


def test_enough_memory_runs_whole_images_in_the_requested_chunks() -> None:
    free = estimate_apply_peak(H, W, 4)
    assert plan_apply(H, W, 4, free, 0, shared=True) == ApplyPlan(4)
    assert plan_apply(H, W, 4, free, free, shared=False) == ApplyPlan(4)


def test_less_memory_fewer_images_at_a_time() -> None:
    free = estimate_apply_peak(H, W, 2)
    assert plan_apply(H, W, 4, free, 0, shared=True) == ApplyPlan(2)
    # the CPU's resident overhead counts: the same bytes hold less there
    assert plan_apply(H, W, 4, free, 0, shared=True, overhead=2.5) != ApplyPlan(2)


def test_one_image_over_the_free_memory_is_streamed_in_bands() -> None:
    one = estimate_apply_peak(H, W, 1)
    streamed = estimate_streamed_peak(H, W, 0)
    device_free = one - 1  # a GPU that cannot hold one whole image, plenty of RAM
    plan = plan_apply(H, W, 4, device_free, 1 << 34, shared=False, where="memory on cuda:0")
    assert plan.chunk == 1 and plan.streamed is not None
    assert plan.streamed.ram_bytes == streamed.ram_bytes
    assert plan.streamed.device_bytes <= device_free
    assert plan.describe() == "in bands" and ApplyPlan(3).describe() == "in chunks of 3"


def test_nothing_fits_a_refusal_in_gib_naming_the_size_that_fits() -> None:
    with pytest.raises(MemoryBudgetError, match=r"an image of about \d+x\d+ would fit") as refused:
        plan_apply(H, W, 1, 12 << 20, 12 << 20, shared=True, where="RAM")
    message = str(refused.value)
    assert "GiB" in message and " GB" not in message and "MiB" not in message
    fit_w, fit_h = (int(v) for v in message.split("an image of about ")[1].split(" ")[0].split("x"))
    assert plan_apply(fit_h, fit_w, 1, 12 << 20, 12 << 20, shared=True).streamed is not None
    with pytest.raises(MemoryBudgetError, match=r"0\.0010 GiB is free: free memory"):
        plan_apply(H, W, 1, 1 << 20, 1 << 20, shared=True, where="RAM")
    assert isinstance(refused.value, SpliceRefusal)


def test_the_plan_is_run_as_decided_with_the_same_result() -> None:
    generator = build_generator(2).eval()
    images = torch.cat([synthetic_image(H, W, seed=1), synthetic_image(H, W, seed=2)])
    whole = run_apply(generator, images, "cpu", ApplyPlan(2))
    one_at_a_time = run_apply(generator, images, "cpu", ApplyPlan(1))
    fit = plan_apply(H, W, 2, estimate_apply_peak(H, W, 1) - 1, 1 << 34, shared=False).streamed
    passes: list[int] = []
    banded = run_apply(generator, images, "cpu", ApplyPlan(1, fit),
                       between_passes=lambda: passes.append(1))
    assert float((whole - one_at_a_time).abs().max()) <= 1e-5  # per-image norms: batch-free
    assert float((banded - whole).abs().max()) <= 1e-5 and passes


def test_one_unit_one_list_of_out_of_memory_words() -> None:
    assert format_bytes(1.5 * 2**30) == "1.50 GiB" and format_bytes(2**20) == "0.0010 GiB"
    for text in ("DefaultCPUAllocator: can't allocate memory: you tried 1 GB",
                 "CUDA out of memory. Tried to allocate", "MPS backend: Not enough memory"):
        assert mentions_out_of_memory(text), text
    assert not mentions_out_of_memory("linalg.svd: failed to converge")


def test_every_refusal_derives_from_one_base() -> None:
    for kind in (MemoryBudgetError, DescriptorMemoryError, TrainingDiverged):
        assert issubclass(kind, SpliceRefusal) and issubclass(kind, ValueError), kind


@pytest.mark.parametrize("height,width", [(1, 1), (31, 33), (64, 96), (200, 296), (1080, 1920)])
def test_padding_brings_both_sides_to_the_generator_multiple(height: int, width: int) -> None:
    top, bottom, left, right = padding(height, width)
    for side, a, b in ((height, top, bottom), (width, left, right)):
        assert (side + a + b) % MULTIPLE == 0 and side + a + b >= MIN_SIDE and 0 <= b - a <= 1


def test_the_training_size_is_the_trainers_and_the_checks() -> None:
    image = synthetic_image(300, 2000, seed=0)
    assert training_size(300, 2000, 0.0) == (300, 2000)
    small = training_size(300, 2000, 0.001)
    assert small[0] == MIN_IMAGE_SIDE  # scaled below the minimum side: held at it
    assert tuple(downscale(image, 0.001).shape[-2:]) == small
    assert tuple(downscale(image, 0.2).shape[-2:]) == training_size(300, 2000, 0.2)


def test_steps_and_dtype_are_checked_once_for_node_and_config() -> None:
    with pytest.raises(SpliceRefusal, match="steps must be at least 1"):
        check_steps(0)
    with pytest.raises(SpliceRefusal, match="steps must be at least 1"):
        TrainConfig(steps=0)
    with pytest.raises(SpliceRefusal, match="dtype 'fp16' is not one of auto, bf16, fp32"):
        check_dtype("fp16")
    with pytest.raises(SpliceRefusal, match="dtype 'fp16' is not one of auto, bf16, fp32"):
        TrainConfig(dtype="fp16")


VIT_B8 = ViTShape(params=85_800_000, depth=12, embed_dim=768, patch_size=8)


def _memory(free: int, asked: list[int], shared: bool = True) -> Memory:
    def room(need: int) -> int:
        asked.append(need)
        return free

    return Memory(free=room, ram_free=lambda: free, where="RAM", overhead=1.0, shared=shared)


def test_a_training_plan_asks_the_host_for_its_estimate_and_refuses_before_training() -> None:
    config = TrainConfig(steps=10)
    need = estimate_training_peak((H, W), (H, W), VIT_B8, True, 1, 1.0)
    asked: list[int] = []
    plan = plan_training((H, W), (H, W), 1, VIT_B8, config, _memory(need, asked), "Train")
    assert asked == [need]  # the host was asked for exactly the estimate, once
    assert plan == TrainingPlan((H, W), (H, W), ApplyPlan(1))
    with pytest.raises(MemoryBudgetError, match="max_megapixels"):
        plan_training((H, W), (H, W), 1, VIT_B8, config, _memory(need - 1, []), "Train")


def test_a_downscaled_training_plans_its_full_size_result_too() -> None:
    config = TrainConfig(steps=10, max_megapixels=0.02)
    big = (3000, 4000)
    small = training_size(*big, 0.02)
    train_need = estimate_training_peak(small, small, VIT_B8, True, 1, 1.0)
    result_need = estimate_apply_peak(*big, 1)
    asked: list[int] = []
    plan = plan_training(big, big, 1, VIT_B8, config, _memory(max(train_need, result_need), asked), "Train")
    assert plan.structure_size == small != big
    assert asked == [train_need, result_need] and plan.result == ApplyPlan(1)
    # room to train but not for the whole result at once: the result is streamed, not refused
    assert train_need < result_need  # the case this checks: training fits, the whole result does not
    plan = plan_training(big, big, 1, VIT_B8, config, _memory(train_need, [], shared=False), "Train")
    assert plan.result.streamed is not None
