"""Session-wide test setup for comfy-splice.

- The repo root is importable (``comfy_splice``, ``tools``) through pytest's ``pythonpath``
  option in pyproject.toml; nothing here edits sys.path.
- Keeps pytest from importing the repo's own ``__init__.py``: the repo root is a ComfyUI custom
  node package, so pytest >= 8 would collect it as a Package and import it (outside ComfyUI).
  Do not add ``__init__.py`` files under tests/ either.
- Marks tests by folder: tests/core -> ``core``, tests/host -> ``host``, tests/browser ->
  ``browser`` (select with ``-m``).
- Fixtures shared by every folder: the tiny weights (``tiny_dino_file``, ``tiny_dino_state``,
  ``tiny_generator_file``; no test writes its own), and the real ComfyUI server (``comfy_server``,
  ``comfy_server_factory``, defined here rather than in tests/host so host and browser tests
  share one server per session). On a failing test that used a server, the
  server's log tail is added to the report.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator

import pytest

TESTS_DIR = Path(__file__).resolve().parent
REPO_ROOT = TESTS_DIR.parent

if TYPE_CHECKING:  # imported lazily: core tests need none of the client's packages
    from tools.harness.comfy_server import ComfyServer

FOLDER_MARKERS = {"core": "core", "host": "host", "browser": "browser"}
SERVER_FIXTURES = ("comfy_server", "comfy_server_factory")

_servers: list["ComfyServer"] = []


class _RootIsNotAPackage:
    """Collect the repo root as a plain directory, so pytest never imports its __init__.py."""

    @pytest.hookimpl(tryfirst=True)
    def pytest_collect_directory(self, path: Path, parent: pytest.Collector) -> pytest.Collector | None:
        if path == REPO_ROOT:
            return pytest.Dir.from_parent(parent, path=path)
        return None


def pytest_configure(config: pytest.Config) -> None:
    # A conftest's own hooks only apply below its folder; the repo root is above it, so the
    # hook goes in a plugin registered globally.
    if not config.pluginmanager.has_plugin("comfy-splice-root-dir"):
        config.pluginmanager.register(_RootIsNotAPackage(), "comfy-splice-root-dir")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        try:
            folder = Path(item.path).resolve().relative_to(TESTS_DIR).parts[0]
        except (ValueError, IndexError):
            continue
        marker = FOLDER_MARKERS.get(folder)
        if marker:
            item.add_marker(marker)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    report = yield
    if report.failed and _servers and any(name in item.fixturenames for name in SERVER_FIXTURES):
        for server in _servers:
            report.sections.append((f"ComfyUI server log ({server.url})", server.log_report(80)))
    return report


@pytest.fixture(scope="session")
def tiny_dino_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The session's one tiny random DINO-layout ViT (patch 16, dim 64, depth 2, DINO's names)
    as a .pth that load_backbone loads: what every tier uses for "a DINO file". Real DINO
    weights cannot be downloaded on these machines; nothing here pretends to be them."""
    from comfy_splice.dino.fixtures import save_tiny_backbone

    path = save_tiny_backbone(tmp_path_factory.mktemp("tiny_dino") / "tiny_dino_vit.pth")
    return Path(path)


@pytest.fixture
def tiny_dino_state(tiny_dino_file: Path) -> dict[str, Any]:
    """``tiny_dino_file``'s state dict, read afresh for each test (tests that craft bad weight
    files start from it and may change it)."""
    import torch

    return torch.load(tiny_dino_file, weights_only=True)


@pytest.fixture(scope="session")
def tiny_generator_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A good, untrained Splice generator file (seed 3, ``TrainConfig(steps=5)``, a two-value
    loss history ``[2.0, 1.0]``, and a ``prompt`` entry in its metadata): what the tests that
    craft bad generator files start from. Copy it before changing it."""
    from comfy_splice.checkpoint import save_generator
    from comfy_splice.generator import build_generator
    from comfy_splice.run import TrainConfig, TrainedGenerator

    trained = TrainedGenerator(build_generator(seed=3), TrainConfig(steps=5), "dino_vits8", {"loss": [2.0, 1.0]})
    return save_generator(tmp_path_factory.mktemp("tiny_generator") / "good.safetensors", trained,
                          {"prompt": "{}"})


@pytest.fixture(scope="session")
def comfy_server_factory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[..., ComfyServer]]:
    """Start extra real ComfyUI servers: ``factory(*more_args, name="server")``. The args are
    added to the defaults (``--cpu`` and $COMFY_SPLICE_SERVER_ARGS); ``replace_args=[...]``
    replaces them. All are stopped by PID at the end of the session."""
    from tools.harness.comfy_client import ServerError
    from tools.harness.comfy_server import ComfyServer, default_server_args

    started: list[ComfyServer] = []

    def start(*more_args: str, name: str = "comfyui", replace_args: list[str] | None = None) -> ComfyServer:
        args = list(replace_args) if replace_args is not None else default_server_args() + list(more_args)
        server = ComfyServer(tmp_path_factory.mktemp(name), extra_args=args)
        started.append(server)
        _servers.append(server)
        try:
            server.start()
        except ServerError as error:
            pytest.fail(str(error), pytrace=False)
        return server

    yield start
    for server in reversed(started):
        server.stop()
        _servers.remove(server)


@pytest.fixture(scope="session")
def comfy_server(comfy_server_factory: Callable[..., ComfyServer]) -> ComfyServer:
    """The session's real ComfyUI 0.3.75 (``main.py --cpu``) with this pack installed; default
    cache behaviour (no --cache-lru). See tools/harness/comfy_client.py for the client API."""
    return comfy_server_factory(name="comfyui")


class HubStub:
    """A stand-in for the Hugging Face hub: an HTTP server on 127.0.0.1 in a thread of the test
    process (these machines reach no model hub). ``serve(path, body)`` publishes a file;
    ``status`` and a declared ``length`` other than the body's make HTTP errors and truncated
    downloads; ``serve_with(path, handle)`` lets ``handle(request_handler)`` answer that path
    (any query) itself: a stalling, trickling, endless or redirecting mirror. Anything not
    published is a 404. Point code at it with ``$HF_ENDPOINT``."""

    def __init__(self) -> None:
        import http.server

        files: dict[str, tuple[int, bytes, int]] = {}
        handlers: dict[str, Callable[[http.server.BaseHTTPRequestHandler], None]] = {}
        requests: list[str] = []

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's name)
                requests.append(self.path)
                handle = handlers.get(self.path.split("?", 1)[0])
                if handle is not None:
                    handle(self)
                    return
                status, body, length = files.get(self.path, (404, b"Entry not found", 15))
                self.send_response(status)
                self.send_header("Content-Length", str(length))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *_: object) -> None:
                """Quiet: tests assert on ``requests`` instead."""

        self.files, self.handlers, self.requests = files, handlers, requests
        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        import threading

        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def serve(self, path: str, body: bytes, status: int = 200, length: int | None = None) -> None:
        self.files[path] = (status, body, len(body) if length is None else length)

    def serve_with(self, path: str, handle: Callable[[Any], None]) -> None:
        self.handlers[path] = handle

    def clear(self) -> None:
        """Forget what was published and requested (each test starts from an empty hub)."""
        self.files.clear()
        self.handlers.clear()
        self.requests.clear()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)


@pytest.fixture(scope="session")
def vits16_hub_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A randomly initialised ViT-S/16 of the real architecture saved as the hub's
    model.safetensors (~87 MB): the smallest file a download of an official model accepts.
    Its features mean nothing."""
    from safetensors.torch import save_file

    from comfy_splice.dino.fixtures import build_backbone

    state = {k: v.contiguous() for k, v in build_backbone("dino_vits16").vit.state_dict().items()}
    path = tmp_path_factory.mktemp("vits16_hub") / "model.safetensors"
    save_file(state, str(path))
    return path


@pytest.fixture(scope="session")
def hub_stub() -> Iterator[HubStub]:
    """The session's hub stand-in (see HubStub); tests publish what they need on it."""
    hub = HubStub()
    try:
        yield hub
    finally:
        hub.close()
