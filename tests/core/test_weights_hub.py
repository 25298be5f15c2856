"""The Hugging Face hub's DINO safetensors (timm's key names) load, and the explicit download.

The download tests talk to an HTTP server in this process (http.server on 127.0.0.1 in a
thread), reached through ``$HF_ENDPOINT`` as a hub mirror would be: these machines reach no
model hub. The files it serves are tiny random ViTs, never presented as real weights.
"""

from __future__ import annotations

import http.server
import re
from pathlib import Path
from typing import Any, Iterator

import pytest
import timm
import torch
from safetensors.torch import save_file

from comfy_splice.dino.download import download_weights
from comfy_splice.dino.models import DINO_MODELS, HF_ENDPOINT_ENV, WeightsError, download_url, official_model
from comfy_splice.dino.weights import load_backbone


def _pattern(keys: Iterator[str], depth: int) -> set[str]:
    """Key names with the block index written as ``blocks.*`` (blocks past ``depth`` dropped)."""
    out = set()
    for key in keys:
        match = re.match(r"blocks\.(\d+)\.(.*)", key)
        if match is None:
            out.add(key)
        elif int(match.group(1)) < depth:
            out.add(f"blocks.*.{match.group(2)}")
    return out


def _tiny_timm_state(timm_name: str = "vit_small_patch16_224.dino") -> dict[str, torch.Tensor]:
    """A 2-block, 64-wide ViT built by timm itself from a DINO model's config: timm's names and
    dtypes by construction."""
    torch.manual_seed(0)
    vit = timm.create_model(timm_name, pretrained=False, num_classes=0, embed_dim=64, depth=2,
                            num_heads=1)
    return {k: v.contiguous() for k, v in vit.state_dict().items()}


@pytest.mark.parametrize("key", list(DINO_MODELS))
def test_tiny_hub_file_has_the_key_names_and_dtypes_of_each_dino_model(key: str) -> None:
    model = DINO_MODELS[key]
    with torch.device("meta"):  # the real architecture, without allocating its weights
        real = timm.create_model(model.timm_name, pretrained=False, num_classes=0).state_dict()
    assert len(real) == 4 + 2 + 12 * model.depth  # cls, pos, patch w/b, norm w/b, 12 per block
    tiny = _tiny_timm_state(model.timm_name)
    assert _pattern(iter(tiny), 2) == _pattern(iter(real), model.depth)
    assert {v.dtype for v in real.values()} == {v.dtype for v in tiny.values()} == {torch.float32}


def test_hub_safetensors_in_timm_names_load(tmp_path: Path) -> None:
    state = _tiny_timm_state()
    path = tmp_path / DINO_MODELS["dino_vits16"].hf_file_name
    save_file(state, str(path))
    backbone = load_backbone(path)
    assert (backbone.patch_size, backbone.embed_dim, backbone.depth) == (16, 64, 2)
    for name, tensor in backbone.vit.state_dict().items():
        torch.testing.assert_close(tensor, state[name])


def test_both_spellings_name_the_same_model() -> None:
    for model in DINO_MODELS.values():
        assert official_model(model.hf_file_name) is official_model(model.file_name) is model
        assert model.hf_url == f"https://huggingface.co/timm/{model.timm_name}/resolve/main/model.safetensors"
    assert DINO_MODELS["dino_vitb8"].hf_file_name == "vit_base_patch8_224.dino.safetensors"


# -- the download, against a local server ------------------------------------------------------


@pytest.fixture()
def hub(hub_stub: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    """The session's hub stand-in (tests/conftest.py), emptied, with $HF_ENDPOINT pointing at it."""
    hub_stub.files.clear()
    hub_stub.requests.clear()
    monkeypatch.setenv(HF_ENDPOINT_ENV, hub_stub.endpoint)
    return hub_stub


def _path(key: str) -> str:
    return f"/timm/{DINO_MODELS[key].timm_name}/resolve/main/model.safetensors"


def _tiny_bytes(tmp_path: Path) -> bytes:
    path = tmp_path / "tiny.safetensors"
    save_file(_tiny_timm_state(), str(path))
    return path.read_bytes()


def test_download_writes_the_file_after_it_loads_and_reports_progress(hub: Any, tmp_path: Path) -> None:
    body = _tiny_bytes(tmp_path)
    hub.serve(_path("dino_vits16"), body)
    folder = tmp_path / "splice_dino"
    seen: list[tuple[int, int | None]] = []
    target = download_weights("dino_deitsmall16_pretrain.pth", folder,
                              progress=lambda done, total: seen.append((done, total)))
    assert target == folder / "vit_small_patch16_224.dino.safetensors"
    assert target.read_bytes() == body
    assert sorted(p.name for p in folder.iterdir()) == [target.name], "no temporary file may stay"
    assert seen[0] == (0, len(body)) and seen[-1] == (len(body), len(body))
    assert load_backbone(target).embed_dim == 64
    assert hub.requests == [_path("dino_vits16")]
    assert download_weights("dino_vits16", folder) == target
    assert hub.requests == [_path("dino_vits16")], "a file on disk is not downloaded again"


def _refused(hub: Any, tmp_path: Path, key: str = "dino_vitb8") -> str:
    folder = tmp_path / "splice_dino"
    with pytest.raises(WeightsError) as info:
        download_weights(key, folder, timeout=10)
    message = str(info.value)
    model = DINO_MODELS[key]
    assert str(folder) in message and model.hf_file_name in message
    assert f"{hub.endpoint}{_path(key)}" in message
    assert list(folder.iterdir()) == [], "nothing half-written may be left"
    return message


def test_http_404_names_folder_file_and_url(hub: Any, tmp_path: Path) -> None:
    assert "404" in _refused(hub, tmp_path)


def test_truncated_body_is_refused(hub: Any, tmp_path: Path) -> None:
    body = _tiny_bytes(tmp_path)
    hub.serve(_path("dino_vitb8"), body[: len(body) // 2], length=len(body))
    _refused(hub, tmp_path)


def test_a_file_that_is_not_a_vit_is_refused(hub: Any, tmp_path: Path) -> None:
    not_vit = tmp_path / "resnet.safetensors"
    save_file({"conv1.weight": torch.zeros(8, 3, 3, 3)}, str(not_vit))
    body = not_vit.read_bytes()
    hub.serve(_path("dino_vitb8"), body)
    assert "not a DINO ViT" in _refused(hub, tmp_path)


def test_offline_names_folder_file_and_url(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    with http.server.HTTPServer(("127.0.0.1", 0), http.server.BaseHTTPRequestHandler) as closed:
        endpoint = f"http://127.0.0.1:{closed.server_address[1]}"
    monkeypatch.setenv(HF_ENDPOINT_ENV, endpoint)  # nothing listens there any more
    folder = tmp_path / "splice_dino"
    with pytest.raises(WeightsError) as info:
        download_weights("dino_vits8", folder, timeout=10)
    assert download_url(DINO_MODELS["dino_vits8"]) in str(info.value)
    assert str(folder) in str(info.value)
    assert list(folder.iterdir()) == []


def test_without_the_variable_the_hub_is_used(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(HF_ENDPOINT_ENV, raising=False)
    model = DINO_MODELS["dino_vitb8"]
    assert download_url(model) == model.hf_url
