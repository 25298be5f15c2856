"""The one-keyframe reference run: a short CPU training whose exact numbers are kept in
``tests/core/data/one_keyframe_reference.json``.

The file was written by this script with the training code as it was before keyframes existed
(one structure image per run), so the test that compares against it proves that a single
keyframe still trains bit for bit as before. Regenerate it only when a change is *meant* to
alter the training's numbers (a loss or augmentation fix), and say so in the commit:

    python -m tests.core.keyframe_reference      # from the repository root, in the test venv

The run happens in a child process whose CPU kernels are capped at AVX2 (:data:`PORTABLE_ENV`):
torch's own kernels, oneDNN and MKL otherwise pick AVX-512 code where the CPU has it, which
rounds differently, so the bits would depend on the machine that runs the tests (they did: the
fixture, written on a machine whose kernels ran AVX2 code, failed on one with AVX-512). With the
cap, every x86-64 CPU with AVX2 computes the same bits.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import torch

from comfy_splice.dino.fixtures import save_tiny_backbone
from comfy_splice.dino.weights import load_backbone
from comfy_splice.run import TrainConfig
from comfy_splice.train import train_generator

from .conftest import synthetic_image

FIXTURE = Path(__file__).resolve().parent / "data" / "one_keyframe_reference.json"
ROOT = Path(__file__).resolve().parents[2]
# Read when torch and its libraries load, so they are set for a child process.
PORTABLE_ENV = {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2",
                "MKL_ENABLE_INSTRUCTIONS": "AVX2"}


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


def run_portable(weights_dir: Path, repeat: int = 1) -> dict[str, Any]:
    """:func:`run_reference` in a child process with PORTABLE_ENV (the structure image
    ``repeat`` times as keyframes), so the numbers do not depend on this CPU's instruction set."""
    env = {**os.environ, **PORTABLE_ENV, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-m", "tests.core.keyframe_reference", "--print",
                           str(weights_dir), str(repeat)], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=600, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"the reference run failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv: list[str]) -> int:
    if argv[:1] == ["--print"]:  # the child of run_portable
        weights_dir, repeat = Path(argv[1]), int(argv[2])
        structure = synthetic_image(72, 96, seed=1).repeat(repeat, 1, 1, 1) if repeat > 1 else None
        sys.stdout.write(json.dumps(run_reference(weights_dir, structure)) + "\n")
        return 0
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        result = run_portable(Path(tmp))
    FIXTURE.parent.mkdir(parents=True, exist_ok=True)
    FIXTURE.write_text(json.dumps(result, indent=1) + "\n")
    sys.stdout.write(f"wrote {FIXTURE}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
