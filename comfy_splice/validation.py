"""Checks for what comes from outside: files people share and values typed or sent over HTTP.

Everything here is cheap and bounded, and runs before anything large is built: a file's header
(shapes, dtypes, metadata) is read and judged before its tensors are, JSON text is measured and
its nesting counted before it is parsed, and every message names the first problem in a short
sentence (a key name is cut to a few dozen characters, never a list of thousands of them).
The model-specific rules live with their loaders (``backbone`` for DINO weights, ``checkpoint``
for generators); this module holds the pieces they share.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
import struct
import types
import typing
from pathlib import Path
from typing import Any, Mapping, TypeGuard

import torch

NAME_CHARS = 60
"""How much of a key or value a message quotes."""

MAX_STRING_CHARS = 1000
"""Longest string accepted inside a config (names, dtype labels)."""

SAFETENSORS_DTYPES: dict[str, torch.dtype] = {
    "F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
    "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8,
    "U8": torch.uint8, "BOOL": torch.bool,
}


def short(value: object, limit: int = NAME_CHARS) -> str:
    """``repr`` of a key or value for a message, cut to ``limit`` characters."""
    text = repr(value)
    return text if len(text) <= limit else text[:limit - 3] + "..."


def short_text(text: object, limit: int = 300) -> str:
    """The first line of a (library) message, cut to ``limit`` characters."""
    first = str(text).strip().splitlines()[0] if str(text).strip() else ""
    return first if len(first) <= limit else first[:limit - 3] + "..."


def json_type(value: object) -> str:
    """How a JSON value's type is named in messages (object, array, string, number ...)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, (list, tuple)):
        return "an array"
    if isinstance(value, Mapping):
        return "an object"
    return type(value).__name__


def check_finite_image(image: torch.Tensor, name: str) -> None:
    """Refuse images that hold NaN or infinite values, naming the input.

    One reduction pass (min and max propagate NaN and show infinities), so even a long batch of
    video frames needs no full-size temporary.
    """
    if image.numel() == 0 or not image.is_floating_point():
        return
    low, high = torch.aminmax(image.detach())
    if not (math.isfinite(float(low)) and math.isfinite(float(high))):
        raise ValueError(f"{name}: the image holds NaN or infinite values (an upstream node "
                         f"produced invalid pixels). Check the nodes before '{name}'; images "
                         f"must have values in [0, 1].")


# --------------------------------------------------------------------------------------------
# JSON text


_JSON_STRING = re.compile(r'"(?:[^"\\]|\\.)*"')
_JSON_BRACKET = re.compile(r"[\[\]{}]")


def json_depth(text: str) -> int:
    """Deepest nesting of arrays/objects in JSON text, counted without parsing it.

    Python's parser recurses once per level, so a few thousand ``[`` raise RecursionError; the
    count lets a caller refuse such text first. Brackets inside strings do not count.
    """
    depth = deepest = 0
    for bracket in _JSON_BRACKET.findall(_JSON_STRING.sub('""', text)):
        depth += 1 if bracket in "[{" else -1
        deepest = max(deepest, depth)
    return deepest


def parse_json(text: object, what: str, max_chars: int, max_depth: int) -> Any:
    """Parse JSON text of bounded length and nesting; anything else is a ValueError naming ``what``."""
    if not isinstance(text, str):
        raise ValueError(f"{what} is {json_type(text)}, not JSON text.")
    if len(text) > max_chars:
        raise ValueError(f"{what} is {len(text):,} characters long; at most {max_chars:,} are "
                         f"accepted.")
    depth = json_depth(text)
    if depth > max_depth:
        raise ValueError(f"{what} is nested {depth} levels deep; at most {max_depth} are accepted.")
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{what} is not valid JSON ({exc.msg} at character {exc.pos}).") from None


# --------------------------------------------------------------------------------------------
# Typed values (dataclass fields) from JSON


def _is_int(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: object) -> TypeGuard[int | float]:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def check_value(value: object, hint: Any, where: str) -> None:
    """``value`` (parsed JSON) fits the type hint ``hint``; else a ValueError naming ``where``.

    Supports what configs are made of: bool, int, float (finite), str (bounded), tuples of a
    fixed length or ``tuple[X, ...]``, lists, ``dict[str, X]``, ``Literal``, ``X | None`` and
    dataclasses (JSON objects of known fields, checked recursively).
    """
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is typing.Any:
        return
    if origin in (typing.Union, types.UnionType):
        errors = []
        for arm in args:
            try:
                check_value(value, arm, where)
                return
            except ValueError as exc:
                if arm is not type(None):
                    errors.append(str(exc))
        raise ValueError(errors[0] if len(errors) == 1 else
                         f"{where} is {json_type(value)} {short(value)}, which fits none of its "
                         f"allowed types.")
    if hint is type(None):
        if value is not None:
            raise ValueError(f"{where} must be null, got {json_type(value)}.")
        return
    if origin is typing.Literal:
        if value not in args or type(value) is not type(args[0]):
            raise ValueError(f"{where} is {short(value)}; expected one of "
                             f"{', '.join(repr(a) for a in args)}.")
        return
    if hint is bool:
        if not isinstance(value, bool):
            raise ValueError(f"{where} must be true or false, got {json_type(value)} {short(value)}.")
        return
    if hint is int:
        if not _is_int(value) or abs(int(value)) >= 2 ** 64:
            raise ValueError(f"{where} must be a whole number, got {json_type(value)} {short(value)}.")
        return
    if hint is float:
        if not _is_number(value) or not math.isfinite(float(value)):
            raise ValueError(f"{where} must be a finite number, got {json_type(value)} {short(value)}.")
        return
    if hint is str:
        if not isinstance(value, str) or len(value) > MAX_STRING_CHARS:
            raise ValueError(f"{where} must be a string of at most {MAX_STRING_CHARS} characters, "
                             f"got {json_type(value)} {short(value)}.")
        return
    if origin in (tuple, list):
        if not isinstance(value, (list, tuple)):
            raise ValueError(f"{where} must be an array, got {json_type(value)} {short(value)}.")
        if origin is tuple and not (len(args) == 2 and args[1] is Ellipsis):
            if len(value) != len(args):
                raise ValueError(f"{where} must hold exactly {len(args)} values, got {len(value)}.")
            for index, (item, arm) in enumerate(zip(value, args)):
                check_value(item, arm, f"{where}[{index}]")
            return
        item_hint = args[0] if args else typing.Any
        for index, item in enumerate(value):
            check_value(item, item_hint, f"{where}[{index}]")
        return
    if origin is dict:
        if not isinstance(value, Mapping):
            raise ValueError(f"{where} must be an object, got {json_type(value)} {short(value)}.")
        for key, item in value.items():
            check_value(key, args[0] if args else str, f"{where} key")
            check_value(item, args[1] if args else typing.Any, f"{where}.{key}")
        return
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        check_fields(value, hint, where)
        return
    raise TypeError(f"check_value cannot check the type {hint!r} of {where}")  # a programming error


def check_fields(data: object, cls: type, where: str) -> None:
    """``data`` is a JSON object whose keys are fields of dataclass ``cls`` with values of their types."""
    if not isinstance(data, Mapping):
        raise ValueError(f"{where} must be an object, got {json_type(data)} {short(data)}.")
    hints = typing.get_type_hints(cls)
    known = [f.name for f in dataclasses.fields(cls)]
    for key, value in data.items():
        if key not in known:
            raise ValueError(f"{where} has an unknown field {short(key)} (known: {', '.join(known)}); "
                             f"was the file written by a newer comfy-splice?")
        check_value(value, hints[key], f"{where}.{key}")


# --------------------------------------------------------------------------------------------
# safetensors headers


@dataclasses.dataclass(frozen=True)
class TensorInfo:
    """A tensor as a file declares it: shape and dtype, before any of its data is read."""

    shape: tuple[int, ...]
    dtype: torch.dtype

    @property
    def numel(self) -> int:
        return math.prod(self.shape)

    @property
    def nbytes(self) -> int:
        return self.numel * self.dtype.itemsize


def safetensors_header_size(path: str | os.PathLike) -> int:
    """The length of a .safetensors file's JSON header, read from its first 8 bytes."""
    with open(path, "rb") as handle:
        head = handle.read(8)
    if len(head) < 8:
        raise ValueError(f"{Path(path).name} is {len(head)} bytes long: too short for a "
                         f".safetensors file (truncated?).")
    return int(struct.unpack("<Q", head)[0])


def read_safetensors_header(path: str | os.PathLike, max_header_bytes: int
                            ) -> tuple[dict[str, TensorInfo], dict[str, str]]:
    """Shapes, dtypes and metadata of a .safetensors file, without reading its tensors.

    The header's length is checked against ``max_header_bytes`` first (a real ViT's header is a
    few KB), so a crafted file cannot make the parser allocate much. safetensors itself checks
    that the declared tensors cover the file exactly (a truncated file fails here).
    ValueError for anything wrong; the caller adds the file name and the fix.
    """
    from safetensors import SafetensorError, safe_open

    size = safetensors_header_size(path)
    file_size = os.path.getsize(path)
    if size > max_header_bytes:
        raise ValueError(f"its header declares {size:,} bytes of metadata; at most "
                         f"{max_header_bytes:,} are accepted")
    if 8 + size > file_size:
        raise ValueError(f"its header declares {size:,} bytes but the file has {file_size:,} "
                         f"(truncated?)")
    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = dict(handle.metadata() or {})
            tensors: dict[str, TensorInfo] = {}
            for name in handle.keys():
                view = handle.get_slice(name)
                dtype = SAFETENSORS_DTYPES.get(str(view.get_dtype()))
                if dtype is None:
                    raise ValueError(f"tensor {short(name)} has the unsupported dtype "
                                     f"{short(view.get_dtype())}")
                tensors[name] = TensorInfo(tuple(int(n) for n in view.get_shape()), dtype)
    except (SafetensorError, OSError) as exc:
        raise ValueError(f"its header is damaged or the file is truncated "
                         f"({short_text(exc, 200)})") from None
    return tensors, metadata


# --------------------------------------------------------------------------------------------
# File names typed by users (save prefixes)

NAME_MAX_BYTES = 255
"""Longest file or folder name on Linux, macOS and Windows file systems (bytes of UTF-8)."""
PATH_MAX_BYTES = 4096
"""Longest path on Linux, including the terminating NUL byte."""

_CONTROL_NAMES = {0: "NUL", 9: "a tab", 10: "a line break", 13: "a carriage return", 127: "DEL"}


def check_file_name(prefix: str, what: str, folder: str, suffix: str = "",
                    name_max: int = NAME_MAX_BYTES, path_max: int = PATH_MAX_BYTES) -> None:
    """A user-typed relative file name (``prefix``, which may hold subfolders, to which
    ``suffix`` is appended) that the file system can take inside ``folder``; otherwise a
    ValueError that names the limit. Pure text checks, before anything touches the file
    system: the OS would answer "embedded null byte" or "File name too long", which say nothing
    about which input to fix.

    Refused: control characters (NUL, line breaks...), text that is not valid Unicode, a folder
    or file name over ``name_max`` bytes (the last one with ``suffix``), and a whole path of
    ``path_max`` bytes or more (the limit counts a terminating NUL)."""
    for position, char in enumerate(prefix):
        code = ord(char)
        if code < 32 or code == 127:
            name = _CONTROL_NAMES.get(code, f"U+{code:04X}")
            raise ValueError(f"{what} contains a control character ({name}, at character {position + 1}); file "
                             f"names cannot hold control characters. Remove it.")
    try:
        encoded = prefix.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ValueError(f"{what} is not valid Unicode text (character {exc.start + 1}); retype it.") from None
    parts = [part for part in re.split(r"[\\/]", prefix) if part]
    for index, part in enumerate(parts):
        last = index == len(parts) - 1
        size = len((part + suffix if last else part).encode("utf-8"))
        if size > name_max:
            with_suffix = f" with the {suffix!r} the node adds" if last and suffix else ""
            room = f" to {name_max - len(suffix.encode())} bytes or less" if last and suffix else ""
            raise ValueError(f"{what}: the name {short(part, 40)} is {size} bytes{with_suffix}; a file or "
                             f"folder name may be at most {name_max} bytes. Shorten it{room}.")
    full = len(os.path.join(folder, "").encode("utf-8", "surrogateescape")) + len(encoded) + len(suffix.encode())
    if full >= path_max:
        raise ValueError(f"{what} makes a path of {full} bytes (inside {short(folder, 80)}); a path may be at most "
                         f"{path_max - 1} bytes. Shorten the prefix or use fewer subfolders.")
