"""DINO dense-descriptor nodes: co-segmentation, part co-segmentation, correspondences, PCA view.

Thin adapters over ``comfy_splice.cosegment`` (Amir et al., "Deep ViT Features as Dense Visual
Descriptors"). They share the DINO-ViT of 'Load DINO-ViT (Splice)'; the descriptor options
(load size, block, facet, stride, binning) are the same widgets on every node, in the same order.
"""

from __future__ import annotations

import json
from typing import Any

import torch
from PIL import Image, ImageDraw
from torch import Tensor

from ..comfy_splice.cosegment import correspondences, cosegment, part_cosegment, pca_images
from ..comfy_splice.descriptors import DescriptorConfig, check_config, estimate_bytes
from ..comfy_splice.dino.vit import FACETS
from . import comfy_runtime as rt, names
from .api import CATEGORY as SPLICE_CATEGORY, SearchAliases, advanced, io, schema, ui
from .errors import readable_errors
from .losses import BLOCK_MAX, BLOCK_MIN
from .types import DinoHandle, SpliceDino, check_block, check_dino

CATEGORY = f"{SPLICE_CATEGORY}/descriptors"

PALETTE = ((230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48), (145, 30, 180),
           (70, 240, 240), (240, 50, 230), (210, 245, 60), (250, 190, 212), (0, 128, 128),
           (220, 190, 255), (170, 110, 40), (255, 250, 200), (128, 0, 0), (170, 255, 195))
"""Part / match colours (distinct, fixed: the same part gets the same colour in every image)."""

MAX_PARTS = len(PALETTE)


def _descriptor_inputs(block: int, bin_default: bool) -> list[Any]:
    """The descriptor widgets every node shares (same names, same order)."""
    return [
        io.Int.Input("load_size", default=224, min=16, max=2048, step=8,
                     tooltip="Each image is resized so its short side is this many pixels before DINO "
                             "(the paper uses 224). Larger finds finer detail but costs memory "
                             "quadratically; lower it if the node reports too little memory."),
        advanced(io.Int.Input("block", default=block, min=BLOCK_MIN, max=BLOCK_MAX,
                              tooltip="Transformer block the descriptors come from: -1 = last. Deep "
                                      "blocks are semantic (object parts), early ones "
                                      "positional/low-level.")),
        advanced(io.Combo.Input("facet", options=list(FACETS), default="key",
                                tooltip="Which part of the block describes a token: the attention key "
                                        "(the paper's choice), query, value, or the block's output "
                                        "token.")),
        io.Int.Input("stride", default=4, min=1, max=32,
                     tooltip="Patch-embedding stride: below the patch size gives a denser grid (4 on a "
                             "patch-8 ViT: 4x the tokens). Must divide the patch size and not exceed "
                             "it (1, 2, 4 or 8 on a patch-8 ViT; the patch size is the model's own "
                             "grid). Raise it if memory runs out."),
        io.Boolean.Input("bin", default=bin_default,
                         tooltip="Log-binning: each descriptor also averages its 3x3 and 9x9 "
                                 "neighbourhoods (17x wider; helps matching, costs memory)."),
    ]


def _foreground_inputs(elbow_tooltip: str) -> list[Any]:
    """The co-segmentation widgets the object and part nodes share (same names, same order, after
    the descriptor widgets): the elbow rule, the attention vote and the k-means sampling."""
    return [
        advanced(io.Float.Input("elbow", default=0.975, min=0.5, max=0.999, step=0.005,
                                tooltip=elbow_tooltip)),
        advanced(io.Float.Input("thresh", default=0.065, min=0.0, max=1.0, step=0.005,
                                tooltip="An image votes a cluster foreground when DINO's attention over it "
                                        "averages above this (attention is scaled to 0..1 per image).")),
        advanced(io.Int.Input("votes_percentage", default=75, min=1, max=100,
                              tooltip="A cluster is foreground when at least this % of the images "
                                      "vote for it.")),
        advanced(io.Int.Input("sample_interval", default=100, min=1, max=10000,
                              tooltip="k-means is fitted on every n-th descriptor (all are then assigned). "
                                      "Lower it for few or small images.")),
        advanced(io.Boolean.Input("low_res_saliency", default=True,
                                  tooltip="Compute the attention at half size and the model's own stride "
                                          "(as the paper's code; far less memory).")),
    ]


def _config(handle: DinoHandle, load_size: int, block: int, facet: str, stride: int, bin: bool) -> DescriptorConfig:
    """The core configuration, checked against this backbone now (block range, facet, stride)."""
    check_block(handle, block)
    config = DescriptorConfig(load_size=int(load_size), block=int(block), facet=facet, stride=int(stride),
                              bin=bool(bin))
    check_config(handle.backbone, config)
    return config


def _images(image: Tensor, name: str, handle: DinoHandle) -> list[Tensor]:
    """A ComfyUI IMAGE batch -> a list of [1, 3, H, W] core images, each at least one patch."""
    batch = rt.image_to_core(image, name)
    rt.check_min_size(batch, handle.backbone.patch_size, f"The '{name}' image",
                        f"one {handle.backbone.patch_size}px ViT patch")
    return [batch[i:i + 1] for i in range(batch.shape[0])]


DESCRIPTOR_FIXES = "lower load_size, raise stride, turn bin off, or give fewer images"


def _free_bytes(device: torch.device, handle: DinoHandle, images: list[Tensor],
                config: DescriptorConfig) -> int:
    """What the job may use: the pack's budget, then what is free on ``device``, once the job's
    estimate has been made room for (:func:`comfy_runtime.free_memory`). The core refuses a
    job whose estimate exceeds it (``comfy_splice.descriptors.check_memory``)."""
    sizes = [(int(image.shape[-2]), int(image.shape[-1])) for image in images]
    return rt.free_memory(device, estimate_bytes(handle.backbone, sizes, config))


def _progress(total: int) -> Any:
    """Progress per image on the node, and Cancel honoured between images."""
    bar = rt.Progress(total)
    return lambda done, _total: bar.step(done)


def _run(handle: DinoHandle) -> tuple[torch.device, Any]:
    device = rt.torch_device()
    return device, rt.backbone_for(handle.backbone, device, for_training=False)


class SpliceDinoCosegmentation(SearchAliases, io.ComfyNode):
    """Masks of the object the images have in common (unsupervised, no text prompt)."""

    SEARCH_ALIASES = ("segment", "co-segmentation", "object mask", "common object", "match")

    @classmethod
    def define_schema(cls) -> io.Schema:
        return schema(
            search_aliases=cls.SEARCH_ALIASES,
            node_id="SpliceDinoCosegmentation",
            display_name=names.COSEGMENT,
            category=CATEGORY,
            description=(
                "Finds the object that two or more images share and returns one mask per image at "
                "its full resolution (Amir et al., 'Deep ViT Features as Dense Visual Descriptors'): "
                "k-means over all images' DINO descriptors, k by the elbow rule, and clusters voted "
                "foreground by DINO's attention. Defaults are the paper's. Give a batch of 2 or more "
                "images."),
            inputs=[
                SpliceDino.Input("dino", tooltip=f"The DINO-ViT from '{names.LOAD_DINO}' (the paper "
                                                 "uses ViT-S/8)."),
                io.Image.Input("images", tooltip="At least 2 images showing the same kind of object; one mask "
                                                 "per image comes out."),
                *_descriptor_inputs(-1, False),
                *_foreground_inputs("Elbow rule: add clusters until one more improves the fit by less "
                                    "than 1 - elbow. Lower = fewer, coarser clusters."),
                io.Boolean.Input("remove_outliers", default=False,
                                 tooltip="Leave out images whose global DINO descriptor is far from the "
                                         "others' mean; they get an empty mask."),
                advanced(io.Float.Input("outliers_thresh", default=0.7, min=-1.0, max=1.0, step=0.01,
                                        tooltip="Cosine similarity to the mean below which an image is an outlier.")),
                io.Int.Input("seed", default=0, min=0, max=2**31 - 1,
                             tooltip="Seed of k-means: the same seed gives the same masks."),
                io.Image.Input("more_images", optional=True,
                               tooltip="Optional images of another size, co-segmented together with "
                                       "'images' (e.g. a structure image A in 'images' and an appearance "
                                       "image B here); their masks come out of 'more_masks'."),
            ],
            outputs=[io.Mask.Output("masks", display_name="masks",
                                    tooltip="One mask per input image (1 = the shared object), full resolution."),
                     io.Mask.Output("more_masks", display_name="more_masks",
                                    tooltip="One mask per image of 'more_images', at their size (an empty batch "
                                            "when 'more_images' is not connected).")],
        )

    @classmethod
    @readable_errors(names.COSEGMENT)
    def execute(cls, dino: object, images: Tensor, load_size: int = 224, block: int = -1, facet: str = "key",
                stride: int = 4, bin: bool = False, elbow: float = 0.975, thresh: float = 0.065,
                votes_percentage: int = 75, sample_interval: int = 100, low_res_saliency: bool = True,
                remove_outliers: bool = False, outliers_thresh: float = 0.7, seed: int = 0,
                more_images: Tensor | None = None) -> io.NodeOutput:
        handle = check_dino(dino)
        config = _config(handle, load_size, block, facet, stride, bin)
        first = _images(images, "images", handle)
        more = _images(more_images, "more_images", handle) if more_images is not None else []
        batch = first + more
        if len(batch) < 2:
            raise ValueError("DINO Co-segmentation needs at least 2 images (it segments what they have in "
                             "common); got 1. Batch more images into 'images' (e.g. with 'Batch Images'), "
                             "or connect another image to 'more_images'.")
        device, backbone = _run(handle)
        with rt.memory_guard(device, f"co-segmenting {len(batch)} images", DESCRIPTOR_FIXES):
            result = cosegment(backbone, batch, device, config, elbow=elbow, thresh=thresh,
                               votes_percentage=votes_percentage, sample_interval=sample_interval,
                               low_res_saliency=low_res_saliency, remove_outliers=remove_outliers,
                               outliers_thresh=outliers_thresh, seed=seed,
                               memory_limit=_free_bytes(device, handle, batch, config),
                               on_image=_progress(len(batch)))
            masks = torch.stack(result.masks[:len(first)]).cpu()
            if more:
                more_masks = torch.stack(result.masks[len(first):]).cpu()
            else:
                more_masks = torch.zeros((0, *masks.shape[1:]))
        return io.NodeOutput(masks, more_masks, ui=ui.PreviewText(cosegment_summary(result)))


class SpliceDinoPartCosegmentation(SearchAliases, io.ComfyNode):
    """Parts common to a set of images, in the same colours in every image."""

    SEARCH_ALIASES = ("segment", "part segmentation", "parts", "co-segmentation", "match")

    @classmethod
    def define_schema(cls) -> io.Schema:
        return schema(
            search_aliases=cls.SEARCH_ALIASES,
            node_id="SpliceDinoPartCosegmentation",
            display_name=names.PARTS,
            category=CATEGORY,
            description=(
                "Splits the object shared by the images into parts that correspond across them "
                "(head, body, legs ...): co-segmentation, then k-means of the object's DINO "
                "descriptors into 'num_parts'. Returns the parts as colours (same palette for the "
                "whole batch; background black) and the mask of one chosen part."),
            inputs=[
                SpliceDino.Input("dino", tooltip=f"The DINO-ViT from '{names.LOAD_DINO}'."),
                io.Image.Input("images", tooltip="At least 2 images showing the same kind of object."),
                io.Int.Input("num_parts", default=4, min=1, max=MAX_PARTS,
                             tooltip=f"How many parts to split the object into (1..{MAX_PARTS})."),
                io.Int.Input("part", default=-1, min=-1, max=MAX_PARTS - 1,
                             tooltip="Which part the 'mask' output holds: 0 = the largest part, 1 the next "
                                     "...; -1 = all parts (the whole object)."),
                *_descriptor_inputs(-1, False),
                *_foreground_inputs("Elbow rule of the first (object/background) clustering: add "
                                    "clusters until one more improves the fit by less than 1 - elbow."),
                io.Int.Input("seed", default=0, min=0, max=2**31 - 1,
                             tooltip="Seed of k-means: the same seed gives the same parts."),
            ],
            outputs=[
                io.Image.Output("parts", display_name="parts",
                                tooltip="Each part in its own colour (same colours across the "
                                        "batch), background black."),
                io.Mask.Output("mask", display_name="mask",
                               tooltip="Mask of the chosen 'part' (or of all parts) for every image."),
            ],
        )

    @classmethod
    @readable_errors(names.PARTS)
    def execute(cls, dino: object, images: Tensor, num_parts: int = 4, part: int = -1, load_size: int = 224,
                block: int = -1, facet: str = "key", stride: int = 4, bin: bool = False, elbow: float = 0.975,
                thresh: float = 0.065, votes_percentage: int = 75, sample_interval: int = 100,
                low_res_saliency: bool = True, seed: int = 0) -> io.NodeOutput:
        handle = check_dino(dino)
        config = _config(handle, load_size, block, facet, stride, bin)
        if not 1 <= num_parts <= MAX_PARTS:
            raise ValueError(f"num_parts must be between 1 and {MAX_PARTS}, got {num_parts}.")
        if not -1 <= part < num_parts:
            raise ValueError(f"part {part} is out of range for num_parts={num_parts}: use -1 (all parts) "
                             f"or 0..{num_parts - 1}.")
        batch = _images(images, "images", handle)
        if len(batch) < 2:
            raise ValueError("DINO Part Co-segmentation needs at least 2 images; got 1. Batch more "
                             "images into 'images'.")
        device, backbone = _run(handle)
        with rt.memory_guard(device, f"part co-segmenting {len(batch)} images", DESCRIPTOR_FIXES):
            result = part_cosegment(backbone, batch, device, num_parts, config, elbow=elbow, thresh=thresh,
                                    votes_percentage=votes_percentage, sample_interval=sample_interval,
                                    low_res_saliency=low_res_saliency, seed=seed,
                                    memory_limit=_free_bytes(device, handle, batch, config),
                                    on_image=_progress(len(batch)))
            labels = torch.stack(result.labels).cpu()
        colours = torch.tensor(PALETTE[:num_parts] + ((0, 0, 0),), dtype=torch.float32) / 255.0
        picture = colours[labels]
        mask = (labels < num_parts) if part < 0 else (labels == part)
        return io.NodeOutput(picture, mask.float(), ui=ui.PreviewText(parts_summary(labels, num_parts)))


def _percent(mask: Tensor) -> str:
    return f"{100.0 * float(mask.float().mean()):.0f}%"


def cosegment_summary(result: Any) -> str:
    """The node's result text: clusters found and how much of each image the object covers."""
    outliers = sum(1 for inlier in result.inliers if not inlier)
    lines = [f"{result.k} clusters (elbow rule); object found in "
             f"{sum(1 for m in result.masks if float(m.max()) > 0)} of {len(result.masks)} images"
             + (f", {outliers} left out as outliers" if outliers else "")]
    lines += [f"  image {i}: object covers {_percent(mask)}" for i, mask in enumerate(result.masks)]
    return "\n".join(lines)


def parts_summary(labels: Tensor, num_parts: int) -> str:
    """The node's result text: how much of the images each part (and the object) covers."""
    covered = [f"part {p}: {_percent(labels == p)}" for p in range(num_parts)]
    return f"object: {_percent(labels < num_parts)} of the pixels; " + ", ".join(covered)


def draw_matches(image_a: Tensor, image_b: Tensor, points_a: Tensor, points_b: Tensor) -> Tensor:
    """Both images side by side (B scaled to A's height), matches as numbered circles and lines.

    Takes and returns core layout [1, 3, H, W] in [0, 1]."""
    a, b = rt.to_pil(image_a), rt.to_pil(image_b)
    scale = a.height / b.height
    b = b.resize((max(1, round(b.width * scale)), a.height), Image.Resampling.BICUBIC)
    canvas = Image.new("RGB", (a.width + b.width, a.height))
    canvas.paste(a, (0, 0))
    canvas.paste(b, (a.width, 0))
    draw = ImageDraw.Draw(canvas)
    radius = max(3, round(min(a.height, a.width) / 60))
    for index, (pa, pb) in enumerate(zip(points_a.tolist(), points_b.tolist())):
        colour = PALETTE[index % len(PALETTE)]
        xa, ya = pa
        xb, yb = a.width + pb[0] * scale, pb[1] * scale
        draw.line((xa, ya, xb, yb), fill=colour, width=1)
        for x, y in ((xa, ya), (xb, yb)):
            draw.ellipse((x - radius, y - radius, x + radius, y + radius), fill=colour, outline=(255, 255, 255))
            draw.text((x + radius + 1, y - radius - 1), str(index + 1), fill=(255, 255, 255),
                      stroke_width=1, stroke_fill=(0, 0, 0))
    array = torch.frombuffer(bytearray(canvas.tobytes()), dtype=torch.uint8)
    return array.reshape(canvas.height, canvas.width, 3).permute(2, 0, 1)[None].float() / 255.0


class SpliceDinoCorrespondences(SearchAliases, io.ComfyNode):
    """Point matches between two images of similar objects (even of different kinds)."""

    SEARCH_ALIASES = ("match", "matching", "correspondence", "keypoints", "point matches")

    @classmethod
    def define_schema(cls) -> io.Schema:
        return schema(
            search_aliases=cls.SEARCH_ALIASES,
            node_id="SpliceDinoCorrespondences",
            display_name=names.CORRESPONDENCES,
            category=CATEGORY,
            description=(
                "Finds matching points between two images from DINO descriptors: mutual nearest "
                "neighbours ('best buddies') on the salient object, spread over it by k-means "
                "(Amir et al.). Draws both images side by side with numbered matches and returns the "
                "points as JSON (pixel coordinates of each image). Uses the first image of each input."),
            inputs=[
                SpliceDino.Input("dino", tooltip=f"The DINO-ViT from '{names.LOAD_DINO}'."),
                io.Image.Input("image_a", tooltip="First image (the first of a batch is used)."),
                io.Image.Input("image_b", tooltip="Second image (the first of a batch is used)."),
                io.Int.Input("num_pairs", default=10, min=1, max=100,
                             tooltip="How many matches to return at most (fewer if fewer are found)."),
                *_descriptor_inputs(9, True),
                advanced(io.Float.Input("thresh", default=0.05, min=0.0, max=1.0, step=0.005,
                                        tooltip="Only tokens whose DINO attention (0..1 per image) exceeds this are "
                                                "matched: keeps matches on the object.")),
                io.Int.Input("seed", default=0, min=0, max=2**31 - 1,
                             tooltip="Seed of the k-means that spreads the matches."),
            ],
            outputs=[
                io.Image.Output("image", display_name="image",
                                tooltip="Both images side by side with numbered matches."),
                io.String.Output("points", display_name="points",
                                 tooltip='JSON list of matches: {"index", "a": [x, y], "b": [x, y], '
                                         '"similarity", "saliency"}, pixels of each original image.'),
            ],
        )

    @classmethod
    @readable_errors(names.CORRESPONDENCES)
    def execute(cls, dino: object, image_a: Tensor, image_b: Tensor, num_pairs: int = 10,
                load_size: int = 224, block: int = 9, facet: str = "key", stride: int = 4, bin: bool = True,
                thresh: float = 0.05, seed: int = 0) -> io.NodeOutput:
        handle = check_dino(dino)
        config = _config(handle, load_size, block, facet, stride, bin)
        a = _images(image_a, "image_a", handle)[0]
        b = _images(image_b, "image_b", handle)[0]
        device, backbone = _run(handle)
        with rt.memory_guard(device, "matching two images", DESCRIPTOR_FIXES):
            found = correspondences(backbone, a, b, device, num_pairs, config, thresh=thresh, seed=seed,
                                    memory_limit=_free_bytes(device, handle, [a, b], config),
                                    on_image=_progress(2))
        points = json.dumps(found.to_json())
        picture = draw_matches(a, b, found.points_a, found.points_b)
        text = f"{found.points_a.shape[0]} match(es) from {found.best_buddies} salient best buddies"
        return io.NodeOutput(rt.image_to_comfy(picture), points, ui=ui.PreviewText(text))


class SpliceDinoFeaturesPCA(SearchAliases, io.ComfyNode):
    """DINO descriptors as colours: what a block 'sees' (positional early, semantic late)."""

    SEARCH_ALIASES = ("features", "visualize", "pca", "dino descriptors", "segment")

    @classmethod
    def define_schema(cls) -> io.Schema:
        return schema(
            search_aliases=cls.SEARCH_ALIASES,
            node_id="SpliceDinoFeaturesPCA",
            display_name=names.PCA,
            category=CATEGORY,
            description=(
                "Shows DINO's dense descriptors as colours: the first three principal components of "
                "all images' descriptors (fitted together, so a colour means the same across the "
                "batch) as red, green, blue. Early blocks colour by position, deep blocks by "
                "semantic part."),
            inputs=[
                SpliceDino.Input("dino", tooltip=f"The DINO-ViT from '{names.LOAD_DINO}'."),
                io.Image.Input("images", tooltip="Image(s) to show; a batch shares one PCA."),
                *_descriptor_inputs(-1, False),
            ],
            outputs=[io.Image.Output("pca", display_name="pca",
                                     tooltip="PCA colours at each image's size (one block per token).")],
        )

    @classmethod
    @readable_errors(names.PCA)
    def execute(cls, dino: object, images: Tensor, load_size: int = 224, block: int = -1, facet: str = "key",
                stride: int = 4, bin: bool = False) -> io.NodeOutput:
        handle = check_dino(dino)
        config = _config(handle, load_size, block, facet, stride, bin)
        batch = _images(images, "images", handle)
        device, backbone = _run(handle)
        with rt.memory_guard(device, f"the PCA of {len(batch)} images' descriptors", DESCRIPTOR_FIXES):
            pictures = torch.stack(pca_images(backbone, batch, device, config,
                                              memory_limit=_free_bytes(device, handle, batch, config),
                                              on_image=_progress(len(batch))))
        return io.NodeOutput(rt.image_to_comfy(pictures))


NODES = (SpliceDinoCosegmentation, SpliceDinoPartCosegmentation, SpliceDinoCorrespondences,
         SpliceDinoFeaturesPCA)
