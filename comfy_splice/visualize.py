"""What the structure loss holds fixed, as a picture (the Splice paper's figure 5).

The keys' self-similarity matrix of an image is reduced to three principal components per
token; the patch tokens' components, min-max scaled to [0, 1] and laid out on the patch grid,
become an RGB image. Regions the loss considers alike get alike colours.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from .dino.vit import DinoBackbone, dino_input_size, self_similarity, splice_features


def self_similarity_pca(backbone: DinoBackbone, image: Tensor, device: torch.device | str,
                        layer: int = -1, short_side: int = 224) -> Tensor:
    """[1, 3, H, W] in [0, 1] -> [1, 3, H, W] PCA colour image of the keys' self-similarity."""
    if image.ndim != 4 or image.shape[0] != 1 or image.shape[1] != 3:
        raise ValueError(f"expected one RGB image [1, 3, H, W], got {tuple(image.shape)}")
    backbone = backbone.to(device)
    height, width = image.shape[-2:]
    dino_h, dino_w = dino_input_size(height, width, short_side, None)
    rows, cols = dino_h // backbone.patch_size, dino_w // backbone.patch_size
    keys = splice_features(backbone, image.to(device, torch.float32), layer, short_side, None).keys
    sim = self_similarity(keys)[0].float()
    if not torch.isfinite(sim).all():
        raise ValueError("the ViT's keys hold NaN or infinite values for this image; check that "
                         "the image's pixels and the DINO weights are finite")
    centred = sim - sim.mean(dim=0, keepdim=True)
    components = centred @ _principal_axes(centred, 3)  # [T, <=3]
    if components.shape[1] < 3:  # fewer tokens than components: pad with zeros
        components = F.pad(components, (0, 3 - components.shape[1]))
    grid = components[1:].reshape(rows, cols, 3)
    low, high = grid.min(), grid.max()
    grid = (grid - low) / (high - low).clamp(min=1e-8)
    picture = grid.permute(2, 0, 1)[None]
    picture = F.interpolate(picture, size=(height, width), mode="bilinear", align_corners=False)
    return picture.clamp(0, 1).cpu()


def _principal_axes(centred: Tensor, count: int) -> Tensor:
    """The ``count`` leading right singular vectors of ``centred``, as columns [C, count].

    LAPACK's SVD can fail to converge on nearly degenerate matrices (a flat image gives one);
    the eigenvectors of the Gram matrix in float64 are the same axes and always come out.
    """
    try:
        _, _, v = torch.linalg.svd(centred, full_matrices=False)
        return v[:count].T
    except torch.linalg.LinAlgError:
        gram = (centred.T @ centred).double()
        _, vectors = torch.linalg.eigh(gram)
        return vectors.flip(-1)[:, :count].to(centred.dtype)


# A dark-to-light ramp (black, violet, crimson, orange, yellow, white): its brightness rises
# with the value, so it reads in grey too, and no two values share a colour.
HEAT_COLOURS = (
    (0.00, 0.00, 0.00),
    (0.27, 0.05, 0.45),
    (0.74, 0.15, 0.33),
    (0.97, 0.48, 0.10),
    (0.99, 0.86, 0.30),
    (1.00, 1.00, 1.00),
)


def heatmap(values: Tensor, scale: float) -> Tensor:
    """[B, H, W] values -> [B, 3, H, W] colours on a fixed absolute scale ``0 .. scale``.

    A fixed scale (not each image's own maximum) keeps one colour meaning one value across
    runs, so two results can be compared side by side; values past ``scale`` show as white.
    """
    if not scale > 0:
        raise ValueError(f"the heatmap scale must be above 0, got {scale}")
    colours = torch.tensor(HEAT_COLOURS, dtype=torch.float32, device=values.device)
    position = (values.float() / scale).clamp(0, 1) * (len(HEAT_COLOURS) - 1)
    low = position.floor().long().clamp(max=len(HEAT_COLOURS) - 2)
    fraction = (position - low).unsqueeze(-1)
    rgb = colours[low] * (1 - fraction) + colours[low + 1] * fraction  # [B, H, W, 3]
    return rgb.permute(0, 3, 1, 2).contiguous()
