"""ComfyUI V3 nodes of comfy-splice: thin adapters from graph values to ``comfy_splice``.

One module per concern (loading DINO, losses, training, applying, saving/loading generators,
analysis). ``node_list()`` is what the pack's ``comfy_entrypoint`` hands to ComfyUI; node ids
and widget order are permanent (saved workflows refer to them positionally).
"""

from __future__ import annotations

from .analysis import SpliceMetrics, SpliceVisualizeStructure
from .api import ComfyExtension, io
from .apply import SpliceApply
from .descriptors import NODES as DESCRIPTOR_NODES
from .dino import SpliceLoadDINO
from .dino_download import add_routes as add_download_routes
from .examples import install_example_inputs
from .generator_io import SpliceLoadGenerator, SpliceSaveGenerator
from .keyframes import SpliceSelectKeyframes
from .losses import SpliceAppearanceLoss, SpliceStructureLoss
from .material import SpliceSelectMaterial
from .materialistic import SpliceLoadMaterialistic
from .paths import register_folders
from .regions import NODES as REGION_NODES
from .stop import add_routes
from .train import SpliceTrainGenerator

NODES: tuple[type[io.ComfyNode], ...] = (
    SpliceLoadDINO,
    SpliceStructureLoss,
    SpliceAppearanceLoss,
    SpliceTrainGenerator,
    SpliceApply,
    SpliceSaveGenerator,
    SpliceLoadGenerator,
    SpliceVisualizeStructure,
    SpliceMetrics,
    SpliceSelectKeyframes,
    *DESCRIPTOR_NODES,
    *REGION_NODES,
    SpliceLoadMaterialistic,
    SpliceSelectMaterial,
)


def node_list() -> list[type[io.ComfyNode]]:
    """The pack's nodes, after registering its model folders (their schemas list those folders)
    the Stop and keep route and the DINO download routes (when a ComfyUI server is running)."""
    register_folders()
    add_routes()
    add_download_routes()
    return list(NODES)


class SpliceExtension(ComfyExtension):
    """The comfy-splice extension: ComfyUI asks it for its node classes at startup."""

    async def get_node_list(self) -> list[type[io.ComfyNode]]:
        # ComfyUI asks once, when it loads the pack: the moment to make the templates' example
        # images available to LoadImage (missing ones only; a user's file is never replaced).
        install_example_inputs()
        return node_list()


__all__ = ["NODES", "SpliceExtension", "node_list"]
