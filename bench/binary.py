"""Recurrent binary codes (quanta BinaryIndex, BEBR) against faiss on the same data.

    python -m bench.binary --n 100000 --d 128 --nq 1000 --plot bench/results/binary_clustered.png

For 1, 2, 3 and 4 bits per dimension (codes of d bits per plane, 1-4 planes), at the same
bytes per vector:
  * quanta RBE<d>x<b>q<p>: recall@10 against exact inner-product search, without and with an
    exact re-rank of the top 100 (refine f32), QPS at 1 thread and all threads; by default the
    queries keep up to 4 bits per dimension (q4), and BEBR's symmetric codes (q = b) are shown
    too;
  * faiss IndexBinaryFlat on sign bits (Hamming) of a random orthogonal projection to b*d
    dimensions: recall without and with the same re-rank (done in NumPy, untimed);
  * faiss IndexRaBitQ with b bits (and IndexRaBitQFastScan at 1 bit), without and with
    IndexRefineFlat (k_factor 10);
  * quanta PQ fast-scan with the same bytes (PQ<b*d/4>x4fs), without and with refine.
Then the scan speed of each exact scoring path (sdc, popcount, u8) on the same codes and of
faiss IndexBinaryFlat at equal total bits, in codes per second at 1 thread.
"""
from __future__ import annotations

import argparse

import numpy as np

from bench import adapters as A
from bench import datasets
from bench.timing import best_time, measure, time_once

RERANK = 100  # candidates re-ranked exactly (k * 10)


def _measure(search, xq, gt, threads):
    return measure(search, xq, gt, threads, lambda ids, g: datasets.recall_at_k(ids, g, 10))


def _rerank(xb, xq, cand):
    """Exact inner-product top-10 among each query's candidates (NumPy)."""
    scores = np.einsum("qd,qcd->qc", xq, xb[np.maximum(cand, 0)])
    scores[cand < 0] = -np.inf
    order = np.argsort(-scores, axis=1)[:, :10]
    return np.take_along_axis(cand, order, 1)


def _hamming_codes(x, proj):
    return np.packbits((x @ proj.T) >= 0, axis=1)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--data", default="clustered", choices=["clustered", "real"])
    p.add_argument("--n", type=int, default=100_000)
    p.add_argument("--d", type=int, default=128)
    p.add_argument("--nq", type=int, default=1000)
    p.add_argument("--bits", default="1,2,3,4", help="bits per dimension to sweep")
    p.add_argument("--plot", help="write the recall/QPS chart to this PNG")
    args = p.parse_args(argv)
    A.openblas_coretype_fix()
    import faiss
    import quanta

    xb, xq = datasets.load(args.data, args.n, args.nq, args.d)
    d = xb.shape[1]
    _, gt = datasets.ground_truth(xb, xq, 10, "ip")
    threads = A.default_threads()
    rng = np.random.default_rng(0)
    print(f"# Binary codes benchmark: data={args.data} n={len(xb)} d={d} nq={len(xq)} "
          f"threads=1,{threads}; recall@10 vs exact inner product; re-rank = exact top-10 of "
          f"the best {RERANK}\n")
    print("| bits/dim | B/vector | system | train s | recall@10 | recall re-ranked | QPS 1T | "
          "QPS all | QPS re-ranked 1T |")
    print("|---:|---:|---|---:|---:|---:|---:|---:|---:|")
    rows = []

    def row(b, nbytes, name, train_s, rec, rec_rr, q1, qa, qrr):
        rows.append((b, name, rec, q1, rec_rr, qrr))
        fmt = lambda v, f: "n/a" if v is None else format(v, f)
        print(f"| {b} | {nbytes} | {name} | {fmt(train_s, '.2f')} | {rec:.4f} | "
              f"{fmt(rec_rr, '.4f')} | {q1:,.0f} | {qa:,.0f} | {fmt(qrr, ',.0f')} |")

    for b in [int(v) for v in args.bits.split(",") if v]:
        nbytes = b * d // 8
        # quanta recurrent binary codes: default (finer queries where sdc allows) and, where
        # that differs, BEBR's symmetric codes
        symmetric = quanta.BinaryIndex(d, d, b - 1).query_levels == b - 1
        for ql in [None] if symmetric else [None, b - 1]:
            ix = quanta.BinaryIndex(d, d, b - 1, "ip", query_levels=ql, refine="f32",
                                    refine_factor=RERANK // 10)
            _, tq = time_once(lambda: ix.train(xb))
            ix.add(xb)
            plain = quanta.BinaryIndex(d, d, b - 1, "ip", query_levels=ql)
            plain.train(xb)
            plain.add(xb)
            rec, q1, qa = _measure(lambda t: plain.search(xq, 10, threads=t).ids, xq, gt, threads)
            rec_rr, qrr, _ = _measure(lambda t: ix.search(xq, 10, threads=t).ids, xq, gt, 1)
            row(b, nbytes, f"quanta RBE{d}x{b}q{plain.query_levels + 1} ({plain.scoring})", tq,
                rec, rec_rr, q1, qa, qrr)

        # faiss Hamming on sign bits of a random orthogonal projection to b*d dimensions
        a = rng.standard_normal((b * d, d))
        proj = (np.linalg.qr(a)[0] if b * d >= d else np.linalg.qr(a.T)[0].T).astype(np.float32)
        hb = faiss.IndexBinaryFlat(b * d)
        hb.add(_hamming_codes(xb, proj))
        hq = _hamming_codes(xq, proj)

        def hsearch(t, k=10):
            faiss.omp_set_num_threads(t)
            return hb.search(hq, k)[1]
        rec, q1, qa = _measure(hsearch, xq, gt, threads)
        rec_rr = datasets.recall_at_k(_rerank(xb, xq, hsearch(1, RERANK)), gt, 10)
        row(b, nbytes, f"faiss IndexBinaryFlat (sign bits, {b * d} bits)", None, rec, rec_rr,
            q1, qa, None)

        # faiss RaBitQ (multi-bit), and its fast-scan variant at 1 bit
        variants = [(f"faiss IndexRaBitQ nb_bits={b}",
                     lambda: faiss.IndexRaBitQ(d, faiss.METRIC_INNER_PRODUCT, b))]
        if b == 1:
            variants.append(("faiss IndexRaBitQFastScan",
                             lambda: faiss.IndexRaBitQFastScan(d, faiss.METRIC_INNER_PRODUCT)))
        for name, make in variants:
            faiss.omp_set_num_threads(1)
            base = make()
            refined = faiss.IndexRefineFlat(base)
            refined.k_factor = RERANK // 10
            _, tf = time_once(lambda: refined.train(xb))
            refined.add(xb)

            def fsearch(t, index=base):
                faiss.omp_set_num_threads(t)
                return index.search(xq, 10)[1]
            rec, q1, qa = _measure(fsearch, xq, gt, threads)
            rec_rr, qrr, _ = _measure(lambda t: fsearch(t, refined), xq, gt, 1)
            row(b, base.code_size, name, tf, rec, rec_rr, q1, qa, qrr)

        # quanta PQ fast-scan at the same bytes
        m = b * d // 4
        if d % m == 0 and m <= 256:  # fast-scan supports up to 256 sub-quantizers
            pq = quanta.PQIndex(d, m, 4, "ip", fast_scan=True)
            pqr = quanta.PQIndex(d, m, 4, "ip", fast_scan=True, refine="f32",
                                 refine_factor=RERANK // 10)
            _, tp = time_once(lambda: pq.train(xb))
            pq.add(xb)
            pqr.train(xb)
            pqr.add(xb)
            rec, q1, qa = _measure(lambda t: pq.search(xq, 10, threads=t).ids, xq, gt, threads)
            rec_rr, qrr, _ = _measure(lambda t: pqr.search(xq, 10, threads=t).ids, xq, gt, 1)
            row(b, nbytes, f"quanta PQ{m}x4fs", tp, rec, rec_rr, q1, qa, qrr)
    print()
    scan_speed(quanta, faiss, xb, xq, d, [int(v) for v in args.bits.split(",") if v])
    if args.plot:
        plot(args.plot, rows, f"{args.data} n={len(xb)} d={d}")


def scan_speed(quanta, faiss, xb, xq, d, bits):
    """Codes scored per second, 1 thread, each exact path on the same codes, and Hamming."""
    print("## Scan speed, 1 thread (codes scored per second over the whole base)\n")
    print("| bits/dim | total bits | quanta sdc | quanta popcount | quanta u8 | faiss "
          "IndexBinaryFlat (Hamming, same bits) | sdc / popcount | sdc / Hamming |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|")
    n, nq = len(xb), len(xq)
    faiss.omp_set_num_threads(1)
    for b in bits:
        speed = {}
        for path in ("sdc", "popcount", "u8"):
            try:  # symmetric codes: the same bits on both sides as the Hamming scan
                ix = quanta.BinaryIndex(d, d, b - 1, "ip", query_levels=b - 1, scoring=path)
            except ValueError:
                continue
            ix.train(xb)
            ix.add(xb)
            _, s = best_time(lambda: ix.search(xq, 10, threads=1))
            speed[path] = n * nq / s
        hb = faiss.IndexBinaryFlat(b * d)
        hb.add(np.random.default_rng(1).integers(0, 256, (n, b * d // 8), dtype=np.uint8))
        hq = np.random.default_rng(2).integers(0, 256, (nq, b * d // 8), dtype=np.uint8)
        _, s = best_time(lambda: hb.search(hq, 10))
        speed["hamming"] = n * nq / s
        cell = lambda k: f"{speed[k] / 1e9:.2f} G" if k in speed else "n/a"
        ratio = lambda a, c: f"{speed[a] / speed[c]:.2f}" if a in speed and c in speed else "n/a"
        print(f"| {b} | {b * d} | {cell('sdc')} | {cell('popcount')} | {cell('u8')} | "
              f"{cell('hamming')} | {ratio('sdc', 'popcount')} | {ratio('sdc', 'hamming')} |")
    print()


def plot(path, rows, title):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, 2, figsize=(14, 6), sharey=True)

    def key_of(name):
        key = name.split(" (")[0]
        if key.startswith("quanta RBE"):
            return "quanta RBE, symmetric" if key.endswith(f"q{key.split('x')[1].split('q')[0]}") \
                else "quanta RBE, finer queries"
        if key.startswith("quanta PQ"):
            return "quanta PQ fast-scan"
        return key.split(" nb_bits")[0]
    keys = sorted({key_of(r[1]) for r in rows})
    colors = {k: f"C{i}" for i, k in enumerate(keys)}  # the same colour in both panels
    for ax, rr, label in ((axes[0], False, "without re-rank"), (axes[1], True, "re-rank top 100")):
        series = {}
        for b, name, rec, q1, rec_rr, qrr in rows:
            r, q = (rec_rr, qrr) if rr else (rec, q1)
            if r is not None and q is not None:
                series.setdefault(key_of(name), []).append((b, r, q))
        for key, pts in sorted(series.items()):
            pts.sort()
            ax.plot([p[1] for p in pts], [p[2] for p in pts], "-" if "quanta" in key else "--",
                    marker="o", color=colors[key], label=key)
            for b, r, q in pts:
                ax.annotate(f"{b}b", (r, q), fontsize=7, xytext=(3, 3), textcoords="offset points")
        ax.set_yscale("log")
        ax.set_xlabel("recall@10")
        ax.set_title(label)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    axes[0].set_ylabel("queries per second, 1 thread")
    fig.suptitle(f"binary codes, 1-4 bits per dimension ({title})")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    print(f"plot written to {path}")


if __name__ == "__main__":
    main()
