"""The Materialistic network (Sharma et al., SIGGRAPH 2023): click a pixel, score every pixel by
how likely it is made of the same material.

The network is a frozen DINO ViT-B/8 (the pack's :class:`~comfy_splice.dino.vit.DinoBackbone`)
read at blocks 2, 5, 8 and 11, and a head trained on top of it. The head follows the authors'
code (prafull7/materialistic, ``src/models/transformer.py``), not the supplementary, wherever the
two differ, so that their published checkpoint loads and gives their scores:

1. per block, every patch token concatenated with the block's CLS token, a linear layer back to
   the ViT width, the tokens laid out as their grid, a 1x1 convolution to ``width`` (256)
   channels, then (blocks 2 and 5 only) bilinear upsampling x4 and x2 with aligned corners: a
   pyramid whose cells are 2, 4, 8 and 8 pixels wide;
2. per level, a cross-attention with the clicked pixel: LayerNorm of the map; the query is the
   normalised map's vector in the cell under the click, concatenated with the click's position
   inside that cell (in [-1, 1]) and sent through a two-layer MLP; the map's keys and values are
   linear layers; ``sigmoid(q . k / sqrt(head dim))`` per head (16 heads) weights the values;
   then a linear layer and a LayerNorm;
3. fusion from the coarsest level up, DPT style: the coarser path through a residual conv unit
   (ReLU, 3x3 conv, ReLU, 3x3 conv, plus the input) added to the level, another residual unit,
   x2 bilinear upsampling (not after the last block-11 level, which is as coarse as block 8's),
   a 1x1 convolution;
4. a per-pixel MLP (256, 128, 128 -> 1) and a sigmoid.

Coordinates: a click is ``(row, col)`` in pixels, as the authors' code indexes its maps
(``map[:, :, row // stride, col // stride]``) and as their demo builds it from Gradio's
``(x, y)`` event. Their local-coordinate helper names its arguments ``x, y`` but receives
``(row, col)``: the first local coordinate is the row's offset.

Their reshapes assume a square 512x512 input (``reshape(B, -1, 256, 256)`` ...); here each map
keeps its own token grid, so any height and width that are multiples of the patch size work, and
a square input gives the same numbers. The parameter names are the pack's own; :func:`key_table`
maps each onto the authors' checkpoint name and shape, the one table the loader checks a file
against (``comfy_splice.materialistic.weights``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import cast
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..dino.vit import DinoBackbone

BLOCKS = (2, 5, 8, 11)
"""The ViT blocks whose output tokens the head reads (the authors' forward hooks)."""
UPSAMPLING = (4, 2, 1, 1)
"""Each level's bilinear upsampling of its token map (a spatial pyramid)."""
HEADS = 16
"""Attention heads of every cross-attention layer (fixed in the authors' code)."""
VIT_PREFIX = "dino_model."
"""Where the authors' network keeps its DINO ViT (``Transformer.dino_model``)."""
LAYER_NORM_EPS = 1e-5
OUTPUT_CHUNK_PIXELS = 1 << 16
"""Pixels per chunk of the final 1x1 convolution and per-pixel MLP: they are pointwise, so
chunking them changes no result and keeps the full-size 256-channel tensors to one at a time."""


@dataclass(frozen=True)
class HeadShape:
    """The head's sizes. The defaults are the authors' network; the loader reads the widths from
    a checkpoint's tensor shapes (heads and blocks are not in the shapes: they are the code's)."""

    vit_width: int = 768
    width: int = 256
    mlp: tuple[int, ...] = (256, 128, 128)
    heads: int = HEADS
    blocks: tuple[int, ...] = BLOCKS

    def __post_init__(self) -> None:
        if self.width % self.heads:
            raise ValueError(f"the head width {self.width} is not divisible by {self.heads} heads")
        if len(self.blocks) != len(UPSAMPLING):
            raise ValueError(f"the head reads {len(UPSAMPLING)} blocks, got {self.blocks}")


def key_table(shape: HeadShape = HeadShape()) -> list[tuple[str, str | None, tuple[int, ...]]]:
    """Every head tensor of the authors' checkpoint: (their name, this module's name, shape).

    Their names are relative to their ``Transformer`` (a Lightning file adds ``net.``, their
    ``model.pth`` ``module.``); the ViT's tensors (``dino_model.*``) are the DINO state dict's and
    are not listed here. Levels are numbered from 1 in their names, from 0 in this module's.
    Two kinds of their tensors exist in the file but take no part in the forward: each fusion
    block's ``layer_norm_1`` and the first residual unit of the coarsest fusion block (it has no
    coarser path to process). They are listed with ``None`` as this module's name: checked for
    shape, then dropped.
    """
    v, w = shape.vit_width, shape.width
    rows: list[tuple[str, str | None, tuple[int, ...]]] = []
    for level in range(len(UPSAMPLING)):
        i = level + 1
        rows += [
            (f"spatial_transform_{i}.0.project.0.weight", f"levels.{level}.readout.weight", (v, 2 * v)),
            (f"spatial_transform_{i}.0.project.0.bias", f"levels.{level}.readout.bias", (v,)),
            (f"spatial_transform_{i}.2.weight", f"levels.{level}.project.weight", (w, v, 1, 1)),
            (f"spatial_transform_{i}.2.bias", f"levels.{level}.project.bias", (w,)),
        ]
        ca, ours = f"cross_attention_{i}", f"attention.{level}"
        rows += [
            (f"{ca}.LayerNorm.weight", f"{ours}.norm.weight", (w,)),
            (f"{ca}.LayerNorm.bias", f"{ours}.norm.bias", (w,)),
            (f"{ca}.get_reference_embedding.reference_feature_extractor.0.weight",
             f"{ours}.reference.0.weight", (2 * w, w + 2)),
            (f"{ca}.get_reference_embedding.reference_feature_extractor.0.bias",
             f"{ours}.reference.0.bias", (2 * w,)),
            (f"{ca}.get_reference_embedding.reference_feature_extractor.2.weight",
             f"{ours}.reference.2.weight", (w, 2 * w)),
            (f"{ca}.get_reference_embedding.reference_feature_extractor.2.bias",
             f"{ours}.reference.2.bias", (w,)),
        ]
        for name in ("query", "key", "value", "out"):
            rows += [(f"{ca}.{name}.weight", f"{ours}.{name}.weight", (w, w)),
                     (f"{ca}.{name}.bias", f"{ours}.{name}.bias", (w,))]
        rows += [(f"{ca}.out_norm.weight", f"{ours}.out_norm.weight", (w,)),
                 (f"{ca}.out_norm.bias", f"{ours}.out_norm.bias", (w,))]
        fu, ours = f"fusion_{i}", f"fusion.{level}"
        coarsest = level == len(UPSAMPLING) - 1
        for theirs, mine in (("resConfUnit1", "coarser_unit"), ("resConfUnit2", "unit")):
            target = None if coarsest and theirs == "resConfUnit1" else f"{ours}.{mine}"
            rows += [
                (f"{fu}.{theirs}.conv1.weight", target and f"{target}.conv1.weight", (w, w, 3, 3)),
                (f"{fu}.{theirs}.conv1.bias", target and f"{target}.conv1.bias", (w,)),
                (f"{fu}.{theirs}.conv2.weight", target and f"{target}.conv2.weight", (w, w, 3, 3)),
            ]
        rows += [
            (f"{fu}.out_conv.weight", f"{ours}.out_conv.weight", (w, w, 1, 1)),
            (f"{fu}.out_conv.bias", f"{ours}.out_conv.bias", (w,)),
            (f"{fu}.layer_norm_1.weight", None, (w,)),
            (f"{fu}.layer_norm_1.bias", None, (w,)),
        ]
    sizes = (w, *shape.mlp, 1)
    for index, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        # their nn.Sequential alternates Linear and ReLU: the linear layers are 0, 2, 4, 6
        rows += [(f"out_conv.{2 * index}.weight", f"pixel_mlp.{2 * index}.weight", (n_out, n_in)),
                 (f"out_conv.{2 * index}.bias", f"pixel_mlp.{2 * index}.bias", (n_out,))]
    return rows


class _Level(nn.Module):
    """One block's token map: readout (patch token + CLS token -> ViT width) and 1x1 conv."""

    def __init__(self, vit_width: int, width: int, upsampling: int) -> None:
        super().__init__()
        self.readout = nn.Linear(2 * vit_width, vit_width)
        self.project = nn.Conv2d(vit_width, width, kernel_size=1)
        self.upsampling = upsampling

    def forward(self, tokens: Tensor, grid: tuple[int, int]) -> Tensor:
        """[B, 1 + rows * cols, C] tokens (CLS first) -> [B, width, rows * up, cols * up]."""
        local = tokens[:, 1:]
        readout = self.readout(torch.cat((local, tokens[:, :1].expand_as(local)), dim=-1))
        grid_map = readout.transpose(1, 2).reshape(readout.shape[0], readout.shape[2], *grid)
        out = self.project(grid_map)
        if self.upsampling > 1:
            # the authors' nn.Upsample(scale_factor=...): the same call, so the same sampling
            out = F.interpolate(out, scale_factor=self.upsampling, mode="bilinear", align_corners=True)
        return out


class _CrossAttention(nn.Module):
    """A level's selection: the click's reference embedding attended over the level's map."""

    def __init__(self, width: int, heads: int, stride: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(width, eps=LAYER_NORM_EPS)
        self.reference = nn.Sequential(nn.Linear(width + 2, 2 * width), nn.ReLU(),
                                       nn.Linear(2 * width, width))
        self.query = nn.Linear(width, width)
        self.key = nn.Linear(width, width)
        self.value = nn.Linear(width, width)
        self.out = nn.Linear(width, width)
        self.out_norm = nn.LayerNorm(width, eps=LAYER_NORM_EPS)
        self.heads = heads
        self.stride = stride
        # The authors scale by the head size of the *input* width (both are 256 in their network).
        self.scale = (width // heads) ** -0.5

    def normalised(self, level_map: Tensor) -> Tensor:
        """[B, C, h, w] -> LayerNorm over channels, as tokens [B, h * w, C] (row-major)."""
        return self.norm(level_map.flatten(2).transpose(1, 2))

    def reference_embedding(self, normed: Tensor, grid: tuple[int, int], clicks: Tensor,
                            batch_index: Tensor) -> Tensor:
        """The clicks' query vectors [N, C]: the normalised map at each click's cell (image
        ``batch_index[n]`` of ``normed``) and the click's offset inside its cell, through the MLP.

        ``clicks`` are (row, col) pixels; the cell is ``click // stride`` and the offset is
        ``(click - cell centre) / ((stride - 1) / 2 + 1e-4)``, so about [-1, 1] per axis.
        """
        cell = torch.div(clicks, self.stride, rounding_mode="trunc")
        vectors = normed[batch_index, cell[:, 0] * grid[1] + cell[:, 1]]
        half = (self.stride - 1) / 2
        offset = (clicks.float() - (cell.float() * self.stride + half)) / (half + 1e-4)
        return self.reference(torch.cat((vectors, offset.to(vectors.dtype)), dim=1))

    def forward(self, normed: Tensor, reference: Tensor) -> Tensor:
        """[B, N, C] normalised map and [B, C] reference -> [B, N, C] selected features."""
        b, n, c = normed.shape
        head = c // self.heads
        q = self.query(reference).reshape(b, self.heads, 1, head)
        k = self.key(normed).reshape(b, n, self.heads, head).transpose(1, 2)
        v = self.value(normed).reshape(b, n, self.heads, head).transpose(1, 2)
        weight = torch.sigmoid((q @ k.transpose(-2, -1)) * self.scale)  # [B, heads, 1, N]
        selected = (weight.transpose(-1, -2) * v).transpose(1, 2).reshape(b, n, c)
        return self.out_norm(self.out(selected))


class _ResidualUnit(nn.Module):
    """ReLU, 3x3 conv, ReLU, 3x3 conv (no bias), plus the input (DPT's residual conv unit)."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(width, width, kernel_size=3, padding=1, bias=True)
        self.conv2 = nn.Conv2d(width, width, kernel_size=3, padding=1, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv2(F.relu(self.conv1(F.relu(x)))) + x


class _Fusion(nn.Module):
    """One fusion step: level + unit(coarser path), another unit, x2 upsampling, 1x1 conv.

    The 1x1 conv is applied by the caller (:meth:`forward` for the inner levels, the chunked
    output for the finest), so that the finest level's full-size tensors exist one at a time.
    """

    def __init__(self, width: int, coarsest: bool) -> None:
        super().__init__()
        if not coarsest:
            self.coarser_unit = _ResidualUnit(width)
        self.unit = _ResidualUnit(width)
        self.out_conv = nn.Conv2d(width, width, kernel_size=1)
        self.upsample = not coarsest

    def merged(self, level: Tensor, coarser: Tensor | None) -> Tensor:
        """Everything before the 1x1 conv: the sum, the second unit, the upsampling."""
        out = level if coarser is None else level + self.coarser_unit(coarser)
        out = self.unit(out)
        if self.upsample:
            out = F.interpolate(out, scale_factor=2, mode="bilinear", align_corners=True)
        return out

    def forward(self, level: Tensor, coarser: Tensor | None = None) -> Tensor:
        return self.out_conv(self.merged(level, coarser))


class MaterialisticNet(nn.Module):
    """DINO ViT (``backbone``) plus the Materialistic head; :meth:`score` is the whole method.

    The backbone stays frozen and in eval mode (:class:`DinoBackbone` does both). The head's
    parameter names map onto the authors' checkpoint through :func:`key_table`.
    """

    def __init__(self, backbone: DinoBackbone, shape: HeadShape | None = None) -> None:
        super().__init__()
        shape = shape or HeadShape(vit_width=backbone.embed_dim)
        if shape.vit_width != backbone.embed_dim:
            raise ValueError(f"the head reads a {shape.vit_width}-wide ViT, the backbone is "
                             f"{backbone.embed_dim} wide")
        if max(shape.blocks) >= backbone.depth:
            raise ValueError(f"the head reads block {max(shape.blocks)}, the backbone has "
                             f"{backbone.depth} blocks")
        if any(backbone.patch_size % up for up in UPSAMPLING):
            raise ValueError(f"the {backbone.patch_size}px patch is not divisible by the pyramid's "
                             f"upsampling {UPSAMPLING}")
        self.backbone = backbone
        self.shape = shape
        self.levels = nn.ModuleList(_Level(shape.vit_width, shape.width, up) for up in UPSAMPLING)
        self.attention = nn.ModuleList(
            _CrossAttention(shape.width, shape.heads, backbone.patch_size // up) for up in UPSAMPLING)
        last = len(UPSAMPLING) - 1
        self.fusion = nn.ModuleList(_Fusion(shape.width, coarsest=i == last) for i in range(last + 1))
        sizes = (shape.width, *shape.mlp, 1)
        layers: list[nn.Module] = []
        for n_in, n_out in zip(sizes[:-1], sizes[1:]):
            layers += [nn.Linear(n_in, n_out), nn.ReLU()]
        self.pixel_mlp = nn.Sequential(*layers[:-1])

    @property
    def patch_size(self) -> int:
        """Input sides must be multiples of this (the ViT's patch)."""
        return self.backbone.patch_size

    def head_state_dict(self) -> dict[str, Tensor]:
        """The head's tensors under this module's names (the backbone's left out)."""
        return {k: v for k, v in self.state_dict().items() if not k.startswith("backbone.")}

    def _level_maps(self, images: Tensor) -> tuple[list[Tensor], list[tuple[int, int]]]:
        """The four level maps [B, width, h_l, w_l] of normalised images, and their grids."""
        features = self.backbone.descriptors(images, blocks=self.shape.blocks, facets=("token",))
        maps = [level(features.facets[(block, "token")], features.grid)
                for level, block in zip(self.levels, self.shape.blocks)]
        return maps, [(int(m.shape[-2]), int(m.shape[-1])) for m in maps]

    def _check_images(self, images: Tensor, name: str) -> None:
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"{name}: expected [B, 3, H, W] images, got {tuple(images.shape)}")
        height, width = images.shape[-2:]
        if height % self.patch_size or width % self.patch_size or height == 0 or width == 0:
            raise ValueError(f"{name}: {width}x{height} is not a multiple of the ViT's "
                             f"{self.patch_size}px patch on both sides; resize it first")

    def _check_clicks(self, clicks: Tensor, batch: int, height: int, width: int) -> Tensor:
        """[B, 2] or [B, K, 2] integer (row, col) pixels inside the query image -> [B, K, 2] long."""
        if clicks.ndim == 2:
            clicks = clicks[:, None]
        if clicks.ndim != 3 or clicks.shape[2] != 2 or clicks.shape[0] != batch or clicks.shape[1] == 0:
            raise ValueError(f"clicks: expected [{batch}, 2] (row, col) pixels, one per image (or "
                             f"[{batch}, K, 2], K clicks per image), got {tuple(clicks.shape)}")
        if clicks.is_floating_point() or clicks.is_complex():
            raise ValueError("clicks: expected integer (row, col) pixel coordinates")
        clicks = clicks.long()
        rows, cols = clicks[..., 0].reshape(-1), clicks[..., 1].reshape(-1)
        outside = (rows < 0) | (rows >= height) | (cols < 0) | (cols >= width)
        if bool(outside.any()):
            first = int(outside.nonzero()[0, 0])
            raise ValueError(f"clicks: (row {int(rows[first])}, col {int(cols[first])}) is outside the "
                             f"{width}x{height} query image")
        return clicks

    @torch.no_grad()
    def score(self, target: Tensor, clicks: Tensor, query: Tensor | None = None) -> Tensor:
        """Material-similarity scores [B, 1, H, W] in [0, 1] of the target images.

        ``target``: [B, 3, H, W] ImageNet-normalised, H and W multiples of the patch (8).
        ``clicks``: [B, 2] integer (row, col) pixels, one per image, in the *query* image; or
        [B, K, 2], K clicks per image, whose scores combine by their maximum (the union of what
        each selects). The ViT and the level maps run once per image whatever K is: only the
        reference embedding, the cross-similarity and the fusion depend on the click.
        ``query``: None when the clicks are in ``target`` itself; else [B or 1, 3, Hq, Wq]
        normalised images (any size that is a multiple of the patch): each level's reference
        embedding is taken from the query's maps at the click and attended over the target's
        maps, as the authors' ``cross_image_reference_output`` does. A query batch of 1 serves
        every click.
        """
        self._check_images(target, "target")
        batch, height, width = target.shape[0], int(target.shape[-2]), int(target.shape[-1])
        first = next(iter(self.pixel_mlp.parameters()))
        dtype, device = first.dtype, first.device
        target = target.to(device=device, dtype=dtype)
        source = target if query is None else query
        if query is not None:
            self._check_images(query, "query")
            if query.shape[0] not in (1, batch):
                raise ValueError(f"query: {query.shape[0]} images for {batch} target images; give one "
                                 f"query image or one per target image")
            source = query.to(device=device, dtype=dtype)
        clicks = self._check_clicks(clicks, batch, int(source.shape[-2]), int(source.shape[-1])).to(device)
        index = torch.arange(batch, device=device) if source.shape[0] == batch else \
            torch.zeros(batch, dtype=torch.long, device=device)

        attentions = [cast(_CrossAttention, a) for a in self.attention]
        fusions = [cast(_Fusion, f) for f in self.fusion]
        # references[k][level]: click k's reference embedding at each level (small vectors)
        references: list[list[Tensor]] = []
        if query is not None:
            query_maps, query_grids = self._level_maps(source)
            normed_query = [a.normalised(m) for a, m in zip(attentions, query_maps)]
            del query_maps
            references = [[a.reference_embedding(n, g, clicks[:, k], index)
                           for a, n, g in zip(attentions, normed_query, query_grids)]
                          for k in range(clicks.shape[1])]
            del normed_query
        target_maps, grids = self._level_maps(target)
        normed = [a.normalised(m) for a, m in zip(attentions, target_maps)]
        del target_maps
        best: Tensor | None = None
        for k in range(clicks.shape[1]):
            selected: list[Tensor] = []
            for level, (attention, grid) in enumerate(zip(attentions, grids)):
                reference = references[k][level] if references else \
                    attention.reference_embedding(normed[level], grid, clicks[:, k], index)
                out = attention(normed[level], reference)
                selected.append(out.transpose(1, 2).reshape(batch, out.shape[2], *grid))
                del out
            path = fusions[3](selected[3])
            for level in (2, 1):
                path = fusions[level](selected[level], path)
            merged = fusions[0].merged(selected[0], path)
            del path, selected
            scores = self._pixel_scores(merged, fusions[0].out_conv, (height, width))
            del merged
            best = scores if best is None else torch.maximum(best, scores)
        assert best is not None  # _check_clicks refuses K = 0
        return best

    def _pixel_scores(self, merged: Tensor, out_conv: nn.Conv2d, size: tuple[int, int]) -> Tensor:
        """The finest fusion's 1x1 conv, the per-pixel MLP and the sigmoid, a few rows at a time
        (all three are pointwise)."""
        batch, channels, height, width = merged.shape
        if (height, width) != size:  # pragma: no cover - the pyramid's arithmetic guards this
            raise RuntimeError(f"fused map {height}x{width} != input {size}")
        out = merged.new_empty(batch, 1, height, width)
        rows = max(1, OUTPUT_CHUNK_PIXELS // max(1, width))
        weight = out_conv.weight.reshape(channels, channels)
        for top in range(0, height, rows):
            chunk = merged[:, :, top:top + rows].permute(0, 2, 3, 1)
            hidden = F.linear(chunk, weight, out_conv.bias)
            out[:, 0, top:top + rows] = torch.sigmoid(self.pixel_mlp(hidden)[..., 0])
        return out

    def estimate_bytes(self, height: int, width: int, batch: int = 1, cross: bool = False) -> int:
        """Peak bytes of one :meth:`score` of ``batch`` images of ``height`` x ``width`` (no grad),
        the network's weights included: see :func:`estimate_bytes`."""
        weights = sum(p.numel() * p.element_size() for p in self.parameters())
        return weights + estimate_bytes(height, width, batch, shape=self.shape,
                                        vit_heads=self.backbone.num_heads,
                                        patch=self.patch_size, cross=cross)


def estimate_bytes(height: int, width: int, batch: int = 1, shape: HeadShape = HeadShape(),
                   vit_heads: int = 12, patch: int = 8, cross: bool = False,
                   bytes_per_value: int = 4) -> int:
    """A generous estimate of the peak bytes of tensors one :meth:`MaterialisticNet.score` needs
    for ``batch`` images of ``height`` x ``width`` (weights not included), for refusing before
    anything is allocated.

    The ViT, as ``descriptors.estimate_bytes`` counts it: per image the attention scores, if the
    kernel materialises them (heads x T^2), and the block's activations (~10 x T x C), plus the
    four blocks' tokens kept. The head, per pixel P of the input: the four levels' maps cover
    P/4, P/16, P/64 and P/64 cells (about 0.35 x width x P floats, kept until fused), the finest
    level's attention and fusion work on a few width x P/4 tensors at once plus a 3x3
    convolution's unfolded input (9 x width x P/4 on the CPU), and the upsampled fusion result
    is width x P at full size (the output's pointwise layers run in chunks): 6 x width x P
    floats covers them (about 5 measured); ``tests/core/test_materialistic_model.py`` checks the
    estimate against the measured peak.
    ``cross``: the query image's maps also exist while its reference embeddings are taken
    (a query of the same size is assumed).
    """
    tokens = (height // patch) * (width // patch) + 1
    vit = vit_heads * tokens * tokens + 10 * tokens * shape.vit_width
    kept_tokens = len(shape.blocks) * tokens * shape.vit_width
    pixels = height * width
    head = 6 * shape.width * pixels
    per_image = max(vit + kept_tokens, head) + (vit if cross else 0)
    return int(batch * per_image * bytes_per_value)


def authors_state_dict(net: MaterialisticNet, vit_prefix: str = VIT_PREFIX) -> dict[str, Tensor]:
    """``net``'s tensors under the authors' names (their ``Transformer.state_dict()``), for tests
    and for files their own code loads. The tensors their network has but never uses are zeros."""
    ours = net.head_state_dict()
    state: dict[str, Tensor] = {}
    for theirs, mine, size in key_table(net.shape):
        state[theirs] = ours[mine] if mine is not None else torch.zeros(size)
    for key, value in net.backbone.vit.state_dict().items():
        state[vit_prefix + key] = value
    return state
