"""Browser tests: the shipped workflows in the real ComfyUI web app, in a real Chromium.

Fixtures:
- ``browser_server``: a ComfyUI server of its own (started with the session's
  ``comfy_server_factory``), so files these tests put into its model and input folders (a tiny
  DINO under the official ViT-B/8 name, a trained generator, the example inputs) never change
  what the host tests see on the shared ``comfy_server``. The UI settings that keep dialogs off
  the canvas are stored on it.
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
import shutil
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

from tools.assets import build_workflows
from tools.harness import comfy_page
from tools.harness.comfy_server import ComfyServer
from tools.provision import REPO_ROOT

ARTIFACTS = REPO_ROOT / "artifacts" / "browser"
DINO_NAMES = (build_workflows.DINO_MODEL["name"], build_workflows.DINO_MODEL_PTH["name"])


@pytest.fixture(scope="session")
def browser_server(comfy_server_factory: Callable[..., ComfyServer], hub_stub: Any) -> ComfyServer:
    # No example input is copied here: the pack puts them into the input folder when it loads.
    # Its DINO downloads go to the session's hub stand-in (read when the server starts).
    with pytest.MonkeyPatch.context() as env:
        env.setenv("HF_ENDPOINT", hub_stub.endpoint)
        server = comfy_server_factory(name="browser-comfyui")
    comfy_page.apply_ui_settings(server.url)
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
def app_page(browser: Any, browser_server: ComfyServer) -> Iterator[comfy_page.ComfyPage]:
    """The ComfyUI app in one tab, ready and instrumented (pack nodes registered)."""
    context = comfy_page.new_context(browser)
    try:
        page = comfy_page.open_app(context, browser_server.url, ("SpliceTrainGenerator", "LossGraphNode"))
        yield page
    finally:
        context.close()


@pytest.fixture()
def page(app_page: comfy_page.ComfyPage, request: pytest.FixtureRequest) -> Iterator[comfy_page.ComfyPage]:
    """The session's tab with no dialog open; on failure its screenshot goes to artifacts/."""
    app_page.close_dialogs()
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
