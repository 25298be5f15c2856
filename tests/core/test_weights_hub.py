"""The Hugging Face hub's DINO safetensors (timm's key names) load, and the explicit download.

The download tests talk to an HTTP server in this process (http.server on 127.0.0.1 in a
thread), reached through ``$HF_ENDPOINT`` as a hub mirror would be: these machines reach no
model hub. The files it serves are tiny random ViTs, never presented as real weights.
"""

from __future__ import annotations

import dataclasses
import hashlib
import http.server
import re
import select
import socket
import threading
from pathlib import Path
from typing import Any, Iterator

import pytest
import timm
import torch
from safetensors.torch import save_file

from comfy_splice.dino import download as download_module
from comfy_splice.dino.download import DownloadError, DownloadLimits, download_weights
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
    hub_stub.clear()
    monkeypatch.setenv(HF_ENDPOINT_ENV, hub_stub.endpoint)
    return hub_stub


def _path(key: str) -> str:
    return f"/timm/{DINO_MODELS[key].timm_name}/resolve/main/model.safetensors"


def _tiny_bytes(tmp_path: Path) -> bytes:
    path = tmp_path / "tiny.safetensors"
    save_file(_tiny_timm_state(), str(path))
    return path.read_bytes()


def test_download_writes_the_file_after_it_is_checked_and_reports_progress(
        hub: Any, tmp_path: Path, vits16_hub_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    body = vits16_hub_file.read_bytes()
    hub.serve(_path("dino_vits16"), body)
    # A published hash that matches is accepted (the pack knows none it could verify yet).
    model = DINO_MODELS["dino_vits16"]
    monkeypatch.setitem(DINO_MODELS, "dino_vits16",
                        dataclasses.replace(model, sha256=hashlib.sha256(body).hexdigest()))
    folder = tmp_path / "splice_dino"
    seen: list[tuple[int, int | None]] = []
    target = download_weights("dino_deitsmall16_pretrain.pth", folder,
                              progress=lambda done, total: seen.append((done, total)))
    assert target == folder / "vit_small_patch16_224.dino.safetensors"
    assert target.read_bytes() == body
    assert sorted(p.name for p in folder.iterdir()) == [target.name], "no temporary file may stay"
    assert seen[0] == (0, len(body)) and seen[-1] == (len(body), len(body))
    assert max(b - a for (a, _), (b, _) in zip(seen, seen[1:])) <= DownloadLimits().chunk_bytes
    backbone = load_backbone(target)
    assert (backbone.depth, backbone.embed_dim, backbone.patch_size) == (12, 384, 16)
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


# -- bounds: stalls, deadline, cancel, size, the model itself, redirects ------------------------
#
# The mirrors below answer from handler threads of the hub stand-in. None of the outcomes depends
# on the machine's speed: a stalled mirror sends nothing, a trickling one at most 20 bytes/s
# against a minimum of 64 kB/s, and cancel and size limits count calls and bytes, not time.

# Small bounds: a stall is found within half a second; nothing else would end these transfers
# before the 60 s deadline (the tests assert which rule ended each one by its message).
FAST = DownloadLimits(deadline_s=60.0, min_bytes_per_s=64 * 1024, window_s=0.5, poll_s=0.05)


class Interrupted(Exception):
    """What a cancel callback raises (ComfyUI raises its InterruptProcessingException)."""


def _client_left(handler: Any, wait: float) -> bool:
    """True once the client closed its end (read end-of-file or a reset); waits up to ``wait``."""
    readable, _, _ = select.select([handler.connection], [], [], wait)
    if not readable:
        return False
    try:
        return handler.connection.recv(1, socket.MSG_PEEK) == b""
    except OSError:
        return True


def _stalling(gone: threading.Event, length: int | None = 1 << 20, first: bytes = b"") -> Any:
    """Headers (and ``first``), then nothing until the client leaves; ``gone`` is set then."""
    def handle(handler: Any) -> None:
        handler.send_response(200)
        if length is not None:
            handler.send_header("Content-Length", str(length))
        handler.end_headers()
        handler.wfile.write(first)
        handler.wfile.flush()
        if _client_left(handler, 60):
            gone.set()
    return handle


def _trickling(gone: threading.Event) -> Any:
    """One byte at a time, each after 50 ms: at most 20 bytes/s, whatever the machine."""
    def handle(handler: Any) -> None:
        handler.send_response(200)
        handler.send_header("Content-Length", str(1 << 20))
        handler.end_headers()
        for _ in range(1200):  # a minute at most
            try:
                handler.wfile.write(b"x")
                handler.wfile.flush()
            except OSError:
                break
            if _client_left(handler, 0.05):
                break
        gone.set()
    return handle


def _endless(gone: threading.Event, limit: int) -> Any:
    """A chunked body without Content-Length, 64 KiB per chunk, until the client leaves (or
    ``limit`` bytes: a client that never stops fails its test instead of hanging it)."""
    def handle(handler: Any) -> None:
        handler.send_response(200)
        handler.send_header("Transfer-Encoding", "chunked")
        handler.end_headers()
        block = b"\0" * (64 * 1024)
        sent = 0
        try:
            while sent < limit:
                handler.wfile.write(b"%x\r\n%s\r\n" % (len(block), block))
                sent += len(block)
            handler.wfile.write(b"0\r\n\r\n")
        except OSError:
            gone.set()
    return handle


def _redirecting(location: str) -> Any:
    def handle(handler: Any) -> None:
        handler.send_response(302)
        handler.send_header("Location", location)
        handler.send_header("Content-Length", "0")
        handler.end_headers()
    return handle


def _failed(folder: Path, call: Any, error: type[BaseException] = WeightsError) -> str:
    with pytest.raises(error) as info:
        call()
    assert list(folder.iterdir()) == [], "nothing half-written may be left"
    return str(info.value)


def test_a_stalled_mirror_is_dropped_with_a_message(hub: Any, tmp_path: Path) -> None:
    gone = threading.Event()
    hub.serve_with(_path("dino_vits16"), _stalling(gone))
    folder = tmp_path / "splice_dino"
    message = _failed(folder, lambda: download_weights("dino_vits16", folder, limits=FAST))
    assert "stalled" in message and "64 kB/s" in message and "0 of 1,048,576 bytes" in message
    assert _path("dino_vits16") in message and str(folder) in message
    assert gone.wait(30), "the connection must be closed, not left to the mirror"


def test_a_trickling_mirror_is_dropped_as_a_stall(hub: Any, tmp_path: Path) -> None:
    gone = threading.Event()
    hub.serve_with(_path("dino_vits16"), _trickling(gone))
    folder = tmp_path / "splice_dino"
    message = _failed(folder, lambda: download_weights("dino_vits16", folder, limits=FAST))
    assert "stalled" in message
    assert gone.wait(30)


def test_the_deadline_ends_a_transfer_that_keeps_the_minimum_pace(hub: Any, tmp_path: Path) -> None:
    gone = threading.Event()
    hub.serve_with(_path("dino_vits16"), _trickling(gone))
    folder = tmp_path / "splice_dino"
    limits = dataclasses.replace(FAST, min_bytes_per_s=0.0, deadline_s=0.3)
    message = _failed(folder, lambda: download_weights("dino_vits16", folder, limits=limits))
    assert "did not finish within the 0.3 s deadline" in message
    assert "stalled" not in message
    assert gone.wait(30)


def test_cancel_runs_while_no_byte_arrives_and_stops_the_download(hub: Any, tmp_path: Path) -> None:
    gone = threading.Event()
    hub.serve_with(_path("dino_vits16"), _stalling(gone))
    folder = tmp_path / "splice_dino"
    calls: list[int] = []
    seen: list[tuple[int, int | None]] = []

    def cancel() -> None:
        calls.append(1)
        if len(calls) == 5:
            raise Interrupted

    limits = dataclasses.replace(FAST, window_s=60.0)  # only the cancel may end it
    _failed(folder, lambda: download_weights("dino_vits16", folder, limits=limits, cancel=cancel,
                                             progress=lambda d, t: seen.append((d, t))),
            error=Interrupted)
    assert len(calls) == 5, "the cancel exception propagates unchanged, at once"
    assert all(done == 0 for done, _ in seen), "the cancel checks ran while nothing arrived"
    assert gone.wait(30), "the connection was closed"


def test_cancel_stops_a_flowing_download_within_one_chunk(hub: Any, tmp_path: Path) -> None:
    gone = threading.Event()
    hub.serve_with(_path("dino_vits16"), _endless(gone, limit=1 << 30))
    folder = tmp_path / "splice_dino"
    seen: list[int] = []
    stop_at = 256 * 1024

    def cancel() -> None:
        if seen and seen[-1] >= stop_at:
            raise Interrupted

    _failed(folder, lambda: download_weights("dino_vits16", folder, limits=FAST, cancel=cancel,
                                             progress=lambda done, _: seen.append(done)),
            error=Interrupted)
    assert stop_at <= seen[-1] < stop_at + FAST.chunk_bytes
    assert gone.wait(30)


def test_a_content_length_over_the_cap_is_refused_before_anything_is_written(
        hub: Any, tmp_path: Path) -> None:
    cap = DINO_MODELS["dino_vits16"].max_download_bytes
    gone = threading.Event()
    hub.serve_with(_path("dino_vits16"), _stalling(gone, length=cap + 1, first=b"\0" * 65536))
    folder = tmp_path / "splice_dino"
    seen: list[int] = []
    message = _failed(folder, lambda: download_weights("dino_vits16", folder, limits=FAST,
                                                       progress=lambda done, _: seen.append(done)))
    assert f"announces {cap + 1:,} bytes" in message and f"at most {cap:,}" in message
    assert seen == [], "refused from the headers, before any byte was written"
    assert gone.wait(30)


def test_a_body_without_length_is_stopped_at_the_cap(hub: Any, tmp_path: Path) -> None:
    cap = DINO_MODELS["dino_vits16"].max_download_bytes
    gone = threading.Event()
    hub.serve_with(_path("dino_vits16"), _endless(gone, limit=2 * cap))
    folder = tmp_path / "splice_dino"
    seen: list[int] = []
    message = _failed(folder, lambda: download_weights("dino_vits16", folder, limits=FAST,
                                                       progress=lambda done, _: seen.append(done)))
    assert f"passed {cap:,} bytes" in message
    assert cap - FAST.chunk_bytes < max(seen) <= cap, "written up to the cap, not past it"
    assert gone.wait(30)


def test_the_cap_is_the_parameters_in_fp32_with_a_margin() -> None:
    for model in DINO_MODELS.values():
        assert model.parameters * 4 < model.max_download_bytes < model.parameters * 4 * 1.1 + (2 << 20)


def test_a_vit_of_another_shape_under_the_official_name_is_refused(hub: Any, tmp_path: Path) -> None:
    hub.serve(_path("dino_vits16"), _tiny_bytes(tmp_path))  # loads as a ViT: 2 blocks, 64 wide
    folder = tmp_path / "splice_dino"
    message = _failed(folder, lambda: download_weights("dino_vits16", folder, limits=FAST))
    assert "is not ViT-S/16" in message
    assert "depth 12, width 384, patch 16 and 21,665,664 parameters" in message
    assert "depth 2, width 64, patch 16" in message


def test_the_identity_check_is_the_shape_not_only_the_width(tmp_path: Path) -> None:
    path = tmp_path / "vit_small_patch16_224.dino.safetensors"
    from comfy_splice.dino.fixtures import save_tiny_backbone

    save_tiny_backbone(path, patch_size=16, embed_dim=384, depth=3)
    with pytest.raises(WeightsError, match="depth 3, width 384, patch 16"):
        load_backbone(path, expect=DINO_MODELS["dino_vits16"])
    assert load_backbone(path).depth == 3, "without expect, any DINO-style ViT still loads"


def test_a_hash_mismatch_is_refused(hub: Any, tmp_path: Path, vits16_hub_file: Path,
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    body = vits16_hub_file.read_bytes()
    hub.serve(_path("dino_vits16"), body)
    published = hashlib.sha256(body + b"another release").hexdigest()
    monkeypatch.setitem(DINO_MODELS, "dino_vits16",
                        dataclasses.replace(DINO_MODELS["dino_vits16"], sha256=published))
    folder = tmp_path / "splice_dino"
    message = _failed(folder, lambda: download_weights("dino_vits16", folder, limits=FAST))
    assert hashlib.sha256(body).hexdigest() in message and f"publishes {published}" in message


def test_a_redirect_within_the_mirror_is_followed(hub: Any, tmp_path: Path) -> None:
    hub.serve_with(_path("dino_vits16"), _redirecting("/moved/model.safetensors"))
    folder = tmp_path / "splice_dino"
    message = _failed(folder, lambda: download_weights("dino_vits16", folder, limits=FAST))
    assert hub.requests == [_path("dino_vits16"), "/moved/model.safetensors"]
    assert "HTTP Error 404" in message


def test_redirects_are_followed_a_bounded_number_of_times(hub: Any, tmp_path: Path) -> None:
    hub.serve_with(_path("dino_vits16"), _redirecting(_path("dino_vits16") + "?again"))
    folder = tmp_path / "splice_dino"
    message = _failed(folder, lambda: download_weights("dino_vits16", folder, limits=FAST))
    assert "more than 5 redirects" in message
    assert len(hub.requests) == 6


@pytest.mark.parametrize("scheme", ["http", "https"])
def test_a_redirect_to_another_loopback_port_is_refused(hub: Any, tmp_path: Path, scheme: str) -> None:
    other = http.server.HTTPServer(("127.0.0.1", 0), http.server.BaseHTTPRequestHandler)
    try:
        port = other.server_address[1]
        hub.serve_with(_path("dino_vits16"), _redirecting(f"{scheme}://127.0.0.1:{port}/steal"))
        folder = tmp_path / "splice_dino"
        message = _failed(folder, lambda: download_weights("dino_vits16", folder, limits=FAST))
        assert f"redirect to {scheme}://127.0.0.1:{port}/steal was refused" in message
        other.socket.settimeout(0)
        with pytest.raises(OSError):  # nothing ever connected to the other port
            other.socket.accept()
    finally:
        other.server_close()


def test_a_redirect_to_plain_http_elsewhere_is_refused(hub: Any, tmp_path: Path) -> None:
    hub.serve_with(_path("dino_vits16"), _redirecting("http://93.184.215.14/model.safetensors"))
    folder = tmp_path / "splice_dino"
    message = _failed(folder, lambda: download_weights("dino_vits16", folder, limits=FAST))
    assert "only https is followed" in message


@pytest.mark.parametrize("target,allowed", [
    ("https://93.184.215.14/model.safetensors", True),  # https on a public address
    ("https://127.0.0.1/model.safetensors", False),
    ("https://localhost:8188/prompt", False),
    ("https://10.1.2.3/model.safetensors", False),
    ("https://192.168.0.10/model.safetensors", False),
    ("https://169.254.169.254/latest/meta-data", False),
    ("https://[::1]/model.safetensors", False),
    ("https://[::ffff:127.0.0.1]/model.safetensors", False),
    ("http://93.184.215.14/model.safetensors", False),
    ("ftp://93.184.215.14/model.safetensors", False),
    ("https://huggingface.co/other/path", True),  # the endpoint itself: any path
    ("http://huggingface.co/other/path", False),  # another scheme is another origin
])
def test_redirect_rules_from_a_public_endpoint(target: str, allowed: bool) -> None:
    endpoint = download_module.urllib.parse.urlsplit("https://huggingface.co/timm/x")
    if allowed:
        download_module._check_redirect(endpoint, target)
    else:
        with pytest.raises(DownloadError, match="refused"):
            download_module._check_redirect(endpoint, target)
