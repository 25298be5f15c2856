"""Loading DINO weights and extracting Splice's features in one forward."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torchvision.transforms.functional import resize

from comfy_splice.dino.download import download_weights
from comfy_splice.dino.fixtures import build_backbone, save_tiny_backbone
from comfy_splice.dino.models import DINO_MODELS, WeightsError, missing_weights_message
from comfy_splice.dino.vit import dino_input_size, self_similarity, splice_input
from comfy_splice.dino.weights import load_backbone


def _timm_reference(backbone, images, pos_embed=None):
    """Every block's output and qkv keys from timm's own modules (hooks), optionally with
    given position embeddings in place of the native ones."""
    vit = backbone.vit
    qkv: list[torch.Tensor] = []
    handles = [block.attn.qkv.register_forward_hook(lambda m, i, o: qkv.append(o))
               for block in vit.blocks]
    outputs = []
    with torch.no_grad():
        if pos_embed is None:
            x = vit._pos_embed(vit.patch_embed(images))
        else:
            tokens = vit.patch_embed.proj(images).flatten(2).transpose(1, 2)
            x = torch.cat((vit.cls_token.expand(len(images), -1, -1), tokens), 1) + pos_embed
        x = vit.norm_pre(x)
        for block in vit.blocks:
            x = block(x)
            outputs.append(x)
    for handle in handles:
        handle.remove()
    c = x.shape[-1]
    return outputs, [o[..., c: 2 * c] for o in qkv]


def _dino_position_embedding(pos_embed, patch_size, height, width):
    """DINO's interpolate_pos_encoding rule, written out independently for the tests.

    Keep the table only if the patch count is the native one and the pixel height equals the
    pixel width; else resample the native square grid bicubically with the scale factor
    (grid + 0.1) / native side on each axis.
    """
    native = pos_embed.shape[1] - 1
    rows, cols = height // patch_size, width // patch_size
    if rows * cols == native and height == width:
        return pos_embed
    side = round(native ** 0.5)
    table = pos_embed[0, 1:].reshape(side, side, -1).permute(2, 0, 1)[None]
    resampled = F.interpolate(table, scale_factor=((rows + 0.1) / side, (cols + 0.1) / side),
                              mode="bicubic")
    assert resampled.shape[-2:] == (rows, cols)
    return torch.cat((pos_embed[:, :1], resampled[0].flatten(1).T[None]), 1)


def test_architecture_is_inferred_from_the_state_dict(tmp_path: Path) -> None:
    path = save_tiny_backbone(tmp_path / "w.safetensors", patch_size=8, embed_dim=128, depth=3)
    backbone = load_backbone(path)
    assert (backbone.patch_size, backbone.embed_dim, backbone.depth, backbone.num_heads) == (8, 128, 3, 2)
    assert all(not p.requires_grad for p in backbone.parameters())
    assert not backbone.training
    backbone.train()
    assert not backbone.training, "the frozen backbone must stay in eval mode"


def test_features_match_a_plain_timm_forward(tiny_backbone) -> None:
    images = torch.rand(2, 3, 224, 224)
    blocks, keys = _timm_reference(tiny_backbone, images)
    with torch.no_grad():
        feats = tiny_backbone.features(images, layers=(-1,))
    last = tiny_backbone.depth - 1
    assert set(feats) == {last}
    torch.testing.assert_close(feats[last].cls, blocks[-1][:, 0], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(feats[last].keys, keys[-1], rtol=1e-5, atol=1e-5)
    assert feats[last].keys.shape == (2, 1 + 14 * 14, 64)


def test_one_forward_serves_several_blocks(tiny_backbone) -> None:
    images = torch.rand(1, 3, 224, 224)
    blocks, keys = _timm_reference(tiny_backbone, images)
    with torch.no_grad():
        feats = tiny_backbone.features(images, layers=(0, -1))
    assert set(feats) == {0, 1}
    for index in (0, 1):
        torch.testing.assert_close(feats[index].cls, blocks[index][:, 0], rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(feats[index].keys, keys[index], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("size", [(224, 224), (224, 239), (239, 224), (232, 232), (240, 240),
                                  (224, 300), (300, 224), (176, 480)])
def test_position_embedding_follows_dinos_rule(tiny_backbone, size: tuple[int, int]) -> None:
    """(224, 239) and (232, 232) both give the native 14x14 grid of the patch-16 ViT: DINO
    resamples the first (not square in pixels) and keeps the second."""
    pos = tiny_backbone.vit.pos_embed
    expected = _dino_position_embedding(pos, 16, *size)
    got = tiny_backbone._position_embedding(*size)
    torch.testing.assert_close(got, expected, rtol=0, atol=0)
    resampled = not (size[0] == size[1] and size[0] // 16 == 14)
    assert resampled == (not torch.equal(got, pos))


def test_non_square_input_with_the_native_grid_is_resampled_in_the_forward(tiny_backbone) -> None:
    images = torch.rand(1, 3, 224, 235)
    pos = _dino_position_embedding(tiny_backbone.vit.pos_embed, 16, 224, 235)
    blocks, keys = _timm_reference(tiny_backbone, images[..., :224, :224], pos_embed=pos)
    with torch.no_grad():
        feats = tiny_backbone.features(images, layers=(-1,))
    torch.testing.assert_close(feats[1].keys, keys[-1], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(feats[1].cls, blocks[-1][:, 0], rtol=1e-5, atol=1e-5)


def test_non_square_inputs_drop_partial_patches(tiny_backbone) -> None:
    with torch.no_grad():
        feats = tiny_backbone.features(torch.rand(1, 3, 224, 300), layers=(-1,))
    assert feats[1].keys.shape[1] == 1 + 14 * (300 // 16)


def test_input_smaller_than_a_patch_is_refused(tiny_backbone) -> None:
    with pytest.raises(ValueError, match="smaller than one 16px ViT patch"):
        tiny_backbone.features(torch.rand(1, 3, 8, 40))


@pytest.mark.parametrize("size", [(512, 512), (900, 1200), (1200, 900), (100, 1000), (224, 224)])
def test_prepare_resizes_like_torchvision(size: tuple[int, int]) -> None:
    image = torch.rand(1, 3, *size)
    expected = resize(image, 224, max_size=480, antialias=False)
    got = splice_input(image)
    assert got.shape == expected.shape
    assert dino_input_size(*size) == tuple(expected.shape[-2:])
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    torch.testing.assert_close(got, (expected - mean) / std)
    assert not torch.equal(splice_input(image, antialias=True), got) or size == (224, 224)


def test_self_similarity_is_a_cosine_matrix() -> None:
    keys = torch.randn(2, 7, 5)
    sim = self_similarity(keys)
    assert sim.shape == (2, 7, 7)
    torch.testing.assert_close(sim, sim.transpose(1, 2))
    torch.testing.assert_close(torch.diagonal(sim, dim1=1, dim2=2), torch.ones(2, 7))
    torch.testing.assert_close(sim[0, 1, 2], F.cosine_similarity(keys[0, 1], keys[0, 2], dim=0))


def test_dino_training_checkpoints_load(tmp_path: Path, tiny_dino_file: Path) -> None:
    state = torch.load(tiny_dino_file, weights_only=True)
    wrapped = {"teacher": {f"module.backbone.{k}": v for k, v in state.items()}
               | {"module.head.mlp.0.weight": torch.zeros(2, 2)}}
    torch.save(wrapped, tmp_path / "checkpoint.pth")
    backbone = load_backbone(tmp_path / "checkpoint.pth")
    torch.testing.assert_close(backbone.vit.cls_token, state["cls_token"])


def test_missing_file_names_the_file_and_the_url(tmp_path: Path) -> None:
    with pytest.raises(WeightsError) as info:
        load_backbone(tmp_path / "nope.pth")
    assert str(tmp_path / "nope.pth") in str(info.value)
    assert DINO_MODELS["dino_vitb8"].url in str(info.value)


def test_truncated_file_is_refused(tmp_path: Path, tiny_dino_file: Path) -> None:
    data = tiny_dino_file.read_bytes()
    (tmp_path / "cut.pth").write_bytes(data[: len(data) // 2])
    with pytest.raises(WeightsError, match="truncated"):
        load_backbone(tmp_path / "cut.pth")


def test_a_state_dict_that_is_not_a_vit_is_refused(tmp_path: Path) -> None:
    torch.save({"conv.weight": torch.zeros(3, 3)}, tmp_path / "resnet.pth")
    with pytest.raises(WeightsError, match="not a DINO ViT state dict"):
        load_backbone(tmp_path / "resnet.pth")


def test_pickled_code_is_never_executed(tmp_path: Path) -> None:
    class Payload:
        def __reduce__(self):
            return (print, ("pwned",))

    (tmp_path / "evil.pth").write_bytes(pickle.dumps(Payload()))
    with pytest.raises(WeightsError, match="Could not read"):
        load_backbone(tmp_path / "evil.pth")


def test_random_official_architectures_have_the_right_shape() -> None:
    backbone = build_backbone("dino_vits16")
    assert (backbone.patch_size, backbone.embed_dim, backbone.depth, backbone.num_heads) == (16, 384, 12, 6)
    assert backbone.source == "random init"


def test_download_offline_names_folder_file_and_url(tmp_path: Path) -> None:
    model = DINO_MODELS["dino_vits16"]
    with pytest.raises(WeightsError) as info:
        download_weights("dino_vits16", tmp_path, timeout=5)
    message = str(info.value)
    assert model.url in message and str(tmp_path) in message and model.file_name in message
    assert list(tmp_path.iterdir()) == [], "no partial file may be left behind"
    assert model.file_name in missing_weights_message("dino_vits16", tmp_path)


def test_download_is_skipped_when_the_file_is_there(tmp_path: Path, tiny_dino_file: Path) -> None:
    target = tmp_path / DINO_MODELS["dino_vits16"].file_name
    target.write_bytes(tiny_dino_file.read_bytes())
    assert download_weights("dino_vits16", tmp_path) == target
