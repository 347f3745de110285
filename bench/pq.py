"""Flat PQ benchmark: quanta PQIndex vs faiss IndexPQ on the same data, same code size.

    python -m bench.pq --data clustered --n 100000 --d 128 --nq 1000 --m 16,32 [--threads 1]

Also 4-bit fast-scan (--m-fs) against faiss IndexPQFastScan. Prints recall@10 against exact
L2 search, training time, and QPS at 1 thread and all threads, with quanta/faiss ratios.
(IVF-PQ and refinement come later.)
"""
from __future__ import annotations

import argparse
import time


from bench import adapters as A
from bench import datasets


def _time(fn):
    t = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--data", default="clustered", choices=["clustered", "real"])
    p.add_argument("--n", type=int, default=100_000)
    p.add_argument("--d", type=int, default=128)
    p.add_argument("--nq", type=int, default=1000)
    p.add_argument("--m", default="16,32")
    p.add_argument("--nbits", type=int, default=8)
    p.add_argument("--m-fs", default="32,64", help="m values for 4-bit fast-scan ('' to skip)")
    p.add_argument("--ivf", default="256:32", help="nlist:m for IVF-PQ ('' to skip)")
    p.add_argument("--nprobe", default="1,4,16,64")
    args = p.parse_args(argv)
    A.openblas_coretype_fix()
    import faiss
    import quanta

    xb, xq = datasets.load(args.data, args.n, args.nq, args.d)
    d = xb.shape[1]
    _, gt = datasets.ground_truth(xb, xq, 10, "l2")
    threads = A.default_threads()
    rows = []
    configs = [(int(v), args.nbits, False) for v in args.m.split(",") if v]
    configs += [(int(v), 4, True) for v in args.m_fs.split(",") if v]
    for m, nbits, fs in configs:
        res = {}
        faiss.omp_set_num_threads(1)
        f = faiss.IndexPQFastScan(d, m, 4) if fs else faiss.IndexPQ(d, m, nbits)
        _, res["faiss", "train"] = _time(lambda: f.train(xb))
        f.add(xb)
        q = quanta.PQIndex(d, m, nbits, metric="l2", fast_scan=fs)
        _, res["quanta", "train"] = _time(lambda: q.train(xb, threads=1))
        q.add(xb)
        for t in (1, threads):
            faiss.omp_set_num_threads(t)
            (_, If), tf = _time(lambda: f.search(xq, 10))
            (_, Iq), tq = _time(lambda: q.search(xq, 10, threads=t))
            res["faiss", t] = (len(xq) / tf, datasets.recall_at_k(If, gt, 10))
            res["quanta", t] = (len(xq) / tq, datasets.recall_at_k(Iq, gt, 10))
        rows.append((m, nbits, fs, res))
    print(f"## flat PQ: data={args.data} n={len(xb)} d={d} nq={len(xq)} threads=1,{threads}\n")
    print("| code | system | recall@10 | train s (1T) | QPS 1T | QPS all | QPS× 1T | QPS× all | train× |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
    for m, nbits, fs, res in rows:
        names = (("faiss IndexPQFastScan", "faiss"), ("quanta PQIndex fast_scan", "quanta")) if fs \
            else (("faiss IndexPQ", "faiss"), ("quanta PQIndex", "quanta"))
        for sysname, peer in names:
            q1, r = res[peer, 1]
            qa, _ = res[peer, threads]
            ratio = ("", "", "") if peer == "faiss" else (
                f"{q1 / res['faiss', 1][0]:.2f}", f"{qa / res['faiss', threads][0]:.2f}",
                f"{res['quanta', 'train'] / res['faiss', 'train']:.2f}")
            spec = f"PQ{m}x{nbits}" + ("fs" if fs else "")
            print(f"| {spec} ({m * nbits // 8} B) | {sysname} | {r:.4f} | "
                  f"{res[peer, 'train']:.2f} | {q1:,.0f} | {qa:,.0f} | " + " | ".join(ratio) + " |")

    if args.ivf:
        ivf(args, xb, xq, gt, threads, faiss, quanta)


def ivf(args, xb, xq, gt, threads, faiss, quanta):
    """IVF-PQ (8-bit codes on residuals) against faiss IndexIVFPQ over an nprobe sweep."""
    nlist, m = (int(v) for v in args.ivf.split(":"))
    d = xb.shape[1]
    faiss.omp_set_num_threads(1)
    f = faiss.IndexIVFPQ(faiss.IndexFlatL2(d), d, nlist, m, 8)
    _, tf = _time(lambda: f.train(xb))
    f.add(xb)
    q = quanta.IVFPQIndex(d, nlist, m, 8, "l2")
    _, tq = _time(lambda: q.train(xb, threads=1))
    q.add(xb)
    print(f"\n## IVF{nlist},PQ{m}x8 ({m} B): train faiss {tf:.2f} s, quanta {tq:.2f} s (1 thread)\n")
    print("| nprobe | faiss recall@10 | quanta recall@10 | faiss QPS 1T | quanta QPS 1T | QPS× 1T | "
          "faiss QPS all | quanta QPS all | QPS× all |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for nprobe in [int(v) for v in args.nprobe.split(",")]:
        f.nprobe = nprobe
        out = {}
        for t in (1, threads):
            faiss.omp_set_num_threads(t)
            (_, If), sf = _time(lambda: f.search(xq, 10))
            (_, Iq), sq = _time(lambda: q.search(xq, 10, nprobe=nprobe, threads=t))
            out[t] = (len(xq) / sf, len(xq) / sq, datasets.recall_at_k(If, gt, 10),
                      datasets.recall_at_k(Iq, gt, 10))
        f1, q1, rf, rq = out[1]
        fa, qa, _, _ = out[threads]
        print(f"| {nprobe} | {rf:.4f} | {rq:.4f} | {f1:,.0f} | {q1:,.0f} | {q1 / f1:.2f} | "
              f"{fa:,.0f} | {qa:,.0f} | {qa / fa:.2f} |")


if __name__ == "__main__":
    main()
