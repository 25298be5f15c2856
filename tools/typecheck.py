"""The type gate `make test` runs: mypy over the method, the nodes, the tools and the benchmarks.

Run it from the repository root with the venv's python: ``python -m tools.typecheck`` (extra
arguments go to mypy). Settings are in pyproject.toml ([tool.mypy]).

Why a wrapper and not plain ``mypy``: the repository root is itself the ComfyUI pack (it holds an
``__init__.py``) and the nodes import the method relatively (``from ..comfy_splice import``), so
mypy must see ``nodes`` inside a package; the root folder's own name (``comfy-splice``, a worktree
name) is no valid package name. A link with a valid name, kept in mypy's git-ignored cache folder,
stands in for the root; ``comfy_splice``, ``tools`` and ``bench`` are checked from the root as
the tests and ``python -m`` import them.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
# The package name the link gives the pack; pyproject.toml's mypy overrides use it.
PACK_NAME = "comfy_splice_pack"
TOP_LEVEL = ["comfy_splice", "tools", "bench"]
IN_PACK = ["__init__.py", "nodes"]


def pack_link() -> Path:
    """``.mypy_cache/pack/comfy_splice_pack``, a link to the repository root (made once)."""
    link = REPO_ROOT / ".mypy_cache" / "pack" / PACK_NAME
    if not link.is_symlink():
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(REPO_ROOT, link.parent), target_is_directory=True)
    return link


def main(argv: list[str]) -> int:
    link = pack_link().relative_to(REPO_ROOT)
    files = TOP_LEVEL + [str(link / name) for name in IN_PACK]
    command = [sys.executable, "-m", "mypy", *argv, *files]
    return subprocess.call(command, cwd=REPO_ROOT)


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
