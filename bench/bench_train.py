"""Seconds per training step and peak memory of comfy-splice's trainer.

For each (device, model, size) this runs SpliceTrainer.step() on a random-init DINO backbone
(same cost as the real weights) and prints the median wall time per regular step after
warm-up, min/max, peak memory and the 2000-step projection. Every configuration runs in its
own child process, so its peak RSS is its own (ru_maxrss only ever grows within a process).

    python -m bench.bench_train --models dino_vits8 dino_vitb8 --sizes 256 512 --steps 5
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

from bench import _common

MODELS = ["dino_vits8", "dino_vitb8", "dino_vits16", "dino_vitb16"]
_RESULT_PREFIX = "BENCH_RESULT "

REGULAR_STEP_NOTE = (
    "regular step = SpliceTrainer.step(): augment on the device, G on A' and B', one no-grad "
    "ViT forward (batch of 2) for the targets, one ViT forward with grad (batch of 2), losses, "
    "backward, Adam; the warm-up (step 0 included) runs untimed, and the trainer runs no "
    "full-image steps (full_image_every=0)"
)


def _parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=["dino_vits8", "dino_vitb8"], choices=MODELS)
    parser.add_argument("--sizes", nargs="+", type=int, default=[256, 512],
                        help="short side of both images, px")
    parser.add_argument("--steps", type=int, default=5, help="timed regular steps per configuration")
    parser.add_argument("--warmup", type=int, default=2,
                        help="untimed steps first (step 0 included; the first step pays one-off costs)")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"],
                        help="auto: CPU, and CUDA too when present")
    parser.add_argument("--dtype", default="auto", choices=["auto", "bf16", "fp32"],
                        help="TrainConfig.dtype (auto: bf16 autocast for the ViT on CUDA, fp32 on CPU)")
    parser.add_argument("--pair", help="folder with structure.jpg + appearance.jpg (or A/ and B/); "
                        "or set SPLICE_BENCH_PAIR")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch.set_num_threads (default: torch's own choice)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--one", nargs=3, metavar=("DEVICE", "MODEL", "SIZE"), help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def run_one(args: argparse.Namespace) -> dict[str, object]:
    """Measure one configuration in this process (the child side)."""
    import torch

    device, model, size = args.one[0], args.one[1], int(args.one[2])
    structure_path, appearance_path, _ = _common.find_pair_files(args.pair)
    structure = _common.pil_to_tensor(_common.load_resized(structure_path, size))
    appearance = _common.pil_to_tensor(_common.load_resized(appearance_path, size))
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    trainer = _common.build_ours(model, structure, appearance, device, args.dtype, args.seed)
    rss_before = _common.current_rss_mib()
    for _ in range(args.warmup):
        trainer.step()
    trainer.flush_logs()
    allocated_before = 0.0
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        allocated_before = torch.cuda.memory_allocated() / 2**20
    times = _common.time_steps(trainer.step, args.steps, device).walls
    trainer.flush_logs()  # the losses queued on the device, outside the timing
    stats = _common.Stats.of(times)
    result: dict[str, object] = {
        "device": device, "model": model, "size": size,
        "structure": list(structure.shape[-2:]), "appearance": list(appearance.shape[-2:]),
        "dtype": str(trainer.autocast_dtype or torch.float32).replace("torch.", ""),
        "backward_mode": trainer.generator.backward_mode,
        "median": stats.median, "min": stats.minimum, "max": stats.maximum, "n": stats.count,
        "times": times, "load": _common.load_average(), "threads": torch.get_num_threads(),
    }
    if device == "cuda":
        result["peak_cuda_mib"] = torch.cuda.max_memory_allocated() / 2**20
        result["cuda_before_mib"] = allocated_before
    else:
        result["peak_rss_mib"] = _common.peak_rss_mib()
        result["rss_before_mib"] = rss_before
    return result


def format_result(r: dict[str, object], warmup: int) -> str:
    """The one line per configuration that the README explains."""
    if "peak_cuda_mib" in r:
        memory = (f"peak CUDA allocated {r['peak_cuda_mib']:.0f} MiB "
                  f"({r['cuda_before_mib']:.0f} MiB before the steps)")
    else:
        memory = f"peak RSS {r['peak_rss_mib']:.0f} MiB ({r['rss_before_mib']:.0f} MiB before the steps)"
    median = float(r["median"])  # type: ignore[arg-type]
    projection = median * 2000
    projected = f"{projection / 60:.1f} min" if projection >= 120 else f"{projection:.1f} s"
    return (f"ours {r['model']} {r['size']}px {r['device']} {r['dtype']} {r['threads']} threads, "
            f"generator backward {r['backward_mode']}: "
            f"median {median:.3f} s/step "
            f"(min {r['min']:.3f}, max {r['max']:.3f}, n={r['n']} after {warmup} warm-up); "
            f"{memory}; 2000 steps ~ {projected}")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = _parse_args(argv)
    if args.warmup < _common.ours_warmup_steps():
        raise SystemExit(f"--warmup must be at least {_common.ours_warmup_steps()} (step 0 is not a regular step)")
    if args.one:
        print(_RESULT_PREFIX + json.dumps(run_one(args)), flush=True)
        return 0

    _common.find_pair_files(args.pair)  # fail early, before any child starts
    devices = _common.resolve_devices(args.device)
    print(_common.RANDOM_INIT_NOTE)
    print(f"machine: {_common.machine_line()}")
    print(REGULAR_STEP_NOTE)
    print("memory: peak RSS of the configuration's own process on CPU (Python, torch and the "
          "models included); torch.cuda.max_memory_allocated over the timed steps on CUDA")
    sys.stdout.flush()
    failures = 0
    for device in devices:
        for model in args.models:
            for size in args.sizes:
                command = [sys.executable, "-m", "bench.bench_train", "--one", device, model,
                           str(size), "--steps", str(args.steps), "--warmup", str(args.warmup),
                           "--dtype", args.dtype, "--seed", str(args.seed)]
                if args.threads is not None:
                    command += ["--threads", str(args.threads)]
                if args.pair:
                    command += ["--pair", args.pair]
                proc = subprocess.run(command, capture_output=True, text=True, check=False,
                                      cwd=_common.REPO_ROOT)
                lines = [ln for ln in proc.stdout.splitlines() if ln.startswith(_RESULT_PREFIX)]
                if proc.returncode != 0 or not lines:
                    failures += 1
                    print(f"ours {model} {size}px {device}: FAILED (exit {proc.returncode})\n"
                          f"{proc.stderr[-3000:]}", flush=True)
                    continue
                result = json.loads(lines[-1][len(_RESULT_PREFIX):])
                h, w = result["structure"]
                bh, bw = result["appearance"]
                print(format_result(result, args.warmup) + f" [A {w}x{h}, B {bw}x{bh}]")
                print("  per-step s: " + " ".join(f"{t:.3f}" for t in result["times"])
                      + f" ({result['load']} at the end)", flush=True)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
