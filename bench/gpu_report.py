"""Every GPU figure of the pack from one command, written as JSON and as a Markdown table.

    python -m bench.gpu_report --device cuda                 # the GPU day: < 8 minutes on one H100
    python -m bench.gpu_report --device cpu --tiny           # what tests/core/test_gpu_report.py runs

No GPU had been lent to the project when this was written, so every CUDA figure in the docs is a
goal until this command has run on one. It measures, in one process, in this order (the most
wanted first, so that a tight ``--budget-s`` keeps them):

* **training**: seconds of a regular and of a full-image training step (``SpliceTrainer.step``,
  median of the timed steps after warm-up, the device synchronised around each) and the 2000-step
  wall time estimated from them with the real schedule (a full-image step every
  ``TrainConfig.full_image_every``), for ViT-B/8 at 512 px and 1080p and ViT-S/8 at 512 px, in bf16
  (the CUDA default) and fp32;
* **memory**: the peak device memory of each kind of step (``torch.cuda.max_memory_allocated``,
  reset per step; on the CPU the peak of tensor bytes from ``TensorPeakTracker``) against the
  pack's estimate (``comfy_splice.memory.estimate_training_peak``), from the same runs;
* **apply**: Splice Output's frames per second at 1080p and 4K, whole images and streamed in
  bands (``comfy_splice.apply.run_apply``, CPU frames in and out as the node does);
* **precision**: bf16 autocast against fp32 on this device's own autocast, loss values and the
  cosine of the generator's gradients per term (``bench/bench_precision.py``'s ``measure``);
* **cosegment**: DINO co-segmentation of 8 images at the paper's settings
  (``comfy_splice.cosegment.cosegment``, ``bench/bench_cosegment.py``'s scenes).

Every ViT is random-init of the real architecture (``comfy_splice.dino.fixtures.build_backbone``),
which costs what the pretrained one does; the output says so. Each measured item is guarded: a
failure (an out-of-memory 4K frame, say) is recorded in the JSON with its error and the rest still
run; items that would start after the ``--budget-s`` deadline are skipped with a note. ``--tiny``
swaps in a 2-block ViT, small images and 1-2 steps, so the whole report runs on a CPU in seconds
and cannot rot between GPU days.
"""

from __future__ import annotations

import argparse
import datetime
import gc
import json
import logging
from functools import partial
import platform
import statistics
import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

import torch
import torch.nn.functional as F

from bench import _common
from comfy_splice.dino.vit import DinoBackbone, timm_vit

log = logging.getLogger("bench.gpu_report")

SECTIONS = ("environment", "training", "memory", "apply", "precision", "cosegment")
"""Every section of the report, in the JSON and the Markdown, in this order."""

PAPER_STEPS = 2000
DEFAULT_BUDGET_S = 450.0  # 7.5 minutes: the report must finish within 8 on one H100
Row = dict[str, Any]


@dataclass(frozen=True)
class Profile:
    """What one run of the report measures: the real sizes (``FULL``) or tiny ones (``TINY``)."""

    training: tuple[tuple[str, str, tuple[int, int]], ...]  # (model, size label, (height, width))
    dtypes: tuple[str, ...]
    warmup_steps: int  # untimed steps first: step 0 (cold), then one of each kind
    timed_pairs: int  # timed (regular, full-image) pairs of steps after the warm-up
    apply_sizes: tuple[tuple[str, tuple[int, int]], ...]
    apply_repeats: int
    band_bytes: int
    precision_models: tuple[str, ...]
    precision_size: int
    precision_steps: int  # fp32 steps between the two precision measurements
    coseg_models: tuple[str, ...]
    coseg_count: int
    coseg_load_size: int
    coseg_stride: int
    coseg_sample_interval: int
    coseg_repeats: int
    threads: int | None = None  # torch threads while it runs (None: torch's choice)
    cpu_tensor_peaks: bool = True  # on the CPU, one more step per kind under TensorPeakTracker
    coseg_max_clusters: int = 14  # the paper's
    coseg_restarts: int = 10  # k-means restarts, the paper's
    tiny: bool = False


FULL = Profile(
    training=(("dino_vitb8", "512 px", (512, 683)), ("dino_vitb8", "1080p", (1080, 1920)),
              ("dino_vits8", "512 px", (512, 683))),
    dtypes=("bf16", "fp32"), warmup_steps=3, timed_pairs=8,
    apply_sizes=(("1080p", (1080, 1920)), ("4K", (2160, 3840))), apply_repeats=5,
    band_bytes=256 << 20,
    precision_models=("dino_vits8", "dino_vitb8"), precision_size=128, precision_steps=50,
    coseg_models=("dino_vits8", "dino_vitb8"), coseg_count=8, coseg_load_size=224, coseg_stride=4,
    coseg_sample_interval=100, coseg_repeats=3,
)

TINY = Profile(
    training=(("tiny", "56x40", (40, 56)),),
    dtypes=("bf16", "fp32"), warmup_steps=1, timed_pairs=1,
    apply_sizes=(("tiny 1080p stand-in", (36, 64)), ("tiny 4K stand-in", (40, 72))),
    apply_repeats=1, band_bytes=1 << 20,
    precision_models=("tiny",), precision_size=36, precision_steps=0,
    coseg_models=("tiny",), coseg_count=8, coseg_load_size=48, coseg_stride=8,
    coseg_sample_interval=2, coseg_repeats=1, coseg_max_clusters=4, coseg_restarts=2, tiny=True,
    cpu_tensor_peaks=False,  # the tracker's per-op cost would be most of the tiny run
    threads=1,  # tiny ops gain nothing from threads, and on a shared CPU every parallel region waits
)



def _ratio(peak: int | None, estimate: int) -> float | None:
    """Measured peak over the pack's estimate, when both are known."""
    return peak / estimate if estimate and peak is not None else None

def tiny_backbone() -> DinoBackbone:
    """The 2-block, 64-wide, patch-16 random ViT of the core tests' fixtures, built in memory."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        vit = timm_vit(16, 64, 2, 1, 4.0, 224)
    return DinoBackbone(vit, name="tiny", source="random init")


def backbone_for(model: str, device: str) -> DinoBackbone:
    """Random-init backbone of the real architecture (or the tiny one), on ``device``."""
    from comfy_splice.dino.fixtures import build_backbone

    if model == "tiny":
        return tiny_backbone().to(device)
    return build_backbone(model, device=device)


def smooth_image(height: int, width: int, seed: int) -> torch.Tensor:
    """[1, 3, H, W] in [0, 1]: low-frequency random colour fields (photo-like, not white noise;
    costs do not depend on content, loss values somewhat do)."""
    gen = torch.Generator().manual_seed(seed)
    coarse = torch.rand(1, 3, 6, 8, generator=gen)
    return F.interpolate(coarse, size=(height, width), mode="bicubic", align_corners=False).clamp(0, 1)


# -- the report: sections, guarded items, the deadline ---------------------------------------


@dataclass
class Report:
    """Sections of rows; every item is run through :meth:`guard`, so a failure becomes a row."""

    device: str
    deadline: float
    sections: dict[str, dict[str, Any]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in SECTIONS:
            self.sections[name] = {"rows": [], "notes": []}

    def note(self, section: str, text: str) -> None:
        self.sections[section]["notes"].append(text)

    def add(self, section: str, row: Row) -> None:
        self.sections[section]["rows"].append(row)

    def guard(self, sections: str | Iterable[str], item: str, measure: Callable[[], None]) -> None:
        """Run one measured item unless the deadline has passed; record a failure or a skip as a
        row of each of ``sections`` (an item may fill several, e.g. training and memory)."""
        names = [sections] if isinstance(sections, str) else list(sections)
        left = self.deadline - time.monotonic()
        if left <= 0:
            for name in names:
                self.add(name, {"item": item, "status": "skipped",
                                "note": "not started: the --budget-s deadline had passed"})
            log.warning("%s: skipped (budget spent)", item)
            return
        log.info("%s (%.0f s of budget left)", item, left)
        failed = False
        try:
            measure()
        except Exception as error:  # noqa: BLE001 - any failure is a result to record; the rest go on
            failed = True
            log.exception("%s failed", item)
            for name in names:
                self.add(name, {"item": item, "status": "failed",
                                "error": f"{type(error).__name__}: {error}",
                                "traceback": traceback.format_exc(limit=8)})
        if failed and self.device.startswith("cuda"):
            # after the except block: the traceback no longer holds the failed item's tensors
            gc.collect()
            torch.cuda.empty_cache()

    def finish(self) -> None:
        """Each section's status: ok, partial, failed, skipped (or empty when not asked for)."""
        for section in self.sections.values():
            states = {row.get("status", "ok") for row in section["rows"]}
            if not states:
                section["status"] = "empty"
            elif states == {"ok"}:
                section["status"] = "ok"
            elif len(states) == 1:
                section["status"] = states.pop()
            else:
                section["status"] = "partial"


def _median(values: list[float]) -> float:
    return float(statistics.median(values))


def _reset_peak(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()


def _cuda_peak(device: str) -> int | None:
    return int(torch.cuda.max_memory_allocated()) if device.startswith("cuda") else None


# -- training and memory ----------------------------------------------------------------------


def measure_training(report: Report, profile: Profile, model: str, size: str, hw: tuple[int, int],
                     dtype: str, backbone: DinoBackbone) -> None:
    """One (model, pair size, dtype): regular and full-image step times, peaks and estimates."""
    from bench.bench_memory import tracked_step
    from comfy_splice.memory import estimate_training_peak, vit_shape
    from comfy_splice.run import TrainConfig
    from comfy_splice.train import SpliceTrainer

    device = report.device
    height, width = hw
    # Full-image steps every second step: 0 (cold, appearance only), 1 regular, 2 full, ... so
    # both kinds come early and are timed from the same trainer; a full-image step costs the
    # same whether it is the 2nd or the 75th (its whole-image target is cached from step 0).
    config = TrainConfig(dtype=dtype, full_image_every=2, seed=0)
    structure, appearance = smooth_image(height, width, 1), smooth_image(height, width, 2)
    mode = _common.planned_backward_mode(backbone, structure, appearance, config, device)
    trainer = SpliceTrainer(backbone, structure, appearance, config, device, backward_mode=mode)
    for _ in range(profile.warmup_steps):
        trainer.step()
    times: dict[str, list[float]] = {"regular": [], "full": []}
    peaks: dict[str, int | None] = {"regular": None, "full": None}
    for _ in range(2 * profile.timed_pairs):
        kind = "full" if trainer.step_index % 2 == 0 else "regular"
        _reset_peak(device)
        times[kind].extend(_common.time_steps(trainer.step, 1, device).walls)
        peak = _cuda_peak(device)
        if peak is not None:
            peaks[kind] = max(peaks[kind] or 0, peak)
    if not device.startswith("cuda") and profile.cpu_tensor_peaks:
        for _ in range(2):  # one more step of each kind, under the tracker (slower: not timed)
            kind = "full" if trainer.step_index % 2 == 0 else "regular"
            peaks[kind] = max(peaks[kind] or 0, tracked_step(trainer))
    trainer.flush_logs()  # one sync; raises when a loss went non-finite
    every = TrainConfig().full_image_every
    n_full = len(range(0, PAPER_STEPS, every))
    regular, full = _median(times["regular"]), _median(times["full"])
    measured = len(times["regular"]) + len(times["full"])
    item = f"{model} {size} {dtype}"
    report.add("training", {
        "item": item, "status": "ok", "model": model, "size": size, "height": height, "width": width,
        "dtype": dtype, "autocast": str(trainer.autocast_dtype), "backward_mode": mode,
        "regular_s": regular, "full_s": full,
        "regular_times_s": times["regular"], "full_times_s": times["full"],
        "steps_2000_s": (PAPER_STEPS - n_full) * regular + n_full * full,
        "steps_2000_estimated_from": measured,
        "steps_2000_rule": f"{PAPER_STEPS - n_full} x median regular + {n_full} x median full-image "
                           f"(a full-image step every {every}); start-up not included"})
    vit = vit_shape(trainer.backbone)
    for kind in ("regular", "full"):
        estimate = estimate_training_peak(hw, hw, vit, full_image=kind == "full", backward_mode=mode)
        report.add("memory", {
            "item": f"{item} {kind}", "status": "ok", "model": model, "size": size, "dtype": dtype,
            "kind": kind, "backward_mode": mode, "peak_bytes": peaks[kind], "estimate_bytes": estimate,
            "ratio": _ratio(peaks[kind], estimate),
            "peak_source": ("torch.cuda.max_memory_allocated, reset per step" if device.startswith("cuda")
                            else "TensorPeakTracker (tensor bytes; no allocator on the CPU)"
                            if profile.cpu_tensor_peaks else "not measured (--tiny on the CPU)")})


def section_training(report: Report, profile: Profile) -> None:
    """Training step times (section training) and their peak memory (section memory)."""
    report.note("training", "2000-step times are estimated from the measured steps (see each row's "
                "steps_2000_rule), not whole runs")
    report.note("memory", "the estimate is estimate_training_peak (fp32 tensors, an upper bound) "
                "in the generator backward mode the run's plan picked (backward_mode); "
                "'full' is a full-image step with every term on, 'regular' any other step")
    backbones: dict[str, DinoBackbone] = {}
    for model, size, hw in profile.training:
        for dtype in profile.dtypes:
            def run(model: str = model, size: str = size, hw: tuple[int, int] = hw, dtype: str = dtype) -> None:
                if model not in backbones:
                    backbones[model] = backbone_for(model, report.device)
                measure_training(report, profile, model, size, hw, dtype, backbones[model])
            report.guard(("training", "memory"), f"{model} {size} {dtype}", run)


# -- Splice Output ------------------------------------------------------------------------------


def measure_apply(report: Report, profile: Profile, label: str, hw: tuple[int, int], mode: str) -> None:
    """Frames per second of Splice Output on one frame, whole or streamed (run_apply)."""
    from comfy_splice.apply import ApplyPlan, run_apply
    from comfy_splice.generator import build_generator
    from comfy_splice.memory import StreamedFit, estimate_apply_peak
    from comfy_splice.streaming import plan as stream_plan

    device = report.device
    height, width = hw
    generator = build_generator(0)  # on the CPU, as Splice Output caches it; run_apply copies it over
    frame = smooth_image(height, width, 3)
    out = torch.empty_like(frame)
    if mode == "whole":
        plan = ApplyPlan(1)
        estimate = estimate_apply_peak(height, width, 1)
    else:
        planned = stream_plan(height, width, profile.band_bytes)
        plan = ApplyPlan(1, StreamedFit(profile.band_bytes, planned.device_bytes, planned.ram_bytes))
        estimate = planned.device_bytes
    run_apply(generator, frame, device, plan, out=out)  # warm-up (kernels, allocator)
    _reset_peak(device)
    seconds = []
    for _ in range(profile.apply_repeats):
        _common.sync(device)
        start = time.perf_counter()
        run_apply(generator, frame, device, plan, out=out)
        _common.sync(device)
        seconds.append(time.perf_counter() - start)
    median = _median(seconds)
    report.add("apply", {
        "item": f"{label} {width}x{height} {mode}", "status": "ok", "size": label, "height": height,
        "width": width, "mode": mode, "band_bytes": profile.band_bytes if mode == "streamed" else None,
        "seconds": median, "times_s": seconds, "fps": 1.0 / median if median > 0 else None,
        "peak_bytes": _cuda_peak(device), "estimate_device_bytes": estimate})


def section_apply(report: Report, profile: Profile) -> None:
    report.note("apply", "one frame per call, CPU in and out as Splice Output runs it (the copy of the "
                "generator to the device and the transfers are included); random-init generator")
    for label, hw in profile.apply_sizes:
        for mode in ("whole", "streamed"):
            report.guard("apply", f"{label} {mode}",
                         partial(measure_apply, report, profile, label, hw, mode))


# -- precision ------------------------------------------------------------------------------------


def measure_precision(report: Report, profile: Profile, model: str) -> None:
    """bf16 autocast against fp32 on this device: bench_precision.measure at step 0 and after
    ``precision_steps`` fp32 steps."""
    from bench import bench_precision
    from comfy_splice.run import TrainConfig
    from comfy_splice.train import SpliceTrainer

    size = profile.precision_size
    structure = smooth_image(size, size * 4 // 3, 4)
    appearance = smooth_image(size, size * 4 // 3, 5)
    trainer = SpliceTrainer(backbone_for(model, report.device), structure, appearance,
                            TrainConfig(dtype="fp32", seed=0), report.device)
    for point in sorted({0, profile.precision_steps}):
        while trainer.step_index < point:
            trainer.step()
        trainer.flush_logs()
        rows = bench_precision.measure(trainer, draw_seed=10_000 + point,
                                       variants=list(bench_precision.VARIANTS))
        for variant in bench_precision.VARIANTS:
            terms: dict[str, dict[str, float]] = {
                str(r["term"]): {k: float(r[k]) for k in ("fp32", "rel_error", "grad_cosine", "grad_norm_ratio")}  # type: ignore[arg-type]  # measure() rows hold floats there
                for r in rows if r["variant"] == variant}
            cosines = [t["grad_cosine"] for t in terms.values()]
            report.add("precision", {
                "item": f"{model} step {point} {variant}", "status": "ok", "model": model, "step": point,
                "variant": variant, "size": f"{size * 4 // 3}x{size}", "terms": terms,
                "min_grad_cosine": min(cosines), "max_rel_error": max(t["rel_error"] for t in terms.values())})


def section_precision(report: Report, profile: Profile) -> None:
    report.note("precision", f"{report.device} autocast; bf16-fp32keys is what the trainer does (the "
                "block the losses read in fp32), bf16 the whole ViT in bf16; per term: relative error "
                "of the loss value and cosine of the generator's gradient against fp32; synthetic "
                "smooth images and random-init ViT weights")
    for model in profile.precision_models:
        report.guard("precision", f"{model} precision", partial(measure_precision, report, profile, model))


# -- co-segmentation --------------------------------------------------------------------------


def measure_cosegment(report: Report, profile: Profile, model: str) -> None:
    """Seconds to co-segment ``coseg_count`` scenes (median of the runs after one warm-up)."""
    from bench.bench_cosegment import _scenes
    from comfy_splice.cosegment import cosegment
    from comfy_splice.descriptors import DescriptorConfig

    device = report.device
    backbone = backbone_for(model, device)
    images = _scenes(profile.coseg_count)
    config = DescriptorConfig(load_size=profile.coseg_load_size, stride=profile.coseg_stride)

    def run() -> int:
        return cosegment(backbone, images, device, config, sample_interval=profile.coseg_sample_interval,
                         max_clusters=profile.coseg_max_clusters, n_init=profile.coseg_restarts).k

    run()  # warm-up
    _reset_peak(device)
    seconds, ks = [], []
    for _ in range(profile.coseg_repeats):
        _common.sync(device)
        start = time.perf_counter()
        ks.append(run())
        _common.sync(device)
        seconds.append(time.perf_counter() - start)
    report.add("cosegment", {
        "item": f"{model} {profile.coseg_count} images", "status": "ok", "model": model,
        "images": profile.coseg_count, "load_size": profile.coseg_load_size, "stride": profile.coseg_stride,
        "seconds": _median(seconds), "times_s": seconds, "k": ks, "peak_bytes": _cuda_peak(device)})


def section_cosegment(report: Report, profile: Profile) -> None:
    report.note("cosegment", f"{profile.coseg_count} synthetic 320x240 scenes (bench/bench_cosegment.py), "
                f"load size {profile.coseg_load_size}, stride {profile.coseg_stride}; the clustering "
                "time depends on the data (random weights: indicative only)")
    for model in profile.coseg_models:
        report.guard("cosegment", f"{model} cosegment", partial(measure_cosegment, report, profile, model))


# -- environment and output ---------------------------------------------------------------------


def device_name(device: str) -> str:
    """The card's name on CUDA, the CPU's model on the CPU (the figures mean nothing without it)."""
    if device.startswith("cuda"):
        return torch.cuda.get_device_name(torch.device(device))
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return "CPU " + line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "CPU " + (platform.processor() or platform.machine())


def section_environment(report: Report, profile: Profile, budget_s: float) -> None:
    row: Row = {"item": "environment", "status": "ok", "device": report.device,
                "device_name": device_name(report.device), "torch": torch.__version__,
                "cuda": torch.version.cuda, "python": platform.python_version(),
                "machine": _common.machine_line(), "tiny": profile.tiny, "budget_s": budget_s,
                "weights": _common.RANDOM_INIT_NOTE,
                "date_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}
    if report.device.startswith("cuda"):
        props = torch.cuda.get_device_properties(torch.device(report.device))
        row["device_memory_bytes"] = int(props.total_memory)
        row["cudnn"] = torch.backends.cudnn.version()
    report.add("environment", row)


def _fmt(value: Any, spec: str = ".3g", unit: str = "") -> str:
    if value is None:
        return "-"
    return f"{value:{spec}}{unit}"


def _mib(value: int | None) -> str:
    return "-" if value is None else f"{value / 2**20:,.0f} MiB"


def _status_cell(row: Row) -> str:
    status = row.get("status", "ok")
    if status == "ok":
        return "ok"
    return f"{status}: {row.get('error') or row.get('note', '')}".replace("|", "/").replace("\n", " ")


def _table(header: list[str], rows: list[Row], cells: Callable[[Row], list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        values = cells(row) if row.get("status") == "ok" else [row["item"]] + ["-"] * (len(header) - 2)
        lines.append("| " + " | ".join(values + [_status_cell(row)]) + " |")
    return lines


def render_markdown(data: dict[str, Any]) -> str:
    """The report as Markdown: a header naming the device and torch, one table per section."""
    env = data["sections"]["environment"]["rows"]
    head = env[0] if env and env[0].get("status") == "ok" else {}
    sections = data["sections"]
    lines = [f"# GPU report: {head.get('device_name', data['device'])}", "",
             f"Device `{data['device']}` ({head.get('device_name', '?')}), torch {head.get('torch', '?')}, "
             f"CUDA {head.get('cuda') or '-'}, Python {head.get('python', '?')}; {head.get('date_utc', '')}"
             + ("; **--tiny** (tiny ViT and images: checks the report runs, the figures mean nothing)"
                if data["tiny"] else "") + ".", "",
             f"Weights: {_common.RANDOM_INIT_NOTE}.", ""]

    def block(name: str, title: str, header: list[str], cells: Callable[[Row], list[str]]) -> None:
        section = sections[name]
        lines.extend([f"## {title}", ""])
        lines.extend(f"- {note}" for note in section["notes"])
        if section["notes"]:
            lines.append("")
        lines.extend(_table(header, section["rows"], cells) + [""])

    block("environment", "Environment", ["item", "device", "torch", "machine", "status"],
          lambda r: [r["item"], r["device_name"], r["torch"], r["machine"].replace("|", "/")])
    block("training", "Training step", ["item", "regular step", "full-image step", "2000 steps", "status"],
          lambda r: [r["item"], _fmt(r["regular_s"], ".3f", " s"), _fmt(r["full_s"], ".3f", " s"),
                     f"{r['steps_2000_s']:.1f} s (estimated from {r['steps_2000_estimated_from']} "
                     f"measured steps)"])
    block("memory", "Peak memory per step kind", ["item", "peak", "estimate", "peak / estimate", "status"],
          lambda r: [r["item"], _mib(r["peak_bytes"]), _mib(r["estimate_bytes"]), _fmt(r["ratio"], ".2f")])
    block("apply", "Splice Output", ["item", "frames per second", "seconds per frame", "peak", "status"],
          lambda r: [r["item"], _fmt(r["fps"], ".2f"), _fmt(r["seconds"], ".3f", " s"), _mib(r["peak_bytes"])])
    block("precision", "bf16 against fp32", ["item", "min gradient cosine", "max relative error",
                                             "per term (rel. error / cosine)", "status"],
          lambda r: [r["item"], _fmt(r["min_grad_cosine"], ".5f"), _fmt(r["max_rel_error"], ".1e"),
                     "; ".join(f"{term} {t['rel_error']:.1e} / {t['grad_cosine']:.5f}"
                               for term, t in r["terms"].items())])
    block("cosegment", "Co-segmentation", ["item", "seconds", "k", "peak", "status"],
          lambda r: [r["item"], _fmt(r["seconds"], ".2f", " s"), str(r["k"]), _mib(r["peak_bytes"])])
    return "\n".join(lines)


def _parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda", help="cuda (the GPU figures) or cpu (with --tiny: the test)")
    parser.add_argument("--tiny", action="store_true",
                        help="tiny ViT, tiny images, 1-2 steps: checks the report end to end in seconds")
    parser.add_argument("--out-dir", default="artifacts/gpu_report",
                        help="where gpu_report.json and gpu_report.md are written")
    parser.add_argument("--budget-s", type=float, default=DEFAULT_BUDGET_S,
                        help="overall deadline in seconds: items that would start later are skipped "
                             "with a note (default %(default)s)")
    parser.add_argument("--sections", nargs="+", choices=SECTIONS[1:], default=list(SECTIONS[1:]),
                        help="measure only these (memory comes with training); e.g. to rerun one")
    return parser.parse_args(argv)


def run_report(device: str, profile: Profile, budget_s: float, sections: Iterable[str]) -> dict[str, Any]:
    """Measure every asked-for section on ``device``; returns the JSON-able report."""
    report = Report(device=device, deadline=time.monotonic() + budget_s)
    started = time.perf_counter()
    threads = torch.get_num_threads()
    if profile.threads is not None:
        torch.set_num_threads(profile.threads)
    try:
        _run_sections(report, profile, budget_s, sections)
    finally:
        torch.set_num_threads(threads)
    report.finish()
    return {"device": device, "tiny": profile.tiny, "budget_s": budget_s,
            "wall_s": time.perf_counter() - started, "sections": report.sections}


def _run_sections(report: Report, profile: Profile, budget_s: float, sections: Iterable[str]) -> None:
    section_environment(report, profile, budget_s)
    wanted = set(sections)
    if "memory" in wanted:
        wanted.add("training")
    steps: list[tuple[str, Callable[[], None]]] = [
        ("training", lambda: section_training(report, profile)),
        ("apply", lambda: section_apply(report, profile)),
        ("precision", lambda: section_precision(report, profile)),
        ("cosegment", lambda: section_cosegment(report, profile)),
    ]
    for name, measure in steps:
        if name in wanted:
            measure()
        else:
            report.note(name, "not asked for (--sections)")


def main(argv: list[str] | None = None) -> int:
    """Run the report, write ``gpu_report.json`` and ``gpu_report.md``; exit 1 if an item failed."""
    args = _parse_args(sys.argv[1:] if argv is None else argv)
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit(f"--device {args.device}: torch sees no CUDA device (use --device cpu --tiny "
                         "to check the report itself)")
    data = run_report(args.device, TINY if args.tiny else FULL, args.budget_s, args.sections)
    out_dir = Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "gpu_report.json").write_text(json.dumps(data, indent=1, default=str), encoding="utf-8")
    (out_dir / "gpu_report.md").write_text(render_markdown(data), encoding="utf-8")
    failed = [row["item"] for s in data["sections"].values() for row in s["rows"] if row.get("status") == "failed"]
    log.info("wrote %s and %s in %.0f s%s", out_dir / "gpu_report.json", out_dir / "gpu_report.md",
             data["wall_s"], f"; failed: {', '.join(failed)}" if failed else "")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
