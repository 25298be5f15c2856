"""Missing DINO weights from inside ComfyUI: the pack's ``/splice/dino/*`` routes.

The frontends' own missing-model "Download" saves through the browser (into the OS downloads
folder, under the URL's name ``model.safetensors``) except in the desktop app. The button that
``web/splice.js`` shows on Load DINO-ViT while its file is absent uses these routes instead, so
the file lands in the first ``splice_dino`` folder under the name the node lists:

- ``GET /splice/dino/files``: ``{"folder", "files" (on disk), "downloadable" (official names)}``,
  what the button needs to know whether the selected file is absent;
- ``POST /splice/dino/download`` with ``{"name": "<official file name>"}``: the pack's bounded
  download (:func:`comfy_splice.dino.download.download_weights`: deadline, stall and size limits,
  model identity check, ``$HF_ENDPOINT`` honoured), run off the event loop, with progress as
  ``splice.dino_download`` websocket events ``{"name", "done", "total"}``. The answer is
  ``{"name": <file now on disk>, "path", "files"}``, or ``{"error": ...}`` with 400 (not an
  official name / bad request; the body is read and parsed as the stop route's is:
  ``request_body.py``), 413 (a body over ``MAX_BODY_BYTES``), 409 (that download is already
  running) or 502 (the download failed; the message says what to do).
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from typing import Any

from ..comfy_splice.dino.download import download_weights
from ..comfy_splice.refusal import SpliceRefusal
from . import api, paths
from .request_body import parse_flat_object, read_body

log = logging.getLogger(__name__)

FILES_ROUTE = "/splice/dino/files"
DOWNLOAD_ROUTE = "/splice/dino/download"
EVENT = "splice.dino_download"
MAX_BODY_BYTES = 1024
PROGRESS_EVERY_S = 0.25
"""At most this often a progress event (plus the first and the last)."""

EXAMPLE = f'send {{"name": "{paths.DEFAULT_DINO_FILE}"}}'

_lock = threading.Lock()
_running: set[str] = set()
_routes_added = False


class DownloadRequestError(SpliceRefusal):
    """A download request the route refuses; the text is the answer's ``error``."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


def _error(reason: str, status: int = 400) -> DownloadRequestError:
    return DownloadRequestError(f"{reason}; {EXAMPLE}", status)


def parse_request(raw: bytes) -> str:
    """The official file name a request body asks for, or a DownloadRequestError saying why not
    (size, nesting, syntax and repeated keys: :func:`request_body.parse_flat_object`)."""
    body = parse_flat_object(raw, MAX_BODY_BYTES, _error)
    if set(body) != {"name"} or not isinstance(body["name"], str):
        raise _error("the request must be one object with a text 'name'")
    name = body["name"]
    if name not in paths.OFFICIAL_FILE_NAMES:
        raise DownloadRequestError(
            f"{name[:120]!r} is not an official DINO file; the pack downloads only "
            f"{', '.join(paths.OFFICIAL_FILE_NAMES)}. Put other weights into a splice_dino folder yourself.")
    return name


def files_answer() -> dict[str, Any]:
    """What ``GET /splice/dino/files`` answers."""
    return {"folder": paths.dino_folders()[0], "files": paths.dino_files(),
            "downloadable": list(paths.OFFICIAL_FILE_NAMES)}


def _progress_sender(prompt_server: Any, name: str) -> Any:
    last = [float("-inf")]

    def send(done: int, total: int | None) -> None:
        now = time.monotonic()
        if done == 0 or done == total or now - last[0] >= PROGRESS_EVERY_S:
            last[0] = now
            prompt_server.send_sync(EVENT, {"name": name, "done": done, "total": total})

    return send


def download(name: str, prompt_server: Any = None) -> dict[str, Any]:
    """Download official ``name`` into the first splice_dino folder (blocking; one per name at a
    time). Raises DownloadRequestError when it is already running, SpliceRefusal when it fails."""
    with _lock:
        if name in _running:
            raise DownloadRequestError(f"{name} is already being downloaded; wait for it to finish.")
        _running.add(name)
    try:
        folder = paths.dino_folders()[0]
        progress = _progress_sender(prompt_server, name) if prompt_server is not None else None
        log.info("Splice: downloading %s into %s (requested from the UI)", name, folder)
        path = download_weights(name, folder, progress=progress)
    finally:
        with _lock:
            _running.discard(name)
    return {"name": path.name, "path": str(path), "files": paths.dino_files()}


def add_routes() -> None:
    """Add the routes to ComfyUI's server once (no-op when no server is running)."""
    global _routes_added
    prompt_server = api.prompt_server()
    if _routes_added or prompt_server is None:
        return
    from aiohttp import web

    @prompt_server.routes.get(FILES_ROUTE)
    async def dino_files(request: web.Request) -> web.Response:
        return web.json_response(files_answer())

    @prompt_server.routes.post(DOWNLOAD_ROUTE)
    async def dino_download(request: web.Request) -> web.Response:
        try:
            name = parse_request(await read_body(request, MAX_BODY_BYTES, _error))
        except DownloadRequestError as exc:
            return web.json_response({"error": str(exc)}, status=exc.status)
        try:
            answer = await asyncio.get_running_loop().run_in_executor(None, download, name, prompt_server)
        except DownloadRequestError as exc:
            return web.json_response({"error": str(exc)}, status=409)
        except SpliceRefusal as exc:  # WeightsError: the message names the folder, file and URL
            log.warning("Splice: download of %s failed: %s", name, exc)
            return web.json_response({"error": str(exc)}, status=502)
        return web.json_response(answer)

    _routes_added = True
