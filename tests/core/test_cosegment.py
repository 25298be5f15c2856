"""Co-segmentation, parts, correspondences and PCA on dense descriptors.

The rules (elbow, votes) are checked on constructed clusterings whose answer is known; the
pipeline end to end on a synthetic set whose answer is known by construction (see
``test_cosegmentation_recovers_the_region_the_images_share``). The tiny ViT's weights are
random: nothing here depends on what a real DINO has learnt.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from comfy_splice.dino.vit import DinoBackbone
from comfy_splice.cosegment import (correspondences, cosegment, elbow_kmeans, kmeans, part_cosegment,
                                    pca_images, salient_clusters)
from comfy_splice.descriptors import DescriptorConfig

FAST = {"n_init": 2, "sample_interval": 4}
Scenes = list[tuple[torch.Tensor, torch.Tensor]]
CONFIG = DescriptorConfig(load_size=96, block=-1, facet="key", stride=8)


def _texture(kind: str, height: int, width: int, gen: torch.Generator) -> torch.Tensor:
    """Three textures that differ in colour and pattern: 'object' (warm diagonal stripes),
    'sky' (cool noise), 'wall' (grey vertical stripes)."""
    noise = torch.rand(height, width, generator=gen)
    ys, xs = torch.arange(height).view(-1, 1), torch.arange(width).view(1, -1)
    if kind == "object":
        stripes = (((ys + xs) // 3) % 2).float()
        return torch.stack([0.8 + 0.2 * noise, 0.3 * stripes + 0.1 * noise, 0.1 * noise])
    if kind == "sky":
        return torch.stack([0.1 * noise, 0.3 + 0.2 * noise, 0.7 + 0.3 * noise])
    stripes = ((xs // 4) % 2).float().expand(height, width)
    return (0.35 + 0.3 * stripes + 0.1 * noise).expand(3, height, width).clone()


def _scene(background: str, size: tuple[int, int], box: tuple[int, int, int, int],
           seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """An image of ``background`` texture with an 'object' rectangle, and the rectangle's mask."""
    gen = torch.Generator().manual_seed(seed)
    image = _texture(background, *size, gen)
    y0, y1, x0, x1 = box
    image[:, y0:y1, x0:x1] = _texture("object", y1 - y0, x1 - x0, gen)
    truth = torch.zeros(size)
    truth[y0:y1, x0:x1] = 1
    return image[None].clamp(0, 1), truth


@pytest.fixture(scope="module")
def scenes() -> list[tuple[torch.Tensor, torch.Tensor]]:
    return [_scene("sky", (96, 96), (8, 56, 8, 60), 1), _scene("wall", (80, 112), (24, 76, 48, 104), 2)]


def _away_from_edges(truth: torch.Tensor, margin: int) -> torch.Tensor:
    """Pixels at least ``margin`` px from the object's boundary (tokens there are not mixed)."""
    inner = -F.max_pool2d(-truth[None, None], 2 * margin + 1, 1, margin)[0, 0]
    outer = F.max_pool2d(truth[None, None], 2 * margin + 1, 1, margin)[0, 0]
    return (inner == 1) | (outer == 0)


# -- rules on constructed clusterings ----------------------------------------------------------


def _blobs(centres: list[float], per_blob: int, noise: float, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    points = [torch.full((per_blob, 4), c) + noise * torch.randn(per_blob, 4, generator=gen) for c in centres]
    return torch.cat(points)


def test_elbow_stops_at_the_first_k_that_helps_too_little_and_keeps_it() -> None:
    points = _blobs([0.0, 10.0, 20.0], 30, 0.01, seed=0)
    result = elbow_kmeans(points, points, elbow=0.5, max_k=14, seed=0, n_init=3)
    # k=2 and k=3 each cut the objective far below half; a 4th cluster only splits a tight blob.
    assert result.k == 4 and len(result.objectives) == 4
    ratios = [b / a for a, b in zip(result.objectives, result.objectives[1:])]
    assert ratios[0] < 0.5 and ratios[1] < 0.5 and ratios[2] > 0.5
    assert result.labels.shape == (90,) and int(result.labels.max()) < 4
    # The three blobs are never mixed at the kept k.
    for blob in range(3):
        labels = set(result.labels[30 * blob: 30 * blob + 30].tolist())
        assert all(set(result.labels[30 * o: 30 * o + 30].tolist()).isdisjoint(labels)
                   for o in range(3) if o != blob)
    capped = elbow_kmeans(points, points, elbow=0.9999, max_k=5, seed=0, n_init=1)
    assert capped.k <= 5


def test_kmeans_is_deterministic_for_a_seed() -> None:
    points = torch.randn(200, 8, generator=torch.Generator().manual_seed(3))
    first, again = kmeans(points, 5, seed=7, n_init=3), kmeans(points, 5, seed=7, n_init=3)
    torch.testing.assert_close(first.centroids, again.centroids, rtol=0, atol=0)
    with pytest.raises(ValueError, match="k=300"):
        kmeans(points, 300)


def test_votes_count_images_whose_mean_saliency_passes_the_threshold() -> None:
    # 4 images, 4 tokens each, clusters 0..2. Cluster 0 salient everywhere; cluster 1 in two images;
    # cluster 2 never; image 3 lacks cluster 1 (no vote from it, not a NaN).
    labels = [torch.tensor([0, 0, 1, 2]), torch.tensor([0, 1, 1, 2]), torch.tensor([0, 1, 2, 2]),
              torch.tensor([0, 0, 2, 2])]
    saliency = [torch.tensor([0.9, 0.7, 0.5, 0.0]), torch.tensor([0.8, 0.6, 0.0, 0.05]),
                torch.tensor([1.0, 0.01, 0.0, 0.06]), torch.tensor([0.3, 0.2, 0.0, 0.0])]
    salient, votes = salient_clusters(labels, saliency, 3, thresh=0.065, votes_percentage=75)
    assert votes.tolist() == [4, 2, 0] and salient.tolist() == [True, False, False]
    salient, _ = salient_clusters(labels, saliency, 3, thresh=0.065, votes_percentage=50)
    assert salient.tolist() == [True, True, False]


# -- the pipeline ------------------------------------------------------------------------------


def test_cosegmentation_recovers_the_region_the_images_share(tiny_backbone: DinoBackbone, scenes: Scenes) -> None:
    """Two images: the same 'object' texture on two different backgrounds, at different places
    and image sizes. Why this is fair without real weights: a random ViT still maps different
    textures to different descriptors (its patch embedding is a random linear map of the pixels),
    and a background cluster lives in one image only, so it can get at most one of the two votes
    that 75 % of 2 images requires. Only the shared texture can be voted foreground - the part of
    co-segmentation that does not need a trained saliency. The mask must be the object exactly,
    except within half a patch of its edge, where tokens see both textures."""
    images, truths = [s[0] for s in scenes], [s[1] for s in scenes]
    result = cosegment(tiny_backbone, images, "cpu", CONFIG, elbow=0.9, seed=0, **FAST)
    for mask, truth in zip(result.masks, truths):
        assert mask.shape == truth.shape  # full resolution, each image its own size
        sure = _away_from_edges(truth, tiny_backbone.patch_size // 2)
        assert bool((mask[sure] == truth[sure]).all())
        assert set(mask.unique().tolist()) <= {0.0, 1.0}
    assert result.k >= 2 and bool(result.salient.any()) and not bool(result.salient.all())


def test_cosegmentation_is_deterministic_and_refuses_one_image(tiny_backbone: DinoBackbone, scenes: Scenes) -> None:
    images = [s[0] for s in scenes]
    config = DescriptorConfig(load_size=64, stride=16)
    first = cosegment(tiny_backbone, images, "cpu", config, seed=5, **FAST)
    again = cosegment(tiny_backbone, images, "cpu", config, seed=5, **FAST)
    assert first.k == again.k
    for a, b in zip(first.masks + first.labels, again.masks + again.labels):
        assert torch.equal(a, b)
    with pytest.raises(ValueError, match="at least 2 images"):
        cosegment(tiny_backbone, images[:1], "cpu", config)


def test_outlier_images_get_an_empty_mask(tiny_backbone: DinoBackbone, scenes: Scenes) -> None:
    images = [s[0] for s in scenes] * 2
    result = cosegment(tiny_backbone, images, "cpu", DescriptorConfig(load_size=64, stride=16),
                       remove_outliers=True, outliers_thresh=-1.0, **FAST)
    assert result.inliers == [True] * 4
    with pytest.raises(ValueError, match="outliers_thresh"):
        cosegment(tiny_backbone, images, "cpu", DescriptorConfig(load_size=64, stride=16),
                  remove_outliers=True, outliers_thresh=1.01, **FAST)


def test_parts_cover_the_object_with_one_palette_across_images(tiny_backbone: DinoBackbone, scenes: Scenes) -> None:
    images, truths = [s[0] for s in scenes], [s[1] for s in scenes]
    result = part_cosegment(tiny_backbone, images, "cpu", 2, CONFIG, elbow=0.9, seed=0, **FAST)
    assert result.num_parts == 2
    for labels, truth in zip(result.labels, truths):
        assert labels.shape == truth.shape and labels.dtype == torch.long
        assert 0 <= int(labels.min()) and int(labels.max()) <= 2
        sure = _away_from_edges(truth, tiny_backbone.patch_size // 2)
        # Far from the edges: the background is background (label 2), the object is some part.
        assert bool((labels[sure & (truth == 0)] == 2).all())
        assert bool((labels[sure & (truth == 1)] < 2).all())
    with pytest.raises(ValueError, match="num_parts"):
        part_cosegment(tiny_backbone, images, "cpu", 10_000, CONFIG, elbow=0.9, **FAST)


def test_an_image_corresponds_to_itself_point_for_point(tiny_backbone: DinoBackbone, scenes: Scenes) -> None:
    """Against itself every token's best buddy is itself (similarity 1), whatever the weights."""
    image = scenes[0][0]
    config = DescriptorConfig(load_size=96, block=0, stride=8, bin=True)
    found = correspondences(tiny_backbone, image, image, "cpu", num_pairs=6, config=config, thresh=0.0,
                            n_init=2)
    assert found.points_a.shape == (6, 2) and found.best_buddies > 6
    torch.testing.assert_close(found.points_a, found.points_b)
    torch.testing.assert_close(found.similarity, torch.ones(6))
    assert bool((found.saliency[:-1] >= found.saliency[1:]).all())  # most salient first
    assert bool((found.points_a >= 0).all()) and bool((found.points_a < 96).all())
    entries = found.to_json()
    assert [e["index"] for e in entries] == list(range(1, 7)) and entries[0]["a"] == entries[0]["b"]


def test_pca_colours_every_image_at_its_size(tiny_backbone: DinoBackbone, scenes: Scenes) -> None:
    images = [s[0] for s in scenes]
    pictures = pca_images(tiny_backbone, images, "cpu", DescriptorConfig(load_size=64, stride=8))
    assert [tuple(p.shape) for p in pictures] == [(3, 96, 96), (3, 80, 112)]
    for picture in pictures:
        assert float(picture.min()) == 0.0 and float(picture.max()) == 1.0
        assert picture.flatten(1).amax(1).tolist() == [1.0, 1.0, 1.0]
