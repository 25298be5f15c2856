"""Per-step augmentation of the training pair, on tensors on the training device.

The random draws (which ops fire, their factors, crop size and position) come from a seeded CPU
generator as plain Python numbers: they cost no host-device synchronisation, and the same seed
gives the same sequence on every device. The pixel work runs where the images already are.

Structure image A: horizontal flip p=0.5, colour jitter p=0.5 (brightness 0.4, contrast 0.4,
saturation 0.2, hue 0.1, in a random order), 3x3 Gaussian blur with sigma U(0.1, 2.0) at p=0.2
(the reference code's probability; the paper says 0.5), then a random square crop.
Appearance image B: horizontal flip p=0.5, then the same crop rule.
Crop rule: side N = round(U(0.95 h, h)) with h the image height, capped at the width.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor
from torchvision.transforms.v2 import functional as TF


@dataclass(frozen=True)
class AugmentConfig:
    """The reference's augmentation parameters."""

    flip_p: float = 0.5
    jitter_p: float = 0.5
    brightness: float = 0.4
    contrast: float = 0.4
    saturation: float = 0.2
    hue: float = 0.1
    blur_p: float = 0.2
    blur_sigma: tuple[float, float] = (0.1, 2.0)
    min_cover: float = 0.95


class PairAugmenter:
    """Draws fresh augmentations of A and B every call, reproducibly from ``seed``."""

    def __init__(self, seed: int, config: AugmentConfig = AugmentConfig()) -> None:
        self.config = config
        self._rng = torch.Generator().manual_seed(seed)

    def rng_state(self) -> Tensor:
        """The random generator's state (a uint8 CPU tensor): saved so a run can resume exactly."""
        return self._rng.get_state()

    def set_rng_state(self, state: Tensor) -> None:
        """Continue the sequence from a state returned by :meth:`rng_state`."""
        self._rng.set_state(state.to("cpu", torch.uint8))

    def _uniform(self, low: float = 0.0, high: float = 1.0) -> float:
        return low + (high - low) * float(torch.rand((), generator=self._rng))

    def _randint(self, high: int) -> int:
        """An integer in [0, high)."""
        return int(torch.randint(high, (), generator=self._rng))

    def _flip(self, image: Tensor) -> Tensor:
        return image.flip(-1) if self._uniform() < self.config.flip_p else image

    def _jitter(self, image: Tensor) -> Tensor:
        """torchvision ColorJitter's semantics: four factors, applied in a random order."""
        c = self.config
        order = torch.randperm(4, generator=self._rng).tolist()
        factors = (self._uniform(max(0.0, 1 - c.brightness), 1 + c.brightness),
                   self._uniform(max(0.0, 1 - c.contrast), 1 + c.contrast),
                   self._uniform(max(0.0, 1 - c.saturation), 1 + c.saturation),
                   self._uniform(-c.hue, c.hue))
        ops = (TF.adjust_brightness, TF.adjust_contrast, TF.adjust_saturation, TF.adjust_hue)
        for index in order:
            image = ops[index](image, factors[index])
        return image

    def crop(self, image: Tensor) -> Tensor:
        """A random square crop of side round(U(min_cover * h, h)), capped at the width."""
        height, width = image.shape[-2:]
        side = min(int(round(self._uniform(self.config.min_cover * height, height))), width)
        side = max(side, 1)
        top = self._randint(height - side + 1)
        left = self._randint(width - side + 1)
        return image[..., top: top + side, left: left + side]

    def structure(self, image: Tensor) -> Tensor:
        """A -> A': flip, colour jitter, blur, crop."""
        image = self._flip(image)
        if self._uniform() < self.config.jitter_p:
            image = self._jitter(image)
        if self._uniform() < self.config.blur_p:
            sigma = self._uniform(*self.config.blur_sigma)
            image = TF.gaussian_blur(image, kernel_size=[3, 3], sigma=[sigma, sigma])
        return self.crop(image)

    def appearance(self, image: Tensor) -> Tensor:
        """B -> B': flip, crop."""
        return self.crop(self._flip(image))
