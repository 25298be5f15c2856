"""How Splice Output runs a trained generator: whole images in chunks, or streamed in bands.

One decision, a pure function of the free memory (:func:`plan_apply`): whole images in chunks
when they fit, otherwise the exact streamed pass (``streaming.py``: bands of rows on the device,
the layers in between kept in RAM), and a :class:`~comfy_splice.refusal.MemoryBudgetError`
naming the image size that fits only when not even that fits. :func:`run_apply` carries the plan
out. Splice Output and Train Generator's full-resolution result both use the pair, so a training
run goes from its node into the core and back without another stop in the node layer.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor

from .generator import SpliceGenerator, apply_generator
from .memory import (StreamedFit, apply_chunk_that_fits, estimate_apply_peak,
                     streamed_band_that_fits)
from .refusal import MemoryBudgetError, format_bytes
from .streaming import stream_generator

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ApplyPlan:
    """``chunk`` whole images on the device at once, or (``streamed`` set) one image at a time
    in bands of ``streamed.band_bytes``."""

    chunk: int
    streamed: StreamedFit | None = None

    def describe(self) -> str:
        """How the plan runs, for messages: 'in chunks of 4' or 'in bands'."""
        return f"in chunks of {self.chunk}" if self.streamed is None else "in bands"


def plan_apply(height: int, width: int, requested: int, device_free: int, ram_free: int,
               shared: bool, where: str = "memory", overhead: float = 1.0,
               label: str = "Splice Output") -> ApplyPlan:
    """The plan for ``requested`` images of ``height`` x ``width`` with ``device_free`` bytes
    free on the device and ``ram_free`` in RAM (``shared``: the device is the CPU, both are the
    same RAM); MemoryBudgetError when not even one-row bands fit. ``where`` names the device's
    memory in messages, ``overhead`` is ``memory.overhead_for`` the device, ``label`` names the
    caller in the log."""
    try:
        chunk = apply_chunk_that_fits(height, width, requested, device_free, where=where,
                                      overhead=overhead)
    except MemoryBudgetError:
        fit = streamed_band_that_fits(height, width, device_free, device_free if shared else ram_free,
                                      shared, where=where, overhead=overhead)
        log.info("%s: a %dx%d image needs about %s of %s at once, %s is free; streaming it layer "
                 "by layer in bands (about %s on the device, %s of RAM for the layers kept between "
                 "passes); the result is the same", label, width, height,
                 format_bytes(estimate_apply_peak(height, width, 1, overhead)), where,
                 format_bytes(device_free), format_bytes(fit.device_bytes), format_bytes(fit.ram_bytes))
        return ApplyPlan(1, fit)
    if chunk < requested:
        log.info("%s: %d images of %dx%d at a time instead of %d (memory)",
                 label, chunk, width, height, requested)
    return ApplyPlan(chunk)


def run_apply(generator: SpliceGenerator, images: Tensor, device: torch.device | str,
              plan: ApplyPlan, out: Tensor | None = None,
              on_images: Callable[[int, int], None] | None = None,
              between_passes: Callable[[], None] | None = None) -> Tensor:
    """G(images) for core-layout images as ``plan`` decided, float32 on the CPU.

    The cached generator is never moved (a copy runs off the CPU). ``out``: a CPU buffer shaped
    like ``images`` to write into (it may be a permuted view of a channels-last buffer).
    ``on_images(done, total)`` runs after every chunk or streamed image (progress, Cancel);
    ``between_passes`` after every pass over the bands of a streamed image (Cancel, the memory
    budget).
    """
    if plan.streamed is None:
        return apply_generator(generator, images, device, batch_size=max(1, plan.chunk), out=out,
                               on_chunk=on_images)
    return stream_generator(generator, images, device, plan.streamed.band_bytes, out=out,
                            on_pass=between_passes, on_image=on_images)
