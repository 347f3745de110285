"""Merging per-shard results into one: the k best of each query by score, and range hits.

Scores from different shards are comparable because every shard was built from one trained
state (the same codebooks, scales, encoder), so a merge is a sort.
"""
from __future__ import annotations

import numpy as np


def merge_topk(distances, ids, k: int, higher_is_better: bool):
    """The k best of each query over the shards' (nq, k_s) results, best first; ties keep
    shard order. Rows with fewer than k hits stay padded (-1, worst score)."""
    D = np.concatenate(distances, axis=1)
    I = np.concatenate(ids, axis=1)
    key = -D if higher_is_better else D
    if D.shape[1] > k:
        # a partition, then a stable sort of the k kept: cheaper than sorting every column
        keep = np.sort(np.argpartition(key, k - 1, axis=1)[:, :k], axis=1)
        D, I, key = (np.take_along_axis(a, keep, 1) for a in (D, I, key))
    order = np.argsort(key, axis=1, kind="stable")
    D, I = np.take_along_axis(D, order, 1), np.take_along_axis(I, order, 1)
    if D.shape[1] < k:
        pad = k - D.shape[1]
        D = np.pad(D, ((0, 0), (0, pad)), constant_values=-np.inf if higher_is_better else np.inf)
        I = np.pad(I, ((0, 0), (0, pad)), constant_values=-1)
    return np.ascontiguousarray(D, np.float32), np.ascontiguousarray(I, np.int64)


def merge_ranges(results, nq: int, higher_is_better: bool):
    """(lims, distances, ids) of the shards' range results together, each query's hits best
    first."""
    query = np.concatenate([np.repeat(np.arange(nq), np.diff(r.lims.astype(np.int64)))
                            for r in results])
    D = np.concatenate([r.distances for r in results]).astype(np.float32, copy=False)
    I = np.concatenate([r.ids for r in results]).astype(np.int64, copy=False)
    order = np.lexsort((-D if higher_is_better else D, query))
    lims = np.zeros(nq + 1, np.int64)
    np.cumsum(np.bincount(query, minlength=nq), out=lims[1:])
    return lims, D[order], I[order]
