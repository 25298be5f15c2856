"""The authors' Materialistic checkpoint, read without running pickled code and checked before
anything is built.

Accepted layouts, those the authors' own loader takes (``Transformer_pl.load_checkpoint``):

- a Lightning ``.ckpt``: a dict whose ``state_dict`` holds ``net.<key>`` (next to the epoch,
  the optimiser's state, callbacks' state ...);
- a ``model.pth`` saved from ``nn.DataParallel``: ``module.<key>``;
- and, from this pack, a plain state dict or a ``.safetensors`` file with the bare ``<key>``.

``<key>`` is the authors' ``Transformer`` name: ``dino_model.*`` for the DINO ViT-B/8 and the
head's names listed by :func:`comfy_splice.materialistic.net.key_table`.

A pickle is read with ``torch.load(weights_only=True)`` first. A Lightning file can hold other
pickled objects (hyper-parameters, paths, a namespace of arguments) that ``weights_only``
refuses; such a file is then read by :class:`_TensorOnlyUnpickler`, which builds tensors, plain
containers and nothing else: every other object named in the pickle becomes an inert
placeholder that is never called, so no code from the file runs. Only the tensors of the
network are read from the archive, after their names and shapes have been checked.
"""

from __future__ import annotations

import collections
import logging
import math
import os
import pickle
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

import torch
from torch import Tensor

from ..dino.models import DEFAULT_MODEL, DINO_MODELS, WeightsError
from ..dino.vit import DinoBackbone, timm_vit
from ..dino.weights import MAX_DEPTH, MAX_GRID, MAX_MLP_RATIO, MAX_PATCH, MAX_PARAMETERS, MAX_WIDTH
from ..validation import read_safetensors_header, short, short_text
from .net import BLOCKS, HEADS, VIT_PREFIX, HeadShape, MaterialisticNet, key_table

log = logging.getLogger(__name__)

FOLDER = "models/materialistic"
EXPECTED = (f"Use the authors' checkpoint (the 'Pretrained Models' link of "
            f"https://github.com/prafull7/materialistic's README; unzip it and put its .ckpt or "
            f"model.pth in {FOLDER}/)")
EXTENSIONS = (".ckpt", ".pth", ".pt", ".safetensors")
MAX_PICKLE_BYTES = 64 << 20  # the pickle of a Lightning checkpoint is a few hundred KB
MAX_HEADER_BYTES = 1 << 20
MAX_EXAMPLES = 3


class MaterialisticWeightsError(WeightsError):
    """A Materialistic weight file is missing, unreadable or not the authors' network."""


def _fail(path: Path, problem: str) -> MaterialisticWeightsError:
    return MaterialisticWeightsError(
        f"{path.name} is not a usable Materialistic checkpoint: {problem}. {EXPECTED}.")


# -- reading a file -------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Stored:
    """One storage of a torch zip archive, not read yet."""

    archive: Path
    member: str
    dtype: torch.dtype
    numel: int


@dataclass(frozen=True)
class _LazyTensor:
    """A tensor of the archive: its view of a storage, read only by :meth:`load`."""

    storage: _Stored
    offset: int
    size: tuple[int, ...]
    stride: tuple[int, ...]

    @property
    def shape(self) -> torch.Size:
        return torch.Size(self.size)

    @property
    def dtype(self) -> torch.dtype:
        return self.storage.dtype

    def nbytes(self) -> int:
        return math.prod(self.size) * self.storage.dtype.itemsize

    def load(self) -> Tensor:
        """The tensor, read from the archive; a view reaching past its storage is refused."""
        if any(n < 0 for n in self.size) or any(s < 0 for s in self.stride) or self.offset < 0 \
                or len(self.size) != len(self.stride):
            raise ValueError(f"a tensor declares a negative or inconsistent view {self.size}")
        if math.prod(self.size):
            end = self.offset + sum((n - 1) * s for n, s in zip(self.size, self.stride)) + 1
            if end > self.storage.numel:
                raise ValueError(f"a tensor's view ends at element {end:,} of a {self.storage.numel:,}-"
                                 f"element storage")
        with zipfile.ZipFile(self.storage.archive) as archive:
            data = archive.read(self.storage.member)
        if len(data) != self.storage.numel * self.storage.dtype.itemsize:
            raise ValueError(f"storage {self.storage.member} holds {len(data):,} bytes, not the "
                             f"{self.storage.numel * self.storage.dtype.itemsize:,} it declares")
        flat = torch.frombuffer(bytearray(data), dtype=self.storage.dtype)
        return flat.as_strided(self.size, self.stride, self.offset).clone()


_STORAGE_DTYPES = {
    "FloatStorage": torch.float32, "DoubleStorage": torch.float64, "HalfStorage": torch.float16,
    "BFloat16Storage": torch.bfloat16, "LongStorage": torch.int64, "IntStorage": torch.int32,
    "ShortStorage": torch.int16, "CharStorage": torch.int8, "ByteStorage": torch.uint8,
    "BoolStorage": torch.bool,
}


@dataclass(frozen=True)
class _StorageType:
    """What a pickled ``torch.FloatStorage`` (etc.) stands for: its dtype, nothing callable."""

    dtype: torch.dtype


class _Inert:
    """Stands for any object the pickle names that is not a tensor or a plain container.

    Constructing, calling or restoring it does nothing: the pickle's arguments are dropped, so the
    class or function the file named (``os.system``, a Lightning callback ...) is never reached.
    """

    __slots__ = ()

    def __new__(cls, *args: object, **kwargs: object) -> "_Inert":
        return super().__new__(cls)

    def __init__(self, *args: object, **kwargs: object) -> None:
        pass

    def __setstate__(self, state: object) -> None:
        pass

    def __call__(self, *args: object, **kwargs: object) -> "_Inert":
        return self


def _rebuild_tensor(storage: object, offset: int, size: tuple[int, ...], stride: tuple[int, ...],
                    *_: object) -> object:
    """``torch._utils._rebuild_tensor_v2``'s arguments -> a :class:`_LazyTensor` (nothing read)."""
    if not isinstance(storage, _Stored):
        return _Inert()
    return _LazyTensor(storage, int(offset), tuple(int(n) for n in size), tuple(int(s) for s in stride))


def _rebuild_parameter(data: object, *_: object) -> object:
    """A pickled ``nn.Parameter`` is its data here."""
    return data


class _TensorOnlyUnpickler(pickle.Unpickler):
    """Unpickles a torch zip archive's ``data.pkl`` into plain containers and lazy tensors.

    ``find_class`` is the only way a pickle reaches code: it returns the tensor-rebuild stand-ins
    above, ``OrderedDict`` and ``torch.Size``; any other name gives :class:`_Inert` and is
    recorded in ``ignored``.
    """

    def __init__(self, file: Any, archive: Path, prefix: str) -> None:
        super().__init__(file)
        self.archive = archive
        self.prefix = prefix
        self.ignored: set[str] = set()

    def find_class(self, module: str, name: str) -> Any:
        if module == "torch._utils" and name == "_rebuild_tensor_v2":
            return _rebuild_tensor
        if module == "torch._utils" and name in ("_rebuild_parameter", "_rebuild_parameter_with_state"):
            return _rebuild_parameter
        if module == "collections" and name == "OrderedDict":
            return collections.OrderedDict
        if module == "torch" and name == "Size":
            return torch.Size
        if module == "torch" and name in _STORAGE_DTYPES:
            return _StorageType(_STORAGE_DTYPES[name])
        self.ignored.add(f"{module}.{name}")
        return _Inert

    def persistent_load(self, pid: Any) -> Any:
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage"
                and isinstance(pid[1], _StorageType) and isinstance(pid[2], str)):
            return _Inert()
        numel = int(pid[4])
        if numel < 0:
            return _Inert()
        return _Stored(self.archive, f"{self.prefix}data/{pid[2]}", pid[1].dtype, numel)


def _read_restricted(path: Path) -> tuple[object, set[str]]:
    """A torch zip archive's object, tensors lazy and every other object inert (see module doc)."""
    with zipfile.ZipFile(path) as archive:
        pickles = [n for n in archive.namelist() if n.endswith("/data.pkl") and n.count("/") == 1]
        if len(pickles) != 1:
            raise ValueError("it is not a torch archive (no single <name>/data.pkl)")
        prefix = pickles[0][: -len("data.pkl")]
        if archive.getinfo(pickles[0]).file_size > MAX_PICKLE_BYTES:
            raise ValueError(f"its pickle is larger than {MAX_PICKLE_BYTES >> 20} MiB")
        names = set(archive.namelist())
        if f"{prefix}byteorder" in names and archive.read(f"{prefix}byteorder").strip() != b"little":
            raise ValueError("it was saved on a big-endian machine")
        with archive.open(pickles[0]) as handle:
            unpickler = _TensorOnlyUnpickler(handle, path, prefix)
            return unpickler.load(), unpickler.ignored


def _read_file(path: Path) -> tuple[object, set[str]]:
    """The file's object with tensors not yet read where possible (meta, memory-mapped or lazy),
    and the names of the pickled objects that were left unbuilt (see :class:`_Inert`)."""
    if path.suffix == ".safetensors":
        tensors, _ = read_safetensors_header(path, MAX_HEADER_BYTES)
        return {name: torch.empty(info.shape, dtype=info.dtype, device="meta")
                for name, info in tensors.items()}, set()
    is_zip = zipfile.is_zipfile(path)
    try:
        return torch.load(str(path), map_location="cpu", weights_only=True, mmap=is_zip), set()
    except pickle.UnpicklingError:
        if not is_zip:
            raise
    obj, ignored = _read_restricted(path)
    log.warning("%s holds pickled objects other than tensors (torch's weights_only refused it); its "
                "tensors were read, and %d kinds of object were left unbuilt, never run: %s",
                path.name, len(ignored), ", ".join(sorted(ignored)[:10]))
    return obj, ignored


def _network_state(obj: object, path: Path, ignored: set[str]) -> dict[str, Any]:
    """The authors' ``Transformer`` state dict inside any accepted layout, prefixes removed.

    Pickled objects other than tensors may sit beside it (a Lightning file's hyper-parameters):
    they were never built. Where the tensors should be, they are refused."""
    unbuilt = (f" (its pickle names {', '.join(sorted(ignored)[:3])}, which was not run)"
               if ignored else "")
    if isinstance(obj, Mapping) and isinstance(obj.get("state_dict"), Mapping):
        obj = obj["state_dict"]  # Lightning
    if not isinstance(obj, Mapping):
        what = "pickled object" if isinstance(obj, _Inert) else type(obj).__name__
        raise _fail(path, f"it holds a {what}, not a dict of tensors{unbuilt}")
    if not all(isinstance(k, str) for k in obj):
        raise _fail(path, "its tensor names are not all text")
    keys = list(obj)
    for prefix in ("net.", "module."):  # Lightning's attribute, DataParallel's wrapper
        if keys and all(k.startswith(prefix) for k in keys):
            obj = {k[len(prefix):]: v for k, v in obj.items()}
            break
    bad = [k for k, v in obj.items() if not isinstance(v, (Tensor, _LazyTensor))]
    if bad:
        raise _fail(path, f"{len(bad)} entries are not tensors, e.g. {short(bad[0])}{unbuilt}")
    return dict(obj)


# -- checking it ----------------------------------------------------------------------------------


def _head_shape(head: Mapping[str, Any]) -> HeadShape:
    """The head's widths, read from the shapes (the authors' sizes where a tensor is absent, so
    that the key comparison reports it)."""
    default = HeadShape()
    project = head.get("spatial_transform_1.2.weight")
    if project is None or len(project.shape) != 4:
        return default
    width, vit_width = int(project.shape[0]), int(project.shape[1])
    mlp: list[int] = []
    index = 0
    while len(mlp) < 8:
        weight = head.get(f"out_conv.{2 * index}.weight")
        if weight is None or len(weight.shape) != 2 or int(weight.shape[0]) == 1:
            break
        mlp.append(int(weight.shape[0]))
        index += 1
    if width % HEADS or width < HEADS:
        return default
    return HeadShape(vit_width=vit_width, width=width, mlp=tuple(mlp) or default.mlp)


@dataclass(frozen=True)
class _VitShape:
    patch: int
    width: int
    depth: int
    hidden: int
    grid: int


def _vit_shape(vit: Mapping[str, Any]) -> _VitShape | None:
    """The ViT's sizes from its tensors, or None when the anchors are absent or malformed."""
    proj, pos, fc1 = vit.get("patch_embed.proj.weight"), vit.get("pos_embed"), vit.get("blocks.0.mlp.fc1.weight")
    if proj is None or pos is None or fc1 is None or len(proj.shape) != 4 or len(pos.shape) != 3 \
            or len(fc1.shape) != 2:
        return None
    blocks = {k.split(".")[1] for k in vit if k.startswith("blocks.")}
    depth = sum(1 for b in blocks if b.isdigit())
    grid = int(round(math.sqrt(max(0, int(pos.shape[1]) - 1))))
    return _VitShape(int(proj.shape[2]), int(proj.shape[0]), depth, int(fc1.shape[0]), grid)


def _vit_problem(shape: _VitShape) -> str | None:
    """Why the ViT's sizes are refused before anything is built, if they are."""
    if not 1 <= shape.patch <= MAX_PATCH or not 64 <= shape.width <= MAX_WIDTH or shape.width % 64:
        return f"its ViT has a {shape.patch}px patch and width {shape.width}"
    if not max(BLOCKS) < shape.depth <= MAX_DEPTH:
        return f"its ViT has {shape.depth} blocks; the head reads block {max(BLOCKS)}, at most {MAX_DEPTH} are accepted"
    if not 1 <= shape.hidden <= MAX_MLP_RATIO * shape.width or not 1 <= shape.grid <= MAX_GRID:
        return f"its ViT's MLP ({shape.hidden}) or position grid ({shape.grid}) is out of bounds"
    return None


def _build_vit(shape: _VitShape) -> torch.nn.Module:
    return timm_vit(shape.patch, shape.width, shape.depth, shape.width // 64, shape.hidden / shape.width,
                    shape.grid * shape.patch)


def _compare(found: Mapping[str, Any], expected: Mapping[str, tuple[int, ...]], prefix: str
             ) -> tuple[list[str], list[str], list[str]]:
    """Unexpected names, missing names, and 'name is (a) but the network needs (b)' lines."""
    unexpected = [prefix + k for k in found if k not in expected]
    missing = [prefix + k for k in expected if k not in found]
    wrong = [f"{prefix}{k} is {tuple(found[k].shape)} but the network needs {tuple(v)}"
             for k, v in expected.items() if k in found and tuple(found[k].shape) != tuple(v)]
    return unexpected, missing, wrong


def _examples(names: list[str]) -> str:
    return ", ".join(short(n, 90) for n in names[:MAX_EXAMPLES])


@dataclass(frozen=True)
class CheckedFile:
    """What :func:`check_file` found: the head's sizes and the tensors, by the authors' names
    (head) and by the DINO state dict's names (``vit``, empty when the file has no ViT)."""

    shape: HeadShape
    head: dict[str, Any]
    vit: dict[str, Any]
    vit_shape: _VitShape | None


def check_file(path: str | os.PathLike) -> CheckedFile:
    """Read and check ``path`` on names and shapes only (no tensor data is read yet).

    Every problem with the names and shapes is reported in one message: how many tensors are
    unexpected, missing, or of the wrong shape, with examples, and which file is expected.
    """
    path = Path(path)
    if not path.is_file():
        raise MaterialisticWeightsError(f"Materialistic checkpoint {path} does not exist. {EXPECTED}.")
    try:
        raw, ignored = _read_file(path)
    except MaterialisticWeightsError:
        raise
    except pickle.UnpicklingError as exc:
        raise _fail(path, f"its pickle is not a torch checkpoint ({short_text(exc, 160)}); nothing "
                          f"in it was run") from None
    except Exception as exc:  # torch, zipfile and safetensors raise many types for a damaged file
        raise _fail(path, f"it could not be read ({type(exc).__name__}: {short_text(exc, 160)}); "
                          f"it may be truncated, download it again") from None
    state = _network_state(raw, path, ignored)
    vit = {k[len(VIT_PREFIX):]: v for k, v in state.items() if k.startswith(VIT_PREFIX)}
    head = {k: v for k, v in state.items() if not k.startswith(VIT_PREFIX)}
    vit = {k: v for k, v in vit.items() if not k.startswith("head.")}  # DINO's head: not used
    shape = _head_shape(head)
    problems: list[str] = []
    if max(shape.vit_width, shape.width, *shape.mlp) > MAX_WIDTH:
        raise _fail(path, f"its head declares widths {shape.vit_width}, {shape.width}, {shape.mlp}; at "
                          f"most {MAX_WIDTH} is accepted")
    expected_head = {theirs: size for theirs, _, size in key_table(shape)}
    unexpected, missing, wrong = _compare(head, expected_head, "")
    vit_shape = _vit_shape(vit) if vit else None
    if vit:
        if vit_shape is None:
            problems.append("its DINO ViT (dino_model.*) lacks patch_embed.proj.weight, pos_embed or "
                            "blocks.0.mlp.fc1.weight")
        else:
            problem = _vit_problem(vit_shape)
            if problem:
                raise _fail(path, problem)
            if vit_shape.width != shape.vit_width:
                problems.append(f"its ViT is {vit_shape.width} wide but its head reads {shape.vit_width}")
            with torch.device("meta"):
                expected_vit = {k: tuple(v.shape) for k, v in _build_vit(vit_shape).state_dict().items()}
            parameters = sum(math.prod(s) for s in expected_vit.values())
            if parameters > MAX_PARAMETERS:
                raise _fail(path, f"its ViT declares {parameters:,} parameters; at most "
                                  f"{MAX_PARAMETERS:,} are accepted")
            more = _compare(vit, expected_vit, VIT_PREFIX)
            unexpected, missing, wrong = unexpected + more[0], missing + more[1], wrong + more[2]
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected tensor(s), e.g. {_examples(unexpected)}")
    if missing:
        problems.append(f"{len(missing)} missing, e.g. {_examples(missing)}")
    if wrong:
        problems.append(f"{len(wrong)} of the wrong shape, e.g. {'; '.join(wrong[:MAX_EXAMPLES])}")
    if problems:
        raise _fail(path, "; ".join(problems))
    used = [v for v in (*head.values(), *vit.values())]
    not_float = next((k for k, v in {**head, **vit}.items() if not v.dtype.is_floating_point), None)
    if not_float is not None:
        raise _fail(path, f"{not_float} holds {({**head, **vit})[not_float].dtype} values, not weights")
    declared = sum(_nbytes(v) for v in used)
    if declared > path.stat().st_size:
        raise _fail(path, f"its tensors declare {declared:,} bytes but the file has "
                          f"{path.stat().st_size:,}")
    return CheckedFile(shape, head, vit, vit_shape)


def _nbytes(value: Any) -> int:
    if isinstance(value, _LazyTensor):
        return value.nbytes()
    return int(value.numel()) * int(value.element_size())


def _materialise(value: Any, path: Path, name: str) -> Tensor:
    """A float32 contiguous copy of one checked tensor (read from the file now)."""
    try:
        if isinstance(value, _LazyTensor):
            value = value.load()
        tensor = value.to(dtype=torch.float32, copy=True, memory_format=torch.contiguous_format)
    except (ValueError, RuntimeError, OSError, zipfile.BadZipFile) as exc:
        raise _fail(path, f"{name} could not be read ({short_text(exc, 160)})") from None
    if not torch.isfinite(tensor).all():
        raise _fail(path, f"{name} holds NaN or infinite values")
    return tensor


# -- building the network -------------------------------------------------------------------------


def _shared(backbone: DinoBackbone) -> DinoBackbone:
    """A backbone of new modules over the same tensors: moving the network to a device then
    leaves Load DINO-ViT's backbone, which other nodes use, where it is."""
    with torch.device("meta"):
        vit = timm_vit(backbone.patch_size, backbone.embed_dim, backbone.depth, backbone.num_heads,
                       int(backbone.vit.blocks[0].mlp.fc1.weight.shape[0]) / backbone.embed_dim,
                       int(round(math.sqrt(backbone.vit.pos_embed.shape[1] - 1))) * backbone.patch_size)
    vit.load_state_dict(backbone.vit.state_dict(), strict=True, assign=True)
    return DinoBackbone(vit, name=backbone.name, source=backbone.source)


def _backbone_name(shape: _VitShape) -> str:
    for model in DINO_MODELS.values():
        if (model.patch_size, model.embed_dim, model.depth) == (shape.patch, shape.width, shape.depth):
            return model.key
    return f"vit_{shape.width}w_patch{shape.patch}"


def load_materialistic(path: str | os.PathLike, dino: DinoBackbone | None = None,
                       cancel: Callable[[], None] | None = None) -> MaterialisticNet:
    """The Materialistic network of the authors' checkpoint ``path``, on the CPU, in eval mode.

    The file is checked on names and shapes first (:func:`check_file`); the modules are built on
    the meta device and take the file's tensors. The DINO ViT comes from the file when it holds
    one (the authors' does: ``dino_model.*``), else from ``dino`` (Load DINO-ViT's backbone, which
    must be as wide and as deep as the head needs; ViT-B/8 is the one the head was trained on).
    ``cancel`` is called between the stages.
    """
    path = Path(path)
    checked = check_file(path)
    if cancel is not None:
        cancel()
    if path.suffix == ".safetensors":  # checked on its header; now read the data
        from safetensors.torch import load_file

        try:
            state = _network_state(load_file(str(path), device="cpu"), path, set())
        except MaterialisticWeightsError:
            raise
        except Exception as exc:  # safetensors' SafetensorError for data it cannot read
            raise _fail(path, f"its data could not be read ({short_text(exc, 160)})") from None
        checked = CheckedFile(checked.shape, {k: state[k] for k in checked.head},
                              {k: state[VIT_PREFIX + k] for k in checked.vit}, checked.vit_shape)
    if checked.vit_shape is not None:
        weights = {k: _materialise(v, path, VIT_PREFIX + k) for k, v in checked.vit.items()}
        with torch.device("meta"):
            vit = _build_vit(checked.vit_shape)
        vit.load_state_dict(weights, strict=True, assign=True)
        backbone = DinoBackbone(vit, name=_backbone_name(checked.vit_shape), source=str(path))
    elif dino is None:
        raise MaterialisticWeightsError(
            f"{path.name} holds the Materialistic head but no DINO ViT (no dino_model.* tensors): "
            f"connect the 'dino' input to Load DINO-ViT with ViT-B/8 "
            f"({DINO_MODELS[DEFAULT_MODEL].hf_file_name}), or use the authors' full checkpoint. "
            f"{EXPECTED}.")
    else:
        if dino.embed_dim != checked.shape.vit_width or dino.depth <= max(BLOCKS):
            raise MaterialisticWeightsError(
                f"{path.name}'s head reads blocks {BLOCKS} of a {checked.shape.vit_width}-wide ViT, but "
                f"the connected DINO ({dino.name}) is {dino.embed_dim} wide with {dino.depth} blocks: "
                f"load ViT-B/8 (the one the head was trained on) in Load DINO-ViT.")
        if dino.patch_size != 8:
            log.warning("Materialistic's head was trained on ViT-B/8; %s has a %dpx patch, so its "
                        "scores mean less", dino.name, dino.patch_size)
        backbone = _shared(dino)
    if cancel is not None:
        cancel()
    head = {mine: _materialise(checked.head[theirs], path, theirs)
            for theirs, mine, _ in key_table(checked.shape) if mine is not None}
    with torch.device("meta"):  # the head's new modules only; the backbone is already real
        net = MaterialisticNet(backbone, checked.shape)
    try:
        missing, unexpected = net.load_state_dict(head, strict=False, assign=True)
    except RuntimeError as exc:  # pragma: no cover - check_file compared every shape already
        raise _fail(path, short_text(exc, 300)) from None
    if unexpected or any(not k.startswith("backbone.") for k in missing):  # pragma: no cover
        raise _fail(path, f"the head's names do not match ({(unexpected + missing)[:3]})")
    net.eval()
    log.info("loaded Materialistic from %s (ViT %s, head width %d)", path, backbone.name,
             checked.shape.width)
    return net

