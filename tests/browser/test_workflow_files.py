"""The shipped workflow files, checked against the real server's node schemas (no browser).

The most important check is positional: UI-format ``widgets_values`` carry no names, so a
widget added in the middle, or two widgets swapped, silently shifts every later value. Here the
widget list of each node is rebuilt from ``/object_info`` (inputs in ``input_order``, the hidden
``control_after_generate`` right after an INT seed, the upload button after an upload combo)
and every value is checked by *name* against what build_workflows.py meant to set.
"""

from __future__ import annotations

import io
import json
import re
import tomllib
from typing import Any

import requests
from PIL import Image

from tools.assets import build_workflows as bw
from tools.assets import make_examples
from tools.harness.comfy_server import ComfyServer

FRONTEND_ONLY = {"MarkdownNote", "Note"}
CONTROL_VALUES = {"fixed", "increment", "decrement", "randomize"}
# Combos whose options are the user's own files; a shipped workflow names the file the user
# is told to get (models entry / the note), which need not be on the test server.
FILE_COMBOS = {
    ("CheckpointLoaderSimple", "ckpt_name"): bw.SD15_CHECKPOINT["name"],
    ("ControlNetLoader", "control_net_name"): bw.TILE_CONTROLNET["name"],
    ("SpliceLoadGenerator", "generator_name"): bw.GENERATOR_FILE,
}
WIDGET_TYPES = {"INT", "FLOAT", "STRING", "BOOLEAN"}


def schema_widgets(info: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    """(name, kind, options) of a node's widgets in the order the frontend creates them."""
    widgets: list[tuple[str, str, dict[str, Any]]] = []
    order = info.get("input_order") or {s: list(info["input"].get(s, {})) for s in ("required", "optional")}
    for section in ("required", "optional"):
        for name in order.get(section, []):
            spec = info["input"][section][name]
            kind, opts = spec[0], (spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {})
            if isinstance(kind, list):
                widgets.append((name, "COMBO", {**opts, "options": kind}))
            elif kind == "COMBO":
                widgets.append((name, "COMBO", opts))
            elif kind in WIDGET_TYPES and not opts.get("forceInput"):
                widgets.append((name, kind, opts))
            else:
                continue  # a socket, not a widget
            if kind == "INT" and (opts.get("control_after_generate") or name in ("seed", "noise_seed")):
                widgets.append(("control_after_generate", "CONTROL", {}))
            if any(key.endswith("_upload") and value for key, value in opts.items()):
                widgets.append(("upload", "UPLOAD", {}))
    return widgets


def check_value(node_type: str, name: str, kind: str, opts: dict[str, Any], value: Any) -> str | None:
    """Why `value` does not fit the widget, or None."""
    if kind == "INT":
        if not isinstance(value, int) or isinstance(value, bool):
            return f"{value!r} is not an int"
    elif kind == "FLOAT":
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            return f"{value!r} is not a number"
    elif kind == "BOOLEAN":
        if not isinstance(value, bool):
            return f"{value!r} is not a boolean"
    elif kind in ("STRING", "UPLOAD"):
        if not isinstance(value, str):
            return f"{value!r} is not a string"
    elif kind == "CONTROL":
        if value != "fixed":
            return f"control_after_generate is {value!r}; shipped workflows use 'fixed' (reproducible)"
    elif kind == "COMBO":
        options = opts.get("options") or []
        if (node_type, name) in FILE_COMBOS:
            if value != FILE_COMBOS[(node_type, name)]:
                return f"{value!r} is not the documented file {FILE_COMBOS[(node_type, name)]!r}"
        elif value not in options:
            return f"{value!r} is not one of {options[:12]}"
    if kind in ("INT", "FLOAT"):
        if "min" in opts and value < opts["min"]:
            return f"{value} < min {opts['min']}"
        if "max" in opts and value > opts["max"]:
            return f"{value} > max {opts['max']}"
    return None


def nodes_by_id(workflow: dict[str, Any]) -> dict[int, dict[str, Any]]:
    return {int(n["id"]): n for n in workflow["nodes"]}


def test_widgets_values_follow_the_node_schemas(spec: bw.WorkflowSpec, workflow: dict[str, Any],
                                                 object_info: dict[str, Any]) -> None:
    problems = []
    for node_spec in spec.nodes:
        node = nodes_by_id(workflow)[spec.node_id(node_spec.key)]
        if node["type"] in FRONTEND_ONLY:
            continue
        assert node["type"] in object_info, f"{node['type']} is not a node type of this server"
        widgets = schema_widgets(object_info[node["type"]])
        values = node.get("widgets_values", [])
        label = f"{node['type']} #{node['id']} ({node_spec.key})"
        if len(values) != len(widgets):
            problems.append(f"{label}: {len(values)} widgets_values for widgets {[w[0] for w in widgets]}: {values}")
            continue
        for (name, kind, opts), value in zip(widgets, values):
            why = check_value(node["type"], name, kind, opts, value)
            if why:
                problems.append(f"{label}.{name}: {why}")
            if name in node_spec.widgets and node_spec.widgets[name] != value:
                problems.append(f"{label}.{name}: the file has {value!r} where {node_spec.widgets[name]!r} was set "
                                f"(widget order changed?)")
        missing = set(node_spec.widgets) - {w[0] for w in widgets}
        if missing:
            problems.append(f"{label}: the schema has no widget(s) {sorted(missing)}")
    assert not problems, "\n".join(problems)


def test_shipped_defaults_are_the_papers(spec: bw.WorkflowSpec, workflow: dict[str, Any],
                                        object_info: dict[str, Any]) -> None:
    """ViT-B/8 (the hub's safetensors, or the official file name), 2000 steps, a fixed seed."""
    def values_of(node_type: str) -> list[dict[str, Any]]:
        names = [w[0] for w in schema_widgets(object_info[node_type])]
        return [dict(zip(names, n["widgets_values"])) for n in workflow["nodes"] if n["type"] == node_type]

    trains, dinos = values_of("SpliceTrainGenerator"), values_of("SpliceLoadDINO")
    assert len(trains) == 1 and len(dinos) == 1
    assert trains[0]["steps"] == 2000 and trains[0]["control_after_generate"] == "fixed"
    dino_spec = next(n for n in spec.nodes if n.type == "SpliceLoadDINO")
    assert dinos[0] == {"model_name": dino_spec.models[0]["name"], "download_if_missing": False}
    assert dinos[0]["model_name"] in ("vit_base_patch8_224.dino.safetensors", "dino_vitbase8_pretrain.pth")


def test_graph_matches_its_description(spec: bw.WorkflowSpec, workflow: dict[str, Any]) -> None:
    """Node ids, types, titles, modes and every link are the ones build_workflows describes."""
    nodes = nodes_by_id(workflow)
    assert len(nodes) == len(spec.nodes) == workflow["last_node_id"]
    for node_spec in spec.nodes:
        node = nodes[spec.node_id(node_spec.key)]
        assert node["type"] == node_spec.type
        assert node.get("title", node_spec.title) == node_spec.title
        assert node["mode"] == node_spec.mode
    links = set()
    for link_id, origin, origin_slot, target, target_slot, link_type in workflow["links"]:
        out = nodes[origin]["outputs"][origin_slot]
        inp = nodes[target]["inputs"][target_slot]
        assert link_id in out["links"] and inp["link"] == link_id, f"link {link_id} is not wired on both ends"
        assert link_type == out["type"]
        links.add((origin, out["name"], target, inp["name"]))
    wanted = {(spec.node_id(a), o, spec.node_id(b), i) for a, o, b, i in spec.links}
    assert links == wanted
    titles = [g["title"] for g in workflow["groups"]]
    assert titles == [g.title for g in spec.groups]


def _version(text: str) -> tuple[int, ...]:
    assert re.fullmatch(r"\d+\.\d+\.\d+", text), f"{text!r} is not a semantic version"
    return tuple(int(part) for part in text.split("."))


def test_nodes_carry_manager_metadata(workflow: dict[str, Any], browser_server: ComfyServer) -> None:
    """cnr_id/ver as ComfyUI-Manager writes them, so it can find this pack (and core's version).
    ``ver`` records the version a workflow was saved with, so it may be older than today's."""
    project = tomllib.loads((bw.REPO_ROOT / "pyproject.toml").read_text())["project"]
    comfyui_version = browser_server.system_stats()["system"]["comfyui_version"]
    for node in workflow["nodes"]:
        props = node["properties"]
        if node["type"] in FRONTEND_ONLY:
            continue
        # The frontend adds it to every node but the image savers (its own special case).
        assert props.get("Node name for S&R", node["type"]) == node["type"]
        if node["type"].startswith("Splice"):
            assert props["Node name for S&R"] == node["type"]
            assert props["cnr_id"] == project["name"], node["type"]
            assert _version(props["ver"]) <= _version(project["version"]), node["type"]
        else:
            assert props["cnr_id"] == "comfy-core", node["type"]
            assert _version(props["ver"]) <= _version(comfyui_version), node["type"]
        assert "aux_id" not in props


def test_loaders_name_their_model_files(spec: bw.WorkflowSpec, workflow: dict[str, Any]) -> None:
    """properties.models {name, url, directory} on each loader, matching the selected file (the
    frontend only offers entries whose name is a widget value)."""
    dino_model = next(n for n in spec.nodes if n.type == "SpliceLoadDINO").models[0]
    assert dino_model in (bw.DINO_MODEL, bw.DINO_MODEL_PTH)
    expected = {"SpliceLoadDINO": dino_model, "CheckpointLoaderSimple": bw.SD15_CHECKPOINT,
                "ControlNetLoader": bw.TILE_CONTROLNET}
    seen = set()
    for node in workflow["nodes"]:
        model = expected.get(node["type"])
        if model is None:
            assert "models" not in node["properties"], node["type"]
            continue
        assert node["properties"]["models"] == [model]
        assert model["name"] in node["widgets_values"]
        assert model["url"].startswith("https://")
        # The hub serves every model as model.safetensors; other hosts use the file's own name.
        hub_file = model["url"].startswith("https://huggingface.co/timm/") and model["url"].endswith(
            "/resolve/main/model.safetensors")
        assert hub_file or model["url"].split("?")[0].endswith(model["name"])
        seen.add(node["type"])
    assert "SpliceLoadDINO" in seen
    assert ("CheckpointLoaderSimple" in seen) == spec.needs_checkpoint
    assert bw.DINO_MODEL == {
        "name": "vit_base_patch8_224.dino.safetensors",
        "url": "https://huggingface.co/timm/vit_base_patch8_224.dino/resolve/main/model.safetensors",
        "directory": "splice_dino"}


def test_inputs_are_the_projects_own_examples(workflow: dict[str, Any]) -> None:
    used = {n["widgets_values"][0] for n in workflow["nodes"] if n["type"] in ("LoadImage", "LoadVideo")}
    assert used and used <= set(make_examples.ALL_FILES)
    for name in used:
        assert (bw.WORKFLOWS_DIR / "input" / name).is_file()


def test_example_folder_holds_only_generated_files() -> None:
    """workflows/input/ has exactly the files make_examples.py draws, and the PNGs are what it
    draws now (so their CC0 statement in workflows/README.md is true)."""
    present = sorted(p.name for p in (bw.WORKFLOWS_DIR / "input").iterdir())
    assert present == sorted(make_examples.ALL_FILES)
    assert make_examples.check() == []
    readme = (bw.WORKFLOWS_DIR / "README.md").read_text()
    assert "CC0" in readme and "make_examples.py" in readme
    with open(bw.WORKFLOWS_DIR / "input" / make_examples.VIDEO, "rb") as handle:
        import av

        with av.open(handle) as container:
            frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    assert len(frames) == make_examples.VIDEO_FRAMES
    assert frames[0].shape == (make_examples.VIDEO_SIZE[1], make_examples.VIDEO_SIZE[0], 3)


def test_workflows_folder_holds_only_templates() -> None:
    """ComfyUI lists every workflows/*.json as a template: only the shipped ones may be there,
    each with its same-named .jpg thumbnail."""
    names = sorted(p.stem for p in bw.WORKFLOWS_DIR.glob("*.json"))
    assert names == sorted(s.title for s in bw.WORKFLOWS)
    for name in names:
        with Image.open(bw.WORKFLOWS_DIR / f"{name}.jpg") as thumb:
            assert thumb.format == "JPEG" and thumb.size == bw.THUMBNAIL_SIZE


def test_server_offers_them_as_templates(browser_server: ComfyServer) -> None:
    """The real routes the template browser uses: the list, the JSON and the thumbnail."""
    listing = browser_server.get_json("/workflow_templates")
    assert sorted(listing.get("comfy-splice", [])) == sorted(s.title for s in bw.WORKFLOWS)
    for spec in bw.WORKFLOWS:
        base = f"{browser_server.url}/api/workflow_templates/comfy-splice/{spec.title}"
        served = requests.get(base + ".json", timeout=30)
        assert served.status_code == 200 and served.json() == json.loads(spec.json_path.read_text())
        thumb = requests.get(base + ".jpg", timeout=30)
        assert thumb.status_code == 200
        with Image.open(io.BytesIO(thumb.content)) as img:
            assert img.format == "JPEG"


def test_files_are_saved_as_the_ui_saves_them(workflow: dict[str, Any], spec: bw.WorkflowSpec) -> None:
    """The shape of the app's own export (schema version 0.4, frontend version, view state), and
    2-space JSON with a final newline, as Export writes it."""
    assert workflow["version"] == 0.4
    assert workflow["id"] != "00000000-0000-0000-0000-000000000000"
    assert set(workflow) >= {"id", "revision", "last_node_id", "last_link_id", "nodes", "links", "groups",
                             "config", "extra"}
    assert workflow["extra"]["frontendVersion"]
    assert set(workflow["extra"]["ds"]) == {"scale", "offset"}
    text = spec.json_path.read_text()
    assert text == json.dumps(workflow, indent=2, ensure_ascii=False) + "\n"
