"""Hostile and careless inputs sent to a real ComfyUI server through its HTTP API.

Every case must end as one readable error on the right node (a ValueError or the pack's own
WeightsError, never a raw library exception, never a huge message), the server must go on
answering, and nothing may be written outside ComfyUI's own folders. Sizes are scaled down (the
tiny random ViT, 64x48 images), so the whole file runs in well under a minute; the weight-file
memory bombs also check the server's peak resident memory (Linux's VmHWM, reset per case).
"""

from __future__ import annotations

import json
import os
import shutil
import struct
import uuid
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file, save_file

import websocket
from tools.harness.comfy_client import Execution, PromptRejected, RunResult
from tools.harness.comfy_server import REPO_ROOT, ComfyServer

TINY = "hostile_tiny.pth"
GOOD_GENERATOR = "hostile_good.safetensors"
COMFY_FOLDERS = ("base", "input", "output", "temp", "user", "models")
MAX_MESSAGE = 2000
PEAK_BUDGET = 400 << 20  # a refused weight file may cost the server at most this much memory


# -- fixtures and helpers ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def hostile(comfy_server: ComfyServer, tiny_dino_file: Path, tiny_generator_file: Path,
            tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The tiny ViT and a good generator in the model folders, and an uploaded 64x48 image."""
    shutil.copy(tiny_dino_file, comfy_server.models_dir / TINY)
    shutil.copy(tiny_generator_file, comfy_server.generators_dir / GOOD_GENERATOR)
    rng = np.random.default_rng(0)
    picture = Image.fromarray(rng.integers(0, 256, size=(48, 64, 3), dtype=np.uint8))
    return {"image": comfy_server.upload_image(picture, name="hostile.png"),
            "scratch": tmp_path_factory.mktemp("hostile_scratch")}


def _files_under(root: Path, skip: Callable[[Path], bool], depth: int = 64) -> dict[str, tuple[int, int]]:
    """(size, mtime) of the files below ``root``, at most ``depth`` folders down."""
    found: dict[str, tuple[int, int]] = {}
    for folder, dirs, names in os.walk(root):
        level = len(Path(folder).relative_to(root).parts)
        dirs[:] = [d for d in dirs if not skip(Path(folder) / d) and level < depth]
        for name in names:
            path = Path(folder) / name
            if skip(path):
                continue
            try:
                stat = path.lstat()
            except FileNotFoundError:
                continue
            found[str(path)] = (stat.st_size, stat.st_mtime_ns)
    return found


def _outside_comfy(server: ComfyServer) -> dict[str, tuple[int, int]]:
    """Every file a bad input could reach outside ComfyUI's folders: the server's work dir
    around them, the folder above it, this repository, and the ComfyUI installation."""
    ignored = {".git", "__pycache__", ".pytest_cache", "artifacts", "node_modules"}
    workdir = server.workdir

    def skip(path: Path) -> bool:
        if path.name in ignored or path == server.log_path:
            return True
        return path.parent == workdir and path.name in COMFY_FOLDERS

    files = _files_under(workdir, skip)
    files.update({str(p): (0, 0) for p in workdir.parent.iterdir() if p != workdir})
    files.update(_files_under(REPO_ROOT, lambda p: p.name in ignored))
    files.update(_files_under(server.comfyui, lambda p: p.name in ignored or p.name == "user", depth=2))
    return files


def _reset_peak(server: ComfyServer) -> bool:
    try:
        Path(f"/proc/{server.pid}/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def _peak_rss(server: ComfyServer) -> int:
    for line in Path(f"/proc/{server.pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM in /proc status")


@pytest.fixture
def guarded(comfy_server: ComfyServer, hostile: dict[str, Any]) -> Iterator[ComfyServer]:
    """The server, checked after the case: still answering, nothing written outside its folders."""
    before = _outside_comfy(comfy_server)
    yield comfy_server
    assert comfy_server.is_running() and comfy_server.system_stats()["system"]
    after = _outside_comfy(comfy_server)
    changed = sorted(p for p in set(before) | set(after) if before.get(p) != after.get(p))
    assert not changed, f"written outside ComfyUI's folders: {changed[:10]}"


def _run(server: ComfyServer, prompt: dict[str, Any]) -> RunResult:
    """``server.run``, but with the JSON written by Python's encoder, which (like the server's
    parser, and like a careless client) allows NaN; ``requests`` refuses to send it."""
    client_id = uuid.uuid4().hex
    ws = websocket.create_connection(server.url.replace("http://", "ws://", 1) + f"/ws?clientId={client_id}",
                                     timeout=30)
    execution = Execution(server, ws, client_id)
    try:
        execution.wait_for("status", timeout=30)
        response = server.http.post(server.url + "/prompt", timeout=60,
                                    data=json.dumps({"prompt": prompt, "client_id": client_id}),
                                    headers={"Content-Type": "application/json"})
        body = response.json()
        if response.status_code != 200 or body.get("node_errors") or "prompt_id" not in body:
            raise PromptRejected(response.status_code, body)
    except BaseException:
        execution.close()
        raise
    execution.prompt_id = body["prompt_id"]
    return execution.wait(timeout=120)


def _fails(server: ComfyServer, prompt: dict[str, Any], node: str, *expected: str) -> str:
    """Run ``prompt``; it must fail on ``node`` with one readable message containing ``expected``."""
    result = _run(server, prompt)
    assert result.status == "execution_error", result.terminal
    assert str(result.terminal["node_id"]) == node, result.terminal
    kind = str(result.terminal.get("exception_type"))
    assert kind in ("ValueError", "builtins.ValueError") or kind.endswith("comfy_splice.dino.models.WeightsError"), kind
    message = result.error_message.strip()
    for text in expected:
        assert text in message, message
    assert len(message) < MAX_MESSAGE, message[:500]
    assert "Traceback" not in message
    return message


def _visualize(files: dict[str, Any], dino: Any = TINY, image: Any = None) -> dict[str, Any]:
    """Load Image -> Load DINO-ViT -> Visualize Structure -> Preview Image."""
    return {
        "1": {"class_type": "LoadImage", "inputs": {"image": files["image"]}},
        "2": {"class_type": "SpliceLoadDINO", "inputs": {"model_name": dino, "download_if_missing": False}},
        "3": {"class_type": "SpliceVisualizeStructure",
              "inputs": {"dino": ["2", 0], "image": image or ["1", 0], "block": -1}},
        "4": {"class_type": "PreviewImage", "inputs": {"images": ["3", 0]}},
    }


def _apply(files: dict[str, Any], generator: Any = GOOD_GENERATOR, image: Any = None) -> dict[str, Any]:
    """Load Image -> Load Splice Generator -> Splice Output -> Preview Image."""
    return {
        "1": {"class_type": "LoadImage", "inputs": {"image": files["image"]}},
        "2": {"class_type": "SpliceLoadGenerator", "inputs": {"generator_name": generator}},
        "3": {"class_type": "SpliceApply", "inputs": {"generator": ["2", 0], "images": image or ["1", 0],
                                                      "batch_size": 2}},
        "4": {"class_type": "PreviewImage", "inputs": {"images": ["3", 0]}},
    }


# -- crafted DINO weight files ------------------------------------------------------------------------


def _expanded_vit(width: int) -> dict[str, torch.Tensor]:
    """Every tensor of a 2-block ViT of ``width`` as a stride-0 view of one float: a few KB on
    disk, gigabytes once built."""
    from comfy_splice.dino.vit import timm_vit

    with torch.device("meta"):
        shapes = {k: v.shape for k, v in timm_vit(16, width, 2, width // 64, 4.0, 224).state_dict().items()}
    return {k: torch.zeros(1).expand(shape) for k, shape in shapes.items()}


def _truncated(state: dict[str, torch.Tensor], path: Path) -> None:
    if path.suffix == ".safetensors":
        save_file(state, str(path))
    else:
        torch.save(state, str(path))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


class _Payload:
    """Unpickling this would create a file: a .pth must never run it."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (Path.touch, (self.marker,))


def _weights_case(case: str, state: dict[str, torch.Tensor], folder: Path, marker: Path) -> tuple[str, list[str]]:
    """Write the crafted file for ``case``; returns its name and what the message must say."""
    name = f"hostile_{case}.pth"
    path = folder / name
    if case == "far block index":
        torch.save({**state, "blocks.20000.x": torch.zeros(1)}, str(path))
        return name, ["blocks.20000.x", "block 20,000", "at most 48"]
    if case == "block key not a number":
        torch.save({**state, "blocks.x.y": torch.zeros(1)}, str(path))
        return name, ["'blocks.x.y' does not name a block by its number"]
    if case == "huge width from a tiny tensor":
        torch.save({**state, "patch_embed.proj.weight": torch.zeros(1).expand(200_000, 3, 16, 16)}, str(path))
        return name, ["width is 200,000", "64 to 4096"]
    if case == "tensors not in the file":
        torch.save(_expanded_vit(2048), str(path))
        return name, ["declares", "bytes but the file holds 4"]
    if case == "inconsistent blocks":
        torch.save({**state, "blocks.1.attn.qkv.weight": torch.zeros(96, 64)}, str(path))
        return name, ["blocks.1.attn.qkv.weight has shape (96, 64) but block 0's is (192, 64)"]
    if case == "thousands of unknown keys":
        junk = {f"decoy.{i}": torch.zeros(1) for i in range(1500)}
        torch.save({**state, **junk}, str(path))
        return name, ["unknown tensor 'decoy.0' (and 1499 more)"]
    if case == "pickled code":
        torch.save({"weights": _Payload(marker)}, str(path))
        return name, ["pickled Python objects", "never loaded"]
    if case == "truncated pth":
        _truncated(state, path)
        return name, ["Could not read DINO weights", name]
    if case == "truncated safetensors":
        name = name.replace(".pth", ".safetensors")
        _truncated({k: v.contiguous() for k, v in state.items()}, folder / name)
        return name, [name, "truncated"]
    if case == "huge safetensors header":
        name = name.replace(".pth", ".safetensors")
        (folder / name).write_bytes(struct.pack("<Q", 90 << 20) + b"{}")
        return name, [name, "94,371,840 bytes of metadata"]
    raise AssertionError(case)


WEIGHT_CASES = ["far block index", "block key not a number", "huge width from a tiny tensor",
                "tensors not in the file", "inconsistent blocks", "thousands of unknown keys",
                "pickled code", "truncated pth", "truncated safetensors", "huge safetensors header"]


@pytest.mark.parametrize("case", WEIGHT_CASES)
def test_crafted_weight_files(guarded: ComfyServer, hostile: dict[str, Any], tiny_dino_state: dict[str, torch.Tensor],
                              case: str) -> None:
    marker = hostile["scratch"] / "pickle_ran"
    name, expected = _weights_case(case, tiny_dino_state, guarded.models_dir, marker)
    rss = guarded.rss_bytes()
    peak_known = _reset_peak(guarded)
    _fails(guarded, _visualize(hostile, dino=name), "2", *expected)
    if peak_known:
        assert _peak_rss(guarded) - rss < PEAK_BUDGET, f"peak {_peak_rss(guarded) / 2**20:.0f} MiB"
    assert not marker.exists()


# -- crafted generator files ----------------------------------------------------------------------------


def _config(**changes: Any) -> Callable[[dict[str, str]], dict[str, str]]:
    return lambda m: {**m, "splice_config": json.dumps({**json.loads(m["splice_config"]), **changes})}


def _meta(key: str, value: str) -> Callable[[dict[str, str]], dict[str, str]]:
    return lambda m: {**m, key: value}


GENERATOR_CASES: dict[str, tuple[Callable[[dict[str, str]], dict[str, str]], Callable[[dict], dict], str]] = {
    "config not JSON": (_meta("splice_config", "{'steps': 3}"), dict, "splice_config) is not valid JSON"),
    "config not an object": (_meta("splice_config", '"steps"'), dict, "must be an object, got a string"),
    "config field of the wrong type": (_config(steps="2000"), dict, "config.steps must be a whole number"),
    "config unknown field": (_config(__class__="os.system"), dict, "unknown field '__class__'"),
    "betas not two numbers": (_config(betas=[0.9]), dict, "betas must hold exactly 2 values"),
    "loss not an object": (_config(appearance=[10, -1]), dict, "appearance must be an object, got an array"),
    "loss weight not a number": (_config(structure={"weight": None}), dict, "structure.weight must be a finite number"),
    "config nested deeply": (_meta("splice_config", "[" * 30_000 + "]" * 30_000), dict, "nested 30000 levels"),
    "history not a list": (_meta("splice_loss", '"1.0"'), dict, "must be an array of numbers, got a string"),
    "history with NaN": (_meta("splice_loss", "[0.5, NaN]"), dict, "value 1 must be a finite number"),
    "history nested deeply": (_meta("splice_loss", "[" * 30_000), dict, "nested 30000 levels"),
    "no format tag": (lambda m: {k: v for k, v in m.items() if k != "splice_format"}, dict,
                      "is not a Splice generator"),
    "extra tensor": (dict, lambda t: {**t, "body.evil": torch.zeros(4)}, "unknown tensor 'body.evil'"),
    "tensor of the wrong shape": (dict, lambda t: {**t, "head.weight": torch.zeros(3, 16, 3, 3)},
                                  "head.weight has shape (3, 16, 3, 3)"),
}


@pytest.mark.parametrize("case", list(GENERATOR_CASES) + ["truncated"])
def test_crafted_generator_files(guarded: ComfyServer, hostile: dict[str, Any], case: str) -> None:
    from comfy_splice.checkpoint import read_metadata

    good = guarded.generators_dir / GOOD_GENERATOR
    name = f"hostile_{case.replace(' ', '_')}.safetensors"
    target = guarded.generators_dir / name
    if case == "truncated":
        data = good.read_bytes()
        target.write_bytes(data[: len(data) // 3])
        expected = "is not a readable .safetensors file"
    else:
        metadata, tensors, expected = GENERATOR_CASES[case]
        save_file(tensors(dict(load_file(str(good)))), str(target), metadata=metadata(read_metadata(good)))
    _fails(guarded, _apply(hostile, generator=name), "2", name, expected)


def test_the_good_generator_file_applies(guarded: ComfyServer, hostile: dict[str, Any]) -> None:
    guarded.run(_apply(hostile), timeout=120).raise_for_status()


# -- non-finite images into every node that reads an IMAGE ----------------------------------------------


def _nan_image(prompt: dict[str, Any]) -> list[Any]:
    """SolidMask(NaN) -> MaskToImage: ComfyUI's min/max checks let a JSON NaN through."""
    prompt["90"] = {"class_type": "SolidMask", "inputs": {"value": float("nan"), "width": 64, "height": 48}}
    prompt["91"] = {"class_type": "MaskToImage", "inputs": {"mask": ["90", 0]}}
    return ["91", 0]


def _full_graph(files: dict[str, Any]) -> dict[str, Any]:
    """Train (2 steps) -> Splice Output, plus Visualize Structure and Splice Metrics, all on one image."""
    return {
        "1": {"class_type": "LoadImage", "inputs": {"image": files["image"]}},
        "2": {"class_type": "SpliceLoadDINO", "inputs": {"model_name": TINY, "download_if_missing": False}},
        "3": {"class_type": "SpliceStructureLoss", "inputs": {"dino": ["2", 0], "weight": 1.0, "block": -1}},
        "4": {"class_type": "SpliceAppearanceLoss", "inputs": {"dino": ["2", 0], "weight": 10.0, "block": -1}},
        "5": {"class_type": "SpliceTrainGenerator",
              "inputs": {"structure": ["1", 0], "appearance": ["1", 0], "structure_loss": ["3", 0],
                         "appearance_loss": ["4", 0], "steps": 2, "learning_rate": 0.002, "seed": 0,
                         "identity_weight": 1.0, "full_image_every": 75, "preview_every": 0, "dtype": "auto"}},
        "6": {"class_type": "SpliceApply", "inputs": {"generator": ["5", 0], "images": ["1", 0], "batch_size": 2}},
        "7": {"class_type": "PreviewImage", "inputs": {"images": ["6", 0]}},
        "8": {"class_type": "SpliceVisualizeStructure", "inputs": {"dino": ["2", 0], "image": ["1", 0], "block": -1}},
        "9": {"class_type": "PreviewImage", "inputs": {"images": ["8", 0]}},
        "10": {"class_type": "SpliceMetrics", "inputs": {"dino": ["2", 0], "output": ["6", 0], "structure": ["1", 0],
                                                          "appearance": ["1", 0]}},
    }


IMAGE_INPUTS = [("5", "structure"), ("5", "appearance"), ("6", "images"), ("8", "image"),
                ("10", "output"), ("10", "structure"), ("10", "appearance")]
KEEP = {"5": ("5", "6", "7"), "6": ("5", "6", "7"), "8": ("8", "9"), "10": ("5", "6", "10")}


@pytest.mark.parametrize(("node", "name"), IMAGE_INPUTS)
def test_nan_images_are_refused_by_every_image_input(guarded: ComfyServer, hostile: dict[str, Any],
                                                     node: str, name: str) -> None:
    prompt = _full_graph(hostile)
    prompt = {k: v for k, v in prompt.items() if k in ("1", "2", "3", "4") + KEEP[node]}
    prompt[node]["inputs"][name] = _nan_image(prompt)
    _fails(guarded, prompt, node, f"{name}: the image holds NaN or infinite values")


# -- wrong JSON types and values for widgets --------------------------------------------------------------


WIDGET_CASES: list[tuple[str, str, Any, str, str]] = [
    # (graph, node, input, value, expected text)
    ("visualize", "2", "model_name", 5, "model_name must be one of the listed names (text), got 5"),
    ("visualize", "2", "model_name", {"file": "x.pth"}, "model_name must be one of the listed names"),
    ("apply", "2", "generator_name", 3.5, "generator_name must be one of the listed names (text), got 3.5"),
    ("full", "5", "dtype", 16, "dtype must be one of the listed names (text), got 16"),
    ("full", "5", "learning_rate", float("nan"), "learning_rate is nan; it must be a finite number"),
    ("full", "5", "identity_weight", float("nan"), "identity_weight is nan"),
    ("full", "3", "weight", float("nan"), "weight is nan; it must be a finite number"),
]


@pytest.mark.parametrize(("graph", "node", "name", "value", "expected"), WIDGET_CASES)
def test_wrong_widget_values_give_a_readable_message(guarded: ComfyServer, hostile: dict[str, Any], graph: str,
                                                     node: str, name: str, value: Any, expected: str) -> None:
    prompt = {"visualize": _visualize, "apply": _apply, "full": _full_graph}[graph](hostile)
    prompt[node]["inputs"][name] = value
    _fails(guarded, prompt, node, expected)


@pytest.mark.parametrize(("name", "value"), [("steps", "many"), ("seed", [1]), ("preview_every", None)])
def test_widgets_comfyui_cannot_convert_are_rejected_before_running(guarded: ComfyServer, hostile: dict[str, Any],
                                                                    name: str, value: Any) -> None:
    prompt = {k: v for k, v in _full_graph(hostile).items() if k in ("1", "2", "3", "4") + KEEP["5"]}
    prompt["5"]["inputs"][name] = value
    status, body = guarded.queue(prompt)
    assert status == 400, body
    assert name in json.dumps(body["node_errors"]["5"]), body


# -- path tricks in file names --------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["../../../../../../etc/hostname", "/etc/hostname", "..\\..\\secret.pth",
                                  "../splice_generators/hostile_good.safetensors"])
def test_weight_names_cannot_leave_the_model_folder(guarded: ComfyServer, hostile: dict[str, Any], name: str) -> None:
    _fails(guarded, _visualize(hostile, dino=name), "2", "is not in any splice_dino folder")


@pytest.mark.parametrize("name", ["../../../../../../etc/hostname", "/etc/passwd", "../splice_dino/" + TINY])
def test_generator_names_cannot_leave_the_model_folder(guarded: ComfyServer, hostile: dict[str, Any],
                                                       name: str) -> None:
    _fails(guarded, _apply(hostile, generator=name), "2", "is not in", "put it back there or pick another file")


@pytest.mark.parametrize("prefix", ["../../escaped/generator", "/tmp/comfy_splice_escaped/generator",
                                    "splice/../../escaped_too"])
def test_save_prefix_cannot_leave_the_output_folder(guarded: ComfyServer, hostile: dict[str, Any], prefix: str) -> None:
    prompt = {
        "1": {"class_type": "SpliceLoadGenerator", "inputs": {"generator_name": GOOD_GENERATOR}},
        "2": {"class_type": "SpliceSaveGenerator", "inputs": {"generator": ["1", 0], "filename_prefix": prefix}},
    }
    _fails(guarded, prompt, "2", "points outside the splice_generators folder")
    assert not Path("/tmp/comfy_splice_escaped").exists()
    assert not (guarded.workdir / "escaped").exists() and not (guarded.workdir / "escaped_too").exists()


def test_a_prompt_with_only_bad_values_is_not_run(guarded: ComfyServer, hostile: dict[str, Any]) -> None:
    prompt = _visualize(hostile)
    prompt["3"]["inputs"]["block"] = "last"
    with pytest.raises(PromptRejected) as info:
        guarded.submit(prompt)
    assert info.value.status_code == 400 and "block" in json.dumps(info.value.body)
