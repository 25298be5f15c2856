"""Light methods on dense DINO-ViT descriptors (Amir et al. 2022): co-segmentation, part
co-segmentation, point correspondences and a PCA view.

All of it is clustering and nearest neighbours over the descriptors of :mod:`descriptors`:
- co-segmentation: k-means over every image's descriptors with k from the elbow rule; a
  cluster is foreground when the CLS attention (saliency) over its tokens is high in enough
  images; the mask is the union of those clusters, mapped to each image's full resolution;
- part co-segmentation: a second k-means of the foreground descriptors into parts shared by
  the images; every pixel takes the nearest part or the background;
- correspondences: best buddies (mutual nearest neighbours) between two images' binned
  descriptors on salient tokens, spread over the image by k-means on the pairs;
- PCA: the first principal components of all images' descriptors as colours.

k-means is written in torch (k-means++ seeding from a seeded CPU generator, several restarts,
Lloyd iterations on the compute device): a fixed seed gives the same answer on every run, and
nothing beyond torch is needed. The paper's code uses faiss and scikit-learn for the same.
"""

from __future__ import annotations

import contextlib
import logging
import math
from dataclasses import dataclass, field
from typing import Callable, Iterator, Sequence

import torch
from torch import Tensor

from .descriptors import (DescriptorConfig, ImageDescriptors, extract_descriptors, grid_to_image,
                          l2_normalise, token_centres)
from .dino.vit import DinoBackbone

log = logging.getLogger(__name__)

OnImage = Callable[[int, int], None] | None
"""Called with (images done, total) after each image's descriptors: progress and cancel."""


# -- k-means ---------------------------------------------------------------------------------


@dataclass
class KMeans:
    """A fitted k-means: centroids [k, D] and the mean squared distance of the fitted points."""

    centroids: Tensor
    inertia: float


def squared_distances(x: Tensor, centroids: Tensor) -> Tensor:
    """[N, D] x [k, D] -> [N, k] squared Euclidean distances (never negative)."""
    d2 = (x * x).sum(1, keepdim=True) - 2 * x @ centroids.T + (centroids * centroids).sum(1)[None]
    return d2.clamp_min_(0)


def assign(x: Tensor, centroids: Tensor, chunk: int = 65536) -> tuple[Tensor, Tensor]:
    """Nearest centroid of each row of ``x`` and its squared distance (chunked over rows)."""
    labels, dists = [], []
    for start in range(0, x.shape[0], chunk):
        d2 = squared_distances(x[start:start + chunk], centroids)
        best, label = d2.min(dim=1)
        labels.append(label)
        dists.append(best)
    return torch.cat(labels), torch.cat(dists)


def _plus_plus(x: Tensor, k: int, generator: torch.Generator) -> Tensor:
    """k-means++ seeding: each next centre drawn with probability proportional to D^2."""
    n = x.shape[0]
    first = int(torch.randint(n, (1,), generator=generator))
    centres = [x[first]]
    closest = squared_distances(x, x[first:first + 1])[:, 0]
    for _ in range(1, k):
        weights = closest.double().cpu()
        if float(weights.sum()) <= 0:  # every point already a centre: any pick is as good
            index = int(torch.randint(n, (1,), generator=generator))
        else:
            index = int(torch.multinomial(weights, 1, generator=generator))
        centres.append(x[index])
        closest = torch.minimum(closest, squared_distances(x, x[index:index + 1])[:, 0])
    return torch.stack(centres)


SMALL_PROBLEM = 1 << 21
"""Below this many elements a k-means fit on the CPU runs on one thread (see _one_thread_if_small)."""


@contextlib.contextmanager
def _one_thread_if_small(x: Tensor) -> Iterator[None]:
    """Fit small CPU problems single-threaded, as scikit-learn does with threadpoolctl.

    Lloyd iterations on a few hundred samples are thousands of tiny ops, where intra-op threads
    only add synchronisation; on a busy CPU each op then waits for a core (the measurement:
    bench/README.md, "Measurement log: small k-means threads").
    """
    if x.device.type != "cpu" or x.numel() > SMALL_PROBLEM:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def kmeans(x: Tensor, k: int, seed: int = 0, n_init: int = 10, max_iter: int = 300) -> KMeans:
    """k-means of the rows of ``x`` [N, D]: the best of ``n_init`` seeded restarts.

    Deterministic for a fixed ``seed``: all random draws come from one CPU generator. An empty
    cluster keeps its previous centre. Lloyd iterations stop when no assignment changes.
    """
    n = int(x.shape[0])
    if not 1 <= k <= n:
        raise ValueError(f"k-means with k={k} needs between 1 and {n} clusters for {n} points")
    generator = torch.Generator().manual_seed(int(seed))
    x = x.float()
    with _one_thread_if_small(x):
        return _best_of(x, k, generator, n_init, max_iter)


def _best_of(x: Tensor, k: int, generator: torch.Generator, n_init: int, max_iter: int) -> KMeans:
    """The restart with the lowest mean squared distance (Lloyd from k-means++ seeds)."""
    best: KMeans | None = None
    for _ in range(max(1, n_init)):
        centroids = _plus_plus(x, k, generator)
        labels = None
        for _ in range(max_iter):
            new_labels, _ = assign(x, centroids)
            if labels is not None and torch.equal(new_labels, labels):
                break
            labels = new_labels
            sums = torch.zeros_like(centroids).index_add_(0, labels, x)
            counts = torch.bincount(labels, minlength=k).to(x.dtype)[:, None]
            centroids = torch.where(counts > 0, sums / counts.clamp_min(1), centroids)
        inertia = float(assign(x, centroids)[1].mean())
        if best is None or inertia < best.inertia:
            best = KMeans(centroids=centroids, inertia=inertia)
    assert best is not None
    return best


@dataclass
class ElbowResult:
    """The clustering the elbow rule settled on: its k, centroids, the labels of all points and
    the mean squared distance of all points for each k tried."""

    k: int
    centroids: Tensor
    labels: Tensor
    objectives: list[float]


def elbow_kmeans(samples: Tensor, points: Tensor, elbow: float = 0.975, max_k: int = 14,
                 seed: int = 0, n_init: int = 10) -> ElbowResult:
    """Fit k = 1, 2, ... on ``samples``, assign all ``points``, and stop at the first k whose mean
    squared distance exceeds ``elbow`` x that of k - 1 (adding a cluster helped by less than
    1 - elbow), or at ``max_k``. As in the paper's code, the k that triggered the stop is kept.
    k never exceeds the number of samples.
    """
    objectives: list[float] = []
    result: ElbowResult | None = None
    for k in range(1, min(max_k, int(samples.shape[0])) + 1):
        fitted = kmeans(samples, k, seed=seed, n_init=n_init)
        labels, d2 = assign(points, fitted.centroids)
        objectives.append(float(d2.mean()))
        result = ElbowResult(k=k, centroids=fitted.centroids, labels=labels, objectives=list(objectives))
        if len(objectives) > 1 and objectives[-1] > elbow * objectives[-2]:
            break
    if result is None:
        raise ValueError("no descriptors to cluster")
    return result


def salient_clusters(labels: Sequence[Tensor], saliency: Sequence[Tensor], k: int, thresh: float,
                     votes_percentage: float) -> tuple[Tensor, Tensor]:
    """Vote: an image votes for a cluster when the mean saliency of the cluster's tokens in that
    image exceeds ``thresh`` (a cluster absent from an image gets no vote from it). A cluster is
    salient with at least ceil(images x votes_percentage / 100) votes.

    Returns (salient [k] bool, votes [k]).
    """
    votes = torch.zeros(k, dtype=torch.long, device=labels[0].device)
    for image_labels, image_saliency in zip(labels, saliency):
        counts = torch.bincount(image_labels, minlength=k)
        sums = torch.zeros(k, device=image_saliency.device).index_add_(0, image_labels, image_saliency.float())
        mean = sums / counts.clamp_min(1)
        votes += ((counts > 0) & (mean > thresh)).long()
    needed = math.ceil(len(labels) * votes_percentage / 100)
    return votes >= needed, votes


# -- co-segmentation -------------------------------------------------------------------------


@dataclass
class Cosegmentation:
    """Masks [H, W] in {0, 1} at each image's own size, and how they were found."""

    masks: list[Tensor]
    token_masks: list[Tensor]
    labels: list[Tensor]
    salient: Tensor
    votes: Tensor
    k: int
    objectives: list[float]
    inliers: list[bool]
    infos: list[ImageDescriptors] = field(repr=False)
    centroids: Tensor = field(repr=False)


def _sample(descriptors: Sequence[Tensor], interval: int) -> Tensor:
    """Every ``interval``-th descriptor of each image, together (what k-means is fitted on)."""
    return torch.cat([d[::max(1, interval)] for d in descriptors])


def cosegment(backbone: DinoBackbone, images: Sequence[Tensor], device: torch.device | str,
              config: DescriptorConfig = DescriptorConfig(), elbow: float = 0.975, thresh: float = 0.065,
              votes_percentage: float = 75, sample_interval: int = 100, max_clusters: int = 14,
              low_res_saliency: bool = True, remove_outliers: bool = False, outliers_thresh: float = 0.7,
              seed: int = 0, n_init: int = 10, memory_limit: int | None = None,
              on_image: OnImage = None) -> Cosegmentation:
    """Co-segment the common foreground of ``images`` (each [1, 3, H, W] or [3, H, W] in [0, 1]).

    Needs at least two images. With ``remove_outliers``, images whose CLS descriptor has a cosine
    similarity below ``outliers_thresh`` to the mean are left out of the clustering and get an
    empty mask. The mask of each image is its salient-cluster tokens, upsampled bilinearly to
    the image's own size and thresholded at 0.5 (the paper's code refines with GrabCut instead).
    """
    if len(images) < 2:
        raise ValueError(f"co-segmentation needs at least 2 images (it finds what they have in "
                         f"common); got {len(images)}. Batch more images into 'images'.")
    if not 0 < votes_percentage <= 100:
        raise ValueError(f"votes_percentage must be in (0, 100], got {votes_percentage}")
    infos = extract_descriptors(backbone, images, config, device, saliency=True,
                                low_res_saliency=low_res_saliency, with_cls=remove_outliers,
                                memory_limit=memory_limit, on_image=on_image)
    inliers = [True] * len(infos)
    if remove_outliers:
        cls = torch.stack([info.cls for info in infos if info.cls is not None])
        similarity = torch.nn.functional.cosine_similarity(cls, cls.mean(0, keepdim=True), dim=1)
        inliers = (similarity >= outliers_thresh).tolist()
        if sum(inliers) < 2:
            raise ValueError(f"only {sum(inliers)} image(s) are within outliers_thresh "
                             f"{outliers_thresh} of the mean; lower 'outliers_thresh' or turn "
                             f"'remove_outliers' off.")
    used = [info for info, keep in zip(infos, inliers) if keep]
    normalised = [l2_normalise(info.descriptors) for info in used]
    result = elbow_kmeans(_sample(normalised, sample_interval), torch.cat(normalised), elbow,
                          max_clusters, seed, n_init)
    labels = list(torch.split(result.labels, [d.shape[0] for d in normalised]))
    saliencies = [info.saliency for info in used if info.saliency is not None]  # all: saliency=True
    salient, votes = salient_clusters(labels, saliencies, result.k, thresh, votes_percentage)
    log.info("co-segmentation: k=%d, salient clusters %s, votes %s", result.k,
             salient.nonzero().flatten().tolist(), votes.tolist())
    masks, token_masks, all_labels = [], [], []
    used_iter = iter(zip(used, labels))
    for info, keep in zip(infos, inliers):
        if not keep:
            masks.append(torch.zeros(info.image_size, device=info.descriptors.device))
            token_masks.append(torch.zeros(info.grid, dtype=torch.bool, device=info.descriptors.device))
            all_labels.append(torch.full(info.grid, -1, dtype=torch.long, device=info.descriptors.device))
            continue
        _, image_labels = next(used_iter)
        token_mask = salient[image_labels].reshape(info.grid)
        full = grid_to_image(token_mask[None].float(), info, mode="bilinear")[0]
        masks.append((full > 0.5).float())
        token_masks.append(token_mask)
        all_labels.append(image_labels.reshape(info.grid))
    return Cosegmentation(masks=masks, token_masks=token_masks, labels=all_labels, salient=salient,
                          votes=votes, k=result.k, objectives=result.objectives, inliers=inliers,
                          infos=infos, centroids=result.centroids)


# -- part co-segmentation --------------------------------------------------------------------


@dataclass
class PartCosegmentation:
    """Per image a label map [H, W] at its own size: 0..num_parts-1 for parts, num_parts for background."""

    labels: list[Tensor]
    num_parts: int
    cosegmentation: Cosegmentation


def part_cosegment(backbone: DinoBackbone, images: Sequence[Tensor], device: torch.device | str,
                   num_parts: int = 4, config: DescriptorConfig = DescriptorConfig(), elbow: float = 0.975,
                   thresh: float = 0.065, votes_percentage: float = 75, sample_interval: int = 100,
                   low_res_saliency: bool = True, seed: int = 0, n_init: int = 10,
                   memory_limit: int | None = None, on_image: OnImage = None) -> PartCosegmentation:
    """Parts common to all images: co-segment, then k-means of the foreground descriptors into
    ``num_parts`` clusters. Each token scores every part (distance to the part's centre); the
    scores are upsampled bilinearly to the image's size, each pixel of the co-segmentation mask
    takes the closest part and every other pixel is background, so the parts tile exactly the
    co-segmented object. Parts are numbered by size over the whole set (0 = largest), so colours
    are stable across the batch. The paper's code instead lets the distance to the nearest
    background cluster compete with the parts and smooths the result with a dense CRF.
    """
    if num_parts < 1:
        raise ValueError(f"num_parts must be at least 1, got {num_parts}")
    coseg = cosegment(backbone, images, device, config, elbow=elbow, thresh=thresh,
                      votes_percentage=votes_percentage, sample_interval=sample_interval,
                      low_res_saliency=low_res_saliency, seed=seed, n_init=n_init, memory_limit=memory_limit,
                      on_image=on_image)
    normalised = [l2_normalise(info.descriptors) for info in coseg.infos]
    foreground = [d[m.flatten()] for d, m in zip(normalised, coseg.token_masks)]
    total = sum(int(f.shape[0]) for f in foreground)
    if total < num_parts:
        raise ValueError(f"the co-segmented foreground has {total} descriptor(s), fewer than "
                         f"num_parts={num_parts}: lower 'num_parts', lower 'thresh', or use a "
                         f"smaller 'stride' for more tokens.")
    samples = _sample(foreground, sample_interval)
    if samples.shape[0] < num_parts:  # too few samples for the parts asked: fit on all of them
        samples = torch.cat(foreground)
    parts = kmeans(samples, num_parts, seed=seed, n_init=n_init)
    sizes = torch.bincount(assign(torch.cat(foreground), parts.centroids)[0], minlength=num_parts)
    order = torch.argsort(sizes, descending=True, stable=True)
    part_centres = parts.centroids[order]
    label_maps = []
    for info, descs, mask in zip(coseg.infos, normalised, coseg.masks):
        scores = -squared_distances(descs, part_centres)
        grid = scores.T.reshape(num_parts, *info.grid)
        labels = grid_to_image(grid, info, mode="bilinear").argmax(dim=0)
        label_maps.append(torch.where(mask > 0, labels, torch.full_like(labels, num_parts)))
    for index, keep in enumerate(coseg.inliers):
        if not keep:
            label_maps[index] = torch.full_like(label_maps[index], num_parts)
    return PartCosegmentation(labels=label_maps, num_parts=num_parts, cosegmentation=coseg)


# -- correspondences ------------------------------------------------------------------------


@dataclass
class Correspondences:
    """Matches between two images, most salient first: (x, y) pixel coordinates in each image's
    own size, the cosine similarity of the pair's descriptors and its mean saliency."""

    points_a: Tensor
    points_b: Tensor
    similarity: Tensor
    saliency: Tensor
    best_buddies: int

    def to_json(self) -> list[dict[str, object]]:
        """A list of {"index", "a": [x, y], "b": [x, y], "similarity", "saliency"} (index from 1)."""
        return [{"index": i + 1,
                 "a": [round(float(a[0]), 2), round(float(a[1]), 2)],
                 "b": [round(float(b[0]), 2), round(float(b[1]), 2)],
                 "similarity": round(float(s), 4), "saliency": round(float(r), 4)}
                for i, (a, b, s, r) in enumerate(zip(self.points_a, self.points_b, self.similarity,
                                                      self.saliency))]


CORRESPONDENCE_CONFIG = DescriptorConfig(block=9, bin=True)
"""The paper code's correspondence defaults: block 9, key, log-binned, stride 4, load size 224."""


def best_buddies(a: Tensor, b: Tensor, chunk: int = 4096) -> tuple[Tensor, Tensor, Tensor]:
    """Mutual nearest neighbours of L2-normalised rows: (a's nearest in b, its similarity,
    b's nearest in a). Computed in chunks of ``a`` so the full similarity matrix is never held."""
    nn_ab, sim_ab = [], []
    best_ba = torch.full((b.shape[0],), -float("inf"), device=b.device)
    nn_ba = torch.zeros(b.shape[0], dtype=torch.long, device=b.device)
    for start in range(0, a.shape[0], chunk):
        sim = a[start:start + chunk] @ b.T
        value, index = sim.max(dim=1)
        nn_ab.append(index)
        sim_ab.append(value)
        col_value, col_index = sim.max(dim=0)
        better = col_value > best_ba
        best_ba = torch.where(better, col_value, best_ba)
        nn_ba = torch.where(better, col_index + start, nn_ba)
    return torch.cat(nn_ab), torch.cat(sim_ab), nn_ba


def correspondences(backbone: DinoBackbone, image_a: Tensor, image_b: Tensor, device: torch.device | str,
                    num_pairs: int = 10, config: DescriptorConfig = CORRESPONDENCE_CONFIG,
                    thresh: float = 0.05, seed: int = 0, n_init: int = 10,
                    memory_limit: int | None = None, on_image: OnImage = None) -> Correspondences:
    """Up to ``num_pairs`` well-spread point matches between two images.

    Best buddies between the two descriptor sets, kept where both tokens are salient
    (saliency > ``thresh``, from the same forward); k-means with ``num_pairs`` clusters on the
    pairs' concatenated descriptors, and from each cluster the pair of highest mean saliency.
    """
    if num_pairs < 1:
        raise ValueError(f"num_pairs must be at least 1, got {num_pairs}")
    info_a, info_b = extract_descriptors(backbone, [image_a, image_b], config, device, saliency=True,
                                         low_res_saliency=False, memory_limit=memory_limit,
                                         on_image=on_image)
    assert info_a.saliency is not None and info_b.saliency is not None
    da, db = l2_normalise(info_a.descriptors), l2_normalise(info_b.descriptors)
    nn_ab, sim_ab, nn_ba = best_buddies(da, db)
    keep = nn_ba[nn_ab] == torch.arange(da.shape[0], device=da.device)
    keep &= info_a.saliency > thresh
    keep &= info_b.saliency[nn_ab] > thresh
    index_a = keep.nonzero().flatten()
    index_b = nn_ab[index_a]
    empty = torch.zeros(0, 2)
    if index_a.numel() == 0:
        return Correspondences(empty, empty, torch.zeros(0), torch.zeros(0), 0)
    pairs = l2_normalise(torch.cat((info_a.descriptors[index_a], info_b.descriptors[index_b]), dim=1))
    k = min(num_pairs, int(index_a.numel()))
    labels = assign(pairs, kmeans(pairs, k, seed=seed, n_init=n_init).centroids)[0]
    rank = (info_a.saliency[index_a] + info_b.saliency[index_b]) / 2
    chosen = []
    for cluster in range(k):
        members = (labels == cluster).nonzero().flatten()
        if members.numel():
            chosen.append(int(members[rank[members].argmax()]))
    chosen_t = torch.tensor(chosen, device=rank.device, dtype=torch.long)
    chosen_t = chosen_t[torch.argsort(rank[chosen_t], descending=True, stable=True)]
    return Correspondences(points_a=token_centres(info_a, index_a[chosen_t]).cpu(),
                           points_b=token_centres(info_b, index_b[chosen_t]).cpu(),
                           similarity=sim_ab[index_a[chosen_t]].cpu(), saliency=rank[chosen_t].cpu(),
                           best_buddies=int(index_a.numel()))


# -- PCA view -------------------------------------------------------------------------------


def principal_components(x: Tensor, components: int = 3, seed: int = 0) -> Tensor:
    """The top principal directions [D, components] of the rows of ``x``, with a fixed sign
    (each direction's largest-magnitude coefficient is positive) so colours are reproducible."""
    centred = x.float() - x.float().mean(0, keepdim=True)
    if x.shape[1] <= 4096:
        cov = (centred.T.double() @ centred.double()) / max(1, x.shape[0] - 1)
        _, vectors = torch.linalg.eigh(cov)
        directions = vectors[:, -components:].flip(1).float()
    else:  # binned descriptors are wide: a randomised low-rank PCA, seeded
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            _, _, v = torch.pca_lowrank(centred, q=components + 10, center=False)
        directions = v[:, :components]
    signs = torch.sign(directions.gather(0, directions.abs().argmax(0, keepdim=True)))
    return directions * torch.where(signs == 0, torch.ones_like(signs), signs)


def pca_images(backbone: DinoBackbone, images: Sequence[Tensor], device: torch.device | str,
               config: DescriptorConfig = DescriptorConfig(), memory_limit: int | None = None,
               on_image: OnImage = None) -> list[Tensor]:
    """The first three principal components of all images' descriptors (fitted together, so a
    colour means the same across the batch) as RGB [3, H, W] at each image's own size; each
    component min-max normalised per image, tokens drawn as blocks (nearest)."""
    infos = extract_descriptors(backbone, images, config, device, memory_limit=memory_limit,
                                on_image=on_image)
    stacked = torch.cat([info.descriptors for info in infos])
    components = min(3, int(stacked.shape[1]))
    directions = principal_components(stacked, components)
    mean = stacked.float().mean(0, keepdim=True)
    pictures = []
    for info in infos:
        projected = (info.descriptors.float() - mean) @ directions
        if components < 3:
            projected = torch.cat((projected, projected[:, -1:].expand(-1, 3 - components)), dim=1)
        low, high = projected.amin(0, keepdim=True), projected.amax(0, keepdim=True)
        projected = (projected - low) / torch.where(high > low, high - low, torch.ones_like(high))
        grid = projected.T.reshape(3, *info.grid)
        pictures.append(grid_to_image(grid, info, mode="nearest").clamp(0, 1))
    return pictures
