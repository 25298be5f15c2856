"""The Splice graph the server tests queue, and its tiny inputs.

Not a test module: the ``splice_files`` fixture in tests/host/conftest.py uploads the inputs,
and test_nodes_server.py, test_train_state_server.py and test_memory_budget.py build their
prompts with :func:`splice_graph`.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from PIL import Image, ImageDraw

TINY = "tiny_dino_vit.pth"  # the file name tiny_dino_file gets in the server's splice_dino folder
STRUCTURE_SIZE = (64, 48)  # PIL (width, height)
APPEARANCE_SIZE = (56, 72)
TRAIN = "6"  # node id of Train Generator in splice_graph()


def sample_picture(size: tuple[int, int], seed: int) -> Image.Image:
    """A small image with shapes and a gradient, so the ViT sees some structure."""
    rng = np.random.default_rng(seed)
    width, height = size
    ramp = np.linspace(0, 255, width, dtype=np.float32)[None, :, None]
    base = np.broadcast_to(ramp, (height, width, 3)) * rng.uniform(0.3, 1.0, size=3)
    image = Image.fromarray(base.astype(np.uint8))
    draw = ImageDraw.Draw(image)
    for _ in range(4):
        x0, y0 = int(rng.integers(0, width - 8)), int(rng.integers(0, height - 8))
        colour = tuple(int(c) for c in rng.integers(0, 256, size=3))
        draw.ellipse((x0, y0, x0 + int(rng.integers(6, 24)), y0 + int(rng.integers(6, 24))), fill=colour)
    return image


def splice_graph(files: dict[str, str], *, structure: str = "structure", appearance: str = "appearance",
                 dino: str = TINY, steps: int = 6, preview_every: int = 2, seed: int = 0,
                 prefix: str = "nodes/out", **train: Any) -> dict[str, Any]:
    """LoadImage x2 -> Load DINO-ViT -> losses -> Train -> Splice Output -> SaveImage.

    ``files`` maps input names to uploaded file names (``splice_files``, or a test's own)."""
    widgets = {"steps": steps, "learning_rate": 0.002, "seed": seed, "identity_weight": 1.0,
               "full_image_every": 75, "preview_every": preview_every, "dtype": "auto"}
    widgets.update(train)
    return {
        "1": {"class_type": "LoadImage", "inputs": {"image": files[structure]}},
        "2": {"class_type": "LoadImage", "inputs": {"image": files[appearance]}},
        "3": {"class_type": "SpliceLoadDINO", "inputs": {"model_name": dino, "download_if_missing": False}},
        "4": {"class_type": "SpliceStructureLoss", "inputs": {"dino": ["3", 0], "weight": 1.0, "block": -1}},
        "5": {"class_type": "SpliceAppearanceLoss", "inputs": {"dino": ["3", 0], "weight": 10.0, "block": -1}},
        TRAIN: {"class_type": "SpliceTrainGenerator",
                "inputs": {"structure": ["1", 0], "appearance": ["2", 0], "structure_loss": ["4", 0],
                           "appearance_loss": ["5", 0], **widgets}},
        "7": {"class_type": "SpliceApply", "inputs": {"generator": [TRAIN, 0], "images": ["1", 0], "batch_size": 4}},
        "8": {"class_type": "SaveImage", "inputs": {"images": ["7", 0], "filename_prefix": prefix}},
    }
