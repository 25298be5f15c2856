"""Cancel during a stalled download in a real ComfyUI server: the queue is free again at once.

The server here is one of its own: it starts with ``$HF_ENDPOINT`` pointing at the hub stand-in
of this test process (tests/conftest.py), which answers the download of ViT-S/8 with headers and
then nothing, as a stalled mirror does. Every wait is on an event (a websocket message, the
stand-in seeing the request or the client leaving), never on a sleep.
"""

from __future__ import annotations

import select
import shutil
import socket
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

import pytest

from comfy_splice.dino.models import DINO_MODELS

if TYPE_CHECKING:
    from tools.harness.comfy_server import ComfyServer

MODEL = DINO_MODELS["dino_vits8"]
HUB_PATH = f"/timm/{MODEL.timm_name}/resolve/main/model.safetensors"
TINY = "download_server_tiny.pth"


class StalledMirror:
    """Answers with a Content-Length below the model's cap, then sends nothing until the client
    leaves. ``requested`` is set when the download arrives, ``left`` when its connection closes."""

    def __init__(self) -> None:
        self.requested = threading.Event()
        self.left = threading.Event()

    def __call__(self, handler: Any) -> None:
        handler.send_response(200)
        handler.send_header("Content-Length", str(MODEL.parameters * 4))
        handler.end_headers()
        handler.wfile.flush()
        self.requested.set()
        readable, _, _ = select.select([handler.connection], [], [], 300)
        if readable:
            try:
                closed = handler.connection.recv(1, socket.MSG_PEEK) == b""
            except OSError:
                closed = True
            if closed:
                self.left.set()


@pytest.fixture(scope="module")
def hub(hub_stub: Any) -> Iterator[Any]:
    """The session's hub stand-in; this module's path is removed from it afterwards."""
    yield hub_stub
    hub_stub.handlers.pop(HUB_PATH, None)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, hub: Any, tiny_dino_file: Path) -> Iterator[ComfyServer]:
    """A ComfyUI whose downloads go to the stand-in (the variable is read when the server starts)."""
    from tools.harness.comfy_server import ComfyServer

    mp = pytest.MonkeyPatch()
    mp.setenv("HF_ENDPOINT", hub.endpoint)
    instance = ComfyServer(tmp_path_factory.mktemp("download-server"))
    try:
        instance.start()
        mp.undo()
        shutil.copy(tiny_dino_file, instance.models_dir / TINY)
        yield instance
    finally:
        mp.undo()
        instance.stop()


def _graph(dino: str, download: bool) -> dict[str, Any]:
    """Load DINO-ViT feeding a one-step training on an example image, previewed."""
    return {
        "1": {"class_type": "LoadImage", "inputs": {"image": "splice_structure_village.png"}},
        "2": {"class_type": "ImageScale", "inputs": {"image": ["1", 0], "upscale_method": "bilinear",
                                                      "width": 64, "height": 48, "crop": "disabled"}},
        "3": {"class_type": "SpliceLoadDINO", "inputs": {"model_name": dino, "download_if_missing": download}},
        "4": {"class_type": "SpliceStructureLoss", "inputs": {"dino": ["3", 0], "weight": 1.0, "block": -1}},
        "5": {"class_type": "SpliceAppearanceLoss", "inputs": {"dino": ["3", 0], "weight": 10.0, "block": -1}},
        "6": {"class_type": "SpliceTrainGenerator",
              "inputs": {"structure": ["2", 0], "appearance": ["2", 0], "structure_loss": ["4", 0],
                         "appearance_loss": ["5", 0], "steps": 1, "learning_rate": 0.002, "seed": 0,
                         "identity_weight": 1.0, "full_image_every": 75, "preview_every": 0,
                         "dtype": "auto"}},
        "7": {"class_type": "PreviewImage", "inputs": {"images": ["6", 2]}},
    }


def test_interrupt_ends_a_stalled_download_and_the_next_prompt_runs(server: ComfyServer, hub: Any) -> None:
    mirror = StalledMirror()
    hub.serve_with(HUB_PATH, mirror)
    before = sorted(p.name for p in server.models_dir.iterdir())
    stalled = server.submit(_graph(MODEL.hf_file_name, download=True))
    try:
        # The node shows the download's start on its progress bar once the headers arrived.
        stalled.wait_for(lambda m: m.type == "progress" and str(m.data.get("node")) == "3", timeout=120)
        assert mirror.requested.is_set()
        following = server.submit(_graph(TINY, download=False))  # waits behind the download
        try:
            server.interrupt()
            result = stalled.wait(timeout=120)
            # Interrupted, not ended by the stall rule (60 s without bytes) or a socket timeout.
            assert result.status == "execution_interrupted", (result.status, result.error_message)
            assert mirror.left.wait(60), "the download's connection is closed on Cancel"
            following.wait(timeout=300).raise_for_status()
        finally:
            following.close()
    finally:
        stalled.close()
    after = sorted(p.name for p in server.models_dir.iterdir())
    assert after == before, "no staging folder and no file under the model's name is left"
    assert server.queue_state() == {"queue_running": [], "queue_pending": []}
