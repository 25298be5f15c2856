"""How close the training step is to this machine's matrix-multiply floor.

The floor is the step's minimal arithmetic (its FLOPs, counted by ``torch.utils.flop_counter``
over one regular step: the ViT forwards and backward, the generator forward and backward, the
losses) divided by the speed of one large float32 matrix multiply on the same device and thread
count (sgemm, the fastest kernel the step uses). The fraction ``floor / step`` says how much of
the step is spent below that speed: 100% would be a step made of nothing but large matmuls.
Blocks of sgemm and of steps alternate, so both see the same machine state; the figures to quote
are the medians.

    python -m bench.bench_floor --model dino_vitb8 --size 512 --rounds 3 --steps 2
"""

from __future__ import annotations

import argparse
import logging
import statistics
import time

from bench import _common

log = logging.getLogger("bench.floor")


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="dino_vitb8",
                        choices=["dino_vits8", "dino_vitb8", "dino_vits16", "dino_vitb16"])
    parser.add_argument("--size", type=int, default=512, help="short side of both images, px")
    parser.add_argument("--pair", default=None, help="folder with the pair (default: the reference's cows)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=2, help="timed regular steps per round")
    parser.add_argument("--matmul", type=int, default=2048, help="side of the sgemm operands")
    parser.add_argument("--threads", type=int, default=0, help="torch.set_num_threads (0: torch's own)")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    return parser.parse_args(argv)


def sgemm_gflops(side: int, device: str, repeats: int = 5) -> float:
    """Median GFLOP/s of ``repeats`` float32 [side x side] @ [side x side] products."""
    import torch

    a = torch.randn(side, side, device=device)
    b = torch.randn(side, side, device=device)
    torch.mm(a, b)  # warm-up (thread pool, caches)
    speeds = []
    for _ in range(repeats):
        _common.sync(device)
        start = time.perf_counter()
        torch.mm(a, b)
        _common.sync(device)
        speeds.append(2 * side ** 3 / (time.perf_counter() - start) / 1e9)
    return statistics.median(speeds)


def step_gflop(trainer: object) -> float:
    """FLOPs of one regular step of ``trainer`` (its ``step()``), in GFLOP."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter:
        trainer.step()  # type: ignore[attr-defined]
    return counter.get_total_flops() / 1e9


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    structure_path, appearance_path, pair_name = _common.find_pair_files(args.pair)
    structure = _common.pil_to_tensor(_common.load_resized(structure_path, args.size))
    appearance = _common.pil_to_tensor(_common.load_resized(appearance_path, args.size))
    trainer = _common.build_ours(args.model, structure, appearance, args.device, dtype="fp32")
    for _ in range(_common.ours_warmup_steps() + 1):
        trainer.step()
    gflop = step_gflop(trainer)
    log.info("%s", _common.machine_line())
    log.info("pair %s at %d px, %s, fp32, %d threads, generator backward %s; one regular step = "
             "%.0f GFLOP", pair_name, args.size, args.model, torch.get_num_threads(),
             trainer.generator.backward_mode, gflop)
    fractions, steps, speeds = [], [], []
    for index in range(args.rounds):
        speed = sgemm_gflops(args.matmul, args.device)
        timing = _common.time_steps(trainer.step, args.steps, args.device)
        step = statistics.median(timing.walls)
        floor = gflop / speed
        fractions.append(floor / step)
        steps.append(step)
        speeds.append(speed)
        log.info("round %d: sgemm %.0f GFLOP/s, floor %.2f s, step %.2f s (CPU %.2f s), at %.0f%% of "
                 "the floor; %s", index + 1, speed, floor, step, timing.cpu_per_step,
                 100 * floor / step, _common.load_average())
    log.info("median: sgemm %.0f GFLOP/s, step %.2f s, floor fraction %.0f%% (rounds: %s)",
             statistics.median(speeds), statistics.median(steps), 100 * statistics.median(fractions),
             ", ".join(f"{100 * f:.0f}%" for f in fractions))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
