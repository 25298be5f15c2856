"""Structure distance, DINO-I and the structure visualisation."""

from __future__ import annotations

import pytest
import torch

from comfy_splice.metrics import dino_i, splice_scores, structure_distance
from comfy_splice.visualize import self_similarity_pca

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
    finally:
        type(tiny_backbone).features = original
    assert len(calls) == 3, "output, structure and appearance: one forward each"
    torch.testing.assert_close(distance, structure_distance(tiny_backbone, out, a, "cpu"))
    torch.testing.assert_close(similarity, dino_i(tiny_backbone, out, b, "cpu"))
