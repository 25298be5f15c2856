"""Splice's three loss terms, each a small configuration object that knows how to score features.

The terms only read features; they never run the ViT. The training loop gathers what every
term needs from one batched forward and hands each term the block it asked for, so adding a
term never adds a forward.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from .dino.vit import Features, self_similarity


def self_similarity_mse(keys: Tensor, target_keys: Tensor, eps: float = 1e-8) -> Tensor:
    """MSE between the cosine self-similarity matrices of two key sets, [B, T, C] each.

    Always the direct T x T form. The C x C Gram identity
    ||XX^T - YY^T||^2 = ||X^T X||^2 - 2 ||X^T Y||^2 + ||Y^T Y||^2 would be cheaper for T > C,
    but it subtracts large sums to get a small difference: as training converges the loss goes
    to zero while the sums do not, so in fp32 the value loses precision exactly when the loss
    history is read to judge convergence. DINO inputs have at most ~1700 tokens (480 px long
    side), so the T x T matrices cost at most ~12 MB each.
    """
    if keys.shape != target_keys.shape:
        raise ValueError(f"key shapes differ: {tuple(keys.shape)} vs {tuple(target_keys.shape)}")
    return F.mse_loss(self_similarity(keys, eps), self_similarity(target_keys, eps))


@dataclass(frozen=True)
class StructureLoss:
    """Keep the structure image's layout: MSE of the keys' self-similarity (paper weight 1)."""

    weight: float = 1.0
    layer: int = -1

    def __call__(self, output: Features, target: Features) -> Tensor:
        return self_similarity_mse(output.keys, target.keys)


@dataclass(frozen=True)
class AppearanceLoss:
    """Take the appearance image's look: MSE of the CLS tokens (paper weight 10)."""

    weight: float = 10.0
    layer: int = -1

    def __call__(self, output: Features, target: Features) -> Tensor:
        return F.mse_loss(output.cls.float(), target.cls.float())


@dataclass(frozen=True)
class IdentityLoss:
    """Leave the appearance image alone: MSE of the keys of G(B') and B' (paper weight 1)."""

    weight: float = 1.0
    layer: int = -1

    def __call__(self, output: Features, target: Features) -> Tensor:
        return F.mse_loss(output.keys.float(), target.keys.float())


def zero_like(reference: Tensor) -> Tensor:
    """A scalar zero on the reference's device, for terms that are off this step."""
    return torch.zeros((), device=reference.device, dtype=torch.float32)
