"""The model registry (comfy_splice/dino/models.py) imports without torch: tools/provision.py
runs it with the system python before any venv exists, and the Load DINO-ViT node's file list
reads it without loading the ViT code."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]

# Make torch and numpy unimportable: ``import torch`` raises ImportError from here on.
_NO_TORCH = "import sys\nsys.modules['torch'] = None\nsys.modules['numpy'] = None\n"


def _run(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", _NO_TORCH + code], cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=60)


def test_the_registry_imports_without_torch() -> None:
    done = _run("from comfy_splice.dino.models import DEFAULT_MODEL, DINO_MODELS, official_model\n"
                "model = official_model(DINO_MODELS[DEFAULT_MODEL].file_name)\n"
                "print(model.key, model.hf_file_name)\n")
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["dino_vitb8", "vit_base_patch8_224.dino.safetensors"]


def test_the_prelude_really_keeps_torch_out() -> None:
    """The check above means something: with the same prelude the ViT module cannot import."""
    done = _run("import comfy_splice.dino.vit\n")
    assert done.returncode != 0
    assert "ImportError" in done.stderr or "ModuleNotFoundError" in done.stderr, done.stderr
