"""Per-step augmentation: reproducible, the reference's crop rule, B only flipped."""

from __future__ import annotations

import torch

from comfy_splice.augment import PairAugmenter


def test_same_seed_same_augmentations() -> None:
    image = torch.rand(1, 3, 60, 90)
    a, b = PairAugmenter(7), PairAugmenter(7)
    for _ in range(10):
        assert torch.equal(a.structure(image), b.structure(image))
        assert torch.equal(a.appearance(image), b.appearance(image))
    c = PairAugmenter(8)
    assert any(not torch.equal(a.structure(image), c.structure(image)) for _ in range(5))


def test_crops_are_squares_between_95_and_100_percent_of_the_height() -> None:
    aug = PairAugmenter(0)
    sides = {aug.crop(torch.rand(1, 3, 200, 300)).shape[-1] for _ in range(200)}
    assert min(sides) >= 190 and max(sides) <= 200 and len(sides) > 5
    tall = aug.crop(torch.rand(1, 3, 300, 120))
    assert tall.shape[-2:] == (120, 120), "the side is capped at the width"


def test_appearance_is_only_flipped_and_cropped() -> None:
    image = torch.rand(1, 3, 40, 40)
    aug = PairAugmenter(1)
    for _ in range(20):
        out = aug.appearance(image)
        side = out.shape[-1]
        candidates = [image, image.flip(-1)]
        found = any(
            torch.equal(out, src[..., t: t + side, l: l + side])
            for src in candidates for t in range(41 - side) for l in range(41 - side))
        assert found


def test_structure_augmentation_changes_colours_sometimes() -> None:
    image = torch.rand(1, 3, 32, 32)
    aug = PairAugmenter(2)
    means = {round(aug.structure(image).mean().item(), 4) for _ in range(30)}
    assert len(means) > 5
    out = aug.structure(image)
    assert out.min() >= 0 and out.max() <= 1
