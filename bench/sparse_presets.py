"""Search settings for SparseIndex.PRESETS: one grid of (query_cut, heap_factor) on real
SPLADE (120,000 rows and the 3,000-row sample shipped for the tests), synthetic SPLADE-like
and BM25 rows, per build, and per recall@10 target the setting that reaches it on every set.

    python -m bench.sparse_presets --nq 500   # needs the bench.build_splade cache and dict-gcide

A preset is the fastest setting on the real SPLADE rows (single thread) among those reaching
the target plus --margin on every data set: the margin leaves room for other queries and
corpora, and the real rows rank the settings (the BM25 batches take milliseconds, too short
to rank settings whose cost differs by less than the timing noise). Recall counts ties as
hits (bench.sparse.recall_ties); QPS is the best of repeated timings of the whole batch.
"""
from __future__ import annotations

import argparse

from bench.sparse import (BLOCKS_HEAP_FACTORS, BLOCKS_QUERY_CUTS, TARGETS, bm25, exact_scores,
                          recall_ties, splade_like, timed)

QUERY_CUTS = (5, 8, 10, 15, 20, 30, 40)
HEAP_FACTORS = (1.0, 0.9, 0.8, 0.7, 0.6, 0.5)
BUILDS = {"default": {}, "n_postings=500": {"n_postings": 500}, "blocks": {"layout": "blocks"},
          # the blocks layout at other block sizes than its default (6)
          "blocks4": {"layout": "blocks", "block_size": 4},
          "blocks8": {"layout": "blocks", "block_size": 8}}
BLOCKS_GRID = [(qc, hf) for qc in BLOCKS_QUERY_CUTS for hf in BLOCKS_HEAP_FACTORS]
GRIDS = {"default": [(qc, hf) for qc in QUERY_CUTS for hf in HEAP_FACTORS],
         "blocks": BLOCKS_GRID, "blocks4": BLOCKS_GRID, "blocks8": BLOCKS_GRID}


def datasets(args):
    from bench.build_splade import real_splade, shipped_sample
    docs, queries, dim, _ = real_splade(args.n_splade, args.nq)
    yield "splade", docs, queries, dim
    yield "splade sample", *shipped_sample()  # what the tests check the presets on
    yield "synthetic", *splade_like(args.n_synthetic, args.nq)
    yield "bm25", *bm25(args.n_bm25, args.nq)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--nq", type=int, default=200)
    p.add_argument("--n-splade", type=int, default=120_000)
    p.add_argument("--n-synthetic", type=int, default=200_000)
    p.add_argument("--n-bm25", type=int, default=180_000)
    p.add_argument("--margin", type=float, default=0.005)
    p.add_argument("--builds", default=",".join(BUILDS),
                   help="the builds to sweep (comma-separated names of BUILDS)")
    args = p.parse_args(argv)
    import quanta

    builds = {b: BUILDS[b] for b in args.builds.split(",")}
    grids = {b: GRIDS.get(b, GRIDS["default"]) for b in builds}
    found = {}  # (build, data) -> {(qc, hf): (recall, qps)}
    for data, docs, queries, dim in datasets(args):
        S = exact_scores(docs, queries, dim)
        nq = len(queries[0]) - 1
        for build, params in builds.items():
            index = quanta.SparseIndex(**params)
            index.add(docs)
            pts = found[build, data] = {}
            for qc, hf in grids[build]:
                t, I = timed(lambda: index.search(queries, 10, qc, hf, threads=1).ids)
                pts[qc, hf] = (recall_ties(I, S), nq / t)
            del index
        for build in builds:
            print(f"| {data}: {build} | " + " | ".join(f"{qc}, {hf}" for qc, hf in grids[build]) +
                  " |")
            print(f"| recall, QPS | " + " | ".join(f"{r:.3f} {q:,.0f}" for r, q in
                                                   found[build, data].values()) + " |")

    first = next(iter(builds))
    names = [data for build, data in found if build == first]
    print(f"\n| build | recall@10 target (+{args.margin}) | query_cut, heap_factor | recall " +
          " / ".join(names) + " | QPS 1 thread |")
    print("|---|---:|---|---|---|")
    for build in builds:
        for target in TARGETS:
            ok = [s for s in grids[build]
                  if all(found[build, d][s][0] >= target + args.margin for d in names)]
            if not ok:
                print(f"| {build} | {target:.2f} | none reaches it on every set | | |")
                continue
            s = max(ok, key=lambda s: found[build, names[0]][s][1])
            print(f"| {build} | {target:.2f} | {s[0]}, {s[1]} | " +
                  " / ".join(f"{found[build, d][s][0]:.3f}" for d in names) + " | " +
                  " / ".join(f"{found[build, d][s][1]:,.0f}" for d in names) + " |")


if __name__ == "__main__":
    main()
