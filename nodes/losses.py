"""Structure Loss / Appearance Loss (Splice): configure a loss term and bind it to a DINO-ViT.

The identity loss has no node of its own: it is part of Splice's recipe (the generator must
leave the appearance image unchanged) and its weight is a widget of Train Generator.
"""

from __future__ import annotations

from . import names
from .api import CATEGORY, advanced, io
from .errors import check_finite, readable_errors
from .types import DinoHandle, LossKind, LossSpec, SpliceDino, SpliceLoss, check_block, check_dino


BLOCK_MIN, BLOCK_MAX = -64, 63


def _block_input(what: str) -> io.Int.Input:
    return advanced(io.Int.Input(
        "block", default=-1, min=BLOCK_MIN, max=BLOCK_MAX,
        tooltip=(f"Transformer block whose {what} are used: -1 = the last block (the paper's "
                 "choice), -2 the one before, or 0..depth-1 counted from the input. Earlier blocks "
                 "keep more low-level detail.")))


def _make(kind: LossKind, dino: DinoHandle, weight: float, block: int) -> LossSpec:
    """Check the block index against this backbone now, so the mistake is reported here."""
    check_block(check_dino(dino), block)
    return LossSpec(kind=kind, weight=check_finite(weight, "weight"), block=int(block), dino=dino)


class SpliceStructureLoss(io.ComfyNode):
    """Structure term: the output must keep the structure image's DINO key self-similarity."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="SpliceStructureLoss",
            display_name=names.STRUCTURE_LOSS,
            category=CATEGORY,
            description=(
                "Structure loss of Splice: the mean squared difference between the cosine "
                "self-similarity matrices of DINO's attention keys for the output and for the "
                "structure image. It keeps the layout and shapes of the structure image while "
                "letting appearance change."),
            inputs=[
                SpliceDino.Input("dino", tooltip=f"The DINO-ViT from '{names.LOAD_DINO}'."),
                io.Float.Input(
                    "weight", default=1.0, min=0.0, max=1000.0, step=0.01,
                    tooltip=("Weight of the structure term (paper: 1). Higher keeps the structure "
                             "image's layout more strictly; 0 disables the term.")),
                _block_input("attention keys"),
            ],
            outputs=[
                SpliceLoss.Output("structure_loss", display_name="structure_loss",
                                  tooltip=f"Connect to 'structure_loss' of {names.TRAIN}."),
            ],
        )

    @classmethod
    @readable_errors(names.STRUCTURE_LOSS)
    def execute(cls, dino: DinoHandle, weight: float = 1.0, block: int = -1) -> io.NodeOutput:
        return io.NodeOutput(_make("structure", dino, weight, block))


class SpliceAppearanceLoss(io.ComfyNode):
    """Appearance term: the output's DINO CLS token must match the appearance image's."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="SpliceAppearanceLoss",
            display_name=names.APPEARANCE_LOSS,
            category=CATEGORY,
            description=(
                "Appearance loss of Splice: the mean squared difference between DINO's CLS token "
                "of the output and of the appearance image. It transfers the appearance image's "
                "colours, textures and style onto the structure image's objects."),
            inputs=[
                SpliceDino.Input("dino", tooltip=f"The DINO-ViT from '{names.LOAD_DINO}'."),
                io.Float.Input(
                    "weight", default=10.0, min=0.0, max=1000.0, step=0.01,
                    tooltip=("Weight of the appearance term (paper: 10). Higher transfers "
                             "appearance more strongly at the cost of structure.")),
                _block_input("CLS token"),
            ],
            outputs=[
                SpliceLoss.Output("appearance_loss", display_name="appearance_loss",
                                  tooltip=f"Connect to 'appearance_loss' of {names.TRAIN}."),
            ],
        )

    @classmethod
    @readable_errors(names.APPEARANCE_LOSS)
    def execute(cls, dino: DinoHandle, weight: float = 10.0, block: int = -1) -> io.NodeOutput:
        return io.NodeOutput(_make("appearance", dino, weight, block))
