"""Which lists hold the neighbours: an upper bound on IVF recall, without PQ error.

    python -m bench.ivf_lists --data real --n 120000 --nlist 1024

Trains quanta's coarse quantizer, assigns every base vector to its nearest list, and for each
query counts the fraction of its exact top-10 that sits in the lists a probing rule visits,
with the codes that rule scans per query:

- a fixed nprobe (what IVF indexes do);
- the same with SOAR (each vector also in its second list, chosen by the SOAR loss with
  --lambdas; 0 = the plain second-nearest list);
- probing every list whose centroid distance is within a ratio of the nearest one's.

For the fixed nprobe rows it also prints how many centroids quanta's coarse step scores in
float32 per query (its int8 pass and error bound rule out the rest; coarse_quantizer.hpp):
nlist where that pass is off (too many lists probed, or no int8 panel kernel at this SIMD
level).

This is how quanta's IVF defaults were chosen (see the README's IVF section).
"""
from __future__ import annotations

import argparse

import numpy as np

from bench import datasets


def _sq_dist(a, b):
    return (a * a).sum(1)[:, None] + (b * b).sum(1)[None] - 2 * a @ b.T


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--data", default="real", choices=["clustered", "real"])
    p.add_argument("--n", type=int, default=120_000)
    p.add_argument("--nq", type=int, default=1000)
    p.add_argument("--d", type=int, default=384)
    p.add_argument("--nlist", type=int, default=1024)
    p.add_argument("--nprobe", default="1,4,8,16,32,64,128")
    p.add_argument("--lambdas", default="0,1,2")
    p.add_argument("--ratios", default="1.1,1.2,1.3,1.4")
    args = p.parse_args(argv)
    import quanta

    xb, xq = datasets.load(args.data, args.n, args.nq, args.d)
    _, gt = datasets.ground_truth(xb, xq, 10, "l2")
    ivf = quanta.IVFPQIndex(xb.shape[1], args.nlist, 8, 4, "l2", fast_scan=True)
    ivf.train(xb[:min(len(xb), 256 * args.nlist)])
    cen = ivf.coarse_centroids
    dist = _sq_dist(xb, cen)
    first = dist.argmin(1)
    qdist = _sq_dist(xq, cen)
    order = np.argsort(qdist, 1)
    sizes = np.bincount(first, minlength=args.nlist)
    resid = xb - cen[first]
    along = (resid * xb).sum(1)[:, None] - resid @ cen.T  # <r, x - c> for every list c
    rnorm = np.maximum((resid * resid).sum(1), 1e-30)[:, None]
    top = gt[:, :10]

    def covered(probed, lists):
        return np.take_along_axis(probed, lists[top], 1)

    print(f"# {args.data} n={len(xb)} nlist={args.nlist}: fraction of the top-10 in the probed "
          f"lists / codes scanned per query\n")
    print("| rule | setting | top-10 in probed lists | codes scanned | centroids in float32 |")
    print("|---|---|---:|---:|---:|")
    seconds = {}
    for lam in [float(v) for v in args.lambdas.split(",")]:
        loss = dist + lam * along ** 2 / rnorm
        loss[np.arange(len(xb)), first] = np.inf
        seconds[lam] = loss.argmin(1)
    for nprobe in [int(v) for v in args.nprobe.split(",")]:
        probed = np.zeros((len(xq), args.nlist), bool)
        np.put_along_axis(probed, order[:, :nprobe], True, 1)
        hit = covered(probed, first)
        rescored = ivf.native.coarse_rescored(xq, nprobe).mean()
        codes = (probed * sizes).sum(1).mean()
        print(f"| fixed nprobe | {nprobe} | {hit.mean():.4f} | {codes:,.0f} | {rescored:,.1f} |")
        for lam, second in seconds.items():
            both = hit | covered(probed, second)
            scanned = (probed * (sizes + np.bincount(second, minlength=args.nlist))).sum(1).mean()
            print(f"| SOAR, lambda {lam:g} | nprobe {nprobe} | {both.mean():.4f} | "
                  f"{scanned:,.0f} | |")
    for ratio in [float(v) for v in args.ratios.split(",")]:
        nearest = np.take_along_axis(qdist, order[:, :1], 1)
        probed = qdist <= ratio * nearest
        print(f"| distance ratio | {ratio:g} | {covered(probed, first).mean():.4f} | "
              f"{(probed * sizes).sum(1).mean():,.0f} | |")


if __name__ == "__main__":
    main()
