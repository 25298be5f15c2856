"""``python -m comfy_splice STRUCTURE [STRUCTURE ...] APPEARANCE -o OUT --weights FILE``: Splice
without ComfyUI.

Trains a generator on the pair and writes G(structure) at the structure image's full
resolution; optionally saves the generator and prints the structure distance and DINO-I.
Several structure images of one size (e.g. ``frames/*.png``, keyframes of one shot) train one
generator together; then OUT is a folder and each input's result is written there as
``<its name>.png``.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from .dino.download import download_weights
from .dino.models import DEFAULT_MODEL, DINO_MODELS, WeightsError
from .dino.weights import load_backbone
from .budget import plan_training, standalone_memory
from .checkpoint import save_generator
from .generator import apply_generator
from .losses import AppearanceLoss, IdentityLoss, StructureLoss
from .memory import vit_shape
from .metrics import splice_scores
from .run import TrainConfig
from .train import stack_keyframes, train_generator

log = logging.getLogger("comfy_splice")


def load_image(path: str | Path) -> torch.Tensor:
    """An image file -> [1, 3, H, W] float in [0, 1]."""
    try:
        with Image.open(path) as img:
            array = np.asarray(img.convert("RGB"), dtype=np.float32) / 255.0
    except (OSError, ValueError) as exc:
        raise ValueError(f"cannot read image {path}: {exc}") from exc
    return torch.from_numpy(array).permute(2, 0, 1)[None].contiguous()


def save_image(image: torch.Tensor, path: str | Path) -> None:
    """[1, 3, H, W] in [0, 1] -> an image file (format from the suffix)."""
    array = (image[0].clamp(0, 1).permute(1, 2, 0).numpy() * 255.0).round().astype(np.uint8)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m comfy_splice", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("structure", nargs="+",
                   help="structure image A (its layout is kept); several of one size train one "
                        "generator on all of them as keyframes")
    p.add_argument("appearance", help="appearance image B (its look is taken)")
    p.add_argument("-o", "--output", required=True,
                   help="output image path (.png, .jpg, ...); a folder for several structure images "
                        "(or one ending in /), which gets <name>.png per input")
    p.add_argument("--weights", help="DINO ViT weights file (.pth or .safetensors)")
    p.add_argument("--download", metavar="DIR",
                   help=("explicitly download the --model weights (Hugging Face safetensors; "
                         "$HF_ENDPOINT for a mirror) into DIR if missing"))
    p.add_argument("--model", default=DEFAULT_MODEL, choices=sorted(DINO_MODELS),
                   help="official DINO model for --download (default %(default)s)")
    d = TrainConfig()
    p.add_argument("--steps", type=int, default=d.steps, help="training steps (default %(default)s)")
    p.add_argument("--lr", type=float, default=d.lr, help="Adam learning rate (default %(default)s)")
    p.add_argument("--seed", type=int, default=d.seed, help="seed for init and augmentation")
    p.add_argument("--structure-weight", type=float, default=StructureLoss().weight)
    p.add_argument("--appearance-weight", type=float, default=AppearanceLoss().weight)
    p.add_argument("--identity-weight", type=float, default=IdentityLoss().weight)
    p.add_argument("--block", type=int, default=-1, help="ViT block for all terms (-1 = last)")
    p.add_argument("--full-image-every", type=int, default=d.full_image_every)
    p.add_argument("--antialias", action="store_true", help="antialias the resize before DINO")
    p.add_argument("--dtype", default="auto", choices=("auto", "bf16", "fp32"))
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, mps ...")
    p.add_argument("--save-generator", metavar="FILE", help="also save the trained generator (.safetensors)")
    p.add_argument("--metrics", action="store_true", help="print structure distance and DINO-I")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def _weights_path(args: argparse.Namespace) -> Path:
    """Where the weights come from; without any, say where to put them and how to get them."""
    model = DINO_MODELS[args.model]
    if args.weights:
        return Path(args.weights)
    if args.download:
        return download_weights(args.model, args.download)
    raise WeightsError(f"No DINO weights given. Pass --weights FILE (e.g. {model.hf_file_name} from "
                       f"{model.hf_url}), or --download DIR to fetch them into DIR explicitly.")


def output_paths(structures: list[str], output: str) -> list[Path]:
    """Where each structure image's result goes: OUT itself for one image (unless OUT is a
    folder), else OUT/<stem>.png for each (two inputs with one name are refused)."""
    target = Path(output)
    if len(structures) == 1 and not (output.endswith(("/", "\\")) or target.is_dir()):
        return [target]
    if target.is_file():
        raise ValueError(f"-o {output} is a file; with {len(structures)} structure images it must be a "
                         f"folder (each result is written there as <name>.png)")
    paths = [target / f"{Path(name).stem}.png" for name in structures]
    seen: dict[Path, str] = {}
    for name, path in zip(structures, paths):
        if path in seen:
            raise ValueError(f"{seen[path]} and {name} would both be written to {path}; rename one")
        seen[path] = name
    return paths


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; returns the process exit code (2 for a user mistake)."""
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    device = torch.device(("cuda" if torch.cuda.is_available() else "cpu")
                          if args.device == "auto" else args.device)
    try:
        outputs = output_paths(args.structure, args.output)
        structure = stack_keyframes([load_image(path) for path in args.structure])
        appearance = load_image(args.appearance)
        backbone = load_backbone(_weights_path(args), device=device)
        config = TrainConfig(
            steps=args.steps, lr=args.lr, seed=args.seed, dtype=args.dtype, antialias=args.antialias,
            full_image_every=args.full_image_every,
            structure=StructureLoss(args.structure_weight, args.block),
            appearance=AppearanceLoss(args.appearance_weight, args.block),
            identity=IdentityLoss(args.identity_weight, args.block))
        plan = plan_training((int(structure.shape[-2]), int(structure.shape[-1])),
                             (int(appearance.shape[-2]), int(appearance.shape[-1])),
                             int(structure.shape[0]), vit_shape(backbone), config,
                             standalone_memory(device), "splice")
        from tqdm import tqdm

        with tqdm(total=config.steps, disable=args.quiet, desc="splice", unit="step") as bar:
            trained = train_generator(
                backbone, structure, appearance, config, device,
                on_step=lambda done, total: bar.update(done - bar.n),
                on_log=lambda step, losses: bar.set_postfix(loss=f"{losses['loss']:.4f}"),
                backward_mode=plan.backward_mode)
        results = apply_generator(trained.generator, structure, device, batch_size=1)
        for index, path in enumerate(outputs):
            result = results[index: index + 1]
            save_image(result, path)
            log.info("wrote %s (%dx%d)", path, result.shape[-1], result.shape[-2])
            if args.metrics:
                sd, di = splice_scores(backbone, result, structure[index: index + 1], appearance, device)
                log.info("%s: structure distance %.5f  DINO-I %.4f", path.name, sd.item(), di.item())
        if args.save_generator:
            log.info("saved generator to %s", save_generator(args.save_generator, trained))
    except ValueError as exc:  # every refusal (WeightsError, TrainingDiverged ...) is a ValueError
        log.error("error: %s", exc)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
