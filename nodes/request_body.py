"""The small JSON bodies the pack's routes take: read with a bound, parsed as one flat object.

``POST /splice/stop`` and ``POST /splice/dino/download`` both take a few dozen bytes of JSON. A
body is read at most one byte past its limit (a declared larger one is refused unread), in a
loop, since a stream may hand it over in several pieces; then its nesting is counted before
``json`` parses anything, and a key given twice is refused (which value counts would be a
guess). Each route adds its own example to the messages and checks the keys itself.
"""

from __future__ import annotations

import json
from typing import Any, Callable

from ..comfy_splice.validation import json_depth, short

MakeError = Callable[[str, int], Exception]
"""Builds the route's own error from a one-line reason and an HTTP status."""


async def read_body(request: Any, limit: int, error: MakeError) -> bytes:
    """At most ``limit`` + 1 bytes of ``request``'s body (413 when it declares more)."""
    if request.content_length is not None and request.content_length > limit:
        raise error(f"the request body is over {limit} bytes", 413)
    data = b""
    while len(data) <= limit:
        chunk = await request.content.read(limit + 1 - len(data))
        if not chunk:
            break
        data += chunk
    return data


def parse_flat_object(raw: bytes, limit: int, error: MakeError, max_depth: int = 1) -> dict[str, Any]:
    """The JSON object in ``raw``, nested at most ``max_depth`` levels, with no repeated key.

    Bounded: the size is checked first, then the nesting is counted without parsing, so ``json``
    only ever sees a small shallow text; RecursionError is caught all the same."""
    if len(raw) > limit:
        raise error(f"the request body is over {limit} bytes", 413)

    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise error("the body is not JSON (it is not UTF-8 text)", 400) from None
    depth = json_depth(text)
    if depth > max_depth:
        raise error(f"the JSON is nested {depth} levels deep; the request is one flat object", 400)

    def no_repeated_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        body: dict[str, Any] = {}
        for key, value in pairs:
            if key in body:  # the route's error passes json.loads: only its syntax errors are caught
                raise error(f"the key {short(key)} appears twice", 400)
            body[key] = value
        return body

    try:
        body = json.loads(text, object_pairs_hook=no_repeated_keys) if text.strip() else None
    except RecursionError:
        raise error("the JSON is nested too deeply", 400) from None
    except json.JSONDecodeError:
        raise error("the body is not JSON", 400) from None
    if not isinstance(body, dict):
        raise error("the body must be a JSON object", 400)
    return body

