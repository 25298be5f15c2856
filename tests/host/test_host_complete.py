"""The host that `make run` starts (and the tests use) is a whole ComfyUI, not one with core
nodes missing: its own requirements are installed, every core module imports, and the template
browser lists core's templates beside this pack's."""

from __future__ import annotations

import json
import re
from importlib import metadata

from packaging.requirements import Requirement

from tools import provision
from tools.harness.comfy_server import REPO_ROOT, ComfyServer

# What ComfyUI logs when a module or a dependency is missing (nodes.py, app/database/db.py,
# the "torchaudio missing, ... will be broken" warnings of comfy/ldm) or its database fails.
FAILURE = re.compile(r"IMPORT FAILED|did not import correctly|Cannot import .* module|"
                     r"Error importing dependencies|missing, .* will be broken|"
                     r"Failed to initialize database")
# Core nodes that artists chain with Splice, each from a module that needs one of ComfyUI's
# optional requirements (spandrel, kornia, torchaudio).
CORE_NODES = {"UpscaleModelLoader": "spandrel", "Canny": "kornia", "Morphology": "kornia",
              "LoadAudio": "torchaudio", "AudioEncoderLoader": "torchaudio"}


def test_venv_satisfies_comfyui_requirements() -> None:
    """Every line of the ComfyUI's own requirements.txt is installed, at a version it allows."""
    comfyui = provision.ensure_comfyui()
    problems = []
    for line in (comfyui / "requirements.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        requirement = Requirement(line)
        try:
            installed = metadata.version(requirement.name)
        except metadata.PackageNotFoundError:
            problems.append(f"{requirement} is not installed")
            continue
        if not requirement.specifier.contains(installed, prereleases=True):
            problems.append(f"{requirement}: {installed} is installed")
    assert not problems, f"tests/requirements.txt is behind {comfyui / 'requirements.txt'}: {problems}"


def test_server_log_has_no_import_failure(comfy_server: ComfyServer) -> None:
    failures = [line for line in comfy_server.log_text().splitlines() if FAILURE.search(line)]
    assert not failures, "ComfyUI could not import part of itself:\n" + "\n".join(failures)


def test_core_nodes_that_need_optional_requirements_are_listed(comfy_server: ComfyServer) -> None:
    info = comfy_server.object_info()
    missing = {node: package for node, package in CORE_NODES.items() if node not in info}
    assert not missing, f"core nodes missing from /object_info (and the package they need): {missing}"
    assert info["Canny"]["python_module"].startswith("comfy_extras")


def test_template_browser_lists_core_and_pack_templates(comfy_server: ComfyServer) -> None:
    """The frontend's two sources: /templates/index.json (core, from comfyui-workflow-templates)
    and /api/workflow_templates (custom nodes' example folders)."""
    core = comfy_server.get_json("/templates/index.json")
    core_names = [t["name"] for category in core for t in category["templates"]]
    assert len(core_names) >= 20, f"only {len(core_names)} core templates"
    first = comfy_server.http.get(f"{comfy_server.url}/templates/{core_names[0]}.json", timeout=30)
    assert first.status_code == 200 and "nodes" in first.json()

    packs = comfy_server.get_json("/api/workflow_templates")
    shipped = sorted(p.stem for p in (REPO_ROOT / "workflows").glob("*.json"))
    assert sorted(packs.get(provision.PACK_LINK_NAME, [])) == shipped
    served = comfy_server.http.get(
        f"{comfy_server.url}/api/workflow_templates/{provision.PACK_LINK_NAME}/{shipped[0]}.json", timeout=30)
    assert served.status_code == 200
    assert served.json() == json.loads((REPO_ROOT / "workflows" / f"{shipped[0]}.json").read_text())
