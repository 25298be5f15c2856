"""Peak memory of a Splice training step: tensors (device-independent) and the process's RSS.

For each size this runs, in its own child process (so ru_maxrss is that configuration's own),
SpliceTrainer.step() on a random-init DINO backbone: step 0 (a full-image step: G runs on the
whole structure image too) and then regular steps, and prints per kind of step:

* tensors: the peak of live plus saved tensor bytes, measured by
  comfy_splice.memory.TensorPeakTracker (a TorchDispatchMode that sees every tensor an op
  creates, autograd's saved tensors and the backward pass included, and counts each storage
  once while it is alive), plus the weights and images that exist before the step. This is
  what a GPU would need at least, without allocator rounding or library workspaces;
* the estimate comfy_splice.memory.estimate_training_peak gives for the same sizes (the
  pre-flight budget check of Train Generator uses it);
* peak RSS of the whole process on the CPU (Python, torch, the ViT, allocator caches).

    python bench/bench_memory.py --model dino_vitb8 --sizes 512x512 1920x1080 4032x3024
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

from bench import _common

_RESULT_PREFIX = "BENCH_RESULT "


def _parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="dino_vitb8",
                        choices=["dino_vits8", "dino_vitb8", "dino_vits16", "dino_vitb16"])
    parser.add_argument("--sizes", nargs="+", default=["512x512", "1920x1080", "4032x3024"],
                        help="WIDTHxHEIGHT of both images of the pair")
    parser.add_argument("--regular-steps", type=int, default=1,
                        help="regular steps measured after step 0 (the full-image step)")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    parser.add_argument("--one", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def _measure(model: str, size: str, regular_steps: int) -> dict[str, float]:
    """One configuration, in this process."""
    import torch

    from comfy_splice.backbone import build_backbone
    from comfy_splice.memory import TensorPeakTracker, estimate_training_peak, vit_shape
    from comfy_splice.train import SpliceTrainer, TrainConfig

    width, height = (int(v) for v in size.lower().split("x"))
    gen = torch.Generator().manual_seed(0)
    structure = torch.rand(1, 3, height, width, generator=gen)
    appearance = torch.rand(1, 3, height, width, generator=gen)
    backbone = build_backbone(model, device="cpu")
    rss_before = _common.current_rss_mib()
    trainer = SpliceTrainer(backbone, structure, appearance, TrainConfig(), "cpu")
    result: dict[str, float] = {"rss_model_mib": rss_before}
    for kind in ["full"] + ["regular"] * regular_steps:
        tracker = TensorPeakTracker()
        tracker.add(list(trainer.backbone.parameters()) + list(trainer.generator.parameters()))
        tracker.add([trainer.structure_image, trainer.appearance_image])
        for state in trainer.optimizer.state.values():
            tracker.add(v for v in state.values() if isinstance(v, torch.Tensor))
        with tracker:
            trainer.step()
        result[f"tensors_{kind}_mib"] = max(result.get(f"tensors_{kind}_mib", 0.0),
                                            tracker.peak / 2**20)
    trainer.flush_logs()
    vit = vit_shape(backbone)
    result["estimate_mib"] = estimate_training_peak((height, width), (height, width), vit) / 2**20
    result["estimate_regular_mib"] = estimate_training_peak((height, width), (height, width), vit,
                                                            full_image=False) / 2**20
    result["rss_peak_mib"] = _common.peak_rss_mib()
    return result


def main(argv: list[str] | None = None) -> None:
    args = _parse_args(sys.argv[1:] if argv is None else argv)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    if args.one:
        print(_RESULT_PREFIX + json.dumps(_measure(args.model, args.one, args.regular_steps)))
        return
    print(_common.RANDOM_INIT_NOTE)
    print(_common.machine_line())
    print(f"model {args.model}, fp32, CPU; tensors = peak live + saved tensor bytes "
          f"(TensorPeakTracker); RSS = peak resident memory of the process")
    header = ("pair", "full-image step", "regular step", "estimate (full / regular)", "peak RSS")
    print(" | ".join(header))
    for size in args.sizes:
        cmd = [sys.executable, "-m", "bench.bench_memory", "--model", args.model, "--one", size,
               "--regular-steps", str(args.regular_steps)]
        if args.threads:
            cmd += ["--threads", str(args.threads)]
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        lines = [ln for ln in proc.stdout.splitlines() if ln.startswith(_RESULT_PREFIX)]
        if proc.returncode != 0 or not lines:
            print(f"{size} | failed (exit {proc.returncode}): {proc.stderr.strip()[-300:]}")
            continue
        r = json.loads(lines[-1][len(_RESULT_PREFIX):])
        print(f"{size} | {r['tensors_full_mib'] / 1024:.2f} GiB | "
              f"{r['tensors_regular_mib'] / 1024:.2f} GiB | "
              f"{r['estimate_mib'] / 1024:.2f} / {r['estimate_regular_mib'] / 1024:.2f} GiB | "
              f"{r['rss_peak_mib'] / 1024:.2f} GiB", flush=True)


if __name__ == "__main__":
    main()
