"""Browser tests: the shipped workflows in the real ComfyUI web app, in a real Chromium.

The matrix: every test that uses ``browser_server`` (and so ``app_page``, ``page``,
``object_info``, ``dino_weights`` ...) runs once per :data:`FRONTENDS` combination, the pinned
frontend (the venv's ``comfyui-frontend-package``) and the newest one
(``provision.NEW_FRONTEND_VERSION``, served with ``--front-end-root``), each in the classic canvas
and in Nodes 2.0 (setting ``Comfy.VueNodes.Enabled``). The parameter sits on the session fixture
``frontend``, so a new test file gets the matrix by using the fixtures below; the test ids
name the combination (``test_x[fe1.58.1-nodes2]``). pytest runs the tests grouped by
combination: one server per frontend version for the whole session, one page per combination.
A test that cannot hold on a combination for a reason outside the pack marks it with
the ``xfail_on`` fixture (strict).

Fixtures:
- ``frontend``: the combination (:class:`Frontend`); ``xfail_on``: see above.
- ``browser_server``: the ComfyUI server of the combination's frontend version (started once
  with the session's ``comfy_server_factory``), so files these tests put into its model and input
  folders (a tiny DINO under the official ViT-B/8 name, a trained generator, the example inputs)
  never change what the host tests see on the shared ``comfy_server``. The UI settings that keep
  dialogs off the canvas, and the combination's Nodes 2.0 setting, are stored on it before any
  page of the combination opens.
- ``dino_weights``: the tiny random DINO from ``tiny_dino_file`` copied to the server's
  ``splice_dino`` folder under the names the workflows use (``vit_base_patch8_224.dino.safetensors``,
  and the official ``dino_vitbase8_pretrain.pth``); ``without_dino_weights``: those files parked
  elsewhere for one test.
- ``browser``: one headless Chromium per session; ``app_page``: one tab on the web app per
  session (each test starts by closing dialogs and loading what it needs).
- ``artifacts``: ``artifacts/browser/`` in the repo root (git-ignored) for screenshots.
- ``workflow``: the committed workflows/<name>.json of a spec from build_workflows.WORKFLOWS.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

from tools import provision
from tools.assets import build_workflows
from tools.harness import comfy_page
from tools.harness.comfy_server import ComfyServer
from tools.provision import REPO_ROOT

ARTIFACTS = REPO_ROOT / "artifacts" / "browser"
DINO_NAMES = (build_workflows.DINO_MODEL["name"], build_workflows.DINO_MODEL_PTH["name"])


@dataclass(frozen=True)
class Frontend:
    """One cell of the matrix: a frontend version and a node renderer."""

    version: str
    nodes2: bool

    @property
    def id(self) -> str:
        return f"fe{self.version}-{'nodes2' if self.nodes2 else 'classic'}"

    @property
    def pinned(self) -> bool:
        return self.version == provision.PINNED_FRONTEND_VERSION


ALL_FRONTENDS = tuple(Frontend(version, nodes2)
                      for version in (provision.PINNED_FRONTEND_VERSION, provision.NEW_FRONTEND_VERSION)
                      for nodes2 in (False, True))
# The cells `make test` runs by default: all four. COMFY_SPLICE_FRONTENDS picks fewer: cell ids
# separated by commas (e.g. "fe1.58.1-nodes2"), or "all".
DEFAULT_FRONTENDS = tuple(f.id for f in ALL_FRONTENDS)
FRONTENDS_ENV = "COMFY_SPLICE_FRONTENDS"


def _chosen_frontends() -> tuple[Frontend, ...]:
    raw = os.environ.get(FRONTENDS_ENV, "").strip()
    wanted = {f.id for f in ALL_FRONTENDS} if raw == "all" else (
        {part.strip() for part in raw.split(",") if part.strip()} or set(DEFAULT_FRONTENDS))
    unknown = wanted - {f.id for f in ALL_FRONTENDS}
    if unknown:
        raise pytest.UsageError(f"{FRONTENDS_ENV}: unknown cells {sorted(unknown)}; "
                                f"known: {[f.id for f in ALL_FRONTENDS]} or 'all'")
    return tuple(f for f in ALL_FRONTENDS if f.id in wanted)


FRONTENDS = _chosen_frontends()


@pytest.fixture()
def xfail_on(request: pytest.FixtureRequest, frontend: Frontend) -> Callable[..., None]:
    """``xfail_on(reason, version=None, nodes2=None, strict=True)``: mark the running test xfail on
    the matching combinations (call it first in the test; the reason must lie outside the pack or
    name the issue that fixes it). ``strict=False`` only for a failure still being investigated,
    which the reason says: such a test reports XPASS instead of failing once it works."""

    def mark(reason: str, *, version: str | None = None, nodes2: bool | None = None,
             strict: bool = True) -> None:
        if (version is None or frontend.version == version) and (nodes2 is None or frontend.nodes2 == nodes2):
            request.applymarker(pytest.mark.xfail(reason=f"{frontend.id}: {reason}", strict=strict))

    return mark


@pytest.fixture(scope="session", params=FRONTENDS, ids=[f.id for f in FRONTENDS])
def frontend(request: pytest.FixtureRequest) -> Frontend:
    return request.param


@pytest.fixture(scope="session")
def frontend_servers(comfy_server_factory: Callable[..., ComfyServer],
                     hub_stub: Any) -> Callable[[str], ComfyServer]:
    """``get(version)``: the session's one server for that frontend version, started on first use.
    Its DINO downloads go to the session's hub stand-in (read when the server starts)."""
    servers: dict[str, ComfyServer] = {}

    def get(version: str) -> ComfyServer:
        if version not in servers:
            args: tuple[str, ...] = ()
            if version != provision.PINNED_FRONTEND_VERSION:
                args = ("--front-end-root", str(provision.ensure_frontend(version)))
            # No example input is copied here: the pack puts them into the input folder when it loads.
            with pytest.MonkeyPatch.context() as env:
                env.setenv("HF_ENDPOINT", hub_stub.endpoint)
                server = comfy_server_factory(*args, name=f"browser-comfyui-fe{version}")
            comfy_page.apply_ui_settings(server.url)
            servers[version] = server
        return servers[version]

    return get


@pytest.fixture(scope="session")
def browser_server(frontend: Frontend, frontend_servers: Callable[[str], ComfyServer]) -> ComfyServer:
    server = frontend_servers(frontend.version)
    # Stored per user on the server and read when a page opens: set before this combination's pages.
    comfy_page.apply_ui_settings(server.url, {comfy_page.NODES2_SETTING: frontend.nodes2})
    return server


@pytest.fixture(scope="session")
def object_info(browser_server: ComfyServer) -> dict[str, Any]:
    return browser_server.object_info()


@pytest.fixture()
def dino_weights(browser_server: ComfyServer, tiny_dino_file: Path) -> Path:
    """The tiny test ViT where the workflows expect the ViT-B/8 file (both spellings)."""
    for name in DINO_NAMES:
        target = browser_server.models_dir / name
        if not target.is_file():
            if target.suffix == ".safetensors":
                from safetensors.torch import save_file
                import torch

                save_file(torch.load(tiny_dino_file, weights_only=True), str(target))
            else:
                shutil.copy(tiny_dino_file, target)
    return browser_server.models_dir / DINO_NAMES[0]


@pytest.fixture()
def without_dino_weights(browser_server: ComfyServer) -> Iterator[None]:
    """For one test, no official-name DINO file in the server's splice_dino folder."""
    moved = []
    for name in DINO_NAMES:
        target = browser_server.models_dir / name
        if target.is_file():
            target.rename(browser_server.workdir / (name + ".parked"))
            moved.append(target)
    try:
        yield
    finally:
        for target in moved:
            (browser_server.workdir / (target.name + ".parked")).rename(target)


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    """One headless system Chromium for the session (installed by provision.py if missing)."""
    try:
        comfy_page.chromium_executable()
    except comfy_page.provision.ProvisionError as error:
        pytest.fail(f"no Chromium for the browser tests: {error}", pytrace=False)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        instance = comfy_page.launch_browser(playwright)
        try:
            yield instance
        finally:
            instance.close()


@pytest.fixture(scope="session")
def app_page(browser: Any, browser_server: ComfyServer, frontend: Frontend) -> Iterator[comfy_page.ComfyPage]:
    """The ComfyUI app in one tab per combination, ready and instrumented (pack nodes registered),
    checked to run the combination's frontend version and renderer."""
    context = comfy_page.new_context(browser)
    try:
        page = comfy_page.open_app(context, browser_server.url, ("SpliceTrainGenerator", "LossGraphNode"))
        running = page.frontend()
        assert running == {"version": frontend.version, "nodes2": frontend.nodes2}, (
            f"{frontend.id}: the page runs {running}")
        yield page
    finally:
        context.close()


@pytest.fixture()
def page(app_page: comfy_page.ComfyPage, request: pytest.FixtureRequest) -> Iterator[comfy_page.ComfyPage]:
    """The session's tab with no dialog open; on failure its screenshot goes to artifacts/."""
    app_page.close_dialogs()
    app_page.reset_panels()
    yield app_page
    report = getattr(request.node, "rep_call", None)
    if report is not None and report.failed:
        safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in request.node.name)
        app_page.screenshot(ARTIFACTS / f"FAILED-{safe}.png")


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    report = yield
    if report.when == "call":
        item.rep_call = report  # type: ignore[attr-defined]
    return report


@pytest.fixture(scope="session")
def artifacts() -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS


def load_workflow_file(spec: build_workflows.WorkflowSpec) -> dict[str, Any]:
    return json.loads(spec.json_path.read_text(encoding="utf-8"))


@pytest.fixture(params=[spec.name for spec in build_workflows.WORKFLOWS])
def spec(request: pytest.FixtureRequest) -> build_workflows.WorkflowSpec:
    return next(s for s in build_workflows.WORKFLOWS if s.name == request.param)


@pytest.fixture()
def workflow(spec: build_workflows.WorkflowSpec) -> dict[str, Any]:
    return load_workflow_file(spec)
