"""Exact Splice Output for images too large for the device: the generator, layer by layer, in bands.

A plain ``generator(image)`` needs about 420 bytes of device memory per pixel (a 12 MP photo:
~5 GB). Here the device holds only horizontal bands of one layer at a time; the full-resolution
maps that later layers need stay in RAM (a :class:`RamStore`, about 96 bytes per
padded pixel at its peak), and the result is the plain network's, not an approximation.

**Why the result is exact.** The network (``comfy_splice/generator.py``) is built from five
kinds of operation, and each one can be computed on a band of rows from a slightly taller band
of its input:

* a 3x3 convolution with zero padding, stride 1: output rows ``[r0, r1)`` need input rows
  ``[r0-1, r1+1)``; rows outside the image are the zeros the padding would add;
* a 3x3 convolution with zero padding, stride 2: output rows ``[r0, r1)`` need input rows
  ``[2*r0-1, 2*r1)``;
* 1x1 convolutions, the LeakyReLU and the sigmoid: per pixel, no halo at all;
* bilinear x2 upsampling (``align_corners=False``): output row ``j`` reads input rows
  ``floor(j/2 - 1/4)`` and the next one, clamped to the image. Upsampling input rows
  ``[a, b)`` gives every output row in ``[2a+1, 2b-2]`` exactly (all of them when the band
  touches the top or bottom of the image, where the clamping is the same as for the whole
  image); a band reads two rows of margin and keeps only those;
* InstanceNorm (affine), per image and per channel: ``(x - mean) / sqrt(var + eps) * w + b``
  with the **whole** map's mean and biased variance. A band cannot know them, so every norm
  takes one pass over the bands of its input first: each band's per-channel count, mean and
  variance (Welford's method, ``torch.var_mean``) are combined in float64 with Chan's formula
  (the whole mean is the count-weighted mean of the bands' means; the whole sum of squared
  deviations is the bands' own plus each band's count times its mean's squared distance from
  the whole mean), which is the mean and variance of the whole map; a second pass then
  applies the norm band by band as the per-channel affine map it is,
  ``x * alpha + beta`` with ``alpha = w / sqrt(var + eps)``, ``beta = b - mean * alpha`` (the
  form torch's own CPU kernel uses).

Every output pixel therefore goes through the same arithmetic as in the plain network, with
the same inputs; what can differ is only rounding: the order of the float32 sums inside the
convolutions (a backend may pick another algorithm for a band than for the whole map, and the
merge's convolution is summed in two parts, see below) and the norm statistics, which are
combined in float64 here. ``tests/core/test_streaming.py`` checks both sides of that: in
float64 the streamed output equals the plain network's to 1e-10 with bands of one row; in
float32 (as Splice Output runs) the difference stays within 1e-5 on the [0, 1] output with
bands of one row, odd sizes, sizes under and at the minimum.

**What is kept where.** A norm needs its input twice (statistics, then normalising), so the
raw output of every 3x3 convolution is written to the RAM store band by band and read back
band by band: the strided convolution and the one after it (half resolution), the 1x1 skip
convolution (four channels; at the top level it is recomputed from the input image instead) and
the merge's 3x3 convolution. Everything per pixel after a stored map (norm, LeakyReLU, a 1x1
convolution, the next norm) is recomputed while reading it, so the merge's 1x1 convolution and
the head are never stored. The merge's concatenation of the skip branch (4 channels) and the
upsampled deeper level (up to 128 channels) is never built at all: its norm is per channel and
the 3x3 convolution after it is linear in its input channels, so the two parts are normalised
and convolved separately (with the two slices of the weight) and the results added. A map is
dropped from the store as soon as nothing later reads it.

**What the device holds.** Each pass picks the largest band whose working tensors (the input
rows with their halo, the upsampled rows, the output rows and the statistics' temporaries)
fit in ``band_bytes``, at least one row. :func:`plan` walks the same passes without computing
anything and returns the RAM store's peak and the largest band's bytes, which is what
``comfy_splice/memory.py`` states as the streamed estimate.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Callable, Iterator, TypeVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .generator import SpliceGenerator, padding

FLOAT_BYTES = 4
DEFAULT_BAND_BYTES = 256 << 20
# Device bytes besides the bands: the generator's weights (~1.04 M parameters, 4.2 MB), the
# norms' per-channel parameters and sums, and a margin for small temporaries.
STREAM_DEVICE_FIXED_BYTES = 8 << 20

# -- the RAM store -----------------------------------------------------------------------------

class RamStore:
    """The full-resolution maps of one streamed pass, in RAM (CPU memory).

    Arrays are allocated by numpy, outside torch's allocators, so nothing here ever lands on
    the device, and a :class:`~comfy_splice.measure.TensorPeakTracker` can tell the store's bytes
    from the device's bands (``ignore=store.owns``). ``current`` and ``peak`` count the bytes of
    the maps alive now and at most.
    """

    def __init__(self) -> None:
        self.current = 0
        self.peak = 0
        self._ranges: dict[int, int] = {}

    def allocate(self, channels: int, height: int, width: int, dtype: torch.dtype,
                 dry: bool) -> tuple[np.ndarray | None, int]:
        """A [C, H, W] array and its bytes (no array in a dry run, which only counts them)."""
        nbytes = channels * height * width * dtype.itemsize
        self.current += nbytes
        self.peak = max(self.peak, self.current)
        if dry:
            return None, nbytes
        array = np.empty((channels, height, width), dtype=torch.empty(0, dtype=dtype).numpy().dtype)
        self._ranges[array.ctypes.data] = nbytes
        return array, nbytes

    def free(self, array: np.ndarray | None, nbytes: int) -> None:
        """Forget an array (its memory goes when the last reference does)."""
        self.current -= nbytes
        if array is not None:
            self._ranges.pop(array.ctypes.data, None)

    def owns(self, storage: torch.UntypedStorage) -> bool:
        """Whether a torch storage lies inside one of the store's arrays (a band view of it)."""
        pointer = storage.data_ptr()
        return any(start <= pointer < start + size for start, size in self._ranges.items())


# -- maps that can be read in bands -------------------------------------------------------------

class _Map:
    """A [C, H, W] map whose rows can be produced on the device, band by band.

    ``per_pixel``: floats per pixel of a band that producing it holds on the device at once
    (the band itself included), for the cost model. ``fresh``: whether :meth:`rows` returns
    memory of its own that the reader may change in place (a stored map read on the CPU gives
    a view of the store instead of a copy).
    """

    fresh = True

    def __init__(self, channels: int, height: int, width: int, per_pixel: float) -> None:
        self.channels, self.height, self.width, self.per_pixel = channels, height, width, per_pixel

    def rows(self, r0: int, r1: int) -> Tensor:
        """Rows [r0, r1) (inside the map) as a [1, C, r1 - r0, W] tensor on the device."""
        raise NotImplementedError

    def release(self) -> None:
        """Nothing will read this map again: drop what it keeps."""


class _InputMap(_Map):
    """The image as the generator sees it: padded to a multiple of 32 by edge replication,
    read from the caller's CPU image one band at a time (no padded copy is made)."""

    def __init__(self, image: Tensor, pads: tuple[int, int, int, int], device: torch.device,
                 dtype: torch.dtype) -> None:
        top, bottom, left, right = pads
        _, height, width = image.shape
        # the selected rows, their copy on the device (or cast) and the padded band
        super().__init__(3, height + top + bottom, width + left + right, per_pixel=9)
        self.image, self.top, self.left, self.right, self.device = image, top, left, right, device
        self.dtype = dtype

    def rows(self, r0: int, r1: int) -> Tensor:
        source = (torch.arange(r0, r1) - self.top).clamp_(0, self.image.shape[1] - 1)
        band = self.image.index_select(1, source).to(self.device, self.dtype)[None]
        return F.pad(band, (self.left, self.right, 0, 0), mode="replicate")


class _StoredMap(_Map):
    """A map kept in the RAM store; reading copies a band to the device (on the CPU the band
    is a view of the store: nothing to copy)."""

    def __init__(self, store: RamStore, channels: int, height: int, width: int, device: torch.device,
                 dtype: torch.dtype, dry: bool) -> None:
        on_cpu = device.type == "cpu"
        super().__init__(channels, height, width, per_pixel=0 if on_cpu else channels)
        self.fresh = not on_cpu
        self.store, self.device = store, device
        self.array, self.nbytes = store.allocate(channels, height, width, dtype, dry)

    def _view(self, r0: int, r1: int) -> Tensor:
        assert self.array is not None, "read after release"
        return torch.from_numpy(self.array[:, r0:r1])[None]

    def rows(self, r0: int, r1: int) -> Tensor:
        view = self._view(r0, r1)
        return view if self.device.type == "cpu" else view.to(self.device)

    def write(self, r0: int, band: Tensor) -> None:
        """Store a computed band [1, C, r, W] at rows [r0, r0 + r)."""
        self._view(r0, r0 + band.shape[2]).copy_(band)

    def release(self) -> None:
        if self.nbytes:
            self.store.free(self.array, self.nbytes)
            self.array, self.nbytes = None, 0


Step = Callable[[Tensor, bool], Tensor]  # (band, may change it in place) -> band


class _ChainMap(_Map):
    """Per-pixel steps (norm, LeakyReLU, 1x1 convolution) applied to another map while reading."""

    def __init__(self, base: _Map, steps: list[Step], channels: int, per_pixel: float) -> None:
        super().__init__(channels, base.height, base.width, per_pixel)
        self.base, self.steps = base, steps
        self.fresh = base.fresh or bool(steps)

    def rows(self, r0: int, r1: int) -> Tensor:
        band, owned = self.base.rows(r0, r1), self.base.fresh
        for step in self.steps:
            band, owned = step(band, owned), True
        return band

    def release(self) -> None:
        self.base.release()


# -- norms --------------------------------------------------------------------------------------

@dataclass
class _Affine:
    """An InstanceNorm with the whole map's statistics, as the per-channel affine map it is:
    ``x * alpha + beta`` with ``alpha = w / sqrt(var + eps)`` and ``beta = b - mean * alpha``
    (the form torch's own CPU kernel applies)."""

    alpha: Tensor
    beta: Tensor

    def __call__(self, band: Tensor, owned: bool) -> Tensor:
        view = (1, -1, 1, 1)
        return torch.addcmul(self.beta.view(view), band, self.alpha.view(view), out=band if owned else None)

    def part(self, start: int, stop: int) -> "_Affine":
        """The norm of channels [start, stop) (the skip or the upsampled part of a concatenation)."""
        return _Affine(self.alpha[start:stop], self.beta[start:stop])


class _Moments:
    """Per-channel mean and biased variance of a map, gathered band by band.

    Each band gives its own mean and variance (``torch.var_mean``, Welford's method, on the
    device); they are combined in float64 on the CPU with Chan's formula: the whole map's mean
    is the count-weighted mean of the bands' means, and its sum of squared deviations is the
    bands' own plus each band's count times its mean's squared distance from the whole mean.
    """

    def __init__(self) -> None:
        self.counts: list[int] = []
        self.means: list[Tensor] = []
        self.variances: list[Tensor] = []

    def add(self, band: Tensor) -> None:
        variance, mean = torch.var_mean(band, dim=(0, 2, 3), correction=0)
        self.counts.append(band.shape[0] * band.shape[2] * band.shape[3])
        # to the CPU first, then float64 (Apple's MPS has no float64)
        self.means.append(mean.cpu().double())
        self.variances.append(variance.cpu().double())

    def mean_var(self) -> tuple[Tensor, Tensor]:
        """Mean and biased variance per channel, float64 on the CPU."""
        assert self.counts, "no band was added"
        counts = torch.tensor(self.counts, dtype=torch.float64)[:, None]
        means, variances = torch.stack(self.means), torch.stack(self.variances)
        total = counts.sum()
        mean = (counts * means).sum(0) / total
        squares = (counts * (variances + (means - mean) ** 2)).sum(0)
        return mean, squares / total


def _affine(norm: nn.InstanceNorm2d, device: torch.device, dtype: torch.dtype,
            *moments: _Moments) -> _Affine:
    """The norm's affine map from the statistics of its input's channels (several parts are
    concatenated in order), as tensors of the network's ``dtype`` on ``device``."""
    means, variances = zip(*(m.mean_var() for m in moments))
    mean, variance = torch.cat(means), torch.cat(variances)
    weight = norm.weight.detach().cpu().double() if norm.weight is not None else torch.ones_like(mean)
    bias = norm.bias.detach().cpu().double() if norm.bias is not None else torch.zeros_like(mean)
    alpha = weight / torch.sqrt(variance + norm.eps)
    beta = bias - mean * alpha
    return _Affine(alpha.to(dtype).to(device), beta.to(dtype).to(device))


_DRY = _Affine(torch.empty(0), torch.empty(0))  # a dry run never applies a norm


def _leaky(slope: float) -> Step:
    return lambda band, owned: F.leaky_relu(band, slope, inplace=owned)


def _pointwise(conv: nn.Conv2d) -> Step:
    return lambda band, owned: F.conv2d(band, conv.weight, conv.bias)


# -- the network's parts, read from its modules -------------------------------------------------

@dataclass
class _LevelParts:
    skip_conv: nn.Conv2d
    skip_norm: nn.InstanceNorm2d
    down_conv: nn.Conv2d
    down_norm: nn.InstanceNorm2d
    down2_conv: nn.Conv2d
    down2_norm: nn.InstanceNorm2d
    merge_norm: nn.InstanceNorm2d
    merge_conv: nn.Conv2d
    merge_conv_norm: nn.InstanceNorm2d
    merge_point: nn.Conv2d
    merge_point_norm: nn.InstanceNorm2d
    slope: float
    inner: nn.Module | None


_M = TypeVar("_M", bound=nn.Module)


def _parts(level: nn.Module) -> _LevelParts:
    """The convolutions and norms of one U-Net level, in the order the network applies them."""
    def of(seq: object, kind: type[_M]) -> list[_M]:
        assert isinstance(seq, nn.Module)
        return [m for m in seq.modules() if isinstance(m, kind)]

    skip_c, skip_n = of(level.skip, nn.Conv2d), of(level.skip, nn.InstanceNorm2d)
    down_c, down_n = of(level.down, nn.Conv2d), of(level.down, nn.InstanceNorm2d)
    merge_c, merge_n = of(level.merge, nn.Conv2d), of(level.merge, nn.InstanceNorm2d)
    slopes = {float(m.negative_slope) for m in of(level, nn.LeakyReLU)}
    shapes = ([c.kernel_size for c in skip_c + down_c + merge_c], [c.stride for c in down_c],
              len(skip_n), len(down_n), len(merge_n), len(slopes))
    if shapes != ([(1, 1), (3, 3), (3, 3), (3, 3), (1, 1)], [(2, 2), (1, 1)], 1, 2, 3, 1):
        raise ValueError("streamed apply expects the Splice generator's layout (skip 1x1; strided "
                         "3x3 then 3x3; norm, 3x3, 1x1 in the merge); this module differs")
    return _LevelParts(skip_c[0], skip_n[0], down_c[0], down_n[0], down_c[1], down_n[1],
                       merge_n[0], merge_c[0], merge_n[1], merge_c[1], merge_n[2], slopes.pop(),
                       getattr(level, "inner", None))


# -- the streamed pass --------------------------------------------------------------------------

@dataclass(frozen=True)
class StreamPlan:
    """What a streamed pass needs: RAM store peak, the largest band on the device, passes."""

    ram_bytes: int
    band_bytes: int
    device_bytes: int
    passes: int
    padded: tuple[int, int]


class _Streamer:
    """Runs (or, ``dry``, only plans) the generator layer by layer over bands of rows."""

    def __init__(self, device: torch.device, band_bytes: int, store: RamStore, dry: bool,
                 on_pass: Callable[[], None] | None = None, dtype: torch.dtype = torch.float32) -> None:
        self.device, self.band_bytes, self.store, self.dry = device, max(0, int(band_bytes)), store, dry
        self.dtype = dtype
        self.on_pass = on_pass
        self.largest_band = 0
        self.passes = 0

    # bands ------------------------------------------------------------------------------------

    def _bands(self, height: int, width: int, fixed: float, per_row: float) -> Iterator[tuple[int, int]]:
        """Bands of rows [r0, r1) of an output ``height`` x ``width``, each holding at most
        ``4 * width * (fixed + per_row * rows)`` bytes on the device (at least one row)."""
        budget_rows = int((self.band_bytes / (FLOAT_BYTES * width) - fixed) // per_row)
        rows = max(1, min(height, budget_rows))
        self.largest_band = max(self.largest_band, int(FLOAT_BYTES * width * (fixed + per_row * rows)))
        self.passes += 1
        if self.dry:
            return
        for r0 in range(0, height, rows):
            yield r0, min(height, r0 + rows)
        if self.on_pass is not None:
            self.on_pass()

    def _store(self, channels: int, height: int, width: int) -> _StoredMap:
        return _StoredMap(self.store, channels, height, width, self.device, self.dtype, self.dry)

    @staticmethod
    def _halo(source: _Map, r0: int, r1: int, step: Step | None = None) -> Tensor:
        """Rows [r0, r1) of ``source`` (after ``step``), with zero rows where they fall outside
        the map: the zero padding of the convolution that reads them."""
        a, b = max(r0, 0), min(r1, source.height)
        band = source.rows(a, b)
        if step is not None:
            band = step(band, source.fresh)
        if a > r0 or b < r1:
            band = F.pad(band, (0, 0, a - r0, r1 - b))
        return band

    @staticmethod
    def _upsampled(deep: _Map, r0: int, r1: int) -> Tensor:
        """Rows [r0, r1) of the bilinear x2 upsampling of ``deep`` (exact, see the module doc)."""
        a, b = max(0, r0 // 2 - 1), min(deep.height, (r1 + 1) // 2 + 1)
        band = deep.rows(a, b)
        up = F.interpolate(band, scale_factor=2.0, mode="bilinear", align_corners=False)
        del band
        return up[:, :, r0 - 2 * a:r1 - 2 * a]

    # passes -----------------------------------------------------------------------------------

    def _pointwise_pass(self, source: _Map, conv: nn.Conv2d, keep: bool) -> tuple[_StoredMap | None, _Moments]:
        """A 1x1 convolution over ``source``: its statistics, and its output stored if ``keep``."""
        c_out = conv.out_channels
        out = self._store(c_out, source.height, source.width) if keep else None
        moments = _Moments()
        for r0, r1 in self._bands(source.height, source.width, 0, source.per_pixel + 2 * c_out):
            band = F.conv2d(source.rows(r0, r1), conv.weight, conv.bias)
            moments.add(band)
            if out is not None:
                out.write(r0, band)
        return out, moments

    def _stats_pass(self, source: _Map) -> _Moments:
        """The statistics of ``source`` (a 1x1 convolution's output, recomputed when read)."""
        moments = _Moments()
        for r0, r1 in self._bands(source.height, source.width, 0, source.per_pixel + source.channels):
            moments.add(source.rows(r0, r1))
        return moments

    def _conv3x3_pass(self, source: _Map, conv: nn.Conv2d) -> tuple[_StoredMap, _Moments]:
        """A 3x3 convolution (stride 1 or 2, zero padding) over ``source``, stored, with its
        statistics."""
        stride = conv.stride[0]
        height = (source.height - 1) // stride + 1
        width = (source.width - 1) // stride + 1
        c_in, c_out = source.channels, conv.out_channels
        # input band (and its zero-padded copy) per output row and column; output and deviation
        per_in = (source.per_pixel + c_in) * stride * stride
        out = self._store(c_out, height, width)
        moments = _Moments()
        for r0, r1 in self._bands(height, width, per_in * 2 / stride, per_in + 2 * c_out):
            rows = self._halo(source, stride * r0 - 1, stride * (r1 - 1) + 2)
            band = F.conv2d(rows, conv.weight, conv.bias, stride=stride, padding=(0, 1))
            del rows
            moments.add(band)
            out.write(r0, band)
        return out, moments

    def _merge_stats_pass(self, skip: _Map, deep: _Map) -> tuple[_Moments, _Moments]:
        """Statistics of the concatenation [skip, upsample(deep)] (each part on its own)."""
        c_deep = deep.channels
        fixed = 1.5 * deep.per_pixel / 2 + 6 * c_deep
        per_row = max(skip.per_pixel + skip.channels, deep.per_pixel / 4 + 2 * c_deep)
        skip_moments, deep_moments = _Moments(), _Moments()
        for r0, r1 in self._bands(skip.height, skip.width, fixed, per_row):
            skip_moments.add(skip.rows(r0, r1))
            deep_moments.add(self._upsampled(deep, r0, r1))
        return skip_moments, deep_moments

    def _merge_conv_pass(self, skip: _Map, deep: _Map, norm: _Affine, conv: nn.Conv2d) -> tuple[_StoredMap, _Moments]:
        """conv3x3(norm([skip, upsample(deep)])), the concatenation never built: the norm is
        per channel and the convolution linear over channels, so each part is normalised and
        convolved with its slice of the weight, and the two results added."""
        c_skip, c_deep, c_out = skip.channels, deep.channels, conv.out_channels
        height, width = skip.height, skip.width
        skip_norm, deep_norm = norm.part(0, c_skip), norm.part(c_skip, c_skip + c_deep)
        skip_weight, deep_weight = conv.weight[:, :c_skip].contiguous(), conv.weight[:, c_skip:].contiguous()
        # upsampled rows with margin, its normalised zero-padded copy, the deeper band, the
        # output, the part being added, and the statistics' deviation
        fixed = 10 * c_deep + 2 * deep.per_pixel
        per_row = max(2 * c_deep + deep.per_pixel / 4, skip.per_pixel + skip.channels) + 3 * c_out
        out = self._store(c_out, height, width)
        moments = _Moments()
        for r0, r1 in self._bands(height, width, fixed, per_row):
            rows = self._halo(skip, r0 - 1, r1 + 1, skip_norm)
            band = F.conv2d(rows, skip_weight, conv.bias, padding=(0, 1))
            del rows
            a, b = max(r0 - 1, 0), min(r1 + 1, height)
            up = deep_norm(self._upsampled(deep, a, b).contiguous(), True)
            if a > r0 - 1 or b < r1 + 1:
                up = F.pad(up, (0, 0, a - r0 + 1, r1 + 1 - b))
            band.add_(F.conv2d(up, deep_weight, None, padding=(0, 1)))
            del up
            moments.add(band)
            out.write(r0, band)
        return out, moments

    # the network ------------------------------------------------------------------------------

    def _norm(self, norm: nn.InstanceNorm2d, *moments: _Moments) -> _Affine:
        return _DRY if self.dry else _affine(norm, self.device, self.dtype, *moments)

    def level(self, module: nn.Module, x: _Map, x_is_input: bool) -> _Map:
        """One U-Net level over ``x``: returns its output as a map read lazily from the store.
        ``x`` is released here after its last read (unless it is the caller's image)."""
        p = _parts(module)
        leaky = _leaky(p.slope)
        # skip branch: 1x1 conv -> norm -> LeakyReLU (kept, or recomputed from the input image)
        c_skip = p.skip_conv.out_channels
        stored, moments = self._pointwise_pass(x, p.skip_conv, keep=not x_is_input)
        raw: _Map = (stored if stored is not None else
                     _ChainMap(x, [_pointwise(p.skip_conv)], c_skip, x.per_pixel + c_skip))
        skip = _ChainMap(raw, [self._norm(p.skip_norm, moments), leaky], c_skip, raw.per_pixel)
        # down: strided 3x3 -> norm -> LeakyReLU -> 3x3 -> norm -> LeakyReLU
        down1, moments = self._conv3x3_pass(x, p.down_conv)
        if not x_is_input:
            x.release()
        down1_act = _ChainMap(down1, [self._norm(p.down_norm, moments), leaky], down1.channels,
                              down1.per_pixel)
        down2, moments = self._conv3x3_pass(down1_act, p.down2_conv)
        down1.release()
        deep: _Map = _ChainMap(down2, [self._norm(p.down2_norm, moments), leaky], down2.channels,
                               down2.per_pixel)
        if p.inner is not None:
            deep = self.level(p.inner, deep, x_is_input=False)
        # merge: norm([skip, up(deep)]) -> 3x3 -> norm -> LeakyReLU -> 1x1 -> norm -> LeakyReLU
        skip_moments, deep_moments = self._merge_stats_pass(skip, deep)
        merge_norm = self._norm(p.merge_norm, skip_moments, deep_moments)
        merged, moments = self._merge_conv_pass(skip, deep, merge_norm, p.merge_conv)
        skip.release()
        deep.release()
        steps: list[Callable[[Tensor, bool], Tensor]] = [
            self._norm(p.merge_conv_norm, moments), leaky, _pointwise(p.merge_point)]
        c_out = p.merge_point.out_channels
        point = _ChainMap(merged, steps, c_out, merged.channels + c_out)
        moments = self._stats_pass(point)
        steps += [self._norm(p.merge_point_norm, moments), leaky]
        return _ChainMap(merged, steps, c_out, merged.channels + c_out)

    def head(self, body: _Map, head: nn.Conv2d, pads: tuple[int, int, int, int], out: Tensor | None) -> None:
        """sigmoid(head(body)) on the image's own rows and columns, written into ``out`` ([3, H, W];
        None in a dry run)."""
        top, bottom, left, right = pads
        height, width = body.height - top - bottom, body.width - left - right
        for r0, r1 in self._bands(height, body.width, 0, body.per_pixel + 2 * head.out_channels):
            band = torch.sigmoid_(F.conv2d(body.rows(top + r0, top + r1), head.weight, head.bias))
            if out is not None:
                out[:, r0:r1].copy_(band[0, :, :, left:left + width])


def plan(height: int, width: int, band_bytes: int = DEFAULT_BAND_BYTES) -> StreamPlan:
    """The RAM store's peak and the largest band of a streamed pass over one ``height`` x
    ``width`` image, from the same code that runs it (nothing is computed or allocated)."""
    pads = padding(height, width)
    padded = (height + pads[0] + pads[1], width + pads[2] + pads[3])
    store = RamStore()
    # planned for a device that is not the CPU, where a stored band is copied to the device
    # when read (on the CPU it is read in place, so the bands there hold less)
    streamer = _Streamer(torch.device("meta"), band_bytes, store, dry=True)
    generator = _layout()
    x = _InputMap(torch.empty(3, height, width, device="meta"), pads, torch.device("meta"), torch.float32)
    body = streamer.level(generator.body, x, x_is_input=True)
    streamer.head(body, generator.head, pads, None)
    return StreamPlan(store.peak, streamer.largest_band, streamer.largest_band + STREAM_DEVICE_FIXED_BYTES,
                      streamer.passes, padded)


_LAYOUT: SpliceGenerator | None = None


def _layout() -> SpliceGenerator:
    """A generator on the meta device: its layout without weights (for planning)."""
    global _LAYOUT
    if _LAYOUT is None:
        with torch.device("meta"):
            _LAYOUT = SpliceGenerator()
    return _LAYOUT


@torch.no_grad()
def stream_generator(generator: SpliceGenerator, images: Tensor, device: torch.device | str,
                     band_bytes: int = DEFAULT_BAND_BYTES, out: Tensor | None = None,
                     store: RamStore | None = None, on_pass: Callable[[], None] | None = None,
                     on_image: Callable[[int, int], None] | None = None) -> Tensor:
    """``generator(images)`` for [B, 3, H, W] (or [3, H, W]) CPU images, one image at a time,
    with the device holding only bands of about ``band_bytes`` (see the module doc).

    Returns the network's dtype (float32, as Splice Output runs it) on the CPU, written into
    ``out`` (shaped like ``images``, e.g. a permuted view of ComfyUI's channels-last buffer)
    when given. ``store``: the RAM store to use (tests and benchmarks read its peak).
    ``on_pass()`` runs after every pass over the bands (interrupt and memory checks),
    ``on_image(done, total)`` after every image. The caller's module is not moved: off the CPU
    a copy runs.
    """
    single = images.ndim == 3
    batch = images[None] if single else images
    if batch.ndim != 4 or batch.shape[1] != 3:
        raise ValueError(f"expected images of shape [B, 3, H, W], got {tuple(images.shape)}")
    dtype = next(generator.parameters()).dtype
    if out is None:
        out = torch.empty(batch.shape, dtype=dtype)
    elif single:
        out = out[None]
    if out.shape != batch.shape:
        raise ValueError(f"output buffer {tuple(out.shape)} does not match images {tuple(batch.shape)}")
    device = torch.device(device)
    if next(generator.parameters()).device != device:
        generator = copy.deepcopy(generator).to(device)
    total = int(batch.shape[0])
    for index in range(total):
        image = batch[index]
        pads = padding(int(image.shape[1]), int(image.shape[2]))
        streamer = _Streamer(device, band_bytes, store if store is not None else RamStore(), dry=False,
                             on_pass=on_pass, dtype=dtype)
        body = streamer.level(generator.body, _InputMap(image, pads, device, dtype), x_is_input=True)
        streamer.head(body, generator.head, pads, out[index])
        body.release()
        if on_image is not None:
            on_image(index + 1, total)
    return out[0] if single else out
