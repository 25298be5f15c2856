"""Randomly initialised DINO-layout ViTs for the tests and benchmarks.

Their features mean nothing; they exist so that tests run without the real weights and
benchmarks measure the real architecture's cost. They go through the same code as real weights
(:func:`save_tiny_backbone` writes a file that :func:`.weights.load_backbone` reads).
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from .models import DEFAULT_MODEL, DinoModel, official_model
from .vit import DinoBackbone, timm_vit


def build_backbone(name: str | DinoModel = DEFAULT_MODEL, device: torch.device | str | None = None,
                   seed: int = 0) -> DinoBackbone:
    """A randomly initialised DINO-architecture backbone (same cost as the real one).

    For tests and benchmarks only: its features mean nothing, and callers must say so.
    """
    model = name if isinstance(name, DinoModel) else official_model(name)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        vit = timm_vit(model.patch_size, model.embed_dim, model.depth, model.embed_dim // 64, 4.0,
                       224, timm_name=model.timm_name)
    backbone = DinoBackbone(vit, name=model.key, source="random init")
    return backbone.to(device) if device is not None else backbone


def save_tiny_backbone(path: str | os.PathLike, patch_size: int = 16, embed_dim: int = 64,
                       depth: int = 2, seed: int = 0) -> Path:
    """Write a tiny random DINO-layout state dict (.pth or .safetensors) for tests.

    It goes through the same loading code as real weights; its features mean nothing.
    """
    path = Path(path)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        vit = timm_vit(patch_size, embed_dim, depth, max(1, embed_dim // 64), 4.0, 224)
    state = {k: v.contiguous() for k, v in vit.state_dict().items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".safetensors":
        from safetensors.torch import save_file

        save_file(state, str(path))
    else:
        torch.save(state, str(path))
    return path
