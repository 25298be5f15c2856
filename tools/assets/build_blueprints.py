"""Build the pack's blueprints (``subgraphs/*.json``) from the shipped templates.

    python -m tools.assets.build_blueprints            # rewrite subgraphs/*.json
    python -m tools.assets.build_blueprints --check    # exit 1 if a rebuilt blueprint differs

ComfyUI (0.3.75: ``app/subgraph_manager.py``) serves a pack's ``subgraphs/*.json`` at
``/global_subgraphs``; both frontends list each as a node ``SubgraphBlueprint.<id>`` named after
the file, under "Subgraph Blueprints". A blueprint file is a workflow whose root holds exactly one
node, an instance of the subgraph in ``definitions.subgraphs``; that node's inputs and outputs
are the blueprint's sockets.

The inner nodes are taken from the templates in workflows/, which the real app built and exported
(tools/assets/build_workflows.py): their positional ``widgets_values``, ``properties.models``
(missing weights are offered for download) and pack ids come from there, so the blueprints
change with the templates. Rebuild the templates first, then this.
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tools.assets.workflow_specs import REPO_ROOT, WorkflowSpec, basic_workflow, video_workflow

log = logging.getLogger("build_blueprints")

SUBGRAPHS_DIR = REPO_ROOT / "subgraphs"
CATEGORY = "Splice"
INPUT_NODE, OUTPUT_NODE = -10, -20


@dataclass
class Socket:
    """A blueprint input (to ``node``'s input ``target``) or output (from ``node``'s ``target``)."""

    name: str
    type: str
    node: str  # key of the inner node in the template's spec
    target: str  # the inner node's input (or widget) name, or output name
    widget: bool = False


@dataclass
class BlueprintSpec:
    title: str  # the file name: the node's name in the library
    description: str
    template: WorkflowSpec
    members: list[str]  # keys of the template's nodes that go inside
    inputs: list[Socket]
    outputs: list[Socket]

    @property
    def path(self) -> Path:
        return SUBGRAPHS_DIR / f"{self.title}.json"


COMMON_INPUTS = [
    Socket("appearance", "IMAGE", "train", "appearance"),
    Socket("model", "COMBO", "dino", "model_name", widget=True),
    Socket("steps", "INT", "train", "steps", widget=True),
    Socket("seed", "INT", "train", "seed", widget=True),
]
SPLICE_CORE = ["dino", "structure_loss", "appearance_loss", "train"]

# The widget inputs of the nodes whose widgets become blueprint inputs, in the order the frontend
# gives them slots (after the node's socket inputs): a linked widget input is found by its place
# in that list, so the file lists them all. tests/host/test_blueprints_server.py checks this
# against the server's schemas.
WIDGET_INPUTS: dict[str, list[tuple[str, str]]] = {
    "SpliceLoadDINO": [("model_name", "COMBO"), ("download_if_missing", "BOOLEAN")],
    "SpliceTrainGenerator": [("steps", "INT"), ("learning_rate", "FLOAT"), ("seed", "INT"),
                             ("identity_weight", "FLOAT"), ("full_image_every", "INT"),
                             ("preview_every", "INT"), ("dtype", "COMBO"), ("max_minutes", "FLOAT"),
                             ("autosave_every", "INT"), ("max_megapixels", "FLOAT")],
}


def blueprints() -> list[BlueprintSpec]:
    return [
        BlueprintSpec(
            "Splice - restyle one image",
            "Splice in one node: the structure image restyled with the look of the appearance image "
            "(DINO-ViT losses, one small generator trained on the pair; autosave every 100 steps). "
            "Outputs the image and the trained generator (for Splice Output or Save Splice Generator).",
            basic_workflow(), SPLICE_CORE,
            [Socket("structure", "IMAGE", "train", "structure")] + COMMON_INPUTS,
            [Socket("image", "IMAGE", "train", "result"),
             Socket("generator", "SPLICE_GENERATOR", "train", "generator")]),
        BlueprintSpec(
            "Splice - restyle a video clip",
            "Splice for a video clip in one node: one generator trained on every 4th frame with the "
            "look of the appearance image, applied to every frame; the video keeps its frame rate and "
            "sound. Outputs the video and the trained generator.",
            video_workflow(), ["components", "keyframes"] + SPLICE_CORE + ["apply", "create_video"],
            [Socket("video", "VIDEO", "components", "video")] + COMMON_INPUTS,
            [Socket("video", "VIDEO", "create_video", "VIDEO"),
             Socket("generator", "SPLICE_GENERATOR", "train", "generator")]),
    ]


def _uid(*parts: object) -> str:
    """Stable ids, so a rebuild gives the same file."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, "https://registry.comfy.org/comfy-splice/blueprint/"
                          + "/".join(map(str, parts))))


def build(spec: BlueprintSpec) -> dict[str, Any]:
    """The blueprint file for ``spec``, from the template file the app exported."""
    workflow = json.loads(spec.template.json_path.read_text())
    ids = {key: spec.template.node_id(key) for key in spec.members}
    by_id = {node["id"]: node for node in workflow["nodes"]}
    nodes = {ids[key]: copy.deepcopy(by_id[ids[key]]) for key in spec.members}
    inside = set(nodes)
    links = [{"id": link[0], "origin_id": link[1], "origin_slot": link[2], "target_id": link[3],
              "target_slot": link[4], "type": link[5]}
             for link in workflow["links"] if link[1] in inside and link[3] in inside]
    kept = {link["id"] for link in links}
    for node in nodes.values():  # links to nodes left outside are dropped
        for slot in node.get("inputs", []):
            if slot.get("link") is not None and slot["link"] not in kept:
                slot["link"] = None
        for slot in node.get("outputs", []):
            if slot.get("links"):
                slot["links"] = [i for i in slot["links"] if i in kept] or None
    next_link = max([link[0] for link in workflow["links"]] + [0]) + 1
    inputs, outputs = [], []
    for index, socket in enumerate(spec.inputs):
        node = nodes[ids[socket.node]]
        slots = node.setdefault("inputs", [])
        if socket.widget and not any("widget" in s for s in slots):
            slots.extend({"name": name, "type": kind, "widget": {"name": name}, "link": None}
                         for name, kind in WIDGET_INPUTS[node["type"]])
        names = [s["name"] for s in slots]
        if socket.target not in names:
            raise ValueError(f"{spec.title}: {socket.node} has no input {socket.target}")
        slot = names.index(socket.target)
        slots[slot]["link"] = next_link
        links.append({"id": next_link, "origin_id": INPUT_NODE, "origin_slot": index, "target_id": node["id"],
                      "target_slot": slot, "type": socket.type})
        inputs.append({"id": _uid(spec.title, "in", socket.name), "name": socket.name, "type": socket.type,
                       "linkIds": [next_link], "pos": [-80, 40 + 20 * index]})
        next_link += 1
    for index, socket in enumerate(spec.outputs):
        node = nodes[ids[socket.node]]
        slot = [s["name"] for s in node["outputs"]].index(socket.target)
        node["outputs"][slot]["links"] = (node["outputs"][slot].get("links") or []) + [next_link]
        links.append({"id": next_link, "origin_id": node["id"], "origin_slot": slot, "target_id": OUTPUT_NODE,
                      "target_slot": index, "type": socket.type})
        outputs.append({"id": _uid(spec.title, "out", socket.name), "name": socket.name, "type": socket.type,
                        "linkIds": [next_link], "pos": [2100, 40 + 20 * index]})
        next_link += 1
    xs = [n["pos"][0] for n in nodes.values()]
    ys = [n["pos"][1] for n in nodes.values()]
    right = max(n["pos"][0] + n["size"][0] for n in nodes.values())
    graph_id = _uid(spec.title, "subgraph")
    last_node = max(inside)
    subgraph = {
        "id": graph_id, "version": 1,
        "state": {"lastGroupId": 0, "lastNodeId": last_node, "lastLinkId": next_link - 1, "lastRerouteId": 0},
        "revision": 0, "config": {}, "name": spec.title, "description": spec.description, "category": CATEGORY,
        "inputNode": {"id": INPUT_NODE, "bounding": [min(xs) - 240, min(ys), 140, 40 + 20 * len(inputs)]},
        "outputNode": {"id": OUTPUT_NODE, "bounding": [right + 80, min(ys), 140, 40 + 20 * len(outputs)]},
        "inputs": inputs, "outputs": outputs, "widgets": [],
        "nodes": [nodes[i] for i in sorted(nodes)], "groups": [], "links": links, "extra": {},
    }
    root = {
        "id": last_node + 1, "type": graph_id, "pos": [0, 0], "size": [320, 200], "flags": {}, "order": 0,
        "mode": 0,
        "inputs": [{"name": s.name, "type": s.type, "link": None, **({"widget": {"name": s.name}} if s.widget else {})}
                   for s in spec.inputs],
        "outputs": [{"name": s.name, "type": s.type, "links": []} for s in spec.outputs],
        "properties": {}, "widgets_values": [], "title": spec.title,
    }
    return {"revision": 0, "last_node_id": last_node + 1, "last_link_id": 0, "nodes": [root], "links": [],
            "groups": [], "config": {}, "version": 0.4, "definitions": {"subgraphs": [subgraph]},
            "extra": {"BlueprintDescription": spec.description}}


def text(spec: BlueprintSpec) -> str:
    return json.dumps(build(spec), indent=2) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="compare with the committed files instead")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    problems = 0
    for spec in blueprints():
        fresh = text(spec)
        if args.check:
            if not spec.path.is_file() or spec.path.read_text() != fresh:
                log.error("%s differs from a fresh build", spec.path.name)
                problems += 1
            continue
        SUBGRAPHS_DIR.mkdir(exist_ok=True)
        spec.path.write_text(fresh)
        log.info("wrote %s", spec.path)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
