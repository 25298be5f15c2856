"""The download of an official DINO ViT, only on explicit request, with bounds.

The file arrives in a hidden folder beside its destination, is checked to be the named model
there (:func:`.weights.load_backbone` with ``expect``; its SHA-256 where the pack knows it), and
only then takes its final name, so nothing under that name is ever a partial or wrong file.

Bounds (:class:`DownloadLimits`): an overall deadline, a minimum throughput averaged over a
window (a mirror that trickles or stalls is dropped), a size cap from the model's parameter
count (a Content-Length above it is refused before a byte is written; a body without one is cut
at the cap), and redirects only to https on public addresses (or within the endpoint itself),
a few times at most. The network runs in a reader thread; the calling thread writes the file
and calls ``cancel`` (ComfyUI's interrupt check) at least every ``poll_s`` even when no byte
arrives, and on any failure closes the connection and removes the staging folder at once, so
the caller (ComfyUI's queue) is free again without waiting for the network.
"""

from __future__ import annotations

import base64
import collections
import dataclasses
import hashlib
import http.client
import ipaddress
import logging
import os
import queue
import shutil
import socket
import ssl
import tempfile
import threading
import time
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from ..refusal import SpliceRefusal
from .models import DinoModel, WeightsError, download_url, official_model
from .weights import load_backbone

log = logging.getLogger(__name__)

DownloadProgress = Callable[[int, "int | None"], None]
_REDIRECTS = frozenset({301, 302, 303, 307, 308})


@dataclass(frozen=True)
class DownloadLimits:
    """The bounds of one download. The defaults suit a person's connection; tests pass small
    values so that a stalled or trickling mirror is dropped within a fraction of a second."""

    deadline_s: float = 3 * 3600.0  # the whole transfer; ViT-B/8 (~350 MB) at 40 kB/s fits
    min_bytes_per_s: float = 8 * 1024  # averaged over window_s; below this the transfer stalled
    window_s: float = 60.0
    poll_s: float = 0.5  # the longest the caller's cancel check waits while no byte arrives
    # Connect and each read in the reader thread: a backstop above window_s, so that a silent
    # server is dropped by the stall rule (with its message) and cancel never waits for it.
    socket_timeout_s: float = 120.0
    chunk_bytes: int = 64 * 1024
    max_redirects: int = 5


class DownloadError(SpliceRefusal):
    """The transfer was refused or dropped; the message says why (stall, deadline, size,
    redirect, HTTP status). :func:`download_weights` wraps it in a WeightsError that adds the
    folder, the file and the URL."""


def download_weights(name: str, directory: str | os.PathLike, timeout: float | None = None,
                     progress: DownloadProgress | None = None,
                     cancel: Callable[[], None] | None = None,
                     limits: DownloadLimits | None = None) -> Path:
    """Download an official DINO ViT (the hub's safetensors) into ``directory`` on explicit request.

    The file is written into a hidden temporary folder inside ``directory`` (same file system),
    checked to be the named model there, and only then renamed to its final name, so an
    interrupted, truncated, oversized or wrong download never leaves a file under that name (nor
    anything else). ``progress(done_bytes, total_bytes or None)`` is called as bytes arrive;
    ``cancel()`` at least every ``limits.poll_s`` and may raise to stop (its exception propagates
    unchanged). ``timeout`` overrides ``limits.socket_timeout_s``. Errors name the folder, file
    and URL.
    """
    model = official_model(name)
    limits = limits or DownloadLimits()
    if timeout is not None:
        limits = dataclasses.replace(limits, socket_timeout_s=timeout)
    directory = Path(directory)
    for present in (directory / file_name for file_name in model.file_names):
        if present.is_file():  # either accepted spelling: nothing to download
            return present
    target = directory / model.hf_file_name
    url = download_url(model)
    fix = (f"Download {url} yourself and save it as {target} (or put the official "
           f"{model.file_name} from {model.url} into {directory}).")
    try:
        directory.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".splice-download-", dir=directory))
    except OSError as exc:
        raise WeightsError(f"Cannot write DINO weights into {directory} ({exc}). {fix}") from exc
    try:
        partial = staging / model.hf_file_name
        log.info("downloading %s to %s", url, target)
        try:
            digest = _fetch(url, partial, limits, model.max_download_bytes, progress, cancel)
        except (OSError, http.client.HTTPException, ValueError) as exc:
            raise WeightsError(f"Could not download {model.hf_file_name} from {url} into "
                               f"{directory} ({exc}). {fix}") from exc
        _check_download(model, partial, digest, url, target, fix, cancel)
        os.replace(partial, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    log.info("downloaded %s to %s", url, target)
    return target


def _check_download(model: DinoModel, partial: Path, digest: str, url: str, target: Path, fix: str,
                    cancel: Callable[[], None] | None) -> None:
    """The downloaded file is ``model``: its published hash (when known), then its shapes."""
    if model.sha256 is not None and digest != model.sha256.lower():
        raise WeightsError(f"The download of {url} is not the hub's {model.timm_name}: its SHA-256 is "
                           f"{digest}, the hub publishes {model.sha256}; nothing was written to "
                           f"{target}. {fix}")
    try:
        load_backbone(partial, cancel=cancel, expect=model)
    except WeightsError as exc:
        raise WeightsError(f"The download of {url} was refused ({str(exc).rstrip('.')}); nothing "
                           f"was written to {target}. {fix}") from exc


def _fetch(url: str, path: Path, limits: DownloadLimits, cap: int, progress: DownloadProgress | None,
           cancel: Callable[[], None] | None) -> str:
    """Stream ``url`` into ``path`` within ``limits`` and ``cap`` bytes; returns the SHA-256.

    The reader thread does the network; this thread writes, checks the bounds and calls
    ``cancel`` between chunks and at least every ``poll_s``. Whatever ends the transfer, the
    reader's connection is shut down before this returns or raises.
    """
    reader = _Reader(url, limits)
    reader.start()
    start = time.monotonic()
    samples: collections.deque[tuple[float, int]] = collections.deque([(start, 0)])
    done, total, sha = 0, None, hashlib.sha256()
    try:
        with open(path, "wb") as out:
            while True:
                if cancel is not None:
                    cancel()
                now = time.monotonic()
                _check_pace(now - start, samples, now, done, total, limits)
                try:
                    kind, value = reader.events.get(timeout=limits.poll_s)
                except queue.Empty:
                    continue
                if kind == "error":
                    assert isinstance(value, BaseException)
                    raise value
                if kind == "end":
                    break
                if kind == "start":
                    total = value if isinstance(value, int) else None
                    if total is not None and total > cap:
                        raise DownloadError(f"the server announces {total:,} bytes; this model's file "
                                            f"is at most {cap:,}, so it is not the model and nothing "
                                            f"was downloaded")
                    if progress is not None:
                        progress(0, total)
                    continue
                assert isinstance(value, bytes)
                if done + len(value) > cap:
                    raise DownloadError(f"the body passed {cap:,} bytes, the most this model's file "
                                        f"weighs, so it is not the model; the download was stopped")
                out.write(value)
                sha.update(value)
                done += len(value)
                if progress is not None:
                    progress(done, total)
    finally:
        reader.abort()
    if total is not None and done != total:
        raise DownloadError(f"the connection closed after {done:,} of {total:,} bytes")
    return sha.hexdigest()


def _check_pace(elapsed: float, samples: collections.deque[tuple[float, int]], now: float, done: int,
                total: int | None, limits: DownloadLimits) -> None:
    """Raise when the deadline passed or fewer than ``min_bytes_per_s`` arrived over the last
    ``window_s`` (the connection and the wait for the headers count as part of the transfer)."""
    so_far = f"{done:,} of {total:,} bytes" if total is not None else f"{done:,} bytes"
    if elapsed > limits.deadline_s:
        raise DownloadError(f"it did not finish within the {limits.deadline_s:g} s deadline "
                            f"({so_far} arrived)")
    if now - samples[-1][0] >= min(limits.poll_s, limits.window_s / 20):  # a few per window
        samples.append((now, done))
    while len(samples) > 1 and samples[1][0] <= now - limits.window_s:
        samples.popleft()
    first_time, first_done = samples[0]
    span = now - first_time
    if span >= limits.window_s and done - first_done < limits.min_bytes_per_s * span:
        raise DownloadError(
            f"the transfer stalled: {done - first_done:,} bytes in the last {span:.0f} s, under the "
            f"minimum of {limits.min_bytes_per_s / 1024:g} kB/s ({so_far} arrived)")


class _Reader(threading.Thread):
    """Connects (following the allowed redirects) and reads the body into ``events``:
    ("start", Content-Length or None), ("data", bytes)..., then ("end", None) or ("error", exc).
    Touches no file; :meth:`abort` shuts its socket so a blocked read returns at once."""

    def __init__(self, url: str, limits: DownloadLimits) -> None:
        super().__init__(name="splice-download", daemon=True)
        self.url, self.limits = url, limits
        self.events: queue.Queue[tuple[str, object]] = queue.Queue(maxsize=32)  # 2 MiB of chunks
        self._stopping = threading.Event()
        self._conn: http.client.HTTPConnection | None = None
        # The connected socket itself: http.client drops conn.sock when the response takes the
        # connection over (HTTP/1.0, Connection: close), but the response still reads from it.
        self._sock: socket.socket | None = None
        self._lock = threading.Lock()

    def run(self) -> None:
        try:
            response = self._open()
            length = response.getheader("Content-Length")
            self._put("start", int(length) if length and length.strip().isdigit() else None)
            while not self._stopping.is_set():
                chunk = response.read1(self.limits.chunk_bytes)
                if not chunk:
                    break
                self._put("data", chunk)
            self._put("end", None)
        except Exception as exc:  # any failure is the caller's to report, in its own thread
            if not self._stopping.is_set():
                self._put("error", exc)
        finally:
            self._close()

    def abort(self) -> None:
        """Stop: shut the socket (a blocked read returns), and wait briefly for the thread."""
        self._stopping.set()
        self._close()
        self.join(timeout=max(self.limits.poll_s, 1.0))
        if self.is_alive():  # e.g. still resolving a host name; it touches no file and exits
            log.warning("the download's reader thread is still waiting on the network; it exits "
                        "within %.0f s", self.limits.socket_timeout_s)

    def _put(self, kind: str, value: object) -> None:
        while not self._stopping.is_set():
            try:
                self.events.put((kind, value), timeout=self.limits.poll_s)
                return
            except queue.Full:
                continue

    def _close(self) -> None:
        with self._lock:
            conn, self._conn = self._conn, None
            sock, self._sock = self._sock, None
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass  # already closed by the peer
        if conn is not None:
            conn.close()

    def _open(self) -> http.client.HTTPResponse:
        """The response with the body, after at most ``max_redirects`` allowed redirects."""
        endpoint = urllib.parse.urlsplit(self.url)
        url = self.url
        for _ in range(self.limits.max_redirects + 1):
            parts = urllib.parse.urlsplit(url)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise DownloadError(f"{url} is not an http(s) URL")
            conn, request_target, direct, headers = _connection(parts, self.limits.socket_timeout_s)
            with self._lock:
                if self._stopping.is_set():
                    raise DownloadError("stopped")
                self._conn = conn
            conn.connect()
            with self._lock:
                self._sock = conn.sock
            if self._stopping.is_set():
                raise DownloadError("stopped")
            if direct and url != self.url and not _same_origin(parts, endpoint):
                _check_address(conn.sock.getpeername()[0], url)  # what was actually reached
            conn.request("GET", request_target, headers={"Accept-Encoding": "identity",
                                                         "User-Agent": "comfy-splice", **headers})
            response = conn.getresponse()
            if response.status not in _REDIRECTS:
                if response.status != 200:
                    raise DownloadError(f"HTTP Error {response.status}: {response.reason}")
                return response
            location = response.getheader("Location")
            self._close()
            if not location:
                raise DownloadError(f"HTTP {response.status} redirect without a Location")
            url = urllib.parse.urljoin(url, location.strip())
            _check_redirect(endpoint, url)
            log.info("download redirected to %s", url)
        raise DownloadError(f"more than {self.limits.max_redirects} redirects (the last to {url})")


def _origin(parts: urllib.parse.SplitResult) -> tuple[str, str, int]:
    port = parts.port or (443 if parts.scheme == "https" else 80)
    return parts.scheme, (parts.hostname or "").lower(), port


def _same_origin(a: urllib.parse.SplitResult, b: urllib.parse.SplitResult) -> bool:
    return _origin(a) == _origin(b)


def _check_redirect(endpoint: urllib.parse.SplitResult, url: str) -> None:
    """A redirect may stay within the endpoint (same scheme, host and port: a local mirror's
    own paths) or go to https on a public address; never to another port or host of loopback
    or a private network, never to plain http elsewhere."""
    parts = urllib.parse.urlsplit(url)
    if _same_origin(parts, endpoint):
        return
    if parts.scheme != "https":
        raise DownloadError(f"a redirect to {url} was refused: only https is followed (or the "
                            f"endpoint's own address)")
    try:
        addresses = {str(info[4][0]) for info in socket.getaddrinfo(parts.hostname, parts.port or 443,
                                                                type=socket.SOCK_STREAM)}
    except (socket.gaierror, UnicodeError) as exc:
        raise DownloadError(f"a redirect to {url} names a host that does not resolve ({exc})") from exc
    for address in addresses:
        _check_address(address, url)


def _check_address(address: str, url: str) -> None:
    """Refuse a redirect that reaches a loopback, private, link-local or otherwise non-public
    address (a mirror must not send the download to another local service)."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if not ip.is_global or ip.is_multicast:
        raise DownloadError(f"a redirect to {url} was refused: it leads to the non-public address "
                            f"{address} (only the endpoint itself may be local)")


def _connection(parts: urllib.parse.SplitResult, timeout: float
                ) -> tuple[http.client.HTTPConnection, str, bool, dict[str, str]]:
    """A connection for ``parts`` honouring the environment's proxies (as urllib does), the
    request target, whether it goes to the host directly (its peer address is the host's), and
    the headers the request needs for a plain-http proxy."""
    host, port = parts.hostname or "", parts.port
    path = urllib.parse.urlunsplit(("", "", parts.path or "/", parts.query, ""))
    proxy_url = urllib.request.getproxies().get(parts.scheme)
    if proxy_url and not urllib.request.proxy_bypass(host):
        proxy = urllib.parse.urlsplit(proxy_url if "://" in proxy_url else f"http://{proxy_url}")
        headers = {}
        if proxy.username:
            token = f"{urllib.parse.unquote(proxy.username)}:{urllib.parse.unquote(proxy.password or '')}"
            headers["Proxy-Authorization"] = "Basic " + base64.b64encode(token.encode()).decode()
        conn: http.client.HTTPConnection
        if parts.scheme == "https":
            conn = http.client.HTTPSConnection(proxy.hostname or "", proxy.port or 80, timeout=timeout,
                                               context=ssl.create_default_context())
            conn.set_tunnel(host, port or 443, headers=headers)
            return conn, path, False, {}
        conn = http.client.HTTPConnection(proxy.hostname or "", proxy.port or 80, timeout=timeout)
        return conn, urllib.parse.urlunsplit(parts._replace(fragment="")), False, headers
    if parts.scheme == "https":
        return http.client.HTTPSConnection(host, port, timeout=timeout,
                                           context=ssl.create_default_context()), path, True, {}
    return http.client.HTTPConnection(host, port, timeout=timeout), path, True, {}
