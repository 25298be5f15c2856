"""The frozen DINO-ViT that supplies Splice's two representations.

Splice reads everything it needs from a single ViT forward: the CLS token of a block's output
(appearance) and the attention keys of that block (structure, identity). timm provides the
module layout (its VisionTransformer uses the official DINO state-dict names), but the forward
is written here so that the keys come straight out of the ``qkv`` projection that the attention
itself uses: computing them again, or asking the attention for its matrix, would cost a second
pass. Inputs of any size follow DINO's own position-embedding interpolation rule, because the
full-image steps of training always hit it and timm's rule differs from it by ~0.5%.
"""

from __future__ import annotations

import functools
import http.client
import logging
import math
import os
import shutil
import tempfile
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn

log = logging.getLogger(__name__)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class WeightsError(ValueError):
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
    depth: int = 12

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
                  _DINO_URL.format(stem="dino_deitsmall16_pretrain"), 16, 384),
        DinoModel("dino_vits8", "vit_small_patch8_224.dino", "dino_deitsmall8_pretrain.pth",
                  _DINO_URL.format(stem="dino_deitsmall8_pretrain"), 8, 384),
        DinoModel("dino_vitb16", "vit_base_patch16_224.dino", "dino_vitbase16_pretrain.pth",
                  _DINO_URL.format(stem="dino_vitbase16_pretrain"), 16, 768),
        DinoModel("dino_vitb8", "vit_base_patch8_224.dino", "dino_vitbase8_pretrain.pth",
                  _DINO_URL.format(stem="dino_vitbase8_pretrain"), 8, 768),
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


@dataclass
class Features:
    """What Splice reads from one block: CLS token [B, C] and keys [B, T, C] (heads concatenated)."""

    cls: Tensor
    keys: Tensor


def self_similarity(keys: Tensor, eps: float = 1e-8) -> Tensor:
    """Cosine self-similarity of the token keys, [B, T, C] -> [B, T, T] (the structure descriptor).

    The denominator is the product of the norms clamped at ``eps``, as in the paper's code.
    """
    keys = keys.float()
    norms = keys.norm(dim=-1, keepdim=True)
    denom = torch.clamp(norms @ norms.transpose(1, 2), min=eps)
    return (keys @ keys.transpose(1, 2)) / denom


def dino_input_size(height: int, width: int, short_side: int = 224,
                    long_side_max: int | None = 480) -> tuple[int, int]:
    """Size an image is resized to before DINO: short side ``short_side``, long side capped.

    Same arithmetic as torchvision's ``Resize(short_side, max_size=long_side_max)``, which the
    reference used, so token grids match it exactly.
    """
    short, long = (width, height) if width <= height else (height, width)
    new_short, new_long = short_side, int(short_side * long / short)
    if long_side_max is not None and new_long > long_side_max:
        new_short, new_long = int(long_side_max * new_short / new_long), long_side_max
    return (new_long, new_short) if width <= height else (new_short, new_long)


def prepare(images: Tensor, short_side: int = 224, long_side_max: int | None = 480,
            antialias: bool = False) -> Tensor:
    """Resize [B, 3, H, W] images in [0, 1] for DINO and ImageNet-normalise them.

    Differentiable, so gradients reach the generator. ``antialias`` defaults to the reference's
    behaviour (its torchvision resized tensors without antialiasing).
    """
    height, width = images.shape[-2:]
    size = dino_input_size(height, width, short_side, long_side_max)
    if size != (height, width):
        images = F.interpolate(images, size=size, mode="bilinear", align_corners=False,
                               antialias=antialias)
    mean, std = _imagenet_stats(images.device, images.dtype)
    return (images - mean) / std


@functools.lru_cache(maxsize=8)
def _imagenet_stats(device: torch.device, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
    """ImageNet mean and std on ``device``, made once: a fresh host-to-device copy every call
    would make every training step wait for the GPU."""
    with torch.inference_mode(False), torch.no_grad():
        mean = torch.tensor(IMAGENET_MEAN, dtype=dtype).view(1, 3, 1, 1).to(device)
        std = torch.tensor(IMAGENET_STD, dtype=dtype).view(1, 3, 1, 1).to(device)
    return mean, std


class DinoBackbone(nn.Module):
    """A frozen DINO ViT (timm module layout) with a forward that returns Splice's features."""

    def __init__(self, vit: nn.Module, name: str, source: str = "") -> None:
        super().__init__()
        self.vit = vit
        self.name = name
        self.source = source
        self.patch_size = int(vit.patch_embed.proj.kernel_size[0])
        self.embed_dim = int(vit.cls_token.shape[-1])
        self.depth = len(vit.blocks)
        self.num_heads = int(vit.blocks[0].attn.num_heads)
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> "DinoBackbone":
        """Stay in eval mode: DINO is a frozen feature extractor (no dropout, ever)."""
        return super().train(False)

    def _position_embedding(self, rows: int, cols: int) -> Tensor:
        """DINO's rule: bicubic, scale factor (grid + 0.1) / 28, skipped for the native square grid."""
        pos = self.vit.pos_embed
        n_native = pos.shape[1] - 1
        if rows * cols == n_native and rows == cols:
            return pos
        side = int(math.sqrt(n_native))
        grid = pos[:, 1:].reshape(1, side, side, -1).permute(0, 3, 1, 2)
        grid = F.interpolate(grid, scale_factor=((rows + 0.1) / side, (cols + 0.1) / side),
                             mode="bicubic", align_corners=False)
        if grid.shape[-2:] != (rows, cols):  # pragma: no cover - guards DINO's +0.1 trick
            raise RuntimeError(f"position grid {tuple(grid.shape[-2:])} != {(rows, cols)}")
        grid = grid.permute(0, 2, 3, 1).reshape(1, rows * cols, -1)
        return torch.cat((pos[:, :1], grid), dim=1)

    @staticmethod
    def _qkv(block: nn.Module, x: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """q, k, v as [B, heads, T, d] and the keys with heads concatenated, [B, T, C]."""
        attn = block.attn
        b, t, c = x.shape
        qkv = attn.qkv(block.norm1(x)).reshape(b, t, 3, attn.num_heads, c // attn.num_heads)
        keys = qkv[:, :, 1].reshape(b, t, c)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)
        return q, k, v, keys

    def _block(self, block: nn.Module, x: Tensor) -> tuple[Tensor, Tensor]:
        """One pre-norm transformer block with fused attention; returns its output and keys."""
        b, t, c = x.shape
        q, k, v, keys = self._qkv(block, x)
        a = F.scaled_dot_product_attention(q, k, v)
        x = x + block.attn.proj(a.transpose(1, 2).reshape(b, t, c))
        return x + block.mlp(block.norm2(x)), keys

    def _last_block(self, block: nn.Module, x: Tensor) -> Features:
        """The deepest block Splice reads: keys of every token, but the output of the CLS token only.

        Nothing after this block is computed, and Splice reads no patch token's output here, so
        the attention (CLS query only), projection and MLP run for one token instead of T: the
        same numbers as the full block for about a quarter of its cost.
        """
        b, _, c = x.shape
        q, k, v, keys = self._qkv(block, x)
        a = F.scaled_dot_product_attention(q[:, :, :1], k, v)
        cls = x[:, :1] + block.attn.proj(a.transpose(1, 2).reshape(b, 1, c))
        cls = cls + block.mlp(block.norm2(cls))
        return Features(cls=cls[:, 0], keys=keys)

    def resolve_layer(self, layer: int) -> int:
        """Map a block index (negative counts from the end, -1 = last) to 0..depth-1."""
        index = layer + self.depth if layer < 0 else layer
        if not 0 <= index < self.depth:
            raise ValueError(f"block index {layer} is out of range for a {self.depth}-block ViT "
                             f"(use 0..{self.depth - 1}, or -1 for the last block)")
        return index

    def features(self, images: Tensor, layers: Iterable[int] = (-1,)) -> dict[int, Features]:
        """One forward of normalised [B, 3, H, W] images -> {block index: Features}.

        Stops after the deepest requested block. Pixels beyond a multiple of the patch size are
        dropped by the patch embedding, as in DINO.
        """
        wanted = sorted({self.resolve_layer(i) for i in layers})
        rows, cols = images.shape[-2] // self.patch_size, images.shape[-1] // self.patch_size
        if rows < 1 or cols < 1:
            raise ValueError(f"a {images.shape[-2]}x{images.shape[-1]} input is smaller than one "
                             f"{self.patch_size}px ViT patch")
        x = self.vit.patch_embed.proj(images).flatten(2).transpose(1, 2)
        cls = self.vit.cls_token.expand(x.shape[0], -1, -1).to(x.dtype)
        x = torch.cat((cls, x), dim=1) + self._position_embedding(rows, cols).to(x.dtype)
        out: dict[int, Features] = {}
        for index, block in enumerate(self.vit.blocks[: wanted[-1]]):
            x, keys = self._block(block, x)
            if index in wanted:
                out[index] = Features(cls=x[:, 0], keys=keys)
        out[wanted[-1]] = self._last_block(self.vit.blocks[wanted[-1]], x)
        return out


def extract(backbone: DinoBackbone, images: Tensor, layer: int = -1, short_side: int = 224,
            long_side_max: int | None = 480) -> Features:
    """Features of [B, 3, H, W] images in [0, 1] at DINO's input size, without gradients.

    For analysis (metrics, visualisation), where nothing trains: one forward of the batch.
    """
    with torch.no_grad():
        index = backbone.resolve_layer(layer)
        return backbone.features(prepare(images, short_side, long_side_max), (index,))[index]


def _vit(patch_size: int, embed_dim: int, depth: int, num_heads: int, mlp_ratio: float,
         img_size: int, timm_name: str | None = None) -> nn.Module:
    """Build the timm VisionTransformer with DINO's layout (no head, token pooling)."""
    import timm
    from timm.models.vision_transformer import VisionTransformer

    if timm_name is not None:
        return timm.create_model(timm_name, pretrained=False, num_classes=0)
    return VisionTransformer(img_size=img_size, patch_size=patch_size, embed_dim=embed_dim,
                             depth=depth, num_heads=num_heads, mlp_ratio=mlp_ratio,
                             qkv_bias=True, num_classes=0)


def build_backbone(name: str | DinoModel = DEFAULT_MODEL, device: torch.device | str | None = None,
                   seed: int = 0) -> DinoBackbone:
    """A randomly initialised DINO-architecture backbone (same cost as the real one).

    For tests and benchmarks only: its features mean nothing, and callers must say so.
    """
    model = name if isinstance(name, DinoModel) else official_model(name)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        vit = _vit(model.patch_size, model.embed_dim, model.depth, model.embed_dim // 64, 4.0,
                   224, timm_name=model.timm_name)
    backbone = DinoBackbone(vit, name=model.key, source="random init")
    return backbone.to(device) if device is not None else backbone


_PREFIXES = ("module.", "backbone.")


def _extract_state_dict(obj: object, path: Path) -> dict[str, Tensor]:
    """Accept a bare state dict or DINO's training checkpoints ({'teacher': ...}, {'model': ...})."""
    if isinstance(obj, Mapping):
        for wrapper in ("teacher", "model", "state_dict"):
            inner = obj.get(wrapper)
            if isinstance(inner, Mapping):
                obj = inner
                break
    if not isinstance(obj, Mapping) or not all(isinstance(v, Tensor) for v in obj.values()):
        raise WeightsError(f"{path} does not hold a state dict of tensors; expected the weights of a "
                           f"DINO ViT such as {DINO_MODELS[DEFAULT_MODEL].file_name}.")
    state: dict[str, Tensor] = {}
    for key, value in obj.items():
        for prefix in _PREFIXES:
            if key.startswith(prefix):
                key = key[len(prefix):]
        if key.startswith("head."):
            continue  # DINO's projection head is not part of the backbone
        state[key] = value
    return state


def _read_file(path: Path) -> object:
    """Read .safetensors or .pth/.pt (``weights_only=True``: never unpickle arbitrary code)."""
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path), device="cpu")
    return torch.load(str(path), map_location="cpu", weights_only=True)


def _architecture(state: Mapping[str, Tensor], path: Path) -> dict[str, float | int]:
    """Infer patch size, width, depth, heads (width / 64) and MLP ratio from the tensors' shapes."""
    required = ("cls_token", "pos_embed", "patch_embed.proj.weight", "blocks.0.attn.qkv.weight",
                "blocks.0.mlp.fc1.weight")
    missing = [k for k in required if k not in state]
    if missing:
        raise WeightsError(
            f"{path} is not a DINO ViT state dict (missing {', '.join(missing)}); expected the "
            f"weights of a DINO ViT such as {DINO_MODELS[DEFAULT_MODEL].file_name} "
            f"({DINO_MODELS[DEFAULT_MODEL].url}).")
    proj = state["patch_embed.proj.weight"]
    if proj.ndim != 4 or proj.shape[1] != 3 or proj.shape[2] != proj.shape[3]:
        raise WeightsError(f"{path}: patch embedding of shape {tuple(proj.shape)} is not a "
                           f"3-channel square-patch ViT.")
    embed_dim, patch_size = int(proj.shape[0]), int(proj.shape[2])
    depth = 1 + max(int(k.split(".")[1]) for k in state if k.startswith("blocks."))
    n_pos = int(state["pos_embed"].shape[1]) - 1
    side = int(round(math.sqrt(n_pos)))
    if side * side != n_pos or embed_dim % 64 != 0:
        raise WeightsError(f"{path}: a {embed_dim}-wide ViT with {n_pos} position embeddings is not "
                           f"a DINO ViT layout (square grid, 64-dim heads).")
    mlp_ratio = state["blocks.0.mlp.fc1.weight"].shape[0] / embed_dim
    return {"patch_size": patch_size, "embed_dim": embed_dim, "depth": depth,
            "num_heads": embed_dim // 64, "mlp_ratio": mlp_ratio, "img_size": side * patch_size}


def _model_name(arch: Mapping[str, float | int], path: Path) -> str:
    """The official key when the shape matches one, else the file's stem."""
    for model in DINO_MODELS.values():
        if (model.patch_size, model.embed_dim, model.depth) == (
                arch["patch_size"], arch["embed_dim"], arch["depth"]):
            return model.key
    return path.stem


def load_backbone(path: str | os.PathLike, device: torch.device | str | None = None) -> DinoBackbone:
    """Load a DINO ViT from a local .pth or .safetensors file; errors name the file and the fix."""
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"DINO weights file {path} does not exist. Put a DINO ViT file there, e.g. "
                           f"{DINO_MODELS[DEFAULT_MODEL].file_name} from {DINO_MODELS[DEFAULT_MODEL].url}.")
    try:
        raw = _read_file(path)
    except WeightsError:
        raise
    except Exception as exc:  # torch/safetensors raise many types for a damaged file
        raise WeightsError(f"Could not read DINO weights from {path} ({type(exc).__name__}: {exc}). "
                           f"The file may be truncated or not a .pth/.safetensors file: download it "
                           f"again (e.g. {DINO_MODELS[DEFAULT_MODEL].url}).") from exc
    state = _extract_state_dict(raw, path)
    arch = _architecture(state, path)
    vit = _vit(int(arch["patch_size"]), int(arch["embed_dim"]), int(arch["depth"]),
               int(arch["num_heads"]), float(arch["mlp_ratio"]), int(arch["img_size"]))
    try:
        vit.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise WeightsError(f"{path} does not match a DINO ViT layout: {exc}") from exc
    backbone = DinoBackbone(vit, name=_model_name(arch, path), source=str(path))
    log.info("loaded %s from %s (patch %d, width %d, depth %d)", backbone.name, path,
             backbone.patch_size, backbone.embed_dim, backbone.depth)
    return backbone.to(device) if device is not None else backbone


def missing_weights_message(name: str, directory: str | os.PathLike) -> str:
    """What to tell a user whose official weights are not on disk."""
    model = official_model(name)
    return (f"DINO weights {name if name in model.file_names else model.hf_file_name} are not in "
            f"{directory}. Download {model.hf_url} and save it there as {model.hf_file_name} (or "
            f"put the official {model.file_name} from {model.url} there), or allow the download "
            f"explicitly.")


def download_url(model: DinoModel) -> str:
    """Where ``download_weights`` fetches ``model``: the hub's URL, or the same path on the
    server named by ``$HF_ENDPOINT`` (a mirror of the hub, as huggingface_hub reads it)."""
    endpoint = os.environ.get(HF_ENDPOINT_ENV, "").strip().rstrip("/")
    if not endpoint:
        return model.hf_url
    return endpoint + model.hf_url[len(HF_ENDPOINT):]


DownloadProgress = Callable[[int, "int | None"], None]


def download_weights(name: str, directory: str | os.PathLike, timeout: float = 60.0,
                     progress: DownloadProgress | None = None) -> Path:
    """Download an official DINO ViT (the hub's safetensors) into ``directory`` on explicit request.

    The file is written into a hidden temporary folder inside ``directory`` (same file system),
    loaded as a DINO ViT there, and only then renamed to its final name, so an interrupted,
    truncated or wrong download never leaves a file under that name. ``progress(done_bytes,
    total_bytes or None)`` is called as the bytes arrive. Errors name the folder, file and URL.
    """
    model = official_model(name)
    directory = Path(directory)
    for present in (directory / file_name for file_name in model.file_names):
        if present.is_file():  # either accepted spelling: nothing to download
            return present
    target = directory / model.hf_file_name
    url = download_url(model)
    fix = (f"Download {url} yourself and save it as {target} (or put the official "
           f"{model.file_name} from {model.url} into {directory}).")
    try:
        directory.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".splice-download-", dir=directory))
    except OSError as exc:
        raise WeightsError(f"Cannot write DINO weights into {directory} ({exc}). {fix}") from exc
    try:
        partial = staging / model.hf_file_name
        log.info("downloading %s to %s", url, target)
        try:
            _fetch(url, partial, timeout, progress)
        except (urllib.error.URLError, OSError, TimeoutError, http.client.HTTPException) as exc:
            raise WeightsError(f"Could not download {model.hf_file_name} from {url} into "
                               f"{directory} ({exc}). {fix}") from exc
        try:
            load_backbone(partial)  # refuse to install something that does not load as a ViT
        except WeightsError as exc:
            raise WeightsError(f"The download of {url} is not a DINO ViT ({exc}); nothing was "
                               f"written to {target}. {fix}") from exc
        os.replace(partial, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    log.info("downloaded %s to %s", url, target)
    return target


def _fetch(url: str, path: Path, timeout: float, progress: DownloadProgress | None) -> None:
    """Stream ``url`` into ``path``; a body shorter than its Content-Length is an error."""
    with urllib.request.urlopen(url, timeout=timeout) as resp, open(path, "wb") as out:
        length = resp.headers.get("Content-Length")
        total = int(length) if length and length.isdigit() else None
        done = 0
        if progress is not None:
            progress(0, total)
        while chunk := resp.read(1 << 20):
            out.write(chunk)
            done += len(chunk)
            if progress is not None:
                progress(done, total)
    if total is not None and done != total:
        raise OSError(f"the connection closed after {done} of {total} bytes")


def save_tiny_backbone(path: str | os.PathLike, patch_size: int = 16, embed_dim: int = 64,
                       depth: int = 2, seed: int = 0) -> Path:
    """Write a tiny random DINO-layout state dict (.pth or .safetensors) for tests.

    It goes through the same loading code as real weights; its features mean nothing.
    """
    path = Path(path)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        vit = _vit(patch_size, embed_dim, depth, max(1, embed_dim // 64), 4.0, 224)
    state = {k: v.contiguous() for k, v in vit.state_dict().items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".safetensors":
        from safetensors.torch import save_file

        save_file(state, str(path))
    else:
        torch.save(state, str(path))
    return path

