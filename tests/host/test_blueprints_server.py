"""The pack's blueprints (subgraphs/*.json) as ComfyUI serves them: listed by /global_subgraphs
with this pack as their source, each a valid blueprint (one subgraph node at the root whose
definition has the named sockets, every inner link consistent), and what build_blueprints.py
builds from the committed templates."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tools.assets import build_blueprints
from tools.harness.comfy_server import ComfyServer

SPECS = build_blueprints.blueprints()


def _listed(server: ComfyServer) -> dict[str, dict[str, Any]]:
    return {entry["name"]: {"id": key, **entry} for key, entry in server.get_json("/global_subgraphs").items()}


@pytest.mark.parametrize("spec", SPECS, ids=[s.title for s in SPECS])
def test_the_blueprint_is_served_and_valid(comfy_server: ComfyServer, spec: build_blueprints.BlueprintSpec) -> None:
    listed = _listed(comfy_server)
    assert spec.title in listed, sorted(listed)
    entry = listed[spec.title]
    assert entry["source"] == "custom_node"
    assert entry["info"]["node_pack"] == f"custom_nodes.{comfy_server.pack_link.name}"
    served = comfy_server.get_json(f"/global_subgraphs/{entry['id']}")
    blueprint = json.loads(served["data"])
    assert served["data"] == spec.path.read_text() == build_blueprints.text(spec), \
        f"{spec.path.name} is not what build_blueprints.py builds now: rerun it"

    (root,) = blueprint["nodes"]
    (subgraph,) = blueprint["definitions"]["subgraphs"]
    assert root["type"] == subgraph["id"] and blueprint["links"] == []
    names = [s.name for s in spec.inputs], [s.name for s in spec.outputs]
    assert ([s["name"] for s in root["inputs"]], [s["name"] for s in root["outputs"]]) == names
    assert ([s["name"] for s in subgraph["inputs"]], [s["name"] for s in subgraph["outputs"]]) == names
    assert names[1][-1] == "generator" and names[0][:1] in (["structure"], ["video"])
    assert blueprint["extra"]["BlueprintDescription"] == subgraph["description"]

    object_info = comfy_server.object_info()
    inner = {node["id"]: node for node in subgraph["nodes"]}
    assert all(node["type"] in object_info for node in inner.values())
    for link in subgraph["links"]:  # each end names the link back
        if link["target_id"] == build_blueprints.OUTPUT_NODE:
            assert link["id"] in subgraph["outputs"][link["target_slot"]]["linkIds"]
        else:
            assert inner[link["target_id"]]["inputs"][link["target_slot"]]["link"] == link["id"]
        if link["origin_id"] == build_blueprints.INPUT_NODE:
            assert link["id"] in subgraph["inputs"][link["origin_slot"]]["linkIds"]
        else:
            assert link["id"] in inner[link["origin_id"]]["outputs"][link["origin_slot"]]["links"]


def test_the_widget_order_matches_the_schemas(comfy_server: ComfyServer) -> None:
    """Linked widget inputs are found by their place among a node's widgets: the builder's list
    must be the schema's widget order (every input that is not a socket, and the seed's control
    is no input)."""
    info = comfy_server.object_info()
    sockets = {"IMAGE", "MASK", "SPLICE_LOSS", "SPLICE_GENERATOR", "SPLICE_DINO"}
    for node_type, widgets in build_blueprints.WIDGET_INPUTS.items():
        schema = info[node_type]
        order = [name for section in ("required", "optional") for name in schema["input_order"].get(section, [])]
        kinds = {name: spec[0] for section in ("required", "optional")
                 for name, spec in schema["input"].get(section, {}).items()}
        expected = [(name, "COMBO" if isinstance(kinds[name], list) or kinds[name] == "COMBO" else kinds[name])
                    for name in order if not (isinstance(kinds[name], str) and kinds[name] in sockets)]
        assert widgets == expected, node_type
