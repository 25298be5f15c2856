"""Splice Output: apply a trained generator to images (any size, any batch, e.g. video frames)."""

from __future__ import annotations

import logging

import torch
from torch import Tensor

from ..comfy_splice.apply import run_apply
from ..comfy_splice.budget import plan_output
from ..comfy_splice.regions import composite_into, region_masks

from . import comfy_runtime as rt, names
from .api import CATEGORY, SearchAliases, io, schema
from .errors import readable_errors
from .regions import FEATHER_LIMIT_TIP, fitted_feather, mask_input
from .types import SpliceGenerator, check_generator

log = logging.getLogger(__name__)


class SpliceApply(SearchAliases, io.ComfyNode):
    """G(images) at the input resolution; per-image normalisation makes batching exact."""

    SEARCH_ALIASES = ("style transfer", "restyle", "appearance transfer", "apply generator", "splice")

    @classmethod
    def define_schema(cls) -> io.Schema:
        return schema(
            search_aliases=cls.SEARCH_ALIASES,
            node_id="SpliceApply",
            display_name=names.APPLY,
            category=CATEGORY,
            description=(
                "Applies a trained Splice generator to images and returns them at their own "
                "resolution. Works on any size and on batches such as video frames; every image is "
                "normalised on its own, so the result does not depend on the batch. Best on "
                "images like the structure image it was trained on. Long clips are streamed: the "
                "device holds one batch at a time, the output is assembled on the CPU, and the "
                "node shows its progress. An image too large for the device's free memory is "
                "run layer by layer in bands of rows (the layers in between kept in RAM), with "
                "the same result. With a mask, only the masked region changes (feathered edge) "
                "and the rest of each image is the input exactly."),
            inputs=[
                SpliceGenerator.Input(
                    "generator",
                    tooltip=f"From '{names.TRAIN}' or '{names.LOAD_GENERATOR}'."),
                io.Image.Input(
                    "images",
                    tooltip="Images to translate (any size; a batch, e.g. video frames, is fine)."),
                io.Int.Input(
                    "batch_size", default=4, min=1, max=256,
                    tooltip=("Images processed at once. Only speed and memory change: results are "
                             "identical for every value. Lower it if you run out of memory on "
                             "large images.")),
                io.Mask.Input(
                    "mask", optional=True,
                    tooltip=("Optional: change only this region (e.g. the object mask of the image "
                             f"from '{names.COSEGMENT}'). The output is the generator's "
                             "result inside the mask, feathered, and the input image exactly "
                             "outside, at full resolution. One mask for all images, or one per "
                             "image, at the images' size.")),
                io.Int.Input(
                    "feather", default=8, min=0, max=256, optional=True,
                    tooltip=("With a mask: soften its edge over about this many pixels (Gaussian, "
                             "0 = hard edge), so the changed region has no seam. " + FEATHER_LIMIT_TIP)),
            ],
            outputs=[
                io.Image.Output("image", display_name="image",
                                tooltip="The translated images, same size and count as the input."),
            ],
        )

    @classmethod
    @readable_errors(names.APPLY)
    def execute(cls, generator: object, images: Tensor, batch_size: int = 4, mask: object = None,
                feather: float = 8) -> io.NodeOutput:
        trained = check_generator(generator)
        batch = rt.image_to_core(images, "images")  # a view of the input, no copy
        # Checked before the generator runs: a wrong-size or empty mask fails at once.
        masks = None if mask is None else region_masks(batch, mask_input(mask, "mask"), "mask")
        if masks is not None:
            feather = fitted_feather(masks, feather)
        device = rt.torch_device()
        frames, _, height, width = batch.shape
        # never more than there are frames: one photo with batch_size 4 plans (and, on a GPU,
        # frees memory) for one image, not four
        requested = max(1, min(int(batch_size), int(frames)))
        plan = plan_output(rt.device_memory(device), int(height), int(width), requested, names.APPLY)
        progress = rt.Progress(int(frames))
        # The output is assembled in place, in ComfyUI's layout on the CPU: a long clip (1000
        # frames of 1080p are 25 GB) is held once, and the device holds only the current chunk.
        result = torch.empty((frames, height, width, 3), dtype=torch.float32)
        what = f"applying the generator to {frames} image(s) of {width}x{height} {plan.describe()}"
        with rt.memory_guard(device, what, "lower batch_size, or use smaller images"):
            run_apply(trained.generator, batch, device, plan, out=result.permute(0, 3, 1, 2),
                      on_images=progress.step, between_passes=rt.between_passes(device))
        result.clamp_(0.0, 1.0)
        if masks is not None:  # in place, chunk by chunk: no second copy of a long clip
            composite_into(result.permute(0, 3, 1, 2), batch, masks, float(feather), plan.chunk)
        return io.NodeOutput(result)
