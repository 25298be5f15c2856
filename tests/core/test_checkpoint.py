"""Saving and loading trained generators."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from comfy_splice.checkpoint import load_generator, read_metadata, save_generator
from comfy_splice.generator import build_generator
from comfy_splice.run import TrainConfig, TrainedGenerator

from .conftest import synthetic_image


def test_round_trip_is_exact(tmp_path: Path) -> None:
    trained = TrainedGenerator(build_generator(seed=4), TrainConfig(steps=12, seed=4), "dino_vits8",
                               {"loss": [1.0, 0.5]})
    path = save_generator(tmp_path / "g.safetensors", trained, {"prompt": "{}", "splice_format": "x"})
    loaded = load_generator(path)
    assert loaded.config == trained.config and loaded.backbone_name == "dino_vits8"
    assert loaded.history["loss"] == [1.0, 0.5]
    probe = synthetic_image(40, 52, seed=1)
    with torch.no_grad():
        assert torch.equal(loaded.generator(probe), trained.generator(probe))
    meta = read_metadata(path)
    assert meta["prompt"] == "{}" and meta["splice_format"].startswith("comfy-splice-generator")


def test_other_files_are_refused(tmp_path: Path) -> None:
    save_file({"w": torch.zeros(2)}, str(tmp_path / "other.safetensors"))
    with pytest.raises(ValueError, match="is not a Splice generator"):
        load_generator(tmp_path / "other.safetensors")
    (tmp_path / "junk.safetensors").write_bytes(b"not a file")
    with pytest.raises(ValueError, match="not a readable .safetensors"):
        load_generator(tmp_path / "junk.safetensors")
    with pytest.raises(ValueError, match="does not exist"):
        load_generator(tmp_path / "missing.safetensors")
