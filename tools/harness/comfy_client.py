"""Drive a running ComfyUI server over HTTP and its websocket, as the web UI does.

Any server will do (``ComfyClient("http://127.0.0.1:8188")``); tools/harness/comfy_server.py
starts one of our own and drives it with this client. Synchronisation is always on a real condition with a
deadline (an HTTP answer, a websocket message), never on a sleep.
"""

from __future__ import annotations

import io
import json
import logging
import os
import struct
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import requests
import websocket
from PIL import Image

log = logging.getLogger("comfy_client")

TERMINAL_EVENTS = ("execution_success", "execution_error", "execution_interrupted")
# protocol.BinaryEventTypes in ComfyUI 0.3.75
BINARY_PREVIEW_IMAGE = 1
BINARY_TEXT = 3
BINARY_PREVIEW_IMAGE_WITH_METADATA = 4
IMAGE_FORMATS = {1: "JPEG", 2: "PNG"}


class ServerError(RuntimeError):
    """The server could not be started or died; the message carries its log tail."""


class PromptRejected(AssertionError):
    """POST /prompt refused the prompt (HTTP 400) or accepted it with node_errors filled."""

    def __init__(self, status_code: int, body: dict[str, Any]) -> None:
        self.status_code = status_code
        self.body = body
        super().__init__(f"prompt rejected (HTTP {status_code}): {json.dumps(body, indent=1)[:4000]}")


# --------------------------------------------------------------------------------------------
# Websocket messages and run results


@dataclass
class Preview:
    """A binary preview frame: ComfyUI's ProgressBar preview (type 1 = JPEG/PNG with a format
    header, type 4 = with JSON metadata)."""

    event: int
    image_format: str
    data: bytes
    metadata: dict[str, Any] | None = None

    def image(self) -> Image.Image:
        img = Image.open(io.BytesIO(self.data))
        img.load()
        return img


@dataclass
class WsMessage:
    """One websocket frame. JSON frames have type/data; binary frames type 'binary'."""

    type: str
    data: dict[str, Any]
    received_at: float
    binary_event: int | None = None
    preview: Preview | None = None
    raw: bytes | None = None

    @property
    def prompt_id(self) -> str | None:
        value = self.data.get("prompt_id") if isinstance(self.data, dict) else None
        return value if isinstance(value, str) else None


def _parse_binary(payload: bytes, received_at: float) -> WsMessage:
    event = struct.unpack(">I", payload[:4])[0] if len(payload) >= 4 else -1
    body = payload[4:]
    preview = None
    if event == BINARY_PREVIEW_IMAGE and len(body) >= 4:
        fmt = struct.unpack(">I", body[:4])[0]
        preview = Preview(event, IMAGE_FORMATS.get(fmt, f"unknown-{fmt}"), bytes(body[4:]))
    elif event == BINARY_PREVIEW_IMAGE_WITH_METADATA and len(body) >= 4:
        length = struct.unpack(">I", body[:4])[0]
        metadata = json.loads(body[4:4 + length].decode("utf-8"))
        fmt = "PNG" if metadata.get("image_type") == "image/png" else "JPEG"
        preview = Preview(event, fmt, bytes(body[4 + length:]), metadata)
    return WsMessage("binary", {}, received_at, binary_event=event, preview=preview, raw=bytes(payload))


@dataclass
class RunResult:
    """Everything one prompt produced: every websocket message, the terminal event and the
    /history entry."""

    prompt_id: str
    status: str  # execution_success | execution_error | execution_interrupted
    terminal: dict[str, Any]
    messages: list[WsMessage]
    history: dict[str, Any]
    elapsed_s: float
    queue_response: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.status == "execution_success"

    @property
    def previews(self) -> list[Preview]:
        return [m.preview for m in self.messages if m.preview is not None]

    @property
    def outputs(self) -> dict[str, Any]:
        return self.history.get("outputs", {})

    @property
    def error_message(self) -> str:
        return str(self.terminal.get("exception_message", ""))

    def of_type(self, message_type: str) -> list[WsMessage]:
        return [m for m in self.messages if m.type == message_type]

    def progress(self, node_id: str | None = None) -> list[tuple[int, int]]:
        """(value, max) of every `progress` message, optionally for one node."""
        return [(m.data["value"], m.data["max"]) for m in self.of_type("progress")
                if node_id is None or str(m.data.get("node")) == str(node_id)]

    def texts(self, node_id: str) -> list[str]:
        """The progress texts (ComfyUI's binary TEXT frames, drawn under a node's widgets) sent
        for one node during the run, in order."""
        out = []
        for message in self.messages:
            if message.binary_event == BINARY_TEXT and message.raw is not None:
                body = message.raw[4:]
                (length,) = struct.unpack(">I", body[:4])
                if body[4:4 + length].decode() == str(node_id):
                    out.append(body[4 + length:].decode())
        return out

    def executed_nodes(self) -> list[str]:
        return [str(m.data.get("node")) for m in self.of_type("executed")]

    def cached_nodes(self) -> list[str]:
        cached = self.of_type("execution_cached")
        return [str(n) for n in cached[0].data.get("nodes", [])] if cached else []

    def output_images(self, node_id: str | None = None) -> list[dict[str, str]]:
        """The {filename, subfolder, type} entries of image outputs in /history."""
        images = []
        for nid, out in self.outputs.items():
            if node_id is None or str(nid) == str(node_id):
                images.extend(out.get("images", []))
        return images

    def raise_for_status(self) -> "RunResult":
        if not self.ok:
            detail = self.terminal.get("traceback") or ""
            if isinstance(detail, list):
                detail = "".join(detail)
            raise AssertionError(
                f"prompt {self.prompt_id} ended with {self.status}: "
                f"{self.terminal.get('node_type')} (node {self.terminal.get('node_id')}): "
                f"{self.error_message}\n{detail}"
            )
        return self


# --------------------------------------------------------------------------------------------
# HTTP + websocket client


class ComfyClient:
    """Talks to a ComfyUI server at ``url``. ``alive`` (optional) says whether the server
    process still runs, so waits fail fast when it dies instead of running to their deadline."""

    def __init__(self, url: str, alive: Callable[[], bool] | None = None,
                 describe: Callable[[], str] | None = None) -> None:
        self.url = url.rstrip("/")
        self._alive = alive or (lambda: True)
        self._describe = describe or (lambda: "")
        self.http = requests.Session()

    # -- plain HTTP -------------------------------------------------------------------------

    def get_json(self, path: str, timeout: float = 30) -> Any:
        response = self.http.get(self.url + path, timeout=timeout)
        response.raise_for_status()
        return response.json()

    def system_stats(self) -> dict[str, Any]:
        return self.get_json("/system_stats")

    def object_info(self, node_class: str | None = None) -> dict[str, Any]:
        """/object_info (all node schemas) or /object_info/<class>."""
        return self.get_json("/object_info" + (f"/{node_class}" if node_class else ""), timeout=60)

    def history(self, prompt_id: str) -> dict[str, Any]:
        return self.get_json(f"/history/{prompt_id}").get(prompt_id, {})

    def queue_state(self) -> dict[str, Any]:
        return self.get_json("/queue")

    def upload_image(self, image: str | os.PathLike[str] | Image.Image, name: str | None = None,
                     subfolder: str = "", overwrite: bool = True) -> str:
        """POST /upload/image; returns the name to give LoadImage (``subfolder/name``)."""
        if isinstance(image, Image.Image):
            buffer = io.BytesIO()
            image.save(buffer, format="PNG")
            payload = buffer.getvalue()
            filename = name or f"upload-{uuid.uuid4().hex[:12]}.png"
        else:
            path = Path(image)
            payload = path.read_bytes()
            filename = name or path.name
        data = {"overwrite": "true" if overwrite else "false", "type": "input"}
        if subfolder:
            data["subfolder"] = subfolder
        response = self.http.post(self.url + "/upload/image", files={"image": (filename, payload)},
                                  data=data, timeout=60)
        if response.status_code != 200:
            raise AssertionError(f"upload of {filename} failed: HTTP {response.status_code} {response.text[:500]}")
        body = response.json()
        return f"{body['subfolder']}/{body['name']}" if body.get("subfolder") else body["name"]

    def view_image(self, filename: str, subfolder: str = "", type: str = "output") -> Image.Image:
        """GET /view as a loaded PIL image."""
        response = self.http.get(self.url + "/view", params={"filename": filename, "subfolder": subfolder,
                                                             "type": type}, timeout=60)
        if response.status_code != 200:
            raise AssertionError(f"/view {type}/{subfolder}/{filename}: HTTP {response.status_code}")
        img = Image.open(io.BytesIO(response.content))
        img.load()
        return img

    def queue(self, prompt: dict[str, Any], client_id: str | None = None,
              extra_data: dict[str, Any] | None = None) -> tuple[int, dict[str, Any]]:
        """POST /prompt as-is; returns (HTTP status, JSON body). Nothing is checked here:
        note that a prompt with one invalid output is accepted (200) with node_errors filled."""
        body: dict[str, Any] = {"prompt": prompt, "client_id": client_id or uuid.uuid4().hex}
        if extra_data:
            body["extra_data"] = extra_data
        response = self.http.post(self.url + "/prompt", json=body, timeout=60)
        try:
            payload = response.json()
        except ValueError:
            payload = {"text": response.text}
        return response.status_code, payload

    def interrupt(self, prompt_id: str | None = None) -> None:
        """POST /interrupt (the running prompt, or only `prompt_id` if it is the running one)."""
        response = self.http.post(self.url + "/interrupt", json={"prompt_id": prompt_id} if prompt_id else {},
                                  timeout=30)
        response.raise_for_status()

    def free(self, unload_models: bool = True, free_memory: bool = True) -> None:
        """POST /free: ask ComfyUI to unload models / free memory after the current prompt."""
        response = self.http.post(self.url + "/free", json={"unload_models": unload_models,
                                                           "free_memory": free_memory}, timeout=30)
        response.raise_for_status()

    # -- running prompts ----------------------------------------------------------------------

    def submit(self, prompt: dict[str, Any], extra_data: dict[str, Any] | None = None,
               connect_timeout: float = 30) -> "Execution":
        """Open a websocket with a fresh client id, then queue the prompt. Raises PromptRejected
        when /prompt refuses it or reports node_errors. Wait on the returned Execution."""
        client_id = uuid.uuid4().hex
        ws_url = self.url.replace("http://", "ws://", 1) + f"/ws?clientId={client_id}"
        ws = websocket.create_connection(ws_url, timeout=connect_timeout)
        execution = Execution(self, ws, client_id)
        try:
            # The server registers the socket, then sends "status": once we have it, every
            # message addressed to this client id reaches us.
            execution.wait_for("status", timeout=connect_timeout)
            status, body = self.queue(prompt, client_id=client_id, extra_data=extra_data)
            if status != 200 or body.get("node_errors") or "prompt_id" not in body:
                raise PromptRejected(status, body)
        except BaseException:
            execution.close()
            raise
        execution.prompt_id = body["prompt_id"]
        execution.queue_response = body
        return execution

    def run(self, prompt: dict[str, Any], timeout: float = 300,
            extra_data: dict[str, Any] | None = None) -> RunResult:
        """Queue a prompt and wait until it finished and its /history entry exists."""
        return self.submit(prompt, extra_data=extra_data).wait(timeout)

    # -- hooks for Execution ------------------------------------------------------------------

    def is_alive(self) -> bool:
        return self._alive()

    def describe(self) -> str:
        return self._describe()


class Execution:
    """A queued prompt and the websocket that reports on it."""

    def __init__(self, client: ComfyClient, ws: websocket.WebSocket, client_id: str) -> None:
        self.client = client
        self.ws = ws
        self.client_id = client_id
        self.prompt_id: str = ""
        self.queue_response: dict[str, Any] = {}
        self.messages: list[WsMessage] = []
        self.started = time.monotonic()
        self._closed = False

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            try:
                self.ws.close()
            except (OSError, websocket.WebSocketException):
                pass

    def __enter__(self) -> "Execution":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _receive(self, deadline: float) -> WsMessage:
        """The next frame, waiting at most until `deadline` (checks the server is alive)."""
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError("deadline passed")
            self.ws.settimeout(min(remaining, 2.0))
            try:
                opcode, payload = self.ws.recv_data()
            except websocket.WebSocketTimeoutException:
                if not self.client.is_alive():
                    raise ServerError("ComfyUI server died while waiting for websocket messages\n"
                                      + self.client.describe()) from None
                continue
            except (websocket.WebSocketConnectionClosedException, ConnectionError) as error:
                raise ServerError(f"websocket closed ({error})\n" + self.client.describe()) from error
            now = time.monotonic()
            if opcode == websocket.ABNF.OPCODE_TEXT:
                message = json.loads(payload.decode("utf-8"))
                parsed = WsMessage(str(message.get("type")), message.get("data") or {}, now)
            elif opcode == websocket.ABNF.OPCODE_BINARY:
                parsed = _parse_binary(payload, now)
            else:
                continue
            self.messages.append(parsed)
            return parsed

    def wait_for(self, what: str | Callable[[WsMessage], bool], timeout: float = 120,
                 start: int = 0) -> WsMessage:
        """The first message (from index `start`, received or arriving) that matches a type name
        or predicate. Raises TimeoutError with what arrived if none comes by the deadline."""
        predicate = (lambda m: m.type == what) if isinstance(what, str) else what
        for message in self.messages[start:]:
            if predicate(message):
                return message
        deadline = time.monotonic() + timeout
        while True:
            try:
                message = self._receive(deadline)
            except TimeoutError:
                raise TimeoutError(
                    f"no websocket message matching {what!r} within {timeout:.0f} s; got types "
                    f"{[m.type for m in self.messages][-40:]}\n{self.client.describe()}"
                ) from None
            if predicate(message):
                return message

    def _is_terminal(self, message: WsMessage) -> bool:
        return message.type in TERMINAL_EVENTS and message.prompt_id == self.prompt_id

    def _is_done(self, message: WsMessage) -> bool:
        # main.py sends this after storing the history entry.
        return (message.type == "executing" and message.data.get("node") is None
                and message.prompt_id == self.prompt_id)

    def wait(self, timeout: float = 300) -> RunResult:
        """Wait for the terminal event and ComfyUI's end-of-prompt message, then fetch
        /history/<id>. Closes the websocket."""
        deadline = time.monotonic() + timeout
        try:
            terminal = self.wait_for(self._is_terminal, timeout=max(0.0, deadline - time.monotonic()))
            self.wait_for(self._is_done, timeout=max(1.0, deadline - time.monotonic()))
        except TimeoutError:
            # Don't leave the prompt running into the next test.
            if self.client.is_alive():
                try:
                    self.client.interrupt(self.prompt_id)
                except requests.RequestException:
                    pass
            raise
        finally:
            self.close()
        history = self.client.history(self.prompt_id)
        return RunResult(
            prompt_id=self.prompt_id,
            status=terminal.type,
            terminal=terminal.data,
            messages=list(self.messages),
            history=history,
            elapsed_s=time.monotonic() - self.started,
            queue_response=self.queue_response,
        )
