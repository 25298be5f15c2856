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
    # Opened as a workflow (as a file is), not added to the current graph: in Nodes 2.0 a graph
    # cleared by script keeps the layout of its old node ids, and node 1 would keep the place and
    # size of an earlier test's node 1. A note up and to the left keeps room for the toolbox.
    nodes = [{"id": 1, "type": node_type, "pos": [500, 400], "flags": {}, "order": 1, "mode": 0,
              "properties": {}},
             {"id": 2, "type": "Note", "pos": [0, 0], "size": [200, 100], "flags": {}, "order": 0,
              "mode": 0, "properties": {}, "widgets_values": [""]}]
    report = page.load_workflow({"last_node_id": 2, "last_link_id": 0, "nodes": nodes, "links": [],
                                 "groups": [], "config": {}, "extra": {}, "version": 0.4})
    assert report.unregistered_types == []
    page.close_dialogs()
    node = 1
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
