"""Built-in synthetic data and vector file readers (.npy, .fvecs)."""
from __future__ import annotations

import os

import numpy as np

from ._validate import as_int, as_seed


def _l2_normalize(x: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    norms[norms == 0] = 1.0
    return (x / norms).astype(np.float32, copy=False)


def clustered(n: int, d: int = 384, nq: int = 1000, seed: int = 0,
              n_clusters: int | None = None, latent_dim: int = 24):
    """Seeded gaussian-mixture data, rows L2-normalized, float32.

    A few hundred clusters (300 by default) with uneven sizes (Dirichlet
    weights) and varied spreads (log-uniform).  Within a cluster a point is
    the center plus a ``latent_dim``-dimensional gaussian in a random
    per-cluster subspace plus smaller full-dimensional noise with a decaying
    per-dimension spectrum; all clusters share a mean offset.  So the data
    has a low intrinsic dimension, unequal coordinate ranges and a nonzero
    mean, as real sentence embeddings do (with the defaults its neighbor
    statistics are close to the cached MiniLM/GCIDE embeddings: mean top-1
    similarity ~0.67 vs 0.67, top-10 ~0.54 vs 0.51, 10th-11th gap ~0.006 vs
    0.005).  Queries are *new* draws from the same mixture (never copies of
    base rows).

    Returns ``(xb, xq)`` with shapes ``(n, d)`` and ``(nq, d)``.
    """
    n, d, nq = as_int(n, "n", 1), as_int(d, "d", 1), as_int(nq, "nq")
    latent_dim = as_int(latent_dim, "latent_dim", 1)
    n_clusters = (min(300, max(8, n // 100)) if n_clusters is None
                  else as_int(n_clusters, "n_clusters", 1))
    rng = np.random.default_rng(as_seed(seed))
    r = int(min(latent_dim, d))
    centers = rng.standard_normal((n_clusters, d), dtype=np.float32)
    centers += rng.standard_normal(d, dtype=np.float32)          # shared mean offset
    spreads = np.exp(rng.uniform(np.log(0.5), np.log(1.5), n_clusters)).astype(np.float32)
    spectrum = (1.0 / np.sqrt(1.0 + np.arange(d) / 16.0)).astype(np.float32)
    spectrum *= np.sqrt(d / np.sum(spectrum ** 2))
    spectrum = spectrum[rng.permutation(d)]
    # per-cluster latent bases; each latent coordinate moves ~sqrt(d)/r in norm
    bases = rng.standard_normal((n_clusters, r, d), dtype=np.float32) * np.float32(np.sqrt(d) / r)
    weights = rng.dirichlet(np.full(n_clusters, 2.0))
    low, noise = np.float32(0.6), np.float32(0.35)

    def draw(m: int, g: np.random.Generator) -> np.ndarray:
        labels = g.choice(n_clusters, size=m, p=weights)
        order = np.argsort(labels, kind="stable")
        bounds = np.searchsorted(labels[order], np.arange(n_clusters + 1))
        out = np.empty((m, d), dtype=np.float32)
        for c in range(n_clusters):
            idx = order[bounds[c]:bounds[c + 1]]
            if len(idx) == 0:
                continue
            z = g.standard_normal((len(idx), r), dtype=np.float32)
            e = g.standard_normal((len(idx), d), dtype=np.float32)
            out[idx] = centers[c] + spreads[c] * (low * (z @ bases[c]) + noise * e * spectrum)
        return _l2_normalize(out)

    xb = draw(n, np.random.default_rng([seed, 1]))
    xq = draw(nq, np.random.default_rng([seed, 2]))
    return xb, xq


def sample_rows(n: int, size: int, seed: int) -> np.ndarray:
    """Sorted positions of `size` rows of n drawn at random with `seed` (all when there are
    fewer): a training sample that does not depend on the rows' order."""
    if size >= n:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, size, replace=False))


_BIN = {".fbin": np.float32, ".ibin": np.int32, ".u8bin": np.uint8, ".i8bin": np.int8}
_VECS = {".fvecs": np.float32, ".ivecs": np.int32, ".bvecs": np.uint8}


def read_vectors(path) -> np.ndarray:
    """Vectors from a file, memory-mapped (rows are read when used, so files larger than
    memory work): .npy; .fvecs / .ivecs / .bvecs (each row: int32 dim, then dim float32 /
    int32 / uint8 values); .fbin / .ibin / .u8bin / .i8bin (int32 n, int32 dim, then n x dim
    values; the big-ann-benchmarks format). Integer files come back as integers; callers cast
    batches to float32."""
    path = os.fspath(path)
    ext = os.path.splitext(path)[1]
    if ext == ".npy":
        x = np.load(path, mmap_mode="r")
    elif ext in _VECS:
        x = _read_vecs(path, np.dtype(_VECS[ext]))
    elif ext in _BIN:
        x = _read_bin(path, np.dtype(_BIN[ext]))
    else:
        raise ValueError(f"{path}: unsupported file type; use .npy, .fvecs, .ivecs, .bvecs, "
                         f".fbin, .ibin, .u8bin or .i8bin")
    if x.ndim != 2:
        raise ValueError(f"{path}: expected a 2-D array of vectors; got shape {x.shape}")
    if x.dtype.kind not in "fiu":  # complex, object, strings: no silent cast to float32
        raise ValueError(f"{path}: expected real numbers; got dtype {x.dtype}")
    return x


def _read_vecs(path, dtype):
    size = os.path.getsize(path)
    if size < 4:
        raise ValueError(f"{path}: empty file")
    d = int(np.fromfile(path, dtype="<i4", count=1)[0])
    row = 4 + d * dtype.itemsize
    if d <= 0 or size % row:
        raise ValueError(f"{path}: not a valid {os.path.splitext(path)[1]} file (dim {d}, "
                         f"{size} bytes)")
    rows = np.memmap(path, dtype=[("d", "<i4"), ("v", dtype.newbyteorder("<"), (d,))], mode="r")
    # every row repeats the dimension: checked on up to 1,025 rows spread over the file, so
    # a huge file is not read to open it
    probe = np.unique(np.linspace(0, len(rows) - 1, min(len(rows), 1025)).astype(np.int64))
    if (rows["d"][probe] != d).any():
        raise ValueError(f"{path}: rows of different dimensions")
    return rows["v"]


def _read_bin(path, dtype):
    size = os.path.getsize(path)
    if size < 8:
        raise ValueError(f"{path}: shorter than the 8-byte header")
    n, d = (int(v) for v in np.fromfile(path, dtype="<i4", count=2))
    if n < 0 or d <= 0 or size != 8 + n * d * dtype.itemsize:
        raise ValueError(f"{path}: the header says {n} x {d} but the file has {size} bytes")
    return np.memmap(path, dtype=dtype.newbyteorder("<"), mode="r", offset=8, shape=(n, d))
