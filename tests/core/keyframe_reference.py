"""The one-keyframe reference run: a short CPU training whose exact numbers are kept in
``tests/core/data/one_keyframe_reference.json``.

The file was written by this script with the training code as it was before keyframes existed
(one structure image per run), so the test that compares against it proves that a single
keyframe still trains bit for bit as before. Regenerate it only when a change is *meant* to
alter the training's numbers (a loss or augmentation fix), and say so in the commit:

    python -m tests.core.keyframe_reference      # from the repository root, in the test venv
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path
from typing import Any

import torch

from comfy_splice.backbone import load_backbone, save_tiny_backbone
from comfy_splice.train import TrainConfig, train_generator

from .conftest import synthetic_image

FIXTURE = Path(__file__).resolve().parent / "data" / "one_keyframe_reference.json"


def reference_config() -> TrainConfig:
    """Covers the warm-up step, regular steps and three full-image steps (0, 3, 6)."""
    return TrainConfig(steps=8, log_every=4, preview_every=0, full_image_every=3, seed=5)


def weights_digest(module: torch.nn.Module) -> str:
    """SHA-256 of every parameter and buffer's bytes, in state-dict order."""
    digest = hashlib.sha256()
    for name, tensor in module.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def run_reference(weights_dir: Path, structure: torch.Tensor | None = None) -> dict[str, Any]:
    """Train the reference run on one thread (reduction order fixed) and summarise it exactly."""
    backbone = load_backbone(save_tiny_backbone(weights_dir / "tiny_dino.pth"))
    if structure is None:
        structure = synthetic_image(72, 96, seed=1)
    appearance = synthetic_image(80, 64, seed=2)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        trained = train_generator(backbone, structure, appearance, reference_config(), "cpu")
    finally:
        torch.set_num_threads(threads)
    return {"torch": torch.__version__.split("+")[0],
            "history": {k: [float.hex(v) for v in values] for k, values in trained.history.items()},
            "weights_sha256": weights_digest(trained.generator)}


def main() -> int:
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        result = run_reference(Path(tmp))
    FIXTURE.parent.mkdir(parents=True, exist_ok=True)
    FIXTURE.write_text(json.dumps(result, indent=1) + "\n")
    sys.stdout.write(f"wrote {FIXTURE}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
