"""Load DINO-ViT (Splice): a weight file from ``models/splice_dino`` -> SPLICE_DINO."""

from __future__ import annotations

import logging

from ..comfy_splice.dino.download import download_weights
from ..comfy_splice.dino.models import WeightsError, download_url, missing_weights_message, official_model
from ..comfy_splice.dino.weights import load_backbone
from . import comfy_runtime as rt, names, paths
from .api import CATEGORY, io
from .errors import check_choice, readable_errors
from .types import DinoHandle, SpliceDino

log = logging.getLogger(__name__)


class SpliceLoadDINO(io.ComfyNode):
    """Loads a DINO-ViT on the CPU; the training and analysis nodes move copies to the device."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        # The options are computed on every call, so new files appear on the next refresh.
        return io.Schema(
            node_id="SpliceLoadDINO",
            display_name=names.LOAD_DINO,
            category=CATEGORY,
            description=(
                "Loads a DINO-ViT (self-supervised Vision Transformer) whose features Splice uses: "
                "the CLS token for appearance and the attention keys' self-similarity for "
                "structure. Put weight files (.safetensors or .pth) in models/splice_dino, or let "
                "the node download one. The paper's model is ViT-B/8: "
                "vit_base_patch8_224.dino.safetensors (timm/vit_base_patch8_224.dino on Hugging "
                "Face) or the official dino_vitbase8_pretrain.pth."),
            inputs=[
                io.Combo.Input(
                    "model_name", options=paths.dino_options(), default=paths.DEFAULT_DINO_FILE,
                    tooltip=(
                        "DINO weights in models/splice_dino (or a folder configured as "
                        "'splice_dino' in extra_model_paths.yaml): the files on disk (the four "
                        "official models' names while the folder is empty). A workflow's file that "
                        "is not on disk is flagged, and the node shows a 'Download ... into "
                        "models/splice_dino' button for the official models (or turn on "
                        "download_if_missing). ViT-B/8 (vit_base_patch8_224.dino) is the paper's "
                        "model; ViT-S and /16 are faster and coarser.")),
                io.Boolean.Input(
                    "download_if_missing", default=False,
                    tooltip=(
                        "If the chosen official model is not on disk, download its safetensors from "
                        "huggingface.co (timm/vit_*.dino) into the first splice_dino folder, with "
                        "progress on this node (ViT-B/8 is ~350 MB). Off: a missing file is an "
                        "error that names the folder, the file and the URL.")),
            ],
            outputs=[
                SpliceDino.Output(
                    "dino", display_name="dino",
                    tooltip="The DINO-ViT, for the Structure/Appearance Loss and analysis nodes."),
            ],
        )

    @classmethod
    def validate_inputs(cls, model_name: str) -> bool:
        """Accept any name before the run: an official file that is not on disk is absent from
        the list by design (so frontends flag it), and must still reach ``execute``, which
        downloads it (download_if_missing) or says exactly what to do. Naming ``model_name``
        here also turns off ComfyUI's "Value not in list" check for this input only."""
        return True

    @classmethod
    def fingerprint_inputs(cls, model_name: str, download_if_missing: bool = False, **_: object) -> str:
        """Re-load when the file on disk changes (replaced, downloaded, deleted)."""
        return paths.file_fingerprint(paths.find_dino(model_name))

    @classmethod
    @readable_errors(names.LOAD_DINO)
    def execute(cls, model_name: str, download_if_missing: bool = False) -> io.NodeOutput:
        check_choice(model_name, "model_name")
        path = paths.find_dino(model_name)
        if path is None:
            path = _fetch_missing(model_name, download_if_missing)
        backbone = load_backbone(path, cancel=rt.check_interrupt)
        log.info("Splice: loaded DINO-ViT %s from %s", backbone.name, path)
        return io.NodeOutput(DinoHandle(backbone=backbone, file_name=model_name, path=path))


def _fetch_missing(model_name: str, download: bool) -> str:
    """Path of an official file after an explicit download, or a WeightsError that says what to do."""
    folders = paths.dino_folders()
    folder = folders[0]
    if model_name not in paths.OFFICIAL_FILE_NAMES:
        raise WeightsError(
            f"DINO weights file {model_name!r} is not in any splice_dino folder "
            f"({', '.join(folders)}). Put it back there, or pick another file.")
    if not download:
        raise WeightsError(
            f"{missing_weights_message(model_name, folder)} To get it without leaving ComfyUI, press "
            f"the node's 'Download {model_name} into models/splice_dino' button, or turn on "
            f"'download_if_missing' and queue again.")
    log.info("Splice: downloading %s into %s", download_url(official_model(model_name)), folder)
    return str(download_weights(model_name, folder, progress=rt.ByteProgress(),
                                cancel=rt.check_interrupt))
