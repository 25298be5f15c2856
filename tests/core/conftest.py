"""Fixtures for the core tests: the tiny random DINO-layout ViT (tests/conftest.py's
``tiny_dino_file``) loaded through the real loading code, and small synthetic images."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from comfy_splice.dino.vit import DinoBackbone
from comfy_splice.dino.weights import load_backbone


@pytest.fixture(scope="session")
def tiny_backbone(tiny_dino_file: Path) -> DinoBackbone:
    """``tiny_dino_file`` loaded: a 2-block, 64-wide, patch-16 ViT."""
    return load_backbone(tiny_dino_file)


def synthetic_image(height: int, width: int, seed: int) -> torch.Tensor:
    """A smooth, structured test image [1, 3, H, W] in [0, 1] (gradients plus a disc)."""
    gen = torch.Generator().manual_seed(seed)
    ys = torch.linspace(0, 1, height).view(height, 1)
    xs = torch.linspace(0, 1, width).view(1, width)
    centre = torch.rand(2, generator=gen)
    disc = (((ys - centre[0]) ** 2 + (xs - centre[1]) ** 2) < 0.08).float()
    colour = torch.rand(3, 1, 1, generator=gen)
    image = torch.stack([ys.expand(height, width), xs.expand(height, width), disc])
    return (0.5 * image + 0.5 * colour * (1 - disc)).clamp(0, 1)[None]


@pytest.fixture
def pair() -> tuple[torch.Tensor, torch.Tensor]:
    """A structure image and an appearance image of different sizes and aspect ratios."""
    return synthetic_image(72, 96, seed=1), synthetic_image(80, 64, seed=2)
