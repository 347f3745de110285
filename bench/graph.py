"""Graph indexes side by side: quanta.GraphIndex against hnswlib, usearch HNSW, faiss HNSW,
rabitqlib's SymphonyQG and Intel SVS Vamana (f32, f16, LVQ-8), on the same data, in one run.

    python -m bench.graph --data clustered|real --n 100000 --nq 1000 [--threads 2]
        [--systems quanta,hnswlib,usearch,faiss,rabitqlib,svs] [--widths 10,16,...]
        [--peer-m 32] [--usearch-types f16,bf16] [--max-candidates 0,256]
        [--single 300] [--plot bench/results/graph.png] [--json out.json]

For every system: build time at --threads, bytes per vector, then for each search width
(hnswlib / faiss efSearch, usearch expansion_search, quanta width): recall@10 against exact
search, QPS one query per call on one thread (the first --single queries; best of at least
three passes after a warm-up, bench.timing.best_time) and batched QPS at --threads. Then, per
recall target (0.90, 0.95, 0.99), the fastest setting of each system reaching it and
quanta's ratio to the best peer there. A system that fails to import is listed with the
reason. Metric: inner product on normalized vectors.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

from bench import datasets
from bench.datasets import recall_at_k
from bench.timing import best_time

TARGETS = (0.90, 0.95, 0.99)


class System:
    """name, build(x, threads), set_width(w), search(q, k, threads) -> ids, bytes_per_vector."""
    kind = "peer"


class Quanta(System):
    kind = "quanta"

    def __init__(self, storage, degree, build_width, codes, max_candidates=0):
        import quanta  # noqa: F401  (fails here, listed as missing, when not installed)
        self.name = f"quanta Graph{degree}({storage})" + (f",{codes}" if codes else "") + \
            (f" maxc{max_candidates}" if max_candidates else "")
        self.args = (storage, degree, build_width, codes, max_candidates)

    def build(self, x, threads):
        import quanta
        storage, degree, bw, codes, maxc = self.args
        self.index = quanta.GraphIndex(x.shape[1], "ip", degree, storage, build_width=bw,
                                       codes=codes, max_candidates=maxc)
        self.index.add(x, threads=threads)
        self.bytes_per_vector = self.index.memory_usage / len(x)

    def set_width(self, w):
        self.index.width = w

    def search(self, q, k, threads):
        return self.index.search(q, k, threads=threads).ids


class Hnswlib(System):
    def __init__(self, m, ef_construction):
        import hnswlib
        self.lib, self.m, self.efc = hnswlib, m, ef_construction
        self.name = f"hnswlib M{m}"

    def build(self, x, threads):
        self.index = self.lib.Index(space="ip", dim=x.shape[1])
        self.index.init_index(len(x), M=self.m, ef_construction=self.efc, random_seed=0)
        self.index.set_num_threads(threads)
        self.index.add_items(x)
        with tempfile.TemporaryDirectory() as d:
            self.index.save_index(os.path.join(d, "h"))
            self.bytes_per_vector = os.path.getsize(os.path.join(d, "h")) / len(x)

    def set_width(self, w):
        self.index.set_ef(w)

    def search(self, q, k, threads):
        self.index.set_num_threads(threads)
        return self.index.knn_query(q, k)[0]


class USearch(System):
    def __init__(self, dtype, connectivity, expansion_add):
        from usearch.index import Index
        self.cls, self.dtype, self.conn, self.exp = Index, dtype, connectivity, expansion_add
        self.name = f"usearch {dtype} M{connectivity}"

    def build(self, x, threads):
        self.index = self.cls(ndim=x.shape[1], metric="ip", dtype=self.dtype,
                              connectivity=self.conn, expansion_add=self.exp)
        self.index.add(np.arange(len(x)), x, threads=threads)
        self.bytes_per_vector = self.index.memory_usage / len(x)

    def set_width(self, w):
        self.index.expansion_search = w

    def search(self, q, k, threads):
        return self.index.search(q, k, threads=threads).keys


class FaissHNSW(System):
    def __init__(self, sq, m, ef_construction):
        from bench.adapters import openblas_coretype_fix
        openblas_coretype_fix()
        import faiss
        self.faiss, self.sq, self.m, self.efc = faiss, sq, m, ef_construction
        self.name = f"faiss HNSW{'SQ ' + sq if sq else 'Flat'} M{m}"

    def build(self, x, threads):
        f = self.faiss
        f.omp_set_num_threads(threads)
        if self.sq:
            qt = {"fp16": f.ScalarQuantizer.QT_fp16, "8bit": f.ScalarQuantizer.QT_8bit}[self.sq]
            self.index = f.IndexHNSWSQ(x.shape[1], qt, self.m, f.METRIC_INNER_PRODUCT)
            self.index.train(x)
        else:
            self.index = f.IndexHNSWFlat(x.shape[1], self.m, f.METRIC_INNER_PRODUCT)
        self.index.hnsw.efConstruction = self.efc
        self.index.add(x)
        self.bytes_per_vector = len(f.serialize_index(self.index)) / len(x)

    def set_width(self, w):
        self.index.hnsw.efSearch = w

    def search(self, q, k, threads):
        self.faiss.omp_set_num_threads(threads)
        return self.index.search(q, k)[1]


class SymQG(System):
    """rabitqlib's SymqgIndex (SymphonyQG): RaBitQ codes of a vertex's neighbours stored in its
    row, estimated together by fast-scan; raw float32 vectors for the exact scores."""

    def __init__(self, degree, ef_construction):
        import rabitqlib
        self.lib, self.degree, self.efc = rabitqlib, degree, ef_construction
        self.name = f"rabitqlib SymQG R{degree}"

    def build(self, x, threads):
        self.index = self.lib.SymqgIndex(x.shape[1], self.degree, "ip")
        self.index.build(x, self.efc, threads)
        with tempfile.TemporaryDirectory() as d:
            self.index.save(os.path.join(d, "s"))
            self.bytes_per_vector = os.path.getsize(os.path.join(d, "s")) / len(x)

    def set_width(self, w):
        self.ef = w

    def search(self, q, k, threads):
        call = self.index.search if len(q) == 1 else self.index.search_batch
        return np.asarray(call(q, k, self.ef, threads)[0], dtype=np.int64)


class SVS(System):
    """Intel SVS Vamana (PyPI scalable-vs) over f32 or f16 vectors, or LVQ-8 codes (built from
    a temporary fvecs file, as its loaders take one); alpha 0.95 (its inner-product default)."""

    def __init__(self, storage, degree, window):
        import svs
        self.lib, self.storage, self.degree, self.window = svs, storage, degree, window
        self.name = f"svs Vamana R{degree} {storage}"
        if storage == "lvq8":  # SVS builds LVQ on Intel CPUs only, else it ends the process
            probe = ("import numpy as np, sys; sys.path.insert(0, '.'); from bench.graph import SVS;"
                     "s = SVS.__new__(SVS); s.lib, s.storage, s.degree, s.window = "
                     "__import__('svs'), 'lvq8', 8, 16;"
                     "s.build(np.random.default_rng(0).random((64, 16), np.float32), 1)")
            run = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
            if run.returncode:
                raise RuntimeError((run.stdout + run.stderr).strip().splitlines()[-1])

    def build(self, x, threads):
        svs = self.lib
        params = svs.VamanaBuildParameters(alpha=0.95, graph_max_degree=self.degree,
                                           window_size=self.window)
        with tempfile.TemporaryDirectory() as d:
            if self.storage == "lvq8":
                svs.write_vecs(x, os.path.join(d, "x.fvecs"))
                data = svs.LVQLoader(svs.VectorDataLoader(os.path.join(d, "x.fvecs"),
                                                          svs.DataType.float32), primary=8)
            else:
                data = x.astype(np.float16 if self.storage == "f16" else np.float32)
            self.index = svs.Vamana.build(params, data, svs.DistanceType.MIP, threads)
            parts = [os.path.join(d, p) for p in ("config", "graph", "data")]
            self.index.save(*parts)
            self.bytes_per_vector = sum(os.path.getsize(os.path.join(root, f))
                                        for p in parts for root, _, fs in os.walk(p)
                                        for f in fs) / len(x)
        self.dtype = np.float16 if self.storage == "f16" else np.float32

    def set_width(self, w):
        self.index.search_window_size = w

    def search(self, q, k, threads):
        self.index.num_threads = threads
        return np.asarray(self.index.search(q.astype(self.dtype), k)[0], dtype=np.int64)


def systems(names, args):
    out, missing = [], []

    def attempt(name, make):
        try:
            out.append(make())
        except Exception as e:  # noqa: BLE001 - a peer that is not installed is reported
            missing.append((name, f"{type(e).__name__}: {e}"))

    deg, bw = args.degree, args.build_width
    if "quanta" in names:
        for storage in args.storages.split(","):
            for codes in args.codes.split(","):
                codes = None if codes == "none" else codes.replace("{m}", str(args.dim_m))
                for mc in map(int, args.max_candidates.split(",")):
                    attempt(f"quanta {storage} {codes}",
                            lambda s=storage, c=codes, mc=mc: Quanta(s, deg, bw, c, mc))
    m = args.peer_m or deg // 2
    if "hnswlib" in names:
        attempt("hnswlib", lambda: Hnswlib(m, bw))
    if "usearch" in names:
        for dt in args.usearch_types.split(","):
            attempt(f"usearch {dt}", lambda d=dt: USearch(d, m, bw))
    if "faiss" in names:
        attempt("faiss HNSWFlat", lambda: FaissHNSW(None, m, bw))
        attempt("faiss HNSWSQ", lambda: FaissHNSW("fp16", m, bw))
    if "rabitqlib" in names:
        attempt("rabitqlib SymQG", lambda: SymQG(deg, bw))
    if "svs" in names:
        for st in ("f32", "f16", "lvq8"):
            attempt(f"svs {st}", lambda t=st: SVS(t, deg, bw))
    return out, missing


def single_qps(system, q, k, repeats=3):
    """Best of `repeats` passes over q, one query per call (these VMs vary 10-30% run to run)."""
    def one_by_one():
        for i in range(len(q)):
            system.search(q[i:i + 1], k, 1)
    return len(q) / best_time(one_by_one, repeats)[1]


def batched_qps(system, q, k, threads):
    return len(q) / best_time(lambda: system.search(q, k, threads), 2)[1]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", default="clustered", choices=["clustered", "real"])
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--nq", type=int, default=1000)
    ap.add_argument("--dim", type=int, default=384, help="clustered data only")
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--single", type=int, default=300, help="queries timed one per call")
    ap.add_argument("--systems", default="quanta,hnswlib,usearch,faiss,rabitqlib,svs")
    ap.add_argument("--storages", default="f16,bf16,i8", help="quanta's vector storages")
    ap.add_argument("--codes", default="none,PQ{m}x4",
                    help="quanta's estimation codes, 'none', 'RaBitQ' or e.g. PQ96x4; {m} is "
                         "dim / 4")
    ap.add_argument("--degree", type=int, default=32, help="quanta degree; peers get M = degree / 2")
    ap.add_argument("--peer-m", type=int, default=0,
                    help="HNSW peers' M / usearch connectivity (default degree / 2: the same "
                         "layer-0 degree as quanta's)")
    ap.add_argument("--usearch-types", default="f32,bf16,i8", help="usearch's vector types")
    ap.add_argument("--build-width", type=int, default=128, help="and peers' ef_construction")
    ap.add_argument("--max-candidates", default="0",
                    help="quanta's max_candidates (comma-separated: one build each)")
    ap.add_argument("--widths",
                    default="10,12,14,16,18,20,22,24,26,28,30,32,36,40,44,48,56,64,80,96,112,"
                            "128,160,192,256")
    ap.add_argument("--plot")
    ap.add_argument("--json")
    args = ap.parse_args(argv)
    xb, xq = datasets.load(args.data, args.n, args.nq, args.dim)
    args.dim_m = xb.shape[1] // 4
    gt = datasets.ground_truth(xb, xq, args.k)[1]
    widths = [int(w) for w in args.widths.split(",")]
    print(f"data {args.data}: {xb.shape[0]} x {xb.shape[1]}, {len(xq)} queries, k={args.k}, "
          f"build and batched search on {args.threads} threads, one query per call on 1",
          flush=True)
    found, missing = systems(args.systems.split(","), args)
    results = []
    for s in found:
        t = time.perf_counter()
        s.build(xb, args.threads)
        build = time.perf_counter() - t
        row = dict(name=s.name, kind=s.kind, build_s=build, bytes_per_vector=s.bytes_per_vector,
                   points=[])
        print(f"{s.name}: build {build:.1f} s, {s.bytes_per_vector:.0f} B/vector", flush=True)
        for w in widths:
            if w < args.k:
                continue
            s.set_width(w)
            rec = recall_at_k(s.search(xq, args.k, args.threads), gt, args.k)
            one = single_qps(s, xq[:args.single], args.k)
            many = batched_qps(s, xq, args.k, args.threads)
            row["points"].append(dict(width=w, recall=rec, qps_single=one, qps_batched=many))
            print(f"  width {w:4d}  recall {rec:.3f}  one query {one:8.0f} QPS  batched "
                  f"{many:9.0f} QPS", flush=True)
        results.append(row)
    for name, why in missing:
        print(f"{name}: n/a ({why})")
    print("\nfastest setting reaching each recall (QPS one query per call, 1 thread):")
    for target in TARGETS:
        best = {}
        for r in results:
            ok = [p for p in r["points"] if p["recall"] >= target]
            if ok:
                best[r["name"]] = (max(p["qps_single"] for p in ok), r["kind"],
                                   r["bytes_per_vector"])
        line = "  ".join(f"{n} {v[0]:.0f}" for n, v in sorted(best.items(), key=lambda t: -t[1][0]))
        ours = [v for v in best.values() if v[1] == "quanta"]
        peers = [v for v in best.values() if v[1] != "quanta"]
        ratio = (f"quanta/best peer x{max(o[0] for o in ours) / max(p[0] for p in peers):.2f}"
                 if ours and peers else "no ratio")
        print(f"  recall {target:.2f}: {line or 'nobody'}  -> {ratio}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(dict(args=vars(args), results=results, missing=missing), f, indent=1)
    if args.plot:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        fig, ax = plt.subplots(figsize=(8, 5))
        ax.set_prop_cycle(color=plt.cm.tab20.colors)  # more systems than the default 10 colours
        for r in results:
            pts = r["points"]
            ax.plot([p["recall"] for p in pts], [p["qps_single"] for p in pts], marker="o",
                    linestyle="-" if r["kind"] == "quanta" else "--", label=r["name"])
        ax.set_yscale("log")
        ax.set_xlabel(f"recall@{args.k}")
        ax.set_ylabel("QPS, one query per call, 1 thread")
        ax.set_title(f"{args.data} {xb.shape[0]} x {xb.shape[1]}")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(args.plot, dpi=120)
        print(f"plot: {args.plot}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
