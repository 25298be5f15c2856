"""Region-aware Splice helpers: crop to a mask's box, composite inside a feathered mask."""

from __future__ import annotations

import pytest
import torch

from comfy_splice.regions import composite_in_mask, crop_to_mask, feather_mask, mask_box


def _mask(height: int, width: int, box: tuple[int, int, int, int]) -> torch.Tensor:
    mask = torch.zeros(1, height, width)
    mask[0, box[0]:box[1], box[2]:box[3]] = 1
    return mask


def test_crop_is_the_mask_box_grown_by_the_margin_and_clipped() -> None:
    images = torch.rand(2, 3, 40, 60)
    mask = _mask(40, 60, (10, 20, 30, 50))
    assert mask_box(mask) == (10, 20, 30, 50)
    assert mask_box(mask, margin=0.1) == (9, 21, 28, 52)
    assert mask_box(mask, margin=1.0) == (0, 30, 10, 60)  # clipped at the image border
    crop = crop_to_mask(images, mask, margin=0.0)
    torch.testing.assert_close(crop, images[..., 10:20, 30:50])
    # One box around every mask of a batch: the batch keeps one size.
    two = torch.cat((_mask(40, 60, (0, 5, 0, 5)), _mask(40, 60, (30, 35, 50, 55))))
    assert crop_to_mask(images, two, margin=0.0).shape == (2, 3, 35, 55)


def test_bad_masks_are_refused_naming_the_fix() -> None:
    images = torch.rand(1, 3, 40, 60)
    with pytest.raises(ValueError, match="mask is 30x40 but the image is 60x40"):
        crop_to_mask(images, torch.ones(1, 40, 30))
    with pytest.raises(ValueError, match="empty"):
        crop_to_mask(images, torch.zeros(1, 40, 60))
    with pytest.raises(ValueError, match="3 masks for 1 images"):
        crop_to_mask(images, torch.ones(3, 40, 60))
    with pytest.raises(ValueError, match="overlay is 30x40"):
        composite_in_mask(images, torch.rand(1, 3, 40, 30), torch.ones(1, 40, 60))
    with pytest.raises(ValueError, match="empty"):
        composite_in_mask(images, images, torch.zeros(1, 40, 60))


def test_composite_takes_the_overlay_inside_and_blends_only_near_the_edge() -> None:
    base, overlay = torch.zeros(1, 3, 64, 64), torch.ones(1, 3, 64, 64)
    mask = _mask(64, 64, (16, 48, 16, 48))
    hard = composite_in_mask(base, overlay, mask, feather=0)
    torch.testing.assert_close(hard[0, 0], mask[0])
    soft = composite_in_mask(base, overlay, mask, feather=8)
    assert float(soft[0, :, 32, 32].min()) > 0.999 and float(soft[0, :, 2, 2].max()) < 1e-3
    edge = soft[0, 0, 32, 12:20]
    assert bool((edge[1:] > edge[:-1]).all()) and 0.3 < float(soft[0, 0, 32, 16]) < 0.7
    assert feather_mask(mask, 0) is mask
