"""Select by material: the Materialistic network (Sharma et al., SIGGRAPH 2023) and its loader.

- :mod:`.net`: the network (the pack's DINO ViT plus the authors' head), its key table against
  the authors' checkpoint, and its memory estimate;
- :mod:`.weights`: reading the authors' checkpoint (Lightning ``.ckpt``, DataParallel
  ``model.pth`` or ``.safetensors``) without running pickled code, checked before building.
"""
