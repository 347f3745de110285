"""Exact (flat) search benchmark over compact storages.

    python -m bench.flat --data clustered|real --n 100000 --nq 1000 --k 10 \
        --batch 1000 --single [--threads 2] [--systems faiss,usearch] \
        [--roof roof.json] [--json out.json]

For every system/storage (bench.adapters) on the same data:
  recall@k against exact float64 ground truth;
  QPS batched (queries in calls of --batch) at 1 thread and at all threads;
  with --single, QPS one query per call at 1 thread (first --nq-single queries);
  bytes per vector; GB/s scanned one-at-a-time (n * B/vec * queries / time);
  fraction of roof: batched = (2*n*d*nq / time) / sgemm GFLOP/s at the same
  thread count, one-at-a-time = GB/s / single-core read GB/s (bench.roof);
then the ratio of each quanta storage to its matching peers.
A system that fails prints "n/a" and the reason is listed under the table.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import time

import numpy as np

from bench import adapters as A
from bench import datasets, roof


def _timed(fn, min_time: float, max_reps: int):
    """Run fn() once to warm up + record, then repeat until min_time; best time."""
    t = time.perf_counter()
    out = fn()
    best = time.perf_counter() - t
    spent, reps = best, 1
    while spent < min_time and reps < max_reps:
        t = time.perf_counter()
        fn()
        dt = time.perf_counter() - t
        best = min(best, dt)
        spent += dt
        reps += 1
    return out, best


def _batched(ad, xq, k, threads, batch):
    Ds, Is = [], []
    for s in range(0, xq.shape[0], batch):
        D, I = ad.search(xq[s:s + batch], k, threads)
        Ds.append(D)
        Is.append(I)
    return np.concatenate(Ds), np.concatenate(Is)


def _single(ad, xq, k):
    Is = []
    for i in range(xq.shape[0]):
        _, I = ad.search(xq[i:i + 1], k, 1)
        Is.append(np.asarray(I).reshape(-1)[:k])
    return np.stack(Is)


def _err(e: BaseException) -> str:
    msg = str(e).strip().splitlines()
    return f"{type(e).__name__}: {msg[0] if msg else ''}"[:200]


def run_one(ad, xb, xq, I_true, args, roofs, n_all_threads):
    n, d = xb.shape
    nq = xq.shape[0]
    r = {"name": ad.name, "system": ad.system, "storage": ad.storage, "group": ad.group,
         "errors": {}}
    if ad.error:
        r["errors"]["import"] = ad.error
        return r
    try:
        t = time.perf_counter()
        ad.build(xb)
        r["build_s"] = time.perf_counter() - t
        r["bytes_per_vector"] = float(ad.bytes_per_vector)
    except Exception as e:
        r["errors"]["build"] = _err(e)
        return r

    flops = 2.0 * n * d * nq
    first_I = None
    for label, thr in (("1t", 1), ("all", n_all_threads)):
        if label == "all" and n_all_threads == 1:
            break
        try:
            (_, I), dt = _timed(lambda: _batched(ad, xq, args.k, thr, args.batch),
                                args.min_time, args.max_reps)
            r[f"qps_batch_{label}"] = nq / dt
            gf = flops / dt / 1e9
            r[f"gflops_batch_{label}"] = gf
            peak = roof.lookup(roofs.get("sgemm_gflops", {}), thr) if roofs else None
            if peak:
                r[f"roof_batch_{label}"] = gf / peak
            if first_I is None:
                first_I = I
        except Exception as e:
            r["errors"][f"batch_{label}"] = _err(e)
    if first_I is not None:
        r["recall"] = datasets.recall_at_k(first_I, I_true, args.k)

    if args.single:
        qs = xq[:args.nq_single]
        try:
            I1, dt = _timed(lambda: _single(ad, qs, args.k), args.min_time, args.max_reps)
            m = qs.shape[0]
            r["qps_single_1t"] = m / dt
            gbs = n * r["bytes_per_vector"] * m / dt / 1e9
            r["gbs_single_1t"] = gbs
            bw = roof.lookup(roofs.get("read_gbs", {}), 1) if roofs else None
            if bw:
                r["roof_single_1t"] = gbs / bw
            r["recall_single"] = datasets.recall_at_k(I1, I_true[:m], args.k)
            if "recall" not in r:
                r["recall"] = r["recall_single"]
        except Exception as e:
            r["errors"]["single"] = _err(e)
    try:
        ad.close()
    except Exception:
        pass
    return r


def _blas_info() -> list[str]:
    try:
        from threadpoolctl import threadpool_info
        return [f"{i.get('internal_api')} {i.get('version')} {i.get('architecture') or ''} "
                f"({i['filepath'].rsplit('/', 1)[-1]})".replace("  ", " ")
                for i in threadpool_info()]
    except Exception:
        return []


def ratios(results):
    by_name = {r["name"]: r for r in results}
    rows = []
    for r in results:
        if r["system"] != "quanta" or "recall" not in r:
            continue
        for peer in A.PEERS.get(r["storage"], []):
            p = by_name.get(peer)
            if p is None or "recall" not in p:
                continue
            row = {"quanta": r["name"], "peer": peer,
                   "recall_delta": r["recall"] - p["recall"]}
            for key in ("qps_batch_1t", "qps_batch_all", "qps_single_1t"):
                if key in r and key in p and p[key] > 0:
                    row[key] = r[key] / p[key]
            if r.get("bytes_per_vector") and p.get("bytes_per_vector"):
                row["bytes_ratio"] = r["bytes_per_vector"] / p["bytes_per_vector"]
            rows.append(row)
    return rows


def _f(v, fmt):
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "n/a"
    return format(v, fmt)


def markdown(results, ratio_rows, args, n_all, roofs) -> str:
    T = n_all
    lines = []
    head = ["system", "B/vec", f"recall@{args.k}", "QPS batch 1T", f"QPS batch {T}T"]
    if args.single:
        head += ["QPS 1q/call 1T", "GB/s 1q"]
    head += ["roof% batch 1T", f"roof% batch {T}T"]
    if args.single:
        head += ["roof% 1q"]
    head += ["build s"]
    lines.append("| " + " | ".join(head) + " |")
    lines.append("|" + "|".join(["---"] + ["---:"] * (len(head) - 1)) + "|")
    notes = []
    for r in results:
        g = r.get
        pct = lambda v: _f(None if v is None else 100 * v, ".1f")  # noqa: E731
        cells = [r["name"], _f(g("bytes_per_vector"), ".0f"), _f(g("recall"), ".4f"),
                 _f(g("qps_batch_1t"), ",.0f"), _f(g("qps_batch_all"), ",.0f")]
        if args.single:
            cells += [_f(g("qps_single_1t"), ",.1f"), _f(g("gbs_single_1t"), ".2f")]
        cells += [pct(g("roof_batch_1t")), pct(g("roof_batch_all"))]
        if args.single:
            cells += [pct(g("roof_single_1t"))]
        cells += [_f(g("build_s"), ".2f")]
        lines.append("| " + " | ".join(cells) + " |")
        for stage, msg in r["errors"].items():
            notes.append(f"- {r['name']}: n/a ({stage}) - {msg}")
    out = "\n".join(lines)
    if roofs:
        out += ("\n\nroofs: sgemm " + ", ".join(f"{t}T {v:.1f} GFLOP/s" for t, v in
                                                 roofs["sgemm_gflops"].items())
                + "; read " + ", ".join(f"{t}T {v:.1f} GB/s" for t, v in roofs["read_gbs"].items()))
    if notes:
        out += "\n\nn/a reasons:\n" + "\n".join(notes)
    if ratio_rows:
        h = ["quanta", "peer", "recall Δ", "QPS× batch 1T", f"QPS× batch {T}T"]
        if args.single:
            h.append("QPS× 1q")
        h.append("bytes×")
        out += "\n\n" + "| " + " | ".join(h) + " |\n"
        out += "|" + "|".join(["---", "---"] + ["---:"] * (len(h) - 2)) + "|\n"
        for row in ratio_rows:
            c = [row["quanta"], row["peer"], _f(row["recall_delta"], "+.4f"),
                 _f(row.get("qps_batch_1t"), ".2f"), _f(row.get("qps_batch_all"), ".2f")]
            if args.single:
                c.append(_f(row.get("qps_single_1t"), ".2f"))
            c.append(_f(row.get("bytes_ratio"), ".2f"))
            out += "| " + " | ".join(c) + " |\n"
    elif not any(r["system"] == "quanta" and "recall" in r for r in results):
        out += "\n\n(no quanta results: no ratios)"
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", choices=["clustered", "real"], default="clustered")
    ap.add_argument("--n", type=int, default=100000)
    ap.add_argument("--nq", type=int, default=1000)
    ap.add_argument("--d", type=int, default=384, help="dimension (clustered only)")
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--batch", type=int, default=1000, help="queries per search call, batched")
    ap.add_argument("--single", action="store_true",
                    help="also time one query per call at 1 thread")
    ap.add_argument("--nq-single", type=int, default=100)
    ap.add_argument("--threads", type=int, default=None, help="all-threads count (default: cores)")
    ap.add_argument("--systems", default=None,
                    help="comma list of substrings of system names to run (default all)")
    ap.add_argument("--f8-scale", default=None,
                    help="comma list of quanta f8_scale values (none,global,vector); "
                         "default: the library default")
    ap.add_argument("--min-time", type=float, default=1.0, help="seconds to repeat each timing")
    ap.add_argument("--max-reps", type=int, default=5)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--roof", default=None, help="roof JSON from `python -m bench.roof --json`")
    ap.add_argument("--no-roof", action="store_true", help="skip measuring the roofs")
    ap.add_argument("--json", default=None, help="write all results here")
    ap.add_argument("--no-openblas-fix", action="store_true",
                    help="do not pin OPENBLAS_CORETYPE for faiss's bundled OpenBLAS")
    args = ap.parse_args(argv)

    n_all = args.threads or A.default_threads()
    t = time.perf_counter()
    xb, xq = datasets.load(args.data, args.n, args.nq, args.d, args.seed)
    n, d = xb.shape
    print(f"data={args.data} n={n} d={d} nq={xq.shape[0]} ({time.perf_counter() - t:.1f}s)",
          file=sys.stderr)
    t = time.perf_counter()
    _, I_true = datasets.ground_truth(xb, xq, args.k, "ip")
    print(f"ground truth float64 ({time.perf_counter() - t:.1f}s)", file=sys.stderr)

    if args.roof:
        roofs = roof.load(args.roof)
    elif args.no_roof:
        roofs = {}
    else:
        print("measuring roofs ...", file=sys.stderr)
        roofs = roof.measure(n_all, verbose=True)

    scales = tuple(s.strip() for s in args.f8_scale.split(",")) if args.f8_scale else (None,)
    ads = A.all_adapters(scales, fix_openblas=not args.no_openblas_fix)
    blas = _blas_info()
    if args.systems:
        keys = [s.strip().lower() for s in args.systems.split(",") if s.strip()]
        ads = [a for a in ads if any(kk in a.name.lower() for kk in keys)]

    results = []
    for ad in ads:
        print(f"-- {ad.name}", file=sys.stderr, flush=True)
        t = time.perf_counter()
        try:
            r = run_one(ad, xb, xq, I_true, args, roofs, n_all)
        except Exception as e:  # never let one system end the run
            r = {"name": ad.name, "system": ad.system, "storage": ad.storage,
                 "group": ad.group, "errors": {"run": _err(e)}}
        r["wall_s"] = time.perf_counter() - t
        results.append(r)
        summary = ", ".join(f"{k}={v:.4g}" for k, v in r.items()
                            if isinstance(v, float) and k != "wall_s")
        print(f"   {summary or r['errors']}", file=sys.stderr, flush=True)

    rr = ratios(results)
    print(f"\n## flat search: data={args.data} n={n} d={d} nq={xq.shape[0]} k={args.k} "
          f"batch={args.batch} threads=1,{n_all}"
          + (f" single={min(args.nq_single, xq.shape[0])}" if args.single else "")
          + f"\ncpu: {roofs.get('cpu', roof.cpu_name())}"
          + f"\nOPENBLAS_CORETYPE={os.environ.get('OPENBLAS_CORETYPE', '(unset)')}; "
          + "; ".join(blas) + "\n")
    print(markdown(results, rr, args, n_all, roofs))

    if args.json:
        payload = {"config": vars(args) | {"n": n, "d": d, "nq": int(xq.shape[0]),
                                            "threads_all": n_all, "blas": blas,
                                            "openblas_coretype":
                                                os.environ.get("OPENBLAS_CORETYPE"),
                                            "python": platform.python_version()},
                   "roof": roofs, "results": results, "ratios": rr}
        if args.data == "real":
            payload["config"]["real_meta"] = datasets.real_embeddings_meta()
        with open(args.json, "w") as f:
            json.dump(payload, f, indent=2, default=float)
        print(f"\nwrote {args.json}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
