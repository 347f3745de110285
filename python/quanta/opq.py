"""OPQ: an orthogonal rotation learned so that product quantization loses less.

Non-parametric OPQ (Ge et al., "Optimized Product Quantization", 2013), as in faiss's
``OPQMatrix``: start from a random rotation, then alternate (1) a few k-means steps of the PQ
codebooks on the rotated sample, warm-started from the previous ones, and (2) the rotation
that best maps the sample onto its PQ reconstructions (orthogonal Procrustes: R = U V^T from
the SVD of X^T Y). Rotations keep L2 distances and inner products, so an index can search
rotated queries against rotated codes and return the same kind of distances.
"""
from __future__ import annotations

import numpy as np

from . import _core


def train_rotation(x: np.ndarray, m: int, nbits: int, *, niter: int = 20, niter_pq: int = 4,
                   seed: int = 0, max_train_points: int = 32768, threads: int = 0) -> np.ndarray:
    """The rotation R (dim, dim), float32 with orthonormal columns: PQ codes ``x @ R``.

    ``x`` is an already validated float32 (n, dim) array with n >= 2**nbits.
    """
    rng = np.random.default_rng(seed)
    n, dim = x.shape
    if n > max_train_points:  # the rotation has dim^2 parameters: a sample pins it down
        x = x[np.sort(rng.choice(n, max_train_points, replace=False))]
    x = np.asarray(x, np.float64)
    # A random rotation first spreads the variance over the sub-spaces (faiss does the same).
    r, _ = np.linalg.qr(rng.standard_normal((dim, dim)))
    pq = _core.PQ(dim, m, nbits)
    for it in range(niter):
        xr = np.ascontiguousarray(x @ r, np.float32)
        # The first round seeds the codebooks; later rounds move them from where they were.
        pq.train(xr, niter_pq if it else 2 * niter_pq, seed + it, 256, threads,
                 warm_start=it > 0)
        y = pq.decode(pq.encode(xr, threads)).astype(np.float64)
        u, _, vt = np.linalg.svd(x.T @ y)
        r = u @ vt
    return np.ascontiguousarray(r, np.float32)
