"""Training a Splice generator on one structure/appearance pair.

Per regular step the ViT runs twice, each time on a batch of two: once without gradients for
the targets (A', B') and once with gradients for the generated pair (x = G(A'), y = G(B')).
CLS tokens, keys and self-similarities all come from those two forwards. Every
``full_image_every`` steps one more forward with gradients scores G(A) on the whole structure
image; its target self-similarity of A never changes and is computed once. Losses stay on the
device and are copied to the host every ``log_every`` steps, so a step never waits for the GPU.

Keyframes (one generator per shot): the structure input may be a batch of K images of one size,
e.g. every Nth frame of a clip. Step ``s`` augments keyframe ``s % K`` and the full-image step
``s`` (every ``full_image_every``-th) scores keyframe ``(s // full_image_every) % K``, so every
keyframe is used equally often, in a fixed order that needs no random numbers (a single keyframe
draws exactly the numbers it always did, and a resumed run needs only the step index). Each
keyframe's full-image target is computed once. A step costs what a single pair costs; memory grows
by the keyframes themselves and one cached target per keyframe.
"""

from __future__ import annotations

import copy
import hashlib
import logging
import math
import time
from contextlib import nullcontext
from typing import Any, Callable, ContextManager, Sequence, cast

import torch
import torch.nn.functional as F
from torch import Tensor

from .augment import PairAugmenter
from .dino.vit import DinoBackbone, Features, splice_input
from .generator import BACKWARD_MODES, LEAN, build_generator
from .losses import self_similarity_mse, zero_like
from .refusal import SpliceRefusal
from .run import (LOSS_TERMS, MIN_IMAGE_SIDE, TrainConfig, TrainedGenerator, TrainState,
                  resume_mismatches, training_size)

log = logging.getLogger(__name__)

class TrainingInterrupted(Exception):
    """The caller's stop check asked training to end."""


class TrainingDiverged(SpliceRefusal):
    """A loss became NaN or infinite; the generator would be garbage (the message names the fix)."""


def pair_fingerprint(structure: Tensor, appearance: Tensor) -> str:
    """An id of the training images: sha256 of their sizes and 8-bit pixel values.

    Quantising to 8 bits makes the same image files give the same id whatever float path
    loaded them (CPU or GPU); images that differ by less than one 8-bit level count as equal,
    which is harmless for resuming.
    """
    digest = hashlib.sha256()
    for image in (structure, appearance):
        pixels = (image.detach().float().clamp(0.0, 1.0) * 255.0).round().to(torch.uint8)
        pixels = pixels.cpu().contiguous()
        digest.update(repr(tuple(pixels.shape)).encode())
        digest.update(pixels.numpy().tobytes())
    return digest.hexdigest()


def resume_blockers(init: TrainedGenerator, config: TrainConfig, pair_id: str,
                    backbone_name: str) -> list[str]:
    """Why ``init`` cannot be continued exactly by a run of ``config`` on ``pair_id`` (empty: it can)."""
    if init.state is None:
        return ["it carries no training state"]
    return resume_mismatches(init.config, init.state.pair_id, init.backbone_name, config, pair_id,
                             backbone_name)


def resolve_dtype(dtype: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for the ViT: bf16 on CUDA by default, plain fp32 elsewhere."""
    if dtype == "bf16" or (dtype == "auto" and device.type == "cuda"):
        return torch.bfloat16
    return None


def check_image(image: Tensor, role: str) -> None:
    """Refuse images the method cannot use, naming the fix."""
    if image.ndim != 4 or image.shape[0] != 1 or image.shape[1] != 3:
        raise ValueError(f"{role} image must be one RGB image [1, 3, H, W], got {tuple(image.shape)}")
    height, width = image.shape[-2:]
    if min(height, width) < MIN_IMAGE_SIDE:
        raise ValueError(f"{role} image is {width}x{height} px; Splice needs at least "
                         f"{MIN_IMAGE_SIDE} px on each side (more than one ViT patch and the "
                         f"generator's five levels). Use a larger image or upscale it first.")
    if not torch.isfinite(image).all():
        raise ValueError(f"{role} image contains NaN or infinite values")


def stack_keyframes(structure: Tensor | Sequence[Tensor]) -> Tensor:
    """Keyframes as one [K, 3, H, W] tensor: a batch, or a list of [1, 3, H, W] images of one size.

    Each keyframe must be a usable structure image; sizes must match because the keyframes share
    one buffer on the training device (mismatched sizes name the fix).
    """
    if isinstance(structure, Tensor):
        frames = [structure[i: i + 1] for i in range(structure.shape[0])] if structure.ndim == 4 else [structure]
    else:
        frames = list(structure)
    if not frames:
        raise ValueError("no structure image given: pass one image or a batch of keyframes")
    for index, frame in enumerate(frames):
        check_image(frame, "structure" if len(frames) == 1 else f"structure keyframe {index}")
    sizes = [tuple(int(v) for v in frame.shape[-2:]) for frame in frames]
    if len(set(sizes)) > 1:
        odd = next(i for i, size in enumerate(sizes) if size != sizes[0])
        raise ValueError(
            f"keyframes must all have one size: keyframe 0 is {sizes[0][1]}x{sizes[0][0]} and keyframe "
            f"{odd} is {sizes[odd][1]}x{sizes[odd][0]}. Resize them to one size first (the frames of "
            f"one shot normally share it).")
    if len(frames) == 1 and isinstance(structure, Tensor):
        return structure
    return torch.cat(frames)


def downscale(image: Tensor, max_megapixels: float) -> Tensor:
    """``image`` resized (antialiased bilinear, aspect ratio kept) to at most ``max_megapixels``
    million pixels; the same tensor when it is already small enough or the limit is 0."""
    height, width = image.shape[-2:]
    size = training_size(int(height), int(width), max_megapixels)
    if size == (height, width):
        return image
    return F.interpolate(image, size=size, mode="bilinear", align_corners=False,
                         antialias=True).clamp_(0.0, 1.0)


class SpliceTrainer:
    """One Splice optimisation problem; ``step()`` advances it by one step without host syncs.

    ``backward_mode``: how the generator keeps what its backward needs (LEAN or PLAIN, see
    ``comfy_splice.generator``), the training plan's choice (``comfy_splice.budget``); the same
    numbers either way.
    """

    def __init__(self, backbone: DinoBackbone, structure: Tensor, appearance: Tensor,
                 config: TrainConfig, device: torch.device | str, *,
                 backward_mode: str = LEAN) -> None:
        if backward_mode not in BACKWARD_MODES:
            raise ValueError(f"backward_mode is {backward_mode!r}; use one of {', '.join(BACKWARD_MODES)}")
        structure = stack_keyframes(structure)
        check_image(appearance, "appearance")
        self.device = torch.device(device)
        self.config = config
        self.backbone = backbone.to(self.device)
        # [K, 3, H, W] keyframes, at most max_megapixels each when that is set
        self.structure_image = downscale(structure.to(self.device, torch.float32),
                                         config.max_megapixels)
        self.keyframes = int(structure.shape[0])
        self.appearance_image = downscale(appearance.to(self.device, torch.float32),
                                          config.max_megapixels)
        self.generator = build_generator(config.seed).to(self.device)
        self.generator.train()
        self.generator.backward_mode = backward_mode
        self.optimizer = torch.optim.Adam(self.generator.parameters(), lr=config.lr,
                                          betas=(config.betas[0], config.betas[1]))
        self.augmenter = PairAugmenter(config.seed)
        self.pair_id = pair_fingerprint(self.structure_image, self.appearance_image)
        self.autocast_dtype = resolve_dtype(config.dtype, self.device)
        # Under bf16 autocast the block the losses read (keys, CLS) runs in fp32: the structure
        # loss compares small differences of keys. Measured gradient cosines and cost: bench/README.md,
        # "Measurement log: bf16 with fp32 keys".
        self.fp32_keys = True
        self.step_index = 0
        self._pending: list[Tensor] = []
        self._history: dict[str, list[float]] = {name: [] for name in LOSS_TERMS}
        self._full_targets: dict[tuple[int, torch.dtype | None, bool], Tensor] = {}
        layers = (config.structure.layer, config.appearance.layer, config.identity.layer)
        self._layers = tuple(sorted({backbone.resolve_layer(i) for i in layers}))

    def _autocast(self) -> ContextManager[Any]:
        if self.autocast_dtype is None:
            return nullcontext()
        return torch.autocast(self.device.type, dtype=self.autocast_dtype)

    def _features(self, images: list[Tensor]) -> list[dict[int, Features]]:
        """Features of several images from as few ViT forwards as their DINO sizes allow.

        Square crops all resize to the same size, so a regular step's pair is one batch.
        """
        c = self.config
        prepared = [splice_input(image, c.dino_short_side, c.dino_long_side_max, c.antialias)
                    for image in images]
        results: list[dict[int, Features] | None] = [None] * len(images)
        groups: dict[tuple[int, ...], list[int]] = {}
        for index, tensor in enumerate(prepared):
            groups.setdefault(tuple(tensor.shape[1:]), []).append(index)
        for indices in groups.values():
            with self._autocast():
                batch = self.backbone.features(torch.cat([prepared[i] for i in indices]),
                                               self._layers, fp32_keys=self.fp32_keys)
            for row, index in enumerate(indices):
                results[index] = {layer: Features(f.cls[row: row + 1], f.keys[row: row + 1])
                                  for layer, f in batch.items()}
        return [r for r in results if r is not None]

    def keyframe(self, index: int) -> Tensor:
        """Keyframe ``index`` as [1, 3, H, W] (a view: no copy)."""
        return self.structure_image[index: index + 1]

    def keyframe_for_step(self, step: int) -> int:
        """The keyframe a step augments: a fixed cycle, each used once in every K steps."""
        return step % self.keyframes

    def full_keyframe_for_step(self, step: int) -> int:
        """The keyframe a full-image step scores: the full-image steps cycle through them too."""
        return (step // max(1, self.config.full_image_every)) % self.keyframes

    def _full_structure_target(self, index: int = 0) -> Tensor:
        """Keys of a whole keyframe: fixed for the run, so computed once per keyframe (and precision)."""
        key = (index, self.autocast_dtype, self.fp32_keys)
        if key not in self._full_targets:
            with torch.no_grad():
                feats = self._features([self.keyframe(index)])[0]
            layer = self.backbone.resolve_layer(self.config.structure.layer)
            self._full_targets[key] = feats[layer].keys
        return self._full_targets[key]

    def step(self) -> None:
        """One optimisation step (augment, generate, two batched ViT forwards, losses, Adam)."""
        c = self.config
        step = self.step_index
        warm = step >= c.warmup_steps
        full = c.full_image_every > 0 and step % c.full_image_every == 0

        a_crop = self.augmenter.structure(self.keyframe(self.keyframe_for_step(step)))
        b_crop = self.augmenter.appearance(self.appearance_image)
        terms = self.loss_terms(a_crop, b_crop, warm=warm, full=full)
        # The crops are views of full-size augmented copies; the generator keeps its own
        # (padded) input for backward, so letting go here frees those copies before backward.
        del a_crop, b_crop
        weights = self.term_weights()
        # a Tensor: terms is never empty (sum's start value 0 types it as Tensor | int)
        total = cast(Tensor, sum(weights[name] * value for name, value in terms.items()))

        self.optimizer.zero_grad(set_to_none=True)
        total.backward()
        self.optimizer.step()
        self._pending.append(torch.stack([total, *(terms[n] for n in LOSS_TERMS[1:])]).detach())
        self.step_index += 1

    def term_weights(self) -> dict[str, float]:
        """Each loss term's weight in the total, by the names of ``loss_terms``."""
        c = self.config
        return {"structure": c.structure.weight, "appearance": c.appearance.weight,
                "identity": c.identity.weight, "full_structure": c.full_structure_weight,
                "full_appearance": c.full_appearance_weight}

    def loss_terms(self, a_crop: Tensor, b_crop: Tensor, warm: bool, full: bool) -> dict[str, Tensor]:
        """The unweighted loss terms for one augmentation draw (A', B'), graph attached.

        ``warm``: the structure and identity terms are on (off at step 0); ``full``: the
        whole-image terms are on. Terms that are off, or weighted 0, are zeros. Separate from
        ``step`` so a caller can score a fixed draw (e.g. to compare precisions).
        """
        c = self.config
        resolve = self.backbone.resolve_layer
        l_struct, l_app, l_id = resolve(c.structure.layer), resolve(c.appearance.layer), resolve(c.identity.layer)
        use_struct = warm and c.structure.weight != 0
        use_id = warm and c.identity.weight != 0

        targets_in = [b_crop] + ([a_crop] if use_struct else [])
        with torch.no_grad():
            targets = self._features(targets_in)
        t_b = targets[0]
        t_a = targets[1] if use_struct else None

        x = self.generator(a_crop)
        generated = [x] + ([self.generator(b_crop)] if use_id else [])
        # The whole image's generator pass comes before the ViT sees the crops. Backward runs
        # nodes newest first, so the crops' ViT backward now ends before any generator backward
        # and its saved activations are gone when the largest one (the whole image) runs; the
        # generators' gradients still add up in the same order (whole image, B', A').
        index = self.full_keyframe_for_step(self.step_index)
        whole = self.generator(self.keyframe(index)) if full else None
        outs = self._features(generated)
        f_x = outs[0]

        zero = zero_like(x)
        app = c.appearance(f_x[l_app], t_b[l_app])
        struct = c.structure(f_x[l_struct], t_a[l_struct]) if t_a is not None else zero
        ident = c.identity(outs[1][l_id], t_b[l_id]) if use_id else zero
        full_struct = full_app = zero
        if whole is not None:
            target_keys = self._full_structure_target(index)
            f_full = self._features([whole])[0]
            if c.full_structure_weight != 0:
                full_struct = self_similarity_mse(f_full[l_struct].keys, target_keys)
            if c.full_appearance_weight != 0:
                full_app = c.appearance(f_full[l_app], t_b[l_app])
        return {"structure": struct, "appearance": app, "identity": ident,
                "full_structure": full_struct, "full_appearance": full_app}

    def flush_logs(self) -> dict[str, list[float]]:
        """Copy pending losses to the host (one sync) and check that they are finite.

        Returns this flush's values per term; raises TrainingDiverged on NaN or infinity.
        """
        if not self._pending:
            return {name: [] for name in LOSS_TERMS}
        values = torch.stack(self._pending).float().cpu()
        first_step = self.step_index - len(self._pending)
        self._pending.clear()
        rows = values.tolist()
        fresh = {name: [row[i] for row in rows] for i, name in enumerate(LOSS_TERMS)}
        for name, series in fresh.items():
            self._history[name].extend(series)
        bad = [i for i, row in enumerate(rows) if not all(math.isfinite(v) for v in row)]
        if bad:
            raise TrainingDiverged(
                f"training diverged: the loss became {rows[bad[0]][0]} at step {first_step + bad[0]}; the "
                f"generator is unusable. Lower the learning rate, or use dtype fp32.")
        return fresh

    @property
    def history(self) -> dict[str, list[float]]:
        """Every flushed step's losses, per term."""
        return {name: list(series) for name, series in self._history.items()}

    def start_from(self, init: TrainedGenerator) -> bool:
        """Continue ``init``'s run exactly if it is this problem, else fine-tune its weights.

        Resuming restores the step index, Adam's state, the augmentation random state and the
        loss history; fine-tuning takes the weights only (fresh optimiser, step 0). Returns
        True when the run was resumed.
        """
        with torch.no_grad():
            for target, source in zip(self.generator.state_dict().values(),
                                      init.generator.state_dict().values()):
                target.copy_(source)
        blockers = resume_blockers(init, self.config, self.pair_id, self.backbone.name)
        if blockers:
            log.info("Splice: fine-tuning from the given generator (fresh optimiser, step 0): "
                     "not resumed because %s", "; ".join(blockers))
            return False
        assert init.state is not None
        per_param: dict[int, dict[str, Tensor]] = {}
        for key, value in init.state.optimizer.items():
            index, name = key.split(".", 1)
            per_param.setdefault(int(index), {})[name] = value.clone()  # never share: Adam updates in place
        state = self.optimizer.state_dict()
        state["state"] = per_param
        self.optimizer.load_state_dict(state)
        if init.state.augment_rng is not None:
            self.augmenter.set_rng_state(init.state.augment_rng)
        self.step_index = init.state.step
        self._history = {name: list(init.history.get(name, [])) for name in LOSS_TERMS}
        log.info("Splice: resuming the run at step %d of %d", self.step_index, self.config.steps)
        return True

    def export_state(self) -> TrainState:
        """CPU copies of what :meth:`start_from` needs to continue this run exactly."""
        optimizer: dict[str, Tensor] = {}
        for index, param in enumerate(self.generator.parameters()):
            for name, value in self.optimizer.state.get(param, {}).items():
                optimizer[f"{index}.{name}"] = value.detach().to("cpu", copy=True)
        return TrainState(step=self.step_index, pair_id=self.pair_id, optimizer=optimizer,
                          augment_rng=self.augmenter.rng_state())

    def snapshot(self) -> TrainedGenerator:
        """The run so far as a CPU value (weights, history, resumable state); training goes on."""
        self.flush_logs()
        generator = copy.deepcopy(self.generator).cpu()
        generator.eval()
        generator.backward_mode = LEAN  # the run's choice does not travel with the result
        return TrainedGenerator(generator=generator, config=self.config,
                                backbone_name=self.backbone.name, history=self.history,
                                state=self.export_state())

    @torch.no_grad()
    def render(self, index: int = 0) -> Tensor:
        """G(A) on a whole keyframe (the first by default), [1, 3, H, W] float32 on the CPU (previews)."""
        return self.generator(self.keyframe(index)).float().cpu()


def train_generator(backbone: DinoBackbone, structure: Tensor, appearance: Tensor,
                    config: TrainConfig, device: torch.device | str,
                    on_step: Callable[[int, int], None] | None = None,
                    on_preview: Callable[[int, Tensor], None] | None = None,
                    on_log: Callable[[int, dict[str, float]], None] | None = None,
                    should_stop: Callable[[], bool] | None = None, *,
                    init: TrainedGenerator | None = None,
                    should_finish: Callable[[], bool] | None = None,
                    max_seconds: float | None = None,
                    checkpoint_every: int = 0,
                    on_checkpoint: Callable[[TrainedGenerator], None] | None = None,
                    find_init: Callable[[str, str], TrainedGenerator | None] | None = None,
                    backward_mode: str = LEAN) -> TrainedGenerator:
    """Train a generator on one pair and return it (on the CPU) with its loss history.

    ``structure`` is one image [1, 3, H, W] or K keyframes of one size [K, 3, H, W]
    (``stack_keyframes`` makes that from a list): one generator is trained for all of them (see
    the module docstring for the schedule).

    ``should_stop`` is asked before every step and raises TrainingInterrupted when it answers
    True (nothing is returned); anything ``on_step`` raises (a host's own interrupt, or its
    memory limit) propagates the same way. ``should_finish`` is the other way to end early:
    when it answers True, or once ``max_seconds`` have passed (after at least one step of this
    call), training ends and the generator trained so far is returned, with its resumable
    state. ``init``: a generator to start from, continued exactly when it comes from a run of
    the same config on the same images (``config.steps`` is then the total to reach), else
    fine-tuned. ``find_init(pair_id, backbone_name)``, asked when no ``init`` is given, may return
    an earlier run of these images to continue (e.g. the newest autosave of the same run, so a
    result a host dropped from its cache is found again without retraining; a complete one
    returns at once); the images' fingerprint is only known once they are prepared, hence the
    callback. ``on_checkpoint`` gets a snapshot every ``checkpoint_every`` steps before the
    last. ``on_log`` gets the latest losses every ``log_every`` steps, ``on_preview`` G(A)
    every ``preview_every`` steps. ``backward_mode``: the training plan's
    (:class:`comfy_splice.budget.TrainingPlan`); LEAN, the one that needs least memory, by default.
    """
    trainer = SpliceTrainer(backbone, structure, appearance, config, device,
                            backward_mode=backward_mode)
    if init is None and find_init is not None:
        init = find_init(trainer.pair_id, trainer.backbone.name)
    if init is not None:
        trainer.start_from(init)
    started, first = time.monotonic(), trainer.step_index
    while trainer.step_index < config.steps:
        step = trainer.step_index
        if should_stop is not None and should_stop():
            raise TrainingInterrupted(f"training stopped at step {step} of {config.steps}")
        out_of_time = (max_seconds is not None and step > first
                       and time.monotonic() - started >= max_seconds)
        if out_of_time or (should_finish is not None and should_finish()):
            log.info("Splice: finishing early at step %d of %d (%s)", step, config.steps,
                     "time budget spent" if out_of_time else "asked to stop")
            break
        trainer.step()
        done = step + 1
        if done % max(1, config.log_every) == 0 or done == config.steps:
            fresh = trainer.flush_logs()
            if on_log is not None:
                on_log(done, {name: series[-1] for name, series in fresh.items()})
        if on_preview is not None and config.preview_every > 0 and (
                done % config.preview_every == 0 or done == config.steps):
            on_preview(done, trainer.render())
        if on_step is not None:
            on_step(done, config.steps)
        if (on_checkpoint is not None and checkpoint_every > 0 and done % checkpoint_every == 0
                and done < config.steps):
            on_checkpoint(trainer.snapshot())
    trainer.flush_logs()  # an early finish leaves losses pending
    state = trainer.export_state()
    generator = trainer.generator.cpu()
    generator.eval()  # per-image normalisation: eval and train compute the same thing
    generator.backward_mode = LEAN  # the run's choice does not travel with the result
    return TrainedGenerator(generator=generator, config=config, backbone_name=backbone.name,
                            history=trainer.history, state=state)
