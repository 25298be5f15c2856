"""Drive the real ComfyUI web app (the bundled frontend) in a real, headless Chromium.

Used by the browser tests (tests/browser/conftest.py) and by tools/assets/build_workflows.py,
which builds the shipped workflows in this same page and saves them with the app's own Export
command.

Everything goes through the app as a user's browser has it: ``app.loadGraphData`` (the loader
behind opening a file or a template), ``app.graphToPrompt`` (the converter behind Run), the
registered commands (``Comfy.QueuePrompt``, ``Comfy.ExportWorkflow``, ...) and the app's own
websocket events. Nothing in the app is replaced; the only additions are listeners (an
extension's ``afterConfigureGraph`` hook and API event listeners) that record what happened.

Chromium: Debian's /usr/bin/chromium (or $COMFY_SPLICE_CHROMIUM), launched by Playwright with
``executable_path``; ``playwright install`` is never needed. All waits poll a real condition
in the page with a deadline.
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests
from playwright.sync_api import Browser, BrowserContext, Page, Playwright, ViewportSize, sync_playwright
from playwright.sync_api import TimeoutError as PlaywrightTimeout

from tools import provision

REPO_ROOT = provision.REPO_ROOT

log = logging.getLogger("comfy_page")

# The flags measured to work as root on these machines (HOST.md, "Browser"). Playwright adds
# --headless and a fresh temporary --user-data-dir itself for every launch.
CHROMIUM_ARGS = (
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
)
VIEWPORT: ViewportSize = {"width": 1920, "height": 1080}

# Server-side user settings that keep dialogs and overlays off the canvas: the first-run
# templates dialog, the export file-name prompt (so Export downloads at once) and the minimap.
UI_SETTINGS = {
    "Comfy.TutorialCompleted": True,
    "Comfy.PromptFilename": False,
    "Comfy.Minimap.Visible": False,
    # Screenshots: full-detail nodes at any zoom, no fps/canvas-info overlay.
    "LiteGraph.Canvas.MinFontSizeForLOD": 0,
    "Comfy.Graph.CanvasInfo": False,
}
# "Nodes 2.0" (Vue-rendered nodes) on/off; the browser tests set it per combination.
NODES2_SETTING = "Comfy.VueNodes.Enabled"
# Browser-side: the "Nodes 2.0" banner remembers its dismissal in localStorage.
INIT_SCRIPT = "try { localStorage.setItem('vueNodesBannerDismissed', 'true'); } catch (e) {}"

APP_READY_JS = """(required) => !!(window.app && window.app.graph && window.app.canvas && window.LiteGraph
    && window.comfyAPI && window.comfyAPI.api && window.app.extensionManager
    && window.app.extensionManager.command
    && required.every((t) => t in window.LiteGraph.registered_node_types))"""

# Installed once per page: records missing node types reported to extensions on every load,
# and every execution event of the app's own websocket client.
INSTRUMENT_JS = """() => {
  if (window.__splice) return;
  const state = { missing: null, loads: 0, events: [] };
  window.__splice = state;
  window.app.registerExtension({
    name: 'comfy-splice.tests.recorder',
    afterConfigureGraph(missing) {
      state.loads += 1;
      state.missing = (missing || []).map((m) => (typeof m === 'string' ? m : m.type));
    },
  });
  const api = window.comfyAPI.api.api;
  for (const type of ['execution_start', 'executed', 'execution_success', 'execution_error',
                      'execution_interrupted', 'execution_cached']) {
    api.addEventListener(type, (event) => {
      const detail = event.detail || {};
      state.events.push({ type, prompt_id: detail.prompt_id || null, node: detail.node ?? null,
                          message: detail.exception_message || null,
                          node_type: detail.node_type || null });
    });
  }
}"""


class BrowserError(AssertionError):
    """The page did not reach a state within its deadline; carries what the page showed."""


def chromium_executable() -> Path:
    """The system Chromium ($COMFY_SPLICE_CHROMIUM, else provision's /usr/bin/chromium, which
    it installs with apt-get when run as root)."""
    override = os.environ.get("COMFY_SPLICE_CHROMIUM")
    if override:
        path = Path(override)
        if not path.exists():
            raise provision.ProvisionError(f"COMFY_SPLICE_CHROMIUM={override} does not exist")
        return path
    return provision.ensure_chromium()


def launch_browser(playwright: Playwright) -> Browser:
    return playwright.chromium.launch(executable_path=str(chromium_executable()), headless=True,
                                      args=list(CHROMIUM_ARGS))


def apply_ui_settings(server_url: str, settings: dict[str, Any] | None = None) -> None:
    """POST /settings/<id> for each UI setting (the server stores them per user)."""
    for key, value in (settings or UI_SETTINGS).items():
        response = requests.post(f"{server_url}/settings/{key}", data=json.dumps(value), timeout=30)
        response.raise_for_status()


@dataclass
class LoadReport:
    """What the app reported after loading a workflow."""

    missing_node_types: list[str]
    nodes_with_errors: list[dict[str, Any]]
    unregistered_types: list[str]
    dialogs: list[str]
    node_count: int

    @property
    def missing_models_dialog(self) -> str | None:
        return next((d for d in self.dialogs if "missing models" in d.lower()), None)

    @property
    def missing_nodes_dialog(self) -> str | None:
        return next((d for d in self.dialogs if "missing nodes" in d.lower()), None)


@dataclass
class RunReport:
    """The app's execution events for one queued prompt."""

    prompt_id: str
    events: list[dict[str, Any]] = field(default_factory=list)

    def of_type(self, event_type: str) -> list[dict[str, Any]]:
        return [e for e in self.events if e["type"] == event_type]

    @property
    def executed_nodes(self) -> list[str]:
        return [str(e["node"]) for e in self.of_type("executed")]


class ComfyPage:
    """One tab of the ComfyUI app. Create with :func:`open_app`."""

    def __init__(self, page: Page, server_url: str) -> None:
        self.page = page
        self.server_url = server_url.rstrip("/")
        self.console: list[str] = []
        page.on("console", lambda message: self.console.append(f"{message.type}: {message.text}"))
        page.on("pageerror", lambda error: self.console.append(f"pageerror: {error}"))

    # -- reading the page ------------------------------------------------------------------

    def evaluate(self, script: str, arg: Any = None) -> Any:
        return self.page.evaluate(script, arg)

    def frontend(self) -> dict[str, Any]:
        """The running frontend's version and whether Nodes 2.0 is on (as the app reads it)."""
        return self.evaluate(f"""() => ({{
            version: window.__COMFYUI_FRONTEND_VERSION__ || null,
            nodes2: !!window.app.extensionManager.setting.get('{NODES2_SETTING}'),
        }})""")

    def dialogs(self) -> list[str]:
        """Text of every open PrimeVue dialog (missing nodes / models, errors, ...)."""
        return self.evaluate("() => [...document.querySelectorAll('.p-dialog')].map((d) => d.innerText)")

    def wait_for_dialog(self, text: str, timeout_s: float = 15) -> str:
        """The text of the first open dialog that contains `text` (case-insensitive)."""
        return self.wait_for("""(text) => [...document.querySelectorAll('.p-dialog')].map((d) => d.innerText)
                                .find((t) => t.toLowerCase().includes(text.toLowerCase())) || null""",
                             arg=text, timeout_s=timeout_s, what=f"a dialog containing {text!r}")

    def close_dialogs(self) -> None:
        """Close open dialogs the way a user does (Escape), until none is left."""
        deadline = time.monotonic() + 10
        while self.dialogs():
            if time.monotonic() > deadline:
                raise BrowserError(f"dialogs stay open: {self.dialogs()}")
            self.page.keyboard.press("Escape")
            try:
                self.page.wait_for_function("() => document.querySelectorAll('.p-dialog').length === 0",
                                            timeout=2000)
            except PlaywrightTimeout:
                continue

    def reset_panels(self) -> None:
        """Close the sidebar tab and (1.58) the right side panel that an earlier test opened, and
        take the focus off any text box: otherwise the keys a test types go to the node library's
        search box instead of the canvas (seen after the help test on 1.58.1)."""
        self.evaluate("""async () => {
            const em = window.app.extensionManager, tabs = em.sidebarTab;
            if (tabs && tabs.activeSidebarTabId) tabs.toggleSidebarTab(tabs.activeSidebarTabId);
            const right = 'Comfy.RightSidePanel.IsOpen';
            if (em.setting.get(right)) await em.setting.set(right, false);
            if (document.activeElement && document.activeElement.blur) document.activeElement.blur(); }""")

    def click_node_title(self, node_id: Any) -> None:
        """Select a node with a mouse click on its title bar, as a user does, and wait until the
        app reports it selected (a second click if the first only focused the canvas). In Nodes
        2.0 the node is an element placed by the app's own transform: its box is read from the
        page, not computed."""
        for _attempt in range(3):
            x, y = self.evaluate("""(id) => {
                // The node's own element: the visible one that shows its title.
                const title = window.app.graph.getNodeById(id).title;
                const el = [...document.querySelectorAll(`[data-node-id="${id}"]`)].find((e) => e.offsetParent
                    && (e.innerText || '').includes(title));
                if (el) {
                    const r = el.getBoundingClientRect();
                    return [r.left + r.width / 2, r.top + Math.min(12, r.height / 4)];
                }
                const node = window.app.graph.getNodeById(id), canvas = window.app.canvas;
                const [cx, cy] = canvas.ds.convertOffsetToCanvas([node.pos[0] + node.size[0] / 2,
                                                                  node.pos[1] - LiteGraph.NODE_TITLE_HEIGHT / 2]);
                const box = canvas.canvas.getBoundingClientRect();
                return [box.left + cx, box.top + cy]; }""", node_id)
            self.page.mouse.move(x, y)
            self.page.mouse.click(x, y)
            try:
                self.wait_for("""(id) => { const c = window.app.canvas;
                    return Boolean((c.selected_nodes || {})[id]); }""", arg=node_id, timeout_s=3,
                              what=f"node {node_id} selected")
                return
            except BrowserError:
                log.info("node %s not selected by the click at (%.0f, %.0f); clicking again", node_id, x, y)
        raise BrowserError(f"node {node_id} could not be selected with a click on its title")

    def click_widget_button(self, node_id: Any, label: str) -> None:
        """Click a node's button widget with the mouse, as a user does: in Nodes 2.0 it is a DOM
        button inside the node's element; on the classic canvas it is drawn at the widget's row."""
        dom = self.evaluate("""([id, label]) => {
            const root = document.querySelector(`[data-node-id="${id}"]`);
            if (!root) return false;
            const b = [...root.querySelectorAll('button')].find((b) => b.offsetParent
                        && (b.innerText || '').trim().startsWith(label));
            if (!b) return false;
            b.setAttribute('data-splice-test', 'widget-button'); return true; }""", [node_id, label])
        if dom:
            # The mouse at the button's centre (not locator.click: the node re-renders with
            # every progress message, so Playwright's "stable element" wait may never end).
            box = self.evaluate("""() => { const b = document.querySelector('[data-splice-test=widget-button]');
                b.removeAttribute('data-splice-test'); const r = b.getBoundingClientRect();
                return [r.left + r.width / 2, r.top + r.height / 2]; }""")
            self.page.mouse.click(box[0], box[1])
            return
        x, y = self.evaluate("""([id, label]) => {
            const node = window.app.graph.getNodeById(id), canvas = window.app.canvas;
            const widget = node.widgets.find((w) => w.type === 'button' && (w.label || w.name).startsWith(label));
            const y = widget.y ?? widget.last_y;
            const [cx, cy] = canvas.ds.convertOffsetToCanvas([node.pos[0] + node.size[0] / 2,
                                                              node.pos[1] + y + LiteGraph.NODE_WIDGET_HEIGHT / 2]);
            const box = canvas.canvas.getBoundingClientRect();
            return [box.left + cx, box.top + cy]; }""", [node_id, label])
        self.page.mouse.click(x, y)

    def wait_for(self, script: str, arg: Any = None, timeout_s: float = 30, what: str = "") -> Any:
        """Poll a JS predicate until it returns a truthy value; return that value."""
        try:
            handle = self.page.wait_for_function(script, arg=arg, timeout=timeout_s * 1000, polling=200)
        except PlaywrightTimeout:
            raise BrowserError(f"timed out after {timeout_s:.0f} s waiting for {what or script[:120]}; "
                               f"dialogs: {self.dialogs()}; console tail: {self.console[-15:]}") from None
        return handle.json_value()

    # -- workflows -----------------------------------------------------------------------------

    def load_workflow(self, workflow: dict[str, Any]) -> LoadReport:
        """Open a UI-format workflow with ``app.loadGraphData`` (as opening a file does)."""
        self.close_dialogs()
        loads = self.evaluate("() => window.__splice.loads")
        self.evaluate("async (wf) => { await window.app.loadGraphData(wf); }", workflow)
        self.wait_for("(n) => window.__splice.loads > n", arg=loads, timeout_s=30, what="afterConfigureGraph")
        # loadGraphData opens its missing-nodes/-models dialogs before it calls the extensions'
        # afterConfigureGraph; two animation frames later Vue has rendered them.
        self.page.evaluate("() => new Promise((r) => requestAnimationFrame(() => requestAnimationFrame(r)))")
        state = self.evaluate("""() => ({
            missing: window.__splice.missing,
            errors: window.app.graph.nodes.filter((n) => n.has_errors)
                .map((n) => ({ id: Number(n.id), type: n.type, title: n.title,
                               values: (n.widgets || []).map((w) => String(w.value)) })),
            unregistered: window.app.graph.nodes.map((n) => n.type)
                .filter((t) => !(t in window.LiteGraph.registered_node_types)),
            count: window.app.graph.nodes.length,
        })""")
        return LoadReport(state["missing"] or [], state["errors"], state["unregistered"], self.dialogs(),
                          state["count"])

    def settled_node_rects(self, timeout_s: float = 30, stable_frames: int = 10) -> dict[int, list[float]]:
        """Each node's rectangle in canvas units as the frontend lays it out (``node.boundingRect``:
        pos and size including the title; in Nodes 2.0 the size the rendered node measured), read
        once every image in the page has loaded and no rectangle has changed for
        ``stable_frames`` animation frames (Nodes 2.0 nodes grow after their DOM is measured)."""
        rects = self.evaluate("""async ([timeoutMs, stableFrames]) => {
            const frame = () => new Promise((r) => requestAnimationFrame(r));
            const read = () => JSON.stringify(window.app.graph.nodes.map((n) =>
                [n.id, Array.from(n.boundingRect)]));
            const deadline = performance.now() + timeoutMs;
            let last = null, same = 0;
            while (performance.now() < deadline) {
              await frame();
              window.app.graph.setDirtyCanvas(true, true);
              const images = [...document.images].every((i) => i.complete);
              const now = read();
              same = images && now === last ? same + 1 : 0;
              last = now;
              if (same >= stableFrames) return JSON.parse(now);
            }
            return null; }""", [timeout_s * 1000, stable_frames])
        if rects is None:
            raise BrowserError(f"node rectangles still changing after {timeout_s:.0f} s; "
                               f"console tail: {self.console[-15:]}")
        return {int(node_id): rect for node_id, rect in rects}

    def graph_to_prompt(self) -> dict[str, Any]:
        """``app.graphToPrompt()``: {"workflow": UI format, "output": API format}."""
        return self.evaluate("async () => JSON.parse(JSON.stringify(await window.app.graphToPrompt()))")

    def export_workflow(self) -> str:
        """The text the app's own Export command downloads (``Comfy.ExportWorkflow``)."""
        self.close_dialogs()
        with self.page.expect_download(timeout=30_000) as download_info:
            self.evaluate("() => window.app.extensionManager.command.execute('Comfy.ExportWorkflow')")
        download = download_info.value
        path = download.path()
        return Path(path).read_text(encoding="utf-8")

    def fit_view(self) -> None:
        self.evaluate("() => window.app.extensionManager.command.execute('Comfy.Canvas.FitView')")
        self.evaluate("() => window.app.graph.setDirtyCanvas(true, true)")
        self.page.evaluate("() => new Promise((r) => requestAnimationFrame(() => requestAnimationFrame(r)))")

    def frame_graph(self, margin: float = 16, max_scale: float = 1.0) -> dict[str, float]:
        """Zoom and pan so the nodes and groups fill the canvas; return the clip rectangle (page
        pixels) that holds exactly the graph plus the margin."""
        return self.evaluate("""([margin, maxScale]) => {
            const app = window.app, canvas = app.canvas;
            let x0 = Infinity, y0 = Infinity, x1 = -Infinity, y1 = -Infinity;
            const add = (x, y, w, h) => { x0 = Math.min(x0, x); y0 = Math.min(y0, y);
                                          x1 = Math.max(x1, x + w); y1 = Math.max(y1, y + h); };
            for (const n of app.graph.nodes) { const r = n.boundingRect; add(r[0], r[1], r[2], r[3]); }
            for (const g of app.graph.groups || []) add(g.pos[0], g.pos[1], g.size[0], g.size[1]);
            const el = canvas.canvas, box = el.getBoundingClientRect();
            const scale = Math.min((box.width - 2 * margin) / (x1 - x0), (box.height - 2 * margin) / (y1 - y0),
                                   maxScale);
            canvas.ds.scale = scale;
            canvas.ds.offset = [margin / scale - x0, margin / scale - y0];
            canvas.setDirty(true, true);
            return { x: box.left, y: box.top, width: Math.min(box.width, Math.ceil((x1 - x0) * scale + 2 * margin)),
                     height: Math.min(box.height, Math.ceil((y1 - y0) * scale + 2 * margin)) };
        }""", [margin, max_scale])

    def screenshot(self, path: Path, clip: dict[str, float] | None = None) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.page.evaluate("() => new Promise((r) => requestAnimationFrame(() => requestAnimationFrame(r)))")
        self.page.screenshot(path=str(path), clip=clip)  # type: ignore[arg-type]
        return path

    # -- editing, as a user does in the canvas -------------------------------------------------

    def node_ids_by_type(self, node_type: str) -> list[int]:
        return self.evaluate("(t) => window.app.graph.nodes.filter((n) => n.type === t).map((n) => n.id)",
                             node_type)

    def widget_value(self, node_id: int, name: str) -> Any:
        return self.evaluate("""([id, name]) => {
            const w = window.app.graph.getNodeById(id).widgets.find((w) => w.name === name);
            return w ? w.value : undefined; }""", [node_id, name])

    def set_widget(self, node_id: int, name: str, value: Any) -> None:
        """Set a widget's value and run its callback (what the canvas does on an edit)."""
        ok = self.evaluate("""([id, name, value]) => {
            const node = window.app.graph.getNodeById(id);
            const widget = node && node.widgets && node.widgets.find((w) => w.name === name);
            if (!widget) return false;
            widget.value = value;
            if (widget.callback) widget.callback(widget.value, window.app.canvas, node, null, null);
            node.setDirtyCanvas(true, true);
            return true; }""", [node_id, name, value])
        if not ok:
            raise BrowserError(f"node {node_id} has no widget {name!r}")

    def set_mode(self, node_ids: list[int], mode: int) -> None:
        """Node mode: 0 = always, 2 = never (muted), 4 = bypass."""
        self.evaluate("""([ids, mode]) => { for (const id of ids) window.app.graph.getNodeById(id).mode = mode;
                         window.app.graph.setDirtyCanvas(true, true); }""", [node_ids, mode])

    # -- running ---------------------------------------------------------------------------

    def _events_since(self, start: int) -> list[dict[str, Any]]:
        return self.evaluate("(i) => window.__splice.events.slice(i)", start)

    def _queue_with(self, command: str, select: list[int] | None, timeout_s: float) -> RunReport:
        start = self.evaluate("() => window.__splice.events.length")
        if select is not None:
            self.evaluate("""(ids) => { window.app.canvas.deselectAll();
                for (const id of ids) window.app.canvas.select(window.app.graph.getNodeById(id)); }""", select)
        self.evaluate("(cmd) => window.app.extensionManager.command.execute(cmd)", command)
        prompt_id = self.wait_for(
            "(i) => { const e = window.__splice.events.slice(i).find((e) => e.type === 'execution_start');"
            " return e ? e.prompt_id : null; }", arg=start, timeout_s=60,
            what=f"{command} to start a prompt")
        self.wait_for("""([i, id]) => window.__splice.events.slice(i).some((e) => e.prompt_id === id &&
                          ['execution_success', 'execution_error', 'execution_interrupted'].includes(e.type))""",
                      arg=[start, prompt_id], timeout_s=timeout_s, what=f"prompt {prompt_id} to finish")
        return RunReport(prompt_id, [e for e in self._events_since(start) if e["prompt_id"] in (prompt_id, None)])

    def queue(self, timeout_s: float = 300) -> RunReport:
        """Run the whole graph (``Comfy.QueuePrompt``, the Run button)."""
        return self._queue_with("Comfy.QueuePrompt", None, timeout_s)

    def queue_selected_outputs(self, node_ids: list[int], timeout_s: float = 300) -> RunReport:
        """Select output nodes and run only what they need (``Comfy.QueueSelectedOutputNodes``)."""
        return self._queue_with("Comfy.QueueSelectedOutputNodes", node_ids, timeout_s)

    def wait_for_images(self, node_ids: list[Any], timeout_s: float = 60) -> dict[Any, list[str]]:
        """Wait until each node shows at least one loaded image (``node.imgs`` on the classic
        canvas, an image in the node's element in Nodes 2.0, decoded); return the image URLs per
        node, keyed by the ids as given (1.58 gives a new node a string id, 1.32 a number)."""
        result = self.wait_for("""(ids) => {
            const out = {};
            for (const id of ids) {
              const node = window.app.graph.getNodeById(id);
              const loaded = (imgs) => imgs.length && imgs.every((i) => i.complete && i.naturalWidth > 0);
              // What is drawn must have loaded: the decoded images the classic canvas keeps on the
              // node, or in Nodes 2.0 the image in the node's element (one of a batch at a time).
              let drawn = (node && node.imgs) || [];
              if (!drawn.length) drawn = [...document.querySelectorAll(`[data-node-id="${id}"] img`)]
                .filter((i) => /[/]view[?]/.test(i.src));
              if (!loaded(drawn)) return null;
              // The batch: the node's outputs as the app stored them (all modes), else what is drawn.
              const stored = ((window.app.nodeOutputs || {})[String(id)] || {}).images || [];
              out[id] = stored.length
                ? stored.map((i) => `/view?filename=${encodeURIComponent(i.filename)}`
                                    + `&subfolder=${encodeURIComponent(i.subfolder || '')}&type=${i.type}`)
                : drawn.map((i) => i.src);
            }
            return out; }""", arg=node_ids, timeout_s=timeout_s, what=f"images on nodes {node_ids}")
        return {node_id: result[str(node_id)] for node_id in node_ids}


def open_app(context: BrowserContext, server_url: str, required_types: tuple[str, ...] = (),
             timeout_s: float = 90) -> ComfyPage:
    """A new tab on the server's web app, ready (``window.app`` with the node types loaded) and
    instrumented."""
    page = context.new_page()
    comfy = ComfyPage(page, server_url)
    page.goto(server_url, wait_until="domcontentloaded", timeout=timeout_s * 1000)
    comfy.wait_for(APP_READY_JS, arg=list(required_types), timeout_s=timeout_s, what="the app to be ready")
    comfy.evaluate(INSTRUMENT_JS)
    log.info("ComfyUI app ready at %s", server_url)
    return comfy


def new_context(browser: Browser) -> BrowserContext:
    context = browser.new_context(viewport=VIEWPORT, accept_downloads=True)
    context.add_init_script(INIT_SCRIPT)
    return context


class Session:
    """Playwright + Chromium for a script (tests use the fixtures in conftest.py instead)."""

    def __init__(self) -> None:
        self._playwright_cm = sync_playwright()
        self.playwright: Playwright | None = None
        self.browser: Browser | None = None

    def __enter__(self) -> "Session":
        self.playwright = self._playwright_cm.__enter__()
        self.browser = launch_browser(self.playwright)
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            if self.browser is not None:
                self.browser.close()
        finally:
            self._playwright_cm.__exit__(*exc)
