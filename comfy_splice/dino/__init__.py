"""The frozen DINO-ViT that Splice and the descriptor nodes read, split by job as timm does.

- :mod:`.models`: the registry of the official models (names, files, URLs) and ``WeightsError``;
  standard library only, so provisioning and the loader node's file list need no torch;
- :mod:`.vit`: the ViT forward (Splice's features, dense descriptors), its input rules
  (input size, ImageNet normalisation) and the structure descriptor;
- :mod:`.weights`: checks of a weight file's structure before anything is built, and loading;
- :mod:`.download`: the explicit download of an official model;
- :mod:`.fixtures`: tiny random ViTs for the tests and benchmarks.

Nothing is imported here, so ``import comfy_splice.dino.models`` imports no torch.
"""
