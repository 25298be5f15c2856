"""Graph types of the pack and the small values that travel along their links.

The type names are prefixed (``SPLICE_``) because ComfyUI matches sockets by name across every
installed pack. The values are plain frozen dataclasses around core objects: a link carries a
reference, never a copy, so nodes must not mutate what they receive (training works on clones).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from ..comfy_splice.dino.vit import DinoBackbone
from ..comfy_splice.run import TrainedGenerator
from . import names
from .api import io

SpliceDino = io.Custom("SPLICE_DINO")
"""A loaded DINO-ViT (:class:`DinoHandle`)."""

SpliceLoss = io.Custom("SPLICE_LOSS")
"""One configured loss term (:class:`LossSpec`), carrying the backbone it reads."""

SpliceGenerator = io.Custom("SPLICE_GENERATOR")
"""A trained generator (``comfy_splice.run.TrainedGenerator``)."""

LossMap = io.Custom("LOSS_MAP")
"""ComfyUI's own loss-history type: ``{"loss": [float, ...]}`` (drawn by core's Plot Loss Graph)."""

SpliceMaterialistic = io.Custom("SPLICE_MATERIALISTIC")
"""A loaded Materialistic network (:class:`MaterialisticHandle`)."""

LossKind = Literal["structure", "appearance"]


@dataclass(frozen=True, eq=False)
class DinoHandle:
    """A DINO-ViT loaded on the CPU by "Load DINO-ViT (Splice)".

    ``backbone`` was built under ComfyUI's inference mode, so its weights are inference tensors:
    consumers that need autograd must clone it (see ``nodes.comfy_runtime.backbone_for``).
    ``file_name`` is what the user picked; ``path`` where it was read from.
    """

    backbone: DinoBackbone
    file_name: str
    path: str

    @property
    def label(self) -> str:
        """How messages name this model: the architecture and the file it came from."""
        return f"{self.backbone.name} ({self.file_name})"


def check_dino(value: object) -> DinoHandle:
    """The input is a loaded DINO-ViT, or a ValueError naming the node that makes one."""
    if not isinstance(value, DinoHandle):
        raise ValueError(f"dino: connect the output of '{names.LOAD_DINO}'.")
    return value


def check_block(dino: DinoHandle, block: int) -> int:
    """The block index for this backbone, or an error that gives the valid range."""
    try:
        dino.backbone.resolve_layer(block)
    except ValueError as exc:
        raise ValueError(f"{exc}. {dino.label} has {dino.backbone.depth} blocks: set 'block' to "
                         f"-1 (last) or a value from {-dino.backbone.depth} to "
                         f"{dino.backbone.depth - 1}.") from None
    return int(block)


@dataclass(frozen=True, eq=False)
class LossSpec:
    """One Splice loss term as configured by a loss node.

    ``block`` is a ViT block index as the user typed it (-1 = last), already checked against the
    backbone's depth.
    """

    kind: LossKind
    weight: float
    block: int
    dino: DinoHandle

    @property
    def node_name(self) -> str:
        """The display name of the node that makes this kind of loss (for error messages)."""
        return names.STRUCTURE_LOSS if self.kind == "structure" else names.APPEARANCE_LOSS


def check_generator(value: object, name: str = "generator") -> TrainedGenerator:
    """The input is a trained generator, or a ValueError naming the nodes that make one."""
    if not isinstance(value, TrainedGenerator):
        raise ValueError(f"{name}: connect the output of '{names.TRAIN}' or "
                         f"'{names.LOAD_GENERATOR}' (got {type(value).__name__}).")
    return value


@dataclass(frozen=True, eq=False)
class MaterialisticHandle:
    """A Materialistic network loaded by "Load Materialistic (Splice)".

    ``model`` is ``comfy_splice.materialistic.MaterialisticNet`` (its DINO part included), on the
    CPU; Select Material moves it to the device. ``file_name`` is what the user picked; ``path``
    where it was read from.
    """

    model: object
    file_name: str
    path: str


def check_materialistic(value: object) -> MaterialisticHandle:
    """The input is a loaded Materialistic network, or a ValueError naming the node that makes one."""
    if not isinstance(value, MaterialisticHandle):
        raise ValueError(f"materialistic: connect the output of '{names.LOAD_MATERIALISTIC}'.")
    return value
