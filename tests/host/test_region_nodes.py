"""Region-aware Splice in a real ComfyUI server: Train Generator's ``appearance_mask`` and Splice
Output's ``mask``/``feather`` (tiny random ViT, small images, two training steps).

Masks come from core's *Load Image (as Mask)* on uploaded grey PNGs (red channel = mask value),
so each test knows the mask exactly. What is checked is the contract, not the look:
- Splice Output with a mask: outside the (feathered) mask the output is the input image bit for
  bit; inside a hard mask it is the unmasked output bit for bit;
- Train Generator with ``appearance_mask``: training on B + mask is training on B cropped to the
  mask's box (the same result image, and the crop's fingerprint in the saved file, so a resume
  recognises the run);
- wrong-size and empty masks come back as one readable message naming the input, and the
  server keeps serving.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors import safe_open

from comfy_splice.regions import crop_to_mask
from comfy_splice.train import pair_fingerprint
from tools.harness.comfy_client import RunResult
from tools.harness.comfy_server import ComfyServer

TINY = "tiny_dino_vit.pth"
A_SIZE = (96, 80)       # PIL (width, height) of the structure image
B_SIZE = (88, 104)      # the appearance image
A_BOX = (24, 56, 28, 68)  # (y0, y1, x0, x1) of A's object mask
B_BOX = (30, 90, 10, 70)  # B's object: the crop (with the 5 % margin) is 66x64
FEATHER_RADIUS = 12     # support of the feather Gaussian for feather=8: ceil(3 * 8 / 2)
TRAIN, APPLY, SAVE = "6", "7", "8"


def _picture(size: tuple[int, int], seed: int) -> Image.Image:
    """Noise over a colour ramp: every pixel differs, so any change shows."""
    rng = np.random.default_rng(seed)
    width, height = size
    ramp = np.linspace(0.0, 1.0, width, dtype=np.float32)[None, :, None] * rng.uniform(0.3, 1.0, size=3)
    pixels = 0.6 * ramp + 0.4 * rng.random((height, width, 3))
    return Image.fromarray((np.clip(pixels, 0, 1) * 255).round().astype(np.uint8))


def _mask_png(size: tuple[int, int], box: tuple[int, int, int, int] | None) -> Image.Image:
    width, height = size
    mask = np.zeros((height, width), np.uint8)
    if box is not None:
        y0, y1, x0, x1 = box
        mask[y0:y1, x0:x1] = 255
    return Image.fromarray(mask, mode="L")


def _tensor(image: Image.Image) -> torch.Tensor:
    """[1, 3, H, W] in [0, 1], as LoadImage gives it (8-bit / 255)."""
    return torch.from_numpy(np.asarray(image.convert("RGB"), np.float32) / 255.0).permute(2, 0, 1)[None]


@pytest.fixture(scope="module")
def files(comfy_server: ComfyServer, tiny_dino_file: Path) -> dict[str, str]:
    shutil.copy(tiny_dino_file, comfy_server.models_dir / TINY)
    b = _picture(B_SIZE, 2)
    y0, y1, x0, x1 = crop_box()
    return {
        "a": comfy_server.upload_image(_picture(A_SIZE, 1), name="region_a.png"),
        "b": comfy_server.upload_image(b, name="region_b.png"),
        "b_crop": comfy_server.upload_image(b.crop((x0, y0, x1, y1)), name="region_b_crop.png"),
        "mask_a": comfy_server.upload_image(_mask_png(A_SIZE, A_BOX), name="region_mask_a.png"),
        "mask_b": comfy_server.upload_image(_mask_png(B_SIZE, B_BOX), name="region_mask_b.png"),
        "empty_a": comfy_server.upload_image(_mask_png(A_SIZE, None), name="region_empty_a.png"),
        "empty_b": comfy_server.upload_image(_mask_png(B_SIZE, None), name="region_empty_b.png"),
    }


def crop_box() -> tuple[int, int, int, int]:
    """B_BOX grown by crop_to_mask's default margin (5 % of the box per side, rounded up)."""
    y0, y1, x0, x1 = B_BOX
    grow_y, grow_x = -(-(y1 - y0) * 5 // 100), -(-(x1 - x0) * 5 // 100)
    return max(0, y0 - grow_y), min(B_SIZE[1], y1 + grow_y), max(0, x0 - grow_x), min(B_SIZE[0], x1 + grow_x)


def _graph(files: dict[str, str], appearance: str = "b", seed: int = 3, **apply: Any) -> dict[str, Any]:
    """A, B -> Load DINO-ViT -> losses -> Train (2 steps) -> Splice Output -> SaveImage."""
    return {
        "1": {"class_type": "LoadImage", "inputs": {"image": files["a"]}},
        "2": {"class_type": "LoadImage", "inputs": {"image": files[appearance]}},
        "3": {"class_type": "SpliceLoadDINO", "inputs": {"model_name": TINY, "download_if_missing": False}},
        "4": {"class_type": "SpliceStructureLoss", "inputs": {"dino": ["3", 0], "weight": 1.0, "block": -1}},
        "5": {"class_type": "SpliceAppearanceLoss", "inputs": {"dino": ["3", 0], "weight": 10.0, "block": -1}},
        TRAIN: {"class_type": "SpliceTrainGenerator",
                "inputs": {"structure": ["1", 0], "appearance": ["2", 0], "structure_loss": ["4", 0],
                           "appearance_loss": ["5", 0], "steps": 2, "learning_rate": 0.002, "seed": seed,
                           "identity_weight": 1.0, "full_image_every": 75, "preview_every": 0,
                           "dtype": "auto"}},
        APPLY: {"class_type": "SpliceApply",
                "inputs": {"generator": [TRAIN, 0], "images": ["1", 0], "batch_size": 4, **apply}},
        SAVE: {"class_type": "SaveImage", "inputs": {"images": [APPLY, 0], "filename_prefix": "region/out"}},
    }


def _mask_node(prompt: dict[str, Any], node: str, name: str) -> list[Any]:
    prompt[node] = {"class_type": "LoadImageMask", "inputs": {"image": name, "channel": "red"}}
    return [node, 0]


def _saved(server: ComfyServer, result: RunResult, node: str) -> np.ndarray:
    (entry,) = result.output_images(node)
    return np.asarray(server.view_image(entry["filename"], entry["subfolder"], entry["type"]).convert("RGB"))


def _box(size: tuple[int, int], box: tuple[int, int, int, int], grow: int = 0) -> np.ndarray:
    width, height = size
    inside = np.zeros((height, width), bool)
    y0, y1, x0, x1 = box
    inside[max(0, y0 - grow):y1 + grow, max(0, x0 - grow):x1 + grow] = True
    return inside


def test_schemas_add_the_region_inputs_at_the_end(comfy_server: ComfyServer) -> None:
    info = comfy_server.object_info()
    train, apply = info["SpliceTrainGenerator"], info["SpliceApply"]
    assert train["input_order"]["optional"] == ["init_generator", "max_minutes", "autosave_every",
                                                "max_megapixels", "appearance_mask"]
    mask_spec = train["input"]["optional"]["appearance_mask"]
    assert mask_spec[0] == "MASK" and "bounding box" in mask_spec[1]["tooltip"]
    assert "blanked" in mask_spec[1]["tooltip"]  # the rule and why, where the user looks
    assert apply["input_order"]["required"] == ["generator", "images", "batch_size"]
    assert apply["input_order"]["optional"] == ["mask", "feather"]
    assert apply["input"]["optional"]["mask"][0] == "MASK"
    feather = apply["input"]["optional"]["feather"]
    assert feather[0] == "INT" and feather[1]["default"] == 8 and feather[1]["min"] == 0
    for spec in (apply["input"]["optional"]["mask"], feather):
        assert len(spec[1]["tooltip"]) > 30


def test_output_changes_only_inside_the_mask(comfy_server: ComfyServer, files: dict[str, str]) -> None:
    """One training, three Splice Outputs: no mask, a hard mask, the default feather."""
    prompt = _graph(files)
    mask = _mask_node(prompt, "20", files["mask_a"])
    prompt["9"] = {"class_type": "SpliceApply", "inputs": {"generator": [TRAIN, 0], "images": ["1", 0],
                                                           "batch_size": 4, "mask": mask, "feather": 0}}
    prompt["10"] = {"class_type": "SaveImage", "inputs": {"images": ["9", 0], "filename_prefix": "region/hard"}}
    prompt["11"] = {"class_type": "SpliceApply", "inputs": {"generator": [TRAIN, 0], "images": ["1", 0],
                                                            "batch_size": 4, "mask": mask}}
    prompt["12"] = {"class_type": "SaveImage", "inputs": {"images": ["11", 0], "filename_prefix": "region/soft"}}
    result = comfy_server.run(prompt, timeout=300).raise_for_status()
    source = np.asarray(_picture(A_SIZE, 1))
    full, hard, soft = _saved(comfy_server, result, SAVE), _saved(comfy_server, result, "10"), \
        _saved(comfy_server, result, "12")
    inside = _box(A_SIZE, A_BOX)
    assert not np.array_equal(full[inside], source[inside]), "the generator changed nothing: no test"
    assert np.array_equal(hard[~inside], source[~inside])  # the input, exactly
    assert np.array_equal(hard[inside], full[inside])      # the Splice output, exactly
    near = _box(A_SIZE, A_BOX, grow=FEATHER_RADIUS)
    assert np.array_equal(soft[~near], source[~near])      # beyond the feather: the input, exactly
    r = FEATHER_RADIUS
    ring = near & ~_box(A_SIZE, (A_BOX[0] + r, A_BOX[1] - r, A_BOX[2] + r, A_BOX[3] - r))
    assert not np.array_equal(soft[ring], hard[ring]), "feather 8 must blend across the edge"


def test_appearance_mask_trains_on_the_crop_of_b(comfy_server: ComfyServer, files: dict[str, str]) -> None:
    """B + appearance_mask is exactly B cropped to the mask's box: same result, and the crop's
    fingerprint in the saved generator (what init_generator compares to resume a run)."""
    masked = _graph(files, appearance="b")
    masked[TRAIN]["inputs"]["appearance_mask"] = _mask_node(masked, "20", files["mask_b"])
    masked["9"] = {"class_type": "SpliceSaveGenerator", "inputs": {"generator": [TRAIN, 0],
                                                                   "filename_prefix": "splice/region"}}
    cropped = _graph(files, appearance="b_crop")
    first = comfy_server.run(masked, timeout=300).raise_for_status()
    second = comfy_server.run(cropped, timeout=300).raise_for_status()
    assert np.array_equal(_saved(comfy_server, first, SAVE), _saved(comfy_server, second, SAVE))

    b = _tensor(_picture(B_SIZE, 2))
    mask = torch.from_numpy(np.asarray(_mask_png(B_SIZE, B_BOX), np.float32) / 255.0)[None]
    crop = crop_to_mask(b, mask)
    y0, y1, x0, x1 = crop_box()
    assert crop.shape[-2:] == (y1 - y0, x1 - x0)
    (entry,) = first.outputs["9"]["splice_generators"]
    with safe_open(str(comfy_server.generators_dir / entry["subfolder"] / entry["filename"]), "pt") as handle:
        state = json.loads(handle.metadata()["splice_train_state"])
    assert state["pair_id"] == pair_fingerprint(_tensor(_picture(A_SIZE, 1)), crop)
    assert state["pair_id"] != pair_fingerprint(_tensor(_picture(A_SIZE, 1)), b)


@pytest.mark.parametrize("where", ["train", "apply"])
def test_wrong_size_and_empty_masks_are_refused_with_the_fix(comfy_server: ComfyServer, files: dict[str, str],
                                                            where: str) -> None:
    # A's mask on B (train) and B's mask on A (apply): the wrong size for that image.
    cases = {"train": (TRAIN, "appearance_mask", files["mask_a"], files["empty_b"], A_SIZE, B_SIZE),
             "apply": (APPLY, "mask", files["mask_b"], files["empty_a"], B_SIZE, A_SIZE)}
    node, name, wrong, empty, mask_size, image_size = cases[where]
    for mask_file, expected in (
            (wrong, f"{name}: the mask is {mask_size[0]}x{mask_size[1]} but the image is "
                    f"{image_size[0]}x{image_size[1]}. Use the mask made from this image"),
            (empty, f"{name}: the mask is empty (no pixel above 0.5)")):
        prompt = _graph(files, seed=5)
        prompt[node]["inputs"][name] = _mask_node(prompt, "20", mask_file)
        result = comfy_server.run(prompt, timeout=300)
        assert result.status == "execution_error", result.terminal
        assert str(result.terminal["node_id"]) == node
        assert result.terminal.get("exception_type") == "ValueError"
        assert result.error_message.startswith(expected), result.error_message
        assert "\n" not in result.error_message.strip()
    assert comfy_server.system_stats()["system"]  # still serving
