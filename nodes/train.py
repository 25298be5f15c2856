"""Train Generator (Splice): optimise a U-Net on one structure/appearance pair (or a shot's keyframes).

Training runs inside a node, i.e. inside ComfyUI's ``torch.inference_mode()``: it is switched
off for the run, and the images and the DINO-ViT are cloned so autograd can save them (see
``nodes.comfy_runtime``). Progress and a live preview of G(structure) go to the node; Cancel
(``/interrupt``) is checked after every step and returns nothing, while Stop and keep (the
node's button, ``nodes.stop``) or the ``max_minutes`` budget end the run early and return the
generator trained so far. ``init_generator`` resumes a run exactly or fine-tunes from its
weights; ``autosave_every`` writes resumable checkpoints into the folder Load Splice Generator
lists (``nodes.autosave``), and with it on a run first continues the newest autosave of the same
images and settings (a result ComfyUI dropped from its cache is found again, not retrained).
``appearance_mask`` replaces the appearance image by its crop to the mask's bounding box before
anything else sees it (region-aware Splice, ``comfy_splice.regions``).
"""

from __future__ import annotations

import logging
import os
from functools import partial

from torch import Tensor

from ..comfy_splice.apply import run_apply
from ..comfy_splice.budget import plan_training
from ..comfy_splice.losses import AppearanceLoss, IdentityLoss, StructureLoss
from ..comfy_splice.memory import vit_shape
from ..comfy_splice.regions import crop_to_mask
from ..comfy_splice.run import DTYPES, MIN_IMAGE_SIDE, TrainConfig, TrainedGenerator, check_dtype, check_steps
from ..comfy_splice.train import train_generator
from . import comfy_runtime as rt, names, stop
from .api import CATEGORY, SearchAliases, advanced, io, schema, ui
from .autosave import SUBFOLDER, Autosaver
from .errors import check_choice, check_finite, readable_errors
from .regions import mask_input
from .types import LossMap, LossSpec, SpliceGenerator, SpliceLoss, check_generator

log = logging.getLogger(__name__)

MAX_STEPS = 100_000
LOG_EVERY_MAX = 25
LOG_POINTS_MIN = 50
TRAIN_OOM_FIXES = ("use smaller images (scale them down before training; a few hundred pixels "
                   "per side is what Splice is made for), use ViT-S/8 instead of ViT-B/8 in Load "
                   "DINO-ViT, or set dtype to auto/bf16 on a GPU")


def _check_losses(structure_loss: object, appearance_loss: object) -> tuple[LossSpec, LossSpec]:
    """Both loss inputs come from the right nodes and read the same DINO-ViT."""
    for name, value, kind in (("structure_loss", structure_loss, "structure"),
                              ("appearance_loss", appearance_loss, "appearance")):
        wanted = names.STRUCTURE_LOSS if kind == "structure" else names.APPEARANCE_LOSS
        if not isinstance(value, LossSpec):
            raise ValueError(f"{name}: connect the output of '{wanted}'.")
        if value.kind != kind:
            raise ValueError(f"{name} is connected to '{value.node_name}'; connect '{wanted}' there.")
    assert isinstance(structure_loss, LossSpec) and isinstance(appearance_loss, LossSpec)
    s_dino, a_dino = structure_loss.dino, appearance_loss.dino
    if s_dino is not a_dino and s_dino.path != a_dino.path:
        raise ValueError(
            f"The structure loss uses {s_dino.label} and the appearance loss {a_dino.label}; Splice "
            f"trains against one DINO-ViT. Connect both loss nodes to the same "
            f"'{names.LOAD_DINO}' node.")
    return structure_loss, appearance_loss


def _check_pair(structure: Tensor, appearance: Tensor) -> None:
    """Structure keyframes (a batch of one size) and exactly one appearance image."""
    n_a = int(appearance.shape[0])
    if n_a != 1:
        raise ValueError(
            f"The appearance input is a batch of {n_a} images; Train Generator takes one appearance "
            f"image (its look is transferred). Pick one with 'ImageFromBatch' (batch_index, length 1), "
            f"or train one generator per appearance image. Several structure images are fine: they "
            f"are trained on as keyframes of one shot.")


def _log_every(steps: int) -> int:
    """Loss-history spacing: the core's default (25), but at least ~50 points for short runs."""
    return max(1, min(LOG_EVERY_MAX, steps // LOG_POINTS_MIN))


def _report_resume(resumed: tuple[str, int], steps_done: int, progress: rt.Progress) -> None:
    """Say on the node that the run continued an autosave (and trained nothing if it was done)."""
    path, step = resumed
    name = f"{SUBFOLDER}/{os.path.basename(path)}"
    if steps_done == step:
        progress.step(steps_done)  # a full bar: nothing was left to train
        rt.show_text(f"Found this run complete in {name} ({step} steps): nothing to train.")
    else:
        rt.show_text(f"Continued {name} from step {step}; now {steps_done} steps.")


def _loss_map(trained: TrainedGenerator) -> dict[str, list[float]]:
    """ComfyUI's LOSS_MAP: ``{"loss": [total per logged step], <term>: [...], ...}``."""
    history = {name: [float(v) for v in values] for name, values in trained.history.items()
               if values}
    history.setdefault("loss", [])
    return history


def result_summary(trained: TrainedGenerator, steps: int) -> str:
    """What stays on the node after the run (its ``ui`` text): steps done and the last losses.

    The live loss is progress text, which newer frontends clear when the run ends."""
    done = int(trained.steps_done)
    head = f"{done}/{steps} steps done" + ("" if done >= steps else " (stopped early, generator kept)")
    last = {name: values[-1] for name, values in trained.history.items() if values}
    if "loss" not in last:
        return head
    terms = ", ".join(f"{name} {float(last[name]):.4g}" for name in ("structure", "appearance", "identity")
                      if name in last)
    return f"{head}; last loss {float(last['loss']):.4g}" + (f" ({terms})" if terms else "")


class SpliceTrainGenerator(SearchAliases, io.ComfyNode):
    """Trains Splice's generator; outputs it, its loss history and G(structure)."""

    SEARCH_ALIASES = ("style transfer", "restyle", "appearance transfer", "splice", "train")

    @classmethod
    def define_schema(cls) -> io.Schema:
        return schema(
            search_aliases=cls.SEARCH_ALIASES,
            node_id="SpliceTrainGenerator",
            display_name=names.TRAIN,
            category=CATEGORY,
            description=(
                "Trains a small U-Net so that its output keeps the structure image's layout (DINO "
                "key self-similarity) and takes the appearance image's look (DINO CLS token), as "
                "in 'Splicing ViT Features for Semantic Appearance Transfer' (CVPR 2022). One "
                "generator per structure/appearance pair, or per shot: a batch of structure "
                "keyframes is used in turn, one per step, at the cost of a single pair. The "
                "paper's 2000 steps take hours on a CPU (one ViT-B/8 step of a 512 px pair: 13.7 s "
                "measured on one CPU thread; GPU times are not measured yet: see the help page). Cancel "
                "stops it within one step and returns nothing; the 'Stop and keep' button (or "
                "max_minutes) ends it early and returns the generator trained so far."),
            inputs=[
                io.Image.Input(
                    "structure",
                    tooltip=("The structure image (any size, at least 32x32): its layout and objects "
                             "are kept. A batch of images of one size (e.g. keyframes of a video from "
                             f"'{names.KEYFRAMES}') trains one generator for the whole shot: "
                             "each step uses one keyframe, in turn.")),
                io.Image.Input(
                    "appearance",
                    tooltip=("The appearance image (one image, any size, at least 32x32): its "
                             "colours, textures and style are transferred.")),
                SpliceLoss.Input("structure_loss",
                                 tooltip=f"From '{names.STRUCTURE_LOSS}': weight and block of the structure term."),
                SpliceLoss.Input("appearance_loss",
                                 tooltip=f"From '{names.APPEARANCE_LOSS}': weight and block of the appearance term. "
                                         "Both losses must use the same DINO-ViT."),
                io.Int.Input(
                    "steps", default=2000, min=1, max=MAX_STEPS,
                    tooltip="Optimisation steps (paper: 2000; the reference code's config: 10000)."),
                advanced(io.Float.Input(
                    "learning_rate", default=0.002, min=0.00001, max=1.0, step=0.0001,
                    tooltip="Adam learning rate, constant (paper: 0.002, betas 0 and 0.99).")),
                io.Int.Input(
                    "seed", default=0, min=0, max=0xFFFFFFFFFFFFFFFF, control_after_generate=True,
                    tooltip=("Seed of the generator's initial weights and of the augmentations. "
                             "Its 'control after generate' is kept at 'fixed' (the pack's web "
                             "extension sets it), so queueing the same graph again reuses the "
                             "trained generator instead of training again.")),
                advanced(io.Float.Input(
                    "identity_weight", default=1.0, min=0.0, max=1000.0, step=0.01,
                    tooltip=("Weight of the identity term (paper: 1): the generator applied to the "
                             "appearance image must keep its DINO keys (read from the structure "
                             "loss's block). 0 disables it."))),
                advanced(io.Int.Input(
                    "full_image_every", default=75, min=0, max=MAX_STEPS,
                    tooltip=("Every this many steps (and at step 0) the generator also runs on the "
                             "whole structure image for two extra loss terms (reference: 75). "
                             "0 turns this off."))),
                advanced(io.Int.Input(
                    "preview_every", default=50, min=0, max=MAX_STEPS,
                    tooltip=("Show the current output on this node every this many steps (and at "
                             "the end). Each preview costs one generator pass; 0 turns previews off."))),
                advanced(io.Combo.Input(
                    "dtype", options=list(DTYPES), default="auto",
                    tooltip=("Precision of the DINO-ViT forward: auto = bf16 on CUDA GPUs, fp32 "
                             "elsewhere; fp32 is exact and slower. The generator is always fp32."))),
                SpliceGenerator.Input(
                    "init_generator", optional=True,
                    tooltip=("Optional: a generator to start from. Saved from a run on the same "
                             "images with the same settings (an autosave, or Save Splice "
                             "Generator), training continues exactly where it stopped, up to "
                             "'steps' in total. Otherwise it fine-tunes from those weights with "
                             "a fresh optimiser, e.g. for the next shot of a video.")),
                io.Float.Input(
                    "max_minutes", default=0.0, min=0.0, max=10_000.0, step=0.5, optional=True,
                    tooltip=("Time budget: after this many minutes training ends early and the "
                             "generator trained so far is returned (like the node's 'Stop and "
                             "keep' button). 0 = no limit.")),
                io.Int.Input(
                    "autosave_every", default=0, min=0, max=MAX_STEPS, optional=True,
                    tooltip=("Every this many steps (and at the end) write a resumable "
                             "checkpoint into models/splice_generators/autosave/, one file per "
                             "run, so a crash, an out-of-memory error or a Cancel loses at most "
                             f"this many steps: load it with '{names.LOAD_GENERATOR}' and connect "
                             "it to init_generator. While it is on, queueing the same run again "
                             "continues its newest autosave (a complete one returns at once), so "
                             "a result ComfyUI dropped from its cache is not trained again. "
                             "0 = off.")),
                io.Float.Input(
                    "max_megapixels", default=0.0, min=0.0, max=1000.0, step=0.1, optional=True,
                    tooltip=("Train on the images scaled down to at most this many million pixels "
                             "(0 = full resolution, as the paper). The result is still made at the "
                             "structure image's full size. Use it for large photos: memory grows "
                             "with the pixel count, and the node says which value fits when the "
                             "full size does not. Optional, so API prompts saved before it existed "
                             "still run.")),
                io.Mask.Input(
                    "appearance_mask", optional=True,
                    tooltip=("Optional: take the look from this region of the appearance image only "
                             f"(e.g. 'more_masks' of '{names.COSEGMENT}'). The appearance "
                             "image is cropped to the mask's bounding box plus 5% per side, and the "
                             "crop replaces it everywhere in training (appearance target and identity "
                             "term). Cropped, not blanked: DINO's CLS token describes the whole crop, "
                             "so blanked pixels would become part of the look. Same size as the "
                             "appearance image; an empty mask is refused.")),
            ],
            outputs=[
                SpliceGenerator.Output(
                    "generator", display_name="generator",
                    tooltip=f"The trained generator, for '{names.APPLY}' and '{names.SAVE_GENERATOR}'."),
                LossMap.Output(
                    "loss_history", display_name="loss_history",
                    tooltip=("Loss per logged step ({'loss': [...]} plus each term); plot it with "
                             "core's 'Plot Loss Graph' node (needs at least 2 steps).")),
                io.Image.Output(
                    "result", display_name="result",
                    tooltip="The trained generator applied to the whole structure image (each keyframe)."),
            ],
            hidden=[io.Hidden.unique_id, io.Hidden.prompt, io.Hidden.extra_pnginfo],
        )

    @classmethod
    @readable_errors(names.TRAIN)
    def execute(cls, structure: Tensor, appearance: Tensor, structure_loss: LossSpec,
                appearance_loss: LossSpec, steps: int = 2000, learning_rate: float = 0.002,
                seed: int = 0, identity_weight: float = 1.0, full_image_every: int = 75,
                preview_every: int = 50, dtype: str = "auto", init_generator: object = None,
                max_minutes: float = 0.0, autosave_every: int = 0,
                max_megapixels: float | None = 0.0,
                appearance_mask: object = None) -> io.NodeOutput:
        s_loss, a_loss = _check_losses(structure_loss, appearance_loss)
        dino = s_loss.dino
        # an ordinary (non-inference) copy: training backpropagates into it
        a = rt.image_to_core(structure, "structure", clone=True)
        b = rt.image_to_core(appearance, "appearance")
        _check_pair(a, b)
        if appearance_mask is not None:
            # The crop IS the appearance image from here on: training targets, the identity term,
            # the memory check and the pair fingerprint a resume compares all see the crop.
            b = crop_to_mask(b, mask_input(appearance_mask, "appearance_mask"), what="appearance_mask")
        min_side = max(MIN_IMAGE_SIDE, dino.backbone.patch_size)
        why = "Splice's generator and DINO's patches need this much"
        rt.check_min_size(a, min_side, "The structure image", why)
        if appearance_mask is not None and min(b.shape[-2:]) < min_side:
            raise ValueError(
                f"appearance_mask: the appearance image cropped to the mask is {b.shape[-1]}x"
                f"{b.shape[-2]} pixels; the minimum is {min_side}x{min_side} ({why}). Use a mask "
                f"with a larger region, or upscale the appearance image and its mask first.")
        rt.check_min_size(b, min_side, "The appearance image", why)
        check_steps(steps)
        check_finite(learning_rate, "learning_rate")
        check_finite(identity_weight, "identity_weight")
        check_dtype(check_choice(dtype, "dtype"))
        init = None if init_generator is None else check_generator(init_generator, "init_generator")
        if max_minutes < 0 or autosave_every < 0:
            raise ValueError("max_minutes and autosave_every must be 0 (off) or positive.")
        if max_megapixels is None:
            max_megapixels = 0.0
        if not isinstance(max_megapixels, (int, float)) or not 0 <= max_megapixels <= 1e6:
            raise ValueError(f"max_megapixels is {max_megapixels!r}; use 0 (full resolution) or a "
                             f"positive number of million pixels such as 2.")

        config = TrainConfig(
            steps=int(steps), lr=float(learning_rate),
            structure=StructureLoss(weight=s_loss.weight, layer=s_loss.block),
            appearance=AppearanceLoss(weight=a_loss.weight, layer=a_loss.block),
            identity=IdentityLoss(weight=float(identity_weight), layer=s_loss.block),
            full_image_every=int(full_image_every), seed=int(seed), dtype=dtype,
            preview_every=int(preview_every), log_every=_log_every(int(steps)),
            max_megapixels=float(max_megapixels))

        device = rt.torch_device()
        full_hw = (int(a.shape[-2]), int(a.shape[-1]))
        plan = plan_training(full_hw, (int(b.shape[-2]), int(b.shape[-1])), int(a.shape[0]),
                             vit_shape(dino.backbone), config, rt.device_memory(device), names.TRAIN)
        progress = rt.Progress(config.steps)
        log.info("Splice: training %d steps on %s with %s (structure %d x %dx%d, appearance %dx%d)",
                 config.steps, device, dino.label, a.shape[0], a.shape[-1], a.shape[-2], b.shape[-1],
                 b.shape[-2])
        hidden = cls.hidden
        autosave = Autosaver(int(autosave_every), hidden.prompt, hidden.extra_pnginfo)
        run_id = stop.current_run(hidden.unique_id)
        what = (f"training on a {a.shape[-1]}x{a.shape[-2]} structure and a {b.shape[-1]}x"
                f"{b.shape[-2]} appearance image with {dino.label}")
        with rt.memory_guard(device, what, TRAIN_OOM_FIXES):
            with rt.training_mode(), stop.training_run(*run_id) as stop_event:
                trained = train_generator(
                    rt.backbone_for(dino.backbone, device, for_training=True),
                    a, rt.trainable(b), config, device,
                    on_step=progress.step, on_preview=progress.preview, init=init,
                    should_finish=stop_event.is_set,
                    max_seconds=60.0 * float(max_minutes) if max_minutes > 0 else None,
                    checkpoint_every=autosave.every, on_checkpoint=autosave.save,
                    on_log=progress.log,
                    find_init=None if init is not None else partial(autosave.find_resumable, config),
                    backward_mode=plan.backward_mode)
            autosave.save(trained)
            if autosave.resumed is not None:
                _report_resume(autosave.resumed, trained.steps_done, progress)
            if trained.steps_done < config.steps:
                progress.finish(trained.steps_done)
                log.info("Splice: kept the generator after %d of %d steps", trained.steps_done,
                         config.steps)
            final = progress.last_preview
            if (final is not None and final[0] == trained.steps_done and a.shape[0] == 1
                    and plan.structure_size == full_hw):
                result = final[1]  # the core previews G(structure) after the last step
            else:
                result = run_apply(trained.generator, a, device, plan.result,
                                   between_passes=rt.between_passes(device))
        return io.NodeOutput(trained, _loss_map(trained), rt.image_to_comfy(result),
                             ui=ui.PreviewText(result_summary(trained, config.steps)))
