"""What the Comfy Registry reads from pyproject.toml agrees with the repository and the code.

``comfy node validate`` (PyPI's comfy-cli) is the registry's own check; it is not a test
dependency. These checks cover what it cannot see: the files the metadata names exist, and the
models it lists are the loader's table (one definition, in comfy_splice/dino/models.py).
"""

from __future__ import annotations

import ast
import re
import tomllib
from pathlib import Path

from PIL import Image

from comfy_splice.dino.models import DINO_MODELS

REPO_ROOT = Path(__file__).resolve().parents[2]


def _pyproject() -> dict:
    return tomllib.loads((REPO_ROOT / "pyproject.toml").read_text(encoding="utf-8"))


def test_license_and_icon_are_files_of_the_repository() -> None:
    project, comfy = _pyproject()["project"], _pyproject()["tool"]["comfy"]
    license_file = REPO_ROOT / project["license"]["file"]
    assert license_file.read_text(encoding="utf-8").startswith("MIT License")
    with Image.open(REPO_ROOT / comfy["Icon"]) as icon:
        assert icon.format == "PNG" and icon.size[0] == icon.size[1] <= 512


def test_listed_models_are_the_loaders_table() -> None:
    listed = {(m["location"], m["model_url"]) for m in _pyproject()["tool"]["comfy"]["Models"]}
    assert listed == {(f"/splice_dino/{m.hf_file_name}", m.hf_url) for m in DINO_MODELS.values()}


def test_web_directory_is_declared_once() -> None:
    """ComfyUI serves the pack's web/ from ``WEB_DIRECTORY``; a ``[tool.comfy] web`` entry as well
    would register it a second time under the project's name and load the extension twice."""
    assert "web" not in _pyproject()["tool"]["comfy"]
    tree = ast.parse((REPO_ROOT / "__init__.py").read_text(encoding="utf-8"))
    values = [node.value.value for node in tree.body if isinstance(node, ast.Assign)
              and any(getattr(t, "id", None) == "WEB_DIRECTORY" for t in node.targets)]
    assert values == ["./web"] and (REPO_ROOT / "web" / "splice.js").is_file()


def test_web_extension_ids_share_the_packs_name() -> None:
    """Every extension the pack's web/ registers is named ``<project name>.<Feature>``: one
    spelling of the prefix, so the ids (which the frontend keeps settings and errors under) read
    as one pack's, and no two collide."""
    prefix = _pyproject()["project"]["name"] + "."
    names = [name for script in sorted((REPO_ROOT / "web").glob("*.js"))
             for name in re.findall(r"registerExtension\(\{\s*name:\s*\"([^\"]+)\"", script.read_text("utf-8"))]
    assert len(names) == len(list((REPO_ROOT / "web").glob("*.js"))) >= 2  # one per script, all found
    assert len(set(names)) == len(names)
    assert all(name.startswith(prefix) and re.fullmatch(r"[A-Z][A-Za-z]+", name[len(prefix):])
               for name in names), names
