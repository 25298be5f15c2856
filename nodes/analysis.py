"""Visualize Structure (Splice) and Splice Metrics: looking at what the losses measure."""

from __future__ import annotations

import torch
from torch import Tensor

from ..comfy_splice.descriptors import DescriptorConfig, estimate_bytes
from ..comfy_splice.metrics import drift_to_image, splice_scores_with_drift
from ..comfy_splice.visualize import heatmap, self_similarity_pca
from . import comfy_runtime as rt, names
from .api import CATEGORY, advanced, io, ui
from .errors import readable_errors
from .losses import BLOCK_MAX, BLOCK_MIN
from .types import DinoHandle, SpliceDino, check_block, check_dino


ANALYSIS_FIXES = "use fewer images at once, or free memory (close other programs or models)"
DRIFT_SCALE = 0.2
"""Default top of the drift heatmap's fixed scale (structure-distance units; white at and above)."""


def _min_side(dino: DinoHandle) -> int:
    return dino.backbone.patch_size


def _check_fits(dino: DinoHandle, device: torch.device, batches: list[Tensor], what: str) -> None:
    """Refuse before the ViT runs when its passes over these images (each resized to a 224-pixel
    short side, tokens at the model's own stride) would not fit the budget or what is free."""
    sizes = [(int(batch.shape[-2]), int(batch.shape[-1])) for batch in batches for _ in range(batch.shape[0])]
    config = DescriptorConfig(load_size=224, stride=dino.backbone.patch_size)
    rt.check_fits(device, estimate_bytes(dino.backbone, sizes, config), what, ANALYSIS_FIXES)


class SpliceVisualizeStructure(io.ComfyNode):
    """The structure representation as colours: PCA of the DINO keys' self-similarity."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="SpliceVisualizeStructure",
            display_name=names.VISUALIZE,
            category=CATEGORY,
            description=(
                "Shows what Splice's structure loss keeps: the self-similarity of DINO's attention "
                "keys, reduced to three principal components and drawn as colours on the image "
                "grid (the paper's figure 5). Parts the ViT considers alike get alike colours."),
            inputs=[
                SpliceDino.Input("dino", tooltip=f"The DINO-ViT from '{names.LOAD_DINO}'."),
                io.Image.Input("image",
                               tooltip="Image(s) to visualise; each image of a batch separately."),
                advanced(io.Int.Input(
                    "block", default=-1, min=BLOCK_MIN, max=BLOCK_MAX,
                    tooltip="Transformer block whose keys are shown (-1 = last, as the structure loss).")),
            ],
            outputs=[
                io.Image.Output("visualization", display_name="visualization",
                                tooltip="PCA colours of the keys' self-similarity, at the input size."),
            ],
        )

    @classmethod
    @readable_errors(names.VISUALIZE)
    def execute(cls, dino: object, image: Tensor, block: int = -1) -> io.NodeOutput:
        handle = check_dino(dino)
        layer = check_block(handle, block)
        images = rt.image_to_core(image, "image")
        rt.check_min_size(images, _min_side(handle), "The image",
                            f"one {handle.backbone.patch_size}px ViT patch")
        device = rt.torch_device()
        what = f"visualising the structure of {images.shape[0]} image(s)"
        _check_fits(handle, device, [images], what)
        backbone = rt.backbone_for(handle.backbone, device, for_training=False)
        progress = rt.Progress(int(images.shape[0]))
        pictures = []
        with rt.memory_guard(device, what, ANALYSIS_FIXES):
            for index in range(images.shape[0]):
                pictures.append(self_similarity_pca(backbone, images[index:index + 1], device, layer))
                progress.step(index + 1)
        return io.NodeOutput(rt.image_to_comfy(torch.cat(pictures)))


class SpliceMetrics(io.ComfyNode):
    """The field's two numbers for a result: structure distance and DINO-I."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="SpliceMetrics",
            display_name=names.METRICS,
            category=CATEGORY,
            description=(
                "Scores an appearance-transfer result as papers after Splice do: structure "
                "distance (MSE of the DINO keys' self-similarity between output and structure "
                "image; lower keeps the structure better) and DINO-I (cosine similarity of the CLS "
                "tokens of output and appearance image; higher is closer in appearance). Use the "
                "paper's ViT-B/8 to compare with published numbers. Batches are averaged. Also "
                "maps where the structure drifted: the structure distance per location, as a "
                "heatmap on a fixed scale and as a mask."),
            is_output_node=True,
            inputs=[
                SpliceDino.Input("dino", tooltip=f"The DINO-ViT from '{names.LOAD_DINO}' (ViT-B/8 for "
                                                 "numbers comparable with papers)."),
                io.Image.Input("output", tooltip="The result to score (a batch is scored per image and averaged)."),
                io.Image.Input("structure", tooltip=("The structure image (one image, or one per output "
                                                     "image). The output is resized to its size.")),
                io.Image.Input("appearance", tooltip="The appearance image (one image, or one per output image)."),
                advanced(io.Float.Input(
                    "drift_scale", default=DRIFT_SCALE, min=0.005, max=4.0, step=0.005, optional=True,
                    tooltip=("Structure drift shown white in the heatmap (0 is black). A fixed scale: "
                             "the same colour means the same drift in every run, so keep it equal "
                             "when comparing results; raise it if the heatmap is mostly white."))),
            ],
            outputs=[
                io.String.Output("report", display_name="report",
                                 tooltip="The numbers as text (also shown on the node after the run)."),
                io.Float.Output("structure_distance", display_name="structure_distance",
                                tooltip="Mean structure distance over the batch (lower is better)."),
                io.Float.Output("dino_i", display_name="dino_i",
                                tooltip="Mean DINO-I over the batch (higher is better, at most 1)."),
                io.Image.Output("drift_heatmap", display_name="drift_heatmap",
                                tooltip=("Where the structure drifted: each location's share of the "
                                         "structure distance, black 0 to white drift_scale, at the "
                                         "structure image's size (one per output image).")),
                io.Mask.Output("drift_map", display_name="drift_map",
                               tooltip=("The same drift as numbers per pixel (structure-distance "
                                        "units; it averages to the structure distance), e.g. to "
                                        "threshold into a mask of where the layout changed.")),
            ],
        )

    @classmethod
    @readable_errors(names.METRICS)
    def execute(cls, dino: object, output: Tensor, structure: Tensor,
                appearance: Tensor, drift_scale: float = DRIFT_SCALE) -> io.NodeOutput:
        handle = check_dino(dino)
        if not drift_scale > 0:
            raise ValueError(f"drift_scale must be above 0, got {drift_scale}: it is the drift "
                             f"shown white (default {DRIFT_SCALE}).")
        out = rt.image_to_core(output, "output")
        ref_s = rt.image_to_core(structure, "structure")
        ref_a = rt.image_to_core(appearance, "appearance")
        n = int(out.shape[0])
        for name, batch in (("structure", ref_s), ("appearance", ref_a)):
            if int(batch.shape[0]) not in (1, n):
                raise ValueError(f"The {name} batch has {batch.shape[0]} images and the output "
                                 f"{n}: give one {name} image, or one per output image.")
        why = f"one {handle.backbone.patch_size}px ViT patch"
        for name, batch in (("The output image", out), ("The structure image", ref_s),
                            ("The appearance image", ref_a)):
            rt.check_min_size(batch, _min_side(handle), name, why)
        device = rt.torch_device()
        what = f"scoring {n} image(s)"
        _check_fits(handle, device, [out, ref_s, ref_a], what)
        backbone = rt.backbone_for(handle.backbone, device, for_training=False)
        with rt.memory_guard(device, what, ANALYSIS_FIXES):
            distances, similarities, drift = splice_scores_with_drift(backbone, out, ref_s, ref_a, device)
        drift_map = drift_to_image(drift, handle.backbone, int(ref_s.shape[-2]), int(ref_s.shape[-1]))
        mean_distance, mean_similarity = float(distances.mean()), float(similarities.mean())
        lines = [f"structure distance: {mean_distance:.5f} (lower keeps the structure better)",
                 f"DINO-I: {mean_similarity:.4f} (higher is closer to the appearance)",
                 f"structure drift: peak {float(drift.max()):.5f}, heatmap 0 (black) to "
                 f"{drift_scale:g} (white)",
                 f"DINO-ViT: {handle.label}"]
        if n > 1:
            lines.append(f"mean over {n} images; per image:")
            lines += [f"  {i}: structure distance {d:.5f}, DINO-I {s:.4f}"
                      for i, (d, s) in enumerate(zip(distances.tolist(), similarities.tolist()))]
        report = "\n".join(lines)
        # One image at a time: the colour ramp's temporaries stay at one image's size for videos.
        colours = torch.cat([rt.image_to_comfy(heatmap(drift_map[i:i + 1], drift_scale))
                             for i in range(drift_map.shape[0])])
        return io.NodeOutput(report, mean_distance, mean_similarity, colours, drift_map.float().cpu(),
                             ui=ui.PreviewText(report))
