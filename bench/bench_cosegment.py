"""Seconds and peak memory of DINO co-segmentation (comfy_splice.cosegment.cosegment).

For each (device, model, number of images) this co-segments a set of synthetic 320x240 scenes
(an 'object' texture on varying backgrounds) at the paper's settings: load size 224, stride 4,
key facet of the last block, elbow 0.975, sample interval 100, low-resolution saliency,
10 k-means restarts. It prints the median wall time over --repeats runs (split into descriptor
extraction and clustering), min/max and peak memory. Every configuration runs in its own child
process so its peak RSS is its own.

The ViT has random weights (same cost as the real ones for extraction). k-means time depends
on the data (the elbow rule decides how many k are tried, convergence how many iterations), so
the clustering share is indicative only: with real weights and photos it differs.

    python -m bench.bench_cosegment --models dino_vits8 --counts 2 8 --repeats 3
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from typing import TYPE_CHECKING

from bench import _common

if TYPE_CHECKING:  # the child process imports torch; the parent never does
    import torch

_RESULT_PREFIX = "BENCH_RESULT "


def _parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=["dino_vits8", "dino_vitb8"],
                        choices=["dino_vits8", "dino_vitb8", "dino_vits16", "dino_vitb16"])
    parser.add_argument("--counts", nargs="+", type=int, default=[2, 8, 32], help="images per set")
    parser.add_argument("--load-size", type=int, default=224)
    parser.add_argument("--stride", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per configuration (median shown)")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"],
                        help="auto: CPU, and CUDA too when present")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    parser.add_argument("--one", nargs=3, metavar=("DEVICE", "MODEL", "COUNT"), help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def _scenes(count: int) -> list[torch.Tensor]:
    """Synthetic 240x320 scenes: warm striped 'object' rectangles on cool or grey backgrounds."""
    import torch

    images = []
    for index in range(count):
        gen = torch.Generator().manual_seed(index)
        noise = torch.rand(240, 320, generator=gen)
        ys, xs = torch.arange(240).view(-1, 1), torch.arange(320).view(1, -1)
        if index % 2:
            image = torch.stack([0.1 * noise, 0.3 + 0.2 * noise, 0.7 + 0.3 * noise])
        else:
            image = (0.35 + 0.3 * ((xs // 4) % 2).float() + 0.1 * noise).expand(3, 240, 320).clone()
        y0, x0 = int(torch.randint(0, 100, (1,), generator=gen)), int(torch.randint(0, 160, (1,), generator=gen))
        stripes = (((ys + xs) // 3) % 2).float()
        obj = torch.stack([0.8 + 0.2 * noise, 0.3 * stripes + 0.1 * noise, 0.1 * noise])
        image[:, y0:y0 + 120, x0:x0 + 150] = obj[:, y0:y0 + 120, x0:x0 + 150]
        images.append(image[None].clamp(0, 1))
    return images


def run_one(args: argparse.Namespace) -> dict[str, object]:
    """Measure one configuration in this process (the child side)."""
    import torch

    from comfy_splice import cosegment as coseg_module
    from comfy_splice.dino.fixtures import build_backbone
    from comfy_splice.descriptors import DescriptorConfig, tokens_per_image

    if args.threads:
        torch.set_num_threads(args.threads)
    device, model, count = args.one[0], args.one[1], int(args.one[2])
    backbone = build_backbone(model, device=device)
    images = _scenes(count)
    config = DescriptorConfig(load_size=args.load_size, stride=args.stride)
    extraction: list[float] = []
    original_extract = coseg_module.extract_descriptors

    def timed_extract(*a: object, **k: object) -> object:
        if device == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        out = original_extract(*a, **k)  # type: ignore[arg-type]
        if device == "cuda":
            torch.cuda.synchronize()
        extraction.append(time.perf_counter() - start)
        return out

    coseg_module.extract_descriptors = timed_extract  # type: ignore[assignment]
    totals, ks = [], []
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    for _ in range(args.repeats):
        start = time.perf_counter()
        result = coseg_module.cosegment(backbone, images, device, config)
        if device == "cuda":
            torch.cuda.synchronize()
        totals.append(time.perf_counter() - start)
        ks.append(result.k)
    clustering = [t - e for t, e in zip(totals, extraction)]
    peak = (torch.cuda.max_memory_allocated() / 2**20 if device == "cuda" else _common.peak_rss_mib())
    return {"device": device, "model": model, "count": count,
            "tokens_per_image": tokens_per_image(backbone, (240, 320), config),
            "total": statistics.median(totals), "min": min(totals), "max": max(totals),
            "extract": statistics.median(extraction), "cluster": statistics.median(clustering),
            "k": ks, "peak_mib": peak, "peak_kind": "CUDA allocated" if device == "cuda" else "process RSS"}


def main(argv: list[str]) -> None:
    args = _parse_args(argv)
    if args.one:
        print(_RESULT_PREFIX + json.dumps(run_one(args)), flush=True)
        return
    print(f"# {_common.machine_line()}; {_common.load_average()}")
    print(f"# {_common.RANDOM_INIT_NOTE}")
    print(f"# co-segmentation of synthetic 320x240 scenes, load size {args.load_size}, stride {args.stride}, "
          f"median of {args.repeats} run(s)")
    print(f"{'device':6} {'model':10} {'images':>6} {'tokens/img':>10} {'total s':>8} {'extract s':>9} "
          f"{'cluster s':>9} {'min-max s':>13} {'k':>10} {'peak MiB':>9}")
    for device in _common.resolve_devices(args.device):
        for model in args.models:
            for count in args.counts:
                command = [sys.executable, "-m", "bench.bench_cosegment", *argv, "--one", device, model, str(count)]
                done = subprocess.run(command, capture_output=True, text=True, check=False)
                lines = [line for line in done.stdout.splitlines() if line.startswith(_RESULT_PREFIX)]
                if done.returncode or not lines:
                    print(f"{device:6} {model:10} {count:>6} failed: {done.stderr.strip().splitlines()[-1:]}")
                    continue
                r = json.loads(lines[-1][len(_RESULT_PREFIX):])
                print(f"{device:6} {model:10} {count:>6} {r['tokens_per_image']:>10} {r['total']:>8.2f} "
                      f"{r['extract']:>9.2f} {r['cluster']:>9.2f} {r['min']:>6.2f}-{r['max']:<6.2f} "
                      f"{str(r['k']):>10} {r['peak_mib']:>9.0f} ({r['peak_kind']})", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
