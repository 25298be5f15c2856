"""The shipped workflows' layout as each frontend draws it: no node over another.

Nodes 2.0 draws nodes as DOM elements and grows each one to its content's height at its saved
position (frontend 1.58: ``layoutStore.reportContentSize``; the classic canvas keeps the saved
size), so a workflow laid out tightly in the classic canvas can put a node over the one below.
The rectangles are the frontend's own (``node.boundingRect``, title included), read after the
page's images have loaded and the layout has stopped changing.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tools.assets import build_workflows as bw
from tools.harness import comfy_page


def _overlap(a: list[float], b: list[float]) -> tuple[float, float]:
    """Width and height of the intersection of two [x, y, w, h] rectangles (<= 0: none)."""
    return (min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0]), min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1]))


def test_no_two_nodes_overlap(page: comfy_page.ComfyPage, spec: bw.WorkflowSpec, workflow: dict[str, Any],
                              dino_weights: Path) -> None:
    """With the weights in place (the state after set-up; without them Load DINO-ViT also shows
    its download warning, tested in test_results_and_seeds.py), no two nodes overlap."""
    page.load_workflow(workflow)
    rects = page.settled_node_rects()
    assert len(rects) == len(workflow["nodes"])
    titles = {n["id"]: n.get("title") or n["type"] for n in workflow["nodes"]}
    overlaps = []
    ids = sorted(rects)
    for i, a in enumerate(ids):
        for b in ids[i + 1:]:
            w, h = _overlap(rects[a], rects[b])
            if w > 0 and h > 0:
                overlaps.append(f"{titles[a]!r} {[round(v) for v in rects[a]]} and {titles[b]!r} "
                                f"{[round(v) for v in rects[b]]} overlap by {w:.0f} x {h:.0f}")
    assert not overlaps, f"{spec.name}: " + "; ".join(overlaps)
