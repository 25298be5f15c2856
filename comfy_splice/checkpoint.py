"""Save and load trained generators: safetensors weights plus the run's config as metadata.

The metadata carries the training config, the backbone's name and a format tag, so a file says
how it was made and a file that is not a Splice generator is refused with a clear message.
Callers may add their own string metadata (ComfyUI stores the prompt and workflow there).

A generator that came out of a training run also keeps what resuming that run exactly needs
(:class:`comfy_splice.train.TrainState`): Adam's state and the augmentation random state as
tensors under the ``train_state.`` prefix, the step index and the images' fingerprint as JSON in
``splice_train_state``. Files without them (older files) load as before and fine-tune.
Files are written atomically: a temporary file in the same folder, then a rename, so a crash
while saving never leaves a half-written generator under the final name.
"""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path
from typing import Mapping

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from .generator import SpliceGenerator
from .train import TrainConfig, TrainedGenerator, TrainState

FORMAT = "comfy-splice-generator/1"
_RESERVED = ("splice_format", "splice_config", "splice_backbone", "splice_loss", "splice_train_state")
STATE_PREFIX = "train_state."
_OPTIMIZER_PREFIX = STATE_PREFIX + "optimizer."
_RNG_KEY = STATE_PREFIX + "augment_rng"
_ADAM_KEYS = ("step", "exp_avg", "exp_avg_sq")


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
    if trained.state is not None:
        metadata["splice_train_state"] = json.dumps({"step": trained.state.step,
                                                     "pair_id": trained.state.pair_id})
        for key, value in trained.state.optimizer.items():
            state[_OPTIMIZER_PREFIX + key] = value.detach().cpu().contiguous()
        if trained.state.augment_rng is not None:
            state[_RNG_KEY] = trained.state.augment_rng.detach().cpu().contiguous()
    path.parent.mkdir(parents=True, exist_ok=True)
    # Hidden (dot) name in the same folder: the rename stays on one file system, and folder
    # listings that ComfyUI filters by extension never show the half-written file.
    temporary = str(path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp"))
    try:
        save_file(state, temporary, metadata=metadata)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return path


def _check_train_state(path: Path, metadata: Mapping[str, str], tensors: Mapping[str, torch.Tensor],
                       generator: SpliceGenerator) -> TrainState | None:
    """The resumable state kept in a generator file, checked against the generator's layout."""
    raw = metadata.get("splice_train_state")
    if raw is None:
        if tensors:
            raise ValueError(f"{path} has training-state tensors but no 'splice_train_state' "
                             f"metadata; the file is damaged. Save the generator again.")
        return None
    fix = "The file is damaged: load an earlier save or train again."
    try:
        info = json.loads(raw)
        step, pair_id = info["step"], info["pair_id"]
    except (ValueError, TypeError, KeyError) as exc:
        raise ValueError(f"{path}: its 'splice_train_state' metadata is unreadable ({exc}). {fix}") from None
    if not isinstance(step, int) or step < 0 or not isinstance(pair_id, str):
        raise ValueError(f"{path}: 'splice_train_state' needs a step >= 0 and a pair id. {fix}")
    params = list(generator.parameters())
    optimizer: dict[str, torch.Tensor] = {}
    for key, value in tensors.items():
        if key == _RNG_KEY:
            continue
        index, _, name = key[len(_OPTIMIZER_PREFIX):].partition(".")
        if (not key.startswith(_OPTIMIZER_PREFIX) or not index.isdigit() or name not in _ADAM_KEYS
                or int(index) >= len(params)):
            raise ValueError(f"{path}: unexpected training-state tensor {key!r}. {fix}")
        wanted = () if name == "step" else tuple(params[int(index)].shape)
        if tuple(value.shape) != wanted:
            raise ValueError(f"{path}: training-state tensor {key!r} has shape {tuple(value.shape)}, "
                             f"expected {wanted}. {fix}")
        optimizer[key[len(_OPTIMIZER_PREFIX):]] = value
    indices = {int(key.partition(".")[0]) for key in optimizer}
    if optimizer and (indices != set(range(len(params))) or len(optimizer) != 3 * len(params)):
        raise ValueError(f"{path}: the optimiser state covers {len(indices)} of {len(params)} "
                         f"parameters. {fix}")
    rng = tensors.get(_RNG_KEY)
    if rng is not None and rng.dtype != torch.uint8:
        raise ValueError(f"{path}: the augmentation random state is {rng.dtype}, not uint8. {fix}")
    return TrainState(step=step, pair_id=pair_id, optimizer=optimizer, augment_rng=rng)


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
    train_tensors = {k: state.pop(k) for k in [k for k in state if k.startswith(STATE_PREFIX)]}
    try:
        generator.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise ValueError(f"{path} does not match the Splice generator's layout: {exc}") from exc
    generator.eval()
    train_state = _check_train_state(path, metadata, train_tensors, generator)
    config = TrainConfig.from_dict(json.loads(metadata["splice_config"]))
    history = {"loss": [float(v) for v in json.loads(metadata.get("splice_loss", "[]"))]}
    return TrainedGenerator(generator=generator, config=config,
                            backbone_name=metadata.get("splice_backbone", ""), history=history,
                            state=train_state)
