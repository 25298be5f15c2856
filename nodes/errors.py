"""One readable message for every error a node of the pack shows, and checks on what comes in.

ComfyUI shows a failing node's exception type and text to the user. The pack's own checks raise
``ValueError`` with a sentence that names the fix, the core's refusals a
``comfy_splice.refusal.SpliceRefusal`` (a ValueError; memory refusals among them); both are shown
unchanged. :func:`readable_errors` makes sure nothing else reaches the user raw: an exception
from a library (torch, numpy, safetensors, ComfyUI's ``folder_paths``) becomes a ``ValueError``
that says which node failed and why in one line (the original stays chained, so the server log
keeps its traceback). Cancel, CUDA out-of-memory and a training stopped by its caller pass
unchanged: ComfyUI handles the first two itself, and a stop is no failure.
"""

from __future__ import annotations

import functools
import math
from typing import Any, Callable, TypeVar

import torch

import comfy.model_management as mm

from ..comfy_splice.refusal import SpliceRefusal, mentions_out_of_memory
from ..comfy_splice.train import TrainingInterrupted
from ..comfy_splice.validation import check_finite_image, short, short_text

MAX_MESSAGE_CHARS = 2000
"""A message longer than this is cut: the node's error box is not a log."""

_PASS_THROUGH: tuple[type[BaseException], ...] = (mm.InterruptProcessingException,
                                                  torch.OutOfMemoryError, TrainingInterrupted)
_OWN_ERRORS: tuple[type[Exception], ...] = (SpliceRefusal,)

F = TypeVar("F", bound=Callable[..., Any])

__all__ = ["check_choice", "check_finite", "check_finite_image", "readable", "readable_errors"]


def _cut(text: str) -> str:
    return text if len(text) <= MAX_MESSAGE_CHARS else text[:MAX_MESSAGE_CHARS - 3] + "..."


def readable(exc: Exception, node: str) -> ValueError | None:
    """The user-facing replacement for ``exc`` raised in ``node``; None if it is fine as it is."""
    if isinstance(exc, _PASS_THROUGH):
        return None
    message = str(exc)
    if type(exc) is ValueError or isinstance(exc, _OWN_ERRORS):
        return ValueError(_cut(message)) if len(message) > MAX_MESSAGE_CHARS else None
    if isinstance(exc, MemoryError) or mentions_out_of_memory(message):
        return ValueError(f"{node}: not enough memory for this ({short_text(message, 200)}). Use "
                          f"smaller images, a smaller batch_size, or close other work.")
    detail = short_text(message, 300) or type(exc).__name__
    return ValueError(f"{node} failed: {detail}. If the inputs look right, this is a bug in "
                      f"comfy-splice: the server log has the details.")


def readable_errors(node: str) -> Callable[[F], F]:
    """Decorator for a node's ``execute``: every error it raises is one readable message."""

    def decorate(execute: F) -> F:
        @functools.wraps(execute)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            try:
                return execute(*args, **kwargs)
            except Exception as exc:  # re-raised: as it is, or as one readable ValueError
                replacement = readable(exc, node)
                if replacement is None:
                    raise
                raise replacement from exc

        return wrapper  # type: ignore[return-value]

    return decorate


def check_choice(value: object, name: str) -> str:
    """A combo value (a file name, an option) is text: the HTTP API accepts any JSON value."""
    if not isinstance(value, str):
        raise ValueError(f"{name} must be one of the listed names (text), got {short(value)}. "
                         f"Pick an entry from the list.")
    return value


def check_finite(value: float, name: str) -> float:
    """A FLOAT widget is a finite number (ComfyUI's min/max checks let NaN through)."""
    if not math.isfinite(float(value)):
        raise ValueError(f"{name} is {value}; it must be a finite number.")
    return float(value)
