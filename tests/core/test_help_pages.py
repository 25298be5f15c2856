"""Every node has a help page in web/docs/ that agrees with its schema and states only measured costs.

ComfyUI's frontend (1.32.9 and 1.58.1) shows ``/extensions/<pack dir>/docs/<NodeId>.md`` in the
node's help panel; tests/host/test_help_pages_server.py checks that the real server serves them.
The schemas are read from nodes/*.py by ``tools.assets.help_pages`` (no ComfyUI import here).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tools.assets import help_pages, make_help_images
from tools.assets.help_pages import DOCS_DIR, REPO_ROOT, node_schemas, page_path, sections, table_names

SCHEMAS = node_schemas()
MAX_LINES = 90
# A duration: "10 s", "13.3 s/step", "2 min", "7 hours", "40 ms" ...
DURATION = re.compile(r"\d(?:[\d.,]*\d)?\s*(?:ms|s|sec|secs|seconds?|min|mins|minutes?|h|hrs?|hours?)\b",
                      re.IGNORECASE)
TIME_WORDS = re.compile(r"\b(?:seconds|minutes|hours)\b", re.IGNORECASE)
GPU = re.compile(r"\b(?:GPU|GPUs|CUDA|H100|H200|A100|RTX)\b", re.IGNORECASE)
# A cost figure: a number with a unit of time or memory.
FIGURE = re.compile(r"(\d+(?:\.\d+)?)\s*(s/step|GiB|GB|MiB|MB|ms|s|min|hours?)\b")


def _page(node_id: str) -> str:
    return page_path(node_id).read_text(encoding="utf-8")


def _measured_text() -> str:
    """The repository's own documentation outside the help pages: where measured figures live
    (README.md now; docs/*.md and bench/README.md when the README's tables move)."""
    texts = []
    for path in sorted(REPO_ROOT.rglob("*.md")):
        relative = path.relative_to(REPO_ROOT)
        if relative.parts[0] in {".git", "web", "tests", "node_modules"}:
            continue
        texts.append(path.read_text(encoding="utf-8"))
    return re.sub(r"\s+", " ", "\n".join(texts))


def test_the_reader_finds_every_node_of_the_pack() -> None:
    """nodes/__init__.py registers 18 nodes; the source reader must see the same set, or the
    page checks below would silently skip a node."""
    assert len(SCHEMAS) == 18, sorted(SCHEMAS)
    assert SCHEMAS["SpliceTrainGenerator"].inputs[:4] == ["structure", "appearance", "structure_loss",
                                                         "appearance_loss"]
    # slots built by helper functions (shared descriptor widgets, the loss block) are read too
    assert "stride" in SCHEMAS["SpliceDinoFeaturesPCA"].inputs
    assert SCHEMAS["SpliceStructureLoss"].inputs == ["dino", "weight", "block"]
    # an output shown under its display name, not its id
    assert SCHEMAS["SpliceCropToMask"].outputs == ["image"]


@pytest.mark.parametrize("node_id", sorted(SCHEMAS))
def test_every_node_has_a_page_titled_with_its_display_name(node_id: str) -> None:
    path = page_path(node_id)
    assert path.is_file(), f"{node_id} has no help page: write {path.relative_to(REPO_ROOT)}"
    lines = _page(node_id).splitlines()
    assert lines[0] == f"# {SCHEMAS[node_id].display_name}"
    assert len(lines) <= MAX_LINES, f"{path.name} has {len(lines)} lines; keep a help page under {MAX_LINES}"


def test_no_page_without_a_node() -> None:
    """A page left behind by a renamed or removed node would never be shown."""
    pages = {p.stem for p in DOCS_DIR.glob("*.md")}
    assert pages - set(SCHEMAS) == set()


@pytest.mark.parametrize("node_id", sorted(SCHEMAS))
def test_page_lists_exactly_the_nodes_inputs_and_outputs(node_id: str) -> None:
    """The Inputs and Outputs tables name every slot as the node shows it, in the node's order:
    a page that misses an input, or keeps one the node no longer has, fails."""
    schema, found = SCHEMAS[node_id], sections(_page(node_id))
    assert "Inputs" in found and "Outputs" in found, f"{node_id}.md needs '## Inputs' and '## Outputs'"
    assert table_names(found["Inputs"]) == schema.inputs
    assert table_names(found["Outputs"]) == schema.outputs


@pytest.mark.parametrize("node_id", sorted(SCHEMAS))
def test_cost_section_covers_cpu_and_gpu_and_states_no_gpu_time(node_id: str) -> None:
    """No GPU time has been measured: a page may say so, but never give one."""
    text = _page(node_id)
    cost = "\n".join(sections(text).get("Cost", []))
    assert re.search(r"\bCPU\b", cost) and GPU.search(cost), f"{node_id}.md: say what it costs on a CPU and a GPU"
    for line in text.splitlines():
        if GPU.search(line):
            assert not DURATION.search(line) and not TIME_WORDS.search(line), \
                f"{node_id}.md states a GPU time, which has not been measured: {line!r}"


@pytest.mark.parametrize("node_id", sorted(SCHEMAS))
def test_cost_figures_are_the_measured_ones(node_id: str) -> None:
    """Every time or memory figure in a Cost section is one the repository's documentation
    reports as measured, unless its line marks it as an estimate."""
    measured = _measured_text()
    for line in sections(_page(node_id)).get("Cost", []):
        if "estimate" in line.lower():
            continue
        for number, unit in FIGURE.findall(line):
            # A table may give the unit in its header ("seconds" column): a decimal number is
            # specific enough to be found alone; a whole number must come with its unit.
            unit_part = rf"(?:\s*{re.escape(unit)})?" if "." in number else rf"\s*{re.escape(unit)}"
            pattern = rf"(?<![\d.]){re.escape(number)}{unit_part}(?![\d.]*\d)(?![A-Za-z])"
            assert re.search(pattern, measured), \
                f"{node_id}.md: '{number} {unit}' is not a measured figure of README/docs: {line!r}"


def test_pictures_exist_are_small_and_relative() -> None:
    """Pictures are served beside the pages (the frontend resolves relative paths against
    /extensions/<pack dir>/docs/), and the help panel loads them each time it opens."""
    referenced = set()
    for node_id in SCHEMAS:
        for ref in help_pages.image_refs(_page(node_id)):
            assert not re.match(r"^(?:/|[a-z]+:)", ref), f"{node_id}.md: use a relative picture path, not {ref}"
            path = DOCS_DIR / ref
            assert path.is_file(), f"{node_id}.md shows {ref}, which is not in web/docs/"
            assert path.stat().st_size <= make_help_images.MAX_BYTES
            referenced.add(path.name)
    assert referenced, "no page shows a picture"
    made = {spec.name for spec in make_help_images.PICTURES}
    assert referenced <= made, "every picture is made by tools/assets/make_help_images.py"
    assert make_help_images.problems() == []


def test_the_pages_that_need_a_picture_have_one() -> None:
    for node_id in ("SpliceTrainGenerator", "SpliceApply", "SpliceDinoCosegmentation"):
        assert help_pages.image_refs(_page(node_id)), f"{node_id}.md shows no picture"


def test_the_checks_catch_a_wrong_page(tmp_path: Path) -> None:
    """The page checks fail on what they are for: a missing input, a GPU time, an unmeasured figure."""
    schema = SCHEMAS["SpliceStructureLoss"]
    page = _page("SpliceStructureLoss")
    missing = page.replace("| **block** |", "| **blocks** |")
    assert table_names(sections(missing)["Inputs"]) != schema.inputs
    assert DURATION.search("- **GPU:** 2000 steps in ~10 s") and GPU.search("on a recent GPU")
    assert not DURATION.search("- **GPU, time:** not measured yet.")
    assert not re.search(r"(?<![\d.])41\.3\s*s/step(?![A-Za-z])", _measured_text())  # made up
