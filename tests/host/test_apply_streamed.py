"""Splice Output on an image larger than the memory budget allows at once: streamed in bands
(comfy_splice/streaming.py) with the same result, said in the log, and refused with the size
that fits only when the bands' RAM store does not fit either. Run inside ComfyUI's real
modules (see comfy_in_process.py); the budget is COMFY_SPLICE_MEMORY_BUDGET_MB, with what the
process already holds taken as zero so that the numbers are exact."""

from __future__ import annotations

import logging
from typing import Any

import pytest
import torch

from comfy_splice.memory import estimate_apply_peak, estimate_streamed_peak, overhead_for
from comfy_in_process import PACK_NAME, Comfy, inference_image, train_node

HEIGHT, WIDTH = 200, 296  # not multiples of 32: padded and cropped in every band


@pytest.fixture
def budget(comfy: Comfy, monkeypatch: pytest.MonkeyPatch) -> Any:
    """Sets the budget in MiB; the process counts as holding nothing."""
    rt = comfy.module("nodes.comfy_runtime")
    monkeypatch.setattr(rt, "memory_in_use", lambda device: 0)
    return lambda mib: monkeypatch.setenv(rt.MEMORY_BUDGET_ENV, str(mib))


def test_an_image_over_the_budget_is_streamed_with_the_same_result(
        comfy: Comfy, trained: Any, budget: Any, caplog: pytest.LogCaptureFixture) -> None:
    frames = inference_image(HEIGHT, WIDTH, batch=2, seed=9)
    plain = comfy.run("SpliceApply", generator=trained[0], images=frames, batch_size=2)[0]
    budget(40)
    assert estimate_apply_peak(HEIGHT, WIDTH, 1) > 40 << 20  # one whole image is over the budget
    assert estimate_streamed_peak(HEIGHT, WIDTH, 0).ram_bytes + (9 << 20) < 40 << 20
    seen: list[tuple[int, int]] = []
    progress = comfy.module("nodes.comfy_runtime").Progress
    original = progress.step
    progress.step = lambda self, done, total=None: (seen.append((done, total)), original(self, done, total))[1]
    try:
        with caplog.at_level(logging.INFO, logger=f"{PACK_NAME}.comfy_splice.apply"):
            streamed = comfy.run("SpliceApply", generator=trained[0], images=frames, batch_size=2)[0]
    finally:
        progress.step = original
    assert "streaming it layer by layer in bands" in caplog.text and f"{WIDTH}x{HEIGHT}" in caplog.text
    assert streamed.shape == (2, HEIGHT, WIDTH, 3) and streamed.is_contiguous()
    assert float((streamed - plain).abs().max()) <= 1e-5
    assert float((streamed[0] - streamed[1]).abs().max()) > 1e-4  # two frames, two results
    assert seen == [(1, 2), (2, 2)]


def test_an_image_the_host_store_cannot_hold_is_refused_with_the_size_that_fits(
        comfy: Comfy, trained: Any, budget: Any) -> None:
    budget(30)  # under the 296x200 image's streamed need on the CPU (x CPU_RESIDENT_OVERHEAD)
    with pytest.raises(ValueError, match=r"an image of about \d+x\d+ would fit") as refused:
        comfy.run("SpliceApply", generator=trained[0], images=inference_image(HEIGHT, WIDTH), batch_size=1)
    message = str(refused.value)
    assert f"Applying the generator to a {WIDTH}x{HEIGHT} image" in message
    assert "streamed in bands" in message and "Traceback" not in message
    fit_w, fit_h = (int(v) for v in message.split("an image of about ")[1].split(" ")[0].split("x"))
    out = comfy.run("SpliceApply", generator=trained[0], images=inference_image(fit_h, fit_w), batch_size=1)[0]
    assert out.shape == (1, fit_h, fit_w, 3)  # the size it names does run under the same budget


def test_train_streams_its_full_resolution_result_when_it_does_not_fit_whole(
        comfy: Comfy, losses: tuple[Any, Any], budget: Any, caplog: pytest.LogCaptureFixture) -> None:
    """max_megapixels trains small; the result at the structure image's full size then goes
    through the same plan as Splice Output: streamed when it does not fit whole, not refused."""
    height, width = 2 * HEIGHT, 2 * WIDTH
    structure, appearance = inference_image(height, width, seed=3), inference_image(72, 56, seed=1)
    budget(200)
    assert estimate_apply_peak(height, width, 1, overhead_for("cpu")) > 200 << 20  # not whole
    with caplog.at_level(logging.INFO, logger=f"{PACK_NAME}.comfy_splice.apply"):
        generator, _, result = train_node(comfy, losses, structure, appearance, steps=1, max_megapixels=0.005)
    assert f"Train Generator (Splice): a {width}x{height} image needs about" in caplog.text
    assert "streaming it layer by layer in bands" in caplog.text
    budget(1 << 20)
    plain = comfy.run("SpliceApply", generator=generator, images=structure, batch_size=1)[0]
    assert result.shape == (1, height, width, 3)
    assert float((result - plain).abs().max()) <= 1e-5


def test_one_budget_variable_the_retired_one_is_named_in_the_log(
        comfy: Comfy, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    rt = comfy.module("nodes.comfy_runtime")
    monkeypatch.delenv(rt.MEMORY_BUDGET_ENV, raising=False)
    monkeypatch.setenv("COMFY_SPLICE_MEMORY_LIMIT_MB", "100")
    with caplog.at_level(logging.WARNING, logger=f"{PACK_NAME}.nodes.comfy_runtime"):
        assert rt.memory_budget_bytes() is None  # no longer read
    assert "COMFY_SPLICE_MEMORY_LIMIT_MB is no longer read; set COMFY_SPLICE_MEMORY_BUDGET_MB" in caplog.text
    monkeypatch.setenv(rt.MEMORY_BUDGET_ENV, "100")
    assert rt.memory_budget_bytes() == 100 << 20
    monkeypatch.setattr(rt, "memory_in_use", lambda device: 101 << 20)
    assert rt.free_memory(torch.device("cpu"), 0) == 0  # nothing left under the budget
    with pytest.raises(torch.OutOfMemoryError, match="over the COMFY_SPLICE_MEMORY_BUDGET_MB budget"):
        rt.check_memory_limit(torch.device("cpu"))
    monkeypatch.setattr(rt, "memory_in_use", lambda device: 40 << 20)
    assert rt.free_memory(torch.device("cpu"), 0) <= 60 << 20  # the budget minus what is held


def test_one_image_plans_for_one_whatever_the_batch_size(
        comfy: Comfy, trained: Any, budget: Any, caplog: pytest.LogCaptureFixture) -> None:
    """batch_size is an upper bound: a single photo is planned (and memory freed) for one image,
    so it runs whole, without a 'fewer images at a time' note, when one fits."""
    one = estimate_apply_peak(HEIGHT, WIDTH, 1, overhead_for("cpu"))  # what the CPU check counts
    budget((one >> 20) + 1)
    assert estimate_apply_peak(HEIGHT, WIDTH, 2, overhead_for("cpu")) > (one >> 20) + 1 << 20
    with caplog.at_level(logging.INFO, logger=f"{PACK_NAME}.comfy_splice.apply"):
        out = comfy.run("SpliceApply", generator=trained[0], images=inference_image(HEIGHT, WIDTH), batch_size=4)[0]
    assert out.shape == (1, HEIGHT, WIDTH, 3)
    assert "at a time instead of" not in caplog.text and "streaming" not in caplog.text
