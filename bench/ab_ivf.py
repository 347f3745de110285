"""IVF search time per query, this build against another, on one saved index, in one run.

    pip install --no-build-isolation --no-deps --target /tmp/oldpkg <old checkout>
    python -m bench.ab_ivf --baseline /tmp/oldpkg --index ivf.qnt --queries q.npy --rounds 5

Each build runs in its own process (the baseline's quanta first on sys.path, past an
editable install's finder); the two alternate --rounds times and each cell is the best time
over the rounds (each round: the best of 7 timings), so machine noise hits both alike.
Batched queries (all in one call) at --threads threads (default 1) over --nprobe. Each child
waits a second first: numpy's OpenBLAS threads spin for about that long after import, taking
the second core of a 2-core machine.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time


def measure(index: str, queries: str, nprobes: list[int], threads: int) -> dict:
    """Microseconds per query at each nprobe, with the quanta first on sys.path."""
    import numpy as np
    import quanta

    idx = quanta.load(index)
    xq = np.load(queries)
    time.sleep(1.0)
    out = {}
    for nprobe in nprobes:
        best = float("inf")
        for _ in range(7):
            t = time.perf_counter()
            idx.search(xq, 10, nprobe=nprobe, threads=threads)
            best = min(best, time.perf_counter() - t)
        out[str(nprobe)] = best / len(xq) * 1e6
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--baseline", required=True, help="a quanta installed with pip --target")
    p.add_argument("--index", required=True, help="a saved IVF index (quanta.save)")
    p.add_argument("--queries", required=True, help="float32 queries, .npy")
    p.add_argument("--nprobe", default="1,4,8,16,32,64,128")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    nprobes = [int(v) for v in args.nprobe.split(",")]
    if args.child is not None:
        if args.child != "-":
            sys.path.insert(0, args.child)
            sys.meta_path[:] = [f for f in sys.meta_path if "editable" not in type(f).__module__]
        print(json.dumps(measure(args.index, args.queries, nprobes, args.threads)))
        return
    runs = {"baseline": [], "this": []}
    for _ in range(args.rounds):
        for name, pkg in (("baseline", args.baseline), ("this", "-")):
            cmd = [sys.executable, "-m", "bench.ab_ivf", "--baseline", args.baseline,
                   "--index", args.index, "--queries", args.queries, "--nprobe", args.nprobe,
                   "--threads", str(args.threads), "--child", pkg]
            runs[name].append(json.loads(subprocess.check_output(cmd).decode().splitlines()[-1]))
    print(f"# us per query (batched, {args.threads} thread(s)), best of {args.rounds} rounds; "
          f"{args.index}\n")
    print("| nprobe | baseline | this | speedup | spread baseline / this |")
    print("|---:|---:|---:|---:|---:|")
    for k in map(str, nprobes):
        b = [r[k] for r in runs["baseline"]]
        t = [r[k] for r in runs["this"]]
        print(f"| {k} | {min(b):.2f} | {min(t):.2f} | {min(b) / min(t):.2f} | "
              f"{max(b) / min(b):.2f} / {max(t) / min(t):.2f} |")


if __name__ == "__main__":
    main()
