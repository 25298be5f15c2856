"""Select Keyframes (Splice): every Nth frame of a clip, to train one generator for the shot.

ComfyUI's core has no node that takes every Nth image of a batch (ImageFromBatch takes one
contiguous range), so the video workflow uses this one between Get Video Components and Train
Generator. Frames 0, N, 2N, ... are kept: the shot's start and its content at even intervals.
"""

from __future__ import annotations

from torch import Tensor

from . import names
from .api import CATEGORY, io
from .errors import readable_errors



class SpliceSelectKeyframes(io.ComfyNode):
    """Frames 0, N, 2N, ... of an IMAGE batch."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="SpliceSelectKeyframes",
            display_name=names.KEYFRAMES,
            category=CATEGORY,
            description=(
                "Picks every Nth frame of a clip (frames 0, N, 2N, ...) as keyframes for "
                f"'{names.TRAIN}': one generator is then trained for the whole shot and applied "
                f"to every frame with '{names.APPLY}'. A training step costs the same with any "
                "number of keyframes; each keyframe adds its own pixels to the memory."),
            inputs=[
                io.Image.Input("images", tooltip="The clip's frames (e.g. from 'Get Video Components')."),
                io.Int.Input(
                    "every_nth", default=4, min=1, max=100_000,
                    tooltip=("Keep every this many frames, starting with the first (1 keeps them all). "
                             "Pick it so that the keyframes show everything that enters the shot.")),
            ],
            outputs=[
                io.Image.Output("keyframes", display_name="keyframes",
                                tooltip="The selected frames, in order, as one batch."),
            ],
        )

    @classmethod
    @readable_errors(names.KEYFRAMES)
    def execute(cls, images: Tensor, every_nth: int = 4) -> io.NodeOutput:
        if not isinstance(images, Tensor) or images.ndim != 4 or images.shape[0] == 0:
            raise ValueError("images: connect a batch of frames (e.g. the images output of "
                             "'Get Video Components').")
        if every_nth < 1:
            raise ValueError(f"every_nth is {every_nth}; it must be at least 1.")
        return io.NodeOutput(images[::int(every_nth)].contiguous())
