"""Filtered search: quanta against faiss (IDSelectorBatch / IDSelectorBitmap) on the same data.

For each fraction of allowed ids (a random subset), both libraries search the same index kind
with the same filter; recall@10 is against exact search over the allowed rows.

    python -m bench.filtered --n 200000 --d 128 --nq 200
    python -m bench.filtered --data real --nq 500          # MiniLM embeddings (bench.build_embeddings)

Flat: quanta FlatIndex (f32) vs faiss IndexFlat; IVF: quanta IVFPQIndex(fast_scan=True,
by_residual=False) vs faiss IndexIVFPQFastScan, both nlist / m / nprobe alike. Single thread
unless --threads says more; QPS is the best of repeated runs (bench.timing.best_time).
"""
from __future__ import annotations

import argparse

import numpy as np

import quanta
from bench.datasets import ground_truth, load, recall_at_k
from bench.timing import best_time

K = 10


def faiss_selectors(faiss, allowed, n):
    mask = np.zeros(n, bool)
    mask[allowed] = True
    bits = np.packbits(mask, bitorder="little")
    return {"batch": faiss.IDSelectorBatch(allowed), "bitmap": faiss.IDSelectorBitmap(n, faiss.swig_ptr(bits))}, bits


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default="clustered", choices=["clustered", "real"])
    ap.add_argument("--n", type=int, default=200_000)
    ap.add_argument("--d", type=int, default=128)
    ap.add_argument("--nq", type=int, default=200)
    ap.add_argument("--metric", default="l2", choices=["l2", "ip"])
    ap.add_argument("--nlist", type=int, default=1024)
    ap.add_argument("--m", type=int, default=32)
    ap.add_argument("--nprobe", type=int, default=32)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--fractions", default="0.5,0.1,0.01,0.001")
    ap.add_argument("--skip-flat", action="store_true")
    ap.add_argument("--skip-ivf", action="store_true")
    args = ap.parse_args(argv)

    import faiss
    faiss.omp_set_num_threads(args.threads)
    xb, xq = load(args.data, args.n, args.nq, args.d)
    n, d = xb.shape
    fractions = [float(f) for f in args.fractions.split(",")]
    rng = np.random.default_rng(0)
    subsets = {f: np.sort(rng.choice(n, max(K, int(n * f)), replace=False)).astype(np.int64)
               for f in fractions}
    gts = {}
    for f, allowed in subsets.items():
        _, I = ground_truth(xb[allowed], xq, K, args.metric)
        gts[f] = allowed[I]
    T = args.threads
    fmetric = faiss.METRIC_L2 if args.metric == "l2" else faiss.METRIC_INNER_PRODUCT
    print(f"# filtered search, {args.data} n={n} d={d} nq={len(xq)} metric={args.metric} "
          f"threads={T}, faiss {faiss.__version__}")

    def run_rows(name, q_search, f_search, unfiltered_s=None):
        print(f"\n## {name}\n")
        print("| allowed | quanta recall | quanta QPS | faiss batch recall | faiss batch QPS "
              "| faiss bitmap QPS | quanta / best faiss |" + (" quanta time / unfiltered |"
                                                           if unfiltered_s else ""))
        print("|---:|---:|---:|---:|---:|---:|---:|" + ("---:|" if unfiltered_s else ""))
        for f, allowed in subsets.items():
            sels, bits = faiss_selectors(faiss, allowed, n)  # bits: the bitmap selector reads it
            filt = quanta.Filter.ids(allowed)  # built once, as faiss's selectors are
            I, s = best_time(lambda: q_search(filt))
            rq = recall_at_k(I, gts[f], K)
            Ib, sb = best_time(lambda: f_search(sels["batch"]))
            Im, sm = best_time(lambda: f_search(sels["bitmap"]))
            rb = recall_at_k(Ib, gts[f], K)
            qps = len(xq) / s
            best_faiss = len(xq) / min(sb, sm)
            row = (f"| {f:.1%} | {rq:.3f} | {qps:,.0f} | {rb:.3f} | {len(xq) / sb:,.0f} | "
                   f"{len(xq) / sm:,.0f} | {qps / best_faiss:.2f}x |")
            if unfiltered_s:
                row += f" {s / unfiltered_s:.3f} |"
            print(row, flush=True)

    if not args.skip_flat:
        qf = quanta.FlatIndex(d, args.metric)
        qf.add(xb)
        ff = faiss.IndexFlat(d, fmetric)
        ff.add(xb)
        _, s_unf = best_time(lambda: qf.search(xq, K, threads=T))
        _, s_unf_f = best_time(lambda: ff.search(xq, K))
        print(f"\nunfiltered flat: quanta {len(xq) / s_unf:,.0f} QPS, faiss "
              f"{len(xq) / s_unf_f:,.0f} QPS")
        run_rows("Flat (f32)",
                 lambda filt: qf.search(xq, K, threads=T, filter=filt).ids,
                 lambda sel: ff.search(xq, K, params=faiss.SearchParameters(sel=sel))[1],
                 unfiltered_s=s_unf)

    if not args.skip_ivf:
        qi = quanta.IVFPQIndex(d, args.nlist, args.m, 4, args.metric, fast_scan=True,
                               by_residual=False)
        train = xb[: min(n, 100 * args.nlist)]
        qi.train(train)
        qi.add(xb)
        quant = faiss.IndexFlat(d, fmetric)
        fi = faiss.IndexIVFPQFastScan(quant, d, args.nlist, args.m, 4, fmetric)
        fi.train(train)
        fi.add(xb)
        _, s_unf = best_time(lambda: qi.search(xq, K, nprobe=args.nprobe, threads=T))
        _, s_unf_f = best_time(lambda: fi.search(
            xq, K, params=faiss.SearchParametersIVF(nprobe=args.nprobe)))
        print(f"\nunfiltered IVF{args.nlist},PQ{args.m}x4fs nprobe={args.nprobe}: quanta "
              f"{len(xq) / s_unf:,.0f} QPS, faiss {len(xq) / s_unf_f:,.0f} QPS")
        run_rows(f"IVF{args.nlist},PQ{args.m}x4fs, nprobe {args.nprobe}",
                 lambda filt: qi.search(xq, K, nprobe=args.nprobe, threads=T, filter=filt).ids,
                 lambda sel: fi.search(xq, K, params=faiss.SearchParametersIVF(
                     nprobe=args.nprobe, sel=sel))[1])


if __name__ == "__main__":
    main()
