"""How far bf16 autocast moves Splice's loss terms and their gradients, against fp32.

For each photo pair and DINO model this trains a generator in fp32 with the core trainer
(comfy_splice.train.SpliceTrainer) and, at step 0 and after the training steps (near
convergence, where the structure term is small), scores one fixed augmentation draw with every
term on (structure, appearance, identity and the two full-image terms) in fp32 and under bf16
autocast, and prints per term: the fp32 value, the relative error of the bf16 value, and the
cosine between the bf16 and fp32 gradients with respect to the generator's parameters.

Precision variants: ``bf16`` runs the whole ViT under autocast; ``bf16-fp32keys`` is what the
trainer does on CUDA, autocast switched off from the block the losses read (its ``qkv`` and
everything after, then the losses) so the keys are fp32. On the CPU (the default) CPU autocast
stands in for CUDA's: same bf16 format, same op lists for matmuls; the rounding of individual
kernels differs. ``--device cuda`` measures CUDA's own autocast.

    python -m bench.bench_precision --pairs cows apples2oranges --models dino_vits8 dino_vitb8 \\
        --steps dino_vits8=200 dino_vitb8=40 --size 128
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path
from typing import Any

from bench import _common


import torch

from comfy_splice.augment import PairAugmenter
from comfy_splice.dino.fixtures import build_backbone
from comfy_splice.run import TrainConfig
from comfy_splice.train import SpliceTrainer

VARIANTS = {"bf16-fp32keys": (torch.bfloat16, True), "bf16": (torch.bfloat16, False)}
TERMS = ("structure", "appearance", "identity", "full_structure", "full_appearance")


def _parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pairs", nargs="+", default=["cows", "apples2oranges"],
                        help="pair names under --pairs-dir, or folders with structure.* and "
                             "appearance.*")
    parser.add_argument("--pairs-dir", default="../shared/pairs",
                        help="where pair names are looked up (default ../shared/pairs)")
    parser.add_argument("--models", nargs="+", default=["dino_vits8", "dino_vitb8"])
    parser.add_argument("--steps", nargs="+", default=["dino_vits8=200", "dino_vitb8=40"],
                        metavar="MODEL=N",
                        help="fp32 training steps before the second measurement, per model")
    parser.add_argument("--size", type=int, default=128,
                        help="short side of both images, px (DINO sees 224 px crops whatever it is)")
    parser.add_argument("--variants", nargs="+", default=["bf16-fp32keys", "bf16"],
                        choices=list(VARIANTS))
    parser.add_argument("--no-start", dest="at_start", action="store_false",
                        help="skip the measurement at step 0 (measure after the training steps only)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    parser.add_argument("--device", default="cpu",
                        help="cpu (CPU autocast stands in for CUDA's) or cuda (CUDA's own autocast)")
    parser.add_argument("--json", help="also write every figure to this JSON file")
    return parser.parse_args(argv)


def _pair_dir(name: str, pairs_dir: str) -> str:
    return name if Path(name).is_dir() else str(Path(pairs_dir) / name)


def _steps_for(model: str, specs: list[str]) -> int:
    for spec in specs:
        key, _, value = spec.partition("=")
        if key == model:
            return int(value)
    raise SystemExit(f"--steps has no entry for {model} (give {model}=N)")


def _cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    denom = a.norm() * b.norm()
    return float((a @ b) / denom) if denom > 0 else float("nan")


def _score(trainer: SpliceTrainer, a_crop: torch.Tensor, b_crop: torch.Tensor,
           autocast: torch.dtype | None, fp32_keys: bool) -> dict[str, tuple[float, torch.Tensor]]:
    """Every term's value and gradient (flattened over the generator's parameters)."""
    trainer.autocast_dtype, trainer.fp32_keys = autocast, fp32_keys
    params = [p for p in trainer.generator.parameters() if p.requires_grad]
    terms = trainer.loss_terms(a_crop, b_crop, warm=True, full=True)
    out: dict[str, tuple[float, torch.Tensor]] = {}
    for name in TERMS:
        grads = torch.autograd.grad(terms[name], params, retain_graph=True, allow_unused=True)
        flat = torch.cat([(g if g is not None else torch.zeros_like(p)).reshape(-1).double()
                          for g, p in zip(grads, params)])
        out[name] = (float(terms[name].detach()), flat)
    return out


def measure(trainer: SpliceTrainer, draw_seed: int, variants: list[str]) -> list[dict[str, object]]:
    """One fixed draw scored in fp32 and in each bf16 variant; the trainer is left in fp32."""
    augmenter = PairAugmenter(draw_seed)  # its own stream: training's draws are not disturbed
    a_crop = augmenter.structure(trainer.structure_image)
    b_crop = augmenter.appearance(trainer.appearance_image)
    reference = _score(trainer, a_crop, b_crop, None, False)
    rows: list[dict[str, object]] = []
    for variant in variants:
        scored = _score(trainer, a_crop, b_crop, *VARIANTS[variant])
        for name in TERMS:
            value, grad = reference[name]
            low_value, low_grad = scored[name]
            row = {"variant": variant, "term": name, "fp32": value,
                   "rel_error": abs(low_value - value) / abs(value) if value else float("nan"),
                   "grad_cosine": _cosine(low_grad, grad),
                   "grad_norm_ratio": float(low_grad.norm() / grad.norm())
                   if grad.norm() > 0 else float("nan")}
            rows.append(row)
            _print_row(row)  # as they come: a variant can take minutes on a CPU
    trainer.autocast_dtype, trainer.fp32_keys = None, False
    return rows


def _print_row(row: dict[str, object]) -> None:
    print(f"  {row['variant']:<14} {row['term']:<16} {row['fp32']:>11.4g} "
          f"{row['rel_error']:>9.2e} {row['grad_cosine']:>9.5f} {row['grad_norm_ratio']:>9.4f}",
          flush=True)


def run(model: str, pair: str, steps: int, args: argparse.Namespace) -> list[dict[str, object]]:
    structure_path, appearance_path, _ = _common.find_pair_files(pair)
    structure = _common.pil_to_tensor(_common.load_resized(structure_path, args.size))
    appearance = _common.pil_to_tensor(_common.load_resized(appearance_path, args.size))
    backbone = build_backbone(model, seed=args.seed)
    trainer = SpliceTrainer(backbone, structure, appearance,
                            TrainConfig(seed=args.seed, dtype="fp32", steps=max(1, steps)),
                            args.device)
    results: list[dict[str, object]] = []
    started = time.perf_counter()
    checkpoints = sorted({0, steps} if args.at_start else {steps})
    for checkpoint in checkpoints:
        while trainer.step_index < checkpoint:
            trainer.step()
            if trainer.step_index % 25 == 0:
                trainer.flush_logs()
        trainer.flush_logs()
        history = trainer.history["structure"]
        early, recent = history[1:11], history[-10:]
        print(f"\n{model} {Path(pair).name} (A {tuple(structure.shape[-2:])}, "
              f"B {tuple(appearance.shape[-2:])}) after {checkpoint} fp32 steps"
              + (f"; training structure term: steps 1-10 mean {sum(early) / len(early):.3g}, "
                 f"last 10 mean {sum(recent) / len(recent):.3g}" if early else "")
              + f" [{time.perf_counter() - started:.0f} s, {_common.load_average()}]")
        print(f"  {'variant':<14} {'term':<16} {'fp32 value':>11} {'rel err':>9} "
              f"{'grad cos':>9} {'|g| ratio':>9}", flush=True)
        rows = measure(trainer, draw_seed=10_000 + checkpoint, variants=args.variants)
        for row in rows:
            row.update(model=model, pair=Path(pair).name, step=checkpoint)
        results.extend(rows)
        print(f"  [{time.perf_counter() - started:.0f} s, {_common.load_average()}]", flush=True)
    return results


def main(argv: list[str]) -> int:
    args = _parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    print(_common.machine_line())
    print(_common.RANDOM_INIT_NOTE)
    print(f"precision: fp32 reference vs {args.device} bf16 autocast (the generator and the "
          "losses stay fp32 in every variant); gradients w.r.t. the generator's parameters, per term")
    results: list[dict[str, Any]] = []
    for model in args.models:
        steps = _steps_for(model, args.steps)
        for pair in args.pairs:
            results.extend(run(model, _pair_dir(pair, args.pairs_dir), steps, args))
    print("\nworst over pairs, per model, checkpoint and variant (min grad cosine, max rel err):")
    keys = sorted({(r["model"], r["step"], r["variant"]) for r in results}, key=str)
    for key in keys:
        rows = [r for r in results if (r["model"], r["step"], r["variant"]) == key]
        worst = min(rows, key=lambda r: r["grad_cosine"] if math.isfinite(r["grad_cosine"]) else 2)
        print(f"  {key[0]} step {key[1]:>4} {key[2]:<14} min cos {worst['grad_cosine']:.5f} "
              f"({worst['term']}, {worst['pair']}); max rel err "
              f"{max(r['rel_error'] for r in rows):.2e}")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
