"""comfy-splice: Splice ("Splicing ViT Features for Semantic Appearance Transfer") for ComfyUI.

ComfyUI imports this file and calls ``comfy_entrypoint()`` (the V3 node API, ComfyUI >= 0.3.48).
Importing it does nothing else (``WEB_DIRECTORY`` is a constant): the nodes, torch and timm are
imported only when ComfyUI asks for the extension. There is deliberately no
``NODE_CLASS_MAPPINGS`` here: with it, ComfyUI would ignore ``comfy_entrypoint``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from comfy_api.latest import ComfyExtension

# ComfyUI serves this folder's .js files to the browser (V3 extensions too): the pack's small
# web extension (a fixed seed by default and a Stop and keep button on Train Generator).
WEB_DIRECTORY = "./web"


async def comfy_entrypoint() -> "ComfyExtension":
    """ComfyUI's V3 entry point: the extension that lists the pack's nodes."""
    from .nodes import SpliceExtension

    return SpliceExtension()
