"""The U-Net generator: shape, init, any size, per-image normalisation."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from comfy_splice.generator import apply_generator, build_generator


def test_parameter_count_matches_the_reference_unet() -> None:
    assert sum(p.numel() for p in build_generator().parameters()) == 1_037_523


def test_init_follows_the_reference() -> None:
    gen = build_generator(seed=0)
    convs = [m for m in gen.modules() if isinstance(m, nn.Conv2d)]
    norms = [m for m in gen.modules() if isinstance(m, nn.InstanceNorm2d)]
    assert len(convs) == 26 and len(norms) == 30
    assert all(torch.count_nonzero(c.bias) == 0 for c in convs)
    weights = torch.cat([n.weight for n in norms])
    assert abs(weights.mean().item() - 1.0) < 0.01 and 0.01 < weights.std().item() < 0.03
    big = convs[-2].weight  # a 3x3 conv: xavier normal with gain 0.02 is tiny
    fan_in, fan_out = big.shape[1] * big[0, 0].numel(), big.shape[0] * big[0, 0].numel()
    expected_std = 0.02 * (2.0 / (fan_in + fan_out)) ** 0.5
    assert 0.7 * expected_std < big.std().item() < 1.3 * expected_std


def test_same_seed_same_weights_and_global_rng_untouched() -> None:
    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    a, b = build_generator(seed=5), build_generator(seed=5)
    assert torch.equal(torch.rand(1), before)
    for pa, pb in zip(a.parameters(), b.parameters()):
        assert torch.equal(pa, pb)
    assert not torch.equal(next(build_generator(seed=6).parameters()), next(a.parameters()))


@pytest.mark.parametrize("size", [(64, 64), (37, 101), (5, 7), (97, 33)])
def test_any_size_is_padded_by_edge_replication_and_cropped_back(size: tuple[int, int]) -> None:
    """Sizes off the 32 grid are centre-padded with replicated edges (at least 32 px) and the
    output is the matching window of the padded image's output."""
    gen = build_generator(seed=1)
    image = torch.rand(1, 3, *size)
    padded_h, padded_w = (max(32, -(-side // 32) * 32) for side in size)
    top, left = (padded_h - size[0]) // 2, (padded_w - size[1]) // 2
    padded = F.pad(image, (left, padded_w - size[1] - left, top, padded_h - size[0] - top),
                   mode="replicate")
    with torch.no_grad():
        out = gen(image)
        expected = gen(padded)[..., top: top + size[0], left: left + size[1]]
    assert out.shape == (1, 3, *size)
    torch.testing.assert_close(out, expected, rtol=0, atol=0)


def test_batches_are_normalised_per_image() -> None:
    gen = build_generator()
    gen.train()  # the reference never leaves training mode
    frames = torch.rand(3, 3, 48, 40)
    with torch.no_grad():
        together = gen(frames)
        alone = torch.cat([gen(f[None]) for f in frames])
    torch.testing.assert_close(together, alone, rtol=1e-5, atol=1e-6)
    gen.eval()
    with torch.no_grad():
        torch.testing.assert_close(gen(frames), together, rtol=1e-5, atol=1e-6)


def test_apply_generator_chunks_exactly() -> None:
    gen = build_generator()
    frames = torch.rand(5, 3, 40, 56)
    a = apply_generator(gen, frames, "cpu", batch_size=2)
    b = apply_generator(gen, frames, "cpu", batch_size=5)
    assert a.shape == frames.shape and a.dtype == torch.float32
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match=r"\[B, 3, H, W\]"):
        apply_generator(gen, torch.rand(3, 40, 56), "cpu")


def test_apply_generator_streams_into_a_preallocated_channels_last_buffer() -> None:
    """Chunks of batch_size go through the generator and straight into the caller's buffer (here
    ComfyUI's [B, H, W, 3] layout): the output is never assembled a second time."""
    gen = build_generator()
    frames = torch.rand(5, 40, 56, 3).permute(0, 3, 1, 2)  # a view, like a node's input
    buffer = torch.full((5, 40, 56, 3), -1.0)
    chunks: list[int] = []
    progress: list[tuple[int, int]] = []
    handle = gen.register_forward_pre_hook(lambda _m, args: chunks.append(args[0].shape[0]))
    try:
        out = apply_generator(gen, frames, "cpu", batch_size=2, out=buffer.permute(0, 3, 1, 2),
                              on_chunk=lambda done, total: progress.append((done, total)))
    finally:
        handle.remove()
    assert out.data_ptr() == buffer.data_ptr()
    assert chunks == [2, 2, 1] and progress == [(2, 5), (4, 5), (5, 5)]
    torch.testing.assert_close(buffer.permute(0, 3, 1, 2), apply_generator(gen, frames, "cpu", batch_size=5),
                               rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="output buffer"):
        apply_generator(gen, frames, "cpu", out=torch.empty(4, 3, 40, 56))

