"""bench/bench_floor.py on the CPU with the tiny ViT: its FLOP count includes the CPU's fused
attention (which torch's counter alone misses) and the script prints every field. Nothing here
looks at how long anything took."""

from __future__ import annotations

import logging
import re
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.flop_counter import FlopCounterMode

from bench import _common, bench_floor


def test_cpu_attention_is_counted_with_torchs_sdpa_formulas() -> None:
    b, h, t, d = 2, 3, 17, 8
    q, k, v = (torch.randn(b, h, t, d, requires_grad=True) for _ in range(3))
    plain = FlopCounterMode(display=False)
    with plain:
        F.scaled_dot_product_attention(q, k, v).sum().backward()
    counted = FlopCounterMode(display=False, custom_mapping=bench_floor.cpu_attention_formulas())
    with counted:
        F.scaled_dot_product_attention(q, k, v).sum().backward()
    forward = 2 * (2 * b * h * t * t * d)  # scores and the weighted sum
    backward = 5 * (2 * b * h * t * t * d)  # the scores again, then four products
    assert counted.get_total_flops() - plain.get_total_flops() == forward + backward


def test_step_flops_split_into_kinds_that_add_up() -> None:
    image = torch.rand(1, 3, 64, 72)
    trainer = _common.build_ours("tiny", image, image.flip(-1), "cpu", dtype="fp32")
    for _ in range(_common.ours_warmup_steps() + 1):
        trainer.step()
    kinds = bench_floor.step_gflop(trainer)
    assert kinds["attention"] > 0 and kinds["matmul"] > 0 and kinds["convolution"] > 0
    parts = kinds["matmul"] + kinds["attention"] + kinds["convolution"] + kinds["other"]
    assert parts == pytest.approx(kinds["total"], rel=1e-9)
    assert bench_floor.vit_matmul_shape(trainer) == (2 * (1 + 28 * 28), 64, 256)


def test_the_floor_script_runs_and_prints_its_fields(caplog: pytest.LogCaptureFixture,
                                                     tmp_path: Path) -> None:
    generator = torch.Generator().manual_seed(0)
    for name in ("structure", "appearance"):
        pixels = (torch.rand(72, 80, 3, generator=generator) * 255).to(torch.uint8).numpy()
        Image.fromarray(pixels).save(tmp_path / f"{name}.png")
    with caplog.at_level(logging.INFO, logger="bench.floor"):
        assert bench_floor.main(["--model", "tiny", "--size", "64", "--pair", str(tmp_path),
                                 "--rounds", "2", "--steps", "1", "--matmul", "64"]) == 0
    out = caplog.text
    assert re.search(r"one regular step = [0-9.]+ GFLOP \(matmul [0-9.]+, attention [0-9.]+, "
                     r"convolution [0-9.]+, other [0-9.]+\)", out), out
    for index in (1, 2):
        assert re.search(rf"round {index}: sgemm [0-9.]+ GFLOP/s \(64² [0-9.]+, 1570x64x256 "
                         r"[0-9.]+\), floor [0-9.]+ s, step [0-9.]+ s", out), out
    assert re.search(r"median: sgemm [0-9.]+ GFLOP/s, step [0-9.]+ s, floor fraction [0-9]+%", out)
