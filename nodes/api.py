"""The one place that imports ComfyUI's node API.

Every node module imports ``io``, ``ui`` and ``ComfyExtension`` from here, so pinning the pack to
a versioned API (``comfy_api.v0_0_2`` ...) instead of ``latest`` is a one-line change.
"""

from __future__ import annotations

from comfy_api.latest import ComfyExtension, io, ui

# The menu category every node of the pack sits in (the README's *image/splice*).
CATEGORY = "image/splice"

__all__ = ["CATEGORY", "ComfyExtension", "io", "ui"]
