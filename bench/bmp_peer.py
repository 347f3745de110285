"""BMP (block-max pruning; Mallia, Suel, Tonellotto, SIGIR 2024; PyPI ``bmp``) as a peer of
``bench.sparse``.

BMP stores integer impacts of at most 8 bits: document weights are scaled so the largest in
the collection becomes 255 and rounded (entries rounding to 0 are dropped); query weights go
through the same scale and BMP itself rescales them to at most 32 (rounding up). Documents
are indexed in BP order (``bench.bp_order``), as BMP's authors index their collections, or in
their given order. Search: ``alpha`` (stop when the best block bound left is below the k-th
score / alpha) and ``beta`` (the share of the query's heaviest terms kept); 1, 1 is exact on
the integer impacts. One query per call: BMP's batch ``search`` reads the index from its file
and runs the queries one after another, so it has no all-thread figure of its own.
"""
from __future__ import annotations

import os
import time

import numpy as np

ALPHAS = (1.0, 0.9, 0.8, 0.7, 0.6)
BETAS = (1.0, 0.7, 0.5, 0.3)


class BMP:
    def __init__(self, docs, bsize, path, order="bp"):
        import bmp
        from bench.bp_order import bp_order
        indptr, indices, data = docs
        self.scale = 255.0 / float(data.max())
        t0 = time.perf_counter()
        perm = (bp_order(indptr, indices, int(indices.max()) + 1) if order == "bp"
                else np.arange(len(indptr) - 1))
        self.order_seconds = time.perf_counter() - t0
        t0 = time.perf_counter()
        ix = bmp.Indexer(path, bsize, False)
        imp = np.rint(data * self.scale).astype(np.int64)
        for i in perm:
            s, e = indptr[i], indptr[i + 1]
            keep = imp[s:e] > 0
            ix.add_document(str(i), dict(zip(indices[s:e][keep].astype(str).tolist(),
                                             imp[s:e][keep].tolist())))
        ix.finish()
        self.build_seconds = time.perf_counter() - t0
        self.bytes = os.path.getsize(path)
        self.searcher = bmp.Searcher(path)

    def query_dicts(self, queries):
        indptr, indices, data = queries
        out = []
        for i in range(len(indptr) - 1):
            s, e = indptr[i], indptr[i + 1]
            w = np.maximum(np.rint(data[s:e] * self.scale), 1).astype(np.int64)
            out.append(dict(zip(indices[s:e].astype(str).tolist(), w.tolist())))
        return out

    def search(self, qdicts, k, alpha, beta):
        """Ids (nq, k) of the documents found, -1 where fewer."""
        out = np.full((len(qdicts), k), -1, np.int64)
        for j, q in enumerate(qdicts):
            ids = self.searcher.search(q, k, alpha, beta)[0]
            out[j, :len(ids)] = [int(x) for x in ids]
        return out
