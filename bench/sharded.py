"""Sharded build and search (quanta.distributed) on one machine: Ray workers and fan-out cost.

    python -m bench.sharded                      # 1M IVF-PQ vectors and 1M sparse documents
    python -m bench.sharded --n 100000 --kinds ivfpq --fanout-shards 1,8   # a quick look

Builds: every shard from one trained state (trained once here, timed apart), with one Ray
worker (one task at a time: `cpus_per_shard` = all the cluster's CPUs, one thread each) and
with one worker per CPU; "one index" is a single shard built by one worker: the build a
single machine runs without quanta.distributed. Search: the sharded index (shards
memory-mapped in this process, searched by threads) against the one index, batched queries,
the same settings, best of repeated runs (bench.timing.best_time), 1 thread and all.

Fan-out: the same IVF-PQ corpus cut into 1 .. S shards, searched at the same nprobe (every
shard shares the coarse centroids, so the probed vectors and the recall are those of one
index; shards in this process are searched together, IVFPQIndex.search_together); the time
per query over S, with a linear fit (fixed cost + per-shard cost), models 10 and 100 shards.
A Ray actor round trip (one batch to every actor and back) is measured with 8 actors.
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import threading
import time

import numpy as np

import quanta
from bench.timing import best_time
from quanta.distributed import ShardedIndex, build_sharded

K = 10


def recall(I, gt):
    return float(np.mean([len(set(a) & set(b)) / K for a, b in zip(I, gt[:, :K])]))


def dense_data(n, d, nq):
    xb, xq = quanta.datasets.clustered(n, d, nq, seed=0)
    flat = quanta.FlatIndex(d)
    flat.add(xb)
    return xb, xq, flat.search(xq, K).ids


def sparse_data(n, nq):
    from bench.sparse import splade_like
    docs, queries, dim = splade_like(n, nq)
    return docs, queries, dim


def memory_in_use():
    """Bytes the machine has in use (MemTotal - MemAvailable): every process, Ray's workers
    and object store included."""
    with open("/proc/meminfo") as f:
        info = {line.split(":")[0]: int(line.split()[1]) * 1024 for line in f}
    return info["MemTotal"] - info["MemAvailable"]


class PeakMemory:
    """The highest memory_in_use() above its value at the start, sampled every 50 ms."""

    def __enter__(self):
        self.base = self.peak = memory_in_use()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self):
        while not self._stop.wait(0.05):
            self.peak = max(self.peak, memory_in_use())

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()

    @property
    def gib(self):
        return (self.peak - self.base) / 2**30


def timed_builds(index, source, tmp, cpus, label):
    """Build seconds and peak memory (GiB above the start, all processes) of: one index
    (1 shard, 1 worker), 2 shards on 1 worker, cpus shards on cpus workers (each
    single-threaded)."""
    rows = {}
    for name, shards, per in (("one index (1 shard, 1 worker)", 1, cpus),
                              (f"{cpus} shards, 1 worker", cpus, cpus),
                              (f"{cpus} shards, {cpus} workers", cpus, 1)):
        out = os.path.join(tmp, f"{label}-{shards}-{per}")
        t = time.perf_counter()
        with PeakMemory() as mem:
            build_sharded(index, source, shards, out, cpus_per_shard=per, threads=1,
                          progress=False).close()
        rows[name] = (out, time.perf_counter() - t, mem.gib)
        print(f"  {label} build, {name}: {rows[name][1]:.1f} s, peak {mem.gib:.1f} GiB",
              flush=True)
        if shards == per:  # several shards on one worker: timed only (saves disk)
            shutil.rmtree(out)
    return rows


def qps(index, queries, threads, **kw):
    nq = queries[0].shape[0] - 1 if isinstance(queries, tuple) else len(queries)
    res, s = best_time(lambda: index.search(queries, K, threads=threads, **kw))
    return res.ids, nq / s


def compare_search(one_dir, sharded_dir, queries, gt, threads, settings, lines):
    one, sharded = ShardedIndex.open(one_dir), ShardedIndex.open(sharded_dir)
    for kw in settings:
        cells = []
        for t in (1, threads):
            I1, q1 = qps(one, queries, t, **kw)
            Is, qs = qps(sharded, queries, t, **kw)
            cells.append((q1, qs))
        text = ", ".join(f"{k}={v}" for k, v in kw.items())
        lines.append(f"| {text} | {recall(I1, gt):.3f} | {recall(Is, gt):.3f} | "
                     f"{cells[0][0]:,.0f} | {cells[0][1]:,.0f} ({cells[0][1] / cells[0][0]:.2f}x) | "
                     f"{cells[1][0]:,.0f} | {cells[1][1]:,.0f} ({cells[1][1] / cells[1][0]:.2f}x) |")
        print(lines[-1], flush=True)


def build_section(title, rows, train_s, lines):
    lines += [f"### {title}", "", f"Training once on the sample: {train_s:.1f} s (not in the "
              "build times below). Peak memory: the machine's memory in use (every process) "
              "above its level before the build.", "",
              "| build | seconds | speed-up vs one index | peak memory |", "|---|---:|---:|---:|"]
    base = next(iter(rows.values()))[1]
    for name, (_, s, gib) in rows.items():
        lines.append(f"| {name} | {s:.1f} | {base / s:.2f}x | {gib:.1f} GiB |")
    lines.append("")


SEARCH_HEAD = ["| settings | recall one | recall sharded | QPS one, 1 thread | sharded, 1 thread "
               "| QPS one, all | sharded, all |", "|---|---:|---:|---:|---:|---:|---:|"]


def run_ivfpq(args, tmp, lines):
    xb, xq, gt = dense_data(args.n, args.d, args.nq)
    spec = f"IVF{args.nlist},PQ{args.m or args.d // 2}x4fs"
    index = quanta.index_factory(args.d, spec, "ip")
    t = time.perf_counter()
    index.train(xb[np.sort(np.random.default_rng(0).choice(len(xb), min(len(xb), 100_000),
                                                            replace=False))])
    train_s = time.perf_counter() - t
    rows = timed_builds(index, xb, tmp, args.cpus, "ivfpq")
    build_section(f"IVF-PQ `{spec}`, {args.n:,} x {args.d} clustered vectors", rows, train_s,
                  lines)
    dirs = [r[0] for r in rows.values()]
    lines += [f"Search, {args.nq} queries per batch, k={K}:", ""] + SEARCH_HEAD
    compare_search(dirs[0], dirs[2], xq, gt, args.cpus,
                   [{"nprobe": p} for p in (8, 32)], lines)
    lines.append("")
    return index, xb, xq, gt


def run_sparse(args, tmp, lines):
    t = time.perf_counter()
    docs, queries, dim = sparse_data(args.n, args.nq)
    print(f"  sparse data: {time.perf_counter() - t:.0f} s", flush=True)
    rows = timed_builds(quanta.SparseIndex(), docs, tmp, args.cpus, "sparse")
    build_section(f"SparseIndex (defaults), {args.n:,} synthetic SPLADE-like documents",
                  rows, 0.0, lines)
    dirs = [r[0] for r in rows.values()]
    one = ShardedIndex.open(dirs[0])
    gt = one.search(queries, K, exact=True).ids
    lines += [f"Search, {args.nq} queries per batch, k={K}, recall against exact scores:",
              ""] + SEARCH_HEAD
    compare_search(dirs[0], dirs[2], queries, gt, args.cpus,
                   [{"query_cut": c} for c in (5, 10)], lines)
    lines.append("")


def run_fanout(args, index, xb, xq, gt, tmp, lines):
    """Time per query of the same corpus in S shards, same nprobe, batched queries."""
    counts = [int(s) for s in args.fanout_shards.split(",")]
    lines += [f"### Fan-out: {len(xb):,} vectors in S shards, nprobe={args.fanout_nprobe}, "
              f"{args.nq} queries per batch", "",
              "| shards | recall | ms per batch, 1 thread | vs 1 shard | ms per batch, all | vs 1 shard |",
              "|---:|---:|---:|---:|---:|---:|"]
    times = {}
    for s in counts:
        out = os.path.join(tmp, f"fan-{s}")
        build_sharded(index, xb, s, out, backend="local", progress=False).close()
        sharded = ShardedIndex.open(out)
        cell = {}
        for t in (1, args.cpus):
            res, sec = best_time(lambda: sharded.search(xq, K, threads=t,
                                                        nprobe=args.fanout_nprobe), reps=5)
            cell[t] = sec * 1e3
        times[s] = cell
        r = recall(res.ids, gt)
        lines.append(f"| {s} | {r:.3f} | {cell[1]:.1f} | {cell[1] / times[counts[0]][1]:.2f}x | "
                     f"{cell[args.cpus]:.1f} | "
                     f"{cell[args.cpus] / times[counts[0]][args.cpus]:.2f}x |")
        print(lines[-1], flush=True)
        sharded.close()
        shutil.rmtree(out)
    if len(counts) >= 2:
        s_arr = np.array(counts, float)
        per, fixed = np.polyfit(s_arr, [times[s][1] for s in counts], 1)
        lines += ["", f"Linear fit, one thread: {fixed:.1f} ms + {per:.2f} ms per shard per "
                  f"batch of {args.nq} ({per / args.nq * 1e3:.1f} us per query per shard); "
                  f"modelled 10 shards: {(fixed + 10 * per) / (fixed + per):.2f}x one shard, "
                  f"100 shards: {(fixed + 100 * per) / (fixed + per):.2f}x (on one machine; "
                  "spread over machines, the shards' work runs in parallel and a query costs "
                  "the slowest shard plus the merge and the round trip below)."]
        print(lines[-1], flush=True)
    # a Ray actor round trip per batch, 8 actors (the shards are tiny: this is the overhead)
    out = os.path.join(tmp, "rt")
    build_sharded(index, xb[:8 * 2000], 8, out, backend="local", progress=False).close()
    with ShardedIndex.open(out, ray=True) as served:
        _, sec = best_time(lambda: served.search(xq, K, threads=1, nprobe=1), reps=5)
        local = ShardedIndex.open(out)
        _, sec_local = best_time(lambda: local.search(xq, K, threads=1, nprobe=1), reps=5)
    lines += ["", f"Ray actors (8 shards of 2,000 vectors, nprobe 1, {args.nq} queries): "
              f"{sec * 1e3:.1f} ms per batch against {sec_local * 1e3:.1f} ms for the same "
              f"shards in this process: {(sec - sec_local) * 1e3:.1f} ms of Ray round trip "
              f"and serialization per batch.", ""]
    print(lines[-2], flush=True)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--d", type=int, default=128)
    ap.add_argument("--nq", type=int, default=1000)
    ap.add_argument("--nlist", type=int, default=1024)
    ap.add_argument("--m", type=int, default=0, help="PQ sub-quantizers (default dim / 2)")
    ap.add_argument("--kinds", default="ivfpq,sparse")
    ap.add_argument("--cpus", type=int, default=os.cpu_count(),
                    help="Ray workers (CPUs of the local cluster)")
    ap.add_argument("--fanout-shards", default="1,2,4,8,16,32")
    ap.add_argument("--fanout-nprobe", type=int, default=32)
    ap.add_argument("--out", help="write the results (markdown) here")
    args = ap.parse_args(argv)
    import ray
    ray.init(num_cpus=args.cpus, include_dashboard=False, log_to_driver=False,
             configure_logging=False)
    tmp = tempfile.mkdtemp(prefix="quanta-sharded-")
    cmd = " ".join(["python -m bench.sharded"] + (sys.argv[1:] if argv is None else argv))
    lines = [f"# bench.sharded ({args.cpus} CPUs, Ray {ray.__version__})", "",
             f"Command: `{cmd}`", ""]
    try:
        kinds = args.kinds.split(",")
        if "ivfpq" in kinds:
            index, xb, xq, gt = run_ivfpq(args, tmp, lines)
            run_fanout(args, index, xb, xq, gt, tmp, lines)
        if "sparse" in kinds:
            run_sparse(args, tmp, lines)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        ray.shutdown()
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text)


if __name__ == "__main__":
    main()
