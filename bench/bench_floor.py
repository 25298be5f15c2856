"""How close the training step is to this machine's matrix-multiply floor.

The floor is the step's minimal arithmetic (its FLOPs, counted by ``torch.utils.flop_counter``
over one regular step: the ViT forwards and backward, attention included, the generator forward
and backward, the losses) divided by the speed of float32 matrix multiplication (sgemm) on the
same device and thread count. The fraction ``floor / step`` says how much of the step is spent
below that speed: 100% would be a step made of nothing but large matmuls.

Two things make the figure honest rather than flattering:

* torch's counter has no formula for the CPU's fused attention kernels
  (``_scaled_dot_product_flash_attention_for_cpu`` and its backward), so on a CPU it would leave
  ~16% of a ViT-B/8 step's arithmetic out and make the floor too low. They are counted here with
  torch's own SDPA formulas (the backward counts its recomputation of the scores, as torch does
  for the CUDA kernels).
* the sgemm speed is the faster of two medians: a square ``--matmul``² product and the step's own
  largest ViT product (the MLP's first linear layer on a batch of two crops). A square product
  alone can run slower than the shapes the step uses, which would make the floor too easy.

Blocks of sgemm and of steps alternate, so both see the same machine state; the figures to quote
are the medians.

    python -m bench.bench_floor --model dino_vitb8 --size 512 --rounds 3 --steps 2
"""

from __future__ import annotations

import argparse
import logging
import statistics
import time
from typing import Any

from bench import _common

log = logging.getLogger("bench.floor")

MATMUL_REPEATS = 7


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="dino_vitb8",
                        choices=["dino_vits8", "dino_vitb8", "dino_vits16", "dino_vitb16", "tiny"],
                        help="tiny: a 2-block random ViT (checks the script runs; the figures mean "
                        "nothing)")
    parser.add_argument("--size", type=int, default=512, help="short side of both images, px")
    parser.add_argument("--pair", default=None, help="folder with the pair (default: the reference's cows)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=2, help="timed regular steps per round")
    parser.add_argument("--matmul", type=int, default=2048, help="side of the square sgemm operands")
    parser.add_argument("--threads", type=int, default=0, help="torch.set_num_threads (0: torch's own)")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    return parser.parse_args(argv)


def matmul_gflops(m: int, k: int, n: int, device: str, repeats: int = MATMUL_REPEATS) -> float:
    """Median GFLOP/s of ``repeats`` float32 [m x k] @ [k x n] products, after two warm-ups
    (thread pool, caches, clock)."""
    import torch

    a = torch.randn(m, k, device=device)
    b = torch.randn(k, n, device=device)
    for _ in range(2):
        torch.mm(a, b)
    speeds = []
    for _ in range(repeats):
        _common.sync(device)
        start = time.perf_counter()
        torch.mm(a, b)
        _common.sync(device)
        speeds.append(2 * m * k * n / (time.perf_counter() - start) / 1e9)
    return statistics.median(speeds)


def vit_matmul_shape(trainer: Any) -> tuple[int, int, int]:
    """The step's largest ViT product, (m, k, n): the MLP's first layer on a batch of two crops
    (crops are square, so DINO sees them at its short side)."""
    backbone, config = trainer.backbone, trainer.config
    side = config.dino_short_side // backbone.patch_size
    return 2 * (1 + side * side), backbone.embed_dim, 4 * backbone.embed_dim


def sgemm_gflops(square: int, vit_shape: tuple[int, int, int], device: str) -> tuple[float, float]:
    """(square product's GFLOP/s, the ViT shape's GFLOP/s); the floor uses the larger."""
    return matmul_gflops(square, square, square, device), matmul_gflops(*vit_shape, device)


def _attention_forward(query_shape: Any, key_shape: Any, value_shape: Any, *args: Any,
                       out_shape: Any = None, **kwargs: Any) -> int:
    from torch.utils.flop_counter import sdpa_flop_count

    return int(sdpa_flop_count(query_shape, key_shape, value_shape))


def _attention_backward(grad_out_shape: Any, query_shape: Any, key_shape: Any, value_shape: Any,
                        *args: Any, out_shape: Any = None, **kwargs: Any) -> int:
    from torch.utils.flop_counter import sdpa_backward_flop_count

    return int(sdpa_backward_flop_count(grad_out_shape, query_shape, key_shape, value_shape))


def cpu_attention_formulas() -> dict[Any, Any]:
    """FLOP formulas for the CPU's fused attention ops, which torch's counter lacks (a
    ``custom_mapping`` for :class:`torch.utils.flop_counter.FlopCounterMode`)."""
    import torch

    aten = torch.ops.aten
    return {aten._scaled_dot_product_flash_attention_for_cpu: _attention_forward,
            aten._scaled_dot_product_flash_attention_for_cpu_backward: _attention_backward}


def step_gflop(trainer: Any) -> dict[str, float]:
    """FLOPs of one regular step of ``trainer`` (its ``step()``) in GFLOP: by kind (``matmul``,
    ``convolution``, ``attention``, ``other``) and in ``total``."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False, custom_mapping=cpu_attention_formulas())
    with counter:
        trainer.step()
    kinds = {"matmul": 0.0, "convolution": 0.0, "attention": 0.0, "other": 0.0}
    for op, flops in counter.get_flop_counts().get("Global", {}).items():
        name = str(op)
        kind = ("attention" if "attention" in name else "convolution" if "convolution" in name
                else "matmul" if "mm" in name else "other")  # mm, addmm, bmm, baddbmm
        kinds[kind] += flops / 1e9
    kinds["total"] = counter.get_total_flops() / 1e9
    return kinds


def _build(args: argparse.Namespace) -> Any:
    structure_path, appearance_path, pair_name = _common.find_pair_files(args.pair)
    structure = _common.pil_to_tensor(_common.load_resized(structure_path, args.size))
    appearance = _common.pil_to_tensor(_common.load_resized(appearance_path, args.size))
    return _common.build_ours(args.model, structure, appearance, args.device, dtype="fp32"), pair_name


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    trainer, pair_name = _build(args)
    for _ in range(_common.ours_warmup_steps() + 1):
        trainer.step()
    gflop = step_gflop(trainer)
    shape = vit_matmul_shape(trainer)
    log.info("%s", _common.machine_line())
    log.info("pair %s at %d px, %s, fp32, %d threads, generator backward %s; one regular step = "
             "%.0f GFLOP (matmul %.0f, attention %.0f, convolution %.0f, other %.0f)", pair_name,
             args.size, args.model, torch.get_num_threads(), trainer.generator.backward_mode,
             gflop["total"], gflop["matmul"], gflop["attention"], gflop["convolution"], gflop["other"])
    fractions, steps, speeds = [], [], []
    for index in range(args.rounds):
        square, vit = sgemm_gflops(args.matmul, shape, args.device)
        timing = _common.time_steps(trainer.step, args.steps, args.device)
        speed = max(square, vit)
        step = statistics.median(timing.walls)
        floor = gflop["total"] / speed
        fractions.append(floor / step)
        steps.append(step)
        speeds.append(speed)
        log.info("round %d: sgemm %.0f GFLOP/s (%d² %.0f, %dx%dx%d %.0f), floor %.2f s, step %.2f s "
                 "(CPU %.2f s), at %.0f%% of the floor; %s", index + 1, speed, args.matmul, square,
                 *shape, vit, floor, step, timing.cpu_per_step, 100 * floor / step,
                 _common.load_average())
    log.info("median: sgemm %.0f GFLOP/s, step %.2f s, floor fraction %.0f%% (rounds: %s)",
             statistics.median(speeds), statistics.median(steps), 100 * statistics.median(fractions),
             ", ".join(f"{100 * f:.0f}%" for f in fractions))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
