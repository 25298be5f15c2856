"""bench/gpu_report.py on the CPU with --tiny: every section is measured, written to JSON and to
a Markdown table with a row per measured item, so the GPU day's command cannot rot unnoticed.

Nothing here looks at how long anything took: timings are only checked to be numbers.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
import torch

from bench import gpu_report


@pytest.fixture(scope="module")
def tiny_report(tmp_path_factory: pytest.TempPathFactory) -> tuple[int, dict[str, Any], str]:
    """One run of the command the test asks for: its exit status, JSON and Markdown."""
    out = tmp_path_factory.mktemp("gpu_report")
    status = gpu_report.main(["--device", "cpu", "--tiny", "--out-dir", str(out)])
    data = json.loads((out / "gpu_report.json").read_text(encoding="utf-8"))
    return status, data, (out / "gpu_report.md").read_text(encoding="utf-8")


def _table_items(markdown: str) -> set[str]:
    """First cells of the Markdown tables' body rows."""
    items = set()
    for line in markdown.splitlines():
        if line.startswith("| ") and not line.startswith("| item |"):
            items.add(line[2:].split(" | ", 1)[0])
    return items


def test_every_section_is_measured_without_failure(tiny_report: tuple[int, dict[str, Any], str]) -> None:
    status, data, _ = tiny_report
    failures = [(name, row["item"], row.get("error")) for name, section in data["sections"].items()
                for row in section["rows"] if row["status"] != "ok"]
    assert failures == []
    assert status == 0
    assert list(data["sections"]) == list(gpu_report.SECTIONS)
    assert {name: s["status"] for name, s in data["sections"].items()} == dict.fromkeys(gpu_report.SECTIONS, "ok")
    assert data["tiny"] is True and data["device"] == "cpu"


def test_sections_cover_every_configuration(tiny_report: tuple[int, dict[str, Any], str]) -> None:
    _, data, _ = tiny_report
    rows = {name: section["rows"] for name, section in data["sections"].items()}
    profile = gpu_report.TINY
    training = {(r["model"], r["size"], r["dtype"]) for r in rows["training"]}
    assert training == {(m, s, d) for m, s, _ in profile.training for d in profile.dtypes}
    assert {(r["model"], r["size"], r["dtype"], r["kind"]) for r in rows["memory"]} == {
        t + (kind,) for t in training for kind in ("regular", "full")}
    for row in rows["training"]:
        assert row["steps_2000_estimated_from"] == 2 * profile.timed_pairs
        assert all(math.isfinite(v) for v in (row["regular_s"], row["full_s"], row["steps_2000_s"]))
    assert {r["autocast"] for r in rows["training"] if r["dtype"] == "bf16"} == {str(torch.bfloat16)}
    assert {r["autocast"] for r in rows["training"] if r["dtype"] == "fp32"} == {"None"}
    assert all(r["estimate_bytes"] > 0 for r in rows["memory"])
    assert {(r["size"], r["mode"]) for r in rows["apply"]} == {
        (label, mode) for label, _ in profile.apply_sizes for mode in ("whole", "streamed")}
    assert all(r["fps"] > 0 for r in rows["apply"])
    assert {(r["step"], r["variant"]) for r in rows["precision"]} == {(0, "bf16-fp32keys"), (0, "bf16")}
    for row in rows["precision"]:
        assert set(row["terms"]) == {"structure", "appearance", "identity", "full_structure", "full_appearance"}
        assert -1.0 <= row["min_grad_cosine"] <= 1.0 + 1e-9
    assert [r["images"] for r in rows["cosegment"]] == [8]
    assert rows["environment"][0]["torch"] == torch.__version__


def test_markdown_has_a_row_per_item_and_names_device_and_torch(
        tiny_report: tuple[int, dict[str, Any], str]) -> None:
    _, data, markdown = tiny_report
    items = {row["item"] for section in data["sections"].values() for row in section["rows"]}
    assert len(items) == sum(len(s["rows"]) for s in data["sections"].values())  # items are unique
    assert _table_items(markdown) == items
    assert f"torch {torch.__version__}" in markdown
    assert gpu_report.device_name("cpu") in markdown
    assert "random-init DINO weights" in markdown
    assert "estimated from 2 measured steps" in markdown


def test_a_failing_item_is_recorded_and_the_next_one_still_runs() -> None:
    report = gpu_report.Report(device="cpu", deadline=float("inf"))
    ran = []

    def broken() -> None:
        raise RuntimeError("CUDA out of memory (simulated)")

    report.guard(("training", "memory"), "broken item", broken)
    report.guard("apply", "next item", lambda: ran.append(True))
    report.add("apply", {"item": "next item", "status": "ok"})
    report.finish()
    assert ran == [True]
    for name in ("training", "memory"):
        (row,) = report.sections[name]["rows"]
        assert row["status"] == "failed" and "CUDA out of memory (simulated)" in row["error"]
        assert report.sections[name]["status"] == "failed"
    assert report.sections["apply"]["status"] == "ok"


def test_past_the_budget_every_item_is_skipped_with_a_note(tmp_path: Path) -> None:
    status = gpu_report.main(["--device", "cpu", "--tiny", "--out-dir", str(tmp_path), "--budget-s", "0"])
    data = json.loads((tmp_path / "gpu_report.json").read_text(encoding="utf-8"))
    assert status == 0
    for name in gpu_report.SECTIONS[1:]:
        rows = data["sections"][name]["rows"]
        assert rows and {r["status"] for r in rows} == {"skipped"}
        assert all("--budget-s" in r["note"] for r in rows)
    markdown = (tmp_path / "gpu_report.md").read_text(encoding="utf-8")
    assert markdown.count("skipped: not started") == sum(
        len(data["sections"][name]["rows"]) for name in gpu_report.SECTIONS[1:])
