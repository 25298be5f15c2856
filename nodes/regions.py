"""Region-aware Splice with masks (e.g. from DINO Co-segmentation): Crop to Mask, Composite in Mask.

"Change the look of the object, keep the background": co-segment A and B, crop B to its object
for 'Train Generator (Splice)', and put the Splice output back into A inside A's object mask.
"""

from __future__ import annotations

import logging

from torch import Tensor

from ..comfy_splice.regions import composite_in_mask, crop_to_mask, fit_feather, region_masks
from . import comfy_runtime as rt, names
from .api import CATEGORY, io
from .errors import readable_errors

log = logging.getLogger(__name__)

FEATHER_LIMIT_TIP = ("At most the mask region's narrowest side (of the box around it): a wider "
                     "feather blurs the mask away and the edit barely shows, so it is lowered to "
                     "that and the node says so.")


def mask_input(mask: object, name: str) -> Tensor:
    """A MASK input as float [M, H, W] (ComfyUI also passes a single [H, W] mask)."""
    if not isinstance(mask, Tensor) or mask.ndim not in (2, 3):
        raise ValueError(f"{name}: connect a MASK (e.g. from '{names.COSEGMENT}').")
    return mask.float() if mask.ndim == 3 else mask[None].float()


def fitted_feather(masks: Tensor, feather: float) -> float:
    """``feather`` clamped to the mask's region; the note, when clamped, is shown on the node."""
    fitted, note = fit_feather(masks, float(feather))
    if note is not None:
        log.warning("Splice: %s", note)
        rt.show_text(note)
    return fitted


class SpliceCropToMask(io.ComfyNode):
    """The appearance region of B: B cropped to its mask's bounding box."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="SpliceCropToMask",
            display_name=names.CROP,
            category=CATEGORY,
            description=(
                "Crops images to the bounding box of a mask (plus a margin), e.g. the appearance "
                "image B to its co-segmented object, so Splice takes the look of that object only. "
                "A batch is cropped to one box around all its masks, so it keeps one size."),
            inputs=[
                io.Image.Input("image", tooltip="Image(s) to crop, e.g. the appearance image B."),
                io.Mask.Input("mask", tooltip="Mask of the region to keep, at the image's size (one, or "
                                              "one per image)."),
                io.Float.Input("margin", default=0.05, min=0.0, max=1.0, step=0.01,
                               tooltip="Grow the box by this fraction of its size on every side."),
            ],
            outputs=[io.Image.Output("image_out", display_name="image",
                                     tooltip="The crop (connect it to Train Generator's 'appearance').")],
        )

    @classmethod
    @readable_errors(names.CROP)
    def execute(cls, image: Tensor, mask: object, margin: float = 0.05) -> io.NodeOutput:
        images = rt.image_to_core(image, "image")
        return io.NodeOutput(rt.image_to_comfy(crop_to_mask(images, mask_input(mask, "mask"), margin)))


class SpliceCompositeInMask(io.ComfyNode):
    """The Splice output inside A's mask, A everywhere else, with a feathered edge."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="SpliceCompositeInMask",
            display_name=names.COMPOSITE,
            category=CATEGORY,
            description=(
                "Replaces the base image by the overlay only inside the mask, feathered, at full "
                "resolution: e.g. the Splice output of A inside A's co-segmented object, so the "
                "background of A stays untouched."),
            inputs=[
                io.Image.Input("base", tooltip="The image kept outside the mask, e.g. the structure image A."),
                io.Image.Input("overlay", tooltip="The image used inside the mask, same size as base (e.g. "
                                                  f"{names.APPLY} of A)."),
                io.Mask.Input("mask", tooltip="Where the overlay goes, at the base's size (one, or one per image)."),
                io.Int.Input("feather", default=8, min=0, max=256,
                             tooltip="Soften the mask's edge over about this many pixels (0 = hard edge). "
                                     + FEATHER_LIMIT_TIP),
            ],
            outputs=[io.Image.Output("image", display_name="image", tooltip="The composite, at the base's size.")],
        )

    @classmethod
    @readable_errors(names.COMPOSITE)
    def execute(cls, base: Tensor, overlay: Tensor, mask: object, feather: int = 8) -> io.NodeOutput:
        bottom = rt.image_to_core(base, "base")
        top = rt.image_to_core(overlay, "overlay")
        masks = mask_input(mask, "mask")
        out = composite_in_mask(bottom, top, masks, fitted_feather(region_masks(bottom, masks, "mask"), feather))
        return io.NodeOutput(rt.image_to_comfy(out))


NODES = (SpliceCropToMask, SpliceCompositeInMask)
