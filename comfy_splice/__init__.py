"""Splice (Tumanyan et al., CVPR 2022) as a host-independent PyTorch package.

Semantic appearance transfer: a small U-Net is trained on one structure/appearance image pair so
that its output keeps the structure image's DINO-ViT key self-similarity and takes the
appearance image's DINO-ViT CLS token. Nothing here imports ComfyUI; the nodes in ``nodes/``
are thin adapters over this package.
"""

__version__ = "0.1.0"
