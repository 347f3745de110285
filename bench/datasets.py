"""Datasets for the flat-search benchmarks, exact ground truth and recall.

* ``clustered(n, d, nq, seed)``: seeded synthetic clustered data, float32,
  rows L2-normalized; queries are fresh draws from the same mixture.
* ``real_embeddings(n, nq)``: 384-d all-MiniLM-L6-v2 embeddings of GCIDE
  dictionary definitions, loaded from a cache built offline by
  ``python -m bench.build_embeddings``.
* ``ground_truth(xb, xq, k, metric)`` and ``recall_at_k(I, I_true, k)``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

DEFAULT_DIM = 384


# --------------------------------------------------------------------------
# synthetic clustered data
# --------------------------------------------------------------------------

def _l2_normalize(x: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    norms[norms == 0] = 1.0
    return (x / norms).astype(np.float32, copy=False)


def clustered(n: int, d: int = DEFAULT_DIM, nq: int = 1000, seed: int = 0,
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
    rng = np.random.default_rng(seed)
    if n_clusters is None:
        n_clusters = int(min(300, max(8, n // 100)))
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


# --------------------------------------------------------------------------
# real embeddings (cache built by bench.build_embeddings)
# --------------------------------------------------------------------------

def cache_dir() -> Path:
    """Cache folder for built embeddings: $QUANTA_BENCH_CACHE or ~/.cache/quanta-bench."""
    env = os.environ.get("QUANTA_BENCH_CACHE")
    if env:
        return Path(env).expanduser()
    return Path.home() / ".cache" / "quanta-bench"


BASE_FILE = "gcide_minilm_base.npy"
QUERY_FILE = "gcide_minilm_queries.npy"
META_FILE = "gcide_minilm_meta.json"


def real_embeddings(n: int | None = None, nq: int | None = None,
                    cache: str | os.PathLike | None = None):
    """Load cached real text embeddings (float32, L2-normalized, 384-d).

    Returns ``(xb, xq)``: the first ``n`` base rows and ``nq`` query rows
    (all of them when None).  Raises ``FileNotFoundError`` naming the build
    command when the cache is missing, and ``ValueError`` when it is too small.
    """
    root = Path(cache) if cache is not None else cache_dir()
    base_p, q_p = root / BASE_FILE, root / QUERY_FILE
    if not base_p.exists() or not q_p.exists():
        need = n if n is not None else 50000
        raise FileNotFoundError(
            f"real embeddings not found in {root} (expected {BASE_FILE} and "
            f"{QUERY_FILE}). Build them with:\n"
            f"    apt-get install dict-gcide   # the texts\n"
            f"    pip install -r bench/requirements-embed.txt\n"
            f"    python -m bench.build_embeddings --n {need}\n"
            f"(set QUANTA_BENCH_CACHE to use another folder)")
    xb = np.load(base_p, mmap_mode="r")
    xq = np.load(q_p, mmap_mode="r")
    if n is not None and n > xb.shape[0]:
        raise ValueError(
            f"asked for n={n} real base vectors but the cache in {root} holds "
            f"{xb.shape[0]}; rebuild with: python -m bench.build_embeddings --n {n}")
    if nq is not None and nq > xq.shape[0]:
        raise ValueError(
            f"asked for nq={nq} real queries but the cache in {root} holds "
            f"{xq.shape[0]}; rebuild with: python -m bench.build_embeddings --nq {nq}")
    xb = np.ascontiguousarray(xb[:n], dtype=np.float32)
    xq = np.ascontiguousarray(xq[:nq], dtype=np.float32)
    return xb, xq


def real_embeddings_meta(cache: str | os.PathLike | None = None) -> dict:
    root = Path(cache) if cache is not None else cache_dir()
    p = root / META_FILE
    return json.loads(p.read_text()) if p.exists() else {}


def load(data: str, n: int, nq: int, d: int = DEFAULT_DIM, seed: int = 0):
    """``load("clustered"|"real", n, nq)`` -> (xb, xq)."""
    if data == "clustered":
        return clustered(n, d, nq, seed)
    if data == "real":
        return real_embeddings(n, nq)
    raise ValueError(f"unknown data set {data!r} (clustered|real)")


# --------------------------------------------------------------------------
# ground truth and recall
# --------------------------------------------------------------------------

def _topk_rows(scores: np.ndarray, k: int):
    """Indices and values of the k largest scores per row, sorted descending."""
    k = min(k, scores.shape[1])
    if k < scores.shape[1]:
        part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    else:
        part = np.tile(np.arange(scores.shape[1]), (scores.shape[0], 1))
    vals = np.take_along_axis(scores, part, axis=1)
    order = np.argsort(-vals, axis=1, kind="stable")
    return np.take_along_axis(part, order, axis=1), np.take_along_axis(vals, order, axis=1)


def ground_truth(xb: np.ndarray, xq: np.ndarray, k: int, metric: str = "ip",
                 dtype=np.float64, q_chunk: int = 256, b_chunk: int = 131072):
    """Exact k-NN by numpy brute force, chunked over queries and base.

    ``metric``: "ip" (largest inner product) or "l2" (smallest squared L2).
    ``dtype``: float64 (default, exact reference) or float32.
    Returns ``(D, I)``: D the inner products (ip) or squared distances (l2),
    I int64 ids, each ``(nq, k)``, best first.
    """
    if metric not in ("ip", "l2"):
        raise ValueError("metric must be 'ip' or 'l2'")
    xb = np.asarray(xb)
    xq = np.asarray(xq)
    nb, nq = xb.shape[0], xq.shape[0]
    k = min(k, nb)
    D = np.empty((nq, k), dtype=np.float64)
    I = np.empty((nq, k), dtype=np.int64)
    # for l2 rank by 2<q,x> - |x|^2 (largest), the |q|^2 term is constant per row
    for qs in range(0, nq, q_chunk):
        q = xq[qs:qs + q_chunk].astype(dtype)
        best_v = np.full((len(q), 0), -np.inf)
        best_i = np.zeros((len(q), 0), dtype=np.int64)
        for bs in range(0, nb, b_chunk):
            b = xb[bs:bs + b_chunk].astype(dtype)
            s = q @ b.T
            if metric == "l2":
                s = 2.0 * s - np.einsum("ij,ij->i", b, b)[None, :]
            ii, vv = _topk_rows(s, k)
            best_v = np.concatenate([best_v, vv], axis=1)
            best_i = np.concatenate([best_i, ii + bs], axis=1)
            sel, best_v = _topk_rows(best_v, k)
            best_i = np.take_along_axis(best_i, sel, axis=1)
        if metric == "l2":
            qn = np.einsum("ij,ij->i", q, q).astype(np.float64)
            D[qs:qs + len(q)] = qn[:, None] - best_v
        else:
            D[qs:qs + len(q)] = best_v
        I[qs:qs + len(q)] = best_i
    return D, I


def recall_at_k(I: np.ndarray, I_true: np.ndarray, k: int) -> float:
    """Mean over queries of |top-k found ∩ true top-k| / k (ids < 0 ignored)."""
    I = np.asarray(I)[:, :k]
    T = np.asarray(I_true)[:, :k]
    if I.shape[0] != T.shape[0]:
        raise ValueError("I and I_true have different numbers of queries")
    hits = 0
    for a, b in zip(I, T):
        hits += len(set(a[a >= 0].tolist()) & set(b.tolist()))
    return hits / (k * I.shape[0])
