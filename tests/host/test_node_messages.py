"""Careless values in a real ComfyUI server get a message that names the problem and its fix.

A NaN mask says NaN (not "empty"); a feather wider than the mask's region is clamped to it and
the node says so; a descriptor stride above the patch is refused; a save prefix with a NUL byte
or a name the file system cannot hold is a user error naming the limit, never "a bug".
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pytest
from PIL import Image

if TYPE_CHECKING:
    from tools.harness.comfy_client import RunResult
    from tools.harness.comfy_server import ComfyServer

TINY = "messages_tiny.pth"
GENERATOR = "messages_good.safetensors"
SIZE = 64
BOX = (10, 30, 5, 45)  # (y0, y1, x0, x1): 20 px at its narrowest


@pytest.fixture(scope="module")
def files(comfy_server: ComfyServer, tiny_dino_file: Path) -> dict[str, str]:
    """The tiny ViT, a random generator, a 64x64 noise image and a box mask for it."""
    from comfy_splice.checkpoint import save_generator
    from comfy_splice.generator import build_generator
    from comfy_splice.run import TrainConfig, TrainedGenerator

    shutil.copy(tiny_dino_file, comfy_server.models_dir / TINY)
    trained = TrainedGenerator(build_generator(seed=3), TrainConfig(steps=1), "tiny", {"loss": [1.0]})
    save_generator(comfy_server.generators_dir / GENERATOR, trained)
    rng = np.random.default_rng(5)
    mask = np.zeros((SIZE, SIZE), np.uint8)
    y0, y1, x0, x1 = BOX
    mask[y0:y1, x0:x1] = 255
    return {
        "image": comfy_server.upload_image(Image.fromarray(rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)),
                                           name="messages_image.png"),
        "mask": comfy_server.upload_image(Image.fromarray(mask, mode="L"), name="messages_mask.png"),
    }


def _base(files: dict[str, str]) -> dict[str, Any]:
    """The image, the generator, and the box mask (node 3)."""
    return {
        "1": {"class_type": "LoadImage", "inputs": {"image": files["image"]}},
        "2": {"class_type": "SpliceLoadGenerator", "inputs": {"generator_name": GENERATOR}},
        "3": {"class_type": "LoadImageMask", "inputs": {"image": files["mask"], "channel": "red"}},
    }


def _nan_mask(prompt: dict[str, Any]) -> list[Any]:
    """SolidMask(NaN): ComfyUI turns the text "nan" into float('nan') and its min/max checks pass it."""
    prompt["90"] = {"class_type": "SolidMask", "inputs": {"value": "nan", "width": SIZE, "height": SIZE}}
    return ["90", 0]


def _fails(server: ComfyServer, prompt: dict[str, Any], node: str) -> str:
    """Run ``prompt``: it must fail on ``node`` with one readable ValueError; returns the message."""
    result = server.run(prompt, timeout=120)
    assert result.status == "execution_error", result.terminal
    assert str(result.terminal["node_id"]) == node, result.terminal
    assert str(result.terminal.get("exception_type")).endswith("ValueError"), result.terminal
    message = result.error_message.strip()
    assert "\n" not in message and "bug" not in message, message
    return message


def _pixels(server: ComfyServer, result: RunResult, node: str) -> np.ndarray:
    (entry,) = result.output_images(node)
    return np.asarray(server.view_image(entry["filename"], entry["subfolder"], entry["type"]).convert("RGB"))


# -- masks ------------------------------------------------------------------------------------------------


def test_a_nan_mask_is_reported_as_nan(comfy_server: ComfyServer, files: dict[str, str]) -> None:
    prompt = _base(files)
    prompt["4"] = {"class_type": "SpliceApply", "inputs": {"generator": ["2", 0], "images": ["1", 0],
                                                           "batch_size": 1, "mask": _nan_mask(prompt)}}
    prompt["5"] = {"class_type": "PreviewImage", "inputs": {"images": ["4", 0]}}
    message = _fails(comfy_server, prompt, "4")
    assert message.startswith("mask: the mask holds NaN") and "empty" not in message, message

    crop = _base(files)
    crop["4"] = {"class_type": "SpliceCropToMask", "inputs": {"image": ["1", 0], "mask": _nan_mask(crop),
                                                              "margin": 0.05}}
    crop["5"] = {"class_type": "PreviewImage", "inputs": {"images": ["4", 0]}}
    assert "NaN" in _fails(comfy_server, crop, "4")


def test_a_feather_wider_than_the_mask_is_clamped_and_said(comfy_server: ComfyServer, files: dict[str, str]) -> None:
    """Feather 256 on a 20 px region gives exactly the feather-20 result, with a note on the node;
    Composite in Mask does the same."""
    prompt = _base(files)
    for node, save, feather in (("4", "5", 256), ("6", "7", 20), ("8", "9", 0)):
        prompt[node] = {"class_type": "SpliceApply", "inputs": {"generator": ["2", 0], "images": ["1", 0],
                                                                "batch_size": 1, "mask": ["3", 0], "feather": feather}}
        prompt[save] = {"class_type": "SaveImage", "inputs": {"images": [node, 0],
                                                              "filename_prefix": f"messages/apply_{feather}"}}
    prompt["10"] = {"class_type": "SpliceApply", "inputs": {"generator": ["2", 0], "images": ["1", 0],
                                                            "batch_size": 1}}
    for node, save, feather in (("11", "12", 256), ("13", "14", 20)):
        prompt[node] = {"class_type": "SpliceCompositeInMask",
                        "inputs": {"base": ["1", 0], "overlay": ["10", 0], "mask": ["3", 0], "feather": feather}}
        prompt[save] = {"class_type": "SaveImage", "inputs": {"images": [node, 0],
                                                              "filename_prefix": f"messages/composite_{feather}"}}
    result = comfy_server.run(prompt, timeout=180).raise_for_status()
    wide, fitted, hard = (_pixels(comfy_server, result, n) for n in ("5", "7", "9"))
    assert not np.array_equal(fitted, hard), "the feather changed nothing: no test"
    assert np.array_equal(wide, fitted)
    assert np.array_equal(_pixels(comfy_server, result, "12"), _pixels(comfy_server, result, "14"))
    for node in ("4", "11"):
        (note,) = result.texts(node)
        assert "feather 256 is wider than the mask's region (20 px across" in note and "used 20" in note, note
    assert result.texts("6") == [] and result.texts("13") == []  # a feather that fits: no note


def test_feather_tooltips_say_it_is_clamped(comfy_server: ComfyServer) -> None:
    info = comfy_server.object_info()
    apply = info["SpliceApply"]["input"]["optional"]["feather"][1]["tooltip"]
    composite = info["SpliceCompositeInMask"]["input"]["required"]["feather"][1]["tooltip"]
    for tooltip in (apply, composite):
        assert "narrowest side" in tooltip and "lowered" in tooltip, tooltip


# -- descriptor stride --------------------------------------------------------------------------------------


def test_a_stride_above_the_patch_is_refused(comfy_server: ComfyServer, files: dict[str, str]) -> None:
    """Stride 32 on the tiny patch-16 ViT: refused like stride 3, with the valid strides."""
    for stride, expected in ((32, "stride 32 is larger than the 16px patch"), (3, "stride 3 does not divide")):
        prompt = {
            "1": {"class_type": "LoadImage", "inputs": {"image": files["image"]}},
            "2": {"class_type": "SpliceLoadDINO", "inputs": {"model_name": TINY, "download_if_missing": False}},
            "3": {"class_type": "SpliceDinoFeaturesPCA",
                  "inputs": {"dino": ["2", 0], "images": ["1", 0], "load_size": SIZE, "block": -1, "facet": "key",
                             "stride": stride, "bin": False}},
            "4": {"class_type": "PreviewImage", "inputs": {"images": ["3", 0]}},
        }
        message = _fails(comfy_server, prompt, "3")
        assert expected in message and "[1, 2, 4, 8, 16]" in message, message


# -- save prefixes -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(("prefix", "expected"), [
    ("splice/bad\x00name", "filename_prefix contains a control character (NUL"),
    ("x" * 5000, "a file or folder name may be at most 255 bytes. Shorten it to 236 bytes or less"),
    ("splice/" + "y" * 240, "a file or folder name may be at most 255 bytes"),
    ("/".join(["d" * 200] * 21), "a path may be at most 4095 bytes"),
])
def test_save_prefixes_the_file_system_cannot_take(comfy_server: ComfyServer, files: dict[str, str], prefix: str,
                                                   expected: str) -> None:
    before = sorted(p.name for p in comfy_server.generators_dir.iterdir())
    prompt = {
        "1": {"class_type": "SpliceLoadGenerator", "inputs": {"generator_name": GENERATOR}},
        "2": {"class_type": "SpliceSaveGenerator", "inputs": {"generator": ["1", 0], "filename_prefix": prefix}},
    }
    message = _fails(comfy_server, prompt, "2")
    assert expected in message and len(message) < 400, message
    assert sorted(p.name for p in comfy_server.generators_dir.iterdir()) == before  # no folder was made
