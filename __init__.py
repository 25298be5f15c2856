"""comfy-splice: Splice ("Splicing ViT Features for Semantic Appearance Transfer") for ComfyUI.

ComfyUI imports this file and calls ``comfy_entrypoint()`` (the V3 node API, ComfyUI >= 0.3.48).
Importing it does nothing else: the nodes, torch and timm are imported only when ComfyUI asks
for the extension. There is deliberately no ``NODE_CLASS_MAPPINGS`` here: with it, ComfyUI
would ignore ``comfy_entrypoint``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from comfy_api.latest import ComfyExtension

# The pack's web extension (the Stop and keep button of Train Generator), served by ComfyUI.
WEB_DIRECTORY = "./web"


async def comfy_entrypoint() -> "ComfyExtension":
    """ComfyUI's V3 entry point: the extension that lists the pack's nodes."""
    from .nodes import SpliceExtension

    return SpliceExtension()
