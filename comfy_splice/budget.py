"""What a run may use: the training and output plans, decided in the core from what is free.

The host (ComfyUI's node layer, or the CLI) describes its memory once as a :class:`Memory`: how to
ask for room (on a GPU ComfyUI unloads models until ``need`` bytes are free, then says what is
free), what RAM is free, how messages name the memory, and the resident-memory factor of the
device. The core then estimates, asks, refuses or plans, so a node calls the core once per
decision and never has to be called back in between.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Callable

import torch

from .apply import ApplyPlan, plan_apply
from .generator import LEAN, PLAIN
from .memory import (ViTShape, check_training_fits, estimate_apply_peak, estimate_training_peak,
                     overhead_for)
from .run import TrainConfig, training_size

log = logging.getLogger(__name__)


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
    """What a training run was planned with: the sizes it trains at, how its full-size result
    G(structure) is computed, and the generator's ``backward_mode`` (``comfy_splice.generator``:
    PLAIN, faster, where its memory is free; LEAN, recomputing, where only that fits)."""

    structure_size: tuple[int, int]
    appearance_size: tuple[int, int]
    result: ApplyPlan
    backward_mode: str = LEAN


def plan_training(structure_hw: tuple[int, int], appearance_hw: tuple[int, int], keyframes: int,
                  vit: ViTShape, config: TrainConfig, memory: Memory, label: str) -> TrainingPlan:
    """Check a training run fits before anything large is allocated, and plan its result.

    The training sizes follow ``config.max_megapixels`` (:func:`comfy_splice.run.training_size`);
    a run that does not fit is refused with the size that would
    (:func:`comfy_splice.memory.check_training_fits`). The result is G(structure) at the structure
    image's full size: when training ran smaller, that pass is planned too (streamed when a large
    photo does not fit whole), so its refusal also comes before training.

    The host is asked for the LEAN mode's estimate (the least the run needs, so no model is
    unloaded for speed alone); when what it has free also holds the PLAIN mode's, the run trains
    without recomputation (same numbers, less time), else it trains LEAN, or is refused on the
    LEAN estimate when even that does not fit.
    """
    size_a = training_size(*structure_hw, config.max_megapixels)
    size_b = training_size(*appearance_hw, config.max_megapixels)
    full_image = config.full_image_every > 0
    need = estimate_training_peak(size_a, size_b, vit, full_image, keyframes, memory.overhead)
    free = memory.free(need)
    plain_need = estimate_training_peak(size_a, size_b, vit, full_image, keyframes, memory.overhead,
                                        backward_mode=PLAIN)
    mode = PLAIN if plain_need <= free else LEAN
    if mode == LEAN:
        check_training_fits(size_a, size_b, vit, free, full_image, where=memory.where,
                            option="max_megapixels", keyframes=keyframes, overhead=memory.overhead)
    log.info("Splice: training plan: %dx%d structure, %dx%d appearance, generator backward %s "
             "(estimates: plain %.2f GiB, lean %.2f GiB; %.2f GiB of %s free)", size_a[1], size_a[0],
             size_b[1], size_b[0], mode, plain_need / 2**30, need / 2**30, free / 2**30, memory.where)
    result = plan_output(memory, *structure_hw, 1, label) if size_a != structure_hw else ApplyPlan(1)
    return TrainingPlan(size_a, size_b, result, mode)


def _available_ram() -> int:
    """The system's available RAM (Linux's MemAvailable; elsewhere the free physical pages)."""
    try:
        with open("/proc/meminfo", encoding="ascii") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))


def standalone_memory(device: torch.device | str) -> Memory:
    """The Memory of a run outside a host (the CLI, the benchmarks): on CUDA what the device has
    free (nothing is unloaded), on the CPU the system's available RAM."""
    device = torch.device(device)
    if device.type == "cuda":
        def free(need: int) -> int:
            return int(torch.cuda.mem_get_info(device)[0])
    else:
        def free(need: int) -> int:
            return _available_ram()
    return Memory(free=free, ram_free=_available_ram, where="RAM" if device.type == "cpu" else
                  f"memory on {device}", overhead=overhead_for(device), shared=device.type == "cpu")
