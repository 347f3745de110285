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
# synthetic clustered data: quanta's built-in generator (also used by `python -m quanta demo`)
# --------------------------------------------------------------------------

from quanta.datasets import clustered  # noqa: E402,F401


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
