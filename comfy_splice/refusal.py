"""The pack's one policy for refusing work: the refusal type, the unit of memory, the advice.

A *refusal* is a problem the user can fix (an input, an option, the memory it needs): its
message names the fix, and the node layer (``nodes/errors.py``) shows it unchanged instead of
wrapping it as a failure. Every refusal of the method derives from :class:`SpliceRefusal`.

Memory is stated in one unit everywhere (GiB with two decimals, :func:`format_bytes`); an
out-of-memory failure is recognised by one list of words (:func:`mentions_out_of_memory`); and
a refusal that a smaller image would avoid names that image with one sentence
(:func:`downscale_advice`). No torch here: the node layer and the tools import it cheaply.
"""

from __future__ import annotations

import math

GIB = 1 << 30

OUT_OF_MEMORY_WORDS = ("can't allocate memory", "not enough memory", "out of memory")
"""How allocators word an out-of-memory failure (glibc/oneDNN on the CPU, CUDA, MPS)."""


class SpliceRefusal(ValueError):
    """Work the pack will not do as asked; the message says what to change. Shown unchanged."""


class MemoryBudgetError(SpliceRefusal):
    """The work would need more memory than is free; the message names what to lower."""


def format_bytes(value: float) -> str:
    """``1.23 GiB``: the one unit every memory message of the pack uses (four decimals under
    0.01 GiB, so that a small budget does not read as nothing)."""
    gib = value / GIB
    return f"{gib:.2f} GiB" if abs(gib) >= 0.01 or gib == 0 else f"{gib:.4f} GiB"


def memory_refusal(what: str, need: str, available: str, advice: str,
                   kind: type[MemoryBudgetError] = MemoryBudgetError) -> MemoryBudgetError:
    """The one sentence of every memory refusal: what needs how much (``need``, e.g. '1.20 GiB
    of RAM'), what is free (``available``), and what to lower or change (``advice``)."""
    return kind(f"{what} needs about {need}, but only {available} is free: {advice}.")


def mentions_out_of_memory(text: str) -> bool:
    """Whether an error's text reports that an allocation failed (any allocator's wording)."""
    lowered = text.lower()
    return any(word in lowered for word in OUT_OF_MEMORY_WORDS)


def downscale_advice(height: int, width: int, scale: float) -> str:
    """The "would fit" advice: the image of the same aspect ratio at ``scale`` that fits, and
    how to get it; when nothing fits (``scale`` rounds to no pixel), free memory instead."""
    fit_h, fit_w = int(height * scale), int(width * scale)
    if fit_h < 1 or fit_w < 1:
        return "free memory (close other programs or models)"
    return (f"an image of about {fit_w}x{fit_h} would fit; downscale the images (e.g. 'Upscale "
            f"Image By' with a scale of {math.floor(scale * 100) / 100:g}) or free memory")
