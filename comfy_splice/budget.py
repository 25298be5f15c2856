"""What a run may use: the training and output plans, decided in the core from what is free.

The host (ComfyUI's node layer, or the CLI) describes its memory once as a :class:`Memory`: how to
ask for room (on a GPU ComfyUI unloads models until ``need`` bytes are free, then says what is
free), what RAM is free, how messages name the memory, and the resident-memory factor of the
device. The core then estimates, asks, refuses or plans, so a node calls the core once per
decision and never has to be called back in between.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from .apply import ApplyPlan, plan_apply
from .memory import ViTShape, check_training_fits, estimate_apply_peak, estimate_training_peak
from .run import TrainConfig, training_size


@dataclass(frozen=True)
class Memory:
    """The host's memory, as the plans need it.

    ``free(need)`` returns the bytes free for a run that needs ``need`` (the host may make room
    first); ``ram_free()`` the RAM free for the host part of a streamed pass; ``where`` names the
    memory in messages ('RAM', 'memory on cuda:0'); ``overhead`` is ``memory.overhead_for`` the
    device; ``shared`` says the device is the CPU, so device and RAM are the same memory.
    """

    free: Callable[[int], int]
    ram_free: Callable[[], int]
    where: str
    overhead: float
    shared: bool


def plan_output(memory: Memory, height: int, width: int, requested: int, label: str) -> ApplyPlan:
    """The plan for generator passes over ``requested`` images of ``height`` x ``width``: whole,
    in chunks, or streamed (:func:`comfy_splice.apply.plan_apply`), from what ``memory`` has free."""
    free = memory.free(estimate_apply_peak(height, width, requested, memory.overhead))
    return plan_apply(height, width, requested, free, free if memory.shared else memory.ram_free(),
                      memory.shared, where=memory.where, overhead=memory.overhead, label=label)


@dataclass(frozen=True)
class TrainingPlan:
    """What a training run was planned with: the sizes it trains at, and how its full-size result
    G(structure) is computed."""

    structure_size: tuple[int, int]
    appearance_size: tuple[int, int]
    result: ApplyPlan


def plan_training(structure_hw: tuple[int, int], appearance_hw: tuple[int, int], keyframes: int,
                  vit: ViTShape, config: TrainConfig, memory: Memory, label: str) -> TrainingPlan:
    """Check a training run fits before anything large is allocated, and plan its result.

    The training sizes follow ``config.max_megapixels`` (:func:`comfy_splice.run.training_size`);
    a run that does not fit is refused with the size that would
    (:func:`comfy_splice.memory.check_training_fits`). The result is G(structure) at the structure
    image's full size: when training ran smaller, that pass is planned too (streamed when a large
    photo does not fit whole), so its refusal also comes before training.
    """
    size_a = training_size(*structure_hw, config.max_megapixels)
    size_b = training_size(*appearance_hw, config.max_megapixels)
    full_image = config.full_image_every > 0
    need = estimate_training_peak(size_a, size_b, vit, full_image, keyframes, memory.overhead)
    check_training_fits(size_a, size_b, vit, memory.free(need), full_image, where=memory.where,
                        option="max_megapixels", keyframes=keyframes, overhead=memory.overhead)
    result = plan_output(memory, *structure_hw, 1, label) if size_a != structure_hw else ApplyPlan(1)
    return TrainingPlan(size_a, size_b, result)
