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
from typing import Any, Callable, cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.autograd.function import once_differentiable
from torch.utils.checkpoint import checkpoint

CHANNELS_DOWN = (16, 32, 64, 128, 128)
CHANNELS_UP = (16, 32, 64, 128, 128)
CHANNELS_SKIP = (4, 4, 4, 4, 4)
MULTIPLE = 2 ** len(CHANNELS_DOWN)
MIN_SIDE = 2 * MULTIPLE  # the deepest level must keep more than one pixel to normalise
# Levels whose activations are recomputed in backward instead of kept in the LEAN mode (activation
# checkpointing, with the lean merge below): all five. Recomputation is exact (every norm is per
# image, no randomness; bitwise, see _LeanMerge), so only time changes. Training memory per
# pixel (TensorPeakTracker, fp32, the output's gradient included): 1420 bytes for the plain
# network, ~800 with checkpoints per level, 426 with the lean merge.
CHECKPOINTED_LEVELS = 5
# The lean merge's per-channel steps (norms, activations, the merge input's norm) take groups of
# channels: at least MERGE_GROUP, and enough that a group has GROUP_ELEMENTS values. Large images
# get 4-channel groups (at level 0 as many bytes as the skip branch's output); small ones few
# large groups, so the number of calls, which costs time on a GPU, stays small.
MERGE_GROUP = 4
GROUP_ELEMENTS = 1 << 22
# How a generator with grad keeps what its backward needs, chosen per run (the training plan,
# comfy_splice/budget.py, from the memory free; set on SpliceGenerator.backward_mode, so two runs
# in one process never share the choice). Both give the same outputs and gradients bit for bit.
# LEAN: the whole pass and every level checkpointed and the lean merge (426 bytes per pixel,
# one generator call's activations at a time); it recomputes the forward, so a step costs more.
# PLAIN: autograd keeps every activation (1420 bytes per pixel, for every generated image of the
# step at once), nothing is recomputed.
LEAN = "lean"
PLAIN = "plain"
BACKWARD_MODES = (LEAN, PLAIN)


def padding(height: int, width: int) -> tuple[int, int, int, int]:
    """Top, bottom, left, right rows and columns of edge replication that bring an image to a
    multiple of MULTIPLE (32) per side, at least MIN_SIDE: the one padding rule of the generator
    and of its streamed pass (``streaming.py``)."""
    pad_h = max(MIN_SIDE, math.ceil(height / MULTIPLE) * MULTIPLE) - height
    pad_w = max(MIN_SIDE, math.ceil(width / MULTIPLE) * MULTIPLE) - width
    return pad_h // 2, pad_h - pad_h // 2, pad_w // 2, pad_w - pad_w // 2


def _norm(channels: int) -> nn.Module:
    return nn.InstanceNorm2d(channels, affine=True, eps=1e-5)


def _conv_block(c_in: int, c_out: int, kernel: int, stride: int = 1) -> list[nn.Module]:
    """conv (zero padding) -> per-image norm -> LeakyReLU(0.2), the U-Net's unit."""
    return [nn.Conv2d(c_in, c_out, kernel, stride, padding=(kernel - 1) // 2), _norm(c_out),
            nn.LeakyReLU(0.2, inplace=True)]


def _upsample(x: Tensor) -> Tensor:
    return F.interpolate(x, scale_factor=2.0, mode="bilinear", align_corners=False)


def _instance_norm(norm: nn.InstanceNorm2d, x: Tensor, weight: Tensor, bias: Tensor) -> Tensor:
    """``norm`` on a group of its channels (``weight`` and ``bias`` are that group's): the call
    the module makes, so each channel's values are the module's."""
    return F.instance_norm(x, None, None, weight, bias, True, 0.1, norm.eps)


def _autocast_on(device: torch.device) -> bool:
    """Whether autocast is on for ``device``: the lean merge calls ops below autocast in its
    backward, so under autocast (never the case in training here) the plain path runs."""
    try:
        return bool(torch.is_autocast_enabled(device.type))
    except TypeError:  # torch < 2.4 takes no device type
        return bool(torch.is_autocast_enabled() or torch.is_autocast_cpu_enabled())


def _upsample_into(deep: Tensor, out: Tensor) -> None:
    """``_upsample(deep)`` written into ``out``: the op and arguments F.interpolate calls, so the
    values are the same bits, without a separate upsampled tensor."""
    torch.ops.aten.upsample_bilinear2d.out(deep, list(out.shape[-2:]), False, 2.0, 2.0, out=out)


def _upsample_backward(grad: Tensor, deep: Tensor) -> Tensor:
    """The gradient of ``deep`` from that of ``_upsample(deep)`` (autograd's own call)."""
    return torch.ops.aten.upsample_bilinear2d_backward(grad, list(grad.shape[-2:]),
                                                       list(deep.shape), False, 2.0, 2.0)


def _conv_backward(conv: nn.Conv2d, grad: Tensor, inputs: Tensor, weight: Tensor,
                   mask: tuple[bool, bool, bool]) -> tuple[Tensor, Tensor, Tensor]:
    """Gradients (input, weight, bias; those ``mask`` asks for) of ``conv`` with ``weight``:
    the op autograd's own convolution backward calls."""
    bias = [weight.shape[0]] if mask[2] else None
    return torch.ops.aten.convolution_backward(grad, inputs, weight, bias, list(conv.stride),
                                               list(conv.padding), list(conv.dilation), False,
                                               [0, 0], conv.groups, list(mask))


class _LeanMerge(torch.autograd.Function):
    """A level's merge (and, at level 0, the head) keeping only its two inputs for backward.

    The merge's insides at full resolution (the 36-channel concatenation, its normalisation,
    two conv outputs, their norms) are what made the generator's training memory; backward
    rebuilds them a few at a time (:meth:`_Level._merge_backward`).
    """

    @staticmethod
    def forward(ctx: Any, level: "_Level", head: nn.Conv2d | None, skip: Tensor, deep: Tensor,
                *params: Tensor) -> Tensor:
        # params are the level's own tensors, passed so that autograd routes their gradients
        ctx.level, ctx.head = level, head
        ctx.save_for_backward(skip, deep)
        return level._merge_forward(skip, deep, head)

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad_out: Tensor) -> tuple[Tensor | None, ...]:
        skip, deep = ctx.saved_tensors
        return (None, None, *ctx.level._merge_backward(skip, deep, ctx.head, grad_out))


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

    def forward(self, x: Tensor, head: nn.Conv2d | None = None, lean: bool = False) -> Tensor:
        """The level's output; with ``head`` (level 0), the image sigmoid(head(output)).

        The head is applied here so that the merge's lean backward covers it too: otherwise its
        input, 16 channels at full resolution, would be held next to the merge's gradient.
        ``lean``: checkpoint this level and use the lean merge (the LEAN mode, with grad).
        """
        if (lean and self.level < CHECKPOINTED_LEVELS and torch.is_grad_enabled()
                and not _autocast_on(x.device)):
            return self._forward_checkpointed(x, head)
        deep = self.down(x)
        if self.inner is not None:
            deep = self.inner(deep, None, lean)
        skip = self.skip(x)
        # the upsampled tensor lives only inside the concatenation (no second full-size copy)
        out = self.merge(torch.cat((skip, _upsample(deep)), dim=1))
        return out if head is None else torch.sigmoid(head(out))

    def _forward_checkpointed(self, x: Tensor, head: nn.Conv2d | None) -> Tensor:
        """The same computation, keeping for backward only the level's input (the skip and
        encoder branches are recomputed from it), the skip branch's output and the deeper
        level's output (the merge rebuilds its insides from those two: :class:`_LeanMerge`)."""
        skip = checkpoint(self.skip, x, use_reentrant=False, preserve_rng_state=False)
        deep = checkpoint(self.down, x, use_reentrant=False, preserve_rng_state=False)
        if self.inner is not None:
            deep = self.inner(deep, None, True)
        return _LeanMerge.apply(self, head, skip, deep, *self._merge_params(head))

    # The merge as units "conv -> post": post is per channel (norm and LeakyReLU, or the head's
    # sigmoid), and the first conv's input is norm(cat(skip, upsample(deep))).

    def _units(self, head: nn.Conv2d | None) -> list[tuple[nn.Conv2d, nn.InstanceNorm2d | None]]:
        units: list[tuple[nn.Conv2d, nn.InstanceNorm2d | None]] = [
            (self._merge_conv(1), self._merge_norm(2)), (self._merge_conv(4), self._merge_norm(5))]
        return units + [(head, None)] if head is not None else units

    # nn.Sequential types its items as Module; the merge's layout is fixed in __init__.
    def _merge_conv(self, index: int) -> nn.Conv2d:
        return cast(nn.Conv2d, self.merge[index])

    def _merge_norm(self, index: int) -> nn.InstanceNorm2d:
        return cast(nn.InstanceNorm2d, self.merge[index])

    def _merge_params(self, head: nn.Conv2d | None) -> list[Tensor]:
        """The merge's (and the head's) parameters, in the order of their gradients in
        :meth:`_merge_backward`."""
        params: list[Tensor] = [self._merge_norm(0).weight, self._merge_norm(0).bias]
        for conv, norm in self._units(head):
            assert conv.bias is not None  # every conv of the merge and head has a bias
            params += [conv.weight, conv.bias]
            if norm is not None:
                params += [norm.weight, norm.bias]
        return params

    def _post(self, pre: Tensor, norm: nn.InstanceNorm2d | None) -> Tensor:
        """A unit's output from its conv's output: the plain merge's own calls."""
        return torch.sigmoid(pre) if norm is None else self.merge[3](norm(pre))

    @staticmethod
    def _group(like: Tensor) -> int:
        """Channels per group in the lean merge's per-channel steps on tensors shaped ``like``."""
        per_channel = like.shape[0] * like.shape[-2] * like.shape[-1]
        return max(MERGE_GROUP, -(-GROUP_ELEMENTS // per_channel))

    def _input_groups(self, skip: Tensor, deep: Tensor) -> list[tuple[int, int]]:
        """Channel ranges of the merge's input: the skip branch, then the upsampled part."""
        cs, total, step = skip.shape[1], skip.shape[1] + deep.shape[1], self._group(skip)
        return [(0, cs)] + [(lo, min(total, lo + step)) for lo in range(cs, total, step)]

    def _merge_input(self, skip: Tensor, deep: Tensor) -> Tensor:
        """norm(cat(skip, upsample(deep))) in one buffer: the upsampling is written into it and
        normalised in place a group of channels at a time (the norm is per channel, so each
        group's values are the whole tensor's), so no separate upsampled or concatenated copy
        exists at full resolution."""
        norm, cs = self._merge_norm(0), skip.shape[1]
        out = skip.new_empty((skip.shape[0], cs + deep.shape[1], *skip.shape[2:]))
        _upsample_into(deep, out[:, cs:])
        for lo, hi in self._input_groups(skip, deep):
            part = skip if lo == 0 else out[:, lo:hi]
            out[:, lo:hi] = _instance_norm(norm, part, norm.weight[lo:hi], norm.bias[lo:hi])
        return out

    def _merge_forward(self, skip: Tensor, deep: Tensor, head: nn.Conv2d | None) -> Tensor:
        """The merge (and head) without grad, freeing every tensor as soon as it is used."""
        out = self._merge_input(skip, deep)
        for conv, norm in self._units(head):
            pre = conv(out)
            del out
            out = self._post(pre, norm)
            del pre
        return out

    def _merge_backward(self, skip: Tensor, deep: Tensor, head: nn.Conv2d | None,
                        grad_out: Tensor) -> list[Tensor]:
        """Gradients of skip, deep and :meth:`_merge_params`, rebuilt from skip and deep.

        Every value comes from the op autograd calls on the plain merge, with the same inputs,
        so the gradients are the plain network's bit for bit (``tests/core/test_memory.py``).
        The order is what saves memory: the units' conv outputs (the norms' inputs) are
        recomputed once and kept; a unit's input is rebuilt from the previous conv output only
        for its weight gradient; per-channel steps go a group of channels at a time and write
        over gradient buffers they no longer need. The most held at the level's resolution is
        in the first conv's backward: its input's gradient and the rebuilt upsampled deeper
        output, 68 channels at level 0 (272 bytes per pixel, against 672 before).
        """
        units = self._units(head)
        grads: dict[int, Tensor] = {}
        with torch.no_grad():
            out: Tensor | None = self._merge_input(skip, deep)
            pres: list[Tensor | None] = []
            for index, (conv, norm) in enumerate(units):
                pre = conv(out)
                pres.append(pre)
                out = self._post(pre, norm) if index + 1 < len(units) else None
        grad = grad_out  # d loss / d (output of unit k)
        for k in range(len(units) - 1, -1, -1):
            conv, norm = units[k]
            pre, pres[k] = pres[k], None
            assert pre is not None
            # d loss / d (conv output): in place where the gradient is this function's own
            grad_pre = torch.empty_like(pre) if grad is grad_out else grad
            self._post_backward(pre, norm, grad, grad_pre, grads)
            del pre, grad
            if k == 0:
                box = [grad_pre]
                del grad_pre
                grad_skip, grad_deep = self._first_conv_backward(skip, deep, box, grads)
                break
            prev = pres[k - 1]
            assert prev is not None
            with torch.no_grad():
                rebuilt = self._post(prev, units[k - 1][1])  # the conv's input, as in forward
            _, grads[id(conv.weight)], grads[id(conv.bias)] = _conv_backward(
                conv, grad_pre, rebuilt, conv.weight, (False, True, True))
            del rebuilt
            # the input's gradient never reads the input's values: prev stands in for its shape
            # read by the next iteration (ruff does not follow the loop's back edge past `del grad`)
            grad = _conv_backward(conv, grad_pre, prev, conv.weight, (True, False, False))[0]  # noqa: F841
            del prev, grad_pre
        return [grad_skip, grad_deep, *(grads[id(p)] for p in self._merge_params(head))]

    def _post_backward(self, pre: Tensor, norm: nn.InstanceNorm2d | None, grad: Tensor,
                       into: Tensor, grads: dict[int, Tensor]) -> None:
        """``into`` = d loss / d pre from ``grad`` = d loss / d post(pre), a group of channels at
        a time (``into`` may be ``grad``: each group is read before it is written); the norm's
        parameter gradients go to ``grads``."""
        channels = pre.shape[1]
        step = channels if norm is None else self._group(pre)
        if norm is not None:
            grads[id(norm.weight)] = torch.empty_like(norm.weight)
            grads[id(norm.bias)] = torch.empty_like(norm.bias)
        for lo in range(0, channels, step):
            hi = min(channels, lo + step)
            with torch.enable_grad():
                leaf = pre[:, lo:hi].detach().requires_grad_()
                if norm is None:
                    leaves: tuple[Tensor, ...] = (leaf,)
                    out = torch.sigmoid(leaf)
                else:
                    leaves = (leaf, norm.weight[lo:hi].detach().requires_grad_(),
                              norm.bias[lo:hi].detach().requires_grad_())
                    out = self.merge[3](_instance_norm(norm, leaf, leaves[1], leaves[2]))
                got = torch.autograd.grad(out, leaves, grad[:, lo:hi])
            del out
            into[:, lo:hi] = got[0]
            if norm is not None:
                grads[id(norm.weight)][lo:hi] = got[1]
                grads[id(norm.bias)][lo:hi] = got[2]
            del got

    def _first_conv_backward(self, skip: Tensor, deep: Tensor, box: list[Tensor],
                             grads: dict[int, Tensor]) -> tuple[Tensor, Tensor]:
        """Backward of norm(cat(skip, upsample(deep))) -> 3x3 conv; returns the gradients of
        skip and deep. ``box`` holds the conv output's gradient, handed over so that it can be
        freed here as soon as it is used.

        The conv's gradients come from whole-tensor calls (their grouped forms are not the same
        bits for every shape); the norm's backward goes a group of channels at a time and
        writes the concatenation's gradient over the norm output's, in place.
        """
        norm, conv, cs = self._merge_norm(0), self._merge_conv(1), skip.shape[1]
        grad_pre = box.pop()
        with torch.no_grad():
            normed = self._merge_input(skip, deep)
        _, grads[id(conv.weight)], grads[id(conv.bias)] = _conv_backward(
            conv, grad_pre, normed, conv.weight, (False, True, True))
        shape = normed.shape
        del normed
        # The input's gradient never reads the input's values: a broadcast scalar stands in for
        # it, as in torch.nn.grad.conv2d_input. (cuDNN takes it as it is; oneDNN on the CPU
        # copies it to a dense tensor inside the call, which the transposed conv would avoid,
        # but that is not the same bits for every shape.)
        stand_in = grad_pre.new_zeros(()).expand(shape)
        grad = _conv_backward(conv, grad_pre, stand_in, conv.weight, (True, False, False))[0]
        del grad_pre, stand_in
        grads[id(norm.weight)] = torch.empty_like(norm.weight)
        grads[id(norm.bias)] = torch.empty_like(norm.bias)
        with torch.no_grad():
            upsampled = _upsample(deep)  # the norm's input, rebuilt
        for lo, hi in self._input_groups(skip, deep):
            source = skip if lo == 0 else upsampled[:, lo - cs: hi - cs]
            with torch.enable_grad():
                leaves = (source.detach().requires_grad_(),
                          norm.weight[lo:hi].detach().requires_grad_(),
                          norm.bias[lo:hi].detach().requires_grad_())
                normed = _instance_norm(norm, leaves[0], leaves[1], leaves[2])
            got = torch.autograd.grad(normed, leaves, grad[:, lo:hi])
            del normed
            grad[:, lo:hi] = got[0]
            grads[id(norm.weight)][lo:hi] = got[1]
            grads[id(norm.bias)][lo:hi] = got[2]
            del got
        del upsampled, source, leaves  # the views keep the upsampled storage alive
        return grad[:, :cs].clone(), _upsample_backward(grad[:, cs:], deep)


class SpliceGenerator(nn.Module):
    """[B, 3, H, W] in [0, 1] -> [B, 3, H, W] in [0, 1], any H and W.

    Sizes that are not multiples of 32 are padded (edge replication, so no black border enters
    the per-image statistics) and cropped back. ``backward_mode`` (LEAN or PLAIN, LEAN unless
    the run's plan says otherwise) is how a pass with grad keeps what its backward needs; it
    changes memory and time, never a value.
    """

    def __init__(self) -> None:
        super().__init__()
        self.body = _Level(0, 3)
        self.head = nn.Conv2d(CHANNELS_UP[0], 3, 1)
        self.backward_mode = LEAN

    def _run(self, x: Tensor, lean: bool = False) -> Tensor:
        return self.body(x, self.head, lean)  # sigmoid(head(body(x)))

    def forward(self, x: Tensor) -> Tensor:
        height, width = x.shape[-2:]
        top, bottom, left, right = padding(int(height), int(width))
        padded = bool(top or bottom or left or right)
        if padded:
            x = F.pad(x, (left, right, top, bottom), mode="replicate")
        if self.backward_mode not in BACKWARD_MODES:
            raise ValueError(f"backward_mode is {self.backward_mode!r}; use one of {', '.join(BACKWARD_MODES)}")
        if self.backward_mode == LEAN and torch.is_grad_enabled():
            # Keep only the input for backward; the whole pass is recomputed there (with its
            # own level checkpoints), one generator call at a time, so a step that runs G on
            # several images never holds more than one image's activations.
            y = checkpoint(self._run, x, True, use_reentrant=False, preserve_rng_state=False)
        else:
            y = self._run(x)
        if padded:
            y = y[..., top: top + height, left: left + width]
        return y


def init_weights(module: nn.Module, gain: float = 0.02) -> None:
    """The reference's init: xavier_normal(gain) convs, norm weights N(1, gain), biases 0."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.xavier_normal_(m.weight, gain=gain)
            if m.bias is not None:
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
