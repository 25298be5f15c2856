"""The Splice blueprint from an empty canvas to a result, in the real app: found in the node
search by its name, added, fed with the example images, run with the tiny DINO and a few steps,
and its result image shown.

Uses the shared fixtures of conftest.py (``page``, ``browser_server``, ``dino_weights``).
"""

from __future__ import annotations

from pathlib import Path

from tools.assets import build_blueprints, make_examples
from tools.harness import comfy_page
from tools.harness.comfy_server import ComfyServer

TEST_STEPS = 2
TITLE = build_blueprints.blueprints()[0].title


def test_the_restyle_blueprint_runs_from_an_empty_canvas(page: comfy_page.ComfyPage, browser_server: ComfyServer,
                                                         dino_weights: Path, artifacts: Path) -> None:
    page.evaluate("() => window.app.graph.clear()")
    # The way an artist adds it: double-click the canvas, type, Enter.
    box = page.page.locator("canvas").first.bounding_box()
    assert box is not None
    # Type only once the search box has the focus: keys sent to the canvas are shortcuts
    # (on 1.58.1 'n' opens the node library, whose own search box then takes the rest).
    for _attempt in range(3):
        page.page.mouse.dblclick(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
        try:
            page.wait_for("() => document.activeElement && document.activeElement.tagName === 'INPUT'",
                          timeout_s=5, what="the node search box")
            break
        except comfy_page.BrowserError:
            page.page.keyboard.press("Escape")
    page.page.keyboard.type("restyle one image")
    page.wait_for("(title) => [...document.querySelectorAll('li, .option-container, [role=option]')]"
                  ".some((e) => e.innerText && e.innerText.includes(title))", arg=TITLE, timeout_s=30,
                  what="the blueprint in the node search")
    page.page.keyboard.press("Enter")
    node = page.wait_for("""(title) => { const n = window.app.graph._nodes.find((n) => n.title === title);
        return n && n.subgraph ? n.id : null; }""", arg=TITLE, timeout_s=30, what="the blueprint node")
    names = page.evaluate("""(id) => { const n = window.app.graph.getNodeById(id);
        return [n.inputs.map((i) => i.name), n.outputs.map((o) => o.name)]; }""", node)
    assert names == [["structure", "appearance", "model", "steps", "seed"], ["image", "generator"]]
    page.set_widget(node, "steps", TEST_STEPS)
    save = page.evaluate("""([id, structure, appearance]) => {
        const g = window.app.graph, bp = g.getNodeById(id);
        // Each node placed before it is added (Nodes 2.0 on 1.32.9 reads pos only then).
        const load = (name, y) => { const n = LiteGraph.createNode('LoadImage');
            n.pos = [bp.pos[0] - 400, bp.pos[1] + y]; g.add(n);
            n.widgets.find((w) => w.name === 'image').value = name; return n; };
        load(structure, 0).connect(0, bp, 0);
        load(appearance, 420).connect(0, bp, 1);
        const save = LiteGraph.createNode('SaveImage'); save.pos = [bp.pos[0] + 400, bp.pos[1]]; g.add(save);
        save.widgets.find((w) => w.name === 'filename_prefix').value = 'browser/blueprint';
        bp.connect(0, save, 0);
        return save.id; }""", [node, make_examples.STRUCTURE, make_examples.APPEARANCE])
    page.evaluate("() => window.app.canvas.deselectAll()")  # fit the whole graph, not the new node
    page.fit_view()
    run = page.queue(timeout_s=300)
    assert run.of_type("execution_success"), run.events
    shown = page.wait_for_images([save], timeout_s=60)
    assert shown[save], "the blueprint's result is not shown"
    page.screenshot(artifacts / "blueprint-restyle-one-image.png")
    saved = sorted((browser_server.output_dir / "browser").glob("blueprint_*.png"))
    assert saved, "no result file"
