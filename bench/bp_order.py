"""Document reordering by recursive graph bisection (BP), for the block-max peer BMP.

BMP's authors (Mallia, Suel, Tonellotto, SIGIR 2024) index collections reordered by BP
(Dhulipala et al., KDD 2016; Mackenzie et al.'s faster variant): documents sharing terms
end up in the same blocks, so block maxima are tight. This is a NumPy rendering of that
algorithm: split the current order in halves, then for ``iters`` rounds move the documents
whose move most lowers the log-gap cost sum_t d1 log(n1 / (d1 + 1)) + d2 log(n2 / (d2 + 1))
(d1, d2: documents of each half holding term t), swapping pairs while the pair's gain is
positive; recurse until parts of ``leaf`` documents. Every part of a level is handled at once.
"""
from __future__ import annotations

import numpy as np


def _cost(d, n):
    d = np.maximum(d, 0)  # -1 only where that move cannot happen
    return d * np.log2(n / (d + 1.0))


def bp_order(indptr, indices, dim, leaf=16, iters=12):
    """A permutation of the documents (new position -> old document id) by BP."""
    n = len(indptr) - 1
    doc = np.repeat(np.arange(n, dtype=np.int64), np.diff(indptr))
    term = np.asarray(indices, np.int64)
    perm = np.arange(n, dtype=np.int64)
    starts = np.array([0], np.int64)          # the parts of the current level, as ranges
    ends = np.array([n], np.int64)
    while (ends - starts > leaf).any():
        split = ends - starts > leaf
        mids = (starts + ends) // 2
        pos = np.empty(n, np.int64)
        pos[perm] = np.arange(n)
        part = np.searchsorted(starts, pos, side="right") - 1   # each document's part
        active = split[part]
        side = (active & (pos >= mids[part])).astype(np.int64)
        n1 = (mids - starts).astype(np.float64)
        n2 = (ends - mids).astype(np.float64)
        # entries of active parts grouped by (part, term), once per level
        sel = active[doc]
        e_doc, e_key = doc[sel], part[doc[sel]] * dim + term[sel]
        order = np.argsort(e_key, kind="stable")
        e_doc, e_key = e_doc[order], e_key[order]
        first = np.flatnonzero(np.r_[True, e_key[1:] != e_key[:-1]])
        group = np.cumsum(np.r_[False, e_key[1:] != e_key[:-1]])
        g_part = e_key[first] // dim
        cnt = np.diff(np.r_[first, len(e_key)]).astype(np.float64)
        a_n1, a_n2 = n1[g_part], n2[g_part]
        for _ in range(iters):
            e_side = side[e_doc]
            d2 = np.bincount(group, weights=e_side, minlength=len(first))
            d1 = cnt - d2
            now = _cost(d1, a_n1) + _cost(d2, a_n2)
            # gain (cost saved) of one document leaving side 0, or side 1, of each group
            g0 = now - (_cost(d1 - 1, a_n1) + _cost(d2 + 1, a_n2))
            g1 = now - (_cost(d1 + 1, a_n1) + _cost(d2 - 1, a_n2))
            gain = np.bincount(e_doc, weights=np.where(e_side == 1, g1[group], g0[group]),
                               minlength=n)
            # pair the i-th best mover of each half with the i-th best of the other half
            movers = np.flatnonzero(active)
            o = np.lexsort((-gain[movers], side[movers], part[movers]))
            m = movers[o]
            key = part[m] * 2 + side[m]
            rank = np.arange(len(m)) - np.searchsorted(key, key)
            left, right = m[side[m] == 0], m[side[m] == 1]
            lp, rp = part[left], part[right]
            rr = rank[side[m] == 1]
            # partner of right-side mover (part p, rank r): the left mover at the same place
            lstart = np.searchsorted(lp, np.arange(len(starts)))
            has = rr < (mids - starts)[rp]
            partner = left[np.minimum(lstart[rp] + rr, len(left) - 1)]
            swap = has & (gain[right] + gain[partner] > 0)
            if not swap.any():
                break
            side[right[swap]] = 0
            side[partner[swap]] = 1
        # the new order: by part, then side, keeping the old order within each
        o = np.lexsort((pos[perm], side[perm], part[perm]))
        perm = perm[o]
        starts = np.concatenate([starts, mids[split]])
        ends = np.concatenate([np.where(split, mids, ends), ends[split]])
        o = np.argsort(starts, kind="stable")
        starts, ends = starts[o], ends[o]
    return perm
