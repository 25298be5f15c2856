"""What the nodes need from the ComfyUI runtime, in one place: devices, memory, images, progress.

Memory follows one policy for every node that can run out of it: estimate first and check the
estimate against :func:`free_memory` (the ``COMFY_SPLICE_MEMORY_BUDGET_MB`` budget, then what is
free: :func:`check_fits`, or the core's own checks given that number), refuse with the core's
one message (``comfy_splice.refusal``), and run under :func:`memory_guard`, the one place that
cleans up after an error (frames released, cache emptied, heap trimmed) and turns running out of
memory anyway into a message that names what to lower.

ComfyUI runs every node under ``torch.inference_mode()``. Tensors made there (input images,
weights loaded by another node) are inference tensors, which autograd refuses to save for
backward; training therefore works on clones made with inference mode switched off
(:func:`training_mode`, :func:`backbone_for`, :func:`image_to_core` with ``clone=True``).
"""

from __future__ import annotations

import contextlib
import copy
import functools
import logging
import os
import time
import traceback
from typing import Callable, Iterator

import psutil
import torch
from PIL import Image
from torch import Tensor

import comfy.model_management as mm
import comfy.utils
from comfy.cli_args import args

from ..comfy_splice.budget import Memory
from ..comfy_splice.dino.vit import DinoBackbone
from ..comfy_splice.measure import release_heap
from ..comfy_splice.memory import overhead_for
from ..comfy_splice.refusal import format_bytes, memory_refusal, mentions_out_of_memory
from .errors import check_finite_image

log = logging.getLogger(__name__)


def torch_device() -> torch.device:
    """The device ComfyUI computes on (honours ``--cpu``, DirectML, MPS, XPU ...)."""
    return mm.get_torch_device()


@contextlib.contextmanager
def training_mode() -> Iterator[None]:
    """Leave ComfyUI's inference mode and turn gradients on for the duration of a training run."""
    with torch.inference_mode(False), torch.enable_grad():
        yield


def backbone_for(backbone: DinoBackbone, device: torch.device, for_training: bool) -> DinoBackbone:
    """A copy of the shared backbone on ``device``; the cached original is never moved or changed.

    For training the copy is made with inference mode off, so its weights are ordinary tensors
    that autograd may save (gradients flow through DINO into the generator). For no-grad use on
    the CPU the original itself is fine and saves a copy.
    """
    if not for_training and device.type == "cpu":
        return backbone
    with torch.inference_mode(False):
        clone = copy.deepcopy(backbone)
    return clone.to(device)


MEMORY_BUDGET_ENV = "COMFY_SPLICE_MEMORY_BUDGET_MB"
RETIRED_LIMIT_ENV = "COMFY_SPLICE_MEMORY_LIMIT_MB"  # its job is done by MEMORY_BUDGET_ENV now
_warned: set[str] = set()


def memory_budget_bytes() -> int | None:
    """The pack's memory budget, ``COMFY_SPLICE_MEMORY_BUDGET_MB`` in the server's environment
    (unset, 0 or not a number: none).

    One variable for both checks: before a run its estimate must fit in the budget minus what
    the process already holds (:func:`free_memory`), and during a run the process must stay
    under it (:func:`check_memory_limit`), which keeps Splice from taking a machine or a GPU
    shared with other programs.
    """
    if os.environ.get(RETIRED_LIMIT_ENV, "").strip() and RETIRED_LIMIT_ENV not in _warned:
        _warned.add(RETIRED_LIMIT_ENV)
        log.warning("%s is no longer read; set %s instead (it now caps both the estimate before a "
                    "run and the memory during it)", RETIRED_LIMIT_ENV, MEMORY_BUDGET_ENV)
    raw = os.environ.get(MEMORY_BUDGET_ENV, "").strip()
    if not raw:
        return None
    try:
        megabytes = float(raw)
    except ValueError:
        if raw not in _warned:
            _warned.add(raw)
            log.warning("%s=%r is not a number of MB; ignored", MEMORY_BUDGET_ENV, raw)
        return None
    return int(megabytes * 2**20) if megabytes > 0 else None


def free_memory(device: torch.device, need: int) -> int:
    """Bytes free for a run that needs ``need`` bytes on ``device``.

    On a GPU, ComfyUI first unloads models until ``need`` bytes are free (or nothing more can
    go), then reports what its device has free. On the CPU it is the system's available RAM
    (psutil). With a budget (:func:`memory_budget_bytes`) it is at most the budget minus what
    the process holds now (:func:`memory_in_use`).
    """
    if device.type != "cpu":
        mm.free_memory(need, device)
        free = int(mm.get_free_memory(device))
    else:
        free = int(psutil.virtual_memory().available)
    budget = memory_budget_bytes()
    if budget is not None:
        free = min(free, max(0, budget - memory_in_use(device)))
    return free


def free_ram() -> int:
    """Bytes of RAM available to the system (for the RAM part of a streamed pass on a GPU; on
    the CPU :func:`free_memory` already counts RAM and the budget)."""
    return int(psutil.virtual_memory().available)


def memory_where(device: torch.device) -> str:
    """How budget messages name the memory: 'RAM' or e.g. 'memory on cuda:0'."""
    return "RAM" if device.type == "cpu" else f"memory on {device}"


def release_memory() -> None:
    """After a large run: cached GPU blocks back to the driver, freed heap back to the system."""
    mm.soft_empty_cache()
    release_heap()


def release_frames(exc: BaseException) -> None:
    """Drop the locals of the frames an exception passed through (the trainer, the ViT copy).

    ComfyUI keeps a failed prompt's exception alive while it reports it; without this the
    training run's device tensors would outlive the ``soft_empty_cache()`` that follows.
    Only the locals go: the traceback text (file, line, function) is unchanged.
    """
    traceback.clear_frames(exc.__traceback__)


def check_interrupt(*_: object) -> None:
    """Raise ComfyUI's InterruptProcessingException if the user pressed Cancel (/interrupt)."""
    mm.throw_exception_if_processing_interrupted()


class SpliceOutOfMemoryError(torch.OutOfMemoryError):
    """Out of memory in a Splice node, with what to do about it.

    A subclass of torch's error, so ComfyUI still treats it as an out-of-memory failure (it
    unloads its models after reporting it).
    """


def is_out_of_memory(exc: BaseException) -> bool:
    """torch's out-of-memory error, Python's MemoryError, or an allocator's RuntimeError for the
    same thing (worded as ``comfy_splice.refusal.mentions_out_of_memory`` knows)."""
    if isinstance(exc, (torch.OutOfMemoryError, MemoryError)):
        return True
    return isinstance(exc, RuntimeError) and mentions_out_of_memory(str(exc))


def out_of_memory(exc: BaseException, device: torch.device, what: str, fixes: str) -> SpliceOutOfMemoryError:
    """The error a node raises after running out of memory: what happened and what to change."""
    first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return SpliceOutOfMemoryError(
        f"Out of memory on {device} while {what} ({first_line}). The memory has been returned and "
        f"ComfyUI keeps running. To fit: {fixes}; free other models (ComfyUI's 'Unload Models' "
        f"button, or close other programs using the {device.type.upper()})."
    )


def memory_in_use(device: torch.device) -> int:
    """Bytes in use: tensors allocated on an accelerator whose torch backend counts them (CUDA,
    XPU, MPS); on the CPU, or a backend that does not, the process's RSS."""
    backend = getattr(torch, device.type, None) if device.type != "cpu" else None
    if backend is not None and hasattr(backend, "memory_allocated"):
        return int(backend.memory_allocated(device))
    return int(psutil.Process().memory_info().rss)


def check_memory_limit(device: torch.device) -> None:
    """Raise torch's OutOfMemoryError when a running Splice node goes over the memory budget.

    The budget ($COMFY_SPLICE_MEMORY_BUDGET_MB, see :func:`memory_budget_bytes`) was checked
    against the run's estimate before it started; this catches a run that grows past it anyway.
    It ends with the same message and clean-up as a real out-of-memory error. On the CPU it
    applies to the whole ComfyUI process.
    """
    budget = memory_budget_bytes()
    if budget is None:
        return
    used = memory_in_use(device)
    if used > budget:
        raise torch.OutOfMemoryError(
            f"{format_bytes(used)} in use on {device}, over the {MEMORY_BUDGET_ENV} budget of "
            f"{format_bytes(budget)}")


def check_fits(device: torch.device, need: int, what: str, advice: str) -> int:
    """Refuse (MemoryBudgetError) work whose estimate ``need`` exceeds :func:`free_memory`, in
    the core's one message; return the free bytes otherwise. For nodes whose core call takes no
    budget of its own."""
    free = free_memory(device, need)
    if need > free:
        raise memory_refusal(what, f"{format_bytes(need)} of {memory_where(device)}",
                             format_bytes(free), advice)
    return free


def device_memory(device: torch.device) -> Memory:
    """``device``'s memory as the core's plans ask for it (``comfy_splice.budget``): room made by
    :func:`free_memory` (ComfyUI unloads models, the budget variable caps it), RAM from psutil."""
    return Memory(free=functools.partial(free_memory, device), ram_free=free_ram,
                  where=memory_where(device), overhead=overhead_for(device),
                  shared=device.type == "cpu")


def between_passes(device: torch.device) -> Callable[[], None]:
    """What a streamed pass checks after every pass over its bands: Cancel and the budget."""

    def check() -> None:
        check_interrupt()
        check_memory_limit(device)

    return check


@contextlib.contextmanager
def memory_guard(device: torch.device, what: str, advice: str) -> Iterator[None]:
    """The one clean-up of every node that holds large tensors, around its work.

    On any error the frames it passed through drop their locals (:func:`release_frames`), and
    running out of memory becomes :func:`out_of_memory`'s message (``what`` was being done,
    ``advice`` names what to lower). Always, afterwards,
    the cache is emptied and the heap trimmed (:func:`release_memory`).
    """
    try:
        yield
    except BaseException as exc:  # re-raised, as it is or as the out-of-memory message
        release_frames(exc)
        if is_out_of_memory(exc):
            raise out_of_memory(exc, device, what, advice) from None
        raise
    finally:
        release_memory()


def image_to_core(image: Tensor, name: str, clone: bool = False) -> Tensor:
    """ComfyUI IMAGE [B, H, W, C] in [0, 1] -> core layout [B, 3, H, W] float32.

    An alpha channel is dropped and a single channel repeated, as ComfyUI's own nodes do.
    ``clone`` makes an ordinary (non-inference) contiguous copy that training may backprop into.
    """
    if not isinstance(image, Tensor) or image.ndim != 4:
        shape = tuple(image.shape) if isinstance(image, Tensor) else type(image).__name__
        raise ValueError(f"{name}: expected an IMAGE of shape [batch, height, width, channels], got "
                         f"{shape}. Connect an image output (e.g. Load Image) to '{name}'.")
    channels = int(image.shape[-1])
    if channels == 4:
        image = image[..., :3]
    elif channels == 1:
        image = image.expand(-1, -1, -1, 3)
    elif channels != 3:
        raise ValueError(f"{name}: expected an RGB image (3 channels), got {channels} channels.")
    if image.shape[0] == 0:
        raise ValueError(f"{name}: the image batch is empty.")
    check_finite_image(image, name)
    out = image.permute(0, 3, 1, 2).float()
    return trainable(out) if clone else out


def trainable(images: Tensor) -> Tensor:
    """An ordinary (non-inference), contiguous copy of ``images`` that training may backprop into."""
    with torch.inference_mode(False):
        return images.clone(memory_format=torch.contiguous_format)


def image_to_comfy(images: Tensor) -> Tensor:
    """Core layout [B, 3, H, W] -> ComfyUI IMAGE [B, H, W, 3] float32 on the CPU, clamped to [0, 1]."""
    return images.detach().float().clamp(0.0, 1.0).permute(0, 2, 3, 1).contiguous().cpu()


def check_min_size(images: Tensor, min_side: int, name: str, why: str) -> None:
    """Refuse images too small to carry any structure, naming the minimum size and the fix."""
    height, width = int(images.shape[-2]), int(images.shape[-1])
    if height < min_side or width < min_side:
        raise ValueError(f"{name} is {width}x{height} pixels; the minimum is {min_side}x{min_side} "
                         f"({why}). Use a larger image (Splice is meant for images of a few hundred "
                         f"pixels), e.g. upscale it with 'Upscale Image' first.")


def to_pil(image: Tensor) -> Image.Image:
    """First image of a core batch [B, 3, H, W] in [0, 1] -> an RGB PIL image (for previews)."""
    array = (image[0].detach().float().clamp(0.0, 1.0) * 255.0).round().to(torch.uint8)
    return Image.fromarray(array.permute(1, 2, 0).cpu().numpy())


class Progress:
    """ComfyUI's progress bar with live JPEG previews on the running node.

    ``step`` checks for a pending interrupt on every call, so a Cancel is honoured within one
    training step. The progress message itself (two websocket messages per update) is sent for
    the first and last step and otherwise at most every ``min_interval`` seconds: on a GPU a
    Splice step takes a few milliseconds, and one message per step would flood the browser.
    """

    def __init__(self, total: int, min_interval: float = 0.1) -> None:
        self.total = total
        self.device = torch_device()
        self.min_interval = min_interval
        self.bar = comfy.utils.ProgressBar(total)
        self._last_sent = float("-inf")
        self.last_preview: tuple[int, Tensor] | None = None

    def step(self, done: int, total: int | None = None) -> None:
        """Report ``done`` of ``total`` steps (and raise if the user interrupted or the memory
        cap is exceeded)."""
        check_interrupt()
        check_memory_limit(self.device)
        total = total or self.total
        now = time.monotonic()
        if done <= 1 or done >= total or now - self._last_sent >= self.min_interval:
            self._last_sent = now
            self.bar.update_absolute(done, total)

    def finish(self, done: int) -> None:
        """Send ``done`` now, unthrottled: when Stop and keep or the time limit ends the run
        early, the last step may have been skipped by the throttle and the bar would stay behind."""
        self.bar.update_absolute(done, self.total)

    def log(self, done: int, losses: dict[str, float]) -> None:
        """Show the latest losses on the node beside the preview (every ``log_every`` steps)."""
        terms = ", ".join(f"{name} {losses[name]:.4g}" for name in ("structure", "appearance", "identity")
                          if name in losses)
        show_text(f"step {done}/{self.total}: loss {losses.get('loss', float('nan')):.4g}"
                  + (f" ({terms})" if terms else ""))

    def preview(self, done: int, image: Tensor) -> None:
        """Show ``image`` ([1, 3, H, W] in [0, 1]) on the node, with the progress value ``done``.

        ComfyUI fits previews into ``--preview-size`` pixels, enlarging small ones too; an image
        that already fits is sent as it is. The image is kept: the last one is G(structure) of the
        finished generator, which the node returns instead of computing it again.
        """
        self.last_preview = (done, image)
        picture = to_pil(image)
        max_size = args.preview_size if max(picture.size) > args.preview_size else None
        self._last_sent = time.monotonic()
        self.bar.update_absolute(done, self.total, ("JPEG", picture, max_size))


def show_text(text: str) -> None:
    """Show ``text`` on the running node (ComfyUI's progress-text mechanism, drawn under its
    widgets by the frontend; it stays there after the run). Without a running node (the node
    called outside a prompt) nothing is sent."""
    from comfy_execution.utils import get_executing_context

    context = get_executing_context()
    if context is None:
        return
    from server import PromptServer  # imported by then: the server is what runs the node

    if PromptServer.instance is not None:
        PromptServer.instance.send_progress_text(text, context.node_id)


class ByteProgress:
    """A download's bytes on the node's progress bar (and a Cancel honoured between chunks)."""

    def __init__(self, min_interval: float = 0.1) -> None:
        self.min_interval = min_interval
        self.bar = comfy.utils.ProgressBar(1)
        self._last_sent = float("-inf")

    def __call__(self, done: int, total: int | None) -> None:
        check_interrupt()
        now = time.monotonic()
        if done == 0 or done == total or now - self._last_sent >= self.min_interval:
            self._last_sent = now
            # Without a Content-Length the bar stays at its start; the bytes still count.
            self.bar.update_absolute(done if total else 0, max(total or 1, 1))
            show_text(f"downloading: {done / 1e6:.1f} MB" + (f" of {total / 1e6:.1f} MB" if total else ""))
