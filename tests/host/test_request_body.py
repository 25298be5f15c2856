"""The pack's routes read their small JSON bodies through one helper (nodes/request_body.py):
bounded, read to the end when it comes in pieces, parsed as one flat object. The routes'
answers are tested on a real server (test_stop_route.py, test_node_ui_server.py)."""

from __future__ import annotations

from typing import Any

import pytest

from comfy_in_process import Comfy, run_coroutine


class _Refused(Exception):
    def __init__(self, reason: str, status: int) -> None:
        super().__init__(reason)
        self.status = status


class _Stream:
    """aiohttp's StreamReader as far as the helper uses it: read(n) hands over at most n bytes,
    and may hand over fewer (one piece as it arrived)."""

    def __init__(self, pieces: list[bytes]) -> None:
        self.pieces = list(pieces)
        self.asked: list[int] = []

    async def read(self, n: int) -> bytes:
        self.asked.append(n)
        if not self.pieces:
            return b""
        piece = self.pieces.pop(0)
        if len(piece) > n:
            self.pieces.insert(0, piece[n:])
        return piece[:n]


class _Request:
    def __init__(self, pieces: list[bytes], content_length: int | None = None) -> None:
        self.content = _Stream(pieces)
        self.content_length = content_length


def _read(comfy: Comfy, request: _Request, limit: int = 64) -> bytes:
    helper = comfy.module("nodes.request_body")
    return run_coroutine(helper.read_body(request, limit, _Refused))


def test_a_body_in_pieces_is_read_to_its_end(comfy: Comfy) -> None:
    request = _Request([b'{"node', b'_id": ', b'"6"}'])
    assert _read(comfy, request) == b'{"node_id": "6"}'


def test_at_most_one_byte_past_the_limit_is_read(comfy: Comfy) -> None:
    request = _Request([b"x" * 50, b"y" * 50, b"z" * 50])
    assert _read(comfy, request) == b"x" * 50 + b"y" * 15
    assert request.content.asked == [65, 15]


def test_a_declared_larger_body_is_refused_unread(comfy: Comfy) -> None:
    request = _Request([b"x" * 100], content_length=100)
    with pytest.raises(_Refused, match="over 64 bytes") as refused:
        _read(comfy, request)
    assert refused.value.status == 413 and request.content.asked == []


@pytest.mark.parametrize(("raw", "status", "reason"), [
    (b"x" * 65, 413, "over 64 bytes"),
    (b'{"a": [1]}', 400, "nested 2 levels deep"),
    (b'{"a": "1", "a": "2"}', 400, "the key 'a' appears twice"),
    (b'{"a": "\xff"}', 400, "not JSON"),
    (b"a=1", 400, "not JSON"),
    (b"", 400, "must be a JSON object"),
    (b'"a"', 400, "must be a JSON object"),
])
def test_bad_bodies_are_refused_with_the_routes_own_error(comfy: Comfy, raw: bytes, status: int,
                                                          reason: str) -> None:
    helper = comfy.module("nodes.request_body")
    with pytest.raises(_Refused, match=reason) as refused:
        helper.parse_flat_object(raw, 64, _Refused)
    assert refused.value.status == status


def test_a_flat_object_is_returned(comfy: Comfy) -> None:
    helper = comfy.module("nodes.request_body")
    body: Any = helper.parse_flat_object(b'{"node_id": "6", "all": true}', 64, _Refused)
    assert body == {"node_id": "6", "all": True}
