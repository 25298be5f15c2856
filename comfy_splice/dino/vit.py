"""The DINO ViT forward: Splice's two representations and dense descriptors, from one pass.

Splice reads everything it needs from a single ViT forward: the CLS token of a block's output
(appearance) and the attention keys of that block (structure, identity). timm provides the
module layout (its VisionTransformer uses the official DINO state-dict names), but the forward
is written here so that the keys come straight out of the ``qkv`` projection that the attention
itself uses: computing them again, or asking the attention for its matrix, would cost a second
pass. Inputs of any size follow DINO's own position-embedding interpolation rule, because the
full-image steps of training always hit it and timm's rule differs from it by ~0.5%.

The input rules live here once: the size an image is resized to (:func:`dino_input_size`, also
used by the memory estimates), ImageNet normalisation (:func:`imagenet_normalise`) and the
patch-embedding prelude (:meth:`DinoBackbone._embed`, for both the model's own stride and the
denser strides of the descriptors).
"""

from __future__ import annotations

import functools
import math
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any, ContextManager, Iterable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


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


def splice_input(images: Tensor, short_side: int = 224, long_side_max: int | None = 480,
                 antialias: bool = False) -> Tensor:
    """[B, 3, H, W] images in [0, 1] -> the ViT input of Splice's losses and metrics.

    Resized bilinearly to :func:`dino_input_size` (the reference's torchvision ``Resize``),
    then ImageNet-normalised. Differentiable, so gradients reach the generator. ``antialias``
    defaults to the reference's behaviour (its torchvision resized tensors without
    antialiasing). The dense descriptors resize by another rule (the descriptor paper's):
    :func:`comfy_splice.descriptors.descriptor_input`.
    """
    height, width = images.shape[-2:]
    size = dino_input_size(height, width, short_side, long_side_max)
    if size != (height, width):
        images = F.interpolate(images, size=size, mode="bilinear", align_corners=False,
                               antialias=antialias)
    return imagenet_normalise(images)


def imagenet_normalise(images: Tensor) -> Tensor:
    """[B, 3, H, W] in [0, 1] -> ImageNet-normalised, as every DINO ViT was trained."""
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

    # timm's module tree, read by attribute (patch_embed.proj, blocks[i].attn...): nn.Module types
    # every attribute as Tensor | Module, so the tree is Any here; the weight loader checks it.
    vit: Any

    def __init__(self, vit: nn.Module, name: str, source: str = "") -> None:
        super().__init__()
        self.vit = vit
        self.name = name
        self.source = source
        self.patch_size = int(self.vit.patch_embed.proj.kernel_size[0])
        self.embed_dim = int(self.vit.cls_token.shape[-1])
        self.depth = len(self.vit.blocks)
        self.num_heads = int(self.vit.blocks[0].attn.num_heads)
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
        native = pos[:, 1:].reshape(1, side, side, -1).permute(0, 3, 1, 2)
        resampled = F.interpolate(native, scale_factor=((rows + 0.1) / side, (cols + 0.1) / side),
                                  mode="bicubic", align_corners=False)
        if resampled.shape[-2:] != (rows, cols):  # pragma: no cover - guards DINO's +0.1 trick
            raise RuntimeError(f"position grid {tuple(resampled.shape[-2:])} != {(rows, cols)}")
        resampled = resampled.permute(0, 2, 3, 1).reshape(1, rows * cols, -1)
        return torch.cat((pos[:, :1], resampled), dim=1)

    def _embed(self, images: Tensor, stride: int) -> tuple[Tensor, tuple[int, int]]:
        """The tokens that enter block 0, [B, 1 + rows * cols, C], and their grid (rows, cols).

        The patch embedding runs as a functional convolution with the module's own weights at
        ``stride`` (the patch size for Splice's features, less for denser descriptors), so the
        module itself never changes; then the CLS token, and position embeddings by DINO's rule
        for this pixel size and grid. Pixels beyond the last whole patch are dropped, as in DINO.
        """
        if images.shape[-2] < self.patch_size or images.shape[-1] < self.patch_size:
            raise ValueError(f"a {images.shape[-2]}x{images.shape[-1]} input is smaller than one "
                             f"{self.patch_size}px ViT patch")
        proj = self.vit.patch_embed.proj
        x = F.conv2d(images, proj.weight, proj.bias, stride=stride)
        rows, cols = int(x.shape[-2]), int(x.shape[-1])
        x = x.flatten(2).transpose(1, 2)
        cls = self.vit.cls_token.expand(x.shape[0], -1, -1).to(x.dtype)
        pos = self._position_embedding(images.shape[-2], images.shape[-1], grid=(rows, cols))
        return torch.cat((cls, x), dim=1) + pos.to(x.dtype), (rows, cols)

    @staticmethod
    def _qkv(block: Any, x: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """q, k, v as [B, heads, T, d] and the keys with heads concatenated, [B, T, C]."""
        attn = block.attn
        b, t, c = x.shape
        qkv = attn.qkv(block.norm1(x)).reshape(b, t, 3, attn.num_heads, c // attn.num_heads)
        keys = qkv[:, :, 1].reshape(b, t, c)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)
        return q, k, v, keys

    def _block(self, block: Any, x: Tensor) -> tuple[Tensor, Tensor]:
        """One pre-norm transformer block with fused attention; returns its output and keys."""
        b, t, c = x.shape
        q, k, v, keys = self._qkv(block, x)
        a = F.scaled_dot_product_attention(q, k, v)
        x = x + block.attn.proj(a.transpose(1, 2).reshape(b, t, c))
        return x + block.mlp(block.norm2(x)), keys

    def _last_block(self, block: Any, x: Tensor) -> Features:
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
        x, _ = self._embed(images, self.patch_size)
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
        twice the tokens per side). :meth:`_embed` runs the patch embedding at that stride with
        the module's own weights, so the module is never changed: training, which calls
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
        x, (rows, cols) = self._embed(images, stride)
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


def splice_features(backbone: DinoBackbone, images: Tensor, layer: int = -1, short_side: int = 224,
                    long_side_max: int | None = 480) -> Features:
    """Splice's features of [B, 3, H, W] images in [0, 1] (:func:`splice_input`), without gradients.

    For analysis (metrics, visualisation), where nothing trains: one forward of the batch.
    """
    with torch.no_grad():
        index = backbone.resolve_layer(layer)
        return backbone.features(splice_input(images, short_side, long_side_max), (index,))[index]


def timm_vit(patch_size: int, embed_dim: int, depth: int, num_heads: int, mlp_ratio: float,
             img_size: int, timm_name: str | None = None) -> nn.Module:
    """Build the timm VisionTransformer with DINO's layout (no head, token pooling).

    The modules are those of the official weights' names; :class:`DinoBackbone` runs its own
    forward over them. timm is imported here, not at the top, so that importing this module
    stays cheap for code that never builds a ViT.
    """
    import timm
    from timm.models.vision_transformer import VisionTransformer

    if timm_name is not None:
        return timm.create_model(timm_name, pretrained=False, num_classes=0)
    return VisionTransformer(img_size=img_size, patch_size=patch_size, embed_dim=embed_dim,
                             depth=depth, num_heads=num_heads, mlp_ratio=mlp_ratio,
                             qkv_bias=True, num_classes=0)
