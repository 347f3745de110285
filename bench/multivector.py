"""MUVERA / token-stage multi-vector retrieval: quanta against FastEmbed's Muvera pipeline and
quanta's own exhaustive Chamfer search, on the same token sets.

    python -m bench.multivector --data real --sizes 20000,100000,200000 --nq 100 \\
        --plot bench/results/multivector_real.png
    python -m bench.multivector --data clustered --sizes 20000,40000 --nq 100 \\
        --plot bench/results/multivector_clustered.png

Data: ``real`` = all-MiniLM-L6-v2 per-token outputs (384-d, every token L2-normalized, float16
in the cache) of GCIDE definitions (and, past GCIDE's 185k, Debian package descriptions),
built by ``python -m bench.build_tokens``; two query sets from the same held-out texts:
``short`` = the headword alone (<= 8 tokens), ``long`` = the whole text cut to 32 tokens
(>= 20 tokens kept). ``clustered`` = synthetic token sets (128-d) whose tokens gather around 3
of 2,000 topics per document (one query set, 32 tokens).

1. FDE encoding throughput, FastEmbed's defaults (k_sim 5, d_proj 16, r_reps 20, seed 42) in
   quanta's compatibility mode against FastEmbed's Muvera.
2. Per corpus size and query set: ground truth = the exact Chamfer top-10 (quanta's exhaustive
   search on the float16 tokens of the cache, decoded exactly, which is tested against NumPy).
   Recall@10 and QPS at 1 thread and all threads of:
   * quanta ``MultiVectorIndex`` with ``search()``'s defaults (the row users get), and over a
     sweep of ``token_hits`` x ``candidates`` x ``shortlist`` (token stage: IVF-PQ fast-scan
     of every token, XTR estimate, the shortlist picked by the 4-bit token sketch, exact
     Chamfer re-rank on int8 tokens);
   * quanta with MUVERA's stage (the document FDEs in a bf16 flat index, then the same
     re-rank) over the candidate counts;
   * FastEmbed's pipeline (its query FDEs, a flat NumPy search over the float32 document FDEs,
     NumPy Chamfer re-rank on float32 tokens);
   * quanta's exhaustive exact Chamfer search (on the index's int8 tokens).
   Memory per document of each, the fastest point of each at recall 0.90 / 0.95 / 0.98 and the
   ratios to FastEmbed and to the exhaustive search.
"""
from __future__ import annotations

import argparse
import time

import numpy as np

from bench import adapters as A
from bench.datasets import cache_dir, recall_at_k
from bench.roof import cpu_name
from bench.timing import best_time

K = 10


def real_tokens(n: int, nq: int):
    """(documents f16 (tokens, 384), offsets, {"short": (tokens, offsets), "long": ...}): nq
    queries of each set (short: <= 8 tokens, long: >= 20), float32."""
    root = cache_dir()

    def load(name):
        try:
            return (np.load(root / f"gcide_tokens_{name}.npy", mmap_mode="r"),
                    np.load(root / f"gcide_tokens_{name}_offsets.npy"))
        except FileNotFoundError:
            raise SystemExit(f"token cache missing in {root}: run python -m bench.build_tokens "
                             f"first") from None

    xb, ob = load("base")
    if n > len(ob) - 1:
        raise SystemExit(f"the cache has {len(ob) - 1} documents")
    ob = ob[:n + 1]
    sets = {}
    for name, file, keep in (("short", "short", lambda m: m <= 8),
                             ("long", "queries", lambda m: m >= 20)):
        x, off = load(file)
        pick = np.flatnonzero(keep(np.diff(off)))[:nq]
        if len(pick) < nq:
            raise SystemExit(f"only {len(pick)} {name} queries in the cache")
        parts = [np.asarray(x[off[i]:off[i + 1]], np.float32) for i in pick]
        sets[name] = (np.concatenate(parts),
                      np.concatenate([[0], np.cumsum([len(p) for p in parts])]).astype(np.int64))
    return xb[:ob[-1]], ob, sets


def clustered_tokens(n: int, nq: int, dim: int = 128, ntopics: int = 2000, seed: int = 0):
    rng = np.random.default_rng(seed)
    topics = rng.standard_normal((ntopics, dim)).astype(np.float32)

    def draw(m, lo, hi):
        lens = rng.integers(lo, hi + 1, m)
        own = rng.integers(0, ntopics, (m, 3))
        pick = own[np.repeat(np.arange(m), lens), rng.integers(0, 3, lens.sum())]
        x = topics[pick] + 0.5 * rng.standard_normal((lens.sum(), dim)).astype(np.float32)
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        return x.astype(np.float32), np.concatenate([[0], np.cumsum(lens)]).astype(np.int64)

    xb, ob = draw(n, 10, 50)
    xq, oq = draw(nq, 32, 32)
    return xb, ob, xq, oq


def split(x, off):
    return [x[off[i]:off[i + 1]] for i in range(len(off) - 1)]


def recall(I, gt):
    return recall_at_k(I, gt, K)


class FastEmbedPipeline:
    """FastEmbed's MUVERA as its users run it: query FDEs by Muvera.process_query, a flat
    NumPy inner-product search over the document FDEs, a NumPy Chamfer re-rank."""

    def __init__(self, muvera, doc_fde, xb, ob):
        self.muvera, self.doc_fde, self.xb, self.ob = muvera, doc_fde, xb, ob

    def search(self, queries, nc):
        qf = np.stack([self.muvera.process_query(q) for q in queries]).astype(np.float32)
        scores = qf @ self.doc_fde.T
        nc = min(nc, scores.shape[1])
        cand = np.argpartition(-scores, nc - 1, axis=1)[:, :nc]
        out = np.empty((len(queries), K), np.int64)
        for i, q in enumerate(queries):
            c = cand[i]
            lens = self.ob[c + 1] - self.ob[c]
            toks = np.concatenate([self.xb[self.ob[j]:self.ob[j + 1]] for j in c])
            sim = q @ toks.T
            starts = np.concatenate([[0], np.cumsum(lens)[:-1]])
            s = np.maximum.reduceat(sim, starts, axis=1).sum(axis=0)
            out[i] = c[np.argsort(-s, kind="stable")[:K]]
        return out


TARGETS = (0.90, 0.95, 0.98)


def fastest_at(points, target):
    """(QPS 1 thread, QPS all threads) of the fastest points reaching `target`, or None."""
    ok = [p for p in points if p[0] >= target]
    return (max(p[1] for p in ok), max(p[2] for p in ok)) if ok else None


def equal_recall_summary(rows):
    """For each target, each pipeline's fastest point at or above it and quanta's ratios to
    FastEmbed and to the exhaustive search."""
    out = ["| recall@10 >= | quanta QPS (1 / all) | FastEmbed | quanta FDE stage | exhaustive | "
           "x FastEmbed (1 / all) | x exhaustive (1 / all) |", "|---|---|---|---|---|---|---|"]
    fmt = lambda b: "-" if b is None else f"{b[0]:,.1f} / {b[1]:,.1f}"  # noqa: E731
    ratio = lambda a, b: "-" if a is None or b is None else \
        f"{a[0] / b[0]:.1f} / {a[1] / b[1]:.1f}"  # noqa: E731
    for target in TARGETS:
        best = {name: fastest_at(pts, target) for name, pts in rows.items()}
        q = best["quanta"]
        out.append(f"| {target:.2f} | {fmt(q)} | {fmt(best['fastembed'])} | "
                   f"{fmt(best.get('quanta FDE'))} | {fmt(best['exhaustive'])} | "
                   f"{ratio(q, best['fastembed'])} | {ratio(q, best['exhaustive'])} |")
    return "\n".join(out)


def encoding_speed(quanta, Muvera, xb, ob, xq, oq, threads):
    dim = xb.shape[1]
    enc = quanta.FDEEncoder(dim, seed=42)
    ref = Muvera(dim, random_seed=42)
    nd = min(2000, len(ob) - 1)
    docs, qs = split(xb, ob[:nd + 1]), split(xq, oq)
    sub_d, sub_q = docs[:300], qs[:300]
    out = {}
    _, t_fe_d = best_time(lambda: [ref.process_document(d) for d in sub_d], reps=1)
    _, t_fe_q = best_time(lambda: [ref.process_query(q) for q in sub_q], reps=1)
    xd, od = xb[:ob[nd]], ob[:nd + 1]
    for t in (1, threads):
        _, td = best_time(lambda: enc.encode_documents(xd, od, threads=t))
        _, tq = best_time(lambda: enc.encode_queries(xq, oq, threads=t))
        out[t] = (nd / td, (len(oq) - 1) / tq)
    diff = max(np.abs(enc.encode_documents(sub_d[:50]) -
                      np.stack([ref.process_document(d) for d in sub_d[:50]])).max(),
               np.abs(enc.encode_queries(sub_q[:50]) -
                      np.stack([ref.process_query(q) for q in sub_q[:50]])).max())
    fe = (len(sub_d) / t_fe_d, len(sub_q) / t_fe_q)
    print(f"\nFDE encoding, {dim}-d tokens, k_sim 5, d_proj 16, r_reps 20 -> {enc.output_dim} dims "
          f"({(ob[nd]) / nd:.1f} tokens/document, {(oq[-1]) / (len(oq) - 1):.1f}/query); "
          f"largest |quanta - FastEmbed| = {diff:.2e}")
    print("| encoder | documents/s | queries/s | x FastEmbed (docs) | x FastEmbed (queries) |")
    print("|---|---:|---:|---:|---:|")
    print(f"| FastEmbed Muvera | {fe[0]:,.0f} | {fe[1]:,.0f} | 1.0 | 1.0 |")
    for t in (1, threads):
        d, q = out[t]
        print(f"| quanta, {t} thread{'s' if t > 1 else ''} | {d:,.0f} | {q:,.0f} | "
              f"{d / fe[0]:.1f} | {q / fe[1]:.1f} |")
    return {"fastembed": fe, "quanta": out}


def sweep_point(search, nq, gt, threads):
    """(recall@10, QPS 1 thread, QPS all threads) of search(threads) -> ids."""
    with A.limit_threads(1):
        ids, t1 = best_time(lambda: search(1), reps=1)
    with A.limit_threads(threads):
        _, ta = best_time(lambda: search(threads), reps=1)
    return recall(ids, gt), nq / t1, nq / ta


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--data", default="real", choices=["real", "clustered"])
    p.add_argument("--sizes", default="20000,100000", help="corpus sizes (documents)")
    p.add_argument("--nq", type=int, default=100, help="queries per set")
    p.add_argument("--hits", default="10,20,50,100", help="token_hits swept (token stage)")
    p.add_argument("--candidates", default="20,50,100,200,500",
                   help="candidates swept (token stage)")
    p.add_argument("--shortlist", default="32,64",
                   help="shortlists swept (candidates scored exactly, picked by the sketch)")
    p.add_argument("--fde-candidates", default="100,300,500,700,1000,2000",
                   help="candidates swept (FDE stages: quanta's and FastEmbed's)")
    p.add_argument("--fde-max", type=int, default=100000,
                   help="largest corpus for quanta's FDE stage (it needs the FDEs twice)")
    p.add_argument("--exhaustive-nq", type=int, default=20,
                   help="queries timed for the exhaustive search (it is slow)")
    p.add_argument("--storage", default="i8", help="token storage of the quanta index")
    p.add_argument("--plot", help="write the recall/QPS chart to this PNG")
    args = p.parse_args(argv)
    A.openblas_coretype_fix()
    import quanta
    from fastembed.postprocess import Muvera

    threads = A.default_threads()
    sizes = [int(s) for s in args.sizes.split(",")]
    hits = [int(c) for c in args.hits.split(",")]
    cands = [int(c) for c in args.candidates.split(",")]
    shortlists = [int(c) for c in args.shortlist.split(",")]
    fde_cands = [int(c) for c in args.fde_candidates.split(",")]
    n_max = max(sizes)
    if args.data == "real":
        xb, ob, sets = real_tokens(n_max, args.nq)
    else:
        xb, ob, xq, oq = clustered_tokens(n_max, args.nq)
        sets = {"long": (xq, oq)}
    dim = xb.shape[1]
    print(f"data: {args.data}, {n_max} documents ({ob[-1]} tokens, {xb.shape[1]}-d), "
          + ", ".join(f"{len(o) - 1} {name} queries ({o[-1] / (len(o) - 1):.1f} tokens each)"
                      for name, (_, o) in sets.items())
          + f"; {threads} threads; quanta {quanta.__version__} simd {quanta.simd_level()}; "
          f"CPU: {cpu_name()}")
    xq, oq = sets["long"]
    with A.limit_threads(1):
        encoding_speed(quanta, Muvera, np.asarray(xb[:ob[min(2000, n_max)]], np.float32),
                       ob[:min(2000, n_max) + 1], xq, oq, threads)

    curves = {}
    for n in sizes:
        obn = ob[:n + 1]
        x = np.ascontiguousarray(xb[:obn[-1]], np.float32)
        # ground truth: exact Chamfer on the cache's own values (f16 decodes exactly)
        truth = quanta._core.TokenStore(dim, "f16" if args.data == "real" else "f32")
        truth.add(x, obn, None, 0)
        gts = {name: truth.search(q, qo, K, 0, None)[1] for name, (q, qo) in sets.items()}
        truth = None
        index = quanta.MultiVectorIndex(dim, seed=42, storage=args.storage)
        t0 = time.perf_counter()
        index.add(x, obn)
        build = time.perf_counter() - t0
        mem = index.memory_breakdown()
        doc_fde = index.fdes(x, obn)
        fde_flat = None
        if n <= args.fde_max:
            fde_flat = quanta.FlatIndex(doc_fde.shape[1], "ip", "bf16")
            fde_flat.add(doc_fde)
        fe = FastEmbedPipeline(Muvera(dim, random_seed=42), doc_fde, x, obn)
        print(f"\n## {n} documents ({obn[-1]} tokens, {obn[-1] / n:.1f} per document)\n")
        print(f"quanta index ({index.index_spec}, tokens {args.storage}): built in {build:.1f} s "
              f"(one add call, {threads} threads); bytes per document: tokens "
              f"{mem['tokens'] / n:,.0f}, sketch {mem['sketch'] / n:,.0f}, token stage "
              f"{mem['first_stage'] / n:,.0f}; the FDEs: "
              f"{doc_fde.shape[1] * 2:,} as bf16 (quanta's FDE stage), "
              f"{doc_fde.shape[1] * 4:,} as float32 (FastEmbed); float32 tokens "
              f"{obn[-1] * dim * 4 / n:,.0f}")
        curves[n] = {}
        for name, (q, qo) in sets.items():
            gt, nq = gts[name], len(qo) - 1
            ne = min(args.exhaustive_nq, nq)
            qe, qeo = q[:qo[ne]], qo[:ne + 1]
            rows = {"exhaustive": [sweep_point(
                lambda t: index.search(qe, qeo, K, exact=True, threads=t).ids, ne, gt[:ne],
                threads)]}
            default = sweep_point(lambda t: index.search(q, qo, K, threads=t).ids, nq, gt, threads)
            rows["quanta"] = [default]
            print(f"\n### {name} queries ({qo[-1] / nq:.1f} tokens each), {n} documents\n")
            print("| pipeline | setting | recall@10 | QPS 1 thread | QPS all threads |")
            print("|---|---|---:|---:|---:|")
            show = lambda who, setting, r: print(  # noqa: E731
                f"| {who} | {setting} | {r[0]:.3f} | {r[1]:,.1f} | {r[2]:,.1f} |")
            show("quanta exhaustive Chamfer", f"{args.storage} tokens, {ne} queries",
                 rows["exhaustive"][0])
            show("quanta MultiVectorIndex", "search() defaults", default)
            for h in hits:
                for c in cands:
                    for s in shortlists:
                        if s >= c:
                            continue
                        r = sweep_point(lambda t: index.search(
                            q, qo, K, token_hits=h, candidates=c, shortlist=s, exact=False,
                            threads=t).ids, nq, gt, threads)
                        rows["quanta"].append(r)
                        show("quanta MultiVectorIndex",
                             f"token_hits {h}, candidates {c}, shortlist {s}", r)
            rows["fastembed"] = []
            queries = split(q, qo)
            for c in fde_cands:
                r = sweep_point(lambda t: fe.search(queries, c), nq, gt, threads)
                rows["fastembed"].append(r)
                show("FastEmbed (NumPy)", f"candidates {c}", r)
            if fde_flat is not None:
                rows["quanta FDE"] = []
                for c in fde_cands:
                    def fde_stage(t, c=c):
                        cand = fde_flat.search(index.fdes(q, qo, queries=True, threads=t), c,
                                               threads=t).ids
                        return index.rerank(q, qo, cand, K, threads=t).ids
                    r = sweep_point(fde_stage, nq, gt, threads)
                    rows["quanta FDE"].append(r)
                    show("quanta FDE stage (Flat bf16)", f"candidates {c}", r)
            print()
            print(equal_recall_summary(rows))
            curves[n][name] = rows
        index = fe = doc_fde = fde_flat = x = None  # free before the next size

    if args.plot:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        names = list(sets)
        fig, axes = plt.subplots(len(names), len(sizes), figsize=(5.5 * len(sizes),
                                 4.2 * len(names)), squeeze=False)
        for j, n in enumerate(sizes):
            for i, name in enumerate(names):
                ax = axes[i][j]
                for who, style, color in (("quanta", "o-", "C0"), ("quanta FDE", "d--", "C1"),
                                          ("fastembed", "s--", "C2"), ("exhaustive", "^", "k")):
                    pts = curves[n][name].get(who)
                    if not pts:
                        continue
                    r = np.array(sorted(pts))
                    # the frontier: the fastest point at each recall or above
                    front = [(a, b) for a, b, _ in r if b >= max(r[r[:, 0] >= a][:, 1])]
                    f = np.array(front)
                    ax.plot(f[:, 0], f[:, 1], style, color=color, label=f"{who}, 1 thread")
                ax.set_yscale("log")
                ax.set_xlabel("recall@10 vs exact Chamfer")
                ax.set_ylabel("queries/s")
                ax.set_title(f"{args.data}, {name} queries: {n} documents")
                ax.grid(alpha=0.3)
                ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(args.plot, dpi=110)
        print(f"\nplot: {args.plot}")


if __name__ == "__main__":
    main()
