"""What keyframes cost in device memory (a step's work does not depend on their number).

Memory: a SpliceTrainer holds each keyframe (float32 pixels) and, once its first full-image step
has run, that keyframe's full-image target (the keys of the whole frame at DINO's resolution).
This script builds a trainer on a random-init backbone (see bench/_common.py), computes one
keyframe's target and prints the bytes of both, per frame size, and how many keyframes fit in
one GiB. That a step's work is the same with any number of keyframes is a test
(tests/core/test_keyframes.py counts the ViT forwards), not a timing.

    python -m bench.bench_keyframes --model dino_vitb8 --sizes 512x384 1920x1080
"""

from __future__ import annotations

import argparse
import sys

from bench import _common


def _size(text: str) -> tuple[int, int]:
    width, height = (int(v) for v in text.lower().split("x"))
    return width, height


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="dino_vitb8", help="backbone for the memory figures")
    parser.add_argument("--sizes", nargs="+", type=_size,
                        default=[(512, 384), (1280, 720), (1920, 1080), (3840, 2160)])
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)
    import torch

    print(_common.machine_line())
    print(_common.RANDOM_INIT_NOTE)
    appearance = torch.rand(1, 3, 384, 512)
    print(f"\nmemory per keyframe on the device, {args.model}")
    print("| frame | pixels (float32) | full-image target | per keyframe | keyframes per GiB |")
    print("|---|---|---|---|---|")
    for width, height in args.sizes:
        trainer = _common.build_ours(args.model, torch.rand(1, 3, height, width), appearance, args.device)
        pixels = trainer.keyframe(0).nbytes
        with torch.no_grad():
            target = trainer._full_structure_target(0).nbytes
        per = pixels + target
        print(f"| {width}x{height} | {pixels / 2**20:.1f} MiB | {target / 2**20:.1f} MiB | "
              f"{per / 2**20:.1f} MiB | {int(2**30 // per)} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
