"""The field's standard numbers for appearance transfer, from the same DINO features.

structure distance: MSE between the keys' self-similarity of the output and of the structure
image (papers after Splice use ViT-B/8, the last block, short side 224);
DINO-I: cosine similarity between the CLS tokens of the output and of the appearance image.
structure drift: the structure distance taken apart per token location (where the layout
changed), from the same features: the map costs no extra ViT forward.
Either side may be a single image scored against a batch: its features are computed once.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from .dino.vit import DinoBackbone, Features, dino_input_size, self_similarity, splice_features


def _batch(images: Tensor, device: torch.device | str) -> Tensor:
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"expected images of shape [B, 3, H, W], got {tuple(images.shape)}")
    return images.to(device=device, dtype=torch.float32)


def _check_batches(a: Tensor, b: Tensor) -> None:
    if a.shape[0] != b.shape[0] and 1 not in (a.shape[0], b.shape[0]):
        raise ValueError(f"batch sizes differ: {a.shape[0]} vs {b.shape[0]} images "
                         f"(use equal batches, or a single image on one side)")


def _row_drift(output: Features, structure: Features) -> Tensor:
    """[B, T]: the mean squared difference of each token's self-similarity row (CLS first).

    Every row has T entries, so the mean of these row means is exactly the MSE over the whole
    T x T matrix, i.e. the structure distance; both are derived from this one tensor.
    """
    sim_out, sim_ref = self_similarity(output.keys), self_similarity(structure.keys)
    return (sim_out - sim_ref).square().mean(dim=2)


def _structure_score(rows: Tensor) -> Tensor:
    return rows.mean(dim=1).cpu()


def token_grid(backbone: DinoBackbone, height: int, width: int) -> tuple[int, int]:
    """(rows, cols) of the patch tokens of a ``height`` x ``width`` image as the metrics see it
    (short side 224, long side at most 480, pixels past a whole patch dropped)."""
    dino_h, dino_w = dino_input_size(height, width)
    return dino_h // backbone.patch_size, dino_w // backbone.patch_size


def _drift_grid(rows: Tensor, grid: tuple[int, int]) -> Tensor:
    """[B, T] row drift -> [B, rows, cols] per location, whose mean is the structure distance.

    The CLS token's row is no location: it has the weight 1/T in the metric, so it is shared
    evenly over the P = T - 1 locations, and each location keeps its own row with the weight
    P/T: value = (P * own row + CLS row) / T. The grid's mean is then (sum of all T rows) / T.
    """
    count = rows.shape[1]
    if count != 1 + grid[0] * grid[1]:
        raise ValueError(f"{count} tokens do not make a {grid[0]}x{grid[1]} grid plus the CLS token")
    patches = count - 1
    per_token = (patches * rows[:, 1:] + rows[:, :1]) / count
    return per_token.reshape(rows.shape[0], *grid).cpu()


def _appearance_score(output: Features, appearance: Features) -> Tensor:
    return F.cosine_similarity(output.cls.float(), appearance.cls.float(), dim=-1).cpu()


def _resized_to(output: Tensor, structure: Tensor) -> Tensor:
    if output.shape[-2:] == structure.shape[-2:]:
        return output
    return F.interpolate(output, size=structure.shape[-2:], mode="bilinear", align_corners=False)


def structure_distance(backbone: DinoBackbone, output: Tensor, structure: Tensor,
                       device: torch.device | str, layer: int = -1) -> Tensor:
    """Per-image MSE of keys self-similarity; the output is resized to the structure image's size."""
    output, structure = _batch(output, device), _batch(structure, device)
    _check_batches(output, structure)
    backbone = backbone.to(device)
    return _structure_score(_row_drift(splice_features(backbone, _resized_to(output, structure), layer),
                                       splice_features(backbone, structure, layer)))


def structure_drift(backbone: DinoBackbone, output: Tensor, structure: Tensor,
                    device: torch.device | str, layer: int = -1) -> Tensor:
    """Per-location structure distance [B, rows, cols] on the structure image's token grid.

    How far each location's keys self-similarity row in the output departs from the structure
    image's; its mean over the grid equals :func:`structure_distance`. The output is resized to
    the structure image's size, as there.
    """
    output, structure = _batch(output, device), _batch(structure, device)
    _check_batches(output, structure)
    backbone = backbone.to(device)
    rows = _row_drift(splice_features(backbone, _resized_to(output, structure), layer),
                      splice_features(backbone, structure, layer))
    return _drift_grid(rows, token_grid(backbone, *structure.shape[-2:]))


def drift_to_image(grid_map: Tensor, backbone: DinoBackbone, height: int, width: int) -> Tensor:
    """[B, rows, cols] per-location drift -> [B, H, W] at the image's size, in the same units.

    The tokens cover the image only up to the last whole patch at DINO's input size, so the grid
    is stretched bilinearly over that part and its last row and column repeated over the few
    pixels beyond, keeping each location over the pixels it saw. Bilinear stretching keeps the
    mean close to the grid's (exact only for whole-number stretches).
    """
    rows, cols = grid_map.shape[-2:]
    dino_h, dino_w = dino_input_size(height, width)
    covered_h = max(1, min(height, round(height * rows * backbone.patch_size / dino_h)))
    covered_w = max(1, min(width, round(width * cols * backbone.patch_size / dino_w)))
    picture = F.interpolate(grid_map[:, None].float(), size=(covered_h, covered_w),
                            mode="bilinear", align_corners=False)
    picture = F.pad(picture, (0, width - covered_w, 0, height - covered_h), mode="replicate")
    return picture[:, 0]


def dino_i(backbone: DinoBackbone, output: Tensor, appearance: Tensor,
           device: torch.device | str, layer: int = -1) -> Tensor:
    """Per-image cosine similarity of the CLS tokens of output and appearance image."""
    output, appearance = _batch(output, device), _batch(appearance, device)
    _check_batches(output, appearance)
    backbone = backbone.to(device)
    return _appearance_score(splice_features(backbone, output, layer),
                             splice_features(backbone, appearance, layer))


def splice_scores(backbone: DinoBackbone, output: Tensor, structure: Tensor, appearance: Tensor,
                  device: torch.device | str, layer: int = -1) -> tuple[Tensor, Tensor]:
    """(structure distance, DINO-I) per image, reading the output's features once.

    Same numbers as the two functions above; when the output already has the structure image's
    size (a Splice output always does) one ViT forward of the output serves both.
    """
    distance, similarity, _ = splice_scores_with_drift(backbone, output, structure, appearance,
                                                       device, layer)
    return distance, similarity


def splice_scores_with_drift(backbone: DinoBackbone, output: Tensor, structure: Tensor,
                             appearance: Tensor, device: torch.device | str,
                             layer: int = -1) -> tuple[Tensor, Tensor, Tensor]:
    """(structure distance, DINO-I, structure drift grid [B, rows, cols]) per image.

    The drift grid (:func:`structure_drift`) comes from the very self-similarity rows the
    distance is the mean of: no ViT forward beyond those of :func:`splice_scores`.
    """
    output, structure = _batch(output, device), _batch(structure, device)
    appearance = _batch(appearance, device)
    _check_batches(output, structure)
    _check_batches(output, appearance)
    backbone = backbone.to(device)
    out_feats = splice_features(backbone, output, layer)
    resized = _resized_to(output, structure)
    struct_out = out_feats if resized is output else splice_features(backbone, resized, layer)
    rows = _row_drift(struct_out, splice_features(backbone, structure, layer))
    return (_structure_score(rows),
            _appearance_score(out_feats, splice_features(backbone, appearance, layer)),
            _drift_grid(rows, token_grid(backbone, *structure.shape[-2:])))
