"""The values of a Splice training run: its config, its resumable state, its result, its rules.

Separate from ``train.py`` (which runs the optimisation) so that what reads and writes these
values, ``checkpoint.py`` and the nodes, depends on them alone: checkpoint and train are peers.
The rules every caller of a run shares live here too, each once: the smallest image side, the
size an image trains at (:func:`training_size`), the valid steps and dtypes
(:func:`check_steps`, :func:`check_dtype`), which :class:`TrainConfig` applies on construction.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any, Mapping

from torch import Tensor

from .generator import SpliceGenerator
from .losses import AppearanceLoss, IdentityLoss, StructureLoss
from .memory import scaled_size
from .refusal import SpliceRefusal

MIN_IMAGE_SIDE = 32
"""The smallest side Splice trains on: more than one ViT patch and the generator's five levels."""
LOSS_TERMS = ("loss", "structure", "appearance", "identity", "full_structure", "full_appearance")
DTYPES = ("auto", "bf16", "fp32")
"""Precisions of the DINO-ViT forward: auto = bf16 on CUDA, fp32 elsewhere."""


def check_steps(steps: int) -> int:
    """A run takes at least one step; the refusal names the fix."""
    if steps < 1:
        raise SpliceRefusal(f"steps must be at least 1 (got {steps}); set steps to 1 or more "
                            f"(the paper trains 2000).")
    return steps


def check_dtype(dtype: str) -> str:
    """One of :data:`DTYPES`; the refusal lists them."""
    if dtype not in DTYPES:
        raise SpliceRefusal(f"dtype {dtype!r} is not one of {', '.join(DTYPES)}; pick one (auto = "
                            f"bf16 on CUDA GPUs, fp32 elsewhere).")
    return dtype


def training_size(height: int, width: int, max_megapixels: float) -> tuple[int, int]:
    """(height, width) an image of this size trains at: scaled down to at most
    ``max_megapixels`` million pixels (aspect ratio kept, 0 = unchanged) and, when scaled, no
    side under MIN_IMAGE_SIDE. The trainer resizes to it and the memory check estimates it."""
    size = scaled_size(int(height), int(width), max_megapixels)
    if size == (int(height), int(width)):
        return size
    return max(size[0], MIN_IMAGE_SIDE), max(size[1], MIN_IMAGE_SIDE)


# Config fields a resumed run may change: they decide how long to train and what to report,
# not what a step computes. Every other field must match for a run to be continued exactly.
RESUME_FREE_FIELDS = ("steps", "preview_every", "log_every")


def resume_mismatches(old: "TrainConfig", old_pair_id: str, old_backbone: str, config: "TrainConfig",
                      pair_id: str, backbone_name: str) -> list[str]:
    """Why a run (its config, images fingerprint and DINO-ViT) cannot be continued exactly by a run
    of ``config`` on ``pair_id`` with ``backbone_name`` (empty: it can). One rule for a generator
    given by hand and for an autosave found on disk."""
    reasons = []
    if old_pair_id != pair_id:
        reasons.append("it was trained on other images")
    if old_backbone != backbone_name:
        reasons.append(f"it was trained with {old_backbone or 'another DINO-ViT'}")
    before, now = old.to_dict(), config.to_dict()
    changed = sorted(k for k in now if k not in RESUME_FREE_FIELDS and before.get(k) != now[k])
    if changed:
        reasons.append(f"these settings differ: {', '.join(changed)}")
    return reasons


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
        check_steps(self.steps)
        check_dtype(self.dtype)
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
class TrainState:
    """What continuing a run bit for bit needs beyond the generator's weights and config.

    ``step``: steps done. ``pair_id``: :func:`pair_fingerprint` of the training images, so a
    generator given to a run on other images is recognised and fine-tuned instead of resumed.
    ``optimizer``: Adam's per-parameter state as CPU tensors named ``"<index>.<name>"``
    (index in ``generator.parameters()`` order; names ``step``, ``exp_avg``, ``exp_avg_sq``).
    ``augment_rng``: the augmentation generator's state. The full-image structure target is
    not kept: it is recomputed from the structure image on the first full-image step.
    """

    step: int
    pair_id: str
    optimizer: dict[str, Tensor] = field(default_factory=dict)
    augment_rng: Tensor | None = None


@dataclass
class TrainedGenerator:
    """A trained generator with what made it: the value passed along the graph and saved.

    ``state`` is present when the generator came out of a training run (or a file that kept
    it) and lets :func:`train_generator` continue that run exactly.
    """

    generator: SpliceGenerator
    config: TrainConfig
    backbone_name: str
    history: dict[str, list[float]] = field(default_factory=dict)
    state: TrainState | None = None

    @property
    def steps_done(self) -> int:
        """Optimisation steps behind these weights (the config's count when no state is kept)."""
        return self.state.step if self.state is not None else self.config.steps
