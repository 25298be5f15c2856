"""The shipped templates as an artist meets them: titles, one-line notes, autosave on, and Train
Generator's own result used where it is the picture (no Splice Output recomputing it).

Reads tools/assets/workflow_specs.py and the committed workflows/*.json (no server, no browser).
"""

from __future__ import annotations

import json

import pytest

from tools.assets import workflow_specs as ws

SPECS = ws.WORKFLOWS


@pytest.mark.parametrize("spec", SPECS, ids=[s.name for s in SPECS])
def test_the_file_is_the_title_and_the_note_says_what_to_change_first(spec: ws.WorkflowSpec) -> None:
    assert spec.json_path.name == f"{spec.title}.json" and spec.thumbnail_path.is_file()
    saved = json.loads(spec.json_path.read_text())
    (note,) = [n for n in saved["nodes"] if n["type"] == "MarkdownNote"]
    headline = note["widgets_values"][0].split("\n", 1)[0]
    assert headline.startswith("## ") and "Change first:" in headline, headline
    assert "10 s" not in note["widgets_values"][0]  # no unmeasured GPU time


@pytest.mark.parametrize("spec", SPECS, ids=[s.name for s in SPECS])
def test_autosave_is_on(spec: ws.WorkflowSpec) -> None:
    assert spec.node("train").widgets["autosave_every"] == ws.AUTOSAVE_EVERY > 0


@pytest.mark.parametrize("spec", SPECS, ids=[s.name for s in SPECS])
def test_splice_output_only_where_it_does_more_than_the_result(spec: ws.WorkflowSpec) -> None:
    """Splice Output on the very image Train Generator trained on, without a mask, recomputes
    Train Generator's ``result``: the graph should use that output instead."""
    fed = {(to, name): source for source, _, to, name in spec.links}
    for node in spec.nodes:
        if node.type == "SpliceApply":
            same_image = fed[(node.key, "images")] == fed[("train", "structure")]
            assert not same_image or (node.key, "mask") in fed, f"{spec.name}: {node.key} repeats train.result"
