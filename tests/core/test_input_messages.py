"""Messages for careless inputs that the pure checks catch: a NaN mask, a feather wider than the
mask's region, a descriptor stride above the patch, a save prefix the file system cannot take."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from comfy_splice.descriptors import DescriptorConfig, check_config
from comfy_splice.regions import composite_in_mask, crop_to_mask, feather_limit, fit_feather, region_masks
from comfy_splice.validation import check_file_name

SUFFIX = "_00001_.safetensors"
FOLDER = "/models/splice_generators"


def _box_mask(height: int, width: int, box: tuple[int, int, int, int], count: int = 1) -> torch.Tensor:
    masks = torch.zeros(count, height, width)
    y0, y1, x0, x1 = box
    masks[:, y0:y1, x0:x1] = 1.0
    return masks


# -- masks --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("value", "word"), [(float("nan"), "NaN"), (float("inf"), "infinite"),
                                             (float("-inf"), "infinite")])
def test_a_non_finite_mask_is_named_not_called_empty(value: float, word: str) -> None:
    images = torch.rand(2, 3, 32, 40)
    masks = _box_mask(32, 40, (4, 20, 4, 30), count=2)
    masks[1, 0, 0] = value  # one pixel of the second mask is enough
    for check in (lambda: region_masks(images, masks, "mask"),
                  lambda: crop_to_mask(images, masks, what="appearance_mask")):
        with pytest.raises(ValueError, match=word) as info:
            check()
        assert "empty" not in str(info.value)
    with pytest.raises(ValueError, match="NaN"):  # an all-NaN mask too (it is no "empty" mask)
        region_masks(images, torch.full((1, 32, 40), float("nan")), "mask")
    with pytest.raises(ValueError, match="the mask is empty"):  # a real empty mask keeps its message
        region_masks(images, torch.zeros(1, 32, 40), "mask")


def test_a_feather_wider_than_the_region_is_clamped_with_a_note() -> None:
    masks = _box_mask(64, 64, (10, 30, 5, 45))  # 20 rows x 40 columns: 20 px at its narrowest
    assert feather_limit(masks) == 20
    assert fit_feather(masks, 8) == (8.0, None)
    assert fit_feather(masks, 20) == (20.0, None)
    fitted, note = fit_feather(masks, 256, "feather")
    assert fitted == 20.0 and note is not None
    assert "feather 256" in note and "20 px" in note and "Set feather to 20" in note
    # A clip: the box around all its masks (from their per-pixel maximum).
    clip = torch.cat([_box_mask(64, 64, (0, 8, 0, 8)), _box_mask(64, 64, (40, 64, 30, 64))])
    assert feather_limit(clip) == 64


def test_the_clamp_keeps_the_edit_visible() -> None:
    """Feather 256 on a 64 px image (the issue's case) against the clamped value."""
    base, overlay = torch.zeros(1, 3, 64, 64), torch.ones(1, 3, 64, 64)
    masks = _box_mask(64, 64, (16, 48, 16, 48))
    unclamped = composite_in_mask(base, overlay, masks, 256.0).mean()
    clamped = composite_in_mask(base, overlay, masks, fit_feather(masks, 256)[0]).mean()
    hard = composite_in_mask(base, overlay, masks, 0.0).mean()
    assert float(clamped) > 0.5 * float(hard)       # most of the region still shows the overlay
    assert float(unclamped) < 0.5 * float(clamped)  # what the unclamped feather did


# -- descriptor stride ------------------------------------------------------------------------------------


def test_stride_must_divide_the_patch_and_not_exceed_it(tiny_backbone: Any) -> None:
    patch = tiny_backbone.patch_size
    for stride in (1, 2, 4, 8, 16):
        assert patch % stride == 0
        check_config(tiny_backbone, DescriptorConfig(load_size=64, stride=stride))
    with pytest.raises(ValueError, match=rf"stride 32 is larger than the {patch}px patch.*\[1, 2, 4, 8, 16\]"):
        check_config(tiny_backbone, DescriptorConfig(load_size=64, stride=2 * patch))
    with pytest.raises(ValueError, match="does not divide"):
        check_config(tiny_backbone, DescriptorConfig(load_size=64, stride=3))


# -- save prefixes --------------------------------------------------------------------------------------


@pytest.mark.parametrize(("prefix", "expected"), [
    ("splice/bad\x00name", "control character (NUL, at character 11)"),
    ("splice/line\nbreak", "control character (a line break"),
    ("x" * 5000, "is 5019 bytes with the '_00001_.safetensors' the node adds; a file or folder name may be at "
                 "most 255 bytes. Shorten it to 236 bytes or less."),
    ("x" * 237, "is 256 bytes with the"),
    ("d" * 256 + "/generator", "is 256 bytes; a file or folder name may be at most 255 bytes"),
    ("\u00e9" * 119, "is 257 bytes"),  # 2 bytes per character in UTF-8
    ("/".join(["d" * 200] * 21), "a path may be at most 4095 bytes"),
    ("bad\ud800", "not valid Unicode text"),
])
def test_save_prefixes_the_file_system_cannot_take(prefix: str, expected: str) -> None:
    with pytest.raises(ValueError, match="filename_prefix") as info:
        check_file_name(prefix, "filename_prefix", FOLDER, SUFFIX)
    assert expected in str(info.value)
    assert "bug" not in str(info.value) and len(str(info.value)) < 400


@pytest.mark.parametrize("prefix", ["splice/generator", "x" * 236, "\u00e9" * 118, "a/b/c/%date:yyyy%/run",
                                    "/".join(["d" * 200] * 19)])
def test_save_prefixes_within_the_limits_pass(prefix: str) -> None:
    check_file_name(prefix, "filename_prefix", FOLDER, SUFFIX)
