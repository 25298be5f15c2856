"""A real ComfyUI server process of our own, with this pack installed, for tests and tools.

Nothing here mocks ComfyUI: the server is ComfyUI's own ``main.py`` from the provisioned copy (or
``$COMFYUI_PATH``), with this repo installed as ``custom_nodes/comfy-splice``. It is driven
through a :class:`~tools.harness.comfy_client.ComfyClient` (``server.client``).

Isolation: every server gets its own ``--base-directory`` (so its ``custom_nodes/`` holds only
this pack and the shared ComfyUI copy is never modified) plus temp input/output/temp/user
directories, and an ``--extra-model-paths-config`` YAML that points the pack's ``splice_dino``
and ``splice_generators`` folders at temp dirs. The pack must merge its own registration with
those entries, so the tests exercise that merge.

Synchronisation is always on a real condition with a deadline (an HTTP answer, the process
exiting), never on a sleep.
"""

from __future__ import annotations

import ctypes
import json
import logging
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Iterable

import psutil
import requests

from tools import provision
from tools.harness.comfy_client import ComfyClient, ServerError

log = logging.getLogger("comfy_server")

REPO_ROOT = provision.REPO_ROOT


def free_port() -> int:
    """A currently free TCP port on the loopback interface."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _die_with_parent() -> None:
    """Runs in the child before exec: SIGTERM it if the test process dies (Linux), so a killed
    pytest never leaves a server behind."""
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:
        pass


def default_server_args() -> list[str]:
    """`--cpu` unless COMFY_SPLICE_DEVICE=auto (then only when CUDA is missing), plus the
    shell-split COMFY_SPLICE_SERVER_ARGS."""
    args: list[str] = []
    device = os.environ.get("COMFY_SPLICE_DEVICE", "cpu").lower()
    if device == "cpu":
        args.append("--cpu")
    elif device == "auto":
        import torch

        if not torch.cuda.is_available():
            args.append("--cpu")
    else:
        raise ValueError(f"COMFY_SPLICE_DEVICE must be 'cpu' or 'auto', not {device!r}")
    args += shlex.split(os.environ.get("COMFY_SPLICE_SERVER_ARGS", ""))
    return args


class ComfyServer:
    """A ComfyUI server process of our own, and the client that drives it (``client``).

    The client's methods (``run``, ``object_info``, ``upload_image`` ...) are reachable on the
    server too, so a test reads ``comfy_server.run(prompt)``; the server itself only starts,
    watches and stops the process.

    ``workdir`` gets: base/ (custom_nodes/comfy-splice -> this repo), input/, output/, temp/,
    user/ (with the server's database), models/splice_dino/, models/splice_generators/,
    extra_model_paths.yaml, server.log.
    """

    def __init__(self, workdir: Path, comfyui: Path | None = None, python: str | None = None,
                 extra_args: Iterable[str] | None = None, port: int | None = None,
                 ready_timeout: float = 120) -> None:
        self.workdir = Path(workdir)
        self.comfyui = comfyui or provision.ensure_comfyui()
        self.python = python or sys.executable
        self.port = port or free_port()
        self.extra_args = list(default_server_args() if extra_args is None else extra_args)
        self.ready_timeout = ready_timeout
        self.base_dir = self.workdir / "base"
        self.input_dir = self.workdir / "input"
        self.output_dir = self.workdir / "output"
        self.temp_dir = self.workdir / "temp"
        self.user_dir = self.workdir / "user"
        self.models_dir = self.workdir / "models" / "splice_dino"
        self.generators_dir = self.workdir / "models" / "splice_generators"
        self.extra_model_paths = self.workdir / "extra_model_paths.yaml"
        self.log_path = self.workdir / "server.log"
        self.process: subprocess.Popen[bytes] | None = None
        self.startup_s: float | None = None
        self.client = ComfyClient(f"http://127.0.0.1:{self.port}", alive=self.is_running,
                                  describe=self.log_report)

    def __getattr__(self, name: str) -> Any:
        """Only reached for names the server lacks: the client's public API."""
        if name.startswith("_") or name == "client":
            raise AttributeError(name)
        return getattr(self.client, name)

    @property
    def url(self) -> str:
        return self.client.url

    @property
    def pid(self) -> int:
        if self.process is None:
            raise ServerError("server not started")
        return self.process.pid

    @property
    def pack_link(self) -> Path:
        return self.base_dir / "custom_nodes" / provision.PACK_LINK_NAME

    def command(self) -> list[str]:
        return [
            self.python, "main.py",
            "--listen", "127.0.0.1", "--port", str(self.port),
            "--base-directory", str(self.base_dir),
            "--input-directory", str(self.input_dir),
            "--output-directory", str(self.output_dir),
            "--temp-directory", str(self.temp_dir),
            "--user-directory", str(self.user_dir),
            # ComfyUI's default database lies in its own folder (ComfyUI/user/comfyui.db), shared
            # by every server and absent from a fresh copy: each server keeps its own.
            "--database-url", f"sqlite:///{self.user_dir / 'comfyui.db'}",
            "--extra-model-paths-config", str(self.extra_model_paths),
            *self.extra_args,
        ]

    def _prepare(self) -> None:
        for folder in (self.base_dir / "custom_nodes", self.base_dir / "models", self.input_dir,
                       self.output_dir, self.temp_dir, self.user_dir, self.models_dir, self.generators_dir):
            folder.mkdir(parents=True, exist_ok=True)
        if self.pack_link.is_symlink() or self.pack_link.exists():
            self.pack_link.unlink()
        self.pack_link.symlink_to(REPO_ROOT, target_is_directory=True)
        # is_default puts these first in the folder lists, so models_dir is also where the
        # pack's explicit download goes; the pack must keep them when it registers its folders.
        self.extra_model_paths.write_text(
            "comfy_splice_tests:\n"
            "    is_default: true\n"
            f"    splice_dino: {json.dumps(str(self.models_dir))}\n"
            f"    splice_generators: {json.dumps(str(self.generators_dir))}\n"
        )

    def start(self) -> "ComfyServer":
        """Start main.py and wait until /system_stats answers (custom nodes are loaded by then)."""
        self._prepare()
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        started = time.monotonic()
        with open(self.log_path, "wb") as log_file:
            self.process = subprocess.Popen(self.command(), cwd=self.comfyui, stdout=log_file,
                                            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                            env=env, preexec_fn=_die_with_parent)
        log.info("started ComfyUI pid %s on %s (log %s)", self.process.pid, self.url, self.log_path)
        deadline = started + self.ready_timeout
        while True:
            try:
                if self.client.http.get(self.url + "/system_stats", timeout=5).status_code == 200:
                    break
            except requests.RequestException:
                pass
            try:
                # Waits on the real condition "process exited", bounded, between polls.
                code = self.process.wait(timeout=0.25)
            except subprocess.TimeoutExpired:
                code = None
            if code is not None:
                raise ServerError(f"ComfyUI exited with code {code} during startup\n{self.log_report()}")
            if time.monotonic() > deadline:
                self.stop()
                raise ServerError(f"ComfyUI not ready within {self.ready_timeout:.0f} s\n{self.log_report()}")
        self.startup_s = time.monotonic() - started
        log.info("ComfyUI ready in %.1f s", self.startup_s)
        return self

    def is_running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self, timeout: float = 20) -> int | None:
        """Terminate by PID, wait, kill if needed. Returns the exit code."""
        if self.process is None:
            return None
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=timeout)
        self.client.http.close()
        return self.process.returncode

    def __enter__(self) -> "ComfyServer":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- diagnostics ----------------------------------------------------------------------------

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def log_tail(self, lines: int = 60) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])

    def log_report(self, lines: int = 60) -> str:
        code = self.process.returncode if self.process else "never started"
        state = "running" if self.is_running() else f"exited ({code})"
        return (f"--- ComfyUI server {self.url}, pid {self.process.pid if self.process else '-'}, {state}, "
                f"log {self.log_path} (last {lines} lines) ---\n{self.log_tail(lines)}\n--- end of server log ---")

    def custom_node_failures(self) -> dict[str, str]:
        """Custom nodes ComfyUI failed to import: {module path: error} from its startup log."""
        text = self.log_text()
        failures: dict[str, str] = {}
        for match in re.finditer(r"\(IMPORT FAILED\): (.+)", text):
            failures[match.group(1).strip()] = ""
        for match in re.finditer(r"Cannot import (.+?) module for custom nodes: (.*)", text):
            failures[match.group(1).strip()] = match.group(2).strip()
        return failures

    def rss_bytes(self) -> int:
        """Resident memory of the server process."""
        return int(psutil.Process(self.pid).memory_info().rss)
