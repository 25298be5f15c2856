"""Dense DINO-ViT descriptors (Amir, Gandelsman, Bagon, Dekel, "Deep ViT Features as Dense Visual
Descriptors", 2022): extraction, log-binning, saliency, and mapping token grids back to pixels.

A descriptor is one facet (key by default) of one block for every patch token, optionally from a
denser token grid (a patch-embedding stride smaller than the patch) and optionally log-binned
over 3^k neighbourhoods. Saliency is the CLS token's attention in the last block. Everything
comes out of :meth:`DinoBackbone.descriptors` (one forward per image); this module resizes the
images, binning and normalisation, and checks the memory a job needs before it starts.

Images are handled one at a time: the applications accept images of different sizes, and the
attention of one image at stride 4 is already the largest tensor of the job.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from .dino.vit import FACETS, DinoBackbone, dino_input_size, imagenet_normalise
from .refusal import MemoryBudgetError, format_bytes, memory_refusal

log = logging.getLogger(__name__)

VITS8_SALIENCY_HEADS = (0, 2, 4, 5)
"""The heads the paper's code averages for ViT-S/8 saliency (the only model it supports there)."""


class DescriptorMemoryError(MemoryBudgetError):
    """A descriptor job would not fit in memory; the message names the options to lower."""


@dataclass(frozen=True)
class DescriptorConfig:
    """Which descriptors to extract. Defaults are those of the paper's co-segmentation code."""

    load_size: int = 224
    block: int = -1  # the last block: 11 of the 12 of every official DINO ViT, as in the paper
    facet: str = "key"
    stride: int = 4
    bin: bool = False
    hierarchy: int = 2


@dataclass
class ImageDescriptors:
    """Descriptors of one image.

    ``descriptors`` [N, D] (N = rows * cols patch tokens, row-major); ``saliency`` [N] in [0, 1]
    or None; ``cls`` the CLS token's facet [C] or None; ``input_size`` the size the image was
    resized to for the ViT, ``image_size`` its own size; ``patch`` and ``stride`` place token
    (i, j) at pixel centre (i * stride + (patch - 1) / 2, j * ...) of the resized image.
    """

    descriptors: Tensor
    grid: tuple[int, int]
    saliency: Tensor | None
    cls: Tensor | None
    input_size: tuple[int, int]
    image_size: tuple[int, int]
    patch: int
    stride: int


def check_config(backbone: DinoBackbone, config: DescriptorConfig) -> int:
    """Validate a configuration for this backbone; returns the resolved block index.

    The stride must divide the patch size and not exceed it (the patch size itself is the
    model's own grid); anything else is refused with the valid choices. A stride above the
    patch would skip pixels between patches, which is no DINO grid at all: it used to be read
    as "the model's own stride", so stride 32 on a patch-8 model ran while stride 3 was refused.
    """
    if config.facet not in FACETS:
        raise ValueError(f"facet {config.facet!r} is not one of {', '.join(FACETS)}")
    if config.load_size < backbone.patch_size:
        raise ValueError(f"load size {config.load_size} is smaller than one {backbone.patch_size}px patch")
    if config.bin and config.hierarchy < 1:
        raise ValueError("log-binning needs a hierarchy of at least 1")
    patch = backbone.patch_size
    if config.stride > patch:
        divisors = [d for d in range(1, patch + 1) if patch % d == 0]
        raise ValueError(f"stride {config.stride} is larger than the {patch}px patch of {backbone.name}; the "
                         f"stride must divide the patch and not exceed it: use one of {divisors} ({patch} is "
                         f"the model's own grid, smaller is denser).")
    backbone.check_stride(config.stride)
    return backbone.resolve_layer(config.block)


def effective_stride(backbone: DinoBackbone, stride: int) -> int:
    """``stride`` when it is below the patch size, else the patch size (the model's own grid).
    :func:`check_config` refuses strides above the patch, so this only caps direct callers."""
    return backbone.patch_size if stride >= backbone.patch_size else int(stride)


def grid_shape(size: tuple[int, int], patch: int, stride: int) -> tuple[int, int]:
    """Tokens per side of a strided patch embedding of an image of ``size`` (H, W)."""
    return 1 + (size[0] - patch) // stride, 1 + (size[1] - patch) // stride


def descriptor_input(image: Tensor, load_size: int | None) -> Tensor:
    """[1, 3, H, W] in [0, 1] -> the ViT input of dense descriptors: the short side resized to
    ``load_size`` (no cap on the long side), ImageNet-normalised.

    The descriptor paper's rule, not Splice's (:func:`comfy_splice.dino.vit.splice_input`):
    its code resizes with PIL's Lanczos filter; antialiased bicubic is the closest resampling
    torch offers on every device.
    """
    height, width = image.shape[-2:]
    if load_size is not None:
        size = dino_input_size(height, width, load_size, None)
        if size != (height, width):
            image = F.interpolate(image, size=size, mode="bicubic", align_corners=False,
                                  antialias=True).clamp(0, 1)
    return imagenet_normalise(image)


def log_bin(grid: Tensor, hierarchy: int = 2) -> Tensor:
    """Log-binned descriptors of a token grid [B, C, rows, cols] -> [B, C * (1 + 8 * hierarchy), rows, cols].

    Level k averages 3^k x 3^k windows (borders average only the tokens inside the grid) and
    samples them at the 3 x 3 offsets -3^k, 0, +3^k around each token; level 0 keeps all nine,
    the others skip the centre (it is inside level 0's neighbourhood). Offsets that fall outside
    the grid read the nearest border window, as in the paper's code. Bins are ordered level by
    level, row by row, and each bin holds all C channels.
    """
    if hierarchy < 1:
        raise ValueError("hierarchy must be at least 1")
    rows, cols = grid.shape[-2:]
    bins = []
    for level in range(hierarchy):
        size = 3 ** level
        pooled = F.avg_pool2d(grid, size, stride=1, padding=size // 2, count_include_pad=False)
        # Clamp-to-border reads: pad by replication, then slice the shifted windows.
        padded = F.pad(pooled, (size, size, size, size), mode="replicate")
        for dy in (-size, 0, size):
            for dx in (-size, 0, size):
                if level and dy == 0 and dx == 0:
                    continue
                bins.append(padded[..., size + dy: size + dy + rows, size + dx: size + dx + cols])
    return torch.cat(bins, dim=1)


def saliency_heads(backbone: DinoBackbone) -> list[int]:
    """The heads averaged for saliency.

    The paper's code picked heads 0, 2, 4 and 5 of DINO ViT-S/8 by inspection and supports no
    other model; for every other model (and for weights not recognised as ViT-S/8) all heads
    are averaged, which is DINO's own way of showing CLS attention.
    """
    if backbone.name == "dino_vits8" and backbone.num_heads == 6:
        return list(VITS8_SALIENCY_HEADS)
    return list(range(backbone.num_heads))


def normalise_saliency(attention: Tensor, heads: Sequence[int]) -> Tensor:
    """CLS attention [B, heads, N] -> the mean over ``heads``, min-max normalised per image to [0, 1].

    A constant map (no contrast at all) becomes all zeros rather than NaN.
    """
    mean = attention[:, list(heads)].float().mean(dim=1)
    low = mean.amin(dim=1, keepdim=True)
    span = mean.amax(dim=1, keepdim=True) - low
    return (mean - low) / torch.where(span > 0, span, torch.ones_like(span))


def estimate_bytes(backbone: DinoBackbone, sizes: Sequence[tuple[int, int]], config: DescriptorConfig,
                   bytes_per_value: int = 4) -> int:
    """A generous estimate of the peak memory of extracting and clustering descriptors.

    Per image in flight: the token activations of a block (qkv, MLP: ~10 x T x C) and the
    attention scores if the attention kernel materialises them (heads x T^2). Kept for all
    images: the descriptors (x 17 when binned) plus their normalised copy.
    """
    stride = effective_stride(backbone, config.stride)
    bins = 1 + 8 * config.hierarchy if config.bin else 1
    peak_image, kept = 0, 0
    for height, width in sizes:
        rows, cols = grid_shape(dino_input_size(height, width, config.load_size, None),
                                backbone.patch_size, stride)
        tokens = rows * cols + 1
        in_flight = backbone.num_heads * tokens * tokens + 10 * tokens * backbone.embed_dim
        peak_image = max(peak_image, in_flight)
        kept += 2 * tokens * backbone.embed_dim * bins
    return (peak_image + kept) * bytes_per_value


def check_memory(backbone: DinoBackbone, sizes: Sequence[tuple[int, int]], config: DescriptorConfig,
                 memory_limit: int | None) -> None:
    """Refuse a job whose estimate exceeds ``memory_limit`` bytes, naming what to lower."""
    if memory_limit is None:
        return
    need = estimate_bytes(backbone, sizes, config)
    if need > memory_limit:
        stride = effective_stride(backbone, config.stride)
        raise memory_refusal(
            f"DINO descriptors of {len(sizes)} image(s) at load size {config.load_size} with stride "
            f"{stride}", f"{format_bytes(need)} of memory", format_bytes(memory_limit),
            f"lower 'load_size' (e.g. {max(backbone.patch_size, config.load_size // 2)}), raise "
            f"'stride' (up to {backbone.patch_size}, the model's own), turn 'bin' off, or give "
            f"fewer images", kind=DescriptorMemoryError)


def extract_descriptors(backbone: DinoBackbone, images: Sequence[Tensor], config: DescriptorConfig,
                                    device: torch.device | str, saliency: bool = False,
                        low_res_saliency: bool = True, with_cls: bool = False,
                        memory_limit: int | None = None,
                        on_image: Callable[[int, int], None] | None = None) -> list[ImageDescriptors]:
    """Descriptors (and optionally saliency) of each image ([1, 3, H, W] or [3, H, W] in [0, 1]).

    One forward per image gives the facet and, when ``low_res_saliency`` is off, the saliency.
    With ``low_res_saliency`` (the paper code's default) saliency comes from a second, cheap
    forward at half the load size with the model's own stride, resized to the descriptor grid
    by PIL's nearest rule (:func:`resize_nearest_pil`, as the paper's code does): the attention
    of a stride-4 grid is the largest tensor of the job.
    ``on_image(done, total)`` is called after each image (progress, and a chance to cancel).
    """
    block = check_config(backbone, config)
    stride = effective_stride(backbone, config.stride)
    images = [im if im.ndim == 4 else im[None] for im in images]
    check_memory(backbone, [(int(im.shape[-2]), int(im.shape[-1])) for im in images], config, memory_limit)
    heads = saliency_heads(backbone)
    results: list[ImageDescriptors] = []
    with torch.no_grad():
        for image in images:
            image = image.to(device=device, dtype=torch.float32)
            batch = descriptor_input(image, config.load_size)
            in_forward = saliency and not low_res_saliency
            dense = backbone.descriptors(batch, (block,), (config.facet,), stride, saliency=in_forward)
            tokens = dense.facets[(block, config.facet)][0].float()
            rows, cols = dense.grid
            cls, patches = tokens[0], tokens[1:]
            if config.bin:
                grid = patches.T.reshape(1, -1, rows, cols)
                patches = log_bin(grid, config.hierarchy)[0].flatten(1).T
            sal = None
            if saliency:
                if in_forward:
                    assert dense.cls_attention is not None
                    sal = normalise_saliency(dense.cls_attention, heads)[0]
                else:
                    sal = _low_res_saliency(backbone, image, (batch.shape[-2], batch.shape[-1]), (rows, cols),
                                            heads, device)
            results.append(ImageDescriptors(
                descriptors=patches.contiguous(), grid=(rows, cols), saliency=sal,
                cls=cls if with_cls else None, input_size=(int(batch.shape[-2]), int(batch.shape[-1])),
                image_size=(int(image.shape[-2]), int(image.shape[-1])), patch=backbone.patch_size,
                stride=stride))
            if on_image is not None:
                on_image(len(results), len(images))
    return results


def _low_res_saliency(backbone: DinoBackbone, image: Tensor, load: tuple[int, int],
                      grid: tuple[int, int], heads: Sequence[int], device: torch.device | str) -> Tensor:
    """Saliency at half the load size and the model's own stride, resized to ``grid`` by PIL's
    nearest rule, as the paper's code resizes it (a PIL image, ``NEAREST``)."""
    half = (max(backbone.patch_size, load[0] // 2), max(backbone.patch_size, load[1] // 2))
    small = F.interpolate(image, size=half, mode="bicubic", align_corners=False, antialias=True).clamp(0, 1)
    dense = backbone.descriptors(imagenet_normalise(small), (-1,), ("key",), None, saliency=True)
    assert dense.cls_attention is not None
    sal = normalise_saliency(dense.cls_attention, heads)[0].reshape(dense.grid)
    return resize_nearest_pil(sal, grid).flatten()


def pil_nearest_indices(in_size: int, out_size: int) -> list[int]:
    """For each of ``out_size`` cells, the one of ``in_size`` cells PIL's ``NEAREST`` resize reads.

    PIL samples cell centres: output cell i reads input cell floor((i + 0.5) * in / out), the
    last one at most. It computes that position as a running sum in double precision (half a
    step, then one step per cell), and where (i + 0.5) * in / out is a whole number the sum can
    land just below it (4 -> 6 cells: cell 4 reads cell 2, not 3); the same sum here gives PIL's
    index for every cell, ties included. torch's ``"nearest-exact"`` is the same centre rule in
    float32 and differs from PIL at such ties; its ``"nearest"`` reads floor(i * in / out), which
    differs wherever the ratio is not whole.
    """
    if in_size < 1 or out_size < 1:
        raise ValueError(f"cannot resize {in_size} cells to {out_size}")
    step = in_size / out_size
    position = step * 0.5
    indices = []
    for _ in range(out_size):
        indices.append(min(int(position), in_size - 1))
        position += step
    return indices


def resize_nearest_pil(values: Tensor, size: tuple[int, int]) -> Tensor:
    """[..., rows, cols] -> [..., size[0], size[1]] by PIL's ``NEAREST`` rule on each axis
    (:func:`pil_nearest_indices`), with the values unchanged (no interpolation, no rounding)."""
    rows = torch.tensor(pil_nearest_indices(values.shape[-2], size[0]), device=values.device)
    cols = torch.tensor(pil_nearest_indices(values.shape[-1], size[1]), device=values.device)
    return values.index_select(-2, rows).index_select(-1, cols)


def grid_to_image(values: Tensor, info: ImageDescriptors, mode: str = "bilinear") -> Tensor:
    """Token-grid values [C, rows, cols] -> [C, H, W] at the image's own resolution.

    Each token sits at the centre of its patch in the resized image (patch and stride known),
    and each output pixel samples the grid at its own position mapped into that frame, so maps
    line up with the image however the stride, load size and aspect ratio combine. Pixels
    outside the outermost token centres take the border token's value.
    """
    height, width = info.image_size
    rows, cols = info.grid
    device = values.device
    coords = []
    for size, load, count in ((height, info.input_size[0], rows), (width, info.input_size[1], cols)):
        pixel = (torch.arange(size, device=device, dtype=torch.float32) + 0.5) * load / size - 0.5
        position = (pixel - (info.patch - 1) / 2) / info.stride
        coords.append(2 * position / (count - 1) - 1 if count > 1 else torch.zeros_like(position))
    ys, xs = torch.meshgrid(coords[0], coords[1], indexing="ij")
    sample_grid = torch.stack((xs, ys), dim=-1)[None]
    out = F.grid_sample(values[None].float(), sample_grid, mode=mode, padding_mode="border",
                        align_corners=True)
    return out[0]


def l2_normalise(x: Tensor, eps: float = 1e-12) -> Tensor:
    """Rows scaled to unit length (what the paper's code clusters)."""
    return x / x.norm(dim=-1, keepdim=True).clamp_min(eps)


def token_centres(info: ImageDescriptors, indices: Tensor) -> Tensor:
    """Flat token indices -> (x, y) pixel coordinates of the token centres in the original image."""
    rows, cols = info.grid
    ys = (indices // cols).float() * info.stride + (info.patch - 1) / 2
    xs = (indices % cols).float() * info.stride + (info.patch - 1) / 2
    scale_y = info.image_size[0] / info.input_size[0]
    scale_x = info.image_size[1] / info.input_size[1]
    return torch.stack(((xs + 0.5) * scale_x - 0.5, (ys + 0.5) * scale_y - 0.5), dim=-1)


def tokens_per_image(backbone: DinoBackbone, size: tuple[int, int], config: DescriptorConfig) -> int:
    """How many patch tokens an image of ``size`` gets under ``config`` (for messages and benches)."""
    rows, cols = grid_shape(dino_input_size(size[0], size[1], config.load_size, None),
                            backbone.patch_size, effective_stride(backbone, config.stride))
    return rows * cols


__all__ = ["DescriptorConfig", "DescriptorMemoryError", "ImageDescriptors", "check_config", "check_memory",
           "descriptor_input", "effective_stride", "estimate_bytes", "extract_descriptors", "grid_shape",
           "grid_to_image", "l2_normalise", "log_bin", "normalise_saliency", "pil_nearest_indices",
           "resize_nearest_pil", "saliency_heads", "token_centres", "tokens_per_image"]
