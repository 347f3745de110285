"""quanta.cuda against the same CPU indexes, in one run on one machine.

    python -m bench.gpu [--n 1000000] [--dim 128] [--nq 1000] [--peak-gbs 4800] [--json out.json]

1. Flat scan per storage, one query per call: GB/s read (n * bytes per vector / time per
   query) and its fraction of the GPU's memory bandwidth (--peak-gbs, else the device's
   memory clock x bus width); batched QPS (--nq queries per call) against the CPU index at all
   threads.
2. IVF-PQ (--ivf-spec, default IVF1024,PQ32x8) over clustered data: recall@10 (against the
   exact GPU flat search) and batched QPS by nprobe, GPU and CPU; the speed-up at the first
   nprobe reaching recall 0.9 and 0.95.
3. MUVERA: FDE encoding (token sets per second) and exact Chamfer scoring (query-document
   pairs per second), GPU against CPU.

Needs a CUDA build of quanta, a GPU and CuPy; prints the reason and exits 2 without them.
"""
from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np

import quanta
import quanta.cuda
from bench.datasets import recall_at_k
from bench.timing import best_time


def _gpu_time(cp, fn, reps=3):
    """fn's result and its best wall time with the device synchronized after each call."""
    dev = cp.cuda.Device()

    def synced():
        out = fn()
        dev.synchronize()
        return out

    return best_time(synced, reps)


def _cpu_time(fn, reps=3):
    return best_time(fn, reps)


def _peak_gbs(cp, given):
    if given:
        return given
    p = cp.cuda.runtime.getDeviceProperties(cp.cuda.Device().id)
    return 2 * p["memoryClockRate"] * 1e3 * p["memoryBusWidth"] / 8 / 1e9  # DDR: 2 per clock


def flat(cp, x, q, peak, single):
    rows = []
    for storage in quanta.STORAGES:
        cpu = quanta.FlatIndex(x.shape[1], "ip", storage)
        cpu.add(x)
        gpu = quanta.cuda.FlatIndex(cpu)
        qd = cp.asarray(q)
        _, t1 = _gpu_time(cp, lambda: [gpu.search(qd[i:i + 1], 10) for i in range(single)])
        gbs = cpu.ntotal * cpu.code_size / (t1 / single) / 1e9
        _, tb = _gpu_time(cp, lambda: gpu.search(qd, 10))
        _, tc = _cpu_time(lambda: cpu.search(q, 10))
        rows.append(dict(storage=storage, single_query_us=1e6 * t1 / single, gbs=gbs,
                         of_peak=gbs / peak, gpu_qps=len(q) / tb, cpu_qps=len(q) / tc,
                         speedup=tc / tb))
        print(f"flat {storage:7s} one query {1e6 * t1 / single:8.1f} us  {gbs:7.1f} GB/s "
              f"({100 * gbs / peak:5.1f}% of {peak:.0f})  batched GPU {len(q) / tb:10.0f} QPS  "
              f"CPU {len(q) / tc:8.0f} QPS  x{tc / tb:.1f}", flush=True)
    return rows


def ivfpq(cp, x, q, spec, nprobes):
    exact = quanta.FlatIndex(x.shape[1], "ip")
    exact.add(x)
    gt = quanta.cuda.FlatIndex(exact).search(q, 10).ids
    cpu = quanta.index_factory(x.shape[1], spec, metric="ip")
    t = time.perf_counter()
    cpu.train(x[np.random.default_rng(0).choice(len(x), min(len(x), 100_000), replace=False)])
    cpu.add(x)
    print(f"{spec}: trained and added {len(x)} on the CPU in {time.perf_counter() - t:.0f} s")
    gpu = quanta.cuda.IVFPQIndex(cpu)
    qd = cp.asarray(q)
    rows = []
    for nprobe in nprobes:
        if nprobe > cpu.nlist:
            break
        ids, tg = _gpu_time(cp, lambda: gpu.search(qd, 10, nprobe=nprobe))
        cids, tc = _cpu_time(lambda: cpu.search(q, 10, nprobe=nprobe))
        r = dict(nprobe=nprobe, recall_gpu=recall_at_k(cp.asnumpy(ids.ids), gt, 10),
                 recall_cpu=recall_at_k(cids.ids, gt, 10), gpu_qps=len(q) / tg,
                 cpu_qps=len(q) / tc, speedup=tc / tg)
        rows.append(r)
        print(f"  nprobe {nprobe:4d}  recall GPU {r['recall_gpu']:.3f} CPU {r['recall_cpu']:.3f}  "
              f"GPU {r['gpu_qps']:10.0f} QPS  CPU {r['cpu_qps']:8.0f} QPS  x{r['speedup']:.1f}",
              flush=True)
    for target in (0.9, 0.95):
        hit = next((r for r in rows if r["recall_gpu"] >= target), None)
        print(f"  recall {target}: " + (f"nprobe {hit['nprobe']}, GPU x{hit['speedup']:.1f} the CPU"
                                        if hit else "not reached"))
    return rows


def muvera(cp, dim, ndocs, nq, seed=0):
    rng = np.random.default_rng(seed)
    topics = rng.standard_normal((500, dim)).astype(np.float32)
    docs = topics[rng.integers(0, 500, ndocs * 32)].reshape(ndocs * 32, dim)
    docs += 0.3 * rng.standard_normal(docs.shape).astype(np.float32)
    doff = np.arange(0, ndocs * 32 + 1, 32, dtype=np.int64)
    qtok = topics[rng.integers(0, 500, nq * 16)]
    qoff = np.arange(0, nq * 16 + 1, 16, dtype=np.int64)
    cpu = quanta.MultiVectorIndex(dim, first_stage="fde", index="Flat")
    cpu.add(docs, doff)
    gpu = quanta.cuda.MultiVectorIndex(cpu)
    dd = cp.asarray(docs)
    _, te = _gpu_time(cp, lambda: gpu.encoder.encode_documents(dd, doff))
    _, tce = _cpu_time(lambda: cpu.encoder.encode_documents(docs, doff), reps=1)
    _, tg = _gpu_time(cp, lambda: gpu.search(qtok, qoff, k=10, exact=True))
    _, tc = _cpu_time(lambda: cpu.search(qtok, qoff, k=10, exact=True), reps=1)
    out = dict(fde_sets_per_s_gpu=ndocs / te, fde_sets_per_s_cpu=ndocs / tce,
               chamfer_pairs_per_s_gpu=nq * ndocs / tg, chamfer_pairs_per_s_cpu=nq * ndocs / tc)
    print(f"MUVERA dim {dim}: FDE encoding GPU {ndocs / te:10.0f} sets/s  CPU "
          f"{ndocs / tce:8.0f} sets/s  x{tce / te:.1f}; exact Chamfer (16 x 32 tokens) GPU "
          f"{nq * ndocs / tg:10.0f} pairs/s  CPU {nq * ndocs / tc:8.0f} pairs/s  x{tc / tg:.1f}")
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=1_000_000, help="database vectors")
    ap.add_argument("--dim", type=int, default=128)
    ap.add_argument("--nq", type=int, default=1000, help="queries per batched call")
    ap.add_argument("--single", type=int, default=200, help="one-query calls timed per storage")
    ap.add_argument("--peak-gbs", type=float, default=0.0,
                    help="memory bandwidth to compare with (default: from the device)")
    ap.add_argument("--ivf-spec", default="IVF1024,PQ32x8")
    ap.add_argument("--nprobes", default="1,2,4,8,16,32,64,128,256")
    ap.add_argument("--mv-docs", type=int, default=20_000, help="MUVERA documents (32 tokens)")
    ap.add_argument("--json", help="write the results here")
    args = ap.parse_args(argv)
    status = quanta.cuda_status()
    if not status["available"]:
        print(f"bench.gpu: {status['reason']}", file=sys.stderr)
        return 2
    import cupy as cp
    x, q = quanta.datasets.clustered(args.n, args.dim, nq=args.nq, seed=0)
    peak = _peak_gbs(cp, args.peak_gbs)
    name = cp.cuda.runtime.getDeviceProperties(cp.cuda.Device().id)["name"]
    name = name.decode() if isinstance(name, bytes) else str(name)
    print(f"{name}: {args.n} x {args.dim}, {args.nq} queries; CPU threads "
          f"{quanta.get_num_threads()}", flush=True)
    res = dict(device=name, n=args.n, dim=args.dim, nq=args.nq, peak_gbs=peak,
               flat=flat(cp, x, q, peak, args.single),
               ivfpq=ivfpq(cp, x, q, args.ivf_spec, [int(v) for v in args.nprobes.split(",")]),
               muvera=muvera(cp, args.dim, args.mv_docs, min(args.nq, 100)))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(res, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
