"""Stop and keep: the pack's ``POST /splice/stop`` route and the registry of running trainings.

Cancel (ComfyUI's ``/interrupt``) throws a run away. Stop and keep ends a training early and lets
Train Generator return the generator trained so far, so the graph goes on with it. A training
registers itself here for its duration, keyed by (prompt id, node id), with an event the training
loop reads before every step; the route sets that event. The state lives in this module, never on
node classes, and an entry exists only while its training runs.

``POST /splice/stop`` takes a small JSON object and nothing else:

- ``{"node_id": "6"}`` stops the running training of node 6 (what ``web/splice_stop.js`` sends
  from the node's button); ``"prompt_id"`` (text) narrows it to one queued prompt;
- ``{"all": true}`` stops every running training (optionally only those of ``"prompt_id"``).

Anything else is refused with 400 and a one-line ``{"error": ...}`` before any training is
touched: a body over :data:`MAX_BODY_BYTES` (413), text that is not JSON, any nesting (the
request is one flat object), an unknown key (a typo such as ``"nodeid"`` must not stop every training), a node id
that is not non-empty text, ``"all"`` other than ``true``, both ``node_id`` and ``"all"``, or
neither. The answer lists the trainings this request asked to stop:
``{"stopped": [{"prompt_id": ..., "node_id": ...}]}`` (empty when none matched); trainings that
an earlier request already asked to stop are listed under ``"already_stopping"`` when there are any.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from dataclasses import dataclass
from typing import Any, Iterator

from ..comfy_splice.refusal import SpliceRefusal
from ..comfy_splice.validation import json_type, short
from . import api
from .request_body import parse_flat_object, read_body

log = logging.getLogger(__name__)

ROUTE = "/splice/stop"
MAX_BODY_BYTES = 4096
"""A stop request is a few dozen bytes; anything much larger is refused unread."""
MAX_DEPTH = 1
"""A stop request is one flat object: nothing in it is nested."""
MAX_ID_CHARS = 200
"""Node ids ("6", "12:5" inside a subgraph) and prompt ids (a UUID) are short."""
EXAMPLE = 'send {"node_id": "<id of the Train Generator node>"}, or {"all": true} to stop every running training'
KNOWN_KEYS = ("node_id", "prompt_id", "all")

_lock = threading.Lock()
_running: dict[tuple[str, str], threading.Event] = {}
_routes_added = False


class StopRequestError(SpliceRefusal):
    """A stop request the route refuses; the text is the answer's one-line ``error``."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class StopRequest:
    """What a valid request asks for: one node's training, or (``node_id`` None) all of them."""

    node_id: str | None
    prompt_id: str | None


@contextlib.contextmanager
def training_run(prompt_id: str | None, node_id: str | None) -> Iterator[threading.Event]:
    """Register a training for its duration; the event is set when someone asks it to stop."""
    event = threading.Event()
    key = (str(prompt_id), str(node_id))
    with _lock:
        _running[key] = event
    try:
        yield event
    finally:
        with _lock:
            if _running.get(key) is event:
                del _running[key]


def _matches(running_node: str, node_id: str) -> bool:
    """A node inside a subgraph runs as "<outer>:<inner>"; the UI knows it by its own id."""
    return running_node == node_id or running_node.endswith(f":{node_id}")


def _ask(node_id: str | None, prompt_id: str | None,
         all_runs: bool) -> tuple[list[dict[str, str]], list[dict[str, str]]]:
    """Set the stop event of the matching runs: (newly asked, asked before by another request)."""
    if node_id is None and not all_runs:
        raise ValueError("name the training to stop (node_id), or ask for all of them explicitly")
    stopped, already = [], []
    with _lock:
        for (run_prompt, run_node), event in _running.items():
            if node_id is not None and not _matches(run_node, str(node_id)):
                continue
            if prompt_id is not None and run_prompt != str(prompt_id):
                continue
            entry = {"prompt_id": run_prompt, "node_id": run_node}
            if event.is_set():
                already.append(entry)
            else:
                event.set()
                stopped.append(entry)
    if stopped:
        log.info("Splice: stop and keep requested for %s", stopped)
    return stopped, already


def request_stop(node_id: str | None = None, prompt_id: str | None = None, *,
                 all_runs: bool = False) -> list[dict[str, str]]:
    """Ask the matching running trainings to finish early; returns those this call asked (a run
    an earlier call already asked is not listed again). Without ``node_id``, ``all_runs=True``
    is required: stopping every training is never the accidental default."""
    return _ask(node_id, prompt_id, all_runs)[0]


def _error(reason: str, status: int = 400) -> StopRequestError:
    return StopRequestError(f"{reason}; {EXAMPLE}", status=status)


def _id(body: dict[str, Any], key: str) -> str | None:
    """An optional id: absent, or non-empty text of at most MAX_ID_CHARS characters."""
    if key not in body:
        return None
    value = body[key]
    if not isinstance(value, str) or not value.strip() or len(value) > MAX_ID_CHARS:
        got = (f"a string of {len(value)} characters" if value.strip() else "an empty string") \
            if isinstance(value, str) else json_type(value)
        raise _error(f"{key} must be non-empty text (at most {MAX_ID_CHARS} characters), got {got}")
    return value


def parse_stop_request(raw: bytes) -> StopRequest:
    """The request in a body of at most MAX_BODY_BYTES, or StopRequestError with the reason
    (size, nesting, syntax and repeated keys: :func:`request_body.parse_flat_object`)."""
    body = parse_flat_object(raw, MAX_BODY_BYTES, _error, MAX_DEPTH)
    unknown = [key for key in body if key not in KNOWN_KEYS]
    if unknown:
        raise _error(f"unknown key {short(unknown[0])} (the keys are {', '.join(KNOWN_KEYS)})")
    node_id, prompt_id = _id(body, "node_id"), _id(body, "prompt_id")
    if "all" in body and body["all"] is not True:
        raise _error("\"all\" may only be true (to stop every running training)")
    if node_id is not None and "all" in body:
        raise _error("give either node_id or \"all\": true, not both")
    if node_id is None and "all" not in body:
        raise _error("the request names no training")
    return StopRequest(node_id=node_id, prompt_id=prompt_id)


def add_routes() -> None:
    """Add ``POST /splice/stop`` to ComfyUI's server once (no-op when no server is running)."""
    global _routes_added
    prompt_server = api.prompt_server()
    if _routes_added or prompt_server is None:
        return
    from aiohttp import web

    @prompt_server.routes.post(ROUTE)
    async def stop_training(request: web.Request) -> web.Response:
        try:  # nothing is stopped unless the whole request is valid
            wanted = parse_stop_request(await read_body(request, MAX_BODY_BYTES, _error))
        except StopRequestError as exc:
            return web.json_response({"error": str(exc)}, status=exc.status)
        stopped, already = _ask(wanted.node_id, wanted.prompt_id, all_runs=wanted.node_id is None)
        answer: dict[str, Any] = {"stopped": stopped}
        if already:
            answer["already_stopping"] = already
        return web.json_response(answer)

    _routes_added = True


def current_run(unique_id: str | None) -> tuple[str | None, str | None]:
    """(prompt id, node id) of the node that is executing now, from ComfyUI's execution context."""
    try:
        from comfy_execution.utils import get_executing_context
    except ImportError:  # older ComfyUI: the node id alone still lets the button find the run
        return None, unique_id
    context = get_executing_context()
    if context is None:
        return None, unique_id
    return context.prompt_id, context.node_id
