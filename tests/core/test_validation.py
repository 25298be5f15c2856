"""Files and values from outside are checked before anything is built, with one short message.

Crafted DINO weight files and generator files, each with one problem, must be refused with a
ValueError that names the problem in a few hundred characters, quickly and without allocating
what the file claims.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Callable, Literal, Optional
from unittest import mock

import pytest
import torch
from safetensors.torch import load_file, save_file

from comfy_splice.dino import weights as dino_weights
from comfy_splice.dino.models import WeightsError
from comfy_splice.dino.vit import timm_vit
from comfy_splice.dino.weights import load_backbone
from comfy_splice.checkpoint import (MAX_CONFIG_CHARS, load_generator, read_metadata)
from comfy_splice.run import TrainConfig
from comfy_splice.validation import check_finite_image, check_value, json_depth, parse_json

MAX_MESSAGE = 600


def _refused(path: Path, *expected: str, error: type[Exception] = WeightsError) -> str:
    """Loading ``path`` is refused with a short message holding ``expected``, and nothing beyond
    the declared limits was ever built (the builder is watched instead of a clock)."""
    built: list[dict] = []
    real_build = dino_weights._vit_of

    def watched_build(arch: dict) -> torch.nn.Module:
        built.append(dict(arch))
        assert int(arch["depth"]) <= dino_weights.MAX_DEPTH and int(arch["embed_dim"]) <= dino_weights.MAX_WIDTH, arch
        return real_build(arch)

    with mock.patch.object(dino_weights, "_vit_of", watched_build), pytest.raises(error) as info:
        load_backbone(path)
    assert type(info.value) in (error, ValueError, WeightsError)
    message = str(info.value)
    for text in expected:
        assert text in message, message
    assert len(message) < MAX_MESSAGE, message
    return message


def _save(state: dict[str, torch.Tensor], path: Path) -> Path:
    if path.suffix == ".safetensors":
        save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    else:
        torch.save(state, str(path))
    return path


# -- DINO weight files -----------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_a_far_block_index_is_refused_before_building(tiny_dino_state: dict, tmp_path: Path, suffix: str) -> None:
    state = dict(tiny_dino_state, **{"blocks.20000.x": torch.zeros(1)})
    _refused(_save(state, tmp_path / f"far{suffix}"), "blocks.20000.x", "20,000", f"at most {dino_weights.MAX_DEPTH}")


@pytest.mark.parametrize(("key", "expected"), [
    ("blocks.x.y", "'blocks.x.y' does not name a block by its number"),
    ("blocks.01.norm1.weight", "'blocks.01.norm1.weight' does not name a block"),
    ("blocks.3", "'blocks.3' does not name a block"),
])
def test_block_keys_that_do_not_parse_are_named(tiny_dino_state: dict, tmp_path: Path, key: str, expected: str) -> None:
    _refused(_save(dict(tiny_dino_state, **{key: torch.zeros(1)}), tmp_path / "bad.pth"), expected)


def test_a_gap_in_the_blocks_is_refused(tiny_dino_state: dict, tmp_path: Path) -> None:
    state = {k.replace("blocks.1.", "blocks.2."): v for k, v in tiny_dino_state.items()}
    _refused(_save(state, tmp_path / "gap.pth"), "block 1 is missing", "block 2")


def test_inconsistent_blocks_are_refused(tiny_dino_state: dict, tmp_path: Path) -> None:
    state = dict(tiny_dino_state)
    state["blocks.1.mlp.fc1.weight"] = torch.zeros(128, 64)
    _refused(_save(state, tmp_path / "shape.pth"), "blocks.1.mlp.fc1.weight has shape (128, 64)",
             "block 0's is (256, 64)")
    state = {k: v for k, v in tiny_dino_state.items() if k != "blocks.1.attn.proj.bias"}
    _refused(_save(state, tmp_path / "missing.pth"), "block 1 has no 'attn.proj.bias'")


def test_a_huge_width_declared_by_a_tiny_tensor_allocates_nothing(tiny_dino_state: dict, tmp_path: Path) -> None:
    state = dict(tiny_dino_state)
    # A stride-0 view: 4 bytes in the file, 100000 x 3 x 16 x 16 floats as declared.
    state["patch_embed.proj.weight"] = torch.zeros(1).expand(100_000, 3, 16, 16)
    path = _save(state, tmp_path / "wide.pth")
    assert path.stat().st_size < 1_000_000
    _refused(path, "width is 100,000", f"64 to {dino_weights.MAX_WIDTH}")


def test_tensors_whose_data_is_not_in_the_file_are_refused(tmp_path: Path) -> None:
    with torch.device("meta"):
        shapes = {k: v.shape for k, v in timm_vit(16, 1024, 2, 16, 4.0, 224).state_dict().items()}
    state = {k: torch.zeros(1).expand(shape) for k, shape in shapes.items()}
    _refused(_save(state, tmp_path / "hollow.pth"), "declares", "bytes but the file holds 4")


@pytest.mark.parametrize(("change", "expected"), [
    ({"blocks.0.mlp.fc1.weight": torch.zeros(64 * 9, 64), "blocks.1.mlp.fc1.weight": torch.zeros(64 * 9, 64)},
     "at most 8 times"),
    ({"patch_embed.proj.weight": torch.zeros(64, 3, 40, 40)}, "patch size is 40"),
    ({"pos_embed": torch.zeros(1, 1 + 80 * 80, 64)}, "position grid is 80x80"),
    ({"blocks.0.norm1.weight": torch.zeros(64, dtype=torch.int32),
      "blocks.1.norm1.weight": torch.zeros(64, dtype=torch.int32)}, "not floating-point"),
    ({"extra.weight": torch.zeros(3)}, "unknown tensor 'extra.weight'"),
    ({"norm.weight": torch.full((64,), float("nan"))}, "norm.weight holds NaN"),
])
def test_caps_and_layout(tiny_dino_state: dict, tmp_path: Path, change: dict, expected: str) -> None:
    _refused(_save(dict(tiny_dino_state, **change), tmp_path / "bad.safetensors"), expected)


def test_thousands_of_unknown_keys_give_a_short_message(tiny_dino_state: dict, tmp_path: Path) -> None:
    state = dict(tiny_dino_state, **{f"junk.{i}": torch.zeros(1) for i in range(500)})
    _refused(_save(state, tmp_path / "junk.pth"), "unknown tensor 'junk.0' (and 499 more)")
    state = dict(tiny_dino_state, **{f"junk.{i}": torch.zeros(1) for i in range(5000)})
    _refused(_save(state, tmp_path / "many.safetensors"), f"{len(state):,} tensors")


def test_keys_that_are_not_strings_are_refused(tiny_dino_state: dict, tmp_path: Path) -> None:
    _refused(_save(dict(tiny_dino_state, **{}) | {7: torch.zeros(1)}, tmp_path / "int.pth"), "7 is not a string")


def test_truncated_files_are_refused(tiny_dino_state: dict, tmp_path: Path) -> None:
    for suffix in (".pth", ".safetensors"):
        whole = _save(tiny_dino_state, tmp_path / f"whole{suffix}").read_bytes()
        cut = tmp_path / f"cut{suffix}"
        cut.write_bytes(whole[: len(whole) // 2])
        message = _refused(cut, "cut" + suffix)
        assert "truncated" in message or "Could not read" in message


def test_a_huge_safetensors_header_is_refused_before_parsing(tmp_path: Path) -> None:
    path = tmp_path / "header.safetensors"
    path.write_bytes(struct.pack("<Q", 50 << 20) + b"{" * 64)
    _refused(path, "52,428,800 bytes of metadata", f"at most {dino_weights.MAX_HEADER_BYTES:,}")


def test_pickled_code_is_refused_and_never_run(tmp_path: Path) -> None:
    marker = tmp_path / "ran"

    class Payload:
        def __reduce__(self) -> tuple:
            return (Path.touch, (marker,))

    torch.save({"x": Payload()}, str(tmp_path / "evil.pth"))
    _refused(tmp_path / "evil.pth", "pickled Python objects", "never loaded")
    assert not marker.exists()


def test_load_calls_cancel_between_stages(tiny_dino_state: dict, tmp_path: Path) -> None:
    path = _save(tiny_dino_state, tmp_path / "ok.safetensors")
    calls: list[int] = []
    assert load_backbone(path, cancel=lambda: calls.append(1)).depth == 2
    assert len(calls) >= 2

    class Cancelled(Exception):
        pass

    def cancel() -> None:
        raise Cancelled

    with pytest.raises(Cancelled):
        load_backbone(path, cancel=cancel)


def test_a_good_file_loads_the_same_from_both_formats(tiny_dino_state: dict, tmp_path: Path) -> None:
    a = load_backbone(_save(tiny_dino_state, tmp_path / "a.pth"))
    b = load_backbone(_save(tiny_dino_state, tmp_path / "b.safetensors"))
    for (ka, va), (kb, vb) in zip(a.state_dict().items(), b.state_dict().items()):
        assert ka == kb and torch.equal(va, vb) and va.dtype == torch.float32
    assert torch.equal(a.state_dict()["vit.blocks.1.attn.qkv.weight"], tiny_dino_state["blocks.1.attn.qkv.weight"])


# -- generator files -------------------------------------------------------------------------------


def _rewrite(source: Path, target: Path, metadata: Callable[[dict], dict] = lambda m: m,
             tensors: Callable[[dict], dict] = lambda t: t) -> Path:
    save_file(tensors(dict(load_file(str(source)))), str(target), metadata=metadata(read_metadata(source)))
    return target


def _set(key: str, value: str) -> Callable[[dict], dict]:
    return lambda meta: {**meta, key: value}


def _config(**changes: object) -> Callable[[dict], dict]:
    return lambda meta: {**meta, "splice_config": json.dumps({**json.loads(meta["splice_config"]), **changes})}


BAD_METADATA = {
    "config not JSON": (_set("splice_config", "{steps: 3"), "splice_config) is not valid JSON"),
    "config an array": (_set("splice_config", "[1, 2]"), "the training config must be an object, got an array"),
    "config a number": (_set("splice_config", "7"), "must be an object, got a number"),
    "steps a string": (_config(steps="many"), "the training config.steps must be a whole number, got a string"),
    "steps a float": (_config(steps=2.5), "steps must be a whole number"),
    "steps zero": (_config(steps=0), "out of range: steps must be at least 1"),
    "seed a boolean": (_config(seed=True), "seed must be a whole number, got a boolean"),
    "lr NaN": (_set("splice_config", '{"lr": NaN}'), "lr must be a finite number"),
    "antialias a string": (_config(antialias="yes"), "antialias must be true or false"),
    "dtype a number": (_config(dtype=16), "dtype must be a string"),
    "dtype unknown": (_config(dtype="fp8"), "dtype 'fp8' is not one of auto, bf16, fp32"),
    "three betas": (_config(betas=[0.0, 0.9, 0.99]), "betas must hold exactly 2 values"),
    "betas strings": (_config(betas=["a", 0.99]), "betas[0] must be a finite number"),
    "betas an object": (_config(betas={"a": 1}), "betas must be an array, got an object"),
    "loss a number": (_config(structure=5), "structure must be an object, got a number"),
    "loss weight a string": (_config(structure={"weight": "heavy"}), "structure.weight must be a finite number"),
    "loss layer a float": (_config(appearance={"layer": 1.5}), "appearance.layer must be a whole number"),
    "loss unknown field": (_config(identity={"colour": 1}), "unknown field 'colour'"),
    "config unknown field": (_config(evil=1), "unknown field 'evil'"),
    "config deeply nested": (_set("splice_config", "[" * 20_000 + "]" * 20_000), "nested 20000 levels"),
    "config too long": (_set("splice_config", json.dumps({"dtype": "x" * MAX_CONFIG_CHARS})), "characters long"),
    "no config": (lambda meta: {k: v for k, v in meta.items() if k != "splice_config"}, "no training config"),
    "no format tag": (lambda meta: {k: v for k, v in meta.items() if k != "splice_format"},
                      "is not a Splice generator"),
    "history an object": (_set("splice_loss", '{"loss": 1}'), "must be an array of numbers, got an object"),
    "history NaN": (_set("splice_loss", "[1.0, NaN]"), "value 1 must be a finite number"),
    "history Infinity": (_set("splice_loss", "[Infinity]"), "value 0 must be a finite number"),
    "history strings": (_set("splice_loss", '["1"]'), "value 0 must be a finite number, got a string"),
    "history nested": (_set("splice_loss", "[[1.0]]"), "nested 2 levels"),
    "history deeply nested": (_set("splice_loss", "[" * 50_000), "nested 50000 levels"),
    "history not JSON": (_set("splice_loss", "[1,"), "splice_loss) is not valid JSON"),
    "backbone name huge": (_set("splice_backbone", "v" * 10_000), "splice_backbone"),
    "backbone name control chars": (_set("splice_backbone", "a\x1b[2Jb"), "not a short printable name"),
}


@pytest.mark.parametrize("case", list(BAD_METADATA))
def test_crafted_metadata_gives_one_readable_value_error(tiny_generator_file: Path, tmp_path: Path, case: str) -> None:
    change, expected = BAD_METADATA[case]
    path = _rewrite(tiny_generator_file, tmp_path / "crafted.safetensors", metadata=change)
    with pytest.raises(ValueError) as info:
        load_generator(path)
    assert type(info.value) is ValueError
    message = str(info.value)
    assert expected in message and "crafted.safetensors" in message, message
    assert len(message) < MAX_MESSAGE, message


BAD_TENSORS = {
    "extra tensor": (lambda t: {**t, "evil": torch.zeros(1)}, "unknown tensor 'evil'"),
    "missing tensor": (lambda t: {k: v for k, v in t.items() if k != "head.bias"}, "head.bias is missing"),
    "wrong shape": (lambda t: {**t, "head.bias": torch.zeros(5)}, "head.bias has shape (5,), expected (3,)"),
    "integer weights": (lambda t: {**t, "head.bias": torch.zeros(3, dtype=torch.int64)}, "holds torch.int64"),
    "NaN weights": (lambda t: {**t, "head.bias": torch.full((3,), float("nan"))}, "head.bias holds NaN"),
}


@pytest.mark.parametrize("case", list(BAD_TENSORS))
def test_generator_tensors_must_be_exactly_the_generators(tiny_generator_file: Path, tmp_path: Path, case: str) -> None:
    change, expected = BAD_TENSORS[case]
    path = _rewrite(tiny_generator_file, tmp_path / "tensors.safetensors", tensors=change)
    with pytest.raises(ValueError) as info:
        load_generator(path)
    assert type(info.value) is ValueError and expected in str(info.value), str(info.value)


def test_a_truncated_generator_is_refused(tiny_generator_file: Path, tmp_path: Path) -> None:
    data = tiny_generator_file.read_bytes()
    (tmp_path / "cut.safetensors").write_bytes(data[: len(data) - 1000])
    with pytest.raises(ValueError, match="cut.safetensors is not a readable .safetensors file"):
        load_generator(tmp_path / "cut.safetensors")


def test_a_good_generator_still_loads(tiny_generator_file: Path, tmp_path: Path) -> None:
    loaded = load_generator(_rewrite(tiny_generator_file, tmp_path / "same.safetensors"))
    assert loaded.config == TrainConfig(steps=5) and loaded.history == {"loss": [2.0, 1.0]}


# -- the shared pieces -----------------------------------------------------------------------------


def test_json_depth_ignores_brackets_in_strings() -> None:
    assert json_depth('{"a": [1, {"b": "[[[[["}]}') == 3
    assert json_depth("[]") == 1 and json_depth('"x"') == 0
    with pytest.raises(ValueError, match="nested 3 levels deep; at most 2"):
        parse_json("[[[1]]]", "it", 100, 2)


def test_check_value_understands_optional_literal_and_dicts() -> None:
    check_value(None, Optional[int], "x")
    check_value(3, Optional[int], "x")
    with pytest.raises(ValueError, match="x must be a whole number"):
        check_value("3", Optional[int], "x")
    check_value("a", Literal["a", "b"], "x")
    with pytest.raises(ValueError, match="x is 'c'; expected one of 'a', 'b'"):
        check_value("c", Literal["a", "b"], "x")
    check_value({"a": 1.0}, dict[str, float], "x")
    with pytest.raises(ValueError, match=r"x.a must be a finite number"):
        check_value({"a": float("inf")}, dict[str, float], "x")
    with pytest.raises(ValueError, match="x must be a whole number"):
        check_value(2 ** 70, int, "x")


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
def test_non_finite_images_are_refused(bad: float) -> None:
    frames = torch.rand(3, 16, 16, 3)
    check_finite_image(frames, "images")
    frames[2, 5, 7, 1] = bad
    with pytest.raises(ValueError, match="images: the image holds NaN or infinite values"):
        check_finite_image(frames, "images")
