"""Memory: checkpointing changes nothing, the estimate bounds the measured peak, the budget
check names what fits, max_megapixels trains small and applies large, memory is given back."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import psutil
import pytest
import torch

import comfy_splice.generator as generator_module
from comfy_splice.dino.vit import DinoBackbone
from comfy_splice.generator import LEAN, PLAIN, apply_generator, build_generator
from comfy_splice.measure import TensorPeakTracker, release_heap
from comfy_splice.refusal import MemoryBudgetError
from comfy_splice.memory import (CPU_RESIDENT_OVERHEAD, ViTShape,
                                 apply_chunk_that_fits, check_training_fits, estimate_apply_peak,
                                 estimate_training_peak, megapixels_that_fit, overhead_for,
                                 scaled_size, vit_shape)
from comfy_splice.run import TrainConfig
from comfy_splice.train import SpliceTrainer, train_generator

from .conftest import synthetic_image


def _grads(checkpointing: bool, monkeypatch: pytest.MonkeyPatch, shape: tuple[int, ...],
           group_elements: int) -> tuple[torch.Tensor, list[tuple[str, torch.Tensor]]]:
    monkeypatch.setattr(generator_module, "GROUP_ELEMENTS", group_elements)
    net = build_generator(3)
    net.backward_mode = LEAN if checkpointing else PLAIN
    x = torch.rand(*shape, generator=torch.Generator().manual_seed(4))
    y = net(x)
    (y * torch.linspace(0, 1, shape[-1])).square().mean().backward()
    return y.detach(), [(name, p.grad.clone()) for name, p in net.named_parameters()]


# group_elements 1: the 4-channel groups a large image gets; 1 << 22: the default, whole levels
# in one group at these sizes. Odd sizes are padded; a batch normalises each image alone; at
# 64x64 (the smallest padded size) the transposed conv would not give the same bits.
@pytest.mark.parametrize("shape,group_elements", [((1, 3, 70, 100), 1), ((1, 3, 70, 100), 1 << 22),
                                                  ((1, 3, 37, 101), 1), ((2, 3, 96, 64), 1),
                                                  ((1, 3, 64, 64), 1 << 22)])
def test_lean_training_gives_the_plain_networks_output_and_gradients_bit_for_bit(
        monkeypatch: pytest.MonkeyPatch, shape: tuple[int, ...], group_elements: int) -> None:
    """Tolerance zero: every recomputed value comes from the op autograd calls on the plain
    network, with the same inputs (generator.py's lean merge), so nothing may differ."""
    y_plain, g_plain = _grads(False, monkeypatch, shape, group_elements)
    y_lean, g_lean = _grads(True, monkeypatch, shape, group_elements)
    assert torch.equal(y_plain, y_lean)
    assert len(g_plain) == len(g_lean) == 112  # 26 convs and 30 norms
    for (name, plain), (_, lean) in zip(g_plain, g_lean):
        assert torch.equal(plain, lean), name


def _train_peak(checkpointing: bool, monkeypatch: pytest.MonkeyPatch, size: int = 192) -> int:
    monkeypatch.setattr(generator_module, "GROUP_ELEMENTS", 1)  # a large image's groups
    net = build_generator(0)
    net.backward_mode = LEAN if checkpointing else PLAIN
    x = torch.rand(1, 3, size, size)
    tracker = TensorPeakTracker()
    tracker.add([x, *net.parameters()])
    base = tracker.current
    with tracker:
        net(x).square().mean().backward()
    return tracker.peak - base


def test_lean_training_holds_under_440_bytes_per_pixel(monkeypatch: pytest.MonkeyPatch) -> None:
    """Measured 426 bytes per pixel (the output and its gradient included) against 1420 for
    the plain network and ~800 for level-by-level checkpoints."""
    plain = _train_peak(False, monkeypatch)
    lean = _train_peak(True, monkeypatch)
    assert lean <= 440 * 192 * 192 and lean < 0.31 * plain, (lean / 192**2, plain / 192**2)


def test_tracker_counts_live_storages_once() -> None:
    tracker = TensorPeakTracker()
    with tracker:
        a = torch.ones(1000)  # 4000 bytes
        view = a[:10]
        a.add_(1)
        b = torch.zeros(500)  # 2000 bytes
        del b
        c = torch.zeros(250)  # 1000 bytes
    assert tracker.peak == 6000
    assert tracker.current == 5000
    assert view.sum() > 0 and c.numel() == 250


@pytest.mark.parametrize("structure_hw,appearance_hw", [((160, 224), (192, 144)), ((256, 320), (256, 256))])
def test_estimate_bounds_the_measured_training_peak(tiny_backbone: DinoBackbone, structure_hw: tuple[int, int],
                                                    appearance_hw: tuple[int, int]) -> None:
    """Step 0 (with G on the whole structure image) and a regular step, measured with the tracker,
    against the estimate the nodes check before training."""
    structure = synthetic_image(*structure_hw, seed=1)
    appearance = synthetic_image(*appearance_hw, seed=2)
    trainer = SpliceTrainer(tiny_backbone, structure, appearance, TrainConfig(steps=2), "cpu")
    peak = 0
    for _ in range(2):
        tracker = TensorPeakTracker()
        tracker.add([*trainer.backbone.parameters(), *trainer.generator.parameters(),
                     trainer.structure_image, trainer.appearance_image])
        for state in trainer.optimizer.state.values():
            tracker.add(v for v in state.values() if isinstance(v, torch.Tensor))
        with tracker:
            trainer.step()
        peak = max(peak, tracker.peak)
    estimate = estimate_training_peak(structure_hw, appearance_hw, vit_shape(tiny_backbone))
    assert peak <= estimate <= 3 * peak, (peak, estimate)


MEASURED = Path(__file__).parent / "data" / "measured_training_memory.json"


def _measured_rows() -> list[dict[str, object]]:
    return json.loads(MEASURED.read_text())["rows"]


@pytest.mark.parametrize("row", _measured_rows(), ids=lambda r: f"{r['model']}-{r['size']}")
def test_estimate_bounds_the_benchmarks_measured_peaks(row: dict[str, object]) -> None:
    """The README's figures (bench/bench_memory.py with the real ViT shapes, up to a 12 MP
    pair): the estimate Train Generator checks before training must cover every kind of step,
    and stay close enough that a run which fits is not refused (within 1.3x)."""
    vit = ViTShape(**row["vit"])  # type: ignore[arg-type]
    width, height = (int(v) for v in str(row["size"]).split("x"))
    full = estimate_training_peak((height, width), (height, width), vit) / 2**20
    regular = estimate_training_peak((height, width), (height, width), vit, full_image=False) / 2**20
    measured_full = max(float(row["step0_mib"]), float(row["full_mib"]))  # type: ignore[arg-type]
    measured_regular = float(row["regular_mib"])  # type: ignore[arg-type]
    assert measured_full <= full <= 1.3 * measured_full, (measured_full, full)
    assert measured_regular <= regular <= 1.3 * measured_regular, (measured_regular, regular)


_RESIDENT_RUN = textwrap.dedent("""
    import json, resource, sys
    import psutil, torch
    from comfy_splice.dino.weights import load_backbone
    from comfy_splice.measure import release_heap
    from comfy_splice.memory import estimate_training_peak, vit_shape
    from comfy_splice.run import TrainConfig
    from comfy_splice.train import SpliceTrainer
    backbone = load_backbone(sys.argv[1])
    gen = torch.Generator().manual_seed(0)
    structure, appearance = (torch.rand(1, 3, 720, 1280, generator=gen) for _ in range(2))
    release_heap()
    before = psutil.Process().memory_info().rss
    trainer = SpliceTrainer(backbone, structure, appearance, TrainConfig(full_image_every=2), "cpu")
    for _ in range(3):  # step 0, a regular step, a full-image step with every term
        trainer.step()
    growth = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - before
    print(json.dumps([growth, estimate_training_peak((720, 1280), (720, 1280), vit_shape(backbone))]))
""")


@pytest.mark.slow
def test_cpu_estimate_bounds_what_the_process_really_grows_by(tiny_dino_file: Path) -> None:
    """On the CPU, Train Generator compares the estimate times CPU_RESIDENT_OVERHEAD with the
    available RAM, so the process's peak RSS must grow by less than that. 1280x720 with a tiny
    ViT is the worst case measured (the generator is nearly all of it, and its blocks are just
    under glibc's 32 MB mmap threshold, so the heap keeps what they free); a fresh process, so
    that the peak RSS is this run's own."""
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    done = subprocess.run([sys.executable, "-c", _RESIDENT_RUN, str(tiny_dino_file)], env=env,
                          capture_output=True, text=True, timeout=900, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    growth, tensors = json.loads(done.stdout.strip().splitlines()[-1])
    assert overhead_for("cpu") == CPU_RESIDENT_OVERHEAD and overhead_for("meta") == 1.0
    # the estimate with overhead is the tensor estimate times the factor (the child's figure)
    assert growth <= tensors * overhead_for("cpu"), (growth, tensors)
    assert growth > tensors, (growth, tensors)  # why the factor: the tensors alone under-count


def test_estimate_counts_every_keyframe(tiny_backbone: DinoBackbone) -> None:
    """K keyframes add K images and K whole-image targets to what a run holds."""
    frames = torch.cat([synthetic_image(96, 128, seed=i) for i in range(5)])
    appearance = synthetic_image(120, 100, seed=9)
    trainer = SpliceTrainer(tiny_backbone, frames, appearance, TrainConfig(steps=1), "cpu")
    with torch.no_grad():
        per_frame = trainer.keyframe(0).nbytes + trainer._full_structure_target(0).nbytes
    vit = vit_shape(tiny_backbone)
    one = estimate_training_peak((96, 128), (120, 100), vit, keyframes=1)
    five = estimate_training_peak((96, 128), (120, 100), vit, keyframes=5)
    assert five - one >= 4 * per_frame
    with pytest.raises(MemoryBudgetError, match="5 128x96 structure keyframes.*fewer keyframes"):
        check_training_fits((96, 128), (120, 100), vit, five - 1, keyframes=5)
    assert check_training_fits((96, 128), (120, 100), vit, five, keyframes=5) == five


def test_apply_estimate_bounds_the_measured_peak() -> None:
    net = build_generator(0)
    images = torch.rand(2, 3, 200, 264)
    tracker = TensorPeakTracker()
    tracker.add([images])
    with tracker, torch.no_grad():
        out = net(images)
    assert out.shape == images.shape
    estimate = estimate_apply_peak(200, 264, 2)
    assert tracker.peak <= estimate <= 2 * tracker.peak + (64 << 20), (tracker.peak, estimate)


def test_budget_refusal_names_the_size_that_fits(tiny_backbone: DinoBackbone) -> None:
    vit = vit_shape(tiny_backbone)
    photo = (3024, 4032)
    need = estimate_training_peak(photo, photo, vit)
    budget = need // 4
    with pytest.raises(MemoryBudgetError, match=r"set max_megapixels to [0-9.]+ or less") as info:
        check_training_fits(photo, photo, vit, budget)
    message = str(info.value)
    assert "4032x3024" in message and "written at 4032x3024" in message
    fits = megapixels_that_fit(budget, photo, photo, vit)
    assert 0 < fits < 12.2
    small = scaled_size(*photo, fits)
    assert check_training_fits(small, small, vit, budget) <= budget
    with pytest.raises(MemoryBudgetError, match="free memory"):
        check_training_fits(photo, photo, vit, 1 << 20)


def test_apply_chunk_shrinks_then_refuses() -> None:
    one = estimate_apply_peak(1000, 1000, 1)
    assert apply_chunk_that_fits(1000, 1000, 8, one * 3) in (2, 3)
    assert apply_chunk_that_fits(1000, 1000, 8, one * 100) == 8
    with pytest.raises(MemoryBudgetError, match=r"an image of about \d+x\d+ would fit"):
        apply_chunk_that_fits(8000, 8000, 1, one)


def test_max_megapixels_trains_small_and_applies_at_full_size(tiny_backbone: DinoBackbone) -> None:
    structure = synthetic_image(300, 400, seed=1)
    appearance = synthetic_image(240, 240, seed=2)
    config = TrainConfig(steps=1, max_megapixels=0.03)
    trainer = SpliceTrainer(tiny_backbone, structure, appearance, config, "cpu")
    height, width = trainer.structure_image.shape[-2:]
    assert height * width <= 30_000 and abs(width / height - 4 / 3) < 0.02
    trained = train_generator(tiny_backbone, structure, appearance, config, "cpu")
    assert trained.config.max_megapixels == 0.03
    out = apply_generator(trained.generator, structure, "cpu")
    assert out.shape == structure.shape


def test_memory_returns_to_baseline_after_a_1080p_training(tiny_backbone: DinoBackbone) -> None:
    """One step on a 1920x1080 pair (the generator's large allocations) with the tiny ViT."""
    structure = torch.rand(1, 3, 1080, 1920)
    appearance = torch.rand(1, 3, 1080, 1920)
    small = TrainConfig(steps=1, full_image_every=0)
    train_generator(tiny_backbone, structure[..., :128, :128], appearance[..., :128, :128], small, "cpu")
    release_heap()
    process = psutil.Process()
    before = process.memory_info().rss
    trained = train_generator(tiny_backbone, structure, appearance, copy.deepcopy(small), "cpu")
    del trained
    release_heap()
    after = process.memory_info().rss
    assert after <= 1.15 * before, (before / 2**20, after / 2**20)
