"""Save and load trained generators: safetensors weights plus the run's config as metadata.

The metadata carries the training config, the backbone's name and a format tag, so a file says
how it was made and a file that is not a Splice generator is refused with a clear message.
Callers may add their own string metadata (ComfyUI stores the prompt and workflow there).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Mapping

from safetensors import safe_open
from safetensors.torch import load_file, save_file

from .generator import SpliceGenerator
from .train import TrainConfig, TrainedGenerator

FORMAT = "comfy-splice-generator/1"
_RESERVED = ("splice_format", "splice_config", "splice_backbone", "splice_loss")


def save_generator(path: str | os.PathLike, trained: TrainedGenerator,
                   extra_metadata: Mapping[str, str] | None = None) -> Path:
    """Write ``trained`` to ``path`` (.safetensors); returns the path written."""
    path = Path(path)
    metadata = {k: str(v) for k, v in (extra_metadata or {}).items() if k not in _RESERVED}
    metadata.update({
        "splice_format": FORMAT,
        "splice_config": json.dumps(trained.config.to_dict()),
        "splice_backbone": trained.backbone_name,
        "splice_loss": json.dumps(trained.history.get("loss", [])),
    })
    state = {k: v.detach().cpu().contiguous() for k, v in trained.generator.state_dict().items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(state, str(path), metadata=metadata)
    return path


def read_metadata(path: str | os.PathLike) -> dict[str, str]:
    """The string metadata of a safetensors file (empty when it has none)."""
    with safe_open(str(path), framework="pt") as handle:
        return dict(handle.metadata() or {})


def load_generator(path: str | os.PathLike) -> TrainedGenerator:
    """Load a generator written by save_generator; other files get an error naming the file."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"Splice generator file {path} does not exist.")
    hint = "Save one with the Save Splice Generator node (or comfy_splice.checkpoint.save_generator)."
    try:
        metadata = read_metadata(path)
        state = load_file(str(path), device="cpu")
    except Exception as exc:  # safetensors raises its own error types for damaged headers
        raise ValueError(f"{path} is not a readable .safetensors file ({exc}). {hint}") from exc
    if metadata.get("splice_format") != FORMAT:
        raise ValueError(f"{path} is not a Splice generator (no '{FORMAT}' tag in its metadata). {hint}")
    generator = SpliceGenerator()
    try:
        generator.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise ValueError(f"{path} does not match the Splice generator's layout: {exc}") from exc
    generator.eval()
    config = TrainConfig.from_dict(json.loads(metadata["splice_config"]))
    history = {"loss": [float(v) for v in json.loads(metadata.get("splice_loss", "[]"))]}
    return TrainedGenerator(generator=generator, config=config,
                            backbone_name=metadata.get("splice_backbone", ""), history=history)
