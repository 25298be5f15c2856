"""The field's standard numbers for appearance transfer, from the same DINO features.

structure distance: MSE between the keys' self-similarity of the output and of the structure
image (papers after Splice use ViT-B/8, the last block, short side 224);
DINO-I: cosine similarity between the CLS tokens of the output and of the appearance image.
Either side may be a single image scored against a batch: its features are computed once.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from .dino.vit import DinoBackbone, Features, self_similarity, splice_features


def _batch(images: Tensor, device: torch.device | str) -> Tensor:
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"expected images of shape [B, 3, H, W], got {tuple(images.shape)}")
    return images.to(device=device, dtype=torch.float32)


def _check_batches(a: Tensor, b: Tensor) -> None:
    if a.shape[0] != b.shape[0] and 1 not in (a.shape[0], b.shape[0]):
        raise ValueError(f"batch sizes differ: {a.shape[0]} vs {b.shape[0]} images "
                         f"(use equal batches, or a single image on one side)")


def _structure_score(output: Features, structure: Features) -> Tensor:
    sim_out, sim_ref = self_similarity(output.keys), self_similarity(structure.keys)
    return (sim_out - sim_ref).square().mean(dim=(1, 2)).cpu()


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
    return _structure_score(splice_features(backbone, _resized_to(output, structure), layer),
                            splice_features(backbone, structure, layer))


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
    output, structure = _batch(output, device), _batch(structure, device)
    appearance = _batch(appearance, device)
    _check_batches(output, structure)
    _check_batches(output, appearance)
    backbone = backbone.to(device)
    out_feats = splice_features(backbone, output, layer)
    resized = _resized_to(output, structure)
    struct_out = out_feats if resized is output else splice_features(backbone, resized, layer)
    return (_structure_score(struct_out, splice_features(backbone, structure, layer)),
            _appearance_score(out_feats, splice_features(backbone, appearance, layer)))
