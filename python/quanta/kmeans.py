"""k-means clustering (used by IVF, PQ and anything else that clusters)."""
from __future__ import annotations

from typing import NamedTuple

import numpy as np

from . import _core
from ._validate import as_f32_matrix, as_int, as_seed, as_threads


class KMeansResult(NamedTuple):
    """centroids (k, dim) float32; assignments (n,) int64, the nearest centroid of every input
    row; objective (niter,) float64 per iteration: sum of squared distances of the training
    points (spherical: sum of inner products)."""

    centroids: np.ndarray
    assignments: np.ndarray
    objective: np.ndarray


def kmeans(x, k: int, *, niter: int = 25, seed: int = 0, max_points_per_centroid: int = 256,
           threads: int = 0, spherical: bool = False, init: str = "k-means++") -> KMeansResult:
    """Lloyd's k-means, seeded by k-means++ (``init="k-means++"``) or by ``k`` distinct
    training points drawn at random (``init="random"``, faiss's choice: no seeding pass,
    what IVF uses for its lists).

    Inputs above ``k * max_points_per_centroid`` rows are subsampled (seeded) for training;
    ``assignments`` still covers every row. Empty clusters are repaired by splitting a large
    one (as faiss does). ``spherical=True`` keeps unit-norm centroids and assigns by inner
    product. The result depends on ``seed`` only, not on ``threads``.
    """
    x = as_f32_matrix(x, None, "x")
    k, niter = as_int(k, "k", 1), as_int(niter, "niter")
    mppc = as_int(max_points_per_centroid, "max_points_per_centroid")
    seed = as_seed(seed)
    if init not in ("k-means++", "random"):
        raise ValueError(f"init must be 'k-means++' or 'random'; got {init!r}")
    if x.shape[0] < k:
        raise ValueError(f"x has {x.shape[0]} rows but k={k}: need at least k training points")
    c, a, obj = _core.kmeans(x, k, niter, seed, mppc, bool(spherical), as_threads(threads),
                             init == "random")
    return KMeansResult(c, a, obj)
