"""Select by material (Materialistic, Sharma et al., SIGGRAPH 2023): click a material, get every
pixel made of it, in the same image or in another one.

Two ways to score how much each pixel of a *target* image is made of the clicked material:

- **with a Materialistic network** (:class:`MaterialScorer`: the paper's model, loaded from the
  authors' checkpoint by another part of the pack): one score per click, combined by their
  maximum, so several clicks select the union of what each click selects;
- **training-free** (:func:`training_free_logits`, needs only the pack's DINO-ViT): the token
  outputs of four blocks (2, 5, 8, 11 of a 12-block ViT, the blocks the paper's network reads),
  each L2-normalised, concatenated and renormalised; the cosine similarity of every target token
  to the clicked tokens, maximum over the clicks (the same union rule). This is *not* the
  paper's model: it is what DINO's features alone give, without the trained cross-similarity.

Both give a score in [0, 1] per pixel. The mask the node returns is soft but cut at a threshold:
``mask = sigmoid(logit(score) - logit(threshold))``, so its hard part (mask > 0.5) is exactly the
pixels whose score is above the threshold, a threshold of 0.5 leaves the network's score as it
is (the authors' demo cuts at 0.5), and the edge stays as soft as the score. The training-free
score is ``sigmoid((cosine - TRAINING_FREE_CUT) / TRAINING_FREE_SCALE)``, so threshold 0.5 cuts
at cosine :data:`TRAINING_FREE_CUT`, and each threshold moves that cut by
``TRAINING_FREE_SCALE * logit(threshold)`` (0.01..0.99: about +-0.23 cosine).

Working resolution: the authors' demo resizes the short side to 512 with PIL's BOX filter and
centre-crops 512 x 512. Here the *whole* image is resized (no crop, so every pixel gets a score)
so that its short side is 512, with a box (area) filter, each side rounded to a multiple of the
ViT patch, so that DINO's position-embedding rule sees whole patches and the token grid covers
the image exactly (:func:`working_size`). The scores are upsampled bilinearly back to the input's
own size. Queries (a MASK whose pixels above 0.5 are the clicks, or one x/y pixel) are given in
the query image's own pixels and mapped to the working resolution by coverage: a working pixel
is clicked when the centre of a clicked query pixel falls in it, so a thin scribble survives
downscaling, and a single click lands on the working pixel under its centre.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Protocol, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from .dino.vit import DinoBackbone, dino_input_size, imagenet_normalise
from . import visualize
from .refusal import SpliceRefusal

WORKING_SHORT_SIDE = 512
"""The short side every image is resized to (the authors' demo and training resolution)."""

MATERIALISTIC_PATCH = 8
"""The patch of the Materialistic network's ViT-B/8: its working sizes are multiples of it."""

PAPER_BLOCKS = (2, 5, 8, 11)
"""The blocks of a 12-block ViT whose tokens Materialistic reads (and the training-free mode)."""

DEFAULT_THRESHOLD = 0.5
"""Score above which a pixel is selected (the authors' demo default)."""

TRAINING_FREE_CUT = 0.5
"""Cosine similarity (of the concatenated, renormalised multi-block descriptors) at which the
training-free score is 0.5, i.e. the cut at the default threshold. Not calibrated on photographs
with the real ViT-B/8 (the weights cannot be downloaded where this was written); the
``threshold`` input moves it."""

TRAINING_FREE_SCALE = 0.05
"""Cosine units per unit of logit of the training-free score: how soft its edge is."""

MAX_MODEL_CLICKS = 8
"""At most this many clicks of a painted query are scored by the network (one forward each),
spread over the painted pixels by farthest-point sampling; the training-free mode uses every
clicked token (one matrix product)."""

_CHUNK = 1024
"""Query tokens per similarity product (bounds the [target tokens x query tokens] matrix)."""


class MaterialQueryError(SpliceRefusal):
    """The query (clicks) cannot be used as given; the message says what to change."""


class MaterialScorer(Protocol):
    """What Select Material needs from a Materialistic network (``comfy_splice.materialistic``).

    ``target`` [B, 3, H, W] ImageNet-normalised; ``clicks`` [B, K, 2] long, K (row, col) pixels
    of the query image (``query``, or ``target`` itself when None) at the size given; returns
    [B, 1, H, W] scores in [0, 1], the maximum over the K clicks (the union of what each selects;
    the network computes the image's features once for all of them).
    """

    def score(self, target: Tensor, clicks: Tensor, query: Tensor | None = None) -> Tensor: ...


# -- sizes and resampling ---------------------------------------------------------------------


def working_size(height: int, width: int, patch: int, short_side: int = WORKING_SHORT_SIDE) -> tuple[int, int]:
    """The size an image is scored at: short side ``short_side`` (the pack's DINO resize rule,
    :func:`comfy_splice.dino.vit.dino_input_size`, without a cap on the long side), then each side
    rounded to the nearest multiple of ``patch`` (at least one patch), so that the token grid
    covers the whole image and no pixel is dropped by the patch embedding."""
    h, w = dino_input_size(height, width, short_side, None)
    return max(patch, round(h / patch) * patch), max(patch, round(w / patch) * patch)


def to_working(images: Tensor, size: tuple[int, int]) -> Tensor:
    """[B, 3, H, W] in [0, 1] -> resized to ``size`` with a box (area) filter, as the authors'
    PIL BOX resize, and ImageNet-normalised (what DINO and the network expect)."""
    if tuple(images.shape[-2:]) != tuple(size):
        images = F.interpolate(images, size=size, mode="area")
    return imagenet_normalise(images)


def _source_index(source: int, target: int, device: torch.device) -> Tensor:
    """For each of ``source`` pixels along one axis, the working pixel it falls in."""
    centres = (torch.arange(source, device=device, dtype=torch.float64) + 0.5) * (target / source)
    return centres.floor().long().clamp(0, target - 1)


def _any_per_cell(values: Tensor, dim: int, cells: int) -> Tensor:
    """Whether any of ``values`` (0/1) along ``dim`` falls in each of ``cells`` working pixels:
    the source pixels of a cell are a contiguous run, so a cumulative sum counts them."""
    index = _source_index(values.shape[dim], cells, values.device)
    wanted = torch.arange(cells, device=values.device)
    starts = torch.searchsorted(index, wanted)
    ends = torch.searchsorted(index, wanted, right=True)
    sums = F.pad(values.cumsum(dim), (1, 0) if dim == 1 else (0, 0, 1, 0))
    return (sums.index_select(dim, ends) - sums.index_select(dim, starts)) > 0


def query_to_working(query: Tensor, size: tuple[int, int]) -> Tensor:
    """A boolean query [H, W] -> boolean [h, w] at the working ``size``: a working pixel is
    clicked when any clicked query pixel's centre falls in it (a one-pixel click or a thin
    scribble is never lost by downscaling)."""
    by_cols = _any_per_cell(query.long(), 1, size[1])
    return _any_per_cell(by_cols.long(), 0, size[0])


def upsample(maps: Tensor, size: tuple[int, int]) -> Tensor:
    """[B, 1, h, w] (a token grid or the working resolution) -> [B, 1, H, W], bilinearly. The
    grid covers the whole image, so with ``align_corners=False`` each cell lands on its pixels."""
    if tuple(maps.shape[-2:]) == tuple(size):
        return maps
    return F.interpolate(maps, size=size, mode="bilinear", align_corners=False)


# -- queries ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Query:
    """Clicks for every target image: ``masks`` [Q, H, W] boolean at the query image's size
    (Q = 1: the same clicks for every target; else one per target)."""

    masks: Tensor

    def index(self, target: int) -> int:
        """Which of ``masks`` holds the clicks for target image ``target``."""
        return 0 if self.masks.shape[0] == 1 else target


def mask_query(mask: Tensor, query_size: tuple[int, int], targets: int, what: str = "query_mask") -> Query:
    """A MASK [M, H, W] (or [H, W]) painted on the query image: its pixels above 0.5 are the
    clicks. Refused (:class:`MaterialQueryError`) when its size is not the query image's, its
    batch is neither 1 nor one per target image, it holds NaN, or a mask has no pixel above 0.5."""
    if mask.ndim == 2:
        mask = mask[None]
    if mask.ndim != 3:
        raise MaterialQueryError(f"{what}: expected a MASK of shape [batch, height, width], got "
                                 f"{tuple(mask.shape)}. Connect a MASK (e.g. the mask painted in "
                                 f"Load Image's mask editor).")
    height, width = query_size
    if tuple(mask.shape[-2:]) != (height, width):
        raise MaterialQueryError(
            f"{what}: the mask is {mask.shape[-1]}x{mask.shape[-2]} but the image it is clicked on is "
            f"{width}x{height}. Paint the query on that same image (the mask editor of the Load Image "
            f"node that loads it), or resize the mask to it.")
    if mask.shape[0] not in (1, targets):
        raise MaterialQueryError(f"{what}: {mask.shape[0]} masks for {targets} images; give one query "
                                 f"mask for all images, or one per image.")
    if mask.numel() and not bool(torch.isfinite(mask).all()):
        raise MaterialQueryError(f"{what}: the mask holds NaN or infinite values; a mask is 0..1 per "
                                 f"pixel. Check the node that made it.")
    clicks = mask > 0.5
    empty = [i for i in range(clicks.shape[0]) if not bool(clicks[i].any())]
    if empty:
        which = "the mask is" if clicks.shape[0] == 1 else f"mask {empty[0]} of the batch is"
        raise MaterialQueryError(f"{what}: {which} empty (no pixel above 0.5): nothing is clicked. Paint "
                                 f"a dot or a stroke on the material in the mask editor, or disconnect "
                                 f"'{what}' to click with x and y.")
    return Query(clicks)


def point_query(x: int, y: int, query_size: tuple[int, int]) -> Query:
    """One click at pixel (x, y) of the query image (x from the left, y from the top); refused
    when it is outside the image."""
    height, width = query_size
    if not (0 <= int(x) < width and 0 <= int(y) < height):
        raise MaterialQueryError(f"the click x={x}, y={y} is outside the {width}x{height} image it is "
                                 f"clicked on: use x from 0 to {width - 1} and y from 0 to {height - 1}.")
    mask = torch.zeros(1, height, width, dtype=torch.bool)
    mask[0, int(y), int(x)] = True
    return Query(mask)


def check_batches(targets: int, queries: int) -> None:
    """A query image batch is one image (for every target) or one per target image."""
    if queries not in (1, targets):
        raise MaterialQueryError(f"query_image: {queries} images for {targets} target images; give one "
                                 f"query image for all, or one per target image.")


def spread_clicks(pixels: Tensor, count: int) -> Tensor:
    """At most ``count`` of the clicked ``pixels`` [N, 2] (row, col), spread over them: the one
    nearest their mean first, then each time the one farthest from those chosen (farthest-point
    sampling). Deterministic: ties go to the first in row-major order."""
    if pixels.shape[0] <= count:
        return pixels
    points = pixels.double()
    chosen = [int(((points - points.mean(dim=0)) ** 2).sum(dim=1).argmin())]
    nearest = ((points - points[chosen[0]]) ** 2).sum(dim=1)
    while len(chosen) < count:
        index = int(nearest.argmax())
        chosen.append(index)
        nearest = torch.minimum(nearest, ((points - points[index]) ** 2).sum(dim=1))
    return pixels[chosen]


# -- training-free mode -----------------------------------------------------------------------


def descriptor_blocks(depth: int) -> tuple[int, ...]:
    """The blocks the training-free descriptors come from: :data:`PAPER_BLOCKS` on a 12-block ViT;
    on another depth the same relative depths, ``round(b * (depth - 1) / 11)`` (a 2-block test
    ViT reads blocks 0 and 1)."""
    return tuple(sorted({round(b * (depth - 1) / 11) for b in PAPER_BLOCKS}))


def multi_block_descriptors(backbone: DinoBackbone, image: Tensor) -> tuple[Tensor, tuple[int, int]]:
    """ImageNet-normalised [1, 3, h, w] (a multiple of the patch) -> unit descriptors [rows * cols, D]
    and the grid: each block's output tokens L2-normalised, concatenated, divided by sqrt(blocks)
    (a unit vector again, so a dot product is the mean of the blocks' cosines)."""
    blocks = descriptor_blocks(backbone.depth)
    with torch.no_grad():
        dense = backbone.descriptors(image, blocks=blocks, facets=("token",))
    parts = [F.normalize(dense.facets[(block, "token")][0, 1:].float(), dim=-1) for block in blocks]
    return torch.cat(parts, dim=-1) / math.sqrt(len(parts)), dense.grid


def clicked_tokens(query: Tensor, size: tuple[int, int], patch: int) -> Tensor:
    """A boolean query at its image's size -> indices (row-major) of the working-resolution tokens
    holding a click."""
    working = query_to_working(query, size).float()[None, None]
    covered = F.max_pool2d(working, patch)[0, 0] > 0
    return covered.flatten().nonzero()[:, 0]


def best_similarity(target: Tensor, query: Tensor) -> Tensor:
    """[T, D] x [K, D] unit descriptors -> [T]: each target token's cosine to its closest query
    token (several clicks select the union of what each selects), K in chunks."""
    best = torch.full((target.shape[0],), -1.0, device=target.device)
    for start in range(0, query.shape[0], _CHUNK):
        best = torch.maximum(best, (target @ query[start:start + _CHUNK].T).amax(dim=1))
    return best


def training_free_logits(backbone: DinoBackbone, images: Tensor, query: Query, query_images: Tensor | None,
                         device: torch.device | str, short_side: int = WORKING_SHORT_SIDE,
                         on_image: Callable[[int, int], None] | None = None) -> Tensor:
    """[B, 3, H, W] images in [0, 1] -> [B, 1, H, W] logits of the training-free score
    (``(cosine - TRAINING_FREE_CUT) / TRAINING_FREE_SCALE``), at the images' own size.

    ``query_images`` [Q, 3, h, w] is the image the clicks are on (None: each target image
    itself); ``query`` holds the clicks at its size. One ViT forward per target image and per
    distinct query image.
    """
    device = torch.device(device)
    patch = backbone.patch_size
    size = (int(images.shape[-2]), int(images.shape[-1]))
    work = working_size(size[0], size[1], patch, short_side)
    from_query: dict[int, tuple[Tensor, tuple[int, int]]] = {}  # each query image's forward, once

    def query_image_descriptors(q: int) -> tuple[Tensor, tuple[int, int]]:
        if q not in from_query:
            assert query_images is not None
            qimage = query_images[q:q + 1]
            qsize = working_size(int(qimage.shape[-2]), int(qimage.shape[-1]), patch, short_side)
            from_query[q] = multi_block_descriptors(backbone, to_working(qimage.to(device), qsize))[0], qsize
        return from_query[q]

    out = []
    for b in range(images.shape[0]):
        target, grid = multi_block_descriptors(backbone, to_working(images[b:b + 1].to(device), work))
        if query_images is None:  # the clicks are on this image: its own forward serves both
            descriptors, qsize = target, work
        else:
            descriptors, qsize = query_image_descriptors(0 if query_images.shape[0] == 1 else b)
        clicked = descriptors[clicked_tokens(query.masks[query.index(b)].to(device), qsize, patch)]
        similarity = best_similarity(target, clicked).reshape(1, 1, *grid)
        out.append(upsample((similarity - TRAINING_FREE_CUT) / TRAINING_FREE_SCALE, size).cpu())
        if on_image is not None:
            on_image(b + 1, int(images.shape[0]))
    return torch.cat(out)


# -- with a Materialistic network -------------------------------------------------------------


def model_clicks(query: Tensor, size: tuple[int, int], count: int = MAX_MODEL_CLICKS) -> Tensor:
    """A boolean query at its image's size -> [K, 2] long (row, col) clicks at the working ``size``
    (K <= ``count``, spread by :func:`spread_clicks`)."""
    pixels = query_to_working(query, size).nonzero()
    return spread_clicks(pixels, count)


def model_scores(model: MaterialScorer, images: Tensor, query: Query, query_images: Tensor | None,
                 device: torch.device | str, short_side: int = WORKING_SHORT_SIDE,
                 patch: int = MATERIALISTIC_PATCH,
                 on_step: Callable[[int, int], None] | None = None) -> Tensor:
    """[B, 3, H, W] images in [0, 1] -> [B, 1, H, W] Materialistic scores in [0, 1] at their size.

    Every image is scored at its working size (short side 512, multiples of 8) in one
    ``model.score`` call with all its clicks, whose scores the network combines by their maximum
    (the union of what each click selects): the ViT runs once per image, not once per click.
    Clicks are mapped to the working size of the image they are on.
    """
    device = torch.device(device)
    size = (int(images.shape[-2]), int(images.shape[-1]))
    work = working_size(size[0], size[1], patch, short_side)
    qsize = work if query_images is None else working_size(
        int(query_images.shape[-2]), int(query_images.shape[-1]), patch, short_side)
    clicks_of = [model_clicks(query.masks[query.index(b)], qsize) for b in range(images.shape[0])]
    out = []
    for b, clicks in enumerate(clicks_of):
        target = to_working(images[b:b + 1].to(device), work)
        reference = None  # the clicks are on the target itself
        if query_images is not None:
            q = 0 if query_images.shape[0] == 1 else b
            reference = to_working(query_images[q:q + 1].to(device), qsize)
        with torch.no_grad():
            best = model.score(target, clicks[None].to(device), reference).float()
        if tuple(best.shape) != (1, 1, *work):
            raise ValueError(f"the Materialistic network returned scores of shape {tuple(best.shape)} "
                             f"for a {work[1]}x{work[0]} image; expected (1, 1, {work[0]}, {work[1]})")
        if on_step is not None:
            on_step(b + 1, len(clicks_of))
        out.append(upsample(best.clamp(0, 1), size).cpu())
    return torch.cat(out)


# -- from scores to the mask and the picture --------------------------------------------------


def logits_of(scores: Tensor, eps: float = 1e-6) -> Tensor:
    """Scores in [0, 1] -> their logits (clamped away from 0 and 1, so they stay finite)."""
    return torch.logit(scores.clamp(eps, 1 - eps))


def check_threshold(threshold: float) -> float:
    """The threshold is a score strictly between 0 and 1 (0 or 1 would select all or nothing)."""
    value = float(threshold)
    if not (math.isfinite(value) and 0.0 < value < 1.0):
        raise MaterialQueryError(f"threshold is {threshold}; use a value between 0 and 1 (not 0 or 1), "
                                 f"e.g. {DEFAULT_THRESHOLD} (higher selects less).")
    return value


def soft_mask(logits: Tensor, threshold: float = DEFAULT_THRESHOLD) -> Tensor:
    """``sigmoid(logits - logit(threshold))``: a soft mask whose part above 0.5 is exactly the
    pixels scoring above ``threshold``; at 0.5 it is the score itself."""
    return torch.sigmoid(logits - math.log(threshold / (1.0 - threshold)))


def heatmap(scores: Tensor) -> Tensor:
    """[B, 1, H, W] scores in [0, 1] -> [B, 3, H, W]: the pack's one colour ramp
    (:func:`comfy_splice.visualize.heatmap`, as Splice Metrics' drift map), bright = the clicked
    material."""
    return visualize.heatmap(scores[:, 0], 1.0)


# -- memory -----------------------------------------------------------------------------------


def estimate_bytes(sizes: Sequence[tuple[int, int]], patch: int, embed_dim: int, heads: int, blocks: int,
                   with_model: bool = False, short_side: int = WORKING_SHORT_SIDE,
                   bytes_per_value: int = 4) -> int:
    """A generous estimate of the peak memory of selecting in images of ``sizes`` (targets and
    query images).

    Per image in flight: one block's activations (~10 x T x C), the attention scores if the
    kernel materialises them (heads x T^2), the kept descriptors of ``blocks`` blocks (twice: raw
    and normalised) and the similarity of every target token to every query token of a chunk.
    With the network (``with_model``) add its feature pyramid and per-pixel head at the working
    resolution (~8 maps of 256 channels at 4x the token grid, and the 512-wide per-pixel MLP).
    Kept for all images: the full-size scores, mask and heatmap (5 values per pixel).
    """
    peak, kept = 0, 0
    for height, width in sizes:
        h, w = working_size(height, width, patch, short_side)
        tokens = (h // patch) * (w // patch) + 1
        in_flight = heads * tokens * tokens + 10 * tokens * embed_dim + 2 * blocks * tokens * embed_dim
        in_flight += tokens * min(tokens, _CHUNK)
        if with_model:
            in_flight += 8 * 256 * 16 * tokens + 512 * h * w
        peak = max(peak, in_flight)
        kept += 5 * height * width
    return (peak + kept) * bytes_per_value


# -- the whole job ----------------------------------------------------------------------------


@dataclass
class Selection:
    """What Select Material returns: ``mask`` [B, H, W] soft (above 0.5 = selected), ``scores``
    [B, 1, H, W] in [0, 1] (what the threshold cuts; the heatmap shows them), how they were made
    (``mode``) and the most clicked pixels of one query (``clicks``)."""

    mask: Tensor
    scores: Tensor
    mode: str
    clicks: int

    @property
    def selected_fraction(self) -> float:
        """The share of the pixels in the hard part of the mask (above 0.5)."""
        return float((self.mask > 0.5).float().mean())


def select_material(images: Tensor, device: torch.device | str, *, backbone: DinoBackbone | None = None,
                    model: MaterialScorer | None = None, query_mask: Tensor | None = None, x: int = 0,
                    y: int = 0, query_images: Tensor | None = None, threshold: float = DEFAULT_THRESHOLD,
                    short_side: int = WORKING_SHORT_SIDE,
                    on_step: Callable[[int, int], None] | None = None) -> Selection:
    """Select the clicked material in [B, 3, H, W] images in [0, 1].

    The clicks are ``query_mask`` (pixels above 0.5; one mask for all images or one per image)
    or, without one, the pixel (``x``, ``y``); they are on ``query_images`` (one image, or one per
    target) when given, else on each target image itself. With ``model`` the Materialistic network
    scores, else the training-free mode with ``backbone``. Everything the user can get wrong is
    checked before any network runs.
    """
    threshold = check_threshold(threshold)
    targets = int(images.shape[0])
    source = images if query_images is None else query_images
    if query_images is not None:
        check_batches(targets, int(query_images.shape[0]))
    query_size = (int(source.shape[-2]), int(source.shape[-1]))
    query = (mask_query(query_mask, query_size, targets) if query_mask is not None
             else point_query(x, y, query_size))
    if model is not None:
        scores = model_scores(model, images, query, query_images, device, short_side, on_step=on_step)
        logits, mode = logits_of(scores), "Materialistic network"
    elif backbone is not None:
        logits = training_free_logits(backbone, images, query, query_images, device, short_side, on_step)
        scores, mode = torch.sigmoid(logits), "training-free (DINO descriptors, not the paper's model)"
    else:
        raise ValueError("select_material needs a DINO backbone (training-free) or a Materialistic model")
    return Selection(mask=soft_mask(logits, threshold)[:, 0], scores=scores, mode=mode,
                     clicks=int(query.masks.flatten(1).sum(dim=1).max()))
