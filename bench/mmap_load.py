"""Memory-mapped loading: time and resident memory of quanta.load(path, mmap=True).

    python -m bench.mmap_load --n 2000000 --d 128        # a 1 GB f32 FlatIndex
    python -m bench.mmap_load --n 2000000 --spec IVF1024,PQ64x8

Builds and saves an index (any factory spec; trained on the first 100k vectors), then in a
fresh process measures the load time and how much the
resident set grows (Linux /proc/self/statm) before the first search, and checks that a search
of the mapped index equals one of a normal load.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time


def rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def child(path: str) -> None:
    import numpy as np
    import quanta
    q = np.random.default_rng(1).standard_normal((20, quanta.read_header(path)["dim"]),
                                                 dtype=np.float32)
    r0 = rss()
    t = time.perf_counter()
    index = quanta.load(path, mmap=True)
    dt = time.perf_counter() - t
    grew = rss() - r0
    size = os.path.getsize(path)
    mapped = index.search(q, 10, threads=1)
    plain = quanta.load(path).search(q, 10, threads=1)
    same = np.array_equal(mapped.ids, plain.ids) and np.array_equal(mapped.distances,
                                                                    plain.distances)
    print(f"{quanta.read_header(path)['kind']} file {size / 2**20:,.0f} MiB: load(mmap=True) {dt * 1000:.1f} ms, resident set "
          f"+{grew / 2**20:.1f} MiB ({grew / size:.2%} of the file) before the first search; "
          f"search results equal to a normal load: {same}")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=2_000_000)
    ap.add_argument("--d", type=int, default=128)
    ap.add_argument("--spec", default="Flat")
    ap.add_argument("--metric", default="ip", choices=["ip", "l2", "cosine"])
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        child(args.child)
        return
    import numpy as np
    import quanta
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "index.qnt")
        index = quanta.index_factory(args.d, args.spec, metric=args.metric)
        rng = np.random.default_rng(0)
        if not index.is_trained:
            index.train(rng.standard_normal((min(args.n, 100_000), args.d), dtype=np.float32))
        for start in range(0, args.n, 250_000):  # in chunks: peak memory stays near the index
            index.add(rng.standard_normal((min(250_000, args.n - start), args.d),
                                          dtype=np.float32))
        index.save(path)
        del index
        subprocess.run([sys.executable, "-m", "bench.mmap_load", "--child", path], check=True)


if __name__ == "__main__":
    main()
