"""Peak memory of a Splice training step: tensors (device-independent) and the process's RSS.

For each size this runs, in its own child process (so ru_maxrss is that configuration's own),
SpliceTrainer.step() on a random-init DINO backbone, with full-image steps every second step so
that every kind of step comes early: step 0 (appearance only, plus G on the whole structure
image), step 1 (a regular step: every crop term) and step 2 (a full-image step with every term
on, which is what steps 75, 150, ... of a real run do), and so
on for ``--regular-steps`` pairs of a regular and a full-image step. It prints per kind of step
(the largest peak of that kind):

* tensors: the peak of live plus saved tensor bytes, measured by
  comfy_splice.measure.TensorPeakTracker (a TorchDispatchMode that sees every tensor an op
  creates, autograd's saved tensors and the backward pass included, and counts each storage
  once while it is alive), plus the weights and images that exist before the step. This is
  what a GPU would need at least, without allocator rounding or library workspaces;
* the estimate comfy_splice.memory.estimate_training_peak gives for the same sizes (the
  pre-flight budget check of Train Generator uses it). The trainer runs in the generator's
  lean backward mode (the least a run needs; the one the refusal is measured against);
* peak RSS of the whole process on the CPU (Python, torch, the ViT, allocator caches).

    python -m bench.bench_memory --model dino_vitb8 --sizes 512x512 1920x1080 4032x3024

With ``--apply`` it measures Splice Output instead, plain against streamed
(comfy_splice/streaming.py), each size and mode in its own child process:

* plain: one whole image through the generator (what Splice Output does when it fits);
* streamed: the same image layer by layer in bands of ``--band-mb``, the full-resolution layers
  in the RAM store;

and prints per mode the peak of tensor bytes on the device (TensorPeakTracker; the streamed
pass's RAM store is left out and printed on its own, as are the caller's input image and
output buffer), the pack's estimate, seconds (median of ``--repeats``; one run from
``--single-run-mp`` megapixels up) and the child's peak RSS. With ``--device cuda`` it prints
torch's own ``max_memory_allocated`` too.

    python -m bench.bench_memory --apply --sizes 1920x1080 4032x3024 --band-mb 256
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from typing import Any

from bench import _common

_RESULT_PREFIX = "BENCH_RESULT "


def _parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="dino_vitb8",
                        choices=["dino_vits8", "dino_vitb8", "dino_vits16", "dino_vitb16"])
    parser.add_argument("--sizes", nargs="+", default=["512x512", "1920x1080", "4032x3024"],
                        help="WIDTHxHEIGHT of both images of the pair")
    parser.add_argument("--regular-steps", type=int, default=1,
                        help="pairs of a regular step and a full-image step with every term on "
                             "measured after step 0")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    parser.add_argument("--apply", action="store_true",
                        help="measure Splice Output (plain against streamed) instead of training")
    parser.add_argument("--band-mb", type=float, default=256.0,
                        help="--apply: device bytes of one band of the streamed pass, in MiB")
    parser.add_argument("--repeats", type=int, default=3, help="--apply: timed runs per mode")
    parser.add_argument("--single-run-mp", type=float, default=8.0,
                        help="--apply: from this many megapixels up, time one run only")
    parser.add_argument("--device", default="cpu", help="--apply: cpu or cuda")
    parser.add_argument("--one", help=argparse.SUPPRESS)
    parser.add_argument("--mode", choices=["plain", "streamed"], help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def tracked_step(trainer: Any) -> int:
    """Run one ``trainer.step()`` and return its peak of tensor bytes (TensorPeakTracker), counting
    what exists before the step too: both networks' weights, the images and Adam's state."""
    import torch

    from comfy_splice.measure import TensorPeakTracker

    tracker = TensorPeakTracker()
    tracker.add(list(trainer.backbone.parameters()) + list(trainer.generator.parameters()))
    tracker.add([trainer.structure_image, trainer.appearance_image])
    for state in trainer.optimizer.state.values():
        tracker.add(v for v in state.values() if isinstance(v, torch.Tensor))
    with tracker:
        trainer.step()
    return int(tracker.peak)


def _measure(model: str, size: str, regular_steps: int) -> dict[str, float]:
    """One configuration, in this process."""
    import torch

    from comfy_splice.dino.fixtures import build_backbone
    from comfy_splice.memory import estimate_training_peak, vit_shape
    from comfy_splice.run import TrainConfig
    from comfy_splice.train import SpliceTrainer

    width, height = (int(v) for v in size.lower().split("x"))
    gen = torch.Generator().manual_seed(0)
    structure = torch.rand(1, 3, height, width, generator=gen)
    appearance = torch.rand(1, 3, height, width, generator=gen)
    backbone = build_backbone(model, device="cpu")
    rss_before = _common.current_rss_mib()
    # full-image steps every second step: 0 (cold), 2 (every term on), 4, ...; the others regular
    trainer = SpliceTrainer(backbone, structure, appearance, TrainConfig(full_image_every=2), "cpu")
    result: dict[str, float] = {"rss_model_mib": rss_before}
    for kind in ["step0"] + ["regular", "full"] * max(1, regular_steps):
        result[f"tensors_{kind}_mib"] = max(result.get(f"tensors_{kind}_mib", 0.0),
                                            tracked_step(trainer) / 2**20)
    trainer.flush_logs()
    vit = vit_shape(backbone)
    result["estimate_mib"] = estimate_training_peak((height, width), (height, width), vit) / 2**20
    result["estimate_regular_mib"] = estimate_training_peak((height, width), (height, width), vit,
                                                            full_image=False) / 2**20
    result["rss_peak_mib"] = _common.peak_rss_mib()
    return result


def _measure_apply(size: str, mode: str, band_mb: float, repeats: int, single_run_mp: float,
                   device_name: str) -> dict[str, float]:
    """Splice Output on one random image of ``size``, plain or streamed, in this process."""
    import statistics
    import time

    import torch

    from comfy_splice.generator import apply_generator, build_generator
    from comfy_splice.measure import TensorPeakTracker
    from comfy_splice.memory import estimate_apply_peak, estimate_streamed_peak
    from comfy_splice.streaming import RamStore, stream_generator

    width, height = (int(v) for v in size.lower().split("x"))
    device = torch.device(device_name)
    band = int(band_mb * 2**20)
    generator = build_generator(0).to(device)
    image = torch.rand(1, 3, height, width, generator=torch.Generator().manual_seed(0))
    out = torch.empty_like(image)

    def run(store: RamStore | None = None) -> None:
        if mode == "plain":
            apply_generator(generator, image, device, batch_size=1, out=out)
        else:
            stream_generator(generator, image, device, band_bytes=band, out=out, store=store)
        if device.type == "cuda":
            torch.cuda.synchronize()

    runs = 1 if height * width >= single_run_mp * 1e6 else max(1, repeats)
    seconds = []
    for _ in range(runs):
        start = time.perf_counter()
        run()
        seconds.append(time.perf_counter() - start)
    result: dict[str, float] = {"seconds": statistics.median(seconds), "runs": runs}
    store = RamStore()
    tracker = TensorPeakTracker(ignore=store.owns)
    tracker.add([image, out])
    caller = tracker.current
    tracker.add(generator.parameters())
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    with tracker:
        run(store)
    result["device_mib"] = (tracker.peak - caller) / 2**20
    if device.type == "cuda":
        result["cuda_max_allocated_mib"] = torch.cuda.max_memory_allocated() / 2**20
    if mode == "plain":
        result["estimate_device_mib"] = estimate_apply_peak(height, width, 1) / 2**20
    else:
        plan = estimate_streamed_peak(height, width, band)
        result["host_mib"] = store.peak / 2**20
        result["estimate_device_mib"] = plan.device_bytes / 2**20
        result["estimate_host_mib"] = plan.ram_bytes / 2**20
    result["rss_peak_mib"] = _common.peak_rss_mib()
    return result


def _apply_table(args: argparse.Namespace) -> None:
    sizes = args.sizes if args.sizes_given else ["1920x1080", "4032x3024"]
    print(_common.machine_line())
    print(f"Splice Output, fp32, {args.device}; device = peak tensor bytes on the device "
          f"(TensorPeakTracker: the generator's weights and every band; not the caller's input "
          f"image and output buffer); RAM store = the streamed pass's full-resolution layers; "
          f"bands of {args.band_mb:g} MiB; seconds = median of {args.repeats} runs (one from "
          f"{args.single_run_mp:g} MP up); RSS = peak resident memory of the child process")
    print(" | ".join(("image", "mode", "device (estimate)", "RAM store (estimate)", "seconds",
                      "peak RSS")))
    for size in sizes:
        for mode in ("plain", "streamed"):
            cmd = [sys.executable, "-m", "bench.bench_memory", "--apply", "--one", size, "--mode", mode,
                   "--band-mb", str(args.band_mb), "--repeats", str(args.repeats),
                   "--single-run-mp", str(args.single_run_mp), "--device", args.device]
            if args.threads:
                cmd += ["--threads", str(args.threads)]
            proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
            lines = [ln for ln in proc.stdout.splitlines() if ln.startswith(_RESULT_PREFIX)]
            if proc.returncode != 0 or not lines:
                print(f"{size} | {mode} | failed (exit {proc.returncode}): {proc.stderr.strip()[-300:]}")
                continue
            r = json.loads(lines[-1][len(_RESULT_PREFIX):])
            host = (f"{r['host_mib']:.0f} MiB ({r['estimate_host_mib']:.0f})" if mode == "streamed"
                    else "-")
            cuda = (f"; cuda max allocated {r['cuda_max_allocated_mib']:.0f} MiB"
                    if "cuda_max_allocated_mib" in r else "")
            print(f"{size} | {mode} | {r['device_mib']:.0f} MiB ({r['estimate_device_mib']:.0f}) | "
                  f"{host} | {r['seconds']:.1f} s (n={r['runs']:.0f}) | "
                  f"{r['rss_peak_mib'] / 1024:.2f} GiB{cuda}", flush=True)


def main(argv: list[str] | None = None) -> None:
    raw = sys.argv[1:] if argv is None else argv
    args = _parse_args(raw)
    args.sizes_given = "--sizes" in raw
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    if args.one and args.apply:
        print(_RESULT_PREFIX + json.dumps(_measure_apply(args.one, args.mode, args.band_mb, args.repeats,
                                                         args.single_run_mp, args.device)))
        return
    if args.apply:
        _apply_table(args)
        return
    if args.one:
        print(_RESULT_PREFIX + json.dumps(_measure(args.model, args.one, args.regular_steps)))
        return
    print(_common.RANDOM_INIT_NOTE)
    print(_common.machine_line())
    print(f"model {args.model}, fp32, CPU; tensors = peak live + saved tensor bytes "
          f"(TensorPeakTracker); RSS = peak resident memory of the process")
    header = ("pair", "step 0", "full-image step", "regular step", "estimate (full / regular)",
              "peak RSS")
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
        print(f"{size} | {r['tensors_step0_mib'] / 1024:.2f} GiB | "
              f"{r['tensors_full_mib'] / 1024:.2f} GiB | "
              f"{r['tensors_regular_mib'] / 1024:.2f} GiB | "
              f"{r['estimate_mib'] / 1024:.2f} / {r['estimate_regular_mib'] / 1024:.2f} GiB | "
              f"{r['rss_peak_mib'] / 1024:.2f} GiB", flush=True)


if __name__ == "__main__":
    main()
