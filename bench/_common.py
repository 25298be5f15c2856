"""Helpers shared by the benchmark scripts in bench/ (run them from the repository root as
modules, ``python -m bench.bench_train``, so ``comfy_splice`` and ``bench`` import as they are).

Kept free of module-level torch imports so that a script can decide which devices torch may
see (``CUDA_VISIBLE_DEVICES``) before torch initialises: the reference implementation picks
CUDA by itself whenever it is visible, so a CPU comparison has to hide the GPU first.
"""

from __future__ import annotations

import os
import platform
import resource
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

if TYPE_CHECKING:  # pragma: no cover - typing only
    import torch
    from PIL import Image

REPO_ROOT = Path(__file__).resolve().parent.parent

RANDOM_INIT_NOTE = (
    "random-init DINO weights (same cost as the real ones): the benchmark builds the ViT with "
    "random weights; the architecture, shapes and arithmetic are those of the pretrained model"
)

# File stems of a pair folder (A = structure, B = appearance).
_PAIR_FILES = ("structure", "appearance")
_IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp")


def hide_cuda_if_cpu_requested(argv: Sequence[str], default: str = "auto") -> None:
    """Hide CUDA from this process when the command line asks for ``--device cpu``.

    Must run before ``import torch``. The reference code decides its device at import time
    (``cuda`` whenever available), so this is the only way to run it on the CPU of a GPU
    machine without editing it; our own code gets the device explicitly and does not care.
    """
    args = list(argv)
    value = default
    for i, arg in enumerate(args):
        if arg == "--device" and i + 1 < len(args):
            value = args[i + 1]
        elif arg.startswith("--device="):
            value = arg.split("=", 1)[1]
    if value == "cpu":
        os.environ["CUDA_VISIBLE_DEVICES"] = ""


def _first_image(folder: Path) -> Path:
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in _IMAGE_SUFFIXES)
    if not files:
        raise SystemExit(f"no image in {folder}")
    return files[0]


def find_pair_files(pair: str | None, reference_dir: Path | None = None) -> tuple[Path, Path, str]:
    """Resolve ``--pair`` to (structure image, appearance image, description).

    Accepted: a folder with ``structure.*`` and ``appearance.*``; a folder in the reference's
    dataset layout (``A/`` and ``B/`` with one image each); or, when no pair is given, the
    ``cows`` example that ships with the reference checkout. Image content does not change
    the cost of a step (only the sizes do), so any photo pair gives the same figures.
    """
    if pair is None:
        pair = os.environ.get("SPLICE_BENCH_PAIR")
    if pair is None:
        if reference_dir is None:
            raise SystemExit(
                "no image pair: pass --pair DIR (a folder with structure.jpg and appearance.jpg, "
                "or A/ and B/ subfolders) or set SPLICE_BENCH_PAIR"
            )
        pair = str(reference_dir / "datasets" / "splicing" / "cows")
    folder = Path(pair).expanduser()
    if not folder.is_dir():
        raise SystemExit(f"--pair {pair}: not a directory")
    named: dict[str, Path] = {}
    for stem in _PAIR_FILES:
        for suffix in _IMAGE_SUFFIXES:
            candidate = folder / f"{stem}{suffix}"
            if candidate.is_file():
                named[stem] = candidate
                break
    if len(named) == 2:
        return named["structure"], named["appearance"], str(folder)
    if (folder / "A").is_dir() and (folder / "B").is_dir():
        return _first_image(folder / "A"), _first_image(folder / "B"), str(folder)
    raise SystemExit(
        f"--pair {folder}: expected structure.jpg + appearance.jpg, or A/ and B/ subfolders"
    )


def load_resized(path: Path, short_side: int) -> "Image.Image":
    """Open an image as RGB and resize it so its short side is ``short_side`` pixels.

    Done once, in PIL, before either implementation sees the image, so the reference (which
    reads files) and ours (which takes tensors) get exactly the same pixels.
    """
    from PIL import Image

    image = Image.open(path).convert("RGB")
    width, height = image.size
    scale = short_side / min(width, height)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    return image.resize(size, Image.Resampling.LANCZOS)


def pil_to_tensor(image: "Image.Image") -> "torch.Tensor":
    """[1,3,H,W] float32 in [0,1], the layout comfy_splice's core takes."""
    import numpy as np
    import torch

    array = np.asarray(image, dtype=np.float32) / 255.0
    return torch.from_numpy(array).permute(2, 0, 1).unsqueeze(0).contiguous()


def peak_rss_mib() -> float:
    """Peak resident set size of this process so far (Linux reports ru_maxrss in KiB)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024.0 * 1024.0) if sys.platform == "darwin" else peak / 1024.0


def current_rss_mib() -> float:
    """Current resident set size; used to show what the model alone occupies before steps."""
    try:
        import psutil

        return psutil.Process().memory_info().rss / (1024.0 * 1024.0)
    except ImportError:
        with open("/proc/self/statm", encoding="ascii") as handle:
            pages = int(handle.read().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE") / (1024.0 * 1024.0)


@dataclass(frozen=True)
class Stats:
    """Summary of per-step wall times in seconds."""

    median: float
    minimum: float
    maximum: float
    count: int

    @classmethod
    def of(cls, times: Sequence[float]) -> "Stats":
        if not times:
            raise ValueError("no timed steps")
        return cls(statistics.median(times), min(times), max(times), len(times))


def machine_line() -> str:
    """One line that says what the figures were measured on (they only mean anything with it)."""
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    parts = [
        f"python {platform.python_version()}",
        f"torch {torch.__version__}",
        f"cpu '{cpu}' ({os.cpu_count()} logical cores, torch threads {torch.get_num_threads()})",
    ]
    if torch.cuda.is_available():
        parts.append(f"cuda '{torch.cuda.get_device_name(0)}'")
    else:
        parts.append("no CUDA visible")
    return "; ".join(parts)


def load_average() -> str:
    """The 1-minute load average: above the core count, other processes share the CPU and
    every wall time measured meanwhile is inflated (that is why comparisons alternate)."""
    try:
        return f"load {os.getloadavg()[0]:.1f}/{os.cpu_count()} cores"
    except OSError:
        return "load unknown"


def resolve_devices(choice: str) -> list[str]:
    """``auto`` means CPU, plus CUDA when torch can see a GPU."""
    import torch

    if choice == "cpu":
        return ["cpu"]
    if choice == "cuda":
        if not torch.cuda.is_available():
            raise SystemExit("--device cuda: torch sees no CUDA device")
        return ["cuda"]
    return ["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"]


def planned_backward_mode(backbone: Any, structure: "torch.Tensor", appearance: "torch.Tensor",
                          config: Any, device: str) -> str:
    """The generator's backward mode a real run of ``config`` on these images would train in
    here: the training plan's choice (``comfy_splice.budget.plan_training``) from this machine's
    free memory (RAM on the CPU, the device's free memory on CUDA)."""
    from comfy_splice.budget import plan_training, standalone_memory
    from comfy_splice.memory import vit_shape

    plan = plan_training((int(structure.shape[-2]), int(structure.shape[-1])),
                         (int(appearance.shape[-2]), int(appearance.shape[-1])), int(structure.shape[0]),
                         vit_shape(backbone), config, standalone_memory(device), "bench")
    return str(plan.backward_mode)


def build_ours(model: str, structure: "torch.Tensor", appearance: "torch.Tensor", device: str,
               dtype: str = "auto", seed: int = 0) -> Any:
    """comfy_splice's SpliceTrainer on a random-init backbone (see RANDOM_INIT_NOTE; ``tiny``:
    :func:`tiny_backbone`), training
    in the generator's backward mode its plan picks here (:func:`planned_backward_mode`).

    Configured without full-image steps (``full_image_every=0``), so that every step after the
    trainer's warm-up is a regular one: the benchmarks time the trainer's own ``step()`` and
    need no copy of its schedule. Warm up for at least ``WARMUP_STEPS`` untimed steps."""
    from comfy_splice.dino.fixtures import build_backbone
    from comfy_splice.run import TrainConfig
    from comfy_splice.train import SpliceTrainer

    backbone = tiny_backbone(seed).to(device) if model == "tiny" else build_backbone(model, device=device, seed=seed)
    config = TrainConfig(seed=seed, dtype=dtype, full_image_every=0)
    mode = planned_backward_mode(backbone, structure, appearance, config, device)
    return SpliceTrainer(backbone, structure, appearance, config, device, backward_mode=mode)


def tiny_backbone(seed: int = 0) -> Any:
    """The tests' tiny random ViT (2 blocks, 64 channels, 8 px patches), written and loaded
    through the pack's own weight code: lets a test run a benchmark script end to end in
    seconds; its figures mean nothing."""
    import tempfile

    from comfy_splice.dino.fixtures import save_tiny_backbone
    from comfy_splice.dino.weights import load_backbone

    with tempfile.TemporaryDirectory() as folder:
        return load_backbone(save_tiny_backbone(Path(folder) / "tiny_dino_vit.pth", patch_size=8,
                                                seed=seed))


def ours_warmup_steps() -> int:
    """Steps before ours runs regular steps (step 0 is appearance-only): TrainConfig's value."""
    from comfy_splice.run import TrainConfig

    return TrainConfig().warmup_steps


@dataclass(frozen=True)
class Timing:
    """Per-step wall seconds of a timed block, and its process CPU seconds per step."""

    walls: list[float]
    cpu_per_step: float


def time_steps(step: Callable[[], None], count: int, device: str,
               is_regular: Callable[[], bool] | None = None) -> Timing:
    """The one timing loop: ``count`` timed calls of ``step``, synchronised with the device.

    ``is_regular`` (optional) says whether the next call is one to time; the others run untimed
    (the reference's full-image steps). CPU time is a second opinion: other processes on a
    shared machine steal wall time, but CPU time only counts this process's own work.
    """
    walls: list[float] = []
    cpu = 0.0
    while len(walls) < count:
        if is_regular is not None and not is_regular():
            step()
            continue
        sync(device)
        cpu_start, start = time.process_time(), time.perf_counter()
        step()
        sync(device)
        walls.append(time.perf_counter() - start)
        cpu += time.process_time() - cpu_start
    return Timing(walls, cpu / max(count, 1))


def sync(device: str) -> None:
    """Wait for queued GPU work so wall-clock timing covers it (no-op on CPU)."""
    if device.startswith("cuda"):
        import torch

        torch.cuda.synchronize()
