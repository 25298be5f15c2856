"""Per-step augmentation: each operation's probability and range measured over many seeded draws.

Tolerances are four binomial standard deviations of the measured rate (sqrt(p (1 - p) / n)):
wide enough that a correct implementation never fails by chance with another seed, narrow
enough that a missing operation or a wrong probability (0.5 for blur, say) fails.
"""

from __future__ import annotations

import math

import torch

from comfy_splice.augment import AugmentConfig, PairAugmenter

DRAWS = 500
DARK, BRIGHT = 0.40, 0.50


def _tolerance(p: float, n: int = DRAWS) -> float:
    return 4 * math.sqrt(p * (1 - p) / n)


def _probe(side: int = 24) -> torch.Tensor:
    """A grey image, dark left half and bright right half, every row identical.

    Each operation leaves its own trace: a flip puts the bright half on the left; colour jitter
    is a per-pixel map of grey values (brightness, contrast; saturation and hue barely touch
    grey) that keeps the order of the halves but moves both values; the blur is the only
    operation that is not per-pixel, so it alone makes the pixels next to the edge differ from
    the rest of their half.
    """
    image = torch.full((1, 3, side, side), DARK)
    image[..., side // 2:] = BRIGHT
    return image


def _classify(out: torch.Tensor) -> tuple[bool, bool, bool]:
    """(flipped, jittered, blurred) of one augmented probe."""
    row = out[0, 0, 0]
    flipped = bool(row[0] > row[-1])
    jittered = not (math.isclose(row[0].item(), DARK if not flipped else BRIGHT, abs_tol=1e-6)
                    and math.isclose(row[-1].item(), BRIGHT if not flipped else DARK, abs_tol=1e-6))
    distinct = sorted(set(round(v, 6) for v in row.tolist()))
    blurred = len(distinct) > 2
    return flipped, jittered, blurred


def _sigma_visible_fraction(low: float, high: float, threshold: float = 0.2) -> float:
    """Share of sigma ~ U(low, high) whose 3x3 kernel moves a value by more than 1e-6: below
    sigma ~0.19 the off-centre weight exp(-1 / (2 sigma^2)) is under 1e-6 and invisible."""
    return (high - max(low, threshold)) / (high - low)


def test_structure_operations_fire_at_the_reference_rates() -> None:
    config = AugmentConfig()
    aug = PairAugmenter(11)
    counts = [0, 0, 0]
    for _ in range(DRAWS):
        for i, seen in enumerate(_classify(aug.structure(_probe()))):
            counts[i] += seen
    flip, jitter, blur = (c / DRAWS for c in counts)
    assert abs(flip - 0.5) <= _tolerance(0.5), f"flip rate {flip}"
    # jitter is invisible only when all four factors are within 1e-6 of identity: never
    assert abs(jitter - 0.5) <= _tolerance(0.5), f"jitter rate {jitter}"
    expected_blur = 0.2 * _sigma_visible_fraction(*config.blur_sigma)
    assert abs(blur - expected_blur) <= _tolerance(expected_blur), f"blur rate {blur}"
    assert (config.flip_p, config.jitter_p, config.blur_p) == (0.5, 0.5, 0.2)


def test_switching_an_operation_off_removes_it() -> None:
    aug = PairAugmenter(3, AugmentConfig(flip_p=0.0, jitter_p=1.0, blur_p=0.0))
    seen = [_classify(aug.structure(_probe())) for _ in range(100)]
    assert not any(f for f, _, _ in seen) and not any(b for _, _, b in seen)
    assert all(j for _, j, _ in seen)


def test_jitter_factors_stay_in_their_ranges() -> None:
    """Brightness alone (others at 0): a grey value v becomes f v with f ~ U(0.6, 1.4)."""
    config = AugmentConfig(flip_p=0, jitter_p=1, blur_p=0, contrast=0, saturation=0, hue=0)
    aug = PairAugmenter(5, config)
    n = 150  # P(no factor within 0.05 of an end) = (1 - 1/16)^150 < 1e-4
    factors = [aug.structure(_probe())[0, 0, 0, 0].item() / DARK for _ in range(n)]
    assert 0.6 - 1e-6 <= min(factors) < 0.65 and 1.35 < max(factors) <= 1.4 + 1e-6
    assert abs(sum(factors) / n - 1.0) < 4 * 0.8 / math.sqrt(12 * n)


def test_blur_is_a_3x3_gaussian_with_sigma_up_to_2() -> None:
    aug = PairAugmenter(6, AugmentConfig(flip_p=0, jitter_p=0, blur_p=1))
    image = _probe()
    for _ in range(50):
        row = aug.structure(image)[0, 0, 0]
        changed = [i for i, v in enumerate(row.tolist())
                   if not math.isclose(v, DARK, abs_tol=1e-6) and not math.isclose(v, BRIGHT, abs_tol=1e-6)]
        edge = int((row > (DARK + BRIGHT) / 2).nonzero()[0])
        assert set(changed) <= {edge - 1, edge}, "a 3x3 kernel reaches one pixel each side"
        # sigma = 2 is the widest: off-centre weight exp(-1/8), so the dark pixel at the edge
        # takes at most that share of the step
        w = math.exp(-1 / 8)
        assert row[edge - 1].item() <= DARK + (BRIGHT - DARK) * w / (1 + 2 * w) + 1e-6


def test_crops_are_squares_uniform_between_95_and_100_percent_of_the_height() -> None:
    aug = PairAugmenter(0)
    image = torch.rand(1, 3, 200, 300)
    sides = [aug.crop(image).shape[-2:] for _ in range(DRAWS)]
    assert all(h == w for h, w in sides)
    widths = [w for _, w in sides]
    assert min(widths) == 190 and max(widths) == 200
    # round(U(190, 200)): mean 195, sd 10 / sqrt(12)
    assert abs(sum(widths) / DRAWS - 195) <= 4 * (10 / math.sqrt(12)) / math.sqrt(DRAWS)
    tall = aug.crop(torch.rand(1, 3, 300, 120))
    assert tall.shape[-2:] == (120, 120), "the side is capped at the width"


def test_crop_positions_cover_the_image() -> None:
    aug = PairAugmenter(4)
    image = torch.arange(100 * 160, dtype=torch.float32).view(1, 1, 100, 160)
    corners = [aug.crop(image)[0, 0, 0, 0].item() for _ in range(300)]
    tops = {int(c) // 160 for c in corners}
    lefts = {int(c) % 160 for c in corners}
    assert tops <= set(range(6)) and len(tops) >= 4, "top in [0, h - side]"
    assert max(lefts) > 50 and min(lefts) < 10, "left anywhere in [0, w - side]"


def test_appearance_is_flipped_half_the_time_and_otherwise_only_cropped() -> None:
    aug = PairAugmenter(1)
    flips = 0
    for _ in range(DRAWS):
        flipped, jittered, blurred = _classify(aug.appearance(_probe()))
        assert not jittered and not blurred
        flips += flipped
    assert abs(flips / DRAWS - 0.5) <= _tolerance(0.5)


def test_same_seed_same_augmentations() -> None:
    image = torch.rand(1, 3, 60, 90)
    a, b = PairAugmenter(7), PairAugmenter(7)
    for _ in range(10):
        assert torch.equal(a.structure(image), b.structure(image))
        assert torch.equal(a.appearance(image), b.appearance(image))
    c = PairAugmenter(8)
    assert any(not torch.equal(a.structure(image), c.structure(image)) for _ in range(5))
