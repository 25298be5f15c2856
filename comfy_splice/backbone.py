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
import pickle
import re
import shutil
import tempfile
import urllib.error
import urllib.request
import zipfile
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, ContextManager, Iterable, Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .validation import read_safetensors_header, short, short_text

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


FACETS = ("key", "query", "value", "token")
"""What one token can be described by: the attention's key, query or value (heads concatenated,
head-major) or the block's output token."""


@dataclass
class DenseFeatures:
    """Everything one forward gives for dense descriptors (Amir et al.).

    ``facets[(block, facet)]`` is [B, 1 + rows * cols, C] with the CLS token first, the patch
    tokens in row-major order of the ``grid``. ``cls_attention`` is the last block's attention
    of the CLS query over the patch tokens, [B, heads, rows * cols] (None unless asked for).
    ``stride`` is the patch-embedding stride the grid was made with.
    """

    facets: dict[tuple[int, str], Tensor]
    grid: tuple[int, int]
    stride: int
    cls_attention: Tensor | None = None


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

    def _position_embedding(self, height: int, width: int,
                            grid: tuple[int, int] | None = None) -> Tensor:
        """Position embeddings for a ``height`` x ``width`` pixel input, by DINO's own rule.

        DINO keeps the native embeddings only when the token count is the native one *and* the
        input is square in pixels; otherwise it resamples the native grid bicubically with the
        scale factor (grid + 0.1) / native side. So a 224x229 input, whose grid is the native
        28x28, is still resampled (with scale 28.1 / 28): the pixel size is needed, not the grid.
        ``grid`` is the token grid when the patch embedding runs with a smaller stride
        (descriptors); by default it is the model's own, ``height // patch`` x ``width // patch``.
        """
        rows, cols = grid if grid is not None else (height // self.patch_size, width // self.patch_size)
        pos = self.vit.pos_embed
        n_native = pos.shape[1] - 1
        if rows * cols == n_native and height == width:
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

    def features(self, images: Tensor, layers: Iterable[int] = (-1,),
                 fp32_keys: bool = False) -> dict[int, Features]:
        """One forward of normalised [B, 3, H, W] images -> {block index: Features}.

        Stops after the deepest requested block. Pixels beyond a multiple of the patch size are
        dropped by the patch embedding, as in DINO. ``fp32_keys`` turns autocast off from the
        first requested block on (its ``qkv`` projection and everything after run in fp32):
        the losses compare small differences of keys, which bf16 rounding would swamp, while
        the blocks before it (most of the cost) may stay in low precision.
        """
        wanted = sorted({self.resolve_layer(i) for i in layers})
        rows, cols = images.shape[-2] // self.patch_size, images.shape[-1] // self.patch_size
        if rows < 1 or cols < 1:
            raise ValueError(f"a {images.shape[-2]}x{images.shape[-1]} input is smaller than one "
                             f"{self.patch_size}px ViT patch")
        x = self.vit.patch_embed.proj(images).flatten(2).transpose(1, 2)
        cls = self.vit.cls_token.expand(x.shape[0], -1, -1).to(x.dtype)
        pos = self._position_embedding(images.shape[-2], images.shape[-1])
        x = torch.cat((cls, x), dim=1) + pos.to(x.dtype)
        out: dict[int, Features] = {}
        for index, block in enumerate(self.vit.blocks[: wanted[-1]]):
            with _full_precision(fp32_keys and index >= wanted[0], x.device):
                x, keys = self._block(block, x.float() if fp32_keys and index >= wanted[0] else x)
            if index in wanted:
                out[index] = Features(cls=x[:, 0], keys=keys)
        with _full_precision(fp32_keys, x.device):
            out[wanted[-1]] = self._last_block(self.vit.blocks[wanted[-1]],
                                               x.float() if fp32_keys else x)
        return out

    def check_stride(self, stride: int | None) -> int:
        """The patch-embedding stride to use: ``None`` is the model's own (its patch size)."""
        if stride is None:
            return self.patch_size
        stride = int(stride)
        if not 1 <= stride <= self.patch_size or self.patch_size % stride:
            divisors = [d for d in range(1, self.patch_size + 1) if self.patch_size % d == 0]
            raise ValueError(f"stride {stride} does not divide the {self.patch_size}px patch of "
                             f"{self.name}; use one of {divisors}.")
        return stride

    def descriptors(self, images: Tensor, blocks: Iterable[int] = (-1,),
                    facets: Iterable[str] = ("key",), stride: int | None = None,
                    saliency: bool = False) -> DenseFeatures:
        """One forward of normalised [B, 3, H, W] images -> every facet of every requested block.

        ``stride`` below the patch size gives a denser token grid (stride 4 on a patch-8 ViT:
        twice the tokens per side). The patch embedding then runs as a functional convolution
        with the module's own weights, so the module is never changed: training, which calls
        :meth:`features`, always sees the model's own stride. Position embeddings are
        interpolated to the new grid by :meth:`_position_embedding` (DINO's rule).
        ``saliency`` also runs the last block's attention for the CLS query (cheap: one query
        row) and returns it; the forward stops after the deepest block it needs.
        """
        facets = tuple(dict.fromkeys(facets))
        unknown = [f for f in facets if f not in FACETS]
        if unknown:
            raise ValueError(f"unknown facet {unknown[0]!r}; use one of {', '.join(FACETS)}")
        wanted = sorted({self.resolve_layer(i) for i in blocks})
        stride = self.check_stride(stride)
        proj = self.vit.patch_embed.proj
        if images.shape[-2] < self.patch_size or images.shape[-1] < self.patch_size:
            raise ValueError(f"a {images.shape[-2]}x{images.shape[-1]} input is smaller than one "
                             f"{self.patch_size}px ViT patch")
        x = F.conv2d(images, proj.weight, proj.bias, stride=stride)
        rows, cols = int(x.shape[-2]), int(x.shape[-1])
        x = x.flatten(2).transpose(1, 2)
        cls = self.vit.cls_token.expand(x.shape[0], -1, -1).to(x.dtype)
        pos = self._position_embedding(images.shape[-2], images.shape[-1], grid=(rows, cols))
        x = torch.cat((cls, x), dim=1) + pos.to(x.dtype)
        last = self.depth - 1 if saliency else wanted[-1]
        out: dict[tuple[int, str], Tensor] = {}
        attention: Tensor | None = None
        for index, block in enumerate(self.vit.blocks[: last + 1]):
            b, t, c = x.shape
            q, k, v, keys = self._qkv(block, x)
            if index in wanted:
                for facet in facets:
                    if facet == "key":
                        out[(index, facet)] = keys
                    elif facet in ("query", "value"):
                        out[(index, facet)] = (q if facet == "query" else v).transpose(1, 2).reshape(b, t, c)
            if saliency and index == self.depth - 1:
                scores = (q[:, :, :1] * q.shape[-1] ** -0.5) @ k.transpose(-2, -1)
                attention = scores.float().softmax(dim=-1)[:, :, 0, 1:]
            needs_output = index < last or (index in wanted and "token" in facets)
            if needs_output:
                a = F.scaled_dot_product_attention(q, k, v)
                x = x + block.attn.proj(a.transpose(1, 2).reshape(b, t, c))
                x = x + block.mlp(block.norm2(x))
                if index in wanted and "token" in facets:
                    out[(index, "token")] = x
        return DenseFeatures(facets=out, grid=(rows, cols), stride=stride, cls_attention=attention)


def _full_precision(enabled: bool, device: torch.device) -> ContextManager[object]:
    """Autocast switched off (fp32 arithmetic) when ``enabled``, else no change."""
    return torch.autocast(device.type, enabled=False) if enabled else nullcontext()


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

# Caps on what a weight file may declare, checked before anything is built. They are far above
# every DINO model (v1 ViT-B/8: depth 12, width 768, MLP ratio 4, patch 8, a 28x28 grid; DINOv2's
# largest ViT-g: depth 40, width 1536) and far below what would take a machine down.
MAX_DEPTH = 48
MAX_WIDTH = 4096
MAX_MLP_RATIO = 8
MAX_PATCH = 32
MAX_GRID = 64
MAX_PARAMETERS = 2_000_000_000  # 8 GB in fp32
MAX_KEYS = 64 + 32 * MAX_DEPTH
MAX_HEADER_BYTES = 1 << 20  # a ViT-B/8 .safetensors header is ~20 KB


def _fail(path: Path, problem: str) -> WeightsError:
    """One short message: the file, its first problem, and what a DINO ViT file looks like."""
    model = DINO_MODELS[DEFAULT_MODEL]
    return WeightsError(f"{path.name} is not a usable DINO ViT weight file: {problem}. Use the "
                        f"weights of a DINO ViT such as {model.file_name} ({model.url}).")


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
    if len(obj) > MAX_KEYS:
        raise _fail(path, f"it holds {len(obj):,} tensors; a ViT of at most {MAX_DEPTH} blocks has "
                          f"fewer than {MAX_KEYS}")
    state: dict[str, Tensor] = {}
    for key, value in obj.items():
        if not isinstance(key, str):
            raise _fail(path, f"the tensor name {short(key)} is not a string")
        for prefix in _PREFIXES:
            if key.startswith(prefix):
                key = key[len(prefix):]
        if key.startswith("head."):
            continue  # DINO's projection head is not part of the backbone
        state[key] = value
    return state


def _read_file(path: Path, lazy: bool = False) -> object:
    """Read .safetensors or .pth/.pt (``weights_only=True``: never unpickle arbitrary code).

    ``lazy`` reads no tensor data: a .safetensors file gives meta tensors (shape and dtype from
    its header), a .pth file in torch's zip format is memory-mapped. The checks then run on
    shapes alone, so a file that declares huge tensors allocates nothing.
    """
    if path.suffix == ".safetensors":
        if lazy:
            try:
                tensors, _ = read_safetensors_header(path, MAX_HEADER_BYTES)
            except ValueError as exc:
                raise _fail(path, str(exc).rstrip(".")) from None
            return {name: torch.empty(info.shape, dtype=info.dtype, device="meta")
                    for name, info in tensors.items()}
        from safetensors.torch import load_file

        return load_file(str(path), device="cpu")
    mmap = lazy and zipfile.is_zipfile(path)
    return torch.load(str(path), map_location="cpu", weights_only=True, mmap=mmap)


def _block_indices(state: Mapping[str, Tensor], path: Path) -> dict[int, dict[str, Tensor]]:
    """The tensors of each transformer block, by index; indices must be exactly 0..N-1."""
    blocks: dict[int, dict[str, Tensor]] = {}
    for key, value in state.items():
        if not key.startswith("blocks."):
            continue
        _, index, *rest = key.split(".", 2)
        if not rest or not index.isdigit() or str(int(index)) != index:
            raise _fail(path, f"the key {short(key)} does not name a block by its number "
                              f"(expected blocks.<0..{MAX_DEPTH - 1}>.<tensor>)")
        if int(index) >= MAX_DEPTH:
            raise _fail(path, f"the key {short(key)} declares block {int(index):,}; at most "
                              f"{MAX_DEPTH} blocks are accepted")
        blocks.setdefault(int(index), {})[rest[0]] = value
    if not blocks:
        raise _fail(path, "it has no transformer blocks (no blocks.0.* keys)")
    depth = max(blocks) + 1
    missing = [i for i in range(depth) if i not in blocks]
    if missing:
        raise _fail(path, f"block {missing[0]} is missing while block {depth - 1} is there "
                          f"(blocks must be numbered 0..N-1)")
    reference = blocks[0]
    for index in range(1, depth):
        block = blocks[index]
        for name, tensor in reference.items():
            if name not in block:
                raise _fail(path, f"block {index} has no {short(name)}, which block 0 has")
            if block[name].shape != tensor.shape:
                raise _fail(path, f"{short_text(f'blocks.{index}.{name}', 80)} has shape "
                                  f"{tuple(block[name].shape)} but block 0's is {tuple(tensor.shape)}")
        extra = [name for name in block if name not in reference]
        if extra:
            raise _fail(path, f"block {index} has {short(extra[0])}, which block 0 has not")
    return blocks


def _architecture(state: Mapping[str, Tensor], path: Path) -> dict[str, float | int]:
    """Infer patch size, width, depth, heads (width / 64) and MLP ratio from the tensors' shapes.

    Every number is checked against the caps above before it is used, and the blocks against
    each other, so nothing is built from a file that only claims a large model.
    """
    required = ("cls_token", "pos_embed", "patch_embed.proj.weight", "blocks.0.attn.qkv.weight",
                "blocks.0.mlp.fc1.weight")
    missing = [k for k in required if k not in state]
    if missing:
        raise WeightsError(
            f"{path} is not a DINO ViT state dict (missing {', '.join(missing)}); expected the "
            f"weights of a DINO ViT such as {DINO_MODELS[DEFAULT_MODEL].file_name} "
            f"({DINO_MODELS[DEFAULT_MODEL].url}).")
    blocks = _block_indices(state, path)
    proj = state["patch_embed.proj.weight"]
    if proj.ndim != 4 or proj.shape[1] != 3 or proj.shape[2] != proj.shape[3]:
        raise WeightsError(f"{path}: patch embedding of shape {tuple(proj.shape)} is not a "
                           f"3-channel square-patch ViT.")
    embed_dim, patch_size = int(proj.shape[0]), int(proj.shape[2])
    if not 1 <= patch_size <= MAX_PATCH:
        raise _fail(path, f"its patch size is {patch_size}; at most {MAX_PATCH} is accepted")
    if not 64 <= embed_dim <= MAX_WIDTH:
        raise _fail(path, f"its width is {embed_dim:,}; 64 to {MAX_WIDTH} is accepted")
    pos = state["pos_embed"]
    if pos.ndim != 3 or pos.shape[0] != 1 or pos.shape[2] != embed_dim or pos.shape[1] < 2:
        raise _fail(path, f"pos_embed has shape {tuple(pos.shape)}; a {embed_dim}-wide ViT needs "
                          f"[1, 1 + grid, {embed_dim}]")
    n_pos = int(pos.shape[1]) - 1
    side = int(round(math.sqrt(n_pos)))
    if side * side != n_pos or embed_dim % 64 != 0:
        raise WeightsError(f"{path}: a {embed_dim}-wide ViT with {n_pos} position embeddings is not "
                           f"a DINO ViT layout (square grid, 64-dim heads).")
    if side > MAX_GRID:
        raise _fail(path, f"its position grid is {side}x{side}; at most {MAX_GRID}x{MAX_GRID} is "
                          f"accepted")
    fc1 = state["blocks.0.mlp.fc1.weight"]
    if fc1.ndim != 2 or fc1.shape[1] != embed_dim:
        raise _fail(path, f"blocks.0.mlp.fc1.weight has shape {tuple(fc1.shape)}; a "
                          f"{embed_dim}-wide ViT needs [hidden, {embed_dim}]")
    hidden = int(fc1.shape[0])
    if not 1 <= hidden <= MAX_MLP_RATIO * embed_dim:
        raise _fail(path, f"its MLP is {hidden:,} wide, {hidden / embed_dim:.1f} times its width; "
                          f"at most {MAX_MLP_RATIO} times is accepted")
    return {"patch_size": patch_size, "embed_dim": embed_dim, "depth": len(blocks),
            "num_heads": embed_dim // 64, "mlp_ratio": hidden / embed_dim, "img_size": side * patch_size}


def _check_layout(state: Mapping[str, Tensor], arch: Mapping[str, float | int], path: Path) -> None:
    """The tensors are exactly those of the ViT ``arch`` describes: same names, same shapes.

    The expected names and shapes come from the timm module built on the meta device (no
    memory), so DINO's .pth names and timm's own names are both what timm expects.
    """
    with torch.device("meta"):
        expected = {k: v.shape for k, v in _vit(
            int(arch["patch_size"]), int(arch["embed_dim"]), int(arch["depth"]),
            int(arch["num_heads"]), float(arch["mlp_ratio"]), int(arch["img_size"])).state_dict().items()}
    parameters = sum(math.prod(shape) for shape in expected.values())
    if parameters > MAX_PARAMETERS:
        raise _fail(path, f"it declares {parameters:,} parameters; at most {MAX_PARAMETERS:,} are "
                          f"accepted")
    for key, shape in expected.items():
        if key not in state:
            raise _fail(path, f"the tensor {key} is missing")
        if state[key].shape != shape:
            raise _fail(path, f"{key} has shape {tuple(state[key].shape)}, expected {tuple(shape)}")
    unknown = [key for key in state if key not in expected]
    if unknown:
        more = f" (and {len(unknown) - 1} more)" if len(unknown) > 1 else ""
        raise _fail(path, f"it has the unknown tensor {short(unknown[0])}{more}")
    for key, tensor in state.items():
        if not tensor.is_floating_point():
            raise _fail(path, f"{key} holds {tensor.dtype} values, not floating-point weights")


def _check_storage(state: Mapping[str, Tensor], path: Path) -> None:
    """Each tensor's data is really in the file: a .pth can hold a stride-0 view whose declared
    shape is far larger than its data, and building from it would allocate the declared size."""
    declared = 0
    for key, tensor in state.items():
        if tensor.is_meta:
            continue  # safetensors checked its offsets against the file already
        nbytes = tensor.numel() * tensor.element_size()
        if nbytes > tensor.untyped_storage().nbytes():
            raise _fail(path, f"{key} declares {nbytes:,} bytes but the file holds "
                              f"{tensor.untyped_storage().nbytes():,} of its data")
        declared += nbytes
    size = path.stat().st_size
    if declared > size:
        raise _fail(path, f"its tensors declare {declared:,} bytes but the file has {size:,}")


def _read_checked(path: Path, cancel: Callable[[], None] | None
                  ) -> tuple[dict[str, Tensor], dict[str, float | int]]:
    """The file's state dict and architecture, checked on shapes before any data is read."""
    try:
        raw = _read_file(path, lazy=True)
    except WeightsError:
        raise
    except pickle.UnpicklingError as exc:
        found = re.search(r"GLOBAL (\S+)", str(exc))
        what = f" ({short(found.group(1), 80)[1:-1]})" if found else ""
        raise WeightsError(f"Could not read DINO weights from {path}: it holds pickled Python "
                           f"objects other than tensors{what}, which are never loaded (they could "
                           f"run code). Save the state dict alone (torch.save(model.state_dict(), "
                           f"...)) or use .safetensors.") from None
    except Exception as exc:  # torch/zipfile raise many types for a damaged file
        raise WeightsError(f"Could not read DINO weights from {path} ({type(exc).__name__}: "
                           f"{short_text(exc, 200)}). The file may be truncated or not a "
                           f".pth/.safetensors file: download it again (e.g. "
                           f"{DINO_MODELS[DEFAULT_MODEL].url}).") from None
    state = _extract_state_dict(raw, path)
    arch = _architecture(state, path)
    _check_layout(state, arch, path)
    _check_storage(state, path)
    if cancel is not None:
        cancel()
    if path.suffix == ".safetensors":
        try:
            state = _extract_state_dict(_read_file(path), path)
        except Exception as exc:  # safetensors' SafetensorError for data it cannot read
            raise WeightsError(f"Could not read DINO weights from {path} "
                               f"({short_text(exc, 200)}): download it again.") from None
    return state, arch


def _model_name(arch: Mapping[str, float | int], path: Path) -> str:
    """The official key when the shape matches one, else the file's stem."""
    for model in DINO_MODELS.values():
        if (model.patch_size, model.embed_dim, model.depth) == (
                arch["patch_size"], arch["embed_dim"], arch["depth"]):
            return model.key
    return path.stem


def load_backbone(path: str | os.PathLike, device: torch.device | str | None = None,
                  cancel: Callable[[], None] | None = None) -> DinoBackbone:
    """Load a DINO ViT from a local .pth or .safetensors file; errors name the file and the fix.

    The file's names and shapes are checked against the caps and against each other before any
    tensor data is read or anything is built (see ``_architecture``). The module is built on the
    meta device and takes the file's tensors as its weights, so no random initialisation runs
    and the weights exist once. ``cancel`` is called between the stages (e.g. ComfyUI's
    interrupt check), so a large legitimate file can still be cancelled.
    """
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"DINO weights file {path} does not exist. Put a DINO ViT file there, e.g. "
                           f"{DINO_MODELS[DEFAULT_MODEL].file_name} from {DINO_MODELS[DEFAULT_MODEL].url}.")
    state, arch = _read_checked(path, cancel)
    weights: dict[str, Tensor] = {}
    for key, tensor in state.items():
        weights[key] = tensor.to(dtype=torch.float32, copy=True, memory_format=torch.contiguous_format)
        if not torch.isfinite(weights[key]).all():
            raise _fail(path, f"{key} holds NaN or infinite values")
    state = {}
    if cancel is not None:
        cancel()
    with torch.device("meta"):
        vit = _vit(int(arch["patch_size"]), int(arch["embed_dim"]), int(arch["depth"]),
                   int(arch["num_heads"]), float(arch["mlp_ratio"]), int(arch["img_size"]))
    try:
        vit.load_state_dict(weights, strict=True, assign=True)
    except RuntimeError as exc:
        raise WeightsError(f"{path} does not match a DINO ViT layout: {short_text(exc, 300)}") from None
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

