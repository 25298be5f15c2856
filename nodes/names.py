"""Every node's display name, defined once.

Schemas, tooltips and error messages that point the artist at another node read the name here,
so renaming a node is one edit and no message names a node that no longer exists. This module
imports nothing, so tools that run outside ComfyUI can read it too.
"""

from __future__ import annotations

LOAD_DINO = "Load DINO-ViT (Splice)"
STRUCTURE_LOSS = "Structure Loss (Splice)"
APPEARANCE_LOSS = "Appearance Loss (Splice)"
TRAIN = "Train Generator (Splice)"
APPLY = "Splice Output"
SAVE_GENERATOR = "Save Splice Generator"
LOAD_GENERATOR = "Load Splice Generator"
VISUALIZE = "Visualize Structure (Splice)"
METRICS = "Splice Metrics"
KEYFRAMES = "Select Keyframes (Splice)"
COSEGMENT = "DINO Co-segmentation (Splice)"
PARTS = "DINO Part Co-segmentation (Splice)"
CORRESPONDENCES = "DINO Correspondences (Splice)"
PCA = "DINO Features PCA (Splice)"
CROP = "Crop to Mask (Splice)"
COMPOSITE = "Composite in Mask (Splice)"
LOAD_MATERIALISTIC = "Load Materialistic (Splice)"
SELECT_MATERIAL = "Select Material (Splice)"
