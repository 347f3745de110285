"""PQ benchmark: quanta against faiss on the same data, same code size, in one run.

    python -m bench.pq --data clustered --n 100000 --d 128 --nq 1000 --plot pq.png

1. Flat PQ (--m, 8-bit) vs faiss IndexPQ, and 4-bit fast-scan (--m-fs) vs IndexPQFastScan.
2. IVF-PQ (--ivf, "nlist:m" for 8-bit codes, "nlist:mfs" for 4-bit fast-scan) vs
   IndexIVFPQ / IndexIVFPQFastScan over an nprobe sweep, then both with exact re-ranking
   (faiss IndexRefineFlat, quanta refine="f32", same bytes) over nprobe x re-rank depth
   (--kfactor), plus quanta refine="f8e4m3" (a quarter of the re-rank bytes); --soar adds
   the same three quanta indexes with SOAR ("IVF<n>(soar),...").

quanta's indexes are built from their factory specs with quanta's defaults (its IVF coding may
differ from faiss's; the header of each IVF table names both).

Prints the CPU, recall@10 against exact L2 search, training time (1 thread), QPS at 1 thread and
all threads, and quanta/faiss QPS ratios at equal recall: the best QPS of each system among its
points with recall >= the target, the targets being 80% and 95% of faiss's best recall on the
sweep without re-ranking, and recall 0.90 / 0.95 with it. --plot writes recall-vs-QPS curves.
"""
from __future__ import annotations

import argparse

from bench import adapters as A
from bench import datasets
from bench.roof import cpu_name
from bench.timing import measure, time_once

TARGETS = (0.90, 0.95)   # recall@10 with re-ranking
FRACTIONS = (0.80, 0.95)  # of faiss's best recall on the sweep, without re-ranking


def _ints(s):
    return [int(v) for v in s.split(",") if v]


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--data", default="clustered", choices=["clustered", "real"])
    p.add_argument("--n", type=int, default=100_000)
    p.add_argument("--d", type=int, default=128)
    p.add_argument("--nq", type=int, default=1000)
    p.add_argument("--m", default="16,32", help="m values for 8-bit flat PQ ('' to skip)")
    p.add_argument("--m-fs", default="32,64", help="m values for 4-bit fast-scan ('' to skip)")
    p.add_argument("--ivf", default="256:32,256:64fs",
                   help="IVF configs nlist:m (8-bit) or nlist:mfs (4-bit fast-scan) ('' to skip)")
    p.add_argument("--nprobe", default="1,2,4,8,16,32,64")
    p.add_argument("--kfactor", default="2,4,8", help="re-rank depths (k * factor candidates)")
    p.add_argument("--refine-nprobe", default="1,2,4,8,16,32")
    p.add_argument("--soar", action="store_true",
                   help="also quanta with SOAR (each vector in two lists: 'IVF<n>(soar),...')")
    p.add_argument("--plot", help="write the recall/QPS curves to this PNG")
    args = p.parse_args(argv)
    A.openblas_coretype_fix()
    import faiss
    import quanta

    xb, xq = datasets.load(args.data, args.n, args.nq, args.d)
    _, gt = datasets.ground_truth(xb, xq, 10, "l2")
    threads = A.default_threads()
    source = (f" (texts: {datasets.real_embeddings_meta().get('source', '?')})"
              if args.data == "real" else "")
    print(f"# PQ benchmark: data={args.data}{source} n={len(xb)} d={xb.shape[1]} nq={len(xq)} "
          f"threads=1,{threads}\ncpu: {cpu_name()}, quanta SIMD level {quanta.simd_level()}, "
          f"faiss {faiss.__version__}\n")
    flat_rows = flat_pq(args, xb, xq, gt, threads, faiss, quanta)
    curves = {}
    for cfg in [c for c in args.ivf.split(",") if c]:
        curves.update(ivf_pq(cfg, args, xb, xq, gt, threads, faiss, quanta))
    if args.plot and (curves or flat_rows):
        plot(args.plot, curves, flat_rows, threads, f"{args.data} n={len(xb)} d={xb.shape[1]}")


def _measure(search, xq, gt, threads):
    return measure(search, xq, gt, threads, lambda ids, g: datasets.recall_at_k(ids, g, 10))


def flat_pq(args, xb, xq, gt, threads, faiss, quanta):
    d = xb.shape[1]
    rows = []
    configs = [(m, 8, False) for m in _ints(args.m)] + [(m, 4, True) for m in _ints(args.m_fs)]
    for m, nbits, fs in configs:
        faiss.omp_set_num_threads(1)
        f = faiss.IndexPQFastScan(d, m, 4) if fs else faiss.IndexPQ(d, m, nbits)
        _, tf = time_once(lambda: f.train(xb))
        f.add(xb)
        q = quanta.PQIndex(d, m, nbits, metric="l2", fast_scan=fs)
        _, tq = time_once(lambda: q.train(xb, threads=1))
        q.add(xb)

        def fsearch(t):
            faiss.omp_set_num_threads(t)
            return f.search(xq, 10)[1]
        spec = f"PQ{m}x{nbits}" + ("fs" if fs else "")
        rows.append((spec, m * nbits // 8, "faiss " + ("IndexPQFastScan" if fs else "IndexPQ"), tf,
                     *_measure(fsearch, xq, gt, threads)))
        rows.append((spec, m * nbits // 8, "quanta PQIndex" + (" fast_scan" if fs else ""), tq,
                     *_measure(lambda t: q.search(xq, 10, threads=t).ids, xq, gt, threads)))
    if not rows:
        return rows
    print("## flat PQ\n")
    print("| code | system | recall@10 | train s (1T) | QPS 1T | QPS all | QPS× 1T | QPS× all | train× |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
    for i, (spec, nbytes, name, tr, rec, q1, qa) in enumerate(rows):
        ratio = ["", "", ""]
        if name.startswith("quanta"):
            _, _, _, ftr, _, f1, fa = rows[i - 1]
            ratio = [f"{q1 / f1:.2f}", f"{qa / fa:.2f}", f"{tr / ftr:.2f}"]
        print(f"| {spec} ({nbytes} B) | {name} | {rec:.4f} | {tr:.2f} | {q1:,.0f} | {qa:,.0f} | "
              + " | ".join(ratio) + " |")
    print()
    return rows


def ivf_pq(cfg, args, xb, xq, gt, threads, faiss, quanta):
    """Sweeps one IVF config for faiss and quanta, without and with re-ranking."""
    nlist, m = cfg.split(":")
    fs = m.endswith("fs")
    nlist, m = int(nlist), int(m.removesuffix("fs"))
    nbits = 4 if fs else 8
    d = xb.shape[1]
    spec = f"IVF{nlist},PQ{m}x{nbits}" + ("fs" if fs else "")
    fname = "IndexIVFPQFastScan" if fs else "IndexIVFPQ"

    faiss.omp_set_num_threads(1)
    coarse = faiss.IndexFlatL2(d)
    base = faiss.IndexIVFPQFastScan(coarse, d, nlist, m, 4) if fs else \
        faiss.IndexIVFPQ(coarse, d, nlist, m, 8)
    refined = faiss.IndexRefineFlat(base)  # adds go to both; base alone searches unrefined
    _, t_faiss = time_once(lambda: refined.train(xb))
    refined.add(xb)
    # quanta's defaults for the spec (its coding may differ from faiss's: both printed), with
    # and without SOAR, without re-ranking and with f32 (faiss's bytes) or f8e4m3 vectors
    variants = {}
    for soar in ((False, True) if args.soar else (False,)):
        for refine in (None, "f32", "f8e4m3"):
            qspec = spec.replace(",", "(soar),", 1) if soar else spec
            name = f"quanta {qspec}" + (f",Refine({refine})" if refine else "")
            ix = quanta.index_factory(d, qspec + (f",Refine({refine})" if refine else ""), "l2")
            _, t = time_once(lambda: ix.train(xb, threads=1))
            ix.add(xb)
            variants[name] = (ix, t)

    def faiss_search(index, nprobe, kf=None):
        def run(t):
            faiss.omp_set_num_threads(t)
            base.nprobe = nprobe
            if kf is not None:
                refined.k_factor = kf
            return index.search(xq, 10)[1]
        return run

    def quanta_search(ix, nprobe, kf=None):
        def run(t):
            if kf is not None:
                ix.refine_factor = kf
            return ix.search(xq, 10, nprobe=nprobe, threads=t).ids
        return run

    nprobes = [p for p in _ints(args.nprobe) if p <= nlist]
    rprobes = [p for p in _ints(args.refine_nprobe) if p <= nlist]
    kfs = _ints(args.kfactor)
    fbase, frefined = f"faiss {fname}", f"faiss {fname} + IndexRefineFlat"
    curves = {
        fbase: [(p, None, *_measure(faiss_search(base, p), xq, gt, threads)) for p in nprobes],
        frefined: [(p, kf, *_measure(faiss_search(refined, p, kf), xq, gt, threads))
                   for p in rprobes for kf in kfs],
    }
    for name, (ix, _) in variants.items():
        if ix.refine is None:
            curves[name] = [(p, None, *_measure(quanta_search(ix, p), xq, gt, threads))
                            for p in nprobes]
        else:
            curves[name] = [(p, kf, *_measure(quanta_search(ix, p, kf), xq, gt, threads))
                            for p in rprobes for kf in kfs]
    code = m * nbits // 8
    first = next(iter(variants.values()))[0]
    print(f"## {spec} ({code} B codes; re-rank vectors f32 {4 * d} B, f8e4m3 {d} B; "
          f"by_residual: faiss {bool(base.by_residual)}, quanta {first.by_residual}; "
          f"SOAR: twice the codes and ids)\n")
    print(f"train (1 thread): faiss {t_faiss:.2f} s, quanta "
          + ", ".join(f"{n.removeprefix('quanta ')} {t:.2f} s" for n, (_, t) in variants.items())
          + "\n")
    print("| system | B/vector | nprobe | k_factor | recall@10 | QPS 1T | QPS all |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    nbytes = {fbase: code + 8, frefined: code + 8 + 4 * d}
    nbytes.update({n: ix.memory_usage / ix.ntotal for n, (ix, _) in variants.items()})
    for name, pts in curves.items():
        for nprobe, kf, rec, q1, qa in pts:
            print(f"| {name} | {nbytes[name]:.0f} | {nprobe} | {kf or ''} | {rec:.4f} | "
                  f"{q1:,.0f} | {qa:,.0f} |")
    print("\nQPS at equal recall@10 (best point with recall >= target), quanta / faiss; without "
          "re-ranking the targets are 80% and 95% of faiss's best recall on the sweep:\n")
    print("| quanta | faiss | target | faiss QPS 1T | quanta QPS 1T | × 1T | faiss QPS all | "
          "quanta QPS all | × all |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
    for qk, (ix, _) in variants.items():
        fk = fbase if ix.refine is None else frefined
        best_faiss = max(p[2] for p in curves[fk])
        targets = TARGETS if ix.refine else [round(f * best_faiss, 4) for f in FRACTIONS]
        for target in targets:
            f = [_best(curves[fk], target, i) for i in (3, 4)]
            q = [_best(curves[qk], target, i) for i in (3, 4)]
            cells = []
            for i in range(2):
                ratio = f"{q[i] / f[i]:.2f}" if f[i] and q[i] else "n/a"
                cells += [f"{f[i]:,.0f}" if f[i] else "not reached",
                          f"{q[i]:,.0f}" if q[i] else "not reached", ratio]
            print(f"| {qk.removeprefix('quanta ')} | {fk.removeprefix('faiss ')} | {target} | "
                  + " | ".join(cells) + " |")
    print()
    return {f"{spec}: {k}": v for k, v in curves.items()}


def _best(points, target, col):
    """Highest QPS (column col) among points with recall >= target, or None."""
    ok = [p[col] for p in points if p[2] >= target]
    return max(ok) if ok else None


def plot(path, curves, flat_rows, threads, title):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, 2, figsize=(15, 6.5), sharey=True)
    for ax, col, label in ((axes[0], 3, "1 thread"), (axes[1], 4, f"{threads} threads")):
        for name, pts in curves.items():
            pts = _frontier(pts, col)
            style = "-" if "quanta" in name else "--"
            ax.plot([p[2] for p in pts], [p[col] for p in pts], style, marker="o", ms=3,
                    label=name)
        for spec, _, name, _, rec, q1, qa in flat_rows:
            ax.scatter([rec], [q1 if col == 3 else qa], marker="x" if "faiss" in name else "+",
                       s=50, label=f"{spec}: {name}")
        ax.set_yscale("log")
        ax.set_xlabel("recall@10")
        ax.set_title(f"{label}")
        ax.grid(True, which="both", alpha=0.3)
    axes[0].set_ylabel("queries per second")
    axes[1].legend(fontsize=6, loc="lower left")
    fig.suptitle(f"quanta vs faiss, PQ / IVF-PQ ({title})")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    print(f"plot written to {path}")


def _frontier(points, col):
    """The Pareto frontier (recall up, QPS up) of a sweep, sorted by recall."""
    pts = sorted(points, key=lambda p: (p[2], p[col]))
    out = []
    for p in reversed(pts):
        if not out or p[col] > out[-1][col]:
            out.append(p)
    return out[::-1]


if __name__ == "__main__":
    main()
