"""Float8 rounding and scale on real embeddings: recall@10 of FlatIndex against exact float32
for every f8_rounding x f8_scale (the README's table).

    python -m bench.f8_rounding --n 50000 --nq 1000
"""
from __future__ import annotations

import argparse
import time

import numpy as np

import quanta

from .datasets import real_embeddings


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=50000)
    ap.add_argument("--nq", type=int, default=1000)
    ap.add_argument("--k", type=int, default=10)
    args = ap.parse_args(argv)
    xb, xq = real_embeddings(args.n, args.nq)
    exact = quanta.FlatIndex(xb.shape[1], "ip")
    exact.add(xb)
    truth = exact.search(xq, args.k).ids
    print(f"MiniLM GCIDE, n={xb.shape[0]}, nq={xq.shape[0]}, recall@{args.k} against float32\n")
    print("| storage | rounding | none | global | vector | add s (global) |")
    print("|---|---|---:|---:|---:|---:|")
    for storage in ("f8e4m3", "f8e5m2"):
        for rounding in ("nearest", "anisotropic"):
            cells, add_s = [], 0.0
            for scale in ("none", "global", "vector"):
                index = quanta.FlatIndex(xb.shape[1], "ip", storage, f8_scale=scale,
                                         f8_rounding=rounding)
                t = time.perf_counter()
                index.add(xb)
                if scale == "global":
                    add_s = time.perf_counter() - t
                ids = index.search(xq, args.k).ids
                hits = sum(len(np.intersect1d(a, b)) for a, b in zip(ids, truth))
                cells.append(f"{hits / truth.size:.4f}")
            print(f"| {storage} | {rounding} | {' | '.join(cells)} | {add_s:.2f} |")


if __name__ == "__main__":
    main()
