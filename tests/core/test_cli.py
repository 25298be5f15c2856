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


def test_cli_trains_and_writes_the_output_at_full_resolution(tmp_path: Path, tiny_dino_file: Path) -> None:
    save_image(synthetic_image(72, 100, seed=1), tmp_path / "a.png")
    save_image(synthetic_image(64, 64, seed=2), tmp_path / "b.jpg")
    result = _run(str(tmp_path / "a.png"), str(tmp_path / "b.jpg"), "-o", str(tmp_path / "out.png"),
                  "--weights", str(tiny_dino_file), "--steps", "3", "--metrics",
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


def test_cli_unreadable_image_is_a_clear_error(tmp_path: Path, tiny_dino_file: Path) -> None:
    (tmp_path / "a.png").write_text("not an image")
    result = _run(str(tmp_path / "a.png"), str(tmp_path / "a.png"), "-o", str(tmp_path / "o.png"),
                  "--weights", str(tiny_dino_file))
    assert result.returncode == 2 and "cannot read image" in result.stderr
    assert "Traceback" not in result.stderr


def test_cli_trains_once_on_several_frames_and_writes_one_output_each(tmp_path: Path, tiny_dino_file: Path) -> None:
    frames = tmp_path / "frames"
    for i in range(3):
        save_image(synthetic_image(48, 80, seed=10 + i), frames / f"f{i:03d}.png")
    save_image(synthetic_image(64, 64, seed=2), tmp_path / "b.jpg")
    result = _run(*sorted(str(p) for p in frames.glob("*.png")), str(tmp_path / "b.jpg"),
                  "-o", str(tmp_path / "out") + "/", "--weights", str(tiny_dino_file), "--steps", "3",
                  "--save-generator", str(tmp_path / "g.safetensors"))
    assert result.returncode == 0, result.stderr
    written = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert written == ["f000.png", "f001.png", "f002.png"]
    for name in written:
        with Image.open(tmp_path / "out" / name) as out:
            assert out.size == (80, 48)
    assert load_generator(tmp_path / "g.safetensors").config.steps == 3  # one generator, trained once


def test_cli_refuses_frames_of_different_sizes_and_a_file_as_folder(tmp_path: Path, tiny_dino_file: Path) -> None:
    save_image(synthetic_image(48, 80, seed=1), tmp_path / "a.png")
    save_image(synthetic_image(40, 80, seed=2), tmp_path / "c.png")
    (tmp_path / "taken.png").write_bytes(b"")
    common = ("--weights", str(tiny_dino_file), "--steps", "1")
    result = _run(str(tmp_path / "a.png"), str(tmp_path / "c.png"), str(tmp_path / "a.png"),
                  "-o", str(tmp_path / "out"), *common)
    assert result.returncode == 2 and "keyframe 0 is 80x48 and keyframe 1 is 80x40" in result.stderr
    assert "Traceback" not in result.stderr
    result = _run(str(tmp_path / "a.png"), str(tmp_path / "a.png"), str(tmp_path / "a.png"),
                  "-o", str(tmp_path / "taken.png"), *common)
    assert result.returncode == 2 and "must be a folder" in result.stderr
