"""Region-aware Splice helpers: crop to a mask's box, composite inside a feathered mask."""

from __future__ import annotations

import pytest
import torch

from comfy_splice.regions import (composite_in_mask, composite_into, crop_to_mask, feather_mask, mask_box,
                                  region_masks)


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


def test_composite_into_is_composite_in_mask_done_in_place_chunk_by_chunk() -> None:
    """Splice Output's path: a channels-last CPU buffer (seen through a permuted view) is
    overwritten in place; any chunk size gives the one-shot composite, for one shared mask and for
    one mask per image."""
    generator = torch.Generator().manual_seed(0)
    base = torch.rand(5, 3, 40, 48, generator=generator)
    overlay = torch.rand(5, 3, 40, 48, generator=generator)
    shared = _mask(40, 48, (8, 30, 10, 40))
    per_image = torch.cat([_mask(40, 48, (i, 20 + i, 2 * i, 30)) for i in range(5)])
    for masks in (shared, per_image):
        expected = composite_in_mask(base, overlay, masks, feather=4)
        for chunk in (1, 2, 5, 16):
            buffer = overlay.permute(0, 2, 3, 1).contiguous()  # [B, H, W, 3], ComfyUI's layout
            view = buffer.permute(0, 3, 1, 2)
            assert composite_into(view, base, masks, feather=4, chunk=chunk) is view
            torch.testing.assert_close(buffer.permute(0, 3, 1, 2), expected, rtol=0, atol=1e-6)


def test_composite_into_keeps_the_base_exactly_outside_the_feathered_mask() -> None:
    base = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    out = torch.full_like(base, 0.25)
    mask = _mask(64, 64, (16, 48, 16, 48))
    composite_into(out, base, mask, feather=8)
    radius = 12  # ceil(3 sigma), sigma = feather / 2: the Gaussian's support
    far = torch.ones(64, 64, dtype=torch.bool)
    far[16 - radius:48 + radius, 16 - radius:48 + radius] = False
    assert torch.equal(out[:, :, far], base[:, :, far])  # bit for bit
    assert float((out[:, :, 32, 32] - 0.25).abs().max()) < 1e-3  # the overlay in the middle
    out = torch.full_like(base, 0.25)
    composite_into(out, base, mask, feather=0)
    inside = mask[0].bool()
    assert torch.equal(out[:, :, ~inside], base[:, :, ~inside])
    assert torch.equal(out[:, :, inside], torch.full_like(out[:, :, inside], 0.25))


def test_region_masks_and_crop_name_the_input_in_their_messages() -> None:
    images = torch.rand(3, 3, 20, 30)
    with pytest.raises(ValueError, match="^appearance_mask: the mask is empty"):
        crop_to_mask(images[:1], torch.zeros(1, 20, 30), what="appearance_mask")
    with pytest.raises(ValueError, match="^mask: the mask is 30x10 but the image is 30x20"):
        region_masks(images, torch.ones(1, 10, 30), "mask")
    with pytest.raises(ValueError, match="^mask: the mask is empty"):
        region_masks(images, torch.zeros(3, 20, 30), "mask")
    with pytest.raises(ValueError, match="^mask: 2 masks for 3 images"):
        region_masks(images, torch.ones(2, 20, 30), "mask")
    # One frame's empty mask in a clip is fine (the object may leave the shot); a 2-D mask is one mask.
    masks = torch.zeros(3, 20, 30)
    masks[1, 5, 5] = 1.0
    assert region_masks(images, masks, "mask").shape == (3, 20, 30)
    assert region_masks(images, torch.ones(20, 30), "mask").shape == (1, 20, 30)
    with pytest.raises(ValueError, match="overlay is"):
        composite_into(torch.rand(3, 3, 20, 31), images, torch.ones(1, 20, 30))
