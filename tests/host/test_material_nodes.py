"""Select Material (Splice) in a real ComfyUI server (tiny random ViT, training-free mode).

The picture is tiles of two textures, each texture a 4-pixel pattern repeated: the node scores at
a 512-pixel short side, so the 128x192 picture is scaled by exactly 4 and each texture period
becomes one 16-pixel patch of the tiny ViT (see tests/core/test_material_select.py for why the
random ViT then separates them). The query mask is painted as a grey PNG loaded by core's
*Load Image (as Mask)*; the mask output comes back through *Convert Mask to Image* and SaveImage.

With the network: *Load Materialistic* loads a tiny random network that the test writes in the
authors' Lightning layout into the server's ``models/materialistic`` folder, and its output feeds
*Select Material*'s ``materialistic`` input; the mask (in the picture, and clicked in another
picture through ``query_image``) must be the core's selection with the same weights.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from tools.harness.comfy_client import RunResult
from tools.harness.comfy_server import ComfyServer

TINY = "tiny_dino_vit.pth"
ROWS, COLS, PERIOD = 16, 24, 4
TILE = 2 * PERIOD
HEIGHT, WIDTH = ROWS * TILE, COLS * TILE  # 128 x 192
ODD = (131, 77)  # PIL (width, height)
SELECT, MASK_SAVE, HEAT_SAVE = "4", "6", "7"


def _tiles() -> tuple[Image.Image, np.ndarray]:
    rng = np.random.default_rng(0)
    a, b = rng.random((PERIOD, PERIOD, 3)), rng.random((PERIOD, PERIOD, 3))
    layout = rng.random((ROWS, COLS)) > 0.5
    layout[0, 0], layout[-1, -1] = True, False
    truth = np.kron(layout, np.ones((TILE, TILE), bool)).astype(bool)
    pixels = np.where(truth[..., None], np.tile(a, (2 * ROWS, 2 * COLS, 1)), np.tile(b, (2 * ROWS, 2 * COLS, 1)))
    return Image.fromarray((pixels * 255).round().astype(np.uint8)), truth


def _dot(size: tuple[int, int], at: tuple[int, int] | None) -> Image.Image:
    mask = np.zeros((size[1], size[0]), np.uint8)
    if at is not None:
        mask[at[1] - 1:at[1] + 2, at[0] - 1:at[0] + 2] = 255
    return Image.fromarray(mask, mode="L")


def _interior(margin: int = 2) -> np.ndarray:
    """Pixels at least half a working-size patch (2 px here) from any tile edge."""
    rows, cols = np.arange(HEIGHT) % TILE, np.arange(WIDTH) % TILE
    return (((rows >= margin) & (rows < TILE - margin))[:, None]
            & ((cols >= margin) & (cols < TILE - margin))[None, :])


@pytest.fixture(scope="module")
def files(comfy_server: ComfyServer, tiny_dino_file: Path) -> dict[str, str]:
    shutil.copy(tiny_dino_file, comfy_server.models_dir / TINY)
    picture, _ = _tiles()
    odd = Image.fromarray(np.random.default_rng(1).integers(0, 255, (ODD[1], ODD[0], 3), dtype=np.uint8))
    return {"tiles": comfy_server.upload_image(picture, name="material_tiles.png"),
            "odd": comfy_server.upload_image(odd, name="material_odd.png"),
            "dot": comfy_server.upload_image(_dot((WIDTH, HEIGHT), (4, 4)), name="material_dot.png"),
            "wrong": comfy_server.upload_image(_dot(ODD, (4, 4)), name="material_wrong.png"),
            "empty": comfy_server.upload_image(_dot((WIDTH, HEIGHT), None), name="material_empty.png")}


def _graph(files: dict[str, str], image: str = "tiles", mask: str | None = "dot", **select: Any) -> dict[str, Any]:
    inputs: dict[str, Any] = {"dino": ["3", 0], "image": ["1", 0], "x": 0, "y": 0, "threshold": 0.5, **select}
    prompt: dict[str, Any] = {
        "1": {"class_type": "LoadImage", "inputs": {"image": files[image]}},
        "3": {"class_type": "SpliceLoadDINO", "inputs": {"model_name": TINY, "download_if_missing": False}},
        SELECT: {"class_type": "SpliceSelectMaterial", "inputs": inputs},
        "5": {"class_type": "MaskToImage", "inputs": {"mask": [SELECT, 0]}},
        MASK_SAVE: {"class_type": "SaveImage", "inputs": {"images": ["5", 0], "filename_prefix": "material/mask"}},
        HEAT_SAVE: {"class_type": "SaveImage", "inputs": {"images": [SELECT, 1], "filename_prefix": "material/heat"}},
    }
    if mask is not None:
        prompt["2"] = {"class_type": "LoadImageMask", "inputs": {"image": files[mask], "channel": "red"}}
        inputs["query_mask"] = ["2", 0]
    return prompt


def _saved(server: ComfyServer, result: RunResult, node: str) -> np.ndarray:
    (entry,) = result.output_images(node)
    return np.asarray(server.view_image(entry["filename"], entry["subfolder"], entry["type"]).convert("RGB"))


def test_schema(comfy_server: ComfyServer) -> None:
    info = comfy_server.object_info()["SpliceSelectMaterial"]
    assert info["input_order"]["required"] == ["dino", "image", "x", "y", "threshold"]
    assert info["input_order"]["optional"] == ["query_mask", "query_image", "materialistic"]
    assert info["input"]["optional"]["materialistic"][0] == "SPLICE_MATERIALISTIC"
    assert info["output"] == ["MASK", "IMAGE"]


def test_the_node_selects_the_painted_texture_at_the_images_size(comfy_server: ComfyServer,
                                                                files: dict[str, str]) -> None:
    result = comfy_server.run(_graph(files), timeout=300).raise_for_status()
    mask = _saved(comfy_server, result, MASK_SAVE)[..., 0]
    assert mask.shape == (HEIGHT, WIDTH)
    _, truth = _tiles()
    inner = _interior()
    assert np.array_equal(mask[inner] > 127, truth[inner])
    heat = _saved(comfy_server, result, HEAT_SAVE)
    assert heat.shape == (HEIGHT, WIDTH, 3)
    assert heat[truth & inner].mean() > heat[~truth & inner].mean() + 100  # bright on the material
    (text,) = result.outputs[SELECT]["text"]
    assert text.startswith("training-free (DINO descriptors, not the paper's model): ")


def test_odd_sizes_with_an_x_y_click(comfy_server: ComfyServer, files: dict[str, str]) -> None:
    result = comfy_server.run(_graph(files, image="odd", mask=None, x=ODD[0] - 1, y=ODD[1] - 1),
                              timeout=300).raise_for_status()
    mask = _saved(comfy_server, result, MASK_SAVE)[..., 0]
    assert mask.shape == (ODD[1], ODD[0])
    assert mask[-1, -1] > 127  # the clicked pixel is its own material


@pytest.mark.parametrize("case", ["wrong size", "empty", "outside"])
def test_a_bad_query_gets_the_readable_message(comfy_server: ComfyServer, files: dict[str, str],
                                               case: str) -> None:
    graphs = {
        "wrong size": (_graph(files, mask="wrong"),
                       f"query_mask: the mask is {ODD[0]}x{ODD[1]} but the image it is clicked on is "
                       f"{WIDTH}x{HEIGHT}. Paint the query on that same image"),
        "empty": (_graph(files, mask="empty"), "query_mask: the mask is empty (no pixel above 0.5): nothing "
                                               "is clicked."),
        "outside": (_graph(files, mask=None, x=WIDTH, y=3),
                    f"the click x={WIDTH}, y=3 is outside the {WIDTH}x{HEIGHT} image it is clicked on"),
    }
    prompt, expected = graphs[case]
    result = comfy_server.run(prompt, timeout=300)
    assert result.status == "execution_error", result.terminal
    assert str(result.terminal["node_id"]) == SELECT
    # the core's refusal (a ValueError), shown unchanged
    assert str(result.terminal.get("exception_type")).endswith("material_select.MaterialQueryError")
    assert result.error_message.startswith(expected), result.error_message
    assert "\n" not in result.error_message.strip()
    assert comfy_server.system_stats()["system"]  # still serving


# -- with the network: Load Materialistic -> Select Material's `materialistic` input -------------

NET_SEED = 3
NET_FILE = "tiny_materialistic.ckpt"
PICTURE_A, PICTURE_B = (131, 77), (96, 120)  # PIL (width, height): odd sizes, two shapes


def _pictures() -> tuple[Image.Image, Image.Image]:
    rng = np.random.default_rng(7)
    a = Image.fromarray(rng.integers(0, 255, (PICTURE_A[1], PICTURE_A[0], 3), dtype=np.uint8))
    b = Image.fromarray(rng.integers(0, 255, (PICTURE_B[1], PICTURE_B[0], 3), dtype=np.uint8))
    return a, b


@pytest.fixture(scope="module")
def network(comfy_server: ComfyServer, files: dict[str, str]) -> dict[str, str]:
    """A tiny random network in the authors' Lightning layout, written where the server looks for
    Materialistic checkpoints (``models/materialistic`` under its base directory), and two
    pictures of other sizes."""
    from comfy_splice.materialistic.fixtures import save_checkpoint, tiny_net

    save_checkpoint(tiny_net(seed=NET_SEED), comfy_server.base_dir / "models" / "materialistic" / NET_FILE)
    a, b = _pictures()
    return {"a": comfy_server.upload_image(a, name="material_net_a.png"),
            "b": comfy_server.upload_image(b, name="material_net_b.png")}


def _network_graph(files: dict[str, str], network: dict[str, str], x: int, y: int,
                   query_image: str | None = None) -> dict[str, Any]:
    prompt = _graph({**files, **network}, image="a", mask=None, x=x, y=y)
    prompt["8"] = {"class_type": "SpliceLoadMaterialistic", "inputs": {"model_name": NET_FILE}}
    prompt[SELECT]["inputs"]["materialistic"] = ["8", 0]
    if query_image is not None:
        prompt["9"] = {"class_type": "LoadImage", "inputs": {"image": network[query_image]}}
        prompt[SELECT]["inputs"]["query_image"] = ["9", 0]
    return prompt


def _expected_mask(x: int, y: int, cross: bool) -> np.ndarray:
    """The same selection computed here with the core and the same random network, as the saved
    PNG holds it (SaveImage truncates 255 * value)."""
    import torch

    from comfy_splice.material_select import select_material
    from comfy_splice.materialistic.fixtures import tiny_net

    def tensor(img: Image.Image) -> torch.Tensor:
        return torch.from_numpy(np.asarray(img).copy()).permute(2, 0, 1)[None].float() / 255

    a, b = _pictures()
    with torch.inference_mode():
        selection = select_material(tensor(a), torch.device("cpu"), model=tiny_net(seed=NET_SEED), x=x, y=y,
                                    query_images=tensor(b) if cross else None, threshold=0.5)
    return (selection.mask[0].clamp(0, 1) * 255).numpy().astype(np.uint8)


def test_the_network_from_load_materialistic_gives_a_mask_at_the_images_size(
        comfy_server: ComfyServer, files: dict[str, str], network: dict[str, str]) -> None:
    assert NET_FILE in comfy_server.object_info()["SpliceLoadMaterialistic"]["input"]["required"]["model_name"][1][
        "options"]
    x, y = PICTURE_A[0] - 1, 5
    result = comfy_server.run(_network_graph(files, network, x, y), timeout=300).raise_for_status()
    mask = _saved(comfy_server, result, MASK_SAVE)[..., 0]
    assert mask.shape == (PICTURE_A[1], PICTURE_A[0])
    # The random network's scores mean nothing (the clicked pixel need not score above 0.5); the
    # server's mask must be the core's selection with the same weights, clicked at x, y.
    expected = _expected_mask(x, y, cross=False)
    assert np.abs(mask.astype(int) - expected).max() <= 1
    assert expected.min() < expected.max(), "the test needs a mask that is not flat"
    (text,) = result.outputs[SELECT]["text"]
    assert text.startswith("Materialistic network: ")
    heat = _saved(comfy_server, result, HEAT_SAVE)
    assert heat.shape == (PICTURE_A[1], PICTURE_A[0], 3)


def test_the_network_selects_in_another_image_than_the_click(comfy_server: ComfyServer, files: dict[str, str],
                                                            network: dict[str, str]) -> None:
    """Clicked in B (``query_image``, another size), selected in A: the mask has A's size and is
    the core's cross-image selection with the same network."""
    x, y = PICTURE_B[0] - 1, PICTURE_B[1] - 1  # a click inside B that would be outside A
    assert y >= PICTURE_A[1]
    result = comfy_server.run(_network_graph(files, network, x, y, query_image="b"),
                              timeout=300).raise_for_status()
    mask = _saved(comfy_server, result, MASK_SAVE)[..., 0]
    assert mask.shape == (PICTURE_A[1], PICTURE_A[0])
    expected = _expected_mask(x, y, cross=True)
    assert np.abs(mask.astype(int) - expected).max() <= 1
    assert not np.array_equal(expected, _expected_mask(PICTURE_A[0] - 1, 5, cross=False))
