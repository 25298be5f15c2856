"""Train Generator (Splice): optimise a U-Net on one structure/appearance pair.

Training runs inside a node, i.e. inside ComfyUI's ``torch.inference_mode()``: it is switched
off for the run, and the images and the DINO-ViT are cloned so autograd can save them (see
``nodes.host``). Progress and a live preview of G(structure) go to the node; Cancel
(``/interrupt``) is checked after every step.
"""

from __future__ import annotations

import logging

from torch import Tensor

from ..comfy_splice.losses import AppearanceLoss, IdentityLoss, StructureLoss
from ..comfy_splice.train import (MIN_IMAGE_SIDE, TrainConfig, TrainedGenerator, TrainingDiverged,
                                  train_generator)
from . import host
from .api import io
from .generators import run_generator
from .types import LossMap, LossSpec, SpliceGenerator, SpliceLoss

log = logging.getLogger(__name__)

CATEGORY = "image/splice"
DTYPES = ["auto", "bf16", "fp32"]
MAX_STEPS = 100_000
LOG_EVERY_MAX = 25
LOG_POINTS_MIN = 50


def _check_losses(structure_loss: object, appearance_loss: object) -> tuple[LossSpec, LossSpec]:
    """Both loss inputs come from the right nodes and read the same DINO-ViT."""
    for name, value, kind in (("structure_loss", structure_loss, "structure"),
                              ("appearance_loss", appearance_loss, "appearance")):
        wanted = "Structure Loss (Splice)" if kind == "structure" else "Appearance Loss (Splice)"
        if not isinstance(value, LossSpec):
            raise ValueError(f"{name}: connect the output of '{wanted}'.")
        if value.kind != kind:
            raise ValueError(f"{name} is connected to '{value.node_name}'; connect '{wanted}' there.")
    assert isinstance(structure_loss, LossSpec) and isinstance(appearance_loss, LossSpec)
    s_dino, a_dino = structure_loss.dino, appearance_loss.dino
    if s_dino is not a_dino and s_dino.path != a_dino.path:
        raise ValueError(
            f"The structure loss uses {s_dino.label} and the appearance loss {a_dino.label}; Splice "
            f"trains against one DINO-ViT. Connect both loss nodes to the same 'Load DINO-ViT "
            f"(Splice)' node.")
    return structure_loss, appearance_loss


def _check_pair(structure: Tensor, appearance: Tensor) -> None:
    """One structure image and one appearance image (the method trains on a single pair)."""
    n_s, n_a = int(structure.shape[0]), int(appearance.shape[0])
    fix = ("Train Generator learns one generator from one structure image and one appearance "
           "image: pick one image of each batch (e.g. with 'ImageFromBatch'), then apply the "
           "trained generator to any number of images or video frames with 'Splice Output'.")
    if n_s != n_a:
        raise ValueError(f"The structure batch has {n_s} image(s) and the appearance batch "
                         f"{n_a}. {fix}")
    if n_s != 1:
        raise ValueError(f"Got batches of {n_s} structure and appearance images. {fix}")


def _log_every(steps: int) -> int:
    """Loss-history spacing: the core's default (25), but at least ~50 points for short runs."""
    return max(1, min(LOG_EVERY_MAX, steps // LOG_POINTS_MIN))


def _loss_map(trained: TrainedGenerator) -> dict[str, list[float]]:
    """ComfyUI's LOSS_MAP: ``{"loss": [total per logged step], <term>: [...], ...}``."""
    history = {name: [float(v) for v in values] for name, values in trained.history.items()
               if values}
    history.setdefault("loss", [])
    return history


class SpliceTrainGenerator(io.ComfyNode):
    """Trains Splice's generator; outputs it, its loss history and G(structure)."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="SpliceTrainGenerator",
            display_name="Train Generator (Splice)",
            category=CATEGORY,
            description=(
                "Trains a small U-Net so that its output keeps the structure image's layout (DINO "
                "key self-similarity) and takes the appearance image's look (DINO CLS token), as "
                "in 'Splicing ViT Features for Semantic Appearance Transfer' (CVPR 2022). One "
                "generator per structure/appearance pair; the paper's 2000 steps take ~10 s on a "
                "recent GPU and much longer on a CPU. Cancel stops it within one step."),
            inputs=[
                io.Image.Input(
                    "structure",
                    tooltip=("The structure image (one image, any size, at least 32x32): its "
                             "layout and objects are kept. A batch is refused: train on one pair, "
                             "then use 'Splice Output' for many frames.")),
                io.Image.Input(
                    "appearance",
                    tooltip=("The appearance image (one image, any size, at least 32x32): its "
                             "colours, textures and style are transferred.")),
                SpliceLoss.Input("structure_loss",
                                 tooltip="From 'Structure Loss (Splice)': weight and block of the structure term."),
                SpliceLoss.Input("appearance_loss",
                                 tooltip="From 'Appearance Loss (Splice)': weight and block of the appearance term. "
                                         "Both losses must use the same DINO-ViT."),
                io.Int.Input(
                    "steps", default=2000, min=1, max=MAX_STEPS,
                    tooltip="Optimisation steps (paper: 2000; the reference code's config: 10000)."),
                io.Float.Input(
                    "learning_rate", default=0.002, min=0.00001, max=1.0, step=0.0001,
                    tooltip="Adam learning rate, constant (paper: 0.002, betas 0 and 0.99)."),
                io.Int.Input(
                    "seed", default=0, min=0, max=0xFFFFFFFFFFFFFFFF, control_after_generate=True,
                    tooltip=("Seed of the generator's initial weights and of the augmentations. "
                             "Its 'control after generate' starts at 'fixed' (the pack's web "
                             "extension sets it), so queueing the same graph again reuses the "
                             "trained generator instead of training again.")),
                io.Float.Input(
                    "identity_weight", default=1.0, min=0.0, max=1000.0, step=0.01,
                    tooltip=("Weight of the identity term (paper: 1): the generator applied to the "
                             "appearance image must keep its DINO keys (read from the structure "
                             "loss's block). 0 disables it.")),
                io.Int.Input(
                    "full_image_every", default=75, min=0, max=MAX_STEPS,
                    tooltip=("Every this many steps (and at step 0) the generator also runs on the "
                             "whole structure image for two extra loss terms (reference: 75). "
                             "0 turns this off.")),
                io.Int.Input(
                    "preview_every", default=50, min=0, max=MAX_STEPS,
                    tooltip=("Show the current output on this node every this many steps (and at "
                             "the end). Each preview costs one generator pass; 0 turns previews off.")),
                io.Combo.Input(
                    "dtype", options=DTYPES, default="auto",
                    tooltip=("Precision of the DINO-ViT forward: auto = bf16 on CUDA GPUs, fp32 "
                             "elsewhere; fp32 is exact and slower. The generator is always fp32.")),
            ],
            outputs=[
                SpliceGenerator.Output(
                    "generator", display_name="generator",
                    tooltip="The trained generator, for 'Splice Output' and 'Save Splice Generator'."),
                LossMap.Output(
                    "loss_history", display_name="loss_history",
                    tooltip=("Loss per logged step ({'loss': [...]} plus each term); plot it with "
                             "core's 'Plot Loss Graph' node (needs at least 2 steps).")),
                io.Image.Output(
                    "result", display_name="result",
                    tooltip="The trained generator applied to the whole structure image."),
            ],
        )

    @classmethod
    def execute(cls, structure: Tensor, appearance: Tensor, structure_loss: LossSpec,
                appearance_loss: LossSpec, steps: int = 2000, learning_rate: float = 0.002,
                seed: int = 0, identity_weight: float = 1.0, full_image_every: int = 75,
                preview_every: int = 50, dtype: str = "auto") -> io.NodeOutput:
        s_loss, a_loss = _check_losses(structure_loss, appearance_loss)
        dino = s_loss.dino
        a = host.image_to_core(structure, "structure")
        b = host.image_to_core(appearance, "appearance")
        _check_pair(a, b)
        min_side = max(MIN_IMAGE_SIDE, dino.backbone.patch_size)
        why = "Splice's generator and DINO's patches need this much"
        host.check_min_size(a, min_side, "The structure image", why)
        host.check_min_size(b, min_side, "The appearance image", why)
        if steps < 1:
            raise ValueError(f"steps is {steps}; it must be at least 1.")
        if dtype not in DTYPES:
            raise ValueError(f"dtype {dtype!r} is not one of {', '.join(DTYPES)}.")

        config = TrainConfig(
            steps=int(steps), lr=float(learning_rate),
            structure=StructureLoss(weight=s_loss.weight, layer=s_loss.block),
            appearance=AppearanceLoss(weight=a_loss.weight, layer=a_loss.block),
            identity=IdentityLoss(weight=float(identity_weight), layer=s_loss.block),
            full_image_every=int(full_image_every), seed=int(seed), dtype=dtype,
            preview_every=int(preview_every), log_every=_log_every(int(steps)))

        device = host.torch_device()
        host.free_memory_for(dino.backbone, [a, b], device)
        progress = host.Progress(config.steps)
        log.info("Splice: training %d steps on %s with %s (structure %dx%d, appearance %dx%d)",
                 config.steps, device, dino.label, a.shape[-1], a.shape[-2], b.shape[-1], b.shape[-2])
        backbone = None
        try:
            with host.training_mode():
                backbone = host.backbone_for(dino.backbone, device, for_training=True)
                trained = train_generator(
                    backbone, host.image_to_core(structure, "structure", clone=True),
                    host.image_to_core(appearance, "appearance", clone=True), config, device,
                    on_step=progress.step, on_preview=progress.preview,
                    on_log=progress.log)
                backbone = None
            final = progress.last_preview
            if final is not None and final[0] == config.steps:
                result = final[1]  # the core previews G(structure) after the last step
            else:
                result = run_generator(trained.generator, a, device, batch_size=1)
        except TrainingDiverged as exc:
            host.release_frames(exc)
            raise RuntimeError(f"Training diverged: {exc}") from None
        except BaseException as exc:  # interrupt, OOM, ...: free the run's tensors, then re-raise
            host.release_frames(exc)
            raise
        finally:
            backbone = None
            host.soft_empty_cache()
        return io.NodeOutput(trained, _loss_map(trained), host.image_to_comfy(result))
