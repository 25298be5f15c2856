"""An artist's first hour in a real ComfyUI server: example inputs put in place by the pack, the
DINO weights downloaded from the node (from a hub stand-in), a saved generator listed by Load
without moving files, and the text the nodes show (loss, metrics, where a file went).

The server here is one of its own: it starts with ``$HF_ENDPOINT`` pointing at an HTTP server in
this test process (these machines reach no model hub) and with a user's own file already in its
input folder under an example's name. The file the stand-in serves is a random ViT-S/16 (the real
architecture, since the download checks the model; its features mean nothing).
"""

from __future__ import annotations

import shutil
import struct
from pathlib import Path
from typing import Any, Iterator

import pytest

from tools.harness.comfy_client import RunResult
from tools.harness.comfy_server import ComfyServer

REPO_ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = REPO_ROOT / "workflows" / "input"
USERS_FILE = "splice_appearance_winter.png"  # the user already has a file of this name
TINY = "tiny_dino_vit.pth"
HUB_FILE = "/timm/vit_small_patch16_224.dino/resolve/main/model.safetensors"
BINARY_TEXT = 3  # protocol.BinaryEventTypes.TEXT: a node's progress text


@pytest.fixture(scope="module")
def hub(hub_stub: Any) -> Any:
    """The session's hub stand-in (tests/conftest.py), emptied of what earlier tests published."""
    hub_stub.clear()
    return hub_stub


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, hub: Any,
           tiny_dino_file: Path) -> Iterator[ComfyServer]:
    """A fresh ComfyUI with the pack: no example input copied by the test, one user file."""
    mp = pytest.MonkeyPatch()
    mp.setenv("HF_ENDPOINT", hub.endpoint)
    instance = ComfyServer(tmp_path_factory.mktemp("first-hour"))
    instance.input_dir.mkdir(parents=True)
    (instance.input_dir / USERS_FILE).write_bytes(b"the user's own picture")
    try:
        instance.start()
        mp.undo()
        shutil.copy(tiny_dino_file, instance.models_dir / TINY)
        yield instance
    finally:
        mp.undo()
        instance.stop()


def _texts(result: RunResult, node: str) -> list[str]:
    """The progress texts the server sent for ``node`` during the run."""
    out = []
    for message in result.messages:
        if message.binary_event == BINARY_TEXT and message.raw is not None:
            body = message.raw[4:]
            (length,) = struct.unpack(">I", body[:4])
            if body[4:4 + length].decode() == node:
                out.append(body[4 + length:].decode())
    return out


def test_example_inputs_are_in_the_input_folder_and_the_users_file_is_kept(server: ComfyServer) -> None:
    examples = sorted(p.name for p in EXAMPLES.iterdir() if p.name.startswith("splice_"))
    assert len(examples) >= 3
    for name in examples:
        if name != USERS_FILE:
            assert (server.input_dir / name).read_bytes() == (EXAMPLES / name).read_bytes(), name
    assert (server.input_dir / USERS_FILE).read_bytes() == b"the user's own picture"
    assert sorted(p.name for p in server.input_dir.iterdir()) == examples, "no temporary file left"
    images = server.object_info("LoadImage")["LoadImage"]["input"]["required"]["image"][0]
    assert "splice_structure_village.png" in images


def _graph(dino: str, download: bool, steps: int = 3) -> dict[str, Any]:
    """The Basic Splice chain on the shipped example images, plus Metrics and Save."""
    return {
        "1": {"class_type": "LoadImage", "inputs": {"image": "splice_structure_village.png"}},
        "2": {"class_type": "ImageScale", "inputs": {"image": ["1", 0], "upscale_method": "bilinear",
                                                      "width": 64, "height": 48, "crop": "disabled"}},
        "3": {"class_type": "SpliceLoadDINO", "inputs": {"model_name": dino, "download_if_missing": download}},
        "4": {"class_type": "SpliceStructureLoss", "inputs": {"dino": ["3", 0], "weight": 1.0, "block": -1}},
        "5": {"class_type": "SpliceAppearanceLoss", "inputs": {"dino": ["3", 0], "weight": 10.0, "block": -1}},
        "6": {"class_type": "SpliceTrainGenerator",
              "inputs": {"structure": ["2", 0], "appearance": ["2", 0], "structure_loss": ["4", 0],
                         "appearance_loss": ["5", 0], "steps": steps, "learning_rate": 0.002, "seed": 0,
                         "identity_weight": 1.0, "full_image_every": 75, "preview_every": 0,
                         "dtype": "auto"}},
        "7": {"class_type": "SpliceMetrics", "inputs": {"dino": ["3", 0], "output": ["6", 2],
                                                        "structure": ["2", 0], "appearance": ["2", 0]}},
        "8": {"class_type": "SpliceSaveGenerator", "inputs": {"generator": ["6", 0],
                                                              "filename_prefix": "firsthour/gen"}},
    }


def test_the_example_images_run_and_the_nodes_show_their_text(server: ComfyServer) -> None:
    result = server.run(_graph(TINY, download=False, steps=3), timeout=300).raise_for_status()
    train = _texts(result, "6")
    assert train and train[-1].startswith("step 3/3: loss "), train
    float(train[-1].split("loss ")[1].split(" ")[0])  # a number
    # Results are the nodes' ui text (kept on the node after the run), not progress text.
    assert _texts(result, "7") == [] and _texts(result, "8") == []
    (metrics,) = result.outputs["7"]["text"]
    assert "structure distance:" in metrics and "DINO-I:" in metrics
    (saved,) = result.outputs["8"]["text"]
    path = server.generators_dir / "firsthour" / "gen_00001_.safetensors"
    assert f"Saved {path}" in saved and "firsthour/gen_00001_.safetensors" in saved


def test_a_saved_generator_is_listed_by_load_without_a_restart(server: ComfyServer) -> None:
    server.run(_graph(TINY, download=False, steps=2) | {"8": {
        "class_type": "SpliceSaveGenerator",
        "inputs": {"generator": ["6", 0], "filename_prefix": "listed/gen"}}}, timeout=300).raise_for_status()
    options = server.object_info("SpliceLoadGenerator")["SpliceLoadGenerator"]["input"]["required"][
        "generator_name"][1]["options"]
    assert "listed/gen_00001_.safetensors" in options
    apply = {
        "1": {"class_type": "LoadImage", "inputs": {"image": "splice_structure_village.png"}},
        "2": {"class_type": "SpliceLoadGenerator", "inputs": {"generator_name": "listed/gen_00001_.safetensors"}},
        "3": {"class_type": "SpliceApply", "inputs": {"generator": ["2", 0], "images": ["1", 0], "batch_size": 1}},
        "4": {"class_type": "PreviewImage", "inputs": {"images": ["3", 0]}},
    }
    result = server.run(apply, timeout=300).raise_for_status()
    assert len(result.output_images("4")) == 1


def test_download_from_the_node_shows_progress_and_loads(server: ComfyServer, hub: Any,
                                                         vits16_hub_file: Path) -> None:
    file = vits16_hub_file  # the real ViT-S/16 architecture: the download checks the model
    hub.serve(HUB_FILE, file.read_bytes())
    name = "vit_small_patch16_224.dino.safetensors"
    target = server.models_dir / name
    assert not target.exists()
    result = server.run(_graph(name, download=True, steps=1), timeout=300).raise_for_status()
    assert target.read_bytes() == file.read_bytes()
    size = len(file.read_bytes())
    assert (size, size) in result.progress("3"), "the node's progress bar reaches the file's size"
    assert any("downloading" in text for text in _texts(result, "3"))
    assert not [p for p in server.models_dir.iterdir() if p.name.startswith(".")], "no staging left"


def test_download_error_names_folder_file_and_url_and_leaves_nothing(server: ComfyServer, hub: Any) -> None:
    name = "dino_vitbase16_pretrain.pth"  # the .pth spelling downloads the hub's safetensors
    before = sorted(p.name for p in server.models_dir.iterdir())
    result = server.run(_graph(name, download=True), timeout=120)
    assert result.status == "execution_error" and result.terminal["node_id"] == "3"
    message = result.error_message
    assert f"{hub.endpoint}/timm/vit_base_patch16_224.dino/resolve/main/model.safetensors" in message
    assert str(server.models_dir) in message and "vit_base_patch16_224.dino.safetensors" in message
    assert "404" in message
    assert sorted(p.name for p in server.models_dir.iterdir()) == before
    assert server.system_stats()["system"]["comfyui_version"]  # still serving
