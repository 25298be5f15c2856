"""Small random Materialistic networks and checkpoint files in the authors' layouts, for tests.

Their scores mean nothing; they exist so that the network and its loader are tested without the
authors' checkpoint, through the same code (:func:`save_checkpoint` writes what
:func:`.weights.load_materialistic` reads).
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Literal

import torch

from ..dino.vit import DinoBackbone, timm_vit
from .net import HeadShape, MaterialisticNet, authors_state_dict

TINY_HEAD = HeadShape(vit_width=64, width=32, mlp=(32, 16, 16))
"""A head 8 times narrower than the authors' (16 heads of 2 channels), on a 64-wide ViT."""

Layout = Literal["lightning", "dataparallel", "plain"]


def tiny_backbone(seed: int = 0, width: int = 64, grid: int = 8) -> DinoBackbone:
    """A random 12-block, patch-8 ViT (the blocks the head reads exist), ``grid`` x ``grid``
    native position embeddings."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        vit = timm_vit(8, width, 12, max(1, width // 64), 4.0, 8 * grid)
    return DinoBackbone(vit, name="tiny-vit-p8", source="random init")


def tiny_net(seed: int = 0, shape: HeadShape = TINY_HEAD) -> MaterialisticNet:
    """A random network on :func:`tiny_backbone`; every head tensor is random (the LayerNorms'
    too), so that a mistake in any of them changes the scores. Weights are about unit-gain, the
    query, key and reference layers three times that, so that the click visibly matters while the
    scores stay away from the sigmoid's flat ends."""
    net = MaterialisticNet(tiny_backbone(seed, width=shape.vit_width), shape)
    with torch.random.fork_rng(devices=[]), torch.no_grad():
        torch.manual_seed(seed + 1)
        for name, tensor in net.named_parameters():
            if name.startswith("backbone."):
                continue
            gain = 3.0 if any(part in name for part in (".query.", ".key.", ".reference.")) else 1.0
            std = 0.2 if tensor.ndim == 1 else gain / tensor[0].numel() ** 0.5
            tensor.copy_(torch.randn_like(tensor) * std)
    return net.eval()


def save_checkpoint(net: MaterialisticNet, path: str | os.PathLike, layout: Layout = "lightning",
                    with_vit: bool = True, extras: dict[str, object] | None = None) -> Path:
    """Write ``net`` as the authors' code saves it.

    ``lightning``: ``{"state_dict": {"net.<key>": ...}, "epoch": ..., "global_step": ...,
    "hyper_parameters": ...}`` plus ``extras`` (the hyper-parameters hold an argparse namespace,
    as a script's arguments would, which ``weights_only`` refuses); ``dataparallel``:
    ``{"module.<key>": ...}``; ``plain``: the bare keys (``.safetensors`` when ``path`` says so).
    ``with_vit=False`` leaves out ``dino_model.*``.
    """
    path = Path(path)
    state = {k: v.detach().clone().contiguous() for k, v in authors_state_dict(net).items()
             if with_vit or not k.startswith("dino_model.")}
    path.parent.mkdir(parents=True, exist_ok=True)
    if layout == "lightning":
        obj: object = {"epoch": 7, "global_step": 1234, "pytorch-lightning_version": "1.9.0",
                       "state_dict": {f"net.{k}": v for k, v in state.items()},
                       "hyper_parameters": {"args": argparse.Namespace(lr=1e-4, batch_size=8)},
                       **(extras or {})}
    elif layout == "dataparallel":
        obj = {f"module.{k}": v for k, v in state.items()}
    elif path.suffix == ".safetensors":
        from safetensors.torch import save_file

        save_file(state, str(path))
        return path
    else:
        obj = state
    torch.save(obj, str(path))
    return path
