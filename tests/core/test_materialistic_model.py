"""The Materialistic network equals the authors' equations, and their checkpoint layouts load safely.

The reference below is written from the authors' code (prafull7/materialistic,
``src/models/transformer.py``) directly onto their tensor names, one image and one head at a
time, with the ViT run through timm's own blocks: it shares nothing with the module under test
but the weights.
"""

from __future__ import annotations

import math
import os
import re
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor

from comfy_splice.materialistic.fixtures import save_checkpoint, tiny_backbone, tiny_net
from comfy_splice.materialistic.net import (HeadShape, MaterialisticNet, authors_state_dict,
                                            estimate_bytes, key_table)
from comfy_splice.materialistic.weights import MaterialisticWeightsError, load_materialistic
from comfy_splice.measure import TensorPeakTracker
from comfy_splice.refusal import SpliceRefusal

TOL = 2e-5


@pytest.fixture(scope="module")
def net() -> MaterialisticNet:
    return tiny_net(seed=3)


def _images(batch: int, height: int, width: int, seed: int) -> Tensor:
    return torch.randn(batch, 3, height, width, generator=torch.Generator().manual_seed(seed))


# -- the reference ------------------------------------------------------------------------------


def _vit_tokens(sd: dict[str, Tensor], vit: torch.nn.Module, image: Tensor) -> dict[int, Tensor]:
    """Block outputs [1 + T, C] of one image: timm's patch embedding and blocks, DINO's position
    rule (native table for a square input of the native grid, else bicubic with (n + 0.1) / side)."""
    x = vit.patch_embed.proj(image[None])
    rows, cols = x.shape[-2:]
    x = x.flatten(2).transpose(1, 2)
    pos = sd["dino_model.pos_embed"]
    side = int(math.sqrt(pos.shape[1] - 1))
    if not (rows * cols == side * side and image.shape[-1] == image.shape[-2]):
        grid = pos[:, 1:].reshape(1, side, side, -1).permute(0, 3, 1, 2)
        grid = F.interpolate(grid, scale_factor=((rows + 0.1) / side, (cols + 0.1) / side), mode="bicubic")
        pos = torch.cat([pos[:, :1], grid.permute(0, 2, 3, 1).reshape(1, rows * cols, -1)], 1)
    x = torch.cat([sd["dino_model.cls_token"], x], 1) + pos
    out = {}
    for index, block in enumerate(vit.blocks):
        x = block(x)
        out[index] = x[0]
    return out


def _layer_norm(x: Tensor, weight: Tensor, bias: Tensor) -> Tensor:
    mean = x.mean(-1, keepdim=True)
    var = ((x - mean) ** 2).mean(-1, keepdim=True)
    return (x - mean) / torch.sqrt(var + 1e-5) * weight + bias


def _lin(sd: dict[str, Tensor], name: str, x: Tensor) -> Tensor:
    return x @ sd[f"{name}.weight"].T + sd[f"{name}.bias"]


def _maps(sd: dict[str, Tensor], vit: torch.nn.Module, image: Tensor) -> list[Tensor]:
    """The four normalised level maps [h, w, C] of one image."""
    tokens = _vit_tokens(sd, vit, image)
    rows, cols = image.shape[-2] // 8, image.shape[-1] // 8
    maps = []
    for i, (block, up) in enumerate(zip((2, 5, 8, 11), (4, 2, 1, 1)), start=1):
        t = tokens[block]
        local = t[1:]
        read = _lin(sd, f"spatial_transform_{i}.0.project.0", torch.cat([local, t[:1].expand_as(local)], 1))
        grid = read.reshape(rows, cols, -1)
        conv = sd[f"spatial_transform_{i}.2.weight"][:, :, 0, 0]
        m = torch.einsum("hwc,oc->ohw", grid, conv) + sd[f"spatial_transform_{i}.2.bias"][:, None, None]
        if up > 1:
            m = F.interpolate(m[None], scale_factor=up, mode="bilinear", align_corners=True)[0]
        ln = f"cross_attention_{i}.LayerNorm"
        maps.append(_layer_norm(m.permute(1, 2, 0), sd[f"{ln}.weight"], sd[f"{ln}.bias"]))
    return maps


def _reference_vectors(sd: dict[str, Tensor], maps: list[Tensor], click: tuple[int, int]) -> list[Tensor]:
    out = []
    for i, (m, stride) in enumerate(zip(maps, (2, 4, 8, 8)), start=1):
        row, col = click
        cell_r, cell_c = row // stride, col // stride
        half = (stride - 1) / 2
        local = torch.tensor([(row - (cell_r * stride + half)) / (half + 1e-4),
                              (col - (cell_c * stride + half)) / (half + 1e-4)])
        mlp = f"cross_attention_{i}.get_reference_embedding.reference_feature_extractor"
        hidden = torch.relu(_lin(sd, f"{mlp}.0", torch.cat([m[cell_r, cell_c], local])))
        out.append(_lin(sd, f"{mlp}.2", hidden))
    return out


def _unit(sd: dict[str, Tensor], name: str, x: Tensor) -> Tensor:
    y = F.conv2d(torch.relu(x)[None], sd[f"{name}.conv1.weight"], sd[f"{name}.conv1.bias"], padding=1)
    y = F.conv2d(torch.relu(y), sd[f"{name}.conv2.weight"], None, padding=1)
    return y[0] + x


def reference_scores(sd: dict[str, Tensor], vit: torch.nn.Module, image: Tensor, click: tuple[int, int],
                     query: Tensor | None = None, heads: int = 16) -> Tensor:
    """[H, W] scores of one image for one (row, col) click (in ``query`` when given)."""
    maps = _maps(sd, vit, image)
    refs = _reference_vectors(sd, maps if query is None else _maps(sd, vit, query), click)
    selected = []
    for i, (m, ref) in enumerate(zip(maps, refs), start=1):
        ca = f"cross_attention_{i}"
        q, k, v = _lin(sd, f"{ca}.query", ref), _lin(sd, f"{ca}.key", m), _lin(sd, f"{ca}.value", m)
        width = q.shape[0]
        size = width // heads
        out = torch.zeros_like(v)
        for head in range(heads):
            part = slice(head * size, (head + 1) * size)
            weight = torch.sigmoid((k[..., part] @ q[part]) * size ** -0.5)  # [h, w]
            out[..., part] = weight[..., None] * v[..., part]
        out = _layer_norm(_lin(sd, f"{ca}.out", out), sd[f"{ca}.out_norm.weight"], sd[f"{ca}.out_norm.bias"])
        selected.append(out.permute(2, 0, 1))
    path = None
    for i in (4, 3, 2, 1):
        x = selected[i - 1]
        if path is not None:
            x = x + _unit(sd, f"fusion_{i}.resConfUnit1", path)
        x = _unit(sd, f"fusion_{i}.resConfUnit2", x)
        if i != 4:
            x = F.interpolate(x[None], scale_factor=2, mode="bilinear", align_corners=True)[0]
        path = F.conv2d(x[None], sd[f"fusion_{i}.out_conv.weight"], sd[f"fusion_{i}.out_conv.bias"])[0]
    assert path is not None
    h = path.permute(1, 2, 0)
    for index in (0, 2, 4):
        h = torch.relu(_lin(sd, f"out_conv.{index}", h))
    return torch.sigmoid(_lin(sd, "out_conv.6", h)[..., 0])


# -- the network equals the reference ---------------------------------------------------------------


@pytest.mark.parametrize("size", [(64, 64), (48, 80)])
def test_scores_equal_the_reference_one_image_per_click(net: MaterialisticNet, size: tuple[int, int]) -> None:
    """Square (the authors' own reshapes) and non-square (this pack's token grids), two images
    with their own clicks in a batch, clicks in different cells and sub-cell offsets."""
    images = _images(2, *size, seed=1)
    clicks = torch.tensor([[3, 5], [size[0] - 1, size[1] - 10]])
    scores = net.score(images, clicks)
    assert scores.shape == (2, 1, *size)
    sd = authors_state_dict(net)
    for b in range(2):
        expected = reference_scores(sd, net.backbone.vit, images[b], tuple(clicks[b].tolist()))
        torch.testing.assert_close(scores[b, 0], expected, atol=TOL, rtol=0)
    # the two images and clicks give different maps: the batch is not one image repeated
    assert (scores[0] - scores[1]).abs().max() > 1e-2


def test_cross_image_scores_equal_the_reference(net: MaterialisticNet) -> None:
    """The click is in the query image (another size); the selection is made in the target."""
    target, query = _images(1, 48, 80, seed=2), _images(1, 64, 64, seed=3)
    click = (40, 9)
    scores = net.score(target, torch.tensor([click]), query=query)
    expected = reference_scores(authors_state_dict(net), net.backbone.vit, target[0], click, query=query[0])
    torch.testing.assert_close(scores[0, 0], expected, atol=TOL, rtol=0)
    alone = net.score(target, torch.tensor([click]))
    assert (alone - scores).abs().max() > 1e-2  # the query's embedding was used, not the target's


def test_one_query_image_serves_every_target(net: MaterialisticNet) -> None:
    targets, query = _images(2, 48, 48, seed=4), _images(1, 64, 48, seed=5)
    clicks = torch.tensor([[10, 10], [60, 40]])
    both = net.score(targets, clicks, query=query)
    for b in range(2):
        alone = net.score(targets[b:b + 1], clicks[b:b + 1], query=query)
        torch.testing.assert_close(both[b], alone[0], atol=1e-6, rtol=0)


def test_several_clicks_are_the_union_with_one_vit_pass(net: MaterialisticNet,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """[B, K, 2] clicks: the maximum of the single clicks' scores, in or across images, with the
    ViT run once per image set (target, and query when given), not once per click."""
    target, query = _images(1, 48, 64, seed=8), _images(1, 40, 56, seed=9)
    clicks = torch.tensor([[[5, 7], [40, 60], [20, 3]]])
    passes: list[int] = []
    real = net.backbone.descriptors

    def counted(*args: object, **kwargs: object) -> object:
        passes.append(1)
        return real(*args, **kwargs)  # type: ignore[arg-type]

    for q, size in ((None, (48, 64)), (query, (40, 56))):
        inside = clicks.clamp(max=torch.tensor([size[0] - 1, size[1] - 1]))
        monkeypatch.setattr(net.backbone, "descriptors", counted)
        passes.clear()
        union = net.score(target, inside, query=q)
        assert len(passes) == (1 if q is None else 2)
        monkeypatch.setattr(net.backbone, "descriptors", real)
        singles = [net.score(target, inside[:, k], query=q) for k in range(inside.shape[1])]
        torch.testing.assert_close(union, torch.stack(singles).amax(dim=0), atol=1e-6, rtol=0)


def test_row_col_convention(net: MaterialisticNet) -> None:
    """A click is (row, col): on a transposed image, the transposed click gives the transposed
    scores' reference (checked through the reference, which indexes [row, col] explicitly)."""
    image = _images(1, 48, 80, seed=6)
    scores = net.score(image, torch.tensor([[44, 3]]))
    sd = authors_state_dict(net)
    assert torch.allclose(scores[0, 0], reference_scores(sd, net.backbone.vit, image[0], (44, 3)), atol=TOL)
    assert not torch.allclose(scores[0, 0], reference_scores(sd, net.backbone.vit, image[0], (3, 44)), atol=1e-3)


def test_same_inputs_same_scores(net: MaterialisticNet) -> None:
    image = _images(1, 40, 56, seed=7)
    click = torch.tensor([[20, 30]])
    assert torch.equal(net.score(image, click), net.score(image, click))


@pytest.mark.parametrize("bad, message", [
    (dict(target=_images(1, 50, 64, 0)), "not a multiple of the ViT's 8px patch"),
    (dict(clicks=torch.tensor([[64, 0]])), "outside the 64x64 query image"),
    (dict(clicks=torch.tensor([[0, -1]])), "outside"),
    (dict(clicks=torch.tensor([[1.0, 2.0]])), "integer"),
    (dict(clicks=torch.tensor([[1, 2], [3, 4]])), "one per image"),
    (dict(query=_images(2, 64, 64, 0), target=_images(3, 64, 64, 0),
          clicks=torch.zeros(3, 2, dtype=torch.long)), "give one query image or one per target"),
])
def test_bad_inputs_are_refused(net: MaterialisticNet, bad: dict[str, Tensor], message: str) -> None:
    inputs = dict(target=_images(1, 64, 64, 0), clicks=torch.tensor([[1, 1]]), query=None)
    inputs.update(bad)
    with pytest.raises(ValueError, match=message):
        net.score(**inputs)


# -- the key table ---------------------------------------------------------------------------------


def test_key_table_is_the_authors_layout() -> None:
    """The authors' Transformer has 128 head tensors; a few spelled out from their code."""
    table = {theirs: size for theirs, _, size in key_table(HeadShape())}
    assert len(table) == 128
    assert table["spatial_transform_1.0.project.0.weight"] == (768, 1536)
    assert table["spatial_transform_2.2.weight"] == (256, 768, 1, 1)
    assert table["cross_attention_3.get_reference_embedding.reference_feature_extractor.0.weight"] == (512, 258)
    assert table["cross_attention_4.out_norm.bias"] == (256,)
    assert table["fusion_4.resConfUnit1.conv2.weight"] == (256, 256, 3, 3)
    assert "fusion_1.resConfUnit1.conv2.bias" not in table  # their conv2 has no bias
    assert table["fusion_2.layer_norm_1.weight"] == (256,)
    assert table["out_conv.6.weight"] == (1, 128)


def test_every_module_tensor_has_one_authors_name() -> None:
    net = MaterialisticNet(tiny_backbone(), HeadShape(vit_width=64))
    ours = {k: tuple(v.shape) for k, v in net.head_state_dict().items()}
    mapped = {mine: size for _, mine, size in key_table(net.shape) if mine is not None}
    assert ours == mapped


# -- memory ------------------------------------------------------------------------------------------


def test_memory_estimate_covers_the_measured_peak() -> None:
    """The authors' head width (256) on the tiny ViT: the head dominates, as on ViT-B/8."""
    model = MaterialisticNet(tiny_backbone(), HeadShape(vit_width=64)).eval()
    image, click = _images(1, 96, 128, seed=8), torch.tensor([[5, 5]])
    tracker = TensorPeakTracker()
    with tracker:
        model.score(image, click)
    need = estimate_bytes(96, 128, 1, shape=model.shape, vit_heads=1)
    assert tracker.peak <= need <= 4 * tracker.peak, (tracker.peak, need)
    assert estimate_bytes(96, 128, 2, shape=model.shape) == 2 * estimate_bytes(96, 128, 1, shape=model.shape)
    assert model.estimate_bytes(96, 128) > need  # the weights on top


# -- checkpoints ------------------------------------------------------------------------------------


@pytest.mark.parametrize("layout, name", [("lightning", "materialistic.ckpt"), ("dataparallel", "model.pth"),
                                          ("plain", "plain.safetensors")])
def test_checkpoint_layouts_load_and_give_the_same_scores(net: MaterialisticNet, tmp_path: Path,
                                                           layout: str, name: str) -> None:
    path = save_checkpoint(net, tmp_path / name, layout)  # type: ignore[arg-type]
    loaded = load_materialistic(path)
    image, click = _images(1, 48, 64, seed=9), torch.tensor([[30, 50]])
    assert torch.equal(loaded.score(image, click), net.score(image, click))
    assert loaded.backbone.source == str(path)


def test_lightning_file_with_plain_extras_loads_through_weights_only(net: MaterialisticNet,
                                                                     tmp_path: Path) -> None:
    path = tmp_path / "plain_extras.ckpt"
    state = {f"net.{k}": v for k, v in authors_state_dict(net).items()}
    torch.save({"epoch": 1, "state_dict": state, "loops": {"fit_loop": {"epoch": 1}}}, path)
    loaded = load_materialistic(path)
    assert torch.equal(loaded.fusion[0].out_conv.weight, net.fusion[0].out_conv.weight)


def test_head_only_checkpoint_takes_the_packs_dino(net: MaterialisticNet, tmp_path: Path) -> None:
    path = save_checkpoint(net, tmp_path / "head.pth", "dataparallel", with_vit=False)
    with pytest.raises(MaterialisticWeightsError, match="no DINO ViT .* connect the 'dino' input"):
        load_materialistic(path)
    with pytest.raises(MaterialisticWeightsError, match="is 128 wide"):
        load_materialistic(path, dino=tiny_backbone(width=128))
    loaded = load_materialistic(path, dino=net.backbone)
    image, click = _images(1, 32, 40, seed=10), torch.tensor([[1, 39]])
    assert torch.equal(loaded.score(image, click), net.score(image, click))
    # the loaded network has its own modules: moving it leaves the given backbone alone
    assert loaded.backbone is not net.backbone
    assert loaded.backbone.vit.cls_token.data_ptr() == net.backbone.vit.cls_token.data_ptr()


def _state(net: MaterialisticNet) -> dict[str, Tensor]:
    return {f"module.{k}": v for k, v in authors_state_dict(net).items()}


@pytest.mark.parametrize("change, expected", [
    (lambda s: {**s, "module.extra.weight": torch.zeros(2), "module.other": torch.zeros(1)},
     r"2 unexpected tensor\(s\), e\.g\. 'extra\.weight', 'other'"),
    (lambda s: {k: v for k, v in s.items() if not k.startswith("module.cross_attention_2.query")},
     r"2 missing, e\.g\. 'cross_attention_2\.query\.weight', 'cross_attention_2\.query\.bias'"),
    (lambda s: {**s, "module.fusion_3.out_conv.bias": torch.zeros(7)},
     r"1 of the wrong shape, e\.g\. fusion_3\.out_conv\.bias is \(7,\) but the network needs \(32,\)"),
    (lambda s: {k: v for k, v in s.items() if k != "module.dino_model.blocks.4.attn.qkv.weight"},
     r"1 missing, e\.g\. 'dino_model\.blocks\.4\.attn\.qkv\.weight'"),
])
def test_wrong_files_are_refused_with_one_message(net: MaterialisticNet, tmp_path: Path, change, expected) -> None:
    path = tmp_path / "wrong.pth"
    torch.save(change(_state(net)), path)
    with pytest.raises(MaterialisticWeightsError) as error:
        load_materialistic(path)
    message = str(error.value)
    assert isinstance(error.value, SpliceRefusal)
    assert message.startswith("wrong.pth is not a usable Materialistic checkpoint")
    assert "prafull7/materialistic" in message and "models/materialistic/" in message
    assert len(message.splitlines()) == 1
    assert re.search(expected, message), message


def test_all_problems_in_one_message(net: MaterialisticNet, tmp_path: Path) -> None:
    state = _state(net)
    state.pop("module.out_conv.6.bias")
    state["module.unknown"] = torch.zeros(1)
    state["module.cross_attention_1.key.bias"] = torch.zeros(3)
    torch.save(state, tmp_path / "three.pth")
    with pytest.raises(MaterialisticWeightsError, match="1 unexpected.*; 1 missing.*; 1 of the wrong shape"):
        load_materialistic(tmp_path / "three.pth")


def test_missing_and_damaged_files_are_refused(net: MaterialisticNet, tmp_path: Path) -> None:
    with pytest.raises(MaterialisticWeightsError, match="does not exist"):
        load_materialistic(tmp_path / "absent.ckpt")
    path = save_checkpoint(net, tmp_path / "cut.ckpt")
    path.write_bytes(path.read_bytes()[:5000])
    with pytest.raises(MaterialisticWeightsError, match="could not be read"):
        load_materialistic(path)
    torch.save([1, 2, 3], tmp_path / "list.pth")
    with pytest.raises(MaterialisticWeightsError, match="holds a list, not a dict of tensors"):
        load_materialistic(tmp_path / "list.pth")


class _Payload:
    """A pickled object whose loading would create a file (what a malicious checkpoint does)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (os.system, (f"touch {self.marker}",))


def test_a_malicious_pickle_is_never_run(net: MaterialisticNet, tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    # as the whole file, and in place of a tensor: refused
    torch.save(_Payload(marker), tmp_path / "evil.pth")
    with pytest.raises(MaterialisticWeightsError, match="holds a pickled object, not a dict of tensors.*system"):
        load_materialistic(tmp_path / "evil.pth")
    state = _state(net)
    state["module.out_conv.0.bias"] = _Payload(marker)  # type: ignore[assignment]
    torch.save(state, tmp_path / "evil_entry.pth")
    with pytest.raises(MaterialisticWeightsError, match="1 entries are not tensors.*system.*not run"):
        load_materialistic(tmp_path / "evil_entry.pth")
    # beside the weights, in a Lightning file's hyper-parameters: left unbuilt, the weights load
    path = save_checkpoint(net, tmp_path / "evil_extra.ckpt", extras={"callbacks": _Payload(marker)})
    loaded = load_materialistic(path)
    assert torch.equal(loaded.pixel_mlp[6].weight, net.pixel_mlp[6].weight)
    assert not marker.exists()

