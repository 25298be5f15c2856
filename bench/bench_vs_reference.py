"""The reference Splice step and ours, side by side in one process, alternating.

Shared machines drift by several times over minutes, so two separate runs cannot be
compared. This script builds both trainers once (same pair, same size, same device, fp32)
and then runs blocks of k regular steps: reference, ours, reference, ours, ... Each round's
ratio compares two blocks measured back to back; the median over rounds is the figure.

    python -m bench.bench_vs_reference --reference-dir ~/src/Splice --dino-dir ~/src/dino \
        --models dino_vitb8 --size 512 --rounds 3 --steps-per-round 3
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

from bench import _common
from bench import reference as ref


def _parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reference-dir", help="checkout of omerbt/Splice (or SPLICE_REFERENCE_DIR)")
    parser.add_argument("--dino-dir", help="checkout of facebookresearch/dino (or SPLICE_DINO_DIR)")
    parser.add_argument("--models", nargs="+", default=["dino_vitb8"],
                        choices=["dino_vits8", "dino_vitb8", "dino_vits16", "dino_vitb16"])
    parser.add_argument("--size", type=int, default=512, help="short side of both images, px")
    parser.add_argument("--pair", help="folder with structure.jpg + appearance.jpg (or A/, B/); "
                        "default: the reference's datasets/splicing/cows")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps-per-round", type=int, default=3, help="k: steps per block")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps of each first")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"],
                        help="cpu hides CUDA from the process (the reference picks CUDA by itself)")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch.set_num_threads for both sides (default: torch's own choice); "
                        "1 thread degrades gracefully when other processes share the cores")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--require", type=float, default=None,
                        help="exit with status 1 when the median ratio is below this")
    return parser.parse_args(argv)


def compare(model: str, args: argparse.Namespace, reference_dir: Path, dino_dir: Path,
            structure_img: Any, appearance_img: Any, dataroot: Path) -> float:
    """Run the alternating rounds for one model; returns the median wall-time ratio."""
    import torch

    reference = ref.ReferenceTrainer(reference_dir, dino_dir, model, dataroot, args.seed)
    if reference.device != args.device:
        raise SystemExit(f"the reference picked {reference.device}, not {args.device}")
    ours = _common.build_ours(model, _common.pil_to_tensor(structure_img),
                              _common.pil_to_tensor(appearance_img),
                              args.device, dtype="fp32", seed=args.seed)
    ref_params = sum(p.numel() for p in reference.criterion.extractor.model.parameters())
    our_params = sum(p.numel() for p in ours.backbone.parameters())
    print(f"\n{model} {args.size}px {args.device} fp32, torch threads {torch.get_num_threads()}; "
          f"ViT parameters: reference {ref_params / 1e6:.2f} M, ours {our_params / 1e6:.2f} M; "
          f"our generator backward mode {ours.generator.backward_mode} (the training plan's choice here)",
          flush=True)
    for _ in range(args.warmup):
        reference.step()
        ours.step()
    ours.flush_logs()

    ratios: list[float] = []
    cpu_ratios: list[float] = []
    all_ref: list[float] = []
    all_ours: list[float] = []
    for round_index in range(1, args.rounds + 1):
        ref_timing = _common.time_steps(reference.step, args.steps_per_round, args.device,
                                        is_regular=reference.next_is_regular)
        our_timing = _common.time_steps(ours.step, args.steps_per_round, args.device)
        ours.flush_logs()
        ref_times, ref_cpu = ref_timing.walls, ref_timing.cpu_per_step
        our_times, our_cpu = our_timing.walls, our_timing.cpu_per_step
        ref_median, our_median = statistics.median(ref_times), statistics.median(our_times)
        ratios.append(ref_median / our_median)
        cpu_ratios.append(ref_cpu / our_cpu)
        all_ref += ref_times
        all_ours += our_times
        print(f"round {round_index}: reference {ref_median:.3f} s/step "
              f"[{' '.join(f'{t:.2f}' for t in ref_times)}], ours {our_median:.3f} s/step "
              f"[{' '.join(f'{t:.2f}' for t in our_times)}] -> ratio {ratios[-1]:.2f}x "
              f"(CPU time/step: reference {ref_cpu:.2f} s, ours {our_cpu:.2f} s, "
              f"ratio {cpu_ratios[-1]:.2f}x; {_common.load_average()})", flush=True)
    median_ratio = statistics.median(ratios)
    print(f"{model} {args.size}px {args.device}: median ratio reference/ours = {median_ratio:.2f}x "
          f"over {args.rounds} rounds of {args.steps_per_round} steps "
          f"(per-round: {', '.join(f'{r:.2f}' for r in ratios)}; "
          f"CPU-time ratio median {statistics.median(cpu_ratios):.2f}x); "
          f"all steps: reference median {statistics.median(all_ref):.3f} s/step, "
          f"ours median {statistics.median(all_ours):.3f} s/step", flush=True)
    del reference, ours
    return median_ratio


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    _common.hide_cuda_if_cpu_requested(argv, default="cpu")
    args = _parse_args(argv)
    if args.warmup < _common.ours_warmup_steps():
        raise SystemExit(f"--warmup must be at least {_common.ours_warmup_steps()} (step 0 is not a regular step)")
    reference_dir = ref.resolve_reference_dir(args.reference_dir)
    dino_dir = ref.resolve_dino_dir(args.dino_dir)
    structure_path, appearance_path, pair_name = _common.find_pair_files(args.pair, reference_dir)
    structure = _common.load_resized(structure_path, args.size)
    appearance = _common.load_resized(appearance_path, args.size)
    if args.threads is not None:
        import torch

        torch.set_num_threads(args.threads)

    print(_common.RANDOM_INIT_NOTE.replace("the benchmark builds the ViT", "both sides build their ViT"))
    print(f"machine: {_common.machine_line()}")
    print(f"reference: {ref.describe_checkout(reference_dir)}; DINO model code: "
          f"{ref.describe_checkout(dino_dir)} (its hubconf.py, pretrained=False)")
    print(f"pair: {pair_name}: A {structure.size[0]}x{structure.size[1]}, "
          f"B {appearance.size[0]}x{appearance.size[1]} (short side {args.size})")
    print(ref.REGULAR_STEP_NOTE)
    print("ours: comfy_splice SpliceTrainer.step(), TrainConfig defaults with dtype fp32; "
          "step 0 and full-image steps run untimed on both sides")
    print("order: reference block, ours block, alternating; ratio = reference s/step / ours s/step")
    sys.stdout.flush()

    ratios = {}
    with tempfile.TemporaryDirectory(prefix="splice_vs_ref_") as tmp:
        dataroot = ref.make_dataroot(structure, appearance, Path(tmp))
        for model in args.models:
            ratios[model] = compare(model, args, reference_dir, dino_dir, structure, appearance, dataroot)
    print(f"\npeak RSS of the whole process (both implementations): {_common.peak_rss_mib():.0f} MiB")
    if args.require is not None:
        failed = [m for m, r in ratios.items() if r < args.require]
        for model, ratio in ratios.items():
            verdict = "PASS" if ratio >= args.require else "FAIL"
            print(f"{verdict}: {model} {args.size}px: {ratio:.2f}x (required >= {args.require:.2f}x)")
        return 1 if failed else 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
