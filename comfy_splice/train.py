"""Training a Splice generator on one structure/appearance pair.

Per regular step the ViT runs twice, each time on a batch of two: once without gradients for
the targets (A', B') and once with gradients for the generated pair (x = G(A'), y = G(B')).
CLS tokens, keys and self-similarities all come from those two forwards. Every
``full_image_every`` steps one more forward with gradients scores G(A) on the whole structure
image; its target self-similarity of A never changes and is computed once. Losses stay on the
device and are copied to the host every ``log_every`` steps, so a step never waits for the GPU.
"""

from __future__ import annotations

import logging
import math
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Callable, ContextManager, Mapping

import torch
import torch.nn.functional as F
from torch import Tensor

from .augment import PairAugmenter
from .backbone import DinoBackbone, Features, prepare
from .generator import SpliceGenerator, build_generator
from .losses import AppearanceLoss, IdentityLoss, StructureLoss, self_similarity_mse, zero_like
from .memory import scaled_size

log = logging.getLogger(__name__)

MIN_IMAGE_SIDE = 32
LOSS_TERMS = ("loss", "structure", "appearance", "identity", "full_structure", "full_appearance")


class TrainingInterrupted(Exception):
    """The caller's stop check asked training to end."""


class TrainingDiverged(RuntimeError):
    """A loss became NaN or infinite; the generator would be garbage."""


@dataclass
class TrainConfig:
    """Everything that defines a Splice training run (defaults: the paper and reference code)."""

    steps: int = 2000
    lr: float = 2e-3
    betas: tuple[float, float] = (0.0, 0.99)
    structure: StructureLoss = field(default_factory=StructureLoss)
    appearance: AppearanceLoss = field(default_factory=AppearanceLoss)
    identity: IdentityLoss = field(default_factory=IdentityLoss)
    full_image_every: int = 75
    full_structure_weight: float = 1.0
    full_appearance_weight: float = 10.0
    warmup_steps: int = 1
    dino_short_side: int = 224
    dino_long_side_max: int = 480
    antialias: bool = False
    seed: int = 0
    dtype: str = "auto"
    preview_every: int = 50
    log_every: int = 25
    # Train on images scaled down to at most this many million pixels (0: full resolution, as
    # the reference). The generator is fully convolutional: it still applies at any size.
    max_megapixels: float = 0.0

    def __post_init__(self) -> None:
        if self.steps < 1:
            raise ValueError(f"steps must be at least 1 (got {self.steps})")
        if self.dtype not in ("auto", "bf16", "fp32"):
            raise ValueError(f"dtype must be auto, bf16 or fp32 (got {self.dtype!r})")
        if not self.lr > 0:
            raise ValueError(f"learning rate must be positive (got {self.lr})")
        if not self.max_megapixels >= 0:
            raise ValueError(f"max_megapixels must be 0 (off) or positive (got {self.max_megapixels})")

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able values (for checkpoint metadata and logs)."""
        data = asdict(self)
        data["betas"] = list(self.betas)
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "TrainConfig":
        """Inverse of to_dict; unknown keys are ignored so newer files still load."""
        known = {f.name for f in fields(cls)}
        kwargs = {k: v for k, v in data.items() if k in known}
        for name, kind in (("structure", StructureLoss), ("appearance", AppearanceLoss),
                           ("identity", IdentityLoss)):
            if isinstance(kwargs.get(name), Mapping):
                kwargs[name] = kind(**kwargs[name])
        if "betas" in kwargs:
            kwargs["betas"] = tuple(kwargs["betas"])
        return cls(**kwargs)


@dataclass
class TrainedGenerator:
    """A trained generator with what made it: the value passed along the graph and saved."""

    generator: SpliceGenerator
    config: TrainConfig
    backbone_name: str
    history: dict[str, list[float]] = field(default_factory=dict)


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


def downscale(image: Tensor, max_megapixels: float) -> Tensor:
    """``image`` resized (antialiased bilinear, aspect ratio kept) to at most ``max_megapixels``
    million pixels; the same tensor when it is already small enough or the limit is 0."""
    height, width = image.shape[-2:]
    size = scaled_size(int(height), int(width), max_megapixels)
    if size == (height, width):
        return image
    size = (max(size[0], MIN_IMAGE_SIDE), max(size[1], MIN_IMAGE_SIDE))
    return F.interpolate(image, size=size, mode="bilinear", align_corners=False,
                         antialias=True).clamp_(0.0, 1.0)


class SpliceTrainer:
    """One Splice optimisation problem; ``step()`` advances it by one step without host syncs."""

    def __init__(self, backbone: DinoBackbone, structure: Tensor, appearance: Tensor,
                 config: TrainConfig, device: torch.device | str) -> None:
        check_image(structure, "structure")
        check_image(appearance, "appearance")
        self.device = torch.device(device)
        self.config = config
        self.backbone = backbone.to(self.device)
        self.structure_image = downscale(structure.to(self.device, torch.float32),
                                         config.max_megapixels)
        self.appearance_image = downscale(appearance.to(self.device, torch.float32),
                                          config.max_megapixels)
        self.generator = build_generator(config.seed).to(self.device)
        self.generator.train()
        self.optimizer = torch.optim.Adam(self.generator.parameters(), lr=config.lr,
                                          betas=tuple(config.betas))
        self.augmenter = PairAugmenter(config.seed)
        self.autocast_dtype = resolve_dtype(config.dtype, self.device)
        self.step_index = 0
        self._pending: list[Tensor] = []
        self._history: dict[str, list[float]] = {name: [] for name in LOSS_TERMS}
        self._full_target: Tensor | None = None
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
        prepared = [prepare(image, c.dino_short_side, c.dino_long_side_max, c.antialias)
                    for image in images]
        results: list[dict[int, Features] | None] = [None] * len(images)
        groups: dict[tuple[int, ...], list[int]] = {}
        for index, tensor in enumerate(prepared):
            groups.setdefault(tuple(tensor.shape[1:]), []).append(index)
        for indices in groups.values():
            with self._autocast():
                batch = self.backbone.features(torch.cat([prepared[i] for i in indices]),
                                               self._layers)
            for row, index in enumerate(indices):
                results[index] = {layer: Features(f.cls[row: row + 1], f.keys[row: row + 1])
                                  for layer, f in batch.items()}
        return [r for r in results if r is not None]

    def _full_structure_target(self) -> Tensor:
        """Keys of the whole structure image: fixed for the run, so computed once."""
        if self._full_target is None:
            with torch.no_grad():
                feats = self._features([self.structure_image])[0]
            self._full_target = feats[self.backbone.resolve_layer(self.config.structure.layer)].keys
        return self._full_target

    def step(self) -> None:
        """One optimisation step (augment, generate, two batched ViT forwards, losses, Adam)."""
        c = self.config
        step = self.step_index
        resolve = self.backbone.resolve_layer
        l_struct, l_app, l_id = resolve(c.structure.layer), resolve(c.appearance.layer), resolve(c.identity.layer)
        warm = step >= c.warmup_steps
        full = c.full_image_every > 0 and step % c.full_image_every == 0
        use_struct = warm and c.structure.weight != 0
        use_id = warm and c.identity.weight != 0

        a_crop = self.augmenter.structure(self.structure_image)
        b_crop = self.augmenter.appearance(self.appearance_image)

        targets_in = [b_crop] + ([a_crop] if use_struct else [])
        with torch.no_grad():
            targets = self._features(targets_in)
        t_b = targets[0]
        t_a = targets[1] if use_struct else None

        x = self.generator(a_crop)
        generated = [x] + ([self.generator(b_crop)] if use_id else [])
        outs = self._features(generated)
        f_x = outs[0]

        zero = zero_like(x)
        app = c.appearance(f_x[l_app], t_b[l_app])
        struct = c.structure(f_x[l_struct], t_a[l_struct]) if t_a is not None else zero
        ident = c.identity(outs[1][l_id], t_b[l_id]) if use_id else zero
        full_struct = full_app = zero
        if full:
            target_keys = self._full_structure_target()
            f_full = self._features([self.generator(self.structure_image)])[0]
            if c.full_structure_weight != 0:
                full_struct = self_similarity_mse(f_full[l_struct].keys, target_keys)
            if c.full_appearance_weight != 0:
                full_app = c.appearance(f_full[l_app], t_b[l_app])
        total = (c.appearance.weight * app + c.structure.weight * struct + c.identity.weight * ident
                 + c.full_structure_weight * full_struct + c.full_appearance_weight * full_app)

        self.optimizer.zero_grad(set_to_none=True)
        total.backward()
        self.optimizer.step()
        self._pending.append(torch.stack([total, struct, app, ident, full_struct, full_app]).detach())
        self.step_index += 1

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
                f"the training loss became {rows[bad[0]][0]} at step {first_step + bad[0]}; the "
                f"generator is unusable. Lower the learning rate, or use dtype fp32.")
        return fresh

    @property
    def history(self) -> dict[str, list[float]]:
        """Every flushed step's losses, per term."""
        return {name: list(series) for name, series in self._history.items()}

    @torch.no_grad()
    def render(self) -> Tensor:
        """G(A) on the whole structure image, [1, 3, H, W] float32 on the CPU (for previews)."""
        return self.generator(self.structure_image).float().cpu()


def train_generator(backbone: DinoBackbone, structure: Tensor, appearance: Tensor,
                    config: TrainConfig, device: torch.device | str,
                    on_step: Callable[[int, int], None] | None = None,
                    on_preview: Callable[[int, Tensor], None] | None = None,
                    on_log: Callable[[int, dict[str, float]], None] | None = None,
                    should_stop: Callable[[], bool] | None = None) -> TrainedGenerator:
    """Train a generator on one pair and return it (on the CPU) with its loss history.

    ``should_stop`` is asked before every step and raises TrainingInterrupted when it answers
    True; anything ``on_step`` raises (a host's own interrupt) propagates the same way.
    ``on_log`` gets the latest losses every ``log_every`` steps, ``on_preview`` G(A) every
    ``preview_every`` steps.
    """
    trainer = SpliceTrainer(backbone, structure, appearance, config, device)
    for step in range(config.steps):
        if should_stop is not None and should_stop():
            raise TrainingInterrupted(f"training stopped at step {step} of {config.steps}")
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
    generator = trainer.generator.cpu()
    generator.eval()  # per-image normalisation: eval and train compute the same thing
    return TrainedGenerator(generator=generator, config=config, backbone_name=backbone.name,
                            history=trainer.history)
