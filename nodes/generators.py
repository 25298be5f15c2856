"""Running a trained generator from a node without changing the shared (cached) object.

Splice Output and Train Generator's full-resolution result share one plan: whole images in
chunks when they fit the device's free memory, otherwise the exact streamed pass (bands of rows,
the layers in between kept in RAM), and a refusal naming the size that fits only when not even
that fits.
"""

from __future__ import annotations

import logging
from typing import Callable

import torch
from torch import Tensor

from ..comfy_splice.generator import SpliceGenerator, apply_generator
from ..comfy_splice.memory import (MemoryBudgetError, StreamedFit, apply_chunk_that_fits,
                                   estimate_apply_peak, format_bytes, overhead_for,
                                   streamed_band_that_fits)
from ..comfy_splice.streaming import stream_generator
from ..comfy_splice.train import TrainedGenerator
from . import host, names

log = logging.getLogger(__name__)


def check_generator(value: object, name: str = "generator") -> TrainedGenerator:
    """The input is a trained generator, or a ValueError naming the nodes that make one."""
    if not isinstance(value, TrainedGenerator):
        raise ValueError(f"{name}: connect the output of '{names.TRAIN}' or "
                         f"'{names.LOAD_GENERATOR}' (got {type(value).__name__}).")
    return value


def run_generator(generator: SpliceGenerator, images: Tensor, device: torch.device,
                  batch_size: int, on_chunk: Callable[[int, int], None] | None = None,
                  out: Tensor | None = None) -> Tensor:
    """G(images) for core-layout images, in chunks, float32 on the CPU.

    ``apply_generator`` runs a copy off the CPU, so the cached generator that other nodes (Save,
    a second Splice Output) also use stays where it is. ``on_chunk(done, total)`` is called after each chunk (progress, interrupt checks).
    ``out`` is a preallocated CPU buffer shaped like ``images`` to write into (see Splice Output).
    """
    return apply_generator(generator, images, device, batch_size=max(1, int(batch_size)), out=out,
                           on_chunk=on_chunk)


def plan_apply(device: torch.device, height: int, width: int, requested: int,
               node: str = names.APPLY) -> tuple[int, StreamedFit | None]:
    """How many images go through the device at once, or (when one whole image does not fit)
    the band size of the streamed pass; MemoryBudgetError when not even that fits."""
    where, overhead = host.memory_where(device), overhead_for(device)
    free = host.free_memory(device, estimate_apply_peak(height, width, requested, overhead))
    try:
        chunk = apply_chunk_that_fits(height, width, requested, free, where=where, overhead=overhead)
    except MemoryBudgetError:
        shared = device.type == "cpu"
        fit = streamed_band_that_fits(height, width, free, free if shared else host.free_host_memory(),
                                      shared, where=where, overhead=overhead)
        log.info("%s: a %dx%d image needs about %s of %s at once, %s is free; streaming "
                 "it layer by layer in bands (about %s on the device, %s of RAM for the layers "
                 "kept between passes); the result is the same", node, width, height,
                 format_bytes(estimate_apply_peak(height, width, 1, overhead)), where,
                 format_bytes(free), format_bytes(fit.device_bytes), format_bytes(fit.host_bytes))
        return 1, fit
    if chunk < requested:
        log.info("%s: %d images of %dx%d at a time instead of %d (memory)",
                 node, chunk, width, height, requested)
    return chunk, None


def run_planned(generator: SpliceGenerator, images: Tensor, device: torch.device, chunk: int,
                streamed: StreamedFit | None, out: Tensor | None = None,
                on_images: Callable[[int, int], None] | None = None) -> Tensor:
    """G(images) as :func:`plan_apply` decided: chunks of whole images, or the streamed pass
    (which checks Cancel and the memory budget after every pass over the bands)."""
    if streamed is None:
        return run_generator(generator, images, device, chunk, on_chunk=on_images, out=out)

    def between_passes() -> None:
        host.check_interrupt()
        host.check_memory_limit(device)

    return stream_generator(generator, images, device, streamed.band_bytes, out=out,
                            on_pass=between_passes, on_image=on_images)
