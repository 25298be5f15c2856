"""Save and load trained generators: safetensors weights plus the run's config as metadata.

The metadata carries the training config, the backbone's name and a format tag, so a file says
how it was made and a file that is not a Splice generator is refused with a clear message.
Callers may add their own string metadata (ComfyUI stores the prompt and workflow there).

A generator that came out of a training run also keeps what resuming that run exactly needs
(:class:`comfy_splice.run.TrainState`): Adam's state and the augmentation random state as
tensors under the ``train_state.`` prefix, the step index and the images' fingerprint as JSON in
``splice_train_state``. Files without them (older files) load as before and fine-tune.
Files are written atomically: a temporary file in the same folder, then a rename, so a crash
while saving never leaves a half-written generator under the final name.
"""

from __future__ import annotations

import json
import logging
import os
import uuid
from pathlib import Path
from typing import Callable, Iterable, Mapping

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from .generator import SpliceGenerator
from .run import TrainConfig, TrainedGenerator, TrainState, resume_mismatches
from .validation import (TensorInfo, check_fields, check_value, json_type, parse_json,
                         read_safetensors_header, short, short_text)

log = logging.getLogger(__name__)

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
        info = parse_json(raw, "splice_train_state", MAX_CONFIG_CHARS, MAX_JSON_DEPTH)
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


def _parameter_shapes() -> list[tuple[int, ...]]:
    """Shapes of the generator's parameters in optimiser order (meta device: no memory)."""
    with torch.device("meta"):
        return [tuple(p.shape) for p in SpliceGenerator().parameters()]


MAX_RNG_BYTES = 1 << 16


def _check_state_tensor(name: str, info: TensorInfo) -> None:
    """A resumable-state tensor has the name, shape and dtype a training run writes.

    Checked from the header, so a crafted file cannot make the loader read a large tensor under a
    state name; ``_check_train_state`` checks the whole set again after loading.
    """
    if name == _RNG_KEY:
        if info.dtype != torch.uint8 or len(info.shape) != 1 or info.shape[0] > MAX_RNG_BYTES:
            raise ValueError(f"{name} is not a random-generator state (uint8, at most "
                             f"{MAX_RNG_BYTES} bytes)")
        return
    index, _, kind = name[len(_OPTIMIZER_PREFIX):].partition(".")
    shapes = _parameter_shapes()
    if (not name.startswith(_OPTIMIZER_PREFIX) or not index.isdigit() or int(index) >= len(shapes)
            or kind not in _ADAM_KEYS):
        raise ValueError(f"it has the unknown training-state tensor {short(name)}")
    wanted = () if kind == "step" else shapes[int(index)]
    if info.shape != wanted:
        raise ValueError(f"training-state tensor {short(name)} has shape {info.shape}, expected {wanted}")
    if not info.dtype.is_floating_point:
        raise ValueError(f"training-state tensor {short(name)} holds {info.dtype} values")


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
    for name in tensors:
        if name.startswith(STATE_PREFIX):
            _check_state_tensor(name, tensors[name])
    unknown = [name for name in tensors if name not in expected and not name.startswith(STATE_PREFIX)]
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
    train_tensors = {k: state.pop(k) for k in [k for k in state if k.startswith(STATE_PREFIX)]}
    try:
        generator.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise ValueError(f"{path} does not match the Splice generator's layout: "
                         f"{short_text(exc, 300)}") from None
    generator.eval()
    train_state = _check_train_state(path, metadata, train_tensors, generator)
    config = parsed["splice_config"]
    assert isinstance(config, TrainConfig)
    return TrainedGenerator(generator=generator, config=config,
                            backbone_name=str(parsed["splice_backbone"]),
                            history={"loss": list(parsed["splice_loss"])},  # type: ignore[call-overload]
                            state=train_state)


def _resumable_step(path: Path, config: TrainConfig, pair_id: str, backbone_name: str) -> int | None:
    """The step ``path`` was saved at when a run of ``config`` on ``pair_id`` can continue it
    exactly without going past ``config.steps``; None otherwise (also for unreadable files: the
    search only reads headers, and the chosen file is fully checked when it is loaded)."""
    try:
        metadata = read_metadata(path)
        info = parse_json(metadata.get("splice_train_state"), "splice_train_state", MAX_CONFIG_CHARS,
                          MAX_JSON_DEPTH)
        step, old_pair = info["step"], info["pair_id"]
        old = parse_config(metadata.get("splice_config"))
        backbone = parse_backbone_name(metadata.get("splice_backbone", ""))
    except (ValueError, TypeError, KeyError, OSError, SafetensorError):
        return None
    if (metadata.get("splice_format") != FORMAT or not isinstance(step, int) or not isinstance(old_pair, str)
            or not 0 <= step <= config.steps):
        return None
    return None if resume_mismatches(old, old_pair, backbone, config, pair_id, backbone_name) else step


def newest_resumable(paths: Iterable[str | os.PathLike], config: TrainConfig, pair_id: str,
                     backbone_name: str) -> tuple[Path, TrainedGenerator] | None:
    """The saved run among ``paths`` that a run of ``config`` on ``pair_id`` continues exactly
    (the furthest one, then the newest file), loaded; None when there is none.

    A run past ``config.steps`` is not used: the caller asked for fewer steps. A file that
    fails the full check when loaded is skipped with a warning (another may still fit).
    """
    ranked = []
    for path in map(Path, paths):
        step = _resumable_step(path, config, pair_id, backbone_name)
        if step is not None:
            try:
                ranked.append((step, path.stat().st_mtime, path))
            except OSError:
                continue
    for _, _, path in sorted(ranked, key=lambda item: (item[0], item[1]), reverse=True):
        try:
            return path, load_generator(path)
        except ValueError as exc:
            log.warning("Splice: not resuming from %s: %s", path, exc)
    return None
