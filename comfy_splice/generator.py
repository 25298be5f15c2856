"""The Splice generator: Deep Image Prior's "skip" U-Net as the reference configures it.

Five levels with (16, 32, 64, 128, 128) channels down and up and a 4-channel 1x1 skip branch at
each level. The reference keeps its BatchNorm layers in training mode and always feeds one image
at a time, so every normalisation is a per-image (instance) normalisation with affine
parameters, also for the final G(A). Here that is written down as InstanceNorm2d(affine=True):
the numbers are the same for a batch of one, and a batch of video frames is processed as if each
frame were alone (BatchNorm over a batch would mix frames and flicker).
"""

from __future__ import annotations

import copy
import math
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

CHANNELS_DOWN = (16, 32, 64, 128, 128)
CHANNELS_UP = (16, 32, 64, 128, 128)
CHANNELS_SKIP = (4, 4, 4, 4, 4)
MULTIPLE = 2 ** len(CHANNELS_DOWN)
MIN_SIDE = 2 * MULTIPLE  # the deepest level must keep more than one pixel to normalise
# Levels whose activations are recomputed in backward instead of kept (activation
# checkpointing): all five (measured, fp32: 1431 bytes per pixel with grad without, ~800 with).
# Recomputation is exact (every norm is per image, no randomness), so only time changes.
CHECKPOINTED_LEVELS = 5
CHECKPOINTING = True  # False: keep every activation (for comparisons; same numbers, more memory)


def _norm(channels: int) -> nn.Module:
    return nn.InstanceNorm2d(channels, affine=True, eps=1e-5)


def _conv_block(c_in: int, c_out: int, kernel: int, stride: int = 1) -> list[nn.Module]:
    """conv (zero padding) -> per-image norm -> LeakyReLU(0.2), the U-Net's unit."""
    return [nn.Conv2d(c_in, c_out, kernel, stride, padding=(kernel - 1) // 2), _norm(c_out),
            nn.LeakyReLU(0.2, inplace=True)]


def _upsample(x: Tensor) -> Tensor:
    return F.interpolate(x, scale_factor=2.0, mode="bilinear", align_corners=False)


class _Level(nn.Module):
    """One U-Net level: skip branch, strided encoder, deeper levels, upsample, merge."""

    def __init__(self, level: int, c_in: int) -> None:
        super().__init__()
        self.level = level
        down, up, skip = CHANNELS_DOWN[level], CHANNELS_UP[level], CHANNELS_SKIP[level]
        self.skip = nn.Sequential(*_conv_block(c_in, skip, 1))
        self.down = nn.Sequential(*_conv_block(c_in, down, 3, stride=2), *_conv_block(down, down, 3))
        last = level == len(CHANNELS_DOWN) - 1
        self.inner = None if last else _Level(level + 1, down)
        inner_out = down if last else CHANNELS_UP[level + 1]
        self.merge = nn.Sequential(_norm(skip + inner_out), *_conv_block(skip + inner_out, up, 3),
                                   *_conv_block(up, up, 1))

    def _merge_first(self, skip: Tensor, deep: Tensor) -> Tensor:
        """Upsample, concatenate, normalise and the 3x3 conv unit: one recomputed segment."""
        return self.merge[:4](torch.cat((skip, _upsample(deep)), dim=1))

    def forward(self, x: Tensor) -> Tensor:
        if CHECKPOINTING and self.level < CHECKPOINTED_LEVELS and torch.is_grad_enabled():
            return self._forward_checkpointed(x)
        deep = self.down(x)
        if self.inner is not None:
            deep = self.inner(deep)
        skip = self.skip(x)
        # the upsampled tensor lives only inside the concatenation (no second full-size copy)
        return self.merge(torch.cat((skip, _upsample(deep)), dim=1))

    def _forward_checkpointed(self, x: Tensor) -> Tensor:
        """The same computation in segments whose insides are recomputed during backward.

        Kept for backward per level: the level's input, the skip branch's output (4 channels),
        the deeper level's output at half resolution and the two merge units' outputs.
        """
        skip = checkpoint(self.skip, x, use_reentrant=False, preserve_rng_state=False)
        deep = checkpoint(self.down, x, use_reentrant=False, preserve_rng_state=False)
        if self.inner is not None:
            deep = self.inner(deep)
        merged = checkpoint(self._merge_first, skip, deep, use_reentrant=False,
                            preserve_rng_state=False)
        return checkpoint(self.merge[4:], merged, use_reentrant=False, preserve_rng_state=False)


class SpliceGenerator(nn.Module):
    """[B, 3, H, W] in [0, 1] -> [B, 3, H, W] in [0, 1], any H and W.

    Sizes that are not multiples of 32 are padded (edge replication, so no black border enters
    the per-image statistics) and cropped back.
    """

    def __init__(self) -> None:
        super().__init__()
        self.body = _Level(0, 3)
        self.head = nn.Conv2d(CHANNELS_UP[0], 3, 1)

    def _run(self, x: Tensor) -> Tensor:
        return torch.sigmoid(self.head(self.body(x)))

    def forward(self, x: Tensor) -> Tensor:
        height, width = x.shape[-2:]
        pad_h = max(MIN_SIDE, math.ceil(height / MULTIPLE) * MULTIPLE) - height
        pad_w = max(MIN_SIDE, math.ceil(width / MULTIPLE) * MULTIPLE) - width
        if pad_h or pad_w:
            x = F.pad(x, (pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2),
                      mode="replicate")
        if CHECKPOINTING and torch.is_grad_enabled():
            # Keep only the input for backward; the whole pass is recomputed there (with its
            # own level checkpoints), one generator call at a time, so a step that runs G on
            # several images never holds more than one image's activations.
            y = checkpoint(self._run, x, use_reentrant=False, preserve_rng_state=False)
        else:
            y = self._run(x)
        if pad_h or pad_w:
            y = y[..., pad_h // 2: pad_h // 2 + height, pad_w // 2: pad_w // 2 + width]
        return y


def init_weights(module: nn.Module, gain: float = 0.02) -> None:
    """The reference's init: xavier_normal(gain) convs, norm weights N(1, gain), biases 0."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.xavier_normal_(m.weight, gain=gain)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.InstanceNorm2d):
            nn.init.normal_(m.weight, 1.0, gain)
            nn.init.zeros_(m.bias)


def build_generator(seed: int = 0) -> SpliceGenerator:
    """A freshly initialised generator; the seed makes the init reproducible without touching
    the global RNG."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        generator = SpliceGenerator()
        init_weights(generator)
    return generator


@torch.no_grad()
def apply_generator(generator: SpliceGenerator, images: Tensor, device: torch.device | str,
                    batch_size: int = 8, out: Tensor | None = None,
                    on_chunk: Callable[[int, int], None] | None = None) -> Tensor:
    """Run a trained generator over [B, 3, H, W] images in chunks; returns float32 on the CPU.

    Exact for any chunk size because normalisation is per image. The caller's module is left
    where it is (a copy, ~4 MB, runs on another device), so a shared generator is never moved.
    Streams long clips: only one chunk (its input, output and activations) is on ``device`` at a
    time, and each chunk's result is copied into ``out``, a CPU tensor shaped like ``images``
    (it may be a permuted view of a channels-last buffer), or into one allocated here once; never
    a list joined at the end, which would hold the whole output twice. ``on_chunk(done, total)``
    runs after every chunk (progress, cancel).
    """
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"expected images of shape [B, 3, H, W], got {tuple(images.shape)}")
    if out is None:
        out = torch.empty(images.shape, dtype=torch.float32)
    elif out.shape != images.shape:
        raise ValueError(f"output buffer {tuple(out.shape)} does not match images {tuple(images.shape)}")
    device = torch.device(device)
    if next(generator.parameters()).device != device:
        generator = copy.deepcopy(generator).to(device)
    total, step = int(images.shape[0]), max(1, int(batch_size))
    for start in range(0, total, step):
        chunk = images[start:start + step].to(device=device, dtype=torch.float32)
        out[start:start + chunk.shape[0]].copy_(generator(chunk).float())
        if on_chunk is not None:
            on_chunk(min(start + step, total), total)
    return out
