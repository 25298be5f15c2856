"""Memory: what a training run or a generator pass will need, and whether it fits what is free.

All independent of ComfyUI: :func:`estimate_training_peak` / :func:`estimate_apply_peak` are
pure functions of the image sizes and the ViT's shape that give an upper bound of the peak bytes
of tensors (live plus saved for backward). :func:`estimate_streamed_peak` does the same for
Splice Output's streamed path (``comfy_splice/streaming.py``), in two parts: the RAM store and
the device's bands; :func:`streamed_band_that_fits` picks the band for what is free or names the
image size that would fit. The coefficients were fitted to ``comfy_splice.measure``'s
TensorPeakTracker (see ``bench/bench_memory.py``) and rounded up; ``tests/core/test_memory.py``
checks that the estimate stays above the measured peak and not absurdly so. On the CPU the
process grows by more than its tensors; every estimate takes an ``overhead`` factor for that
(:func:`overhead_for`, :data:`CPU_RESIDENT_OVERHEAD`). Refusals, their unit and their advice
follow ``comfy_splice.refusal``.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import torch

from . import streaming
from .dino.vit import dino_input_size
from .generator import BACKWARD_MODES, LEAN
from .refusal import downscale_advice, format_bytes, memory_refusal

log = logging.getLogger(__name__)

MIB = 1 << 20

# Bytes per pixel of the generator, measured with TensorPeakTracker (fp32) and rounded up.
# Training: one G(image) with grad at a time (every level checkpointed and the lean merge, see
# generator.py; 426 measured, the output and its gradient included).
GEN_TRAIN_BYTES_PER_PIXEL = 460
# Training in the PLAIN mode (plain autograd, nothing recomputed): 1420 measured for one image's
# forward and backward; every generated image of a step keeps its activations until its backward,
# so the estimate counts this for each of them at once, next to the ViT's phase.
GEN_TRAIN_PLAIN_BYTES_PER_PIXEL = 1500
# Every generated image keeps its output and the gradient of the output (3 channels each) plus
# the augmented input until the step ends.
GEN_KEPT_BYTES_PER_PIXEL = 48
# A no-grad generator pass (Splice Output), per pixel of one image.
GEN_APPLY_BYTES_PER_PIXEL = 420
# The ViT: activations saved for backward, per token per width per block, in floats (~10
# measured for ViT-B/8 on 224 x 224 crops).
VIT_SAVED_FLOATS_PER_TOKEN_WIDTH_PER_BLOCK = 12
FIXED_OVERHEAD = 32 * MIB
# On the CPU the process's resident memory grows by more than the tensors it holds (glibc's heap
# keeps freed blocks under its mmap threshold; oneDNN works on reordered copies): every CPU
# check multiplies the tensor estimate by this factor. The measurements behind it: bench/README.md,
# "Measurement log: CPU resident memory".
CPU_RESIDENT_OVERHEAD = 2.5


def overhead_for(device: torch.device | str) -> float:
    """Bytes of memory per byte of tensors on ``device``: 1 on an accelerator (its allocator
    provides exactly the tensors, plus rounding), CPU_RESIDENT_OVERHEAD on the CPU."""
    return CPU_RESIDENT_OVERHEAD if torch.device(device).type == "cpu" else 1.0


@dataclass(frozen=True)
class ViTShape:
    """What the estimate needs to know about the DINO-ViT."""

    params: int
    depth: int
    embed_dim: int
    patch_size: int


def vit_shape(backbone: torch.nn.Module) -> ViTShape:
    """The ViTShape of a ``DinoBackbone``."""
    return ViTShape(params=sum(p.numel() for p in backbone.parameters()),
                    depth=int(getattr(backbone, "depth")), embed_dim=int(getattr(backbone, "embed_dim")),
                    patch_size=int(getattr(backbone, "patch_size")))


def _dino_tokens(height: int, width: int, patch: int, short_side: int = 224,
                 long_max: int = 480) -> int:
    """Tokens (CLS included) of an image at DINO's input size (:func:`dino_input_size`)."""
    h, w = dino_input_size(height, width, short_side, long_max)
    return 1 + max(1, h // patch) * max(1, w // patch)


def estimate_training_peak(structure_hw: tuple[int, int], appearance_hw: tuple[int, int],
                           vit: ViTShape, full_image: bool = True, keyframes: int = 1,
                           overhead: float = 1.0, backward_mode: str = LEAN) -> int:
    """Upper bound of the bytes of tensors a training step needs at these image sizes (fp32),
    times ``overhead`` (:func:`overhead_for` the training device), with the generator's
    ``backward_mode`` (``comfy_splice.generator``: LEAN or PLAIN).

    ``full_image``: whether the run has full-image steps (every ``full_image_every`` steps G
    runs on the whole structure image too). Crops are at most the image's height squared.
    ``keyframes``: how many structure images of ``structure_hw`` the run holds (each with its
    whole-image keys target when ``full_image``).

    A step has two peaks that never overlap, so the larger one counts, on top of what lives for
    the whole step (images, weights, what each generated image keeps): the ViT's, while its
    saved activations and the self-similarities exist, and the generator's backward, which
    SpliceTrainer orders after every ViT backward (the ViT's activations are gone by then) and
    which rebuilds one image's activations at a time. Checked against the measured peaks in
    ``tests/core/test_memory.py`` (``bench/bench_memory.py``'s figures, up to 12 MP). In the
    PLAIN mode every generated image's activations live from its forward to its backward, through
    the ViT's phase, so they add to it instead.
    """
    if backward_mode not in BACKWARD_MODES:
        raise ValueError(f"backward_mode is {backward_mode!r}; use one of {', '.join(BACKWARD_MODES)}")
    (sh, sw), (ah, aw) = structure_hw, appearance_hw
    crop_a = min(sh, sw) ** 2
    crop_b = min(ah, aw) ** 2
    largest = max(crop_a, crop_b, sh * sw if full_image else 0)
    kept = GEN_KEPT_BYTES_PER_PIXEL * (crop_a + crop_b + (sh * sw if full_image else 0))
    # images themselves (the keyframes, the appearance image, their augmented copies)
    keyframes = max(1, keyframes)
    images = 12 * ((keyframes + 1) * sh * sw + 2 * ah * aw)
    # The ViT sees the two crops with grad (A' through G, B' through G) at 224 x 224, and on a
    # full-image step the whole structure image at its own DINO size; each keeps its saved
    # activations and its T x T self-similarity with the gradient until its backward.
    crop_tokens = _dino_tokens(224, 224, vit.patch_size)
    tokens = [crop_tokens, crop_tokens] + ([_dino_tokens(sh, sw, vit.patch_size)] if full_image else [])
    vit_phase = sum(4 * VIT_SAVED_FLOATS_PER_TOKEN_WIDTH_PER_BLOCK * vit.depth * vit.embed_dim * t
                    + 4 * 6 * t * t for t in tokens)
    targets = 4 * keyframes * tokens[-1] * vit.embed_dim if full_image else 0
    weights = 4 * vit.params + 4 * 4 * 1_100_000  # ViT, generator + grads + Adam's two moments
    if backward_mode == LEAN:
        phases = max(vit_phase, GEN_TRAIN_BYTES_PER_PIXEL * largest)
    else:
        generated = crop_a + crop_b + (sh * sw if full_image else 0)
        phases = vit_phase + GEN_TRAIN_PLAIN_BYTES_PER_PIXEL * generated
    tensors = images + targets + kept + phases + weights + FIXED_OVERHEAD
    return int(tensors * overhead)


def estimate_apply_peak(height: int, width: int, batch: int = 1, overhead: float = 1.0) -> int:
    """Upper bound of the bytes of tensors one no-grad generator pass over ``batch`` images needs
    (the input and output of the whole chunk included), times ``overhead``."""
    pixels = height * width
    return int((batch * pixels * (GEN_APPLY_BYTES_PER_PIXEL + 24) + FIXED_OVERHEAD) * overhead)


def estimate_streamed_peak(height: int, width: int,
                           band_bytes: int = streaming.DEFAULT_BAND_BYTES) -> streaming.StreamPlan:
    """Host and device bytes of one streamed generator pass over a ``height`` x ``width`` image.

    ``ram_bytes``: the RAM store's peak, exact (the plan walks the pass itself): about
    ``STREAM_RAM_BYTES_PER_PIXEL`` per pixel of the image padded to a multiple of 32.
    ``device_bytes``: an upper bound of the device's tensors, the largest band (at most
    ``band_bytes`` unless one row of a layer is larger) plus the weights and small tensors.
    The caller's input image and output buffer are not included.
    """
    return streaming.plan(height, width, band_bytes)


# The RAM store's peak per padded pixel (the top level's merge: its 16-channel 3x3 output and
# the 32-channel level below at a quarter of the pixels); estimate_streamed_peak computes it.
STREAM_RAM_BYTES_PER_PIXEL = 96


@dataclass(frozen=True)
class StreamedFit:
    """How Splice Output streams one image: the band size and what the pass will hold."""

    band_bytes: int
    device_bytes: int
    ram_bytes: int


def streamed_band_that_fits(height: int, width: int, device_free: int, ram_free: int,
                            shared: bool, where: str = "memory", overhead: float = 1.0) -> StreamedFit:
    """The band size for a streamed pass over one image with ``device_free`` bytes free on the
    device and ``ram_free`` in RAM (``shared``: the device is the CPU, so both come out of the
    same RAM, each byte of tensors costing ``overhead`` bytes of it), counting the image's output
    (float32, 12 bytes per pixel) as RAM too.

    Raises MemoryBudgetError naming the largest image of the same aspect ratio that would fit
    when even one-row bands do not.
    """
    factor = overhead if shared else 1.0
    need = _streamed_need(height, width, device_free, ram_free, shared, factor)
    if need is not None:
        return need
    low, high = 0.0, 1.0
    for _ in range(24):
        mid = (low + high) / 2
        h, w = max(1, int(height * mid)), max(1, int(width * mid))
        if _streamed_need(h, w, device_free, ram_free, shared, factor) is not None:
            low = mid
        else:
            high = mid
    smallest = streaming.plan(height, width, 0)
    ram_need = int((smallest.ram_bytes + 12 * height * width) * factor)
    if shared:
        streamed = f"{format_bytes(ram_need + smallest.device_bytes * factor)} of {where}"
        available = f"{format_bytes(ram_free)}"
    else:
        streamed = f"{format_bytes(ram_need)} of RAM and {format_bytes(smallest.device_bytes)} of {where}"
        available = f"{format_bytes(ram_free)} of RAM and {format_bytes(device_free)} of {where}"
    raise memory_refusal(
        f"Applying the generator to a {width}x{height} image",
        f"{format_bytes(estimate_apply_peak(height, width, 1, factor))} of {where} at once, and even "
        f"streamed in bands (a few rows at a time on the device) {streamed}", available,
        downscale_advice(height, width, low))


def _streamed_need(height: int, width: int, device_free: int, ram_free: int,
                   shared: bool, factor: float = 1.0) -> StreamedFit | None:
    """The largest useful band that fits, or None when even one-row bands do not (``factor``:
    bytes of RAM per byte of tensors, shared device only)."""
    smallest = streaming.plan(height, width, 0)
    output = 12 * height * width
    ram = int((smallest.ram_bytes + output) * factor)
    if ram > ram_free:
        return None
    room = int((ram_free - ram) / factor if shared else device_free) - streaming.STREAM_DEVICE_FIXED_BYTES
    if room < smallest.band_bytes:
        return None
    chosen = streaming.plan(height, width, min(room, streaming.DEFAULT_BAND_BYTES))
    return StreamedFit(min(room, streaming.DEFAULT_BAND_BYTES), chosen.device_bytes, chosen.ram_bytes)


def megapixels_that_fit(budget: int, structure_hw: tuple[int, int],
                        appearance_hw: tuple[int, int], vit: ViTShape,
                        full_image: bool = True, keyframes: int = 1,
                        overhead: float = 1.0) -> float:
    """The largest ``max_megapixels`` whose training estimate fits in ``budget`` bytes (0 if even
    a tiny image does not fit)."""
    def need(megapixels: float) -> int:
        return estimate_training_peak(*_scaled_pair(structure_hw, appearance_hw, megapixels), vit,
                                      full_image, keyframes, overhead)

    low, high = 0.01, max(0.01, structure_hw[0] * structure_hw[1] / 1e6,
                          appearance_hw[0] * appearance_hw[1] / 1e6)
    if need(low) > budget:
        return 0.0
    for _ in range(40):
        mid = (low + high) / 2
        if need(mid) <= budget:
            low = mid
        else:
            high = mid
    return math.floor(low * 100) / 100


def scaled_size(height: int, width: int, max_megapixels: float) -> tuple[int, int]:
    """(height, width) scaled down, keeping the aspect ratio, to at most ``max_megapixels``
    million pixels; unchanged when already small enough or when ``max_megapixels`` <= 0."""
    if max_megapixels <= 0 or height * width <= max_megapixels * 1e6:
        return height, width
    scale = math.sqrt(max_megapixels * 1e6 / (height * width))
    return max(1, int(height * scale)), max(1, int(width * scale))


def _scaled_pair(structure_hw: tuple[int, int], appearance_hw: tuple[int, int],
                 max_megapixels: float) -> tuple[tuple[int, int], tuple[int, int]]:
    return scaled_size(*structure_hw, max_megapixels), scaled_size(*appearance_hw, max_megapixels)


def check_training_fits(structure_hw: tuple[int, int], appearance_hw: tuple[int, int],
                        vit: ViTShape, free: int, full_image: bool = True,
                        where: str = "memory", option: str = "max_megapixels",
                        keyframes: int = 1, overhead: float = 1.0) -> int:
    """Raise MemoryBudgetError (before anything large is allocated) if a training run at these
    sizes (``keyframes`` structure images of ``structure_hw``) would not fit in ``free`` bytes;
    return the estimate otherwise (``overhead``: see :func:`overhead_for`)."""
    need = estimate_training_peak(structure_hw, appearance_hw, vit, full_image, keyframes, overhead)
    if need <= free:
        return need
    fits = megapixels_that_fit(free, structure_hw, appearance_hw, vit, full_image, keyframes, overhead)
    (sh, sw), (ah, aw) = structure_hw, appearance_hw
    if fits <= 0:
        advice = "even a small image does not fit; free memory (close other programs or models)"
    else:
        th, tw = scaled_size(sh, sw, fits)
        fewer = ", use fewer keyframes" if keyframes > 1 else ""
        advice = (f"set {option} to {fits:g} or less (the structure image would train at "
                  f"{tw}x{th}; the result is still written at {sw}x{sh}){fewer}, or free memory")
    structure = (f"{keyframes} {sw}x{sh} structure keyframes" if keyframes > 1
                 else f"a {sw}x{sh} structure image")
    raise memory_refusal(f"Training on {structure} and a {aw}x{ah} appearance image",
                         f"{format_bytes(need)} of {where}", format_bytes(free), advice)


def apply_chunk_that_fits(height: int, width: int, requested: int, free: int,
                          where: str = "memory", overhead: float = 1.0) -> int:
    """The largest batch size <= ``requested`` whose generator pass fits in ``free`` bytes, or
    MemoryBudgetError naming the largest image size that would fit when one image does not."""
    for batch in range(max(1, requested), 0, -1):
        if estimate_apply_peak(height, width, batch, overhead) <= free:
            return batch
    pixels = max(0, int(free / overhead - FIXED_OVERHEAD) // (GEN_APPLY_BYTES_PER_PIXEL + 24))
    scale = math.sqrt(pixels / (height * width)) if pixels else 0.0
    raise memory_refusal(f"Applying the generator to a {width}x{height} image",
                         f"{format_bytes(estimate_apply_peak(height, width, 1, overhead))} of {where}",
                         format_bytes(free), downscale_advice(height, width, scale))
