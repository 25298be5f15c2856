"""Save and load trained generators: safetensors weights plus the run's config as metadata.

The metadata carries the training config, the backbone's name and a format tag, so a file says
how it was made and a file that is not a Splice generator is refused with a clear message.
Callers may add their own string metadata (ComfyUI stores the prompt and workflow there).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Callable, Mapping

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from .generator import SpliceGenerator
from .train import TrainConfig, TrainedGenerator
from .validation import (TensorInfo, check_fields, check_value, json_type, parse_json,
                         read_safetensors_header, short, short_text)

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


# Bounds on what a generator file may carry. The weights are ~4 MB; the metadata holds the
# training config (a few hundred characters), the loss history (at most one value per step) and,
# from ComfyUI, the prompt and workflow JSON (a large workflow is a few MB).
MAX_HEADER_BYTES = 64 << 20
MAX_CONFIG_CHARS = 64_000
MAX_JSON_DEPTH = 8
MAX_NAME_CHARS = 200
MAX_HISTORY = 1_000_000
MAX_HISTORY_CHARS = 32 << 20
HINT = "Save one with the Save Splice Generator node (or comfy_splice.checkpoint.save_generator)."


def read_metadata(path: str | os.PathLike) -> dict[str, str]:
    """The string metadata of a safetensors file (empty when it has none)."""
    with safe_open(str(path), framework="pt") as handle:
        return dict(handle.metadata() or {})


def parse_config(text: object) -> TrainConfig:
    """``splice_config``: a JSON object of TrainConfig's fields, each of its declared type."""
    data = parse_json(text, "its training config (splice_config)", MAX_CONFIG_CHARS, MAX_JSON_DEPTH)
    check_fields(data, TrainConfig, "the training config")
    try:
        return TrainConfig.from_dict(data)
    except ValueError as exc:  # TrainConfig's own range checks (steps >= 1, lr > 0, ...)
        raise ValueError(f"its training config is out of range: {exc}") from None


def parse_backbone_name(text: object) -> str:
    """``splice_backbone``: the name of the DINO-ViT it was trained with (a short string)."""
    if not isinstance(text, str) or len(text) > MAX_NAME_CHARS or not text.isprintable():
        raise ValueError(f"its backbone name (splice_backbone) {short(text)} is not a short "
                         f"printable name")
    return text


def parse_loss_history(text: object) -> list[float]:
    """``splice_loss``: a JSON array of finite numbers, at most one per training step."""
    values = parse_json(text, "its loss history (splice_loss)", MAX_HISTORY_CHARS, 1)
    if not isinstance(values, list):
        raise ValueError(f"its loss history (splice_loss) must be an array of numbers, got "
                         f"{json_type(values)}")
    if len(values) > MAX_HISTORY:
        raise ValueError(f"its loss history has {len(values):,} values; at most {MAX_HISTORY:,}")
    for index, value in enumerate(values):
        check_value(value, float, f"its loss history (splice_loss) value {index}")
    return [float(v) for v in values]


METADATA_FIELDS: dict[str, Callable[[object], object]] = {
    "splice_config": parse_config,
    "splice_backbone": parse_backbone_name,
    "splice_loss": parse_loss_history,
}
"""The Splice metadata a generator file carries, each with the function that checks and parses it."""

OPTIONAL_FIELDS: dict[str, str] = {"splice_backbone": "", "splice_loss": "[]"}


def expected_tensors() -> dict[str, tuple[int, ...]]:
    """Names and shapes of the generator's state dict (built on the meta device: no memory)."""
    with torch.device("meta"):
        return {k: tuple(v.shape) for k, v in SpliceGenerator().state_dict().items()}


def check_tensors(tensors: Mapping[str, TensorInfo]) -> None:
    """The file's tensors are exactly the generator's: same names, shapes, floating dtypes."""
    expected = expected_tensors()
    for name, shape in expected.items():
        if name not in tensors:
            raise ValueError(f"the generator tensor {name} is missing")
        if tensors[name].shape != shape:
            raise ValueError(f"{name} has shape {tensors[name].shape}, expected {shape}")
        if not tensors[name].dtype.is_floating_point:
            raise ValueError(f"{name} holds {tensors[name].dtype} values, not weights")
    unknown = [name for name in tensors if name not in expected]
    if unknown:
        more = f" (and {len(unknown) - 1} more)" if len(unknown) > 1 else ""
        raise ValueError(f"it has the unknown tensor {short(unknown[0])}{more}")


def check_generator_file(tensors: Mapping[str, TensorInfo], metadata: Mapping[str, str]
                         ) -> dict[str, object]:
    """Format tag, every metadata field and the tensor layout of a file's header.

    Returns the parsed metadata fields. ValueError with a short reason otherwise.
    """
    if metadata.get("splice_format") != FORMAT:
        raise ValueError(f"it is not a Splice generator (no '{FORMAT}' tag in its metadata)")
    if "splice_config" not in metadata:
        raise ValueError("its metadata has no training config (splice_config)")
    parsed = {name: parse(metadata.get(name, OPTIONAL_FIELDS.get(name)))
              for name, parse in METADATA_FIELDS.items()}
    check_tensors(tensors)
    return parsed


def load_generator(path: str | os.PathLike) -> TrainedGenerator:
    """Load a generator written by save_generator; other files get an error naming the file.

    Everything the file's header declares is checked first (``check_generator_file``); only then are its
    ~4 MB of weights read, checked for NaN/Inf and loaded.
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"Splice generator file {path} does not exist.")
    try:
        tensors, metadata = read_safetensors_header(path, MAX_HEADER_BYTES)
    except ValueError as exc:
        raise ValueError(f"{path} is not a readable .safetensors file: {str(exc).rstrip('.')}. "
                         f"{HINT}") from None
    if metadata.get("splice_format") != FORMAT:
        raise ValueError(f"{path} is not a Splice generator (no '{FORMAT}' tag in its metadata). "
                         f"{HINT}")
    try:
        parsed = check_generator_file(tensors, metadata)
    except ValueError as exc:
        raise ValueError(f"{path.name} cannot be loaded as a Splice generator: "
                         f"{str(exc).rstrip('.')}. {HINT}") from None
    try:
        state = load_file(str(path), device="cpu")
    except (SafetensorError, OSError) as exc:
        raise ValueError(f"{path} is not a readable .safetensors file ({short_text(exc, 200)}). "
                         f"{HINT}") from None
    for name, tensor in state.items():
        if not torch.isfinite(tensor).all():
            raise ValueError(f"{path.name} cannot be loaded as a Splice generator: {name} holds NaN "
                             f"or infinite values. {HINT}")
    generator = SpliceGenerator()
    try:
        generator.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise ValueError(f"{path} does not match the Splice generator's layout: "
                         f"{short_text(exc, 300)}") from None
    generator.eval()
    config = parsed["splice_config"]
    assert isinstance(config, TrainConfig)
    return TrainedGenerator(generator=generator, config=config,
                            backbone_name=str(parsed["splice_backbone"]),
                            history={"loss": list(parsed["splice_loss"])})  # type: ignore[call-overload]
