"""The pack loaded inside ComfyUI's real Python modules, in the test process (no server).

Not a test module: the ``comfy`` fixture in tests/host/conftest.py builds a :class:`Comfy`, and
the in-process test modules (test_nodes_execute.py, test_train_state_execute.py,
test_apply_streamed.py) import the type and the two helpers below from here.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import torch

# The name the pack is imported under, as ComfyUI imports a custom node: its modules (and their
# loggers) are ``PACK_NAME + ".nodes..."``.
PACK_NAME = "comfy_splice_pack_under_test"


def run_coroutine(coroutine: Any) -> Any:
    """Run a coroutine to completion on a fresh event loop in a worker thread.

    The browser tests' Playwright (sync API) keeps an event loop running in the main thread for
    the whole session, where asyncio.run() refuses to start a second one.
    """
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, coroutine).result()


class Comfy:
    """Handles on ComfyUI's modules and the pack loaded inside them."""

    def __init__(self, pack: ModuleType, folder_paths: ModuleType, args: Any, io: Any,
                 dino_dir: Path, generators_dir: Path, output_dir: Path) -> None:
        self.pack = pack
        self.folder_paths = folder_paths
        self.args = args
        self.io = io
        self.dino_dir = dino_dir
        self.generators_dir = generators_dir
        self.output_dir = output_dir
        extension = run_coroutine(pack.comfy_entrypoint())
        self.nodes = {cls.GET_SCHEMA().node_id: cls for cls in
                      run_coroutine(extension.get_node_list())}

    def run(self, node_id: str, hidden: dict[Any, Any] | None = None, **inputs: Any) -> Any:
        """Execute a node the way ComfyUI does: a class clone with its hidden inputs, under
        inference mode. Returns the NodeOutput."""
        cls = self.nodes[node_id].PREPARE_CLASS_CLONE(hidden or {})
        with torch.inference_mode():
            return cls.execute(**inputs)

    def module(self, name: str) -> ModuleType:
        return sys.modules[f"{PACK_NAME}.{name}"]


def inference_image(height: int, width: int, batch: int = 1, seed: int = 0) -> torch.Tensor:
    """A ComfyUI IMAGE [B, H, W, 3] made inside inference mode, like LoadImage's output."""
    generator = torch.Generator().manual_seed(seed)
    with torch.inference_mode():
        return torch.rand(batch, height, width, 3, generator=generator)


def train_node(comfy: Comfy, losses: tuple[Any, Any], structure: torch.Tensor, appearance: torch.Tensor,
               **widgets: Any) -> Any:
    """Run Train Generator with small defaults (2 steps, a preview every step); ``widgets``
    override them."""
    values = dict(steps=2, learning_rate=0.002, seed=0, identity_weight=1.0, full_image_every=75,
                  preview_every=1, dtype="auto")
    values.update(widgets)
    return comfy.run("SpliceTrainGenerator", structure=structure, appearance=appearance,
                     structure_loss=losses[0], appearance_loss=losses[1], **values)
