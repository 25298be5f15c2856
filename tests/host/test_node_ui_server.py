"""What the frontends read from the pack, on the real ComfyUI 0.3.75 server.

- Expert inputs carry ``"advanced": true`` in ``/object_info`` (exactly those; newer frontends
  fold them away in Nodes 2.0), the training, applying and descriptor nodes carry
  ``search_aliases`` (newer frontends' search), and 0.3.75, whose V3 API has neither, still loads
  every node of the pack.
- Results are the nodes' ``ui`` text, kept in the history (and re-sent on cache hits), so the web
  extension can keep them on the node after the run.
- Load DINO-ViT lists only files on disk; ``/splice/dino/files`` says what is there and
  ``/splice/dino/download`` refuses anything but an official name before touching the network.
"""

from __future__ import annotations

from typing import Any

import pytest
import requests

from splice_prompts import TINY, TRAIN, splice_graph
from tools.harness.comfy_server import ComfyServer

PACK_NODES = {
    "SpliceLoadDINO", "SpliceStructureLoss", "SpliceAppearanceLoss", "SpliceTrainGenerator", "SpliceApply",
    "SpliceSaveGenerator", "SpliceLoadGenerator", "SpliceVisualizeStructure", "SpliceMetrics",
    "SpliceSelectKeyframes", "SpliceDinoCosegmentation", "SpliceDinoPartCosegmentation",
    "SpliceDinoCorrespondences", "SpliceDinoFeaturesPCA", "SpliceCropToMask", "SpliceCompositeInMask",
    "SpliceSelectMaterial",
}
DESCRIPTOR_EXPERT = {"block", "facet"}
KMEANS_SALIENCY = {"elbow", "thresh", "votes_percentage", "sample_interval", "low_res_saliency"}
ADVANCED = {
    "SpliceTrainGenerator": {"learning_rate", "identity_weight", "full_image_every", "preview_every", "dtype"},
    "SpliceStructureLoss": {"block"},
    "SpliceAppearanceLoss": {"block"},
    "SpliceVisualizeStructure": {"block"},
    "SpliceMetrics": {"drift_scale"},
    "SpliceDinoCosegmentation": DESCRIPTOR_EXPERT | KMEANS_SALIENCY | {"outliers_thresh"},
    "SpliceDinoPartCosegmentation": DESCRIPTOR_EXPERT | KMEANS_SALIENCY,
    "SpliceDinoCorrespondences": DESCRIPTOR_EXPERT | {"thresh"},
    "SpliceDinoFeaturesPCA": DESCRIPTOR_EXPERT,
    "SpliceSelectMaterial": {"threshold"},
}
ALIASES = {
    "SpliceTrainGenerator": {"style transfer", "restyle", "appearance transfer"},
    "SpliceApply": {"style transfer", "restyle", "appearance transfer"},
    "SpliceDinoCosegmentation": {"segment"},
    "SpliceDinoPartCosegmentation": {"segment"},
    "SpliceDinoCorrespondences": {"match"},
    "SpliceDinoFeaturesPCA": {"segment"},
    "SpliceSelectMaterial": {"material", "segment"},
}


@pytest.fixture(scope="module")
def info(comfy_server: ComfyServer, splice_files: dict[str, str]) -> dict[str, Any]:
    return comfy_server.object_info()


def _inputs(node: dict[str, Any]) -> dict[str, Any]:
    return {name: spec for group in ("required", "optional") for name, spec in node["input"].get(group, {}).items()}


def test_the_pack_loads_on_0_3_75(comfy_server: ComfyServer, info: dict[str, Any]) -> None:
    assert not comfy_server.custom_node_failures()
    assert PACK_NODES <= set(info), PACK_NODES - set(info)


@pytest.mark.parametrize("node", sorted(PACK_NODES))
def test_exactly_the_expert_inputs_are_advanced(info: dict[str, Any], node: str) -> None:
    flagged = {name for name, spec in _inputs(info[node]).items()
               if len(spec) > 1 and isinstance(spec[1], dict) and spec[1].get("advanced") is True}
    assert flagged == ADVANCED.get(node, set())


@pytest.mark.parametrize("node", sorted(PACK_NODES))
def test_search_aliases_are_served_where_artists_search(info: dict[str, Any], node: str) -> None:
    aliases = info[node].get("search_aliases") or []
    assert all(isinstance(a, str) and a for a in aliases)
    wanted = ALIASES.get(node)
    if wanted is None:
        assert not aliases
    else:
        assert wanted <= set(aliases), aliases


def test_results_stay_in_the_history_as_ui_text(comfy_server: ComfyServer, splice_files: dict[str, str]) -> None:
    prompt = splice_graph(splice_files, steps=3, prefix="node_ui/out")
    prompt["9"] = {"class_type": "SpliceSaveGenerator",
                   "inputs": {"generator": [TRAIN, 0], "filename_prefix": "node_ui/generator"}}
    result = comfy_server.run(prompt, timeout=300).raise_for_status()
    (train,) = result.outputs[TRAIN]["text"]
    assert train.startswith("3/3 steps done; last loss "), train
    assert float(train.split("last loss ")[1].split(" ")[0]) > 0
    assert any(text.startswith("step 3/3: loss ") for text in result.texts(TRAIN)), "the live loss is gone"
    (saved,) = result.outputs["9"]["text"]
    assert "node_ui/generator_00001_.safetensors" in saved
    executed = {str(m.data["node"]): m.data["output"] for m in result.of_type("executed")}
    assert executed[TRAIN]["text"] == [train]


def test_load_dino_lists_only_files_on_disk(comfy_server: ComfyServer, info: dict[str, Any]) -> None:
    options = info["SpliceLoadDINO"]["input"]["required"]["model_name"][1]["options"]
    on_disk = sorted(p.name for p in comfy_server.models_dir.iterdir() if p.is_file())
    assert TINY in options
    assert options == on_disk
    answer = requests.get(f"{comfy_server.url}/splice/dino/files", timeout=30).json()
    assert sorted(answer["files"]) == on_disk
    assert "vit_base_patch8_224.dino.safetensors" in answer["downloadable"]
    assert answer["folder"] == str(comfy_server.models_dir)


def test_an_absent_official_file_reaches_the_node_and_names_the_button(
        comfy_server: ComfyServer, splice_files: dict[str, str]) -> None:
    result = comfy_server.run(splice_graph(splice_files, dino="dino_deitsmall16_pretrain.pth"), timeout=120)
    assert result.status == "execution_error", result.terminal
    assert str(result.terminal["node_id"]) == "3"
    assert "Download dino_deitsmall16_pretrain.pth into models/splice_dino" in result.error_message
    assert "download_if_missing" in result.error_message


@pytest.mark.parametrize(("body", "status", "needle"), [
    (b'{"name": "tiny_dino_vit.pth"}', 400, "not an official DINO file"),
    (b'{"name": "../../etc/passwd"}', 400, "not an official DINO file"),
    (b"not json", 400, "not JSON"),
    (b'{"name": "dino_deitsmall16_pretrain.pth", "url": "http://example.com"}', 400,
     "one object with a text 'name'"),
    (b'{"name": 5}', 400, "one object with a text 'name'"),
    (b'{"name": "tiny_dino_vit.pth", "name": "dino_deitsmall16_pretrain.pth"}', 400, "appears twice"),
    (b'{"name": ["dino_deitsmall16_pretrain.pth"]}', 400, "nested 2 levels deep"),
    (b"[" * 5000, 413, "over 1024 bytes"),
    # sent in pieces (chunked, no length declared): read to its end, then refused for its size
    (iter([b'{"name": "', b"x" * 1100, b'"}']), 413, "over 1024 bytes"),
])
def test_the_download_route_refuses_anything_but_an_official_name(comfy_server: ComfyServer, body: Any,
                                                                   status: int, needle: str) -> None:
    before = sorted(p.name for p in comfy_server.models_dir.iterdir())
    response = requests.post(f"{comfy_server.url}/splice/dino/download", data=body, timeout=30)
    assert response.status_code == status, response.text
    assert needle in response.json()["error"]
    assert 'send {"name": ' in response.json()["error"] or "not an official" in response.json()["error"]
    assert sorted(p.name for p in comfy_server.models_dir.iterdir()) == before
