"""Load Materialistic (Splice) inside ComfyUI's real modules: a checkpoint in the authors' layout
from the materialistic model folder loads; a file that is not one gives the readable message."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from comfy_in_process import Comfy
from comfy_splice.materialistic.fixtures import save_checkpoint, tiny_net
from comfy_splice.materialistic.net import authors_state_dict


@pytest.fixture(scope="module")
def folder(comfy: Comfy, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A materialistic folder holding a tiny authors'-layout .ckpt and a wrong .pth."""
    root = tmp_path_factory.mktemp("materialistic")
    comfy.folder_paths.add_model_folder_path("materialistic", str(root), is_default=True)
    net = tiny_net(seed=5)
    save_checkpoint(net, root / "tiny.ckpt", "lightning")
    state = {f"module.{k}": v for k, v in authors_state_dict(net).items() if k != "out_conv.6.bias"}
    state["module.surprise"] = torch.zeros(1)
    torch.save(state, root / "wrong.pth")
    comfy.folder_paths.filename_list_cache.clear()
    return root


def test_the_node_lists_and_loads_a_checkpoint(comfy: Comfy, folder: Path) -> None:
    schema = comfy.nodes["SpliceLoadMaterialistic"].GET_NODE_INFO_V1()
    assert {"tiny.ckpt", "wrong.pth"} <= set(schema["input"]["required"]["model_name"][1]["options"])
    handle: Any = comfy.run("SpliceLoadMaterialistic", model_name="tiny.ckpt")[0]
    assert handle.file_name == "tiny.ckpt" and handle.path == str(folder / "tiny.ckpt")
    with torch.inference_mode():
        scores = handle.model.score(torch.randn(1, 3, 32, 48), torch.tensor([[4, 40]]))
    assert scores.shape == (1, 1, 32, 48) and 0 <= float(scores.min()) <= float(scores.max()) <= 1


def test_a_wrong_file_gets_one_readable_message(comfy: Comfy, folder: Path) -> None:
    with pytest.raises(ValueError) as error:
        comfy.run("SpliceLoadMaterialistic", model_name="wrong.pth")
    message = str(error.value)
    assert message.startswith("wrong.pth is not a usable Materialistic checkpoint: 1 unexpected")
    assert "1 missing, e.g. 'out_conv.6.bias'" in message and "models/materialistic/" in message
    assert "bug" not in message
    with pytest.raises(ValueError, match="'absent.ckpt' is not in any materialistic folder"):
        comfy.run("SpliceLoadMaterialistic", model_name="absent.ckpt")
