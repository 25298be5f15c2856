"""`python -m comfy_splice` end to end, in a subprocess like a user would run it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from PIL import Image

from comfy_splice.__main__ import save_image
from comfy_splice.checkpoint import load_generator

from .conftest import synthetic_image

ROOT = Path(__file__).resolve().parents[2]


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "comfy_splice", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)


def test_cli_trains_and_writes_the_output_at_full_resolution(tmp_path: Path, tiny_weights: Path) -> None:
    save_image(synthetic_image(72, 100, seed=1), tmp_path / "a.png")
    save_image(synthetic_image(64, 64, seed=2), tmp_path / "b.jpg")
    result = _run(str(tmp_path / "a.png"), str(tmp_path / "b.jpg"), "-o", str(tmp_path / "out.png"),
                  "--weights", str(tiny_weights), "--steps", "3", "--metrics",
                  "--save-generator", str(tmp_path / "g.safetensors"))
    assert result.returncode == 0, result.stderr
    with Image.open(tmp_path / "out.png") as out:
        assert out.size == (100, 72)
    assert "DINO-I" in result.stderr
    assert load_generator(tmp_path / "g.safetensors").config.steps == 3


def test_cli_without_weights_says_where_to_get_them(tmp_path: Path) -> None:
    save_image(synthetic_image(64, 64, seed=1), tmp_path / "a.png")
    result = _run(str(tmp_path / "a.png"), str(tmp_path / "a.png"), "-o", str(tmp_path / "o.png"))
    assert result.returncode == 2
    assert "--weights" in result.stderr and "huggingface.co/timm/vit_base_patch8_224.dino" in result.stderr
    assert "Traceback" not in result.stderr


def test_cli_unreadable_image_is_a_clear_error(tmp_path: Path, tiny_weights: Path) -> None:
    (tmp_path / "a.png").write_text("not an image")
    result = _run(str(tmp_path / "a.png"), str(tmp_path / "a.png"), "-o", str(tmp_path / "o.png"),
                  "--weights", str(tiny_weights))
    assert result.returncode == 2 and "cannot read image" in result.stderr
    assert "Traceback" not in result.stderr
