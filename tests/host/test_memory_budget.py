"""Memory bombs in a real server: a 12 MP photo into Train Generator and Splice Output.

A second server runs with ``COMFY_SPLICE_MEMORY_BUDGET_MB`` (the pack's memory budget: what the
server process may hold, so its room is the budget minus what it already holds), so the refusals
are exercised without filling the machine: each must come back as one message naming the option
or size that fits, before the large allocation, and the server must keep answering. Splice
Output refuses the photo only because even its streamed pass (a ~1.3 GB RAM store for 12 MP)
is more than the room left under 2000 MB by a running server with the photo loaded (about
0.7 GB, measured). On the shared server (no cap), a 12 MP photo with ``max_megapixels`` trains
(one step, tiny ViT) and the result has the photo's full resolution.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import pytest
from PIL import Image

from splice_prompts import TINY, TRAIN, splice_graph
from tools.harness.comfy_server import ComfyServer

PHOTO = (4032, 3024)  # a phone photo, 12.2 MP
BUDGET_MB = 2000


def _photo() -> Image.Image:
    """A smooth 12 MP picture (compresses to a small PNG, so the upload is quick)."""
    width, height = PHOTO
    xs = np.linspace(0, 255, width, dtype=np.float32)[None, :]
    ys = np.linspace(0, 255, height, dtype=np.float32)[:, None]
    rgb = np.stack([np.broadcast_to(xs, (height, width)), np.broadcast_to(ys, (height, width)),
                    np.broadcast_to((xs + ys) / 2, (height, width))], axis=-1)
    return Image.fromarray(rgb.astype(np.uint8))


def _small(size: tuple[int, int], seed: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, size=(size[1], size[0], 3), dtype=np.uint8))


def _upload(server: ComfyServer, tiny_dino_file: Path) -> dict[str, str]:
    shutil.copy(tiny_dino_file, server.models_dir / TINY)
    return {
        "photo": server.upload_image(_photo(), name="splice_photo_12mp.png"),
        "structure": server.upload_image(_small((64, 48), 1), name="splice_small_a.png"),
        "appearance": server.upload_image(_small((56, 72), 2), name="splice_small_b.png"),
    }


@pytest.fixture(scope="module")
def capped(comfy_server_factory: Callable[..., ComfyServer],
           tiny_dino_file: Path) -> Iterator[tuple[ComfyServer, dict[str, str]]]:
    """A server whose pack sees at most BUDGET_MB of free memory, with the test images."""
    old = os.environ.get("COMFY_SPLICE_MEMORY_BUDGET_MB")
    os.environ["COMFY_SPLICE_MEMORY_BUDGET_MB"] = str(BUDGET_MB)
    try:
        server = comfy_server_factory(name="capped")
    finally:
        if old is None:
            del os.environ["COMFY_SPLICE_MEMORY_BUDGET_MB"]
        else:
            os.environ["COMFY_SPLICE_MEMORY_BUDGET_MB"] = old
    yield server, _upload(server, tiny_dino_file)


def _rss_mb(server: ComfyServer) -> float:
    with open(f"/proc/{server.pid}/status", encoding="ascii") as handle:
        for line in handle:
            if line.startswith("VmHWM:"):  # peak resident set size of the server process
                return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM")


def _still_serving(server: ComfyServer) -> None:
    assert server.is_running()
    assert "system" in server.system_stats()


def test_12mp_training_is_refused_before_allocating(capped: tuple[ComfyServer, dict[str, str]]) -> None:
    server, files = capped
    prompt: dict[str, Any] = splice_graph(files, structure="photo", steps=1, prefix="budget/train")
    result = server.run(prompt, timeout=300)
    assert not result.ok
    message = result.error_message
    assert "4032x3024" in message and "set max_megapixels to" in message, message
    assert "Traceback" not in message
    # LoadImage holds the photo (0.15 GB as float32); the training run allocated nothing big
    assert _rss_mb(server) < BUDGET_MB, _rss_mb(server)
    _still_serving(server)


def test_12mp_splice_output_is_refused_before_allocating(capped: tuple[ComfyServer, dict[str, str]]) -> None:
    server, files = capped
    prompt = splice_graph(files, steps=1, prefix="budget/apply")
    prompt["7"]["inputs"]["images"] = ["9", 0]
    prompt["9"] = {"class_type": "LoadImage", "inputs": {"image": files["photo"]}}
    result = server.run(prompt, timeout=300)
    assert not result.ok
    message = result.error_message
    assert "Applying the generator to a 4032x3024 image" in message and "would fit" in message, message
    assert "streamed in bands" in message, message
    assert _rss_mb(server) < BUDGET_MB, _rss_mb(server)
    _still_serving(server)


def test_12mp_photo_trains_with_max_megapixels_at_full_resolution(
        comfy_server: ComfyServer, tiny_dino_file: Path) -> None:
    files = _upload(comfy_server, tiny_dino_file)
    prompt = splice_graph(files, structure="photo", steps=1, preview_every=0, full_image_every=0,
                          max_megapixels=0.05, prefix="budget/photo")
    del prompt["7"], prompt["8"]
    prompt["9"] = {"class_type": "SaveImage", "inputs": {"images": [TRAIN, 2],
                                                         "filename_prefix": "budget/result"}}
    result = comfy_server.run(prompt, timeout=600).raise_for_status()
    (entry,) = result.output_images("9")
    image = comfy_server.view_image(entry["filename"], entry["subfolder"], entry["type"])
    assert image.size == PHOTO
    _still_serving(comfy_server)
