"""Build the shipped workflows IN the real ComfyUI page and save them with the app's own Export.

    python -m tools.assets.build_workflows            # rewrite workflows/*.json, *.jpg, screenshots/
    python -m tools.assets.build_workflows --check    # exit 1 if a rebuilt workflow differs
    python -m tools.assets.build_workflows --only splice_material   # one workflow (its spec name)

Why in the page: a workflow file is only "saved the way ComfyUI saves it" if ComfyUI saved it.
This script starts a real ComfyUI (tools/harness/comfy_server.py, with this pack installed),
opens its web app in Chromium, creates every node with ``LiteGraph.createNode``, connects them with
``node.connect``, sets widget values by widget *name* (so the positional ``widgets_values``,
including the hidden ``control_after_generate`` after each seed, come from the frontend), and
downloads the file with the ``Comfy.ExportWorkflow`` command, byte for byte.

One thing the bare frontend does not write is added here the way ComfyUI-Manager's
"workflow metadata" extension adds it when a node is created: ``cnr_id`` and ``ver`` in each
node's properties (``comfy-core`` + the ComfyUI version for core nodes; this pack's registry id
and version from pyproject.toml for ours), so the Manager can offer to install a missing pack.
Loader nodes also get ``properties.models`` ({name, url, directory}), the frontend's format for
offering a missing model's download.

The workflows are described as data in tools/assets/workflow_specs.py; the script that builds
one in the page is tools/assets/build_workflow.js.
"""

from __future__ import annotations

import argparse
import io
import json
import logging
import shutil
import sys
import tempfile
import tomllib  # type: ignore[import-not-found, unused-ignore]  # Python 3.11+: tools run in the venv
import uuid
from pathlib import Path
from typing import Any

from PIL import Image

from comfy_splice.dino.fixtures import save_tiny_backbone
from tools.assets import make_examples
# The specs are re-exported: the browser tests read them and the builder from one module.
from tools.assets.workflow_specs import (  # noqa: F401
    DINO_MODEL, DINO_MODEL_PTH, GENERATOR_FILE, MODE_ALWAYS, MODE_NEVER, REPO_ROOT, SD15_CHECKPOINT,
    TILE_CONTROLNET, WORKFLOWS, WORKFLOWS_DIR, WorkflowSpec, all_workflows, basic_workflow,
    diffusion_workflow, material_workflow, region_workflow, video_workflow)
from tools.harness import comfy_page
from tools.harness.comfy_server import ComfyServer

log = logging.getLogger("build_workflows")

SCREENSHOTS_DIR = WORKFLOWS_DIR / "screenshots"
THUMBNAIL_SIZE = (640, 400)
BUILD_JS = (Path(__file__).with_name("build_workflow.js")).read_text()


# ------------------------------------------------------------------------------------------
# Building in the page


def pack_identity() -> dict[str, str]:
    """Registry id and version from pyproject.toml, and the folder ComfyUI loads the pack from."""
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    return {"id": project["name"], "version": project["version"], "folder": "comfy-splice"}


def spec_payload(spec: WorkflowSpec, comfyui_version: str) -> dict[str, Any]:
    return {
        "nodes": [vars(n) for n in spec.nodes],
        "links": spec.links,
        "groups": [vars(g) for g in spec.groups],
        "pack": pack_identity(),
        "comfyui_version": comfyui_version,
        # Stable per workflow, so rebuilding gives the same file.
        "graph_id": str(uuid.uuid5(uuid.NAMESPACE_URL, f"https://registry.comfy.org/comfy-splice/{spec.name}")),
    }


def build_in_page(page: comfy_page.ComfyPage, spec: WorkflowSpec, comfyui_version: str) -> str:
    """Create the graph in the page and return the text of the app's own export."""
    page.close_dialogs()
    ids = page.evaluate(BUILD_JS, spec_payload(spec, comfyui_version))
    expected = [spec.node_id(n.key) for n in spec.nodes]
    if ids != expected:
        raise RuntimeError(f"{spec.name}: the page numbered the nodes {ids}, expected {expected}")
    page.frame_graph(margin=40)  # saved as the view the file opens with (extra.ds)
    text = page.export_workflow()
    return text if text.endswith("\n") else text + "\n"


def thumbnail(screenshot_png: bytes, size: tuple[int, int] = THUMBNAIL_SIZE) -> bytes:
    """The template browser's card image: the loaded graph, cropped to the card's aspect."""
    with Image.open(io.BytesIO(screenshot_png)) as shot:
        img = shot.convert("RGB")
    target_ratio = size[0] / size[1]
    w, h = img.size
    if w / h > target_ratio:
        new_w = int(h * target_ratio)
        img = img.crop(((w - new_w) // 2, 0, (w - new_w) // 2 + new_w, h))
    else:
        new_h = int(w / target_ratio)
        img = img.crop((0, (h - new_h) // 2, w, (h - new_h) // 2 + new_h))
    img = img.resize(size, Image.Resampling.LANCZOS)
    buffer = io.BytesIO()
    img.save(buffer, format="JPEG", quality=85, optimize=True)
    return buffer.getvalue()


def graph_screenshot(page: comfy_page.ComfyPage, workflow: dict[str, Any], path: Path) -> bytes:
    """Load a workflow, fit it and screenshot the canvas without the app's side bars."""
    page.load_workflow(workflow)
    page.close_dialogs()
    # Focus mode hides the side and top bars; the build server is a throw-away one, so its
    # canvas menu setting can go too. The focus-mode "show menu" button is hidden by a style.
    page.evaluate("""async () => {
        window.app.extensionManager.focusMode = true;
        await window.app.extensionManager.setting.set('Comfy.Graph.CanvasMenu', false);
        if (!document.getElementById('splice-docs-style')) {
          const style = document.createElement('style');
          style.id = 'splice-docs-style';
          style.textContent = '.comfy-menu-hamburger { visibility: hidden !important; }';
          document.head.appendChild(style);
        }
    }""")
    try:
        page.screenshot(path, clip=page.frame_graph())
    finally:
        page.evaluate("() => { window.app.extensionManager.focusMode = false; }")
    return path.read_bytes()


def compress_png(path: Path, colors: int = 256) -> None:
    """Quantise a UI screenshot (flat colours) so the docs copy stays small."""
    with Image.open(path) as img:
        small = img.convert("RGB").quantize(colors=colors, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
    small.save(path, format="PNG", optimize=True)


def start_server(workdir: Path) -> ComfyServer:
    """A real ComfyUI with this pack and the example inputs in its input folder."""
    server = ComfyServer(workdir)
    server.start()
    make_examples.write_all(server.input_dir)
    # A file under the default DINO name (tiny random weights: nothing runs): the graphs are
    # built and photographed as an artist sees them once the weights are in place, without
    # Load DINO-ViT's download warning.
    save_tiny_backbone(server.models_dir / DINO_MODEL["name"])
    comfy_page.apply_ui_settings(server.url)
    return server


def build_all(check: bool = False, screenshots: bool = True, only: list[str] | None = None) -> list[str]:
    """Build every workflow (or those whose spec name is in ``only``); write them (or compare
    them, with check=True). Returns problems."""
    problems: list[str] = []
    specs = [s for s in WORKFLOWS if not only or s.name in only]
    unknown = sorted(set(only or ()) - {s.name for s in WORKFLOWS})
    if unknown:
        raise SystemExit(f"no workflow named {unknown}; the names are {[s.name for s in WORKFLOWS]}")
    with tempfile.TemporaryDirectory(prefix="splice-build-") as tmp:
        server = start_server(Path(tmp))
        try:
            version = server.system_stats()["system"]["comfyui_version"]
            with comfy_page.Session() as session:
                assert session.browser is not None
                context = comfy_page.new_context(session.browser)
                page = comfy_page.open_app(context, server.url, ("SpliceTrainGenerator",))
                for spec in specs:
                    text = build_in_page(page, spec, version)
                    if check:
                        old = spec.json_path.read_text() if spec.json_path.is_file() else ""
                        if old != text:
                            problems.append(f"{spec.json_path.name} differs from a fresh build")
                        continue
                    spec.json_path.write_text(text)
                    log.info("wrote %s", spec.json_path)
                    shot = graph_screenshot(page, json.loads(text), Path(tmp) / f"{spec.name}.png")
                    spec.thumbnail_path.write_bytes(thumbnail(shot))
                    log.info("wrote %s", spec.thumbnail_path)
                    if screenshots:
                        SCREENSHOTS_DIR.mkdir(parents=True, exist_ok=True)
                        target = SCREENSHOTS_DIR / f"{spec.name}.png"
                        shutil.copy(Path(tmp) / f"{spec.name}.png", target)
                        compress_png(target)
                        log.info("wrote %s", target)
                context.close()
        finally:
            server.stop()
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="compare with the committed files instead")
    parser.add_argument("--no-screenshots", action="store_true", help="skip workflows/screenshots/")
    parser.add_argument("--only", action="append", metavar="NAME",
                        help="build only this workflow (its spec name, e.g. splice_material); repeatable")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    problems = build_all(check=args.check, screenshots=not args.no_screenshots, only=args.only)
    for problem in problems:
        log.error(problem)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
