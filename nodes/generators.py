"""Running a trained generator from a node without changing the shared (cached) object."""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

from ..comfy_splice.generator import SpliceGenerator, apply_generator
from ..comfy_splice.train import TrainedGenerator
from . import names


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
