"""Load Materialistic (Splice): the authors' checkpoint from ``models/materialistic`` -> SPLICE_MATERIALISTIC."""

from __future__ import annotations

import logging

from ..comfy_splice.materialistic.weights import EXPECTED, MaterialisticWeightsError, load_materialistic
from . import comfy_runtime as rt, names, paths
from .api import CATEGORY, io
from .errors import check_choice, readable_errors
from .types import MaterialisticHandle, SpliceDino, SpliceMaterialistic, check_dino

log = logging.getLogger(__name__)


class SpliceLoadMaterialistic(io.ComfyNode):
    """Loads the Materialistic network (DINO ViT-B/8 plus the authors' trained head) on the CPU;
    Select Material moves it to the device it runs on."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        # The options are computed on every call, so new files appear on the next refresh.
        return io.Schema(
            node_id="SpliceLoadMaterialistic",
            display_name=names.LOAD_MATERIALISTIC,
            category=CATEGORY,
            description=(
                "Loads Materialistic (Sharma et al., SIGGRAPH 2023): a network that, given one "
                "clicked pixel, scores every pixel by how likely it is made of the same material. "
                "Put the authors' checkpoint (the 'Pretrained Models' link in the README of "
                "github.com/prafull7/materialistic, a Lightning .ckpt or a model.pth) in "
                "models/materialistic. The file is read without running any code it contains, "
                "and checked before anything is built."),
            inputs=[
                io.Combo.Input(
                    "model_name", options=paths.materialistic_options(),
                    tooltip=(
                        "The checkpoint in models/materialistic (or a folder configured as "
                        "'materialistic' in extra_model_paths.yaml): the authors' .ckpt "
                        "(Lightning) or model.pth, or a .safetensors with the same tensor names. "
                        "New files appear after a refresh (R).")),
                SpliceDino.Input(
                    "dino", optional=True,
                    tooltip=(
                        "Only for a checkpoint without its DINO ViT (no dino_model.* tensors): "
                        "connect Load DINO-ViT with ViT-B/8, the ViT the head was trained on. The "
                        "authors' checkpoint holds its own ViT, and then this input is not used.")),
            ],
            outputs=[
                SpliceMaterialistic.Output(
                    "materialistic", display_name="materialistic",
                    tooltip="The Materialistic network, for Select Material (Splice)."),
            ],
        )

    @classmethod
    def validate_inputs(cls, model_name: str) -> bool:
        """Accept any name before the run, so that a missing file reaches ``execute``, whose
        message names the folder and the file to get."""
        return True

    @classmethod
    def fingerprint_inputs(cls, model_name: str, dino: object = None, **_: object) -> str:
        """Re-load when the file on disk changes (replaced, deleted)."""
        return paths.file_fingerprint(paths.find_materialistic(model_name))

    @classmethod
    @readable_errors(names.LOAD_MATERIALISTIC)
    def execute(cls, model_name: str, dino: object = None) -> io.NodeOutput:
        check_choice(model_name, "model_name")
        path = paths.find_materialistic(model_name)
        if path is None:
            folders = ", ".join(paths.materialistic_folders())
            raise MaterialisticWeightsError(
                f"Materialistic checkpoint {model_name!r} is not in any materialistic folder "
                f"({folders}). {EXPECTED}.")
        backbone = check_dino(dino).backbone if dino is not None else None
        model = load_materialistic(path, dino=backbone, cancel=rt.check_interrupt)
        if backbone is not None and model.backbone.source == str(path):
            log.info("Splice: %s holds its own DINO ViT; the connected dino input is not used", model_name)
        log.info("Splice: loaded Materialistic from %s", path)
        return io.NodeOutput(MaterialisticHandle(model=model, file_name=model_name, path=path))
