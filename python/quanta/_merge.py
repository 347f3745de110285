"""Merging the results of several parts of one index (the shards of quanta.distributed): the
k best of each query by score, and range hits.

The parts' scores are comparable because they come from one trained state (the same
codebooks, scales, encoder), so a merge is a sort.
"""
from __future__ import annotations

import numpy as np


def merge_topk(distances, ids, k: int, higher_is_better: bool):
    """The k best of each query over the parts' (nq, k_p) results, best first; ties keep
    part order. Rows with fewer than k hits stay padded (-1, worst score)."""
    D = np.concatenate(distances, axis=1)
    I = np.concatenate(ids, axis=1)
    order = np.argsort(-D if higher_is_better else D, axis=1, kind="stable")[:, :k]
    D, I = np.take_along_axis(D, order, 1), np.take_along_axis(I, order, 1)
    if D.shape[1] < k:
        pad = k - D.shape[1]
        D = np.pad(D, ((0, 0), (0, pad)), constant_values=-np.inf if higher_is_better else np.inf)
        I = np.pad(I, ((0, 0), (0, pad)), constant_values=-1)
    return np.ascontiguousarray(D, np.float32), np.ascontiguousarray(I, np.int64)


def merge_ranges(results, nq: int, higher_is_better: bool):
    """(lims, distances, ids) of the parts' range results together, each query's hits best
    first."""
    query = np.concatenate([np.repeat(np.arange(nq), np.diff(r.lims.astype(np.int64)))
                            for r in results])
    D = np.concatenate([r.distances for r in results]).astype(np.float32, copy=False)
    I = np.concatenate([r.ids for r in results]).astype(np.int64, copy=False)
    order = np.lexsort((-D if higher_is_better else D, query))
    lims = np.zeros(nq + 1, np.int64)
    np.cumsum(np.bincount(query, minlength=nq), out=lims[1:])
    return lims, D[order], I[order]
