"""Select Material (Splice): click a material, get a soft mask of every pixel made of it.

A thin adapter over ``comfy_splice.material_select``: the clicks come the ComfyUI way (a MASK
painted in the mask editor, or x/y widgets), in the image itself or in another image
(``query_image``); the scores come from the Materialistic network when 'Load Materialistic' is
connected, else from DINO's descriptors alone (training-free, not the paper's model).
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import Tensor

from ..comfy_splice.material_select import (DEFAULT_THRESHOLD, MATERIALISTIC_PATCH, PAPER_BLOCKS,
                                            TRAINING_FREE_CUT, WORKING_SHORT_SIDE, descriptor_blocks,
                                            estimate_bytes, heatmap, select_material)
from . import comfy_runtime as rt, names
from .api import CATEGORY, SearchAliases, advanced, io, schema, ui
from .errors import check_finite, readable_errors
from .regions import mask_input
from .types import DinoHandle, SpliceDino, SpliceMaterialistic, check_dino, check_materialistic

MATERIAL_FIXES = "use smaller images or fewer at once, or free memory (close other programs or models)"
MAX_COORD = 16384


def _check_fits(device: torch.device, handle: DinoHandle, sizes: list[tuple[int, int]], with_model: bool,
                what: str) -> None:
    """Refuse before any network runs when the job's estimate exceeds what is free. The network
    is a ViT-B/8 (12 heads, 768 wide, patch 8); the training-free mode uses the connected DINO."""
    if with_model:
        need = estimate_bytes(sizes, MATERIALISTIC_PATCH, 768, 12, len(PAPER_BLOCKS), with_model=True)
    else:
        backbone = handle.backbone
        need = estimate_bytes(sizes, backbone.patch_size, backbone.embed_dim, backbone.num_heads,
                              len(descriptor_blocks(backbone.depth)))
    rt.check_fits(device, need, what, MATERIAL_FIXES)


def _model_on(model: Any, device: torch.device) -> Any:
    """The network on ``device``: a copy, so the loaded original (cached by ComfyUI, on the CPU)
    never moves; on the CPU the original itself."""
    if device.type == "cpu" or not isinstance(model, torch.nn.Module):
        return model
    with torch.inference_mode(False):
        clone = copy.deepcopy(model)
    return clone.to(device)


class SpliceSelectMaterial(SearchAliases, io.ComfyNode):
    """Every pixel made of the clicked material, as a soft mask (Materialistic)."""

    SEARCH_ALIASES = ("material", "select material", "segment", "materialistic", "same material")

    @classmethod
    def define_schema(cls) -> io.Schema:
        return schema(
            search_aliases=cls.SEARCH_ALIASES,
            node_id="SpliceSelectMaterial",
            display_name=names.SELECT_MATERIAL,
            category=CATEGORY,
            description=(
                "Click a material (paint a dot or a stroke in the mask editor, or set x and y) and get a "
                "soft mask of every pixel made of it: all the wood, the same fabric, in the image or, with "
                "'query_image', in another image. With 'Load Materialistic' connected it runs the paper's "
                "network (Sharma et al., 'Materialistic', SIGGRAPH 2023); without it, a training-free mode "
                "that compares DINO descriptors (not the paper's model; coarser). Images are scored with "
                f"their short side at {WORKING_SHORT_SIDE} pixels and the mask comes back at their own size."),
            inputs=[
                SpliceDino.Input("dino", tooltip=(
                    f"The DINO-ViT from '{names.LOAD_DINO}': the training-free mode compares its "
                    f"descriptors (blocks {', '.join(map(str, PAPER_BLOCKS))} of a 12-block ViT). Ignored "
                    "when 'materialistic' is connected (the network has its own DINO).")),
                io.Image.Input("image", tooltip="The image(s) to select in. A batch gets one mask per image."),
                io.Int.Input("x", default=0, min=0, max=MAX_COORD, tooltip=(
                    "Column of the clicked pixel (0 = left edge), in the image the click is on "
                    "('query_image' if connected, else 'image'). Used only when 'query_mask' is not "
                    "connected.")),
                io.Int.Input("y", default=0, min=0, max=MAX_COORD, tooltip=(
                    "Row of the clicked pixel (0 = top edge). Used only when 'query_mask' is not "
                    "connected.")),
                advanced(io.Float.Input("threshold", default=DEFAULT_THRESHOLD, min=0.01, max=0.99, step=0.01,
                                        tooltip=(
                    "Score above which a pixel is selected: the mask is above 0.5 exactly there (its edge "
                    "stays soft). Higher selects less. 0.5 keeps the network's own score (the authors' "
                    f"default); in the training-free mode 0.5 cuts at cosine similarity {TRAINING_FREE_CUT}."))),
                io.Mask.Input("query_mask", optional=True, tooltip=(
                    "The clicks, painted on the image the click is on (e.g. Load Image's mask editor: a dot "
                    "or a stroke on the material): every pixel above 0.5 is a click, and several clicks "
                    "select everything each would select. One mask for all images, or one per image. "
                    "Replaces x and y.")),
                io.Image.Input("query_image", optional=True, tooltip=(
                    "Click in this image and select in 'image' (the same material elsewhere, e.g. a fabric "
                    "of the appearance image found in the structure image). One image, or one per image.")),
                SpliceMaterialistic.Input("materialistic", optional=True, tooltip=(
                    f"The network from '{names.LOAD_MATERIALISTIC}' (the paper's model, from the authors' "
                    "checkpoint). Not connected: the training-free DINO mode.")),
            ],
            outputs=[
                io.Mask.Output("mask", display_name="mask", tooltip=(
                    "One soft mask per image at its full size: above 0.5 where the material was found "
                    "(connect it to Splice Output's 'mask' or Train Generator's 'appearance_mask').")),
                io.Image.Output("heatmap", display_name="heatmap", tooltip=(
                    "The score before the threshold as colours (dark: another material; bright yellow: the "
                    "clicked one).")),
            ],
        )

    @classmethod
    @readable_errors(names.SELECT_MATERIAL)
    def execute(cls, dino: object, image: Tensor, x: int = 0, y: int = 0, threshold: float = DEFAULT_THRESHOLD,
                query_mask: object | None = None, query_image: Tensor | None = None,
                materialistic: object | None = None) -> io.NodeOutput:
        handle = check_dino(dino)
        model = check_materialistic(materialistic).model if materialistic is not None else None
        images = rt.image_to_core(image, "image")
        queries = rt.image_to_core(query_image, "query_image") if query_image is not None else None
        mask = mask_input(query_mask, "query_mask") if query_mask is not None else None
        patch = MATERIALISTIC_PATCH if model is not None else handle.backbone.patch_size
        for name, batch in (("The image", images), ("The query image", queries)):
            if batch is not None:
                rt.check_min_size(batch, patch, name, f"one {patch}px ViT patch")
        device = rt.torch_device()
        sizes = [(int(b.shape[-2]), int(b.shape[-1])) for b in (images, queries) if b is not None
                 for _ in range(b.shape[0])]
        what = f"selecting a material in {images.shape[0]} image(s)"
        _check_fits(device, handle, sizes, model is not None, what)
        progress = rt.Progress(int(images.shape[0]))
        with rt.memory_guard(device, what, MATERIAL_FIXES):
            scorer = (dict(model=_model_on(model, device)) if model is not None else
                      dict(backbone=rt.backbone_for(handle.backbone, device, for_training=False)))
            selection = select_material(images, device, query_mask=mask, x=int(x), y=int(y),
                                        query_images=queries, threshold=check_finite(threshold, "threshold"),
                                        on_step=progress.step, **scorer)
        text = (f"{selection.mode}: {100 * selection.selected_fraction:.0f}% of the pixels selected "
                f"(threshold {threshold:g})")
        return io.NodeOutput(selection.mask.float().cpu(), rt.image_to_comfy(heatmap(selection.scores)),
                             ui=ui.PreviewText(text))


NODES = (SpliceSelectMaterial,)
