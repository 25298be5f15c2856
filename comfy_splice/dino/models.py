"""The official DINO v1 ViTs: where each one's weights live and its shape.

Standard library only (no torch, no numpy): ``tools/provision.py`` runs it with the system
python before any venv exists, and the Load DINO-ViT node lists the files without loading torch.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from ..refusal import SpliceRefusal


class WeightsError(SpliceRefusal):
    """A weight file is missing, unreadable or not a DINO ViT; the message names the fix."""


@dataclass(frozen=True)
class DinoModel:
    """One of the four official DINO v1 ViTs: where its weights live and its shape.

    Each model has two accepted files: the Hugging Face hub's safetensors with timm's key names
    (``hf_file_name``, the default: ComfyUI's missing-models dialog can download it, and it holds
    no pickle) and the official ``.pth`` of the DINO release (``file_name``), which existing
    installs already have. Both hold the same tensors under the same names.
    """

    key: str
    timm_name: str
    file_name: str
    url: str
    patch_size: int
    embed_dim: int
    depth: int
    # The backbone's parameter count (timm's model with num_classes=0, i.e. the hub file's
    # tensors; the .pth's DINO head is dropped on loading): with depth, width and patch size it
    # identifies the model, and it bounds what a download of it may weigh.
    parameters: int
    # The SHA-256 of the hub's model.safetensors, where the pack knows it from a source it
    # could verify. None: no hash is checked, the shape check still runs.
    sha256: str | None = None

    @property
    def label(self) -> str:
        """Short name for messages: ViT-S/16, ViT-B/8."""
        return f"ViT-{'S' if self.embed_dim == 384 else 'B'}/{self.patch_size}"

    @property
    def max_download_bytes(self) -> int:
        """The most a download of this model may weigh: its parameters in fp32 plus 5 % and
        1 MiB for the safetensors header (a ViT-B/8 header is ~20 KB). A body past this is not
        this model, whatever it claims, and is not written further."""
        return int(self.parameters * 4 * 1.05) + (1 << 20)

    @property
    def hf_repo(self) -> str:
        """The model's repository on the Hugging Face hub (``timm/<timm name>``)."""
        return f"timm/{self.timm_name}"

    @property
    def hf_file_name(self) -> str:
        """The name the hub's ``model.safetensors`` gets in ``models/splice_dino``."""
        return f"{self.timm_name}.safetensors"

    @property
    def hf_url(self) -> str:
        """The hub's download URL of the safetensors file (what the UI and the download use)."""
        return f"{HF_ENDPOINT}/{self.hf_repo}/resolve/main/model.safetensors"

    @property
    def file_names(self) -> tuple[str, str]:
        """Both accepted file names, the hub's safetensors first."""
        return (self.hf_file_name, self.file_name)


_DINO_URL = "https://dl.fbaipublicfiles.com/dino/{stem}/{stem}.pth"
HF_ENDPOINT = "https://huggingface.co"
# Same variable as huggingface_hub's: a mirror of the hub, or a local server in the tests.
HF_ENDPOINT_ENV = "HF_ENDPOINT"

DINO_MODELS: dict[str, DinoModel] = {
    m.key: m
    for m in (
        DinoModel("dino_vits16", "vit_small_patch16_224.dino", "dino_deitsmall16_pretrain.pth",
                  _DINO_URL.format(stem="dino_deitsmall16_pretrain"), patch_size=16, embed_dim=384,
                  depth=12, parameters=21_665_664),
        DinoModel("dino_vits8", "vit_small_patch8_224.dino", "dino_deitsmall8_pretrain.pth",
                  _DINO_URL.format(stem="dino_deitsmall8_pretrain"), patch_size=8, embed_dim=384,
                  depth=12, parameters=21_670_272),
        DinoModel("dino_vitb16", "vit_base_patch16_224.dino", "dino_vitbase16_pretrain.pth",
                  _DINO_URL.format(stem="dino_vitbase16_pretrain"), patch_size=16, embed_dim=768,
                  depth=12, parameters=85_798_656),
        DinoModel("dino_vitb8", "vit_base_patch8_224.dino", "dino_vitbase8_pretrain.pth",
                  _DINO_URL.format(stem="dino_vitbase8_pretrain"), patch_size=8, embed_dim=768,
                  depth=12, parameters=85_807_872),
    )
}
DEFAULT_MODEL = "dino_vitb8"


def official_model(name: str) -> DinoModel:
    """Look an official model up by key (``dino_vitb8``), timm name or either file name."""
    for model in DINO_MODELS.values():
        if name in (model.key, model.timm_name, *model.file_names):
            return model
    known = ", ".join(DINO_MODELS)
    raise WeightsError(f"Unknown DINO model {name!r}; expected one of {known}.")


def missing_weights_message(name: str, directory: str | os.PathLike[str]) -> str:
    """What to tell a user whose official weights are not on disk."""
    model = official_model(name)
    return (f"DINO weights {name if name in model.file_names else model.hf_file_name} are not in "
            f"{directory}. Download {model.hf_url} and save it there as {model.hf_file_name} (or "
            f"put the official {model.file_name} from {model.url} there), or allow the download "
            f"explicitly.")


def download_url(model: DinoModel) -> str:
    """Where the download fetches ``model``: the hub's URL, or the same path on the server
    named by ``$HF_ENDPOINT`` (a mirror of the hub, as huggingface_hub reads it)."""
    endpoint = os.environ.get(HF_ENDPOINT_ENV, "").strip().rstrip("/")
    if not endpoint:
        return model.hf_url
    return endpoint + model.hf_url[len(HF_ENDPOINT):]
