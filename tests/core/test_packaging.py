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


REGISTRY_ACCELERATORS = {"GPU :: NVIDIA CUDA", "GPU :: AMD ROCm", "GPU :: Intel Arc", "NPU :: Huawei Ascend",
                         "GPU :: Apple Metal"}
"""The accelerator classifiers the Comfy Registry reads (comfy-cli's config parser); any other
``Environment ::`` value makes it drop the accelerator list altogether."""


def test_classifiers_are_ones_the_registry_reads() -> None:
    classifiers = _pyproject()["project"]["classifiers"]
    accelerators = {c.removeprefix("Environment :: ") for c in classifiers if c.startswith("Environment ::")}
    assert accelerators and accelerators <= REGISTRY_ACCELERATORS, accelerators
    assert "Operating System :: OS Independent" in classifiers


def _ignore_patterns() -> list[str]:
    lines = (REPO_ROOT / ".comfyignore").read_text(encoding="utf-8").splitlines()
    return [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]


def _ignored(path: str, patterns: list[str]) -> bool:
    """gitwildmatch for the forms .comfyignore uses: ``/dir/`` and ``/file`` (anchored at the root),
    ``dir/`` (a folder of that name anywhere) and ``*.ext``."""
    parts = path.split("/")
    for pattern in patterns:
        if pattern.startswith("/") and pattern.endswith("/"):
            hit = path.startswith(pattern[1:])
        elif pattern.startswith("/"):
            hit = path == pattern[1:]
        elif pattern.endswith("/"):
            hit = pattern[:-1] in parts[:-1]
        else:
            hit = path.endswith(pattern[1:])
        if hit:
            return True
    return False


def test_comfyignore_uses_only_the_forms_this_test_understands() -> None:
    for pattern in _ignore_patterns():
        assert re.fullmatch(r"/[\w.\-/]+|[\w.\-]+/|\*\.\w+", pattern) and "!" not in pattern, pattern


def test_published_package_holds_the_pack_and_leaves_out_tests_and_tooling() -> None:
    """What ``comfy node pack`` would publish, read from the repository's own files (the
    archive is git-tracked files minus .comfyignore): the node and its documentation, without
    tests, benchmarks, tooling or CI."""
    patterns = _ignore_patterns()
    files = [p.relative_to(REPO_ROOT).as_posix() for p in REPO_ROOT.rglob("*")
             if p.is_file() and ".git" not in p.relative_to(REPO_ROOT).parts[:1]]
    published = {f for f in files if not _ignored(f, patterns)}
    for kept in ("__init__.py", "requirements.txt", "pyproject.toml", "LICENSE", "README.md", "web/splice.js",
                 "web/docs/SpliceTrainGenerator.md", "comfy_splice/dino/vit.py", "nodes/train.py",
                 "docs/layout.md", "workflows/input/splice_structure_village.png"):
        assert kept in published, f"{kept} would be left out of the published node"
    assert any(f.startswith("workflows/") and f.endswith(".json") for f in published)
    roots = {f.split("/")[0] for f in published}
    assert roots <= {"__init__.py", "requirements.txt", "pyproject.toml", "LICENSE", "README.md", "comfy_splice",
                     "nodes", "web", "workflows", "subgraphs", "docs"}, roots
    for left_out in ("tests/conftest.py", "bench/bench_train.py", "tools/provision.py", ".ci/run", "Makefile",
                     "artifacts/x.png", "nodes/__pycache__/train.cpython-312.pyc"):
        assert _ignored(left_out, patterns), f"{left_out} would be published"
