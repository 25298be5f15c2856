"""Region-aware Splice: take the appearance from a region of B, put the result into a region of A.

Two small operations on images and masks (e.g. co-segmentation masks):
- :func:`crop_to_mask` crops images to the bounding box of their masks (plus a margin), so the
  appearance loss sees the object of B rather than the whole picture. The CLS token Splice
  matches describes the whole crop, so the crop is the honest way to restrict it: masking pixels
  out would make the blanked area part of the appearance.
- :func:`composite_in_mask` replaces a base image by an overlay inside a mask, with the mask's
  edge feathered (Gaussian), at the base image's full resolution; :func:`composite_into` does
  the same in place, chunk by chunk, for Splice Output's preallocated output of a long clip.
  :func:`fit_feather` clamps a feather to the mask region's narrowest side (the nodes call it
  and show its note): wider, the Gaussian spreads the mask so thin that the edit vanishes.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor


def _check_masks(images: Tensor, masks: Tensor, what: str) -> Tensor:
    """Masks [M, H, W] matching images [B, 3, H, W] in size, and one mask or one per image."""
    if masks.ndim == 2:
        masks = masks[None]
    if masks.ndim != 3:
        raise ValueError(f"{what}: expected a MASK of shape [batch, height, width], got {tuple(masks.shape)}.")
    if tuple(masks.shape[-2:]) != tuple(images.shape[-2:]):
        raise ValueError(
            f"{what}: the mask is {masks.shape[-1]}x{masks.shape[-2]} but the image is "
            f"{images.shape[-1]}x{images.shape[-2]}. Use the mask made from this image (e.g. the "
            f"co-segmentation of the same image), or resize the mask to the image first.")
    if masks.shape[0] not in (1, images.shape[0]):
        raise ValueError(f"{what}: {masks.shape[0]} masks for {images.shape[0]} images; give one mask, or one "
                         f"per image.")
    masks = masks.float()
    if masks.numel():
        # Checked before the empty test: a NaN compares false with everything, so a NaN mask
        # would otherwise be reported as empty. A min and a max (NaN propagates through both),
        # not a bool copy of a clip's masks.
        low, high = torch.aminmax(masks)
        if not (math.isfinite(float(low)) and math.isfinite(float(high))):
            bad = "NaN (not-a-number)" if math.isnan(float(low)) or math.isnan(float(high)) else "infinite"
            raise ValueError(f"{what}: the mask holds {bad} values; a mask is 0..1 per pixel. Check the node "
                             f"that made it (e.g. a division by zero in mask arithmetic).")
    return masks


def _empty(what: str, threshold: float) -> ValueError:
    return ValueError(f"{what + ': ' if what else ''}the mask is empty (no pixel above {threshold:g}): "
                      f"there is no region to use. Check the mask (e.g. lower the co-segmentation's "
                      f"'thresh' or 'votes_percentage').")


def mask_box(masks: Tensor, margin: float = 0.0, threshold: float = 0.5,
             what: str = "") -> tuple[int, int, int, int]:
    """(top, bottom, left, right), bottom/right exclusive: the box around every pixel above
    ``threshold`` in any of the masks [M, H, W], grown by ``margin`` x its size on each side and
    clipped to the image. An empty mask is refused (``what`` names the input in the message)."""
    on = masks > threshold
    if not bool(on.any()):
        raise _empty(what, threshold)
    rows = on.any(dim=0).any(dim=1).nonzero().flatten()
    cols = on.any(dim=0).any(dim=0).nonzero().flatten()
    top, bottom, left, right = int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1
    grow_y, grow_x = math.ceil(margin * (bottom - top)), math.ceil(margin * (right - left))
    height, width = masks.shape[-2:]
    return max(0, top - grow_y), min(height, bottom + grow_y), max(0, left - grow_x), min(width, right + grow_x)


def crop_to_mask(images: Tensor, masks: Tensor, margin: float = 0.05, what: str = "crop to mask") -> Tensor:
    """Crop images [B, 3, H, W] to the bounding box of their masks (one box for the whole batch,
    the union, so the batch keeps one size), grown by ``margin`` of the box's size per side.
    ``what`` names the mask input in error messages."""
    masks = _check_masks(images, masks, what)
    top, bottom, left, right = mask_box(masks, margin, what=what)
    return images[..., top:bottom, left:right]


def region_masks(images: Tensor, masks: Tensor, what: str) -> Tensor:
    """``masks`` checked for compositing into ``images`` [B, 3, H, W]: the images' size, one mask
    or one per image, not all empty (a composite in an empty mask would silently change
    nothing). Returns them as float [M, H, W]. Cheap: callers check before the expensive part."""
    masks = _check_masks(images, masks, what)
    if masks.numel() == 0 or not float(masks.max()) > 0.5:  # a max, not a bool copy of a clip's masks
        raise _empty(what, 0.5)
    return masks


def feather_limit(masks: Tensor, threshold: float = 0.5) -> int:
    """The widest useful feather for masks [M, H, W]: the short side of the bounding box of every
    pixel above ``threshold`` in any mask (one box for a clip's masks, from their per-pixel
    maximum: no bool copy of the clip). A feather wider than the region blurs the mask away, so
    the composite barely shows the edit (feather 256 on a 64 px object changes almost nothing)."""
    top, bottom, left, right = mask_box(masks.amax(dim=0)[None], threshold=threshold)
    return max(1, min(bottom - top, right - left))


def fit_feather(masks: Tensor, feather: float, what: str = "feather") -> tuple[float, str | None]:
    """``feather`` clamped to :func:`feather_limit` of the masks, and a one-line note for the
    user when it was clamped (None when it fits)."""
    limit = feather_limit(masks)
    if feather <= limit:
        return float(feather), None
    return float(limit), (f"{what} {feather:g} is wider than the mask's region ({limit} px across at its "
                          f"narrowest) and would blur the edit away: used {limit}. Set {what} to {limit} "
                          f"or less to keep this message away.")


def feather_mask(masks: Tensor, feather: float) -> Tensor:
    """Soften masks [M, H, W] with a Gaussian of sigma ``feather`` / 2 (``feather`` in pixels,
    0 = hard edge), so a composite has no seam."""
    if feather <= 0:
        return masks
    sigma = feather / 2
    radius = max(1, math.ceil(3 * sigma))
    taps = torch.arange(-radius, radius + 1, dtype=torch.float32, device=masks.device)
    kernel = torch.exp(-(taps ** 2) / (2 * sigma ** 2))
    kernel = kernel / kernel.sum()
    x = masks[:, None]
    x = F.conv2d(F.pad(x, (radius, radius, 0, 0), mode="replicate"), kernel.view(1, 1, 1, -1))
    x = F.conv2d(F.pad(x, (0, 0, radius, radius), mode="replicate"), kernel.view(1, 1, -1, 1))
    return x[:, 0].clamp(0, 1)


def composite_in_mask(base: Tensor, overlay: Tensor, masks: Tensor, feather: float = 8.0) -> Tensor:
    """``overlay`` inside the (feathered) mask, ``base`` outside; [B, 3, H, W] at the base's size.

    The overlay must have the base's size (Splice Output returns the structure image's full
    resolution) and may be one image for all, or one per base image.
    """
    if tuple(overlay.shape[-2:]) != tuple(base.shape[-2:]):
        raise ValueError(f"composite: the overlay is {overlay.shape[-1]}x{overlay.shape[-2]} but the base image "
                         f"is {base.shape[-1]}x{base.shape[-2]}; give the Splice output of this base image "
                         f"(it has the structure image's size).")
    if overlay.shape[0] not in (1, base.shape[0]):
        raise ValueError(f"composite: {overlay.shape[0]} overlay images for {base.shape[0]} base images; give "
                         f"one, or one per base image.")
    masks = region_masks(base, masks, "composite")
    alpha = feather_mask(masks, feather)[:, None]
    return base * (1 - alpha) + overlay * alpha


def composite_into(out: Tensor, base: Tensor, masks: Tensor, feather: float = 8.0, chunk: int = 4) -> Tensor:
    """In place: ``out`` (the overlay, e.g. Splice Output's result) is kept inside the feathered
    mask and replaced by ``base`` outside; returns ``out``.

    ``out`` and ``base`` are [B, 3, H, W] of one shape (``out`` may be a permuted view of a
    channels-last CPU buffer); ``masks`` one [1, H, W] mask for all, or one per image. Done
    ``chunk`` images at a time, so a long clip never gets a second full-size copy: only one
    chunk's temporaries exist at once. A single mask is feathered once; per-image masks are
    feathered per chunk. Where the feathered mask is 0, ``out`` becomes ``base`` exactly (for
    a finite overlay): ``base * 1 + overlay * 0``.
    """
    if tuple(out.shape) != tuple(base.shape):
        raise ValueError(f"composite: the overlay is {tuple(out.shape)} but the base images are "
                         f"{tuple(base.shape)}; they must match.")
    masks = region_masks(base, masks, "mask")
    shared = feather_mask(masks, feather)[:, None].to(out.device) if masks.shape[0] == 1 else None
    total, step = int(base.shape[0]), max(1, int(chunk))
    for start in range(0, total, step):
        stop = min(start + step, total)
        if shared is not None:
            alpha = shared
        else:
            alpha = feather_mask(masks[start:stop], feather)[:, None].to(out.device)
        overlay = out[start:stop]
        overlay.copy_(base[start:stop].to(device=out.device, dtype=out.dtype) * (1 - alpha) + overlay * alpha)
    return out
