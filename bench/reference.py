"""Time the reference Splice implementation (omerbt/Splice) on this machine.

Why this exists: the speed-up we claim is against the authors' own code, measured on the same
machine, not against a number quoted from elsewhere. The reference is *not* vendored: the
reader clones it (https://github.com/omerbt/Splice) and passes the path with
``--reference-dir`` or ``SPLICE_REFERENCE_DIR``.

The reference loads DINO with ``torch.hub.load('facebookresearch/dino:main', name)``, which
downloads code and weights. This harness patches that one call only: it loads the same model
through the official DINO repository's own ``hubconf.py`` from a local clone
(https://github.com/facebookresearch/dino, ``--dino-dir`` or ``SPLICE_DINO_DIR``) with
``pretrained=False``. The result is DINO's own VisionTransformer with random weights, so
everything that makes the reference slow (explicit softmax attention, weights with
``requires_grad=True``, hooks registered per call, six ViT forwards per step) is unchanged.
Its training logic (dataset, model, LossG, optimiser, scheduler, config) is used as is.

Usable as a script (one configuration per process, so peak RSS belongs to it) and as a module
(``ReferenceTrainer``) for bench_vs_reference.py.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import importlib.machinery
import importlib.util
import os
import random
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any, Iterator

from bench import _common

REFERENCE_URL = "https://github.com/omerbt/Splice"
DINO_URL = "https://github.com/facebookresearch/dino"
_DINO_HUB_REPO = "facebookresearch/dino:main"
# Top-level package names the reference uses; they must come from its checkout.
_REFERENCE_PACKAGES = ("data", "models", "util")

REGULAR_STEP_NOTE = (
    "regular step = the body of the reference's train.py loop: dataset[0] (augment + crop), "
    "Model forward (G on A' and B'), LossG, loss.item() (its progress bar reads it every "
    "step), backward, Adam step, scheduler step; without the G(A) + PNG write the loop does "
    "every 10 steps and without the full-image step every 75 steps"
)


def resolve_reference_dir(arg: str | None) -> Path:
    """The reference checkout: argument, then environment; clear message when missing."""
    value = arg or os.environ.get("SPLICE_REFERENCE_DIR")
    if not value:
        raise SystemExit(
            "no reference checkout: git clone "
            f"{REFERENCE_URL} and pass --reference-dir PATH (or set SPLICE_REFERENCE_DIR)"
        )
    path = Path(value).expanduser().resolve()
    expected = (path / "util" / "losses.py", path / "conf" / "default" / "config.yaml")
    if not all(p.is_file() for p in expected):
        raise SystemExit(f"{path} does not look like a checkout of {REFERENCE_URL}")
    return path


def resolve_dino_dir(arg: str | None) -> Path:
    """The official DINO code (hubconf.py + vision_transformer.py): argument, then environment."""
    value = arg or os.environ.get("SPLICE_DINO_DIR")
    if not value:
        raise SystemExit(
            f"no DINO checkout: git clone {DINO_URL} and pass --dino-dir PATH "
            "(or set SPLICE_DINO_DIR); only its model code is used, no weights are downloaded"
        )
    path = Path(value).expanduser().resolve()
    if not (path / "hubconf.py").is_file() or not (path / "vision_transformer.py").is_file():
        raise SystemExit(f"{path} does not look like a checkout of {DINO_URL}")
    return path


def describe_checkout(path: Path) -> str:
    """``path @ commit`` when the folder is a git clone (figures should name what they measured)."""
    try:
        commit = subprocess.run(
            ["git", "-C", str(path), "rev-parse", "--short", "HEAD"],
            check=True, capture_output=True, text=True, timeout=10,
        ).stdout.strip()
        return f"{path} @ {commit}"
    except (OSError, subprocess.SubprocessError):
        return f"{path} (not a git clone, commit unknown)"


@contextlib.contextmanager
def random_init_dino_hub(dino_dir: Path) -> Iterator[None]:
    """Serve the reference's DINO hub call from a local DINO clone, without weights.

    Only ``torch.hub.load('facebookresearch/dino:main', name)`` is redirected (to the same
    ``hubconf.py`` entry point with ``pretrained=False``); any other hub call goes through.
    The hub entry builds the model exactly as the download path does before loading the
    state dict, so the random-number stream consumed is the same too.
    """
    import torch

    original = torch.hub.load

    def load(repo_or_dir: str, model: str, *args: Any, **kwargs: Any) -> Any:
        if repo_or_dir != _DINO_HUB_REPO:
            return original(repo_or_dir, model, *args, **kwargs)
        return original(str(dino_dir), model, source="local", pretrained=False)

    torch.hub.load = load
    try:
        yield
    finally:
        torch.hub.load = original


def make_dataroot(structure: Any, appearance: Any, root: Path) -> Path:
    """Write the pair in the reference's dataset layout (A/ and B/, one image each).

    PNG, so the reference reads back exactly the pixels our side gets as tensors.
    """
    for folder, image in (("A", structure), ("B", appearance)):
        (root / folder).mkdir(parents=True, exist_ok=True)
        image.save(root / folder / "image.png")
    return root


def _import_reference(reference_dir: Path) -> dict[str, Any]:
    """Import the reference's modules from its checkout (they use generic package names)."""
    for name in _REFERENCE_PACKAGES:
        module = sys.modules.get(name)
        if module is not None:
            origin = Path(getattr(module, "__file__", "") or "").resolve()
            if reference_dir not in origin.parents:
                raise SystemExit(f"a foreign module named {name!r} is already imported ({origin})")
        if module is None:
            # Found in the checkout only (not on the import path) and registered under its own
            # name, so the reference's absolute imports (`from util.util import ...`) resolve.
            spec = importlib.machinery.PathFinder.find_spec(name, [str(reference_dir)])
            if spec is None:
                raise SystemExit(f"{reference_dir} has no package {name!r}: not an omerbt/Splice checkout")
            module = importlib.util.module_from_spec(spec)
            sys.modules[name] = module
            assert spec.loader is not None
            spec.loader.exec_module(module)
    return {
        "dataset": importlib.import_module("data.Dataset"),
        "model": importlib.import_module("models.model"),
        "losses": importlib.import_module("util.losses"),
        "util": importlib.import_module("util.util"),
    }


class ReferenceTrainer:
    """The reference's training state, stepped one loop iteration at a time.

    Built in the order train.py builds it (seed, dataset, Model, LossG, optimiser, scheduler)
    from the reference's own conf/default/config.yaml; only dataroot, the DINO model name
    and the seed (the config's -1 means "random") are set here.
    """

    def __init__(self, reference_dir: Path, dino_dir: Path, model_name: str, dataroot: Path,
                 seed: int = 0) -> None:
        import numpy as np
        import torch
        import yaml

        modules = _import_reference(reference_dir)
        with open(reference_dir / "conf" / "default" / "config.yaml", encoding="utf-8") as handle:
            cfg = yaml.safe_load(handle)
        cfg["dataroot"] = str(dataroot)
        cfg["dino_model_name"] = model_name
        cfg["seed"] = seed
        self.cfg = cfg

        random.seed(seed)
        np.random.seed(seed)
        torch.manual_seed(seed)
        with contextlib.redirect_stdout(sys.stderr):  # its "Image sizes ..." line
            self.dataset = modules["dataset"].SingleImageDataset(cfg)
        self.model = modules["model"].Model(cfg)
        with random_init_dino_hub(dino_dir):
            self.criterion = modules["losses"].LossG(cfg)
        self.optimizer = modules["util"].get_optimizer(cfg, self.model.netG.parameters())
        self.scheduler = modules["util"].get_scheduler(
            self.optimizer,
            lr_policy=cfg["scheduler_policy"],
            n_epochs=cfg["n_epochs"],
            n_epochs_decay=cfg["scheduler_n_epochs_decay"],
            lr_decay_iters=cfg["scheduler_lr_decay_iters"],
        )
        self._save_result = modules["util"].save_result
        # The reference chooses its device at import time; report the one it took.
        self.device = str(modules["losses"].device)

    @property
    def next_step(self) -> int:
        """Index of the dataset step the next call will run (train.py's epoch minus one)."""
        return int(self.dataset.step.item()) + 1

    def next_is_regular(self) -> bool:
        """False for step 0 / every 75th step, which also run G and DINO on the whole of A."""
        return self.next_step % self.cfg["entire_A_every"] != 0

    def step(self, log_images: bool = False) -> None:
        """One iteration of train.py's loop; the image log only when ``log_images`` is set."""
        inputs = self.dataset[0]
        for key in inputs:
            inputs[key] = inputs[key].to(self.device)
        epoch = int(inputs["step"].item()) + 1
        self.optimizer.zero_grad()
        outputs = self.model(inputs)
        losses = self.criterion(outputs, inputs)
        loss = losses["loss"]
        loss.item()  # the loop's tqdm postfix reads the loss every step (a host sync on CUDA)
        if log_images and epoch % self.cfg["log_images_freq"] == 0:
            self.log_image()
        loss.backward()
        self.optimizer.step()
        self.scheduler.step()

    def log_image(self) -> None:
        """The loop's every-10-steps block: G on the full structure image, written as PNG."""
        import torch

        image = self.dataset.get_A().to(self.device)
        with torch.no_grad():
            output = self.model.netG(image)
        self._save_result(output[0], self.cfg["dataroot"])


def _parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reference-dir", help="checkout of omerbt/Splice (or SPLICE_REFERENCE_DIR)")
    parser.add_argument("--dino-dir", help="checkout of facebookresearch/dino (or SPLICE_DINO_DIR)")
    parser.add_argument("--model", default="dino_vitb8",
                        choices=["dino_vits8", "dino_vitb8", "dino_vits16", "dino_vitb16"])
    parser.add_argument("--size", type=int, default=512, help="short side of both images, px")
    parser.add_argument("--pair", help="folder with structure.jpg + appearance.jpg (or A/, B/); "
                        "default: the reference's datasets/splicing/cows")
    parser.add_argument("--steps", type=int, default=5, help="timed regular steps")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps first (step 0 included)")
    parser.add_argument("--log-repeats", type=int, default=3,
                        help="times to run the every-10-steps G(A)+PNG block alone (0: skip)")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"],
                        help="cpu hides CUDA from the process (the reference picks CUDA by itself)")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch.set_num_threads (default: torch's own choice)")
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    _common.hide_cuda_if_cpu_requested(argv)
    args = _parse_args(argv)
    reference_dir = resolve_reference_dir(args.reference_dir)
    dino_dir = resolve_dino_dir(args.dino_dir)
    structure_path, appearance_path, pair_name = _common.find_pair_files(args.pair, reference_dir)

    import torch

    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: torch sees no CUDA device")
    if args.threads is not None:
        torch.set_num_threads(args.threads)

    structure = _common.load_resized(structure_path, args.size)
    appearance = _common.load_resized(appearance_path, args.size)
    print(f"reference: {describe_checkout(reference_dir)}")
    print(f"DINO model code: {describe_checkout(dino_dir)} (hubconf.py, pretrained=False)")
    print(_common.RANDOM_INIT_NOTE)
    print(f"machine: {_common.machine_line()}")
    print(f"pair: {pair_name}: A {structure.size[0]}x{structure.size[1]}, "
          f"B {appearance.size[0]}x{appearance.size[1]} (short side {args.size})")
    print(f"config: the reference's conf/default/config.yaml, seed {args.seed}; "
          "run under this torch/torchvision, not the versions it pinned (torch 1.9): "
          "torchvision's tensor Resize now antialiases by default, the pinned one did not")
    print(REGULAR_STEP_NOTE)
    sys.stdout.flush()

    with tempfile.TemporaryDirectory(prefix="splice_ref_bench_") as tmp:
        dataroot = make_dataroot(structure, appearance, Path(tmp))
        trainer = ReferenceTrainer(reference_dir, dino_dir, args.model, dataroot, args.seed)
        device = trainer.device
        rss_before = _common.current_rss_mib()
        for _ in range(args.warmup):
            trainer.step()
        if device.startswith("cuda"):
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        times = _common.time_steps(trainer.step, args.steps, device,
                                   is_regular=trainer.next_is_regular).walls
        stats = _common.Stats.of(times)
        if device.startswith("cuda"):
            memory = f"peak CUDA allocated {torch.cuda.max_memory_allocated() / 2**20:.0f} MiB"
        else:
            memory = (f"peak RSS {_common.peak_rss_mib():.0f} MiB "
                      f"(RSS {rss_before:.0f} MiB before the first step)")
        print(f"reference {args.model} {args.size}px {device}: median {stats.median:.3f} s/step "
              f"(min {stats.minimum:.3f}, max {stats.maximum:.3f}, n={stats.count} after "
              f"{args.warmup} warm-up); {memory}; 2000 steps ~ {stats.median * 2000 / 60:.1f} min")
        print("per-step s: " + " ".join(f"{t:.3f}" for t in times)
              + f" ({_common.load_average()} at the end)")
        if args.log_repeats > 0:
            log_times = _common.time_steps(trainer.log_image, args.log_repeats, device).walls
            log_stats = _common.Stats.of(log_times)
            as_is = stats.median + log_stats.median / trainer.cfg["log_images_freq"]
            print(f"log block (G(A) no-grad + PNG write, every {trainer.cfg['log_images_freq']} "
                  f"steps): median {log_stats.median:.3f} s -> loop as-is ~ {as_is:.3f} s/step "
                  "(not counting the every-75-steps full-image step)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
