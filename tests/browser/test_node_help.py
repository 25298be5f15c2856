"""A node's help page opens inside ComfyUI and shows the pack's own page (issue 18).

Both frontends fetch a custom node's help from ``/extensions/<pack folder>/docs/<NodeId>.md``
(web/docs/ here) and show it in the node library's help panel; the way to it from the canvas is
the selection toolbox's info button of a selected node. The test does what a user does: add the
node, select it, press the info button, and read the rendered page.
"""

from __future__ import annotations

from pathlib import Path
import pytest

from tools.harness import comfy_page
from tools.provision import REPO_ROOT

DOCS = REPO_ROOT / "web" / "docs"
NODES = ("SpliceTrainGenerator", "SpliceLoadDINO")


def _first_paragraph(path: Path) -> str:
    """The page's first prose line (below the title), as rendered text: markdown marks removed."""
    for line in path.read_text(encoding="utf-8").splitlines()[1:]:
        if line.strip():
            return line.replace("**", "").replace("*", "").replace("`", "").strip()[:40]
    raise AssertionError(f"{path} has no text below its title")


@pytest.mark.parametrize("node_type", NODES)
def test_a_nodes_help_opens_and_shows_its_page(page: comfy_page.ComfyPage, node_type: str) -> None:
    doc = DOCS / f"{node_type}.md"
    assert doc.is_file(), f"no help page {doc}"
    expected = _first_paragraph(doc)
    node = page.evaluate("""(type) => {
        const app = window.app, canvas = app.canvas; app.graph.clear();
        // Placed before it is added: Nodes 2.0 (1.32.9) takes a node's place from its pos when
        // it joins the graph and does not follow later assignments.
        const node = LiteGraph.createNode(type); node.pos = [500, 400]; app.graph.add(node);
        // A note up and to the left keeps room above the node for the toolbox once the view fits.
        const note = LiteGraph.createNode('Note'); note.pos = [0, 0]; app.graph.add(note);
        canvas.deselectAll();
        return node.id; }""", node_type)
    page.fit_view()  # through the app's command, so that Nodes 2.0's node layer follows the view
    page.click_node_title(node)  # selected as a user does: the toolbox follows a pointer selection
    # The selection toolbox appears over the selected node; its info button opens the help.
    page.wait_for("""() => { const b = [...document.querySelectorAll('button')].find((b) => b.offsetParent
                        && b.querySelector('[class*="lucide--info"]'));
                    if (!b) return false; b.setAttribute('data-splice-test', 'node-info'); return true; }""",
                  timeout_s=15, what="the selection toolbox's info button")
    page.page.click("[data-splice-test=node-info]")
    text = page.wait_for("""(expected) => { const el = document.querySelector('.node-help-content');
                            return el && el.innerText.includes(expected) ? el.innerText : null; }""",
                         arg=expected, timeout_s=15, what=f"the help panel showing {expected!r}")
    title = doc.read_text(encoding="utf-8").splitlines()[0].lstrip("# ").strip()
    assert title in text
