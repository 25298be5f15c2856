"""Dense descriptors: extraction (every facet, every stride), log-binning, saliency, pixel mapping,
memory refusal. The tiny random ViT has no meaning; every expectation here holds for any weights."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from comfy_splice.descriptors import (DescriptorConfig, DescriptorMemoryError, ImageDescriptors, check_memory,
                                      extract_descriptors, grid_to_image, log_bin, normalise_saliency,
                                      pil_nearest_indices, resize_nearest_pil, saliency_heads)
from comfy_splice.dino.vit import FACETS, DinoBackbone, splice_input, timm_vit


@pytest.mark.parametrize("stride", [16, 8, 4, 2])
def test_every_facet_of_every_block_in_one_forward(tiny_backbone: DinoBackbone, stride: int) -> None:
    images = torch.randn(2, 3, 64, 80)
    dense = tiny_backbone.descriptors(images, blocks=(0, 1), facets=FACETS, stride=stride, saliency=True)
    rows, cols = 1 + (64 - 16) // stride, 1 + (80 - 16) // stride
    assert dense.grid == (rows, cols) and dense.stride == stride
    assert set(dense.facets) == {(b, f) for b in (0, 1) for f in FACETS}
    for tokens in dense.facets.values():
        assert tokens.shape == (2, 1 + rows * cols, tiny_backbone.embed_dim)
    assert dense.cls_attention is not None
    assert dense.cls_attention.shape == (2, tiny_backbone.num_heads, rows * cols)
    # The CLS query's attention over patches is part of a softmax that also covers the CLS key.
    assert bool((dense.cls_attention.sum(-1) <= 1 + 1e-5).all())


def test_descriptors_match_the_training_path_at_the_model_stride(tiny_backbone: DinoBackbone) -> None:
    """Same extraction path: at the model's own stride the keys equal those Splice's losses read,
    and the token facet equals timm's own block output."""
    images = splice_input(torch.rand(1, 3, 64, 96))
    dense = tiny_backbone.descriptors(images, blocks=(0, -1), facets=("key", "token"))
    features = tiny_backbone.features(images, layers=(0, -1))
    torch.testing.assert_close(dense.facets[(1, "key")], features[1].keys)
    torch.testing.assert_close(dense.facets[(0, "key")], features[0].keys)
    torch.testing.assert_close(dense.facets[(0, "token")][:, 0], features[0].cls)
    vit = tiny_backbone.vit
    x = vit.patch_embed.proj(images).flatten(2).transpose(1, 2)
    x = torch.cat((vit.cls_token.expand(1, -1, -1), x), 1) + tiny_backbone._position_embedding(*images.shape[-2:])
    torch.testing.assert_close(dense.facets[(0, "token")], vit.blocks[0](x), rtol=1e-4, atol=1e-5)


def test_a_smaller_stride_never_leaks_into_training(tiny_backbone: DinoBackbone) -> None:
    images = splice_input(torch.rand(1, 3, 64, 64), short_side=64)
    before = tiny_backbone.features(images)[1]
    dense = tiny_backbone.descriptors(images, stride=4)
    assert dense.grid == (13, 13)
    assert tiny_backbone.vit.patch_embed.proj.stride == (16, 16)
    after = tiny_backbone.features(images)[1]
    assert after.keys.shape == before.keys.shape == (1, 17, tiny_backbone.embed_dim)
    torch.testing.assert_close(after.keys, before.keys, rtol=0, atol=0)
    torch.testing.assert_close(after.cls, before.cls, rtol=0, atol=0)


def test_refuses_strides_that_do_not_divide_the_patch(tiny_backbone: DinoBackbone) -> None:
    with pytest.raises(ValueError, match="does not divide"):
        tiny_backbone.descriptors(torch.rand(1, 3, 32, 32), stride=5)
    with pytest.raises(ValueError, match="unknown facet"):
        tiny_backbone.descriptors(torch.rand(1, 3, 32, 32), facets=("attn",))


def test_log_binning_matches_a_hand_computed_grid() -> None:
    grid = torch.arange(9.0).reshape(1, 1, 3, 3)  # v[i, j] = 3i + j
    binned = log_bin(grid, hierarchy=2)
    assert binned.shape == (1, 17, 3, 3)
    # Centre token: its 3x3 neighbours, then the 3x3 window means at offsets +-3 (clamped to the border;
    # border windows average only the tokens inside the grid).
    centre = [0, 1, 2, 3, 4, 5, 6, 7, 8, 2, 2.5, 3, 3.5, 4.5, 5, 5.5, 6]
    torch.testing.assert_close(binned[0, :, 1, 1], torch.tensor(centre))
    corner = [0, 0, 1, 0, 0, 1, 3, 3, 4, 2, 2, 3, 2, 3, 5, 5, 6]
    torch.testing.assert_close(binned[0, :, 0, 0], torch.tensor(corner, dtype=torch.float32))
    # Channels: each bin holds all C channels together.
    two = log_bin(torch.cat((grid, 10 * grid), dim=1), hierarchy=1)
    assert two.shape == (1, 18, 3, 3)
    torch.testing.assert_close(two[0, 1::2, 1, 1], 10 * torch.arange(9.0))


def test_extract_bins_and_keeps_one_descriptor_per_token(tiny_backbone: DinoBackbone) -> None:
    config = DescriptorConfig(load_size=48, block=-1, stride=8, bin=True)
    (info,) = extract_descriptors(tiny_backbone, [torch.rand(1, 3, 48, 64)], config, "cpu")
    assert info.grid == (5, 7) and info.input_size == (48, 64) and info.image_size == (48, 64)
    assert info.descriptors.shape == (35, 17 * tiny_backbone.embed_dim)


def test_saliency_is_min_max_normalised_per_image_over_the_chosen_heads() -> None:
    attention = torch.zeros(2, 3, 4)
    attention[0, 0] = torch.tensor([0.1, 0.2, 0.3, 0.5])
    attention[0, 2] = torch.tensor([0.3, 0.0, 0.1, 0.1])
    attention[0, 1] = torch.tensor([9.0, 0.0, 0.0, 0.0])  # not among the chosen heads
    attention[1] = 0.25  # no contrast at all
    saliency = normalise_saliency(attention, heads=[0, 2])
    torch.testing.assert_close(saliency[0], torch.tensor([0.5, 0.0, 0.5, 1.0]))  # means 0.2 0.1 0.2 0.3
    torch.testing.assert_close(saliency[1], torch.zeros(4))


def test_saliency_heads_follow_the_paper_for_vits8_and_use_all_heads_otherwise(tiny_backbone: DinoBackbone) -> None:
    vits8_shaped = DinoBackbone(timm_vit(8, 384, 1, 6, 4.0, 32), name="dino_vits8")  # 6 heads, 1 block: cheap
    assert saliency_heads(vits8_shaped) == [0, 2, 4, 5]
    assert saliency_heads(tiny_backbone) == list(range(tiny_backbone.num_heads))


def test_low_and_full_resolution_saliency_cover_the_descriptor_grid(tiny_backbone: DinoBackbone) -> None:
    config = DescriptorConfig(load_size=64, block=0, stride=4)
    image = torch.rand(1, 3, 64, 96)
    for low_res in (True, False):
        (info,) = extract_descriptors(tiny_backbone, [image], config, "cpu", saliency=True, low_res_saliency=low_res)
        assert info.saliency is not None and info.saliency.shape == (info.grid[0] * info.grid[1],)
        assert float(info.saliency.min()) == 0.0 and float(info.saliency.max()) == 1.0


def _pil_nearest(values: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """What the paper's code does to the low-resolution saliency map: a float32 ('F') PIL image
    resized with NEAREST (torchvision's Resize on a PIL image calls exactly this)."""
    image = Image.fromarray(values.astype(np.float32), mode="F")
    return np.asarray(image.resize((size[1], size[0]), Image.NEAREST))


def _floor_rule(values: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """The old rule: torch's "nearest", which reads cell floor(i * in / out)."""
    return F.interpolate(values[None, None], size=size, mode="nearest")[0, 0]


# (low-resolution grid, descriptor grid): ViT-S/8 at load size 224 on a 224 x 298 image (the
# paper's defaults: 14 x 18 at half the load size and stride 8 -> 55 x 73 at stride 4), others
# whose ratios are not whole, and 4 -> 6 and 6 -> 11, where some centres fall exactly on a cell edge.
RESIZES = [((14, 18), (55, 73)), ((5, 7), (13, 19)), ((9, 3), (13, 25)), ((4, 6), (6, 11))]


@pytest.mark.parametrize(("low", "grid"), RESIZES)
def test_saliency_resize_is_pils_nearest_and_the_floor_rule_is_not(
        low: tuple[int, int], grid: tuple[int, int]) -> None:
    values = np.random.default_rng(0).random(low, dtype=np.float32)
    expected = _pil_nearest(values, grid)
    got = resize_nearest_pil(torch.from_numpy(values), grid)
    assert got.shape == grid
    np.testing.assert_array_equal(got.numpy(), expected)
    old = _floor_rule(torch.from_numpy(values), grid)
    assert not np.array_equal(old.numpy(), expected), "the old rule would pass: the grids prove nothing"


@pytest.mark.parametrize(("cells", "out"), [(3, 25), (5, 13), (7, 19), (9, 13), (14, 40)])
def test_pil_nearest_indices_read_the_cell_under_each_centre(cells: int, out: int) -> None:
    """Away from exact ties PIL reads the input cell under each output cell's centre,
    floor((i + 0.5) * in / out); the floor rule floor(i * in / out) reads another one somewhere."""
    assert all((2 * i + 1) * cells % (2 * out) for i in range(out)), "a tie: PIL's rounding decides"
    centres = [min(cells - 1, (2 * i + 1) * cells // (2 * out)) for i in range(out)]
    assert pil_nearest_indices(cells, out) == centres
    assert [i * cells // out for i in range(out)] != centres


def test_pil_nearest_indices_follow_pil_where_a_centre_falls_on_a_cell_edge() -> None:
    # 4 -> 6: cell 4's centre is at exactly 3.0 input cells; PIL's running sum lands below it.
    assert pil_nearest_indices(4, 6) == [0, 1, 1, 2, 2, 3]
    np.testing.assert_array_equal(_pil_nearest(np.arange(4.0)[None], (1, 6))[0], [0, 1, 1, 2, 2, 3])
    with pytest.raises(ValueError, match="cannot resize"):
        pil_nearest_indices(0, 3)


def test_low_resolution_saliency_is_resized_to_the_grid_as_the_paper_does(tiny_backbone: DinoBackbone) -> None:
    """The low-resolution map (half the load size, the model's own stride) reaches the stride-4
    descriptor grid exactly as PIL's NEAREST resizes it; the floor rule would give other values."""
    image = torch.rand(1, 3, 80, 112, generator=torch.Generator().manual_seed(3))
    (dense,) = extract_descriptors(tiny_backbone, [image], DescriptorConfig(load_size=80, block=0, stride=4),
                                   "cpu", saliency=True, low_res_saliency=True)
    (low,) = extract_descriptors(tiny_backbone, [image], DescriptorConfig(load_size=40, block=0, stride=16),
                                 "cpu", saliency=True, low_res_saliency=False)
    assert dense.saliency is not None and low.saliency is not None
    assert (low.grid, dense.grid) == ((2, 3), (17, 25))
    low_map = low.saliency.reshape(low.grid)
    expected = _pil_nearest(low_map.numpy(), dense.grid)
    np.testing.assert_array_equal(dense.saliency.reshape(dense.grid).numpy(), expected)
    assert not np.array_equal(_floor_rule(low_map, dense.grid).numpy(), expected)


def test_grid_values_land_on_their_own_patches() -> None:
    info = ImageDescriptors(descriptors=torch.zeros(16, 1), grid=(4, 4), saliency=None, cls=None,
                            input_size=(64, 64), image_size=(64, 64), patch=16, stride=16)
    picture = grid_to_image(torch.arange(16.0).reshape(1, 4, 4), info, mode="nearest")[0]
    ys, xs = torch.meshgrid(torch.arange(64), torch.arange(64), indexing="ij")
    torch.testing.assert_close(picture, ((ys // 16) * 4 + xs // 16).float())
    # At twice the resolution and a denser stride the map still covers the whole image.
    dense = ImageDescriptors(descriptors=torch.zeros(1, 1), grid=(13, 13), saliency=None, cls=None,
                             input_size=(64, 64), image_size=(128, 96), patch=16, stride=4)
    assert grid_to_image(torch.rand(2, 13, 13), dense).shape == (2, 128, 96)


def test_jobs_that_do_not_fit_are_refused_naming_the_options(tiny_backbone: DinoBackbone) -> None:
    config = DescriptorConfig(load_size=224, stride=4)
    check_memory(tiny_backbone, [(224, 224)] * 2, config, memory_limit=1 << 34)
    with pytest.raises(DescriptorMemoryError, match="load_size.*stride"):
        check_memory(tiny_backbone, [(224, 224)] * 2, config, memory_limit=1 << 20)
    with pytest.raises(DescriptorMemoryError):
        extract_descriptors(tiny_backbone, [torch.rand(1, 3, 64, 64)], config, "cpu", memory_limit=1 << 16)
