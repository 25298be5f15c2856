"""Structure distance, DINO-I, the structure drift map and the structure visualisation."""

from __future__ import annotations

import pytest
import torch

from comfy_splice.metrics import (dino_i, drift_to_image, splice_scores, splice_scores_with_drift,
                                  structure_distance, structure_drift, token_grid)
from comfy_splice.visualize import HEAT_COLOURS, heatmap, self_similarity_pca

from .conftest import synthetic_image


def test_an_image_against_itself(tiny_backbone) -> None:
    image = synthetic_image(64, 80, seed=1)
    assert structure_distance(tiny_backbone, image, image, "cpu").item() == pytest.approx(0.0, abs=1e-10)
    assert dino_i(tiny_backbone, image, image, "cpu").item() == pytest.approx(1.0, abs=1e-5)


def test_different_images_score_differently(tiny_backbone) -> None:
    a, b = synthetic_image(64, 80, seed=1), synthetic_image(64, 80, seed=2)
    assert structure_distance(tiny_backbone, a, b, "cpu").item() > 1e-6
    assert dino_i(tiny_backbone, a, b, "cpu").item() < 1.0 - 1e-6


def test_a_batch_is_scored_against_one_image(tiny_backbone) -> None:
    a = synthetic_image(64, 80, seed=1)
    batch = torch.cat([a, synthetic_image(64, 80, seed=3)])
    scores = structure_distance(tiny_backbone, batch, a, "cpu")
    assert scores.shape == (2,) and scores[0].item() == pytest.approx(0.0, abs=1e-10)
    assert dino_i(tiny_backbone, batch, a, "cpu").shape == (2,)
    with pytest.raises(ValueError, match="batch sizes differ"):
        dino_i(tiny_backbone, batch, torch.cat([a, a, a]), "cpu")


def test_output_of_another_size_is_resized_to_the_structure(tiny_backbone) -> None:
    a = synthetic_image(64, 80, seed=1)
    bigger = torch.nn.functional.interpolate(a, size=(128, 160), mode="bilinear")
    assert structure_distance(tiny_backbone, bigger, a, "cpu").item() < 0.05


def test_visualisation_is_an_rgb_image_at_the_input_size(tiny_backbone) -> None:
    image = synthetic_image(70, 90, seed=1)
    picture = self_similarity_pca(tiny_backbone, image, "cpu")
    assert picture.shape == (1, 3, 70, 90)
    assert picture.min() >= 0 and picture.max() <= 1 and picture.std() > 0.01


def test_combined_scores_equal_the_separate_ones_with_one_output_forward(tiny_backbone) -> None:
    out, a, b = (synthetic_image(64, 80, seed=s) for s in (1, 2, 3))
    calls: list[tuple[int, ...]] = []
    original = type(tiny_backbone).features

    def counting(self, images, layers=(-1,)):
        calls.append(tuple(images.shape))
        return original(self, images, layers)

    type(tiny_backbone).features = counting
    try:
        distance, similarity = splice_scores(tiny_backbone, out, a, b, "cpu")
        assert len(calls) == 3, "output, structure and appearance: one forward each"
        calls.clear()
        with_drift = splice_scores_with_drift(tiny_backbone, out, a, b, "cpu")
        assert len(calls) == 3, "the drift map reuses the metric's forwards"
    finally:
        type(tiny_backbone).features = original
    torch.testing.assert_close(distance, structure_distance(tiny_backbone, out, a, "cpu"))
    torch.testing.assert_close(similarity, dino_i(tiny_backbone, out, b, "cpu"))
    torch.testing.assert_close(with_drift[0], distance)
    torch.testing.assert_close(with_drift[1], similarity)
    torch.testing.assert_close(with_drift[2], structure_drift(tiny_backbone, out, a, "cpu"))


# -- structure drift --------------------------------------------------------------------------------


def test_identical_images_give_a_zero_drift_map(tiny_backbone) -> None:
    image = synthetic_image(64, 80, seed=1)
    grid = structure_drift(tiny_backbone, image, image, "cpu")
    assert grid.shape == (1, *token_grid(tiny_backbone, 64, 80))
    assert grid.abs().max().item() == 0.0
    picture = drift_to_image(grid, tiny_backbone, 64, 80)
    assert picture.abs().max().item() == 0.0
    assert heatmap(picture, 0.2).abs().max().item() == 0.0  # the scale's bottom colour is black


def test_the_drift_maps_mean_is_the_structure_distance(tiny_backbone) -> None:
    a = synthetic_image(72, 96, seed=1)
    outputs = torch.cat([synthetic_image(72, 96, seed=2), synthetic_image(72, 96, seed=3)])
    grid = structure_drift(tiny_backbone, outputs, a, "cpu")
    distance = structure_distance(tiny_backbone, outputs, a, "cpu")
    assert distance.min().item() > 1e-5  # a non-trivial case
    torch.testing.assert_close(grid.mean(dim=(1, 2)), distance, rtol=1e-5, atol=0)
    # At the image's size the mean stays close (bilinear stretching is not exactly mean-preserving).
    picture = drift_to_image(grid, tiny_backbone, 72, 96)
    torch.testing.assert_close(picture.mean(dim=(1, 2)), distance, rtol=0.05, atol=0)


def test_an_output_changed_in_one_region_lights_up_there_only(tiny_backbone) -> None:
    # 224 px: DINO sees the image unresized, so a 16 px-aligned region is exactly 4 x 4 tokens.
    structure = synthetic_image(224, 224, seed=1)
    output = structure.clone()
    top, left, side = 64, 128, 64
    noise = torch.rand(1, 3, side, side, generator=torch.Generator().manual_seed(0))
    output[..., top:top + side, left:left + side] = noise
    grid = structure_drift(tiny_backbone, output, structure, "cpu")[0]
    assert grid.shape == (14, 14)
    inside = torch.zeros(14, 14, dtype=torch.bool)
    inside[top // 16:(top + side) // 16, left // 16:(left + side) // 16] = True
    assert grid[inside].mean() > 5 * grid[~inside].mean(), (grid[inside].mean(), grid[~inside].mean())
    assert grid[inside].min() > grid[~inside].max()
    picture = drift_to_image(grid[None], tiny_backbone, 224, 224)[0]
    pixels = torch.zeros(224, 224, dtype=torch.bool)
    pixels[top + 8:top + side - 8, left + 8:left + side - 8] = True  # away from the blurred edge
    far = torch.ones(224, 224, dtype=torch.bool)
    far[top - 16:top + side + 16, left - 16:left + side + 16] = False
    assert picture[pixels].mean() > 5 * picture[far].mean()


def test_the_drift_map_has_the_structure_images_size(tiny_backbone) -> None:
    structure = synthetic_image(70, 90, seed=1)
    output = synthetic_image(140, 180, seed=2)  # resized to the structure image, as the metric does
    grid = structure_drift(tiny_backbone, output, structure, "cpu")
    picture = drift_to_image(grid, tiny_backbone, 70, 90)
    assert picture.shape == (1, 70, 90)
    assert heatmap(picture, 0.2).shape == (1, 3, 70, 90)


def test_the_heatmap_scale_is_fixed_and_its_colours_brighten() -> None:
    values = torch.linspace(0, 0.3, 61).view(1, 1, 61)
    rgb = heatmap(values, 0.2)[0, :, 0]  # [3, 61]
    torch.testing.assert_close(rgb[:, 0], torch.tensor(HEAT_COLOURS[0]))
    torch.testing.assert_close(rgb[:, 40], torch.tensor(HEAT_COLOURS[-1]))  # 0.2: the top colour
    assert (rgb[:, 40:] == rgb[:, 40:41]).all()  # past the scale: saturated, not rescaled
    brightness = rgb.mean(dim=0)[:41]
    assert (brightness[1:] > brightness[:-1]).all()
    # The same value gives the same colour whatever else is in the image (no per-image max).
    torch.testing.assert_close(heatmap(values[..., 10:11], 0.2), heatmap(values, 0.2)[..., 10:11])
    with pytest.raises(ValueError, match="scale must be above 0"):
        heatmap(values, 0.0)
