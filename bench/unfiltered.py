"""Unfiltered search speed of every index family, this build against another one, in one run.

    python -m bench.unfiltered --baseline /tmp/oldpkg       # a quanta installed with --target

Each build runs in its own process on the same data (made from fixed seeds); the two
alternate `--rounds` times and each cell is the best QPS over the rounds, so machine noise
hits both alike. Single thread unless --threads says more.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

CASES = ["flat f32 nq=1", "flat f32 nq=200", "flat bf16 nq=200", "flat i8 nq=1", "PQ16x8",
         "PQ32x4fs", "IVF256,PQ32x4fs np16", "IVF256,PQ16x8 np16", "RBE", "IVF64,RBE np8",
         "sparse", "multivector"]


def measure(threads: int) -> dict:
    """QPS of every case with the quanta first on sys.path (runs in a child process)."""
    import numpy as np
    import quanta
    from bench.timing import best_time

    rng = np.random.default_rng(0)
    n, d = 50_000, 128
    centres = rng.standard_normal((64, d)).astype(np.float32)
    xb = (centres[rng.integers(0, 64, n)] + rng.standard_normal((n, d)).astype(np.float32))
    xq = (centres[rng.integers(0, 64, 200)] + rng.standard_normal((200, d)).astype(np.float32))
    out = {}

    def timed(name, fn, nq):
        _, s = best_time(fn, reps=3, min_seconds=0.3)
        out[name] = nq / s

    for storage in ("f32", "bf16", "i8"):
        idx = quanta.FlatIndex(d, "l2", storage)
        idx.add(xb)
        for nq in (1, 200):
            name = f"flat {storage} nq={nq}"
            if name in CASES:
                timed(name, lambda: idx.search(xq[:nq], 10, threads=threads), nq)
    for spec, kw in (("PQ16x8", {}), ("PQ32x4fs", {}), ("IVF256,PQ32x4fs np16", {"nprobe": 16}),
                     ("IVF256,PQ16x8 np16", {"nprobe": 16}), ("RBE", {}),
                     ("IVF64,RBE np8", {"nprobe": 8})):
        if spec.startswith("RBE"):
            idx = quanta.BinaryIndex(d, 256, 2, "ip")
        elif spec.startswith("IVF64,RBE"):
            idx = quanta.IVFBinaryIndex(d, 64, 256, 2, "ip")
        else:
            idx = quanta.index_factory(d, spec.split()[0], metric="l2")
        idx.train(xb[:20_000])
        idx.add(xb)
        timed(spec, lambda: idx.search(xq, 10, threads=threads, **kw), len(xq))
    # sparse: 30,000 documents of 60 terms over 5,000, queries of 20
    def csr(m, nnz):
        indptr = np.arange(m + 1, dtype=np.int64) * nnz
        idx = np.sort(np.stack([rng.choice(5000, nnz, replace=False) for _ in range(m)]), axis=1)
        return indptr, idx.ravel().astype(np.int32), rng.exponential(1.0, m * nnz).astype(np.float32)
    sp = quanta.SparseIndex(n_postings=500)
    sp.add(csr(30_000, 60))
    sq = csr(200, 20)
    timed("sparse", lambda: sp.search(sq, 10, threads=threads), 200)
    docs = [xb[i * 20:(i + 1) * 20, :64].copy() for i in range(2000)]
    qs = [xq[i % 200, :64][None].repeat(5, 0) + 0.1 * rng.standard_normal((5, 64)).astype(
        np.float32) for i in range(100)]
    mv = quanta.MultiVectorIndex(64, seed=1)
    mv.add(docs)
    timed("multivector", lambda: mv.search(qs, k=10, threads=threads), 100)
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--baseline", required=True, help="folder holding another quanta build")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        if args.baseline != "-":  # the baseline's quanta, even past an editable install's finder
            sys.path.insert(0, args.baseline)
            sys.meta_path[:] = [f for f in sys.meta_path if "editable" not in type(f).__module__]
        print(json.dumps(measure(args.threads)))
        return
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    runs = {"baseline": [], "this": []}
    for _ in range(args.rounds):
        for which in ("baseline", "this"):
            base = args.baseline if which == "baseline" else "-"
            res = subprocess.run([sys.executable, "-m", "bench.unfiltered", "--baseline", base,
                                  "--child", "--threads", str(args.threads)], cwd=root,
                                 capture_output=True, text=True, check=True)
            runs[which].append(json.loads(res.stdout.strip().splitlines()[-1]))
    print(f"# unfiltered QPS, best of {args.rounds} alternating rounds, threads={args.threads}\n")
    print("| case | baseline QPS | this build QPS | this / baseline |")
    print("|---|---:|---:|---:|")
    for case in CASES:
        b = max(r[case] for r in runs["baseline"])
        t = max(r[case] for r in runs["this"])
        print(f"| {case} | {b:,.0f} | {t:,.0f} | {t / b:.3f} |")


if __name__ == "__main__":
    main()
