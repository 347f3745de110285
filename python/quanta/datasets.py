"""Built-in synthetic data and vector file readers (.npy, .fvecs)."""
from __future__ import annotations

import os

import numpy as np


def clustered(n: int, dim: int, nq: int, *, seed: int = 0, nclusters: int = 256):
    """Seeded Gaussian-mixture data with L2-normalized rows, like sentence embeddings.

    Cluster spreads vary, so neighbourhoods range from tight to loose; queries are fresh draws
    from the same mixture. Returns (base (n, dim), queries (nq, dim)) as float32.
    """
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((nclusters, dim)).astype(np.float32)
    spread = rng.uniform(0.6, 1.2, nclusters).astype(np.float32)
    weights = rng.dirichlet(np.ones(nclusters))

    def draw(m):
        c = rng.choice(nclusters, size=m, p=weights)
        x = centres[c] + spread[c, None] * rng.standard_normal((m, dim), dtype=np.float32)
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        return x

    return draw(n), draw(nq)


def read_vectors(path) -> np.ndarray:
    """Reads float vectors from .npy (memory-mapped) or .fvecs (int32 dim, then floats per row)."""
    path = os.fspath(path)
    if path.endswith(".npy"):
        x = np.load(path, mmap_mode="r")
    elif path.endswith(".fvecs"):
        raw = np.fromfile(path, dtype=np.int32)
        if raw.size == 0:
            raise ValueError(f"{path}: empty file")
        d = int(raw[0])
        if d <= 0 or raw.size % (d + 1):
            raise ValueError(f"{path}: not a valid .fvecs file (dim {d}, {raw.size * 4} bytes)")
        rows = raw.reshape(-1, d + 1)
        if (rows[:, 0] != d).any():
            raise ValueError(f"{path}: rows of different dimensions")
        x = rows[:, 1:].view(np.float32)
    else:
        raise ValueError(f"{path}: unsupported file type; use .npy or .fvecs")
    if x.ndim != 2:
        raise ValueError(f"{path}: expected a 2-D array of vectors; got shape {x.shape}")
    return x
