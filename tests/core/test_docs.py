"""README.md and docs/*.md stay true to the repository: every module is in the layout, every link
leads somewhere, the artist part stays short, and no GPU time is stated as if it were measured.

The documentation is the first thing an artist or a new maintainer reads; a link to a moved file
or a module missing from docs/layout.md is found here rather than by them.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
README = REPO_ROOT / "README.md"
DOCS_DIR = REPO_ROOT / "docs"
LAYOUT = DOCS_DIR / "layout.md"
CODE_FOLDERS = ("comfy_splice", "nodes", "tools", "bench")
ARTIST_PART_MAX_LINES = 150
"""Issue 18: everything an artist needs fits in about 150 lines, before the developer set-up."""

# [text](target) and ![alt](target); the target ends at the first space or ")".
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
GPU = re.compile(r"\b(?:GPU|GPUs|CUDA|H100|H200|A100|RTX)\b")
DURATION = re.compile(r"\d(?:[\d.,]*\d)?\s*(?:ms|s|sec|seconds?|min|minutes?|h|hours?)\b")
NOT_A_MEASUREMENT = ("not measured", "not yet measured", "goal", "estimate")


def _markdown_files() -> list[Path]:
    return [README, *sorted(DOCS_DIR.glob("*.md"))]


def _python_modules() -> list[str]:
    return sorted(path.relative_to(REPO_ROOT).as_posix() for folder in CODE_FOLDERS
                  for path in (REPO_ROOT / folder).rglob("*.py") if "__pycache__" not in path.parts)


def _without_code_blocks(text: str) -> str:
    """Fenced code is shown as it is; a "link" inside it is no link."""
    return re.sub(r"^```.*?^```", "", text, flags=re.DOTALL | re.MULTILINE)


def github_anchor(heading: str) -> str:
    """The anchor GitHub gives a Markdown heading: lower case, punctuation dropped (hyphens and
    underscores kept), spaces as hyphens."""
    text = re.sub(r"[`*]", "", heading.strip().lower())
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    text = _without_code_blocks(path.read_text(encoding="utf-8"))
    return {github_anchor(match) for match in re.findall(r"^#{1,6}\s+(.+?)\s*$", text, flags=re.MULTILINE)}


def broken_links(path: Path, root: Path = REPO_ROOT) -> list[str]:
    """The relative links of ``path`` whose file (or heading anchor in a Markdown file) is not
    there, or is outside ``root`` (README names only files inside the repository)."""
    problems = []
    for target in LINK.findall(_without_code_blocks(path.read_text(encoding="utf-8"))):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target, flags=re.IGNORECASE):
            continue  # https:, mailto: ... are not files of the repository
        file_part, _, anchor = target.partition("#")
        resolved = (path.parent / file_part).resolve() if file_part else path
        if not resolved.exists():
            problems.append(f"{target} (no such file)")
        elif anchor and resolved.suffix == ".md" and anchor not in anchors(resolved):
            problems.append(f"{target} (no heading with that anchor)")
        elif not resolved.is_relative_to(root.resolve()):
            problems.append(f"{target} (outside the repository)")
    return problems


def test_the_checks_see_the_modules_and_the_pages() -> None:
    """The lists below are not empty by mistake: they see known modules and pages."""
    modules = _python_modules()
    assert "comfy_splice/dino/vit.py" in modules and "tools/harness/comfy_page.py" in modules
    assert "nodes/train.py" in modules and "bench/bench_train.py" in modules
    assert {p.name for p in _markdown_files()} >= {"README.md", "layout.md", "memory.md", "speed.md"}


@pytest.mark.parametrize("module", _python_modules())
def test_layout_names_every_module(module: str) -> None:
    assert f"`{module}`" in LAYOUT.read_text(encoding="utf-8"), \
        f"{module} is not in docs/layout.md: add a line saying what it holds"


@pytest.mark.parametrize("page", _markdown_files(), ids=lambda p: p.relative_to(REPO_ROOT).as_posix())
def test_every_relative_link_leads_to_a_file_of_the_repository(page: Path) -> None:
    assert broken_links(page) == []


def test_the_link_check_catches_a_broken_link(tmp_path: Path) -> None:
    (tmp_path / "other.md").write_text("# A heading: with `code`\n", encoding="utf-8")
    page = tmp_path / "page.md"
    page.write_text("[ok](other.md#a-heading-with-code) [web](https://example.org/x) "
                    "[gone](missing.md) [bad anchor](other.md#nope)\n```\n[in code](nowhere.md)\n```\n",
                    encoding="utf-8")
    assert broken_links(page, tmp_path) == ["missing.md (no such file)", "other.md#nope (no heading with that anchor)"]
    assert broken_links(page, tmp_path / "elsewhere")[0] == "other.md#a-heading-with-code (outside the repository)"


def test_the_artist_part_of_the_readme_comes_first_and_is_short() -> None:
    lines = README.read_text(encoding="utf-8").splitlines()
    headings = [line for line in lines if line.startswith("## ")]
    assert "## Developer set-up" in headings, "README keeps the developer set-up, after the artist part"
    artist_part = lines.index("## Developer set-up")
    assert artist_part <= ARTIST_PART_MAX_LINES, f"the artist part is {artist_part} lines"
    assert headings.index("## Developer set-up") > headings.index("## Report a problem")
    artist_text = "\n".join(lines[:artist_part])
    for needed in ("workflows/input/splice_structure_village.png", "workflows/input/splice_appearance_winter.png",
                   "ComfyUI-Manager", "requirements.txt", "splice_dino", "Splice - restyle one image", "not measured"):
        assert needed in artist_text, f"README's artist part no longer mentions {needed!r}"


@pytest.mark.parametrize("page", _markdown_files(), ids=lambda p: p.relative_to(REPO_ROOT).as_posix())
def test_no_gpu_time_is_stated_as_measured(page: Path) -> None:
    """No GPU time has been measured: a line that gives a time beside a GPU must say that it is
    a goal, an estimate or not measured (the "~10 s on a recent GPU" the templates once said).
    Read sentence by sentence: a sentence may wrap over lines."""
    for sentence in gpu_times_stated_as_measured(page.read_text(encoding="utf-8")):
        pytest.fail(f"{page.name} states a GPU time, which has not been measured: {sentence!r}")


def gpu_times_stated_as_measured(text: str) -> list[str]:
    """The sentences of ``text`` that give a time beside a GPU without calling it a goal, an
    estimate or not measured."""
    flowing = re.sub(r"\s+", " ", text)
    return [sentence for sentence in re.split(r"(?<=[.!?])\s+(?=[A-Z0-9*`(~])", flowing)
            if GPU.search(sentence) and DURATION.search(sentence)
            and not any(word in sentence.lower() for word in NOT_A_MEASUREMENT)]


def test_the_gpu_time_check_catches_a_claim() -> None:
    assert gpu_times_stated_as_measured("Fast. 2000 steps take ~10 s on a recent\nGPU. Slow.") == \
        ["2000 steps take ~10 s on a recent GPU."]
    assert gpu_times_stated_as_measured("On an H100 the goal is 20 s. CUDA: not measured, 5 s.") == []
