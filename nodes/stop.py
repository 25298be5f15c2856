"""Stop and keep: the pack's ``POST /splice/stop`` route and the registry of running trainings.

Cancel (ComfyUI's ``/interrupt``) throws a run away. Stop and keep ends a training early and lets
Train Generator return the generator trained so far, so the graph goes on with it. A training
registers itself here for its duration, keyed by (prompt id, node id), with an event the training
loop reads before every step; the route sets that event. The state lives in this module, never on
node classes, and an entry exists only while its training runs.

``POST /splice/stop`` with JSON ``{"node_id": "6"}`` (optionally ``"prompt_id"``) stops the
matching running trainings; without a node id it stops every running training. The answer lists
what was stopped: ``{"stopped": [{"prompt_id": ..., "node_id": ...}]}`` (empty when nothing ran).
The pack's web extension (``web/splice_stop.js``) calls it from the node's button.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import threading
from typing import Any, Iterator

log = logging.getLogger(__name__)

ROUTE = "/splice/stop"

_lock = threading.Lock()
_running: dict[tuple[str, str], threading.Event] = {}
_routes_added = False


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


def request_stop(node_id: str | None = None, prompt_id: str | None = None) -> list[dict[str, str]]:
    """Ask the matching running trainings to finish early; returns those that were asked."""
    stopped = []
    with _lock:
        for (run_prompt, run_node), event in _running.items():
            if node_id is not None and not _matches(run_node, str(node_id)):
                continue
            if prompt_id is not None and run_prompt != str(prompt_id):
                continue
            event.set()
            stopped.append({"prompt_id": run_prompt, "node_id": run_node})
    if stopped:
        log.info("Splice: stop and keep requested for %s", stopped)
    return stopped


def add_routes() -> None:
    """Add ``POST /splice/stop`` to ComfyUI's server once (no-op when no server is running)."""
    global _routes_added
    server_module = sys.modules.get("server")  # ComfyUI's server.py, imported before custom nodes
    prompt_server = getattr(getattr(server_module, "PromptServer", None), "instance", None)
    if _routes_added or prompt_server is None:
        return
    from aiohttp import web

    @prompt_server.routes.post(ROUTE)
    async def stop_training(request: web.Request) -> web.Response:
        try:
            body: Any = await request.json() if request.can_read_body else {}
        except ValueError:
            return web.json_response({"error": "send JSON such as {\"node_id\": \"6\"}"}, status=400)
        if not isinstance(body, dict):
            return web.json_response({"error": "send a JSON object such as {\"node_id\": \"6\"}"}, status=400)
        node_id, prompt_id = body.get("node_id"), body.get("prompt_id")
        stopped = request_stop(None if node_id is None else str(node_id),
                               None if prompt_id is None else str(prompt_id))
        return web.json_response({"stopped": stopped})

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
