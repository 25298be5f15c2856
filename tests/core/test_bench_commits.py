"""bench/bench_commits.py on the CPU with the tiny ViT: it checks an earlier commit out into a
temporary worktree, runs both steps alternating and prints every field; nothing here looks at
how long anything took."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from bench import bench_commits

REPO = Path(__file__).resolve().parents[2]


def _worktrees() -> str:
    return subprocess.run(["git", "worktree", "list"], cwd=REPO, capture_output=True, text=True,
                          check=True).stdout


def test_the_commit_comparison_runs_and_prints_its_fields(capsys: pytest.CaptureFixture[str]) -> None:
    if subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True).returncode != 0:
        pytest.skip("not a git checkout: there is no earlier commit to check out")
    before = _worktrees()
    ratio = bench_commits.compare(bench_commits._parse_args(
        ["--against", "HEAD", "--model", "tiny", "--size", "64", "--rounds", "2",
         "--steps-per-round", "1", "--threads", "1"]))
    out = capsys.readouterr().out
    assert ratio > 0
    assert "current (working tree): generator backward mode plain" in out  # RAM here fits PLAIN
    assert re.search(r"against \([0-9a-f]+\): generator backward mode plain", out)
    for index, first in ((1, "current"), (2, "against")):
        assert re.search(rf"round {index} \({first} first\): current [0-9.]+ s/step, against [0-9.]+ "
                         r"s/step, ratio [0-9.]+ \(CPU s/step [0-9.]+ / [0-9.]+\); load", out), out
    assert re.search(r"median over 2 rounds: .* ratio current/against [0-9.]+", out)
    assert _worktrees() == before  # the temporary worktree is gone
