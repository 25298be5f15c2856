"""Select by material (comfy_splice.material_select) with the tiny random ViT.

The random ViT's features mean nothing about materials; what it does give is that identical
patches get (nearly) identical descriptors. So the synthetic images are tiles of two textures,
each texture one ViT patch repeated: every token of a texture sees the same pixels, and the
training-free mode must select exactly the tiles of the clicked texture. The Materialistic
network is not here (another part of the pack): :class:`PlumbingStandIn` is a stand-in scorer
that only lets the plumbing (click mapping, combining clicks, resizing) be checked.
"""

from __future__ import annotations

import pytest
import torch
from torch import Tensor

from comfy_splice.dino.vit import DinoBackbone
from comfy_splice.material_select import (DEFAULT_THRESHOLD, PAPER_BLOCKS, MaterialQueryError, Query,
                                          descriptor_blocks, estimate_bytes, heatmap, model_clicks,
                                          query_to_working, select_material, soft_mask, spread_clicks,
                                          working_size)
from comfy_splice.refusal import SpliceRefusal

PATCH = 16  # the tiny ViT's patch
TILE = 2 * PATCH


def tiles(rows: int, cols: int, seed: int, period: int = PATCH) -> tuple[Tensor, Tensor]:
    """[1, 3, rows * 2 * period, cols * 2 * period]: tiles of 2x2 periods of two textures (each a
    random ``period`` x ``period`` pattern repeated; the same two for every seed) in a random
    layout with both present, and the boolean truth mask of texture A's tiles."""
    gen = torch.Generator().manual_seed(0)
    a, b = torch.rand(3, period, period, generator=gen), torch.rand(3, period, period, generator=gen)
    layout = torch.rand(rows, cols, generator=torch.Generator().manual_seed(seed)) > 0.5
    layout[0, 0], layout[-1, -1] = True, False
    truth = layout.repeat_interleave(2 * period, 0).repeat_interleave(2 * period, 1)
    reps = (1, 2 * rows, 2 * cols)
    image = torch.where(truth[None], a.repeat(*reps), b.repeat(*reps))
    return image[None], truth


def _interior(truth: Tensor, tile: int = TILE, margin: int = PATCH // 2) -> Tensor:
    """Pixels at least ``margin`` (half a patch at the working size) from any tile edge: between
    token centres of one tile, where bilinear upsampling mixes only that tile's scores."""
    rows = torch.arange(truth.shape[0]) % tile
    cols = torch.arange(truth.shape[1]) % tile
    return (((rows >= margin) & (rows < tile - margin))[:, None]
            & ((cols >= margin) & (cols < tile - margin))[None, :])


def _iou(hard: Tensor, truth: Tensor) -> float:
    return float((hard & truth).sum()) / float((hard | truth).sum())


def _first(truth: Tensor, value: bool = True) -> tuple[int, int]:
    y, x = (truth == value).nonzero()[0].tolist()
    return x + 3, y + 5  # inside the first tile of that texture, away from its corner


def test_training_free_selects_exactly_the_clicked_textures_tiles(tiny_backbone: DinoBackbone) -> None:
    image, truth = tiles(4, 6, seed=1)
    for value in (True, False):  # a click on either texture selects its tiles
        x, y = _first(truth, value)
        selection = select_material(image, "cpu", backbone=tiny_backbone, x=x, y=y,
                                    short_side=image.shape[-2])
        hard = selection.mask[0] > 0.5
        want = truth if value else ~truth
        inner = _interior(truth)
        assert torch.equal(hard[inner], want[inner])
        assert _iou(hard, want) > 0.97
        assert selection.mask.shape == (1, *truth.shape)


def test_default_working_size_and_threshold(tiny_backbone: DinoBackbone) -> None:
    """The node's own path: short side 512 and the default threshold. The 128x192 image is
    scaled by exactly 4 (box filter: each pixel becomes 4x4), so its 4-pixel texture periods
    become one 16-pixel patch, and the tiles stay patch-aligned."""
    image, truth = tiles(16, 24, seed=2, period=4)
    assert working_size(128, 192, PATCH) == (512, 768)
    x, y = _first(truth)
    selection = select_material(image, "cpu", backbone=tiny_backbone, x=x - 2, y=y - 4)
    hard = selection.mask[0] > DEFAULT_THRESHOLD
    inner = _interior(truth, tile=8, margin=2)
    assert torch.equal(hard[inner], truth[inner])
    assert _iou(hard, truth) > 0.9


def test_several_clicks_select_the_union(tiny_backbone: DinoBackbone) -> None:
    image, truth = tiles(4, 6, seed=3)
    query = torch.zeros(truth.shape)
    for value in (True, False):
        x, y = _first(truth, value)
        query[y, x] = 1.0
    selection = select_material(image, "cpu", backbone=tiny_backbone, query_mask=query[None],
                                short_side=image.shape[-2])
    assert bool((selection.mask[0] > 0.5).all())
    one = torch.zeros(truth.shape)
    x, y = _first(truth)
    one[y - 2:y + 3, x - 2:x + 3] = 1.0  # a stroke on one texture: that texture only
    selection = select_material(image, "cpu", backbone=tiny_backbone, query_mask=one[None],
                                short_side=image.shape[-2])
    assert _iou(selection.mask[0] > 0.5, truth) > 0.97


def test_across_two_images_selects_the_same_texture_in_the_other(tiny_backbone: DinoBackbone) -> None:
    a, truth_a = tiles(3, 5, seed=4)
    b, truth_b = tiles(4, 3, seed=5)  # another layout and size, the same 96-pixel short side
    x, y = _first(truth_a)
    selection = select_material(b, "cpu", backbone=tiny_backbone, x=x, y=y, query_images=a, short_side=96)
    hard = selection.mask[0] > 0.5
    assert selection.mask.shape == (1, *truth_b.shape)
    assert torch.equal(hard[_interior(truth_b)], truth_b[_interior(truth_b)])
    # one query image and click for a batch of two targets: each gets its own mask
    other, truth_other = tiles(4, 3, seed=7)
    both = select_material(torch.cat([b, other]), "cpu", backbone=tiny_backbone, x=x, y=y, query_images=a,
                           short_side=96)
    assert torch.equal(both.mask[0], selection.mask[0])
    inner = _interior(truth_other)
    assert not torch.equal(truth_other, truth_b)
    assert torch.equal(both.mask[1][inner] > 0.5, truth_other[inner])


@pytest.mark.parametrize("size", [(77, 131), (131, 77), (50, 50), (16, 203)])
def test_mask_has_the_inputs_size(tiny_backbone: DinoBackbone, size: tuple[int, int]) -> None:
    gen = torch.Generator().manual_seed(0)
    image = torch.rand(2, 3, *size, generator=gen)
    selection = select_material(image, "cpu", backbone=tiny_backbone, x=size[1] - 1, y=size[0] - 1,
                                short_side=64)
    assert selection.mask.shape == (2, *size)
    assert selection.scores.shape == (2, 1, *size)
    assert heatmap(selection.scores).shape == (2, 3, *size)
    assert float(selection.mask.min()) >= 0.0 and float(selection.mask.max()) <= 1.0
    # the clicked pixel is the clicked material
    assert float(selection.mask[0, size[0] - 1, size[1] - 1]) > 0.5


def test_same_inputs_same_mask(tiny_backbone: DinoBackbone) -> None:
    image, _ = tiles(3, 4, seed=6)
    first = select_material(image, "cpu", backbone=tiny_backbone, x=40, y=20, short_side=96)
    second = select_material(image.clone(), "cpu", backbone=tiny_backbone, x=40, y=20, short_side=96)
    assert torch.equal(first.mask, second.mask) and torch.equal(first.scores, second.scores)


def test_working_size_rule() -> None:
    assert working_size(512, 512, 8) == (512, 512)
    assert working_size(1080, 1920, 8) == (512, 912)  # 910.2 -> the nearest multiple of 8
    assert working_size(1920, 1080, 8) == (912, 512)
    assert working_size(300, 40, 8) == (3840, 512)
    assert all(side % 8 == 0 for side in working_size(333, 517, 8))
    assert descriptor_blocks(12) == PAPER_BLOCKS
    assert descriptor_blocks(2) == (0, 1)
    assert descriptor_blocks(6) == (1, 2, 4, 5)


def test_clicks_survive_downscaling() -> None:
    query = torch.zeros(1000, 700, dtype=torch.bool)
    query[999, 0] = True  # one pixel, bottom-left
    working = query_to_working(query, (512, 360))
    assert working.nonzero().tolist() == [[511, 0]]
    line = torch.zeros(1000, 700, dtype=torch.bool)
    line[:, 350] = True  # a one-pixel stroke, 2x downscaled: still one unbroken line
    assert query_to_working(line, (500, 350))[:, 175].all()


def test_soft_mask_cuts_exactly_at_the_threshold() -> None:
    scores = torch.linspace(0.0005, 0.9995, 1000)  # no score exactly at a threshold
    logits = torch.logit(scores)
    for threshold in (0.2, 0.5, 0.8):
        mask = soft_mask(logits, threshold)
        assert torch.equal(mask > 0.5, scores > threshold)
    assert torch.allclose(soft_mask(logits, 0.5), scores, atol=1e-6)  # 0.5: the score itself


def test_spread_clicks_is_deterministic_and_spread() -> None:
    pixels = torch.stack(torch.meshgrid(torch.arange(10), torch.arange(100), indexing="ij"), -1).reshape(-1, 2)
    chosen = spread_clicks(pixels, 3)
    assert torch.equal(chosen, spread_clicks(pixels, 3))
    assert chosen.shape == (3, 2)
    assert sorted(int(c) for c in chosen[:, 1])[0] <= 5 and sorted(int(c) for c in chosen[:, 1])[-1] >= 94


class PlumbingStandIn:
    """NOT the Materialistic network: a stand-in scorer with the network's call contract, only
    for checking the plumbing. It scores pixels of the target whose red value is within 0.1 of
    the clicked pixel's (in the query image, or the target itself) and records every call."""

    def __init__(self) -> None:
        self.calls: list[tuple[tuple[int, ...], list[int], tuple[int, ...] | None]] = []

    def score(self, target: Tensor, clicks: Tensor, query: Tensor | None = None) -> Tensor:
        # the contract: [B, K, 2] clicks, scores combined by their maximum; one record per click
        best = torch.zeros_like(target[:, :1])
        for click in clicks[0]:
            self.calls.append((tuple(target.shape), click.tolist(),
                               None if query is None else tuple(query.shape)))
            source = target if query is None else query
            row, col = click.tolist()
            red = source[:, 0, row, col]
            best = torch.maximum(best, ((target[:, :1] - red.view(-1, 1, 1, 1)).abs() < 0.1 / 0.229).float())
        return best


def _halves(height: int, width: int) -> Tensor:
    """Left half black, right half white: [1, 3, H, W]."""
    image = torch.zeros(1, 3, height, width)
    image[..., width // 2:] = 1.0
    return image


def test_model_plumbing_maps_clicks_to_the_working_size_and_back() -> None:
    scorer = PlumbingStandIn()
    image = _halves(100, 300)  # working size 512 x 1536
    selection = select_material(image, "cpu", model=scorer, x=299, y=99)
    (target_shape, click, query_shape), = scorer.calls
    assert target_shape == (1, 3, 512, 1536) and query_shape is None
    # the bottom-right pixel's centre (99.5, 299.5) x 5.12, at the working size
    assert click == [509, 1533]
    assert selection.mask.shape == (1, 100, 300)
    hard = selection.mask[0] > 0.5
    assert bool(hard[:, 151:].all()) and not bool(hard[:, :149].any())
    assert selection.mode == "Materialistic network"


def test_model_plumbing_combines_clicks_by_max_and_uses_the_query_image() -> None:
    scorer = PlumbingStandIn()
    image = _halves(64, 64)
    query_image = _halves(80, 40).flip(-1)  # white on the left
    mask = torch.zeros(1, 80, 40)
    mask[0, 10, 5] = 1.0   # white
    mask[0, 70, 35] = 1.0  # black
    selection = select_material(image, "cpu", model=scorer, query_mask=mask, query_images=query_image)
    assert len(scorer.calls) == 2
    assert all(query == (1, 3, 1024, 512) for _, _, query in scorer.calls)
    # the pixels' centres x 12.8: (10.5, 5.5) -> (134, 70), (70.5, 35.5) -> (902, 454)
    assert sorted(click for _, click, _ in scorer.calls) == [[134, 70], [902, 454]]
    assert bool((selection.mask > 0.5).all())  # white from one click, black from the other


def test_model_clicks_are_capped_and_inside_the_working_image() -> None:
    query = torch.ones(300, 200, dtype=torch.bool)
    clicks = model_clicks(query, (768, 512))
    assert clicks.shape == (8, 2)
    assert int(clicks[:, 0].max()) < 768 and int(clicks[:, 1].max()) < 512


# -- refusals ---------------------------------------------------------------------------------


def _refused(match: str, **kwargs: object) -> None:
    image = kwargs.pop("image", torch.rand(2, 3, 40, 60))
    with pytest.raises(MaterialQueryError, match=match) as info:
        select_material(image, "cpu", model=PlumbingStandIn(), **kwargs)  # type: ignore[arg-type]
    assert isinstance(info.value, SpliceRefusal) and isinstance(info.value, ValueError)


def test_empty_query_mask_is_refused() -> None:
    _refused(r"query_mask: the mask is empty \(no pixel above 0.5\): nothing is clicked\. Paint a dot",
             query_mask=torch.full((1, 40, 60), 0.5))
    two = torch.zeros(2, 40, 60)
    two[0, 3, 3] = 1.0
    _refused(r"query_mask: mask 1 of the batch is empty", query_mask=two)


def test_query_mask_of_another_size_is_refused() -> None:
    _refused(r"query_mask: the mask is 61x40 but the image it is clicked on is 60x40\. Paint the query "
             r"on that same image", query_mask=torch.ones(1, 40, 61))
    _refused(r"the mask is 60x40 but the image it is clicked on is 30x20",
             query_mask=torch.ones(1, 40, 60), query_images=torch.rand(1, 3, 20, 30))


def test_click_outside_the_image_is_refused() -> None:
    _refused(r"the click x=60, y=0 is outside the 60x40 image it is clicked on: use x from 0 to 59 "
             r"and y from 0 to 39\.", x=60, y=0)
    _refused(r"the click x=5, y=25 is outside the 30x20 image", x=5, y=25,
             query_images=torch.rand(1, 3, 20, 30))


def test_batch_mismatches_are_refused() -> None:
    _refused(r"query_mask: 3 masks for 2 images; give one query mask for all images, or one per image\.",
             query_mask=torch.ones(3, 40, 60))
    _refused(r"query_image: 3 images for 2 target images; give one query image for all, or one per "
             r"target image\.", query_images=torch.rand(3, 3, 40, 60))


def test_bad_threshold_and_nan_mask_are_refused() -> None:
    _refused(r"threshold is 1.0; use a value between 0 and 1", threshold=1.0)
    _refused(r"the mask holds NaN or infinite values", query_mask=torch.full((1, 40, 60), float("nan")))


def test_query_shape_must_be_a_mask() -> None:
    _refused(r"expected a MASK of shape \[batch, height, width\]", query_mask=torch.ones(1, 1, 40, 60))


def test_memory_estimate_grows_with_size_and_counts_the_network() -> None:
    small = estimate_bytes([(512, 512)], 8, 768, 12, 4)
    large = estimate_bytes([(1024, 2048)], 8, 768, 12, 4)
    with_model = estimate_bytes([(512, 512)], 8, 768, 12, 4, with_model=True)
    assert small < large and small < with_model
    # the attention of 4097 tokens alone (12 heads, fp32) is 0.75 GiB
    assert small > 12 * 4097 ** 2 * 4


def test_query_index_reuses_a_single_mask() -> None:
    query = Query(torch.ones(1, 4, 4, dtype=torch.bool))
    assert query.index(5) == 0
    assert Query(torch.ones(3, 4, 4, dtype=torch.bool)).index(2) == 2
