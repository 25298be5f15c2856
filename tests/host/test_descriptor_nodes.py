"""The DINO dense-descriptor nodes in a real ComfyUI server (tiny random ViT, small images).

The images are the core tests' synthetic scenes: the same 'object' texture on two different
backgrounds, so co-segmentation has a known answer even with random weights (see
tests/core/test_cosegment.py for why that is fair). Here the wiring, sizes, messages and
refusals are checked through the real server and core ComfyUI nodes.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from tools.harness.comfy_client import RunResult
from tools.harness.comfy_server import ComfyServer

TINY = "tiny_dino_vit.pth"
NODE_IDS = ("SpliceDinoCosegmentation", "SpliceDinoPartCosegmentation", "SpliceDinoCorrespondences",
            "SpliceDinoFeaturesPCA")
SIZE = 96
BOXES = ((8, 56, 8, 60), (40, 88, 36, 90))  # (y0, y1, x0, x1) of the object in each image
FAST = {"load_size": SIZE, "block": -1, "facet": "key", "stride": 8, "bin": False, "elbow": 0.9,
        "thresh": 0.065, "votes_percentage": 75, "sample_interval": 4, "low_res_saliency": True, "seed": 0}


def _scene(background: str, box: tuple[int, int, int, int], seed: int) -> Image.Image:
    """An object texture (warm diagonal stripes) on a 'sky' (cool noise) or 'wall' (grey stripes)."""
    rng = np.random.default_rng(seed)
    ys, xs = np.mgrid[0:SIZE, 0:SIZE]
    noise = rng.random((SIZE, SIZE))
    if background == "sky":
        image = np.stack([0.1 * noise, 0.3 + 0.2 * noise, 0.7 + 0.3 * noise], -1)
    else:
        image = np.repeat((0.35 + 0.3 * ((xs // 4) % 2) + 0.1 * noise)[..., None], 3, -1)
    stripes = ((ys + xs) // 3) % 2
    obj = np.stack([0.8 + 0.2 * noise, 0.3 * stripes + 0.1 * noise, 0.1 * noise], -1)
    y0, y1, x0, x1 = box
    image[y0:y1, x0:x1] = obj[y0:y1, x0:x1]
    return Image.fromarray((np.clip(image, 0, 1) * 255).round().astype(np.uint8))


@pytest.fixture(scope="module")
def files(comfy_server: ComfyServer, tiny_dino_file: Path) -> dict[str, str]:
    shutil.copy(tiny_dino_file, comfy_server.models_dir / TINY)
    return {"a": comfy_server.upload_image(_scene("sky", BOXES[0], 1), name="dense_a.png"),
            "b": comfy_server.upload_image(_scene("wall", BOXES[1], 2), name="dense_b.png"),
            "wide": comfy_server.upload_image(_scene("wall", BOXES[1], 3).resize((144, 72)), name="dense_wide.png")}


def _base(files: dict[str, str], batch: bool = True) -> dict[str, Any]:
    """LoadImage a and b, batched (ImageBatch), and Load DINO-ViT."""
    prompt: dict[str, Any] = {
        "1": {"class_type": "LoadImage", "inputs": {"image": files["a"]}},
        "2": {"class_type": "LoadImage", "inputs": {"image": files["b"]}},
        "3": {"class_type": "SpliceLoadDINO", "inputs": {"model_name": TINY, "download_if_missing": False}},
    }
    if batch:
        prompt["4"] = {"class_type": "ImageBatch", "inputs": {"image1": ["1", 0], "image2": ["2", 0]}}
    return prompt


def _save(prompt: dict[str, Any], node: str, source: list[Any], prefix: str, mask: bool = False) -> None:
    if mask:
        prompt[f"{node}m"] = {"class_type": "MaskToImage", "inputs": {"mask": source}}
        source = [f"{node}m", 0]
    prompt[node] = {"class_type": "SaveImage", "inputs": {"images": source, "filename_prefix": prefix}}


def _images(server: ComfyServer, result: RunResult, node: str) -> list[np.ndarray]:
    return [np.asarray(server.view_image(e["filename"], e["subfolder"], e["type"]).convert("RGB"))
            for e in result.output_images(node)]


def _truth(box: tuple[int, int, int, int]) -> torch.Tensor:
    truth = torch.zeros(SIZE, SIZE)
    y0, y1, x0, x1 = box
    truth[y0:y1, x0:x1] = 1
    return truth


def _away_from_edges(truth: torch.Tensor, margin: int = 8) -> torch.Tensor:
    inner = -F.max_pool2d(-truth[None, None], 2 * margin + 1, 1, margin)[0, 0]
    outer = F.max_pool2d(truth[None, None], 2 * margin + 1, 1, margin)[0, 0]
    return (inner == 1) | (outer == 0)


def test_object_info_lists_the_descriptor_nodes_with_tooltips(comfy_server: ComfyServer) -> None:
    info = comfy_server.object_info()
    for node_id in NODE_IDS:
        node = info[node_id]
        assert node["category"] == "image/splice/descriptors" and len(node["description"]) > 40
        for name, spec in node["input"]["required"].items():
            assert len(spec[1].get("tooltip") or "") > 10, f"{node_id}.{name} has no tooltip"
        assert all(node["output_tooltips"]), node_id
    assert info["SpliceDinoCosegmentation"]["output"] == ["MASK", "MASK"]
    assert list(info["SpliceDinoCosegmentation"]["input"]["optional"]) == ["more_images"]
    assert info["SpliceDinoPartCosegmentation"]["output"] == ["IMAGE", "MASK"]
    assert info["SpliceDinoCorrespondences"]["output"] == ["IMAGE", "STRING"]
    assert info["SpliceDinoFeaturesPCA"]["output"] == ["IMAGE"]
    assert info["SpliceDinoCorrespondences"]["input"]["required"]["block"][1]["default"] == 9


def test_cosegmentation_masks_the_shared_object_at_full_resolution(comfy_server: ComfyServer,
                                                                   files: dict[str, str]) -> None:
    prompt = _base(files)
    prompt["5"] = {"class_type": "SpliceDinoCosegmentation",
                   "inputs": {"dino": ["3", 0], "images": ["4", 0], **FAST,
                              "remove_outliers": False, "outliers_thresh": 0.7}}
    _save(prompt, "6", ["5", 0], "dense/coseg", mask=True)
    result = comfy_server.run(prompt, timeout=300).raise_for_status()
    masks = _images(comfy_server, result, "6")
    assert len(masks) == 2
    for mask, box in zip(masks, BOXES):
        assert mask.shape == (SIZE, SIZE, 3)
        truth = _truth(box)
        sure = _away_from_edges(truth)
        assert bool(((torch.from_numpy(mask[..., 0].copy()) > 127).float()[sure] == truth[sure]).all())


def test_cosegmentation_of_two_images_of_different_sizes(comfy_server: ComfyServer,
                                                         files: dict[str, str]) -> None:
    """A in 'images', B (another size) in 'more_images': each mask at its own image's size."""
    prompt = _base(files, batch=False)
    prompt["2"]["inputs"]["image"] = files["wide"]
    prompt["5"] = {"class_type": "SpliceDinoCosegmentation",
                   "inputs": {"dino": ["3", 0], "images": ["1", 0], "more_images": ["2", 0], **FAST,
                              "remove_outliers": False, "outliers_thresh": 0.7}}
    _save(prompt, "6", ["5", 0], "dense/coseg_a", mask=True)
    _save(prompt, "7", ["5", 1], "dense/coseg_b", mask=True)
    result = comfy_server.run(prompt, timeout=300).raise_for_status()
    (mask_a,), (mask_b,) = _images(comfy_server, result, "6"), _images(comfy_server, result, "7")
    assert mask_a.shape == (SIZE, SIZE, 3) and mask_b.shape == (72, 144, 3)
    assert (mask_a > 127).any() and (mask_b > 127).any()


def test_cosegmentation_refusals_are_clear_and_the_server_keeps_serving(comfy_server: ComfyServer,
                                                                        files: dict[str, str]) -> None:
    prompt = _base(files, batch=False)
    prompt["5"] = {"class_type": "SpliceDinoCosegmentation",
                   "inputs": {"dino": ["3", 0], "images": ["1", 0], **FAST,
                              "remove_outliers": False, "outliers_thresh": 0.7}}
    _save(prompt, "6", ["5", 0], "dense/one", mask=True)
    result = comfy_server.run(prompt, timeout=120)
    assert result.status == "execution_error" and str(result.terminal["node_id"]) == "5"
    assert "at least 2 images" in result.error_message
    prompt["4"] = {"class_type": "ImageBatch", "inputs": {"image1": ["1", 0], "image2": ["2", 0]}}
    prompt["5"]["inputs"].update(images=["4", 0], load_size=2048, stride=1)
    result = comfy_server.run(prompt, timeout=120)
    assert result.status == "execution_error", result.terminal
    assert "'load_size'" in result.error_message and "'stride'" in result.error_message
    assert "bug" not in result.error_message  # a refusal, shown unchanged
    prompt["5"]["inputs"].update(load_size=SIZE, stride=5)
    result = comfy_server.run(prompt, timeout=120)
    assert result.status == "execution_error" and "does not divide" in result.error_message
    assert comfy_server.system_stats()["system"]  # still serving


def test_part_cosegmentation_colours_parts_and_masks_the_chosen_one(comfy_server: ComfyServer,
                                                                    files: dict[str, str]) -> None:
    prompt = _base(files)
    prompt["5"] = {"class_type": "SpliceDinoPartCosegmentation",
                   "inputs": {"dino": ["3", 0], "images": ["4", 0], "num_parts": 2, "part": -1, **FAST}}
    _save(prompt, "6", ["5", 0], "dense/parts")
    _save(prompt, "7", ["5", 1], "dense/parts_mask", mask=True)
    result = comfy_server.run(prompt, timeout=300).raise_for_status()
    parts, masks = _images(comfy_server, result, "6"), _images(comfy_server, result, "7")
    assert len(parts) == len(masks) == 2
    for picture, mask in zip(parts, masks):
        assert picture.shape == mask.shape == (SIZE, SIZE, 3)
        coloured = picture.max(axis=-1) > 0
        # part = -1: the mask is every part, i.e. exactly the coloured pixels.
        assert np.array_equal(coloured, mask[..., 0] > 127) and coloured.any() and not coloured.all()
    prompt["5"]["inputs"]["part"] = 2
    result = comfy_server.run(prompt, timeout=120)
    assert result.status == "execution_error" and "out of range for num_parts=2" in result.error_message


def test_correspondences_draw_numbered_matches_and_return_points(comfy_server: ComfyServer,
                                                                 files: dict[str, str]) -> None:
    prompt = _base(files, batch=False)
    prompt["2"]["inputs"]["image"] = files["wide"]
    prompt["5"] = {"class_type": "SpliceDinoCorrespondences",
                   "inputs": {"dino": ["3", 0], "image_a": ["1", 0], "image_b": ["2", 0], "num_pairs": 5,
                              "load_size": SIZE, "block": 0, "facet": "key", "stride": 8, "bin": True,
                              "thresh": 0.0, "seed": 0}}
    _save(prompt, "6", ["5", 0], "dense/matches")
    prompt["7"] = {"class_type": "PreviewAny", "inputs": {"source": ["5", 1]}}
    result = comfy_server.run(prompt, timeout=300).raise_for_status()
    (picture,) = _images(comfy_server, result, "6")
    assert picture.shape == (SIZE, SIZE + 2 * SIZE, 3)  # a 144x72 image scaled to height 96 is 192 wide
    points = json.loads(result.outputs["7"]["text"][0])
    assert 1 <= len(points) <= 5 and [p["index"] for p in points] == list(range(1, len(points) + 1))
    for point in points:
        assert 0 <= point["a"][0] < SIZE and 0 <= point["a"][1] < SIZE
        assert 0 <= point["b"][0] < 144 and 0 <= point["b"][1] < 72
    prompt["5"]["inputs"]["block"] = 9  # the paper's default, but the tiny ViT has 2 blocks
    result = comfy_server.run(prompt, timeout=120)
    assert result.status == "execution_error" and "2 blocks" in result.error_message


def test_features_pca_gives_one_picture_per_image(comfy_server: ComfyServer, files: dict[str, str]) -> None:
    prompt = _base(files)
    prompt["5"] = {"class_type": "SpliceDinoFeaturesPCA",
                   "inputs": {"dino": ["3", 0], "images": ["4", 0], "load_size": 64, "block": -1,
                              "facet": "token", "stride": 8, "bin": False}}
    _save(prompt, "6", ["5", 0], "dense/pca")
    result = comfy_server.run(prompt, timeout=300).raise_for_status()
    pictures = _images(comfy_server, result, "6")
    assert [p.shape for p in pictures] == [(SIZE, SIZE, 3)] * 2
    for picture in pictures:
        assert picture.reshape(-1, 3).max(0).tolist() == [255, 255, 255]
        assert picture.reshape(-1, 3).min(0).tolist() == [0, 0, 0]


def test_region_aware_splice_changes_only_the_object(comfy_server: ComfyServer, files: dict[str, str]) -> None:
    """Co-segment A and B, train on B's object (Crop to Mask), composite the output into A's mask:
    pixels of A far from its mask come back unchanged."""
    prompt = _base(files, batch=False)
    prompt["2"]["inputs"]["image"] = files["wide"]
    prompt["5"] = {"class_type": "SpliceDinoCosegmentation",
                   "inputs": {"dino": ["3", 0], "images": ["1", 0], "more_images": ["2", 0], **FAST,
                              "remove_outliers": False, "outliers_thresh": 0.7}}
    prompt["6"] = {"class_type": "SpliceCropToMask", "inputs": {"image": ["2", 0], "mask": ["5", 1], "margin": 0.05}}
    prompt["7"] = {"class_type": "SpliceStructureLoss", "inputs": {"dino": ["3", 0], "weight": 1.0, "block": -1}}
    prompt["8"] = {"class_type": "SpliceAppearanceLoss", "inputs": {"dino": ["3", 0], "weight": 10.0, "block": -1}}
    prompt["9"] = {"class_type": "SpliceTrainGenerator",
                   "inputs": {"structure": ["1", 0], "appearance": ["6", 0], "structure_loss": ["7", 0],
                              "appearance_loss": ["8", 0], "steps": 2, "learning_rate": 0.002, "seed": 0,
                              "identity_weight": 1.0, "full_image_every": 75, "preview_every": 1,
                              "dtype": "auto"}}
    prompt["10"] = {"class_type": "SpliceApply", "inputs": {"generator": ["9", 0], "images": ["1", 0],
                                                            "batch_size": 1}}
    prompt["11"] = {"class_type": "SpliceCompositeInMask",
                    "inputs": {"base": ["1", 0], "overlay": ["10", 0], "mask": ["5", 0], "feather": 4}}
    _save(prompt, "12", ["11", 0], "dense/region")
    _save(prompt, "13", ["5", 0], "dense/region_mask", mask=True)
    _save(prompt, "14", ["6", 0], "dense/region_crop")
    result = comfy_server.run(prompt, timeout=300).raise_for_status()
    (composite,), (mask,), (crop,) = (_images(comfy_server, result, n) for n in ("12", "13", "14"))
    original = np.asarray(_scene("sky", BOXES[0], 1))
    assert composite.shape == original.shape and crop.shape[0] <= 72 and crop.shape[1] <= 144
    near = F.max_pool2d(torch.from_numpy((mask[..., 0] > 0).astype(np.float32))[None, None], 25, 1, 12)[0, 0]
    far = (near == 0).numpy()
    assert far.any() and np.array_equal(composite[far], original[far])
    assert not np.array_equal(composite, original)  # inside the mask the Splice output shows
    prompt["11"]["inputs"]["mask"] = ["5", 1]  # B's mask (72x144) on A (96x96)
    result = comfy_server.run(prompt, timeout=120)
    assert result.status == "execution_error" and "mask is 144x72 but the image is 96x96" in result.error_message
