"""Streamed Splice Output (comfy_splice/streaming.py): the plain network's output from bands of
rows, the RAM store and the device bands it states, and the budget that picks it."""

from __future__ import annotations

import pytest
import torch

from comfy_splice.generator import MIN_SIDE, SpliceGenerator, build_generator
from comfy_splice.measure import TensorPeakTracker
from comfy_splice.refusal import MemoryBudgetError
from comfy_splice.memory import (STREAM_RAM_BYTES_PER_PIXEL, estimate_apply_peak,
                                 estimate_streamed_peak, streamed_band_that_fits)
from comfy_splice.streaming import DEFAULT_BAND_BYTES, RamStore, plan, stream_generator

from .conftest import synthetic_image


def _spread(spread: float, dtype: torch.dtype = torch.float32) -> SpliceGenerator:
    """The reference init plus a spread of weights, so that the output varies over the image
    (the fresh init's output is almost flat at 0.5) and every layer matters."""
    net = build_generator(7)
    gen = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for param in net.parameters():
            if param.ndim == 4:
                param.add_(torch.randn(param.shape, generator=gen) * spread / param[0].numel() ** 0.5)
            else:
                param.add_(torch.randn(param.shape, generator=gen) * 0.1)
    return net.to(dtype).eval()


@pytest.fixture(scope="module")
def generator() -> SpliceGenerator:
    return _spread(0.2)


def _image(height: int, width: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    noise = torch.rand(1, 3, height, width, generator=torch.Generator().manual_seed(height * width))
    return (synthetic_image(height, width, seed=height) * 0.7 + 0.3 * noise).to(dtype)


def _plain(net: SpliceGenerator, images: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return net(images)


@pytest.mark.parametrize("height,width,band_bytes", [
    (MIN_SIDE, MIN_SIDE, 0),  # the smallest size, bands of one row in every layer
    (67, 101, 0),             # odd sizes: padded on both sides, cropped back
    (40, 70, 0),              # under the minimum: padded up to 64
    (130, 97, 1 << 16),       # bands of a few rows
    (200, 333, 1 << 20),      # larger bands; one band for the deep levels
])
def test_streamed_output_equals_the_plain_network(generator: SpliceGenerator, height: int, width: int,
                                                 band_bytes: int) -> None:
    image = _image(height, width)
    plain = _plain(generator, image)
    store = RamStore()
    streamed = stream_generator(generator, image, "cpu", band_bytes=band_bytes, store=store)
    assert streamed.shape == image.shape
    assert float(plain.std()) > 0.03  # the output really varies
    assert float((streamed - plain).abs().max()) <= 1e-5
    assert store.current == 0  # every stored layer was dropped after its last read
    assert store.peak == plan(height, width, band_bytes).ram_bytes  # the plan walks the same pass


@pytest.mark.parametrize("height,width", [(MIN_SIDE, MIN_SIDE), (67, 101)])
def test_in_float64_streaming_changes_nothing_but_rounding(height: int, width: int) -> None:
    """The algorithm is exact: in float64, with weights spread three times as wide (where float32's
    own rounding in the plain network reaches 1e-5 at 64x64), bands of one row give the plain
    network's output to within 1e-10."""
    net = _spread(0.6, torch.float64)
    image = _image(height, width, torch.float64)
    streamed = stream_generator(net, image, "cpu", band_bytes=0)
    assert streamed.dtype == torch.float64
    assert float((streamed - _plain(net, image)).abs().max()) <= 1e-10


def test_a_batch_streams_into_a_channels_last_buffer(generator: SpliceGenerator) -> None:
    """Splice Output's case: frames one at a time, written into a permuted view of ComfyUI's
    [B, H, W, 3] buffer; progress after every image and a callback after every pass."""
    frames = torch.rand(2, 3, 70, 90)
    buffer = torch.full((2, 70, 90, 3), -1.0)
    passes: list[int] = []
    images: list[tuple[int, int]] = []
    out = stream_generator(generator, frames, "cpu", band_bytes=1 << 18, out=buffer.permute(0, 3, 1, 2),
                           on_pass=lambda: passes.append(1), on_image=lambda d, t: images.append((d, t)))
    assert out.data_ptr() == buffer.data_ptr()
    assert float((buffer.permute(0, 3, 1, 2) - _plain(generator, frames)).abs().max()) <= 1e-5
    assert images == [(1, 2), (2, 2)]
    assert len(passes) == 2 * plan(70, 90, 1 << 18).passes


def test_host_store_is_96_bytes_per_padded_pixel() -> None:
    for height, width in [(3024, 4032), (1080, 1920), (64, 64)]:
        streamed = estimate_streamed_peak(height, width)
        padded_h, padded_w = streamed.padded
        assert padded_h % 32 == 0 and padded_w % 32 == 0 and padded_h >= height and padded_w >= width
        assert streamed.ram_bytes == STREAM_RAM_BYTES_PER_PIXEL * padded_h * padded_w
        assert streamed.band_bytes <= DEFAULT_BAND_BYTES
        small = estimate_streamed_peak(height, width, 16 << 20)
        assert small.band_bytes <= 16 << 20 and small.ram_bytes == streamed.ram_bytes
        if height * width > 1e6:  # one pass holds ~420 bytes per pixel on the device
            assert small.device_bytes < estimate_apply_peak(height, width) / 20


def test_tracked_device_peak_stays_within_the_estimate(generator: SpliceGenerator) -> None:
    """Every tensor the pass creates, except views of the RAM store, against the device part
    of the estimate; the caller's image and output buffer are counted and taken off."""
    height, width, band_bytes = 192, 288, 1 << 20
    image = torch.rand(1, 3, height, width)
    out = torch.empty_like(image)
    store = RamStore()
    tracker = TensorPeakTracker(ignore=store.owns)
    tracker.add([image, out])
    caller = tracker.current
    tracker.add(generator.parameters())
    with tracker:
        stream_generator(generator, image, "cpu", band_bytes=band_bytes, out=out, store=store)
    device = tracker.peak - caller
    estimate = estimate_streamed_peak(height, width, band_bytes)
    assert device <= estimate.device_bytes, (device, estimate)
    assert estimate.device_bytes <= 3 * device, (device, estimate)
    # the bands stay near the budget: far below what the plain pass holds at this size
    plain = TensorPeakTracker()
    with plain, torch.no_grad():
        generator(image)
    assert tracker.peak - caller - 4 * sum(p.numel() for p in generator.parameters()) < plain.peak / 5
    assert store.peak == estimate.ram_bytes


def test_band_that_fits_and_the_size_named_when_nothing_does() -> None:
    height, width = 3024, 4032
    streamed = estimate_streamed_peak(height, width)
    output = 12 * height * width
    # a GPU with 1 GB free and plenty of RAM: bands as large as the default
    fit = streamed_band_that_fits(height, width, 1 << 30, 64 << 30, shared=False, where="memory on cuda:0")
    assert fit.ram_bytes == streamed.ram_bytes and fit.device_bytes <= 1 << 30
    # the CPU: the store, the output and the bands out of the same RAM
    need = streamed.ram_bytes + output
    fit = streamed_band_that_fits(height, width, need + (64 << 20), need + (64 << 20), shared=True)
    assert fit.ram_bytes + output + fit.device_bytes <= need + (64 << 20)
    with pytest.raises(MemoryBudgetError, match=r"an image of about \d+x\d+ would fit") as refused:
        streamed_band_that_fits(height, width, need // 2, need // 2, shared=True, where="RAM")
    message = str(refused.value)
    assert "Applying the generator to a 4032x3024 image" in message and "streamed in bands" in message
    fit_w, fit_h = (int(v) for v in message.split("an image of about ")[1].split(" ")[0].split("x"))
    assert fit_w < width and abs(fit_w / fit_h - width / height) < 0.01
    streamed_band_that_fits(fit_h, fit_w, need // 2, need // 2, shared=True)  # the named size fits
    with pytest.raises(MemoryBudgetError, match="RAM and"):  # a GPU machine short of RAM
        streamed_band_that_fits(height, width, 1 << 30, need // 2, shared=False, where="memory on cuda:0")
