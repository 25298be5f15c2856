"""DINO ViT weight files: their structure checked before anything is built, then loaded.

A weight file is untrusted input (a user's download, a file from anywhere): its tensor names
and shapes are checked against caps and against each other before any tensor data is read,
pickles are read with ``weights_only=True``, and the module is built on the meta device and
takes the file's tensors as its weights.
"""

from __future__ import annotations

import logging
import math
import os
import pickle
import re
import zipfile
from pathlib import Path
from typing import Callable, Mapping

import torch
from torch import Tensor

from ..validation import read_safetensors_header, short, short_text
from .models import DEFAULT_MODEL, DINO_MODELS, DinoModel, WeightsError
from .vit import DinoBackbone, timm_vit

log = logging.getLogger(__name__)

_PREFIXES = ("module.", "backbone.")

# Caps on what a weight file may declare, checked before anything is built. They are far above
# every DINO model (v1 ViT-B/8: depth 12, width 768, MLP ratio 4, patch 8, a 28x28 grid; DINOv2's
# largest ViT-g: depth 40, width 1536) and far below what would take a machine down.
MAX_DEPTH = 48
MAX_WIDTH = 4096
MAX_MLP_RATIO = 8
MAX_PATCH = 32
MAX_GRID = 64
MAX_PARAMETERS = 2_000_000_000  # 8 GB in fp32
MAX_KEYS = 64 + 32 * MAX_DEPTH
MAX_HEADER_BYTES = 1 << 20  # a ViT-B/8 .safetensors header is ~20 KB


def _fail(path: Path, problem: str) -> WeightsError:
    """One short message: the file, its first problem, and what a DINO ViT file looks like."""
    model = DINO_MODELS[DEFAULT_MODEL]
    return WeightsError(f"{path.name} is not a usable DINO ViT weight file: {problem}. Use the "
                        f"weights of a DINO ViT such as {model.file_name} ({model.url}).")


def _extract_state_dict(obj: object, path: Path) -> dict[str, Tensor]:
    """Accept a bare state dict or DINO's training checkpoints ({'teacher': ...}, {'model': ...})."""
    if isinstance(obj, Mapping):
        for wrapper in ("teacher", "model", "state_dict"):
            inner = obj.get(wrapper)
            if isinstance(inner, Mapping):
                obj = inner
                break
    if not isinstance(obj, Mapping) or not all(isinstance(v, Tensor) for v in obj.values()):
        raise WeightsError(f"{path} does not hold a state dict of tensors; expected the weights of a "
                           f"DINO ViT such as {DINO_MODELS[DEFAULT_MODEL].file_name}.")
    if len(obj) > MAX_KEYS:
        raise _fail(path, f"it holds {len(obj):,} tensors; a ViT of at most {MAX_DEPTH} blocks has "
                          f"fewer than {MAX_KEYS}")
    state: dict[str, Tensor] = {}
    for key, value in obj.items():
        if not isinstance(key, str):
            raise _fail(path, f"the tensor name {short(key)} is not a string")
        for prefix in _PREFIXES:
            if key.startswith(prefix):
                key = key[len(prefix):]
        if key.startswith("head."):
            continue  # DINO's projection head is not part of the backbone
        state[key] = value
    return state


def _read_file(path: Path, lazy: bool = False) -> object:
    """Read .safetensors or .pth/.pt (``weights_only=True``: never unpickle arbitrary code).

    ``lazy`` reads no tensor data: a .safetensors file gives meta tensors (shape and dtype from
    its header), a .pth file in torch's zip format is memory-mapped. The checks then run on
    shapes alone, so a file that declares huge tensors allocates nothing.
    """
    if path.suffix == ".safetensors":
        if lazy:
            try:
                tensors, _ = read_safetensors_header(path, MAX_HEADER_BYTES)
            except ValueError as exc:
                raise _fail(path, str(exc).rstrip(".")) from None
            return {name: torch.empty(info.shape, dtype=info.dtype, device="meta")
                    for name, info in tensors.items()}
        from safetensors.torch import load_file

        return load_file(str(path), device="cpu")
    mmap = lazy and zipfile.is_zipfile(path)
    return torch.load(str(path), map_location="cpu", weights_only=True, mmap=mmap)


def _block_indices(state: Mapping[str, Tensor], path: Path) -> dict[int, dict[str, Tensor]]:
    """The tensors of each transformer block, by index; indices must be exactly 0..N-1."""
    blocks: dict[int, dict[str, Tensor]] = {}
    for key, value in state.items():
        if not key.startswith("blocks."):
            continue
        _, number, *rest = key.split(".", 2)
        if not rest or not number.isdigit() or str(int(number)) != number:
            raise _fail(path, f"the key {short(key)} does not name a block by its number "
                              f"(expected blocks.<0..{MAX_DEPTH - 1}>.<tensor>)")
        if int(number) >= MAX_DEPTH:
            raise _fail(path, f"the key {short(key)} declares block {int(number):,}; at most "
                              f"{MAX_DEPTH} blocks are accepted")
        blocks.setdefault(int(number), {})[rest[0]] = value
    if not blocks:
        raise _fail(path, "it has no transformer blocks (no blocks.0.* keys)")
    depth = max(blocks) + 1
    missing = [i for i in range(depth) if i not in blocks]
    if missing:
        raise _fail(path, f"block {missing[0]} is missing while block {depth - 1} is there "
                          f"(blocks must be numbered 0..N-1)")
    reference = blocks[0]
    for index in range(1, depth):
        block = blocks[index]
        for name, tensor in reference.items():
            if name not in block:
                raise _fail(path, f"block {index} has no {short(name)}, which block 0 has")
            if block[name].shape != tensor.shape:
                raise _fail(path, f"{short_text(f'blocks.{index}.{name}', 80)} has shape "
                                  f"{tuple(block[name].shape)} but block 0's is {tuple(tensor.shape)}")
        extra = [name for name in block if name not in reference]
        if extra:
            raise _fail(path, f"block {index} has {short(extra[0])}, which block 0 has not")
    return blocks


def _architecture(state: Mapping[str, Tensor], path: Path) -> dict[str, float | int]:
    """Infer patch size, width, depth, heads (width / 64) and MLP ratio from the tensors' shapes.

    Every number is checked against the caps above before it is used, and the blocks against
    each other, so nothing is built from a file that only claims a large model.
    """
    required = ("cls_token", "pos_embed", "patch_embed.proj.weight", "blocks.0.attn.qkv.weight",
                "blocks.0.mlp.fc1.weight")
    missing = [k for k in required if k not in state]
    if missing:
        raise WeightsError(
            f"{path} is not a DINO ViT state dict (missing {', '.join(missing)}); expected the "
            f"weights of a DINO ViT such as {DINO_MODELS[DEFAULT_MODEL].file_name} "
            f"({DINO_MODELS[DEFAULT_MODEL].url}).")
    blocks = _block_indices(state, path)
    proj = state["patch_embed.proj.weight"]
    if proj.ndim != 4 or proj.shape[1] != 3 or proj.shape[2] != proj.shape[3]:
        raise WeightsError(f"{path}: patch embedding of shape {tuple(proj.shape)} is not a "
                           f"3-channel square-patch ViT.")
    embed_dim, patch_size = int(proj.shape[0]), int(proj.shape[2])
    if not 1 <= patch_size <= MAX_PATCH:
        raise _fail(path, f"its patch size is {patch_size}; at most {MAX_PATCH} is accepted")
    if not 64 <= embed_dim <= MAX_WIDTH:
        raise _fail(path, f"its width is {embed_dim:,}; 64 to {MAX_WIDTH} is accepted")
    pos = state["pos_embed"]
    if pos.ndim != 3 or pos.shape[0] != 1 or pos.shape[2] != embed_dim or pos.shape[1] < 2:
        raise _fail(path, f"pos_embed has shape {tuple(pos.shape)}; a {embed_dim}-wide ViT needs "
                          f"[1, 1 + grid, {embed_dim}]")
    n_pos = int(pos.shape[1]) - 1
    side = int(round(math.sqrt(n_pos)))
    if side * side != n_pos or embed_dim % 64 != 0:
        raise WeightsError(f"{path}: a {embed_dim}-wide ViT with {n_pos} position embeddings is not "
                           f"a DINO ViT layout (square grid, 64-dim heads).")
    if side > MAX_GRID:
        raise _fail(path, f"its position grid is {side}x{side}; at most {MAX_GRID}x{MAX_GRID} is "
                          f"accepted")
    fc1 = state["blocks.0.mlp.fc1.weight"]
    if fc1.ndim != 2 or fc1.shape[1] != embed_dim:
        raise _fail(path, f"blocks.0.mlp.fc1.weight has shape {tuple(fc1.shape)}; a "
                          f"{embed_dim}-wide ViT needs [hidden, {embed_dim}]")
    hidden = int(fc1.shape[0])
    if not 1 <= hidden <= MAX_MLP_RATIO * embed_dim:
        raise _fail(path, f"its MLP is {hidden:,} wide, {hidden / embed_dim:.1f} times its width; "
                          f"at most {MAX_MLP_RATIO} times is accepted")
    return {"patch_size": patch_size, "embed_dim": embed_dim, "depth": len(blocks),
            "num_heads": embed_dim // 64, "mlp_ratio": hidden / embed_dim, "img_size": side * patch_size}


def _vit_of(arch: Mapping[str, float | int]) -> torch.nn.Module:
    """The timm ViT that ``arch`` (from :func:`_architecture`) describes, on the current device
    (callers build it on the meta device: no memory, no random initialisation)."""
    return timm_vit(int(arch["patch_size"]), int(arch["embed_dim"]), int(arch["depth"]),
                    int(arch["num_heads"]), float(arch["mlp_ratio"]), int(arch["img_size"]))


def _check_layout(state: Mapping[str, Tensor], arch: Mapping[str, float | int], path: Path) -> None:
    """The tensors are exactly those of the ViT ``arch`` describes: same names, same shapes.

    The expected names and shapes come from the timm module built on the meta device (no
    memory), so DINO's .pth names and timm's own names are both what timm expects.
    """
    with torch.device("meta"):
        expected = {k: v.shape for k, v in _vit_of(arch).state_dict().items()}
    parameters = sum(math.prod(shape) for shape in expected.values())
    if parameters > MAX_PARAMETERS:
        raise _fail(path, f"it declares {parameters:,} parameters; at most {MAX_PARAMETERS:,} are "
                          f"accepted")
    for key, shape in expected.items():
        if key not in state:
            raise _fail(path, f"the tensor {key} is missing")
        if state[key].shape != shape:
            raise _fail(path, f"{key} has shape {tuple(state[key].shape)}, expected {tuple(shape)}")
    unknown = [key for key in state if key not in expected]
    if unknown:
        more = f" (and {len(unknown) - 1} more)" if len(unknown) > 1 else ""
        raise _fail(path, f"it has the unknown tensor {short(unknown[0])}{more}")
    for key, tensor in state.items():
        if not tensor.is_floating_point():
            raise _fail(path, f"{key} holds {tensor.dtype} values, not floating-point weights")


def _check_storage(state: Mapping[str, Tensor], path: Path) -> None:
    """Each tensor's data is really in the file: a .pth can hold a stride-0 view whose declared
    shape is far larger than its data, and building from it would allocate the declared size."""
    declared = 0
    for key, tensor in state.items():
        if tensor.is_meta:
            continue  # safetensors checked its offsets against the file already
        nbytes = tensor.numel() * tensor.element_size()
        if nbytes > tensor.untyped_storage().nbytes():
            raise _fail(path, f"{key} declares {nbytes:,} bytes but the file holds "
                              f"{tensor.untyped_storage().nbytes():,} of its data")
        declared += nbytes
    size = path.stat().st_size
    if declared > size:
        raise _fail(path, f"its tensors declare {declared:,} bytes but the file has {size:,}")


def _check_identity(state: Mapping[str, Tensor], arch: Mapping[str, float | int], expect: DinoModel,
                    path: Path) -> None:
    """The file is ``expect`` itself: its depth, width, patch size and parameter count.

    A file that loads as a ViT can still be another model (a small ViT served under ViT-S/16's
    name); the checks above accept any DINO-style ViT, this one the named model only."""
    parameters = sum(tensor.numel() for tensor in state.values())
    found = (int(arch["depth"]), int(arch["embed_dim"]), int(arch["patch_size"]), parameters)
    wanted = (expect.depth, expect.embed_dim, expect.patch_size, expect.parameters)
    if found != wanted:
        raise WeightsError(
            f"{path.name} is not {expect.label} ({expect.timm_name}): that model has depth "
            f"{wanted[0]}, width {wanted[1]}, patch {wanted[2]} and {wanted[3]:,} parameters, this "
            f"file depth {found[0]}, width {found[1]}, patch {found[2]} and {found[3]:,} parameters")


def _read_checked(path: Path, cancel: Callable[[], None] | None, expect: DinoModel | None = None
                  ) -> tuple[dict[str, Tensor], dict[str, float | int]]:
    """The file's state dict and architecture, checked on shapes before any data is read
    (and, with ``expect``, checked to be that model)."""
    try:
        raw = _read_file(path, lazy=True)
    except WeightsError:
        raise
    except pickle.UnpicklingError as exc:
        found = re.search(r"GLOBAL (\S+)", str(exc))
        what = f" ({short(found.group(1), 80)[1:-1]})" if found else ""
        raise WeightsError(f"Could not read DINO weights from {path}: it holds pickled Python "
                           f"objects other than tensors{what}, which are never loaded (they could "
                           f"run code). Save the state dict alone (torch.save(model.state_dict(), "
                           f"...)) or use .safetensors.") from None
    except Exception as exc:  # torch/zipfile raise many types for a damaged file
        raise WeightsError(f"Could not read DINO weights from {path} ({type(exc).__name__}: "
                           f"{short_text(exc, 200)}). The file may be truncated or not a "
                           f".pth/.safetensors file: download it again (e.g. "
                           f"{DINO_MODELS[DEFAULT_MODEL].url}).") from None
    state = _extract_state_dict(raw, path)
    arch = _architecture(state, path)
    _check_layout(state, arch, path)
    _check_storage(state, path)
    if expect is not None:
        _check_identity(state, arch, expect, path)
    if cancel is not None:
        cancel()
    if path.suffix == ".safetensors":
        try:
            state = _extract_state_dict(_read_file(path), path)
        except Exception as exc:  # safetensors' SafetensorError for data it cannot read
            raise WeightsError(f"Could not read DINO weights from {path} "
                               f"({short_text(exc, 200)}): download it again.") from None
    return state, arch


def _model_name(arch: Mapping[str, float | int], path: Path) -> str:
    """The official key when the shape matches one, else the file's stem."""
    for model in DINO_MODELS.values():
        if (model.patch_size, model.embed_dim, model.depth) == (
                arch["patch_size"], arch["embed_dim"], arch["depth"]):
            return model.key
    return path.stem


def load_backbone(path: str | os.PathLike, device: torch.device | str | None = None,
                  cancel: Callable[[], None] | None = None, expect: DinoModel | None = None
                  ) -> DinoBackbone:
    """Load a DINO ViT from a local .pth or .safetensors file; errors name the file and the fix.

    The file's names and shapes are checked against the caps and against each other before any
    tensor data is read or anything is built (see ``_architecture``). The module is built on the
    meta device and takes the file's tensors as its weights, so no random initialisation runs
    and the weights exist once. ``cancel`` is called between the stages (e.g. ComfyUI's
    interrupt check), so a large legitimate file can still be cancelled. ``expect`` also
    requires the file to be that official model (depth, width, patch, parameter count), checked
    on the shapes before any data is read: the download uses it before a file gets an official
    name. Files already on disk are not held to their names (tests and users keep small or
    fine-tuned ViTs under any name).
    """
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"DINO weights file {path} does not exist. Put a DINO ViT file there, e.g. "
                           f"{DINO_MODELS[DEFAULT_MODEL].file_name} from {DINO_MODELS[DEFAULT_MODEL].url}.")
    state, arch = _read_checked(path, cancel, expect)
    weights: dict[str, Tensor] = {}
    for key, tensor in state.items():
        weights[key] = tensor.to(dtype=torch.float32, copy=True, memory_format=torch.contiguous_format)
        if not torch.isfinite(weights[key]).all():
            raise _fail(path, f"{key} holds NaN or infinite values")
    state = {}
    if cancel is not None:
        cancel()
    with torch.device("meta"):
        vit = _vit_of(arch)
    try:
        vit.load_state_dict(weights, strict=True, assign=True)
    except RuntimeError as exc:
        raise WeightsError(f"{path} does not match a DINO ViT layout: {short_text(exc, 300)}") from None
    backbone = DinoBackbone(vit, name=_model_name(arch, path), source=str(path))
    log.info("loaded %s from %s (patch %d, width %d, depth %d)", backbone.name, path,
             backbone.patch_size, backbone.embed_dim, backbone.depth)
    return backbone.to(device) if device is not None else backbone
