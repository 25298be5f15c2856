"""Today's training step against an earlier commit's, side by side on this machine, alternating.

A shared machine's speed drifts by several times over minutes, so two separate runs cannot be
compared. This script checks the earlier commit out into a temporary git worktree (removed at
the end) and starts one child process per tree, each importing that tree's ``comfy_splice``:
same images, same size, same seed, fp32, every step a regular one (``full_image_every=0``).
Each child builds its trainer and warms up once; then the parent asks them in turn for blocks
of k steps (the order flips every round, so a drift favours neither), and a round's ratio
compares two blocks measured back to back. The median ratio over rounds is the figure.

    python -m bench.bench_commits --against e8cffa7 --model dino_vitb8 --size 512 --rounds 5

The step harness is this file's, not the trees' (their bench/ folders may differ): it finds the
trainer, the backbone builder and the config where each version keeps them. A tree whose core
plans the generator's backward mode (``comfy_splice.budget.plan_training``) trains in the mode
its plan picks from the RAM free here, as a real run would; ``--mode`` forces one instead.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import IO, Any

REPO_ROOT = Path(__file__).resolve().parent.parent
_READY = "BENCH_READY "
_TIMES = "BENCH_TIMES "


def _parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--against", required=True, help="the earlier commit (any git revision)")
    parser.add_argument("--current", default=None,
                        help="a revision to compare instead of the working tree (default: the "
                        "working tree as it is, uncommitted changes included)")
    parser.add_argument("--model", default="dino_vitb8",
                        help="dino_vits8, dino_vitb8, dino_vits16, dino_vitb16, or tiny (a 2-block "
                        "random ViT: checks the harness runs, the figures mean nothing)")
    parser.add_argument("--size", type=int, default=512, help="short side of both images, px")
    parser.add_argument("--pair", help="folder with structure.* and appearance.* (or set "
                        "SPLICE_BENCH_PAIR); default: synthetic images (a step's cost depends "
                        "only on the sizes)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps-per-round", type=int, default=3, help="k: steps per block")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps of each first (>= 2)")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads in both")
    parser.add_argument("--mode", default="plan", choices=["plan", "lean", "plain"],
                        help="the generator's backward mode where a tree has one: its plan's "
                        "choice (default), or forced")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--serve", metavar="TREE", help=argparse.SUPPRESS)
    parser.add_argument("--images", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


# ---------------------------------------------------------------- the child: one tree's trainer


def _first(*candidates: tuple[str, str]) -> Any:
    """The first ``(module, name)`` that imports: where this version of the core keeps it."""
    import importlib

    for module, name in candidates:
        try:
            found = getattr(importlib.import_module(module), name)
        except (ImportError, AttributeError):
            continue
        return found
    raise SystemExit(f"this tree has none of {candidates}")


def _backbone(model: str, seed: int, workdir: Path) -> Any:
    if model == "tiny":
        save = _first(("comfy_splice.dino.fixtures", "save_tiny_backbone"),
                      ("comfy_splice.backbone", "save_tiny_backbone"))
        load = _first(("comfy_splice.dino.weights", "load_backbone"),
                      ("comfy_splice.backbone", "load_backbone"))
        return load(save(workdir / "tiny_dino_vit.pth", patch_size=8, seed=seed))
    build = _first(("comfy_splice.dino.fixtures", "build_backbone"),
                   ("comfy_splice.backbone", "build_backbone"))
    return build(model, seed=seed)


def _trainer(args: argparse.Namespace, structure: Any, appearance: Any) -> tuple[Any, str]:
    """This tree's SpliceTrainer on a random-init backbone, and its backward mode ('-': none)."""
    import inspect

    from comfy_splice.train import SpliceTrainer

    config_type = _first(("comfy_splice.run", "TrainConfig"), ("comfy_splice.train", "TrainConfig"))
    config = config_type(seed=args.seed, dtype="fp32", full_image_every=0)
    backbone = _backbone(args.model, args.seed, Path(args.images).parent)
    if "backward_mode" not in inspect.signature(SpliceTrainer).parameters:
        return SpliceTrainer(backbone, structure, appearance, config, "cpu"), "-"
    mode = args.mode
    if mode == "plan":
        from comfy_splice.budget import plan_training, standalone_memory
        from comfy_splice.memory import vit_shape

        plan = plan_training(tuple(structure.shape[-2:]), tuple(appearance.shape[-2:]), 1,
                             vit_shape(backbone), config, standalone_memory("cpu"), "bench")
        mode = plan.backward_mode
    return SpliceTrainer(backbone, structure, appearance, config, "cpu", backward_mode=mode), mode


def serve(args: argparse.Namespace, stdin: IO[str], stdout: IO[str]) -> None:
    """The child: build, warm up, then answer 'run K' with K steps' wall and CPU seconds."""
    import torch

    if args.threads is not None:
        torch.set_num_threads(args.threads)
    images = torch.load(args.images)
    trainer, mode = _trainer(args, images["structure"], images["appearance"])
    for _ in range(args.warmup):
        trainer.step()
    trainer.flush_logs()
    stdout.write(_READY + json.dumps({"mode": mode, "threads": torch.get_num_threads()}) + "\n")
    stdout.flush()
    for line in stdin:
        if not line.startswith("run "):
            break
        walls, cpu = [], 0.0
        for _ in range(int(line.split()[1])):
            cpu_start, start = time.process_time(), time.perf_counter()
            trainer.step()
            walls.append(time.perf_counter() - start)
            cpu += time.process_time() - cpu_start
        trainer.flush_logs()  # outside the timing: the losses' one host copy
        stdout.write(_TIMES + json.dumps({"walls": walls, "cpu": cpu}) + "\n")
        stdout.flush()


# ---------------------------------------------------------------- the parent


class _Child:
    """One tree's serving process."""

    def __init__(self, label: str, tree: Path, args: argparse.Namespace, images: Path) -> None:
        self.label = label
        command = [sys.executable, str(Path(__file__).resolve()), "--serve", str(tree),
                   "--against", "-", "--model", args.model, "--warmup", str(args.warmup),
                   "--mode", args.mode, "--seed", str(args.seed), "--images", str(images)]
        if args.threads is not None:
            command += ["--threads", str(args.threads)]
        env = dict(os.environ, CUDA_VISIBLE_DEVICES="", PYTHONPATH=str(tree))
        self.proc = subprocess.Popen(command, cwd=tree, env=env, stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True)
        self.info = self._reply(_READY)

    def _reply(self, prefix: str) -> dict[str, Any]:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if line.startswith(prefix):
                return json.loads(line[len(prefix):])
        raise SystemExit(f"the {self.label} tree's step harness exited ({self.proc.wait()}); "
                         f"its error is above")

    def run(self, steps: int) -> dict[str, Any]:
        assert self.proc.stdin is not None
        self.proc.stdin.write(f"run {steps}\n")
        self.proc.stdin.flush()
        return self._reply(_TIMES)

    def close(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        self.proc.wait(timeout=60)


def _git(*args: str) -> str:
    return subprocess.run(["git", *args], cwd=REPO_ROOT, check=True, capture_output=True,
                          text=True).stdout.strip()


def _images(args: argparse.Namespace, path: Path) -> str:
    """Both trees' input images, written once (the same pixels for both)."""
    import torch

    pair = args.pair or os.environ.get("SPLICE_BENCH_PAIR")
    if pair:
        from bench import _common

        structure_path, appearance_path, where = _common.find_pair_files(pair)
        structure = _common.pil_to_tensor(_common.load_resized(structure_path, args.size))
        appearance = _common.pil_to_tensor(_common.load_resized(appearance_path, args.size))
    else:
        where = "synthetic images"
        gen = torch.Generator().manual_seed(args.seed)
        structure = torch.rand(1, 3, args.size, args.size * 4 // 3, generator=gen)
        appearance = torch.rand(1, 3, args.size * 3 // 2, args.size, generator=gen)
    torch.save({"structure": structure, "appearance": appearance}, path)
    (h, w), (bh, bw) = structure.shape[-2:], appearance.shape[-2:]
    return f"{where}: structure {w}x{h}, appearance {bw}x{bh}"


def _load() -> str:
    try:
        return f"load {os.getloadavg()[0]:.1f}/{os.cpu_count()} cores"
    except OSError:
        return "load unknown"


def compare(args: argparse.Namespace) -> float:
    """Run the rounds; prints one line per round and the summary; returns the median ratio."""
    against = _git("rev-parse", "--short", args.against)
    current = "working tree" if args.current is None else _git("rev-parse", "--short", args.current)
    scratch = Path(tempfile.mkdtemp(prefix="splice-bench-commits-"))
    trees: list[Path] = []
    children: list[_Child] = []
    try:
        for revision in ([args.against] if args.current is None else [args.current, args.against]):
            tree = scratch / f"tree{len(trees)}"
            _git("worktree", "add", "--detach", str(tree), revision)
            trees.append(tree)
        current_tree = REPO_ROOT if args.current is None else trees[0]
        described = _images(args, scratch / "images.pt")
        print(f"{args.model} {args.size}px cpu fp32, regular steps; {described}", flush=True)
        children = [_Child(f"current ({current})", current_tree, args, scratch / "images.pt"),
                    _Child(f"against ({against})", trees[-1], args, scratch / "images.pt")]
        for child in children:
            print(f"{child.label}: generator backward mode {child.info['mode']}, torch threads "
                  f"{child.info['threads']}", flush=True)
        ratios: list[float] = []
        medians: dict[str, list[float]] = {child.label: [] for child in children}
        for round_index in range(1, args.rounds + 1):
            order = children if round_index % 2 else children[::-1]
            got = {child.label: child.run(args.steps_per_round) for child in order}
            now, before = (statistics.median(got[child.label]["walls"]) for child in children)
            for child in children:
                medians[child.label].append(statistics.median(got[child.label]["walls"]))
            ratios.append(now / before)
            cpu_now, cpu_before = (got[child.label]["cpu"] / args.steps_per_round for child in children)
            print(f"round {round_index} ({order[0].label.split()[0]} first): current {now:.3f} s/step, "
                  f"against {before:.3f} s/step, ratio {now / before:.3f} (CPU s/step {cpu_now:.3f} / "
                  f"{cpu_before:.3f}); {_load()}", flush=True)
        median = statistics.median(ratios)
        now_all, before_all = (statistics.median(medians[child.label]) for child in children)
        print(f"median over {args.rounds} rounds: current {now_all:.3f} s/step, against "
              f"{before_all:.3f} s/step; ratio current/against {median:.3f} "
              f"(below 1: the current step is faster)", flush=True)
        return median
    finally:
        for child in children:
            child.close()
        for tree in trees:
            _git("worktree", "remove", "--force", str(tree))
        shutil.rmtree(scratch, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(sys.argv[1:] if argv is None else argv)
    if args.serve:
        # the child runs in the tree with PYTHONPATH set to it: its comfy_splice is that tree's
        serve(args, sys.stdin, sys.stdout)
        return 0
    if args.warmup < 2:
        raise SystemExit("--warmup must be at least 2 (step 0 is not a regular step)")
    compare(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
