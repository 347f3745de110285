"""MUVERA multi-vector retrieval: quanta against FastEmbed's Muvera on the same token sets.

    python -m bench.multivector --data real --sizes 20000,40000 --nq 100 \\
        --plot bench/results/multivector_real.png
    python -m bench.multivector --data clustered --sizes 20000,40000 --nq 100 \\
        --plot bench/results/multivector_clustered.png

Data: ``real`` = all-MiniLM-L6-v2 per-token outputs (384-d, every token L2-normalized) of GCIDE
definitions, built by ``python -m bench.build_tokens`` (queries cut to 32 tokens); ``clustered``
= synthetic token sets (128-d) whose tokens gather around 3 of 2,000 topics per document.

1. FDE encoding throughput, FastEmbed's defaults (k_sim 5, d_proj 16, r_reps 20, seed 42) in
   quanta's compatibility mode: documents/s and queries/s, quanta at 1 thread and all threads,
   FastEmbed (one call per set, NumPy; it has no batch API); the largest difference between the
   two encodings is printed.
2. Per corpus size: ground truth = the exact Chamfer top-10 (quanta's exhaustive search, which
   is tested against NumPy); recall of that top-10 within the FDE top-N (N = 10, 100, 500,
   1000) before re-ranking, and recall@10 after re-ranking N candidates.
3. End to end, recall@10 and QPS at 1 thread and all threads, over a sweep of candidate
   counts: quanta MultiVectorIndex (FDEs in a bf16 flat index, C++ Chamfer re-rank against
   int8 tokens: AMX tiles where the CPU has them; ``--storage``/``--index`` change it),
   FastEmbed's
   pipeline (its query FDEs, flat NumPy search over the same document FDEs, NumPy Chamfer
   re-rank: one matrix product per query over the gathered candidate tokens), and quanta's
   exhaustive exact Chamfer search (float32 tokens: the ground truth; and on the index's own
   tokens). Document FDEs are built once, by quanta (FastEmbed gives the same values, step 1),
   since both pipelines only differ at query time.
"""
from __future__ import annotations

import argparse
import time

import numpy as np

from bench import adapters as A
from bench.datasets import cache_dir, recall_at_k
from bench.timing import best_time

K = 10


def real_tokens(n: int, nq: int):
    root = cache_dir()
    try:
        ob = np.load(root / "gcide_tokens_base_offsets.npy")
        oq = np.load(root / "gcide_tokens_queries_offsets.npy")
        xb = np.load(root / "gcide_tokens_base.npy", mmap_mode="r")
        xq = np.load(root / "gcide_tokens_queries.npy", mmap_mode="r")
    except FileNotFoundError:
        raise SystemExit(f"token cache missing in {root}: run python -m bench.build_embeddings "
                         f"and python -m bench.build_tokens first") from None
    if n > len(ob) - 1 or nq > len(oq) - 1:
        raise SystemExit(f"the cache has {len(ob) - 1} documents and {len(oq) - 1} queries")
    ob, oq = ob[:n + 1], oq[:nq + 1]
    return (np.ascontiguousarray(xb[:ob[-1]], np.float32), ob,
            np.ascontiguousarray(xq[:oq[-1]], np.float32), oq)


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


def recall_within(I, gt, n):
    return float(np.mean([len(set(a[:n]) & set(b[:K])) / K for a, b in zip(I, gt)]))


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


def equal_recall_summary(rows, ex1, ex_all, ex_recall):
    """QPS ratios at equal recall: for each target, the fastest point of each pipeline at or
    above it (quanta's exhaustive search on its own tokens counts as a point too)."""
    out = ["at equal recall@10 (fastest point at or above the target; 1 thread / all threads):"]
    for target in (0.90, 0.95, 0.97):
        best = {}
        for name, pts in rows.items():
            ok = [p for p in pts if p[0] >= target]
            best[name] = (max(p[1] for p in ok), max(p[2] for p in ok)) if ok else None
        if best["quanta"] is None or best["fastembed"] is None:
            out.append(f"  {target:.2f}: not reached by both")
            continue
        q, f = best["quanta"], best["fastembed"]
        ex = f"; exhaustive ({ex_recall:.3f}) x {q[0] / ex1:.1f} / {q[1] / ex_all:.1f}"
        out.append(f"  {target:.2f}: quanta {q[0]:,.1f} / {q[1]:,.1f} QPS, FastEmbed {f[0]:,.1f} / "
                   f"{f[1]:,.1f}: x {q[0] / f[0]:.1f} / {q[1] / f[1]:.1f}{ex}")
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


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--data", default="real", choices=["real", "clustered"])
    p.add_argument("--sizes", default="20000,40000", help="corpus sizes (documents)")
    p.add_argument("--nq", type=int, default=100)
    p.add_argument("--candidates", default="20,50,100,200,500,700,1000")
    p.add_argument("--storage", default="i8", help="token storage of the quanta index")
    p.add_argument("--index", default="Flat(bf16)", help="inner FDE index spec")
    p.add_argument("--plot", help="write the recall/QPS chart to this PNG")
    args = p.parse_args(argv)
    A.openblas_coretype_fix()
    import quanta
    from fastembed.postprocess import Muvera

    threads = A.default_threads()
    sizes = [int(s) for s in args.sizes.split(",")]
    cands = [int(c) for c in args.candidates.split(",")]
    n_max = max(sizes)
    if args.data == "real":
        xb, ob, xq, oq = real_tokens(n_max, args.nq)
    else:
        xb, ob, xq, oq = clustered_tokens(n_max, args.nq)
    queries = split(xq, oq)
    print(f"data: {args.data}, {n_max} documents ({ob[-1]} tokens, {xb.shape[1]}-d), "
          f"{args.nq} queries ({oq[-1]} tokens); {threads} threads; quanta {quanta.__version__} "
          f"simd {quanta.simd_level()}")
    with A.limit_threads(1):
        encoding_speed(quanta, Muvera, xb, ob, xq, oq, threads)

    curves = {}
    for n in sizes:
        obn = ob[:n + 1]
        xbn = xb[:obn[-1]]
        dim = xb.shape[1]
        exact = quanta.MultiVectorIndex(dim, seed=42, storage="f32", index=args.index)
        exact.add(xbn, obn)
        index = quanta.MultiVectorIndex(dim, seed=42, storage=args.storage, index=args.index)
        t0 = time.perf_counter()
        index.add(xbn, obn)
        build = time.perf_counter() - t0
        (_, gt), t_ex_all = best_time(lambda: exact.search(xq, oq, K, exact=True), reps=1)
        _, t_ex_1 = best_time(lambda: exact.search(xq, oq, K, exact=True, threads=1), reps=1)
        (_, gt_s), t_exs_all = best_time(lambda: index.search(xq, oq, K, exact=True), reps=1)
        _, t_exs_1 = best_time(lambda: index.search(xq, oq, K, exact=True, threads=1), reps=1)
        fq = index.fdes(xq, oq, queries=True)
        fde_ids = index._fde_index.search(fq, max(cands + [1000])).ids
        raw = xbn.nbytes + obn.nbytes
        print(f"\n## {n} documents ({obn[-1]} tokens): index built in {build:.1f} s "
              f"(1 add call, {threads} threads), {index.memory_usage / 2**20:,.0f} MiB: tokens "
              f"{args.storage} + FDEs {args.index} (the float32 tokens alone: {raw / 2**20:,.0f} MiB)")
        print("FDE top-N recall of the exact Chamfer top-10 (before re-rank): " + ", ".join(
            f"N={c}: {recall_within(fde_ids, gt, c):.3f}" for c in [10, 100, 500, 1000]))
        doc_fde = index.fdes(xbn, obn)
        fe = FastEmbedPipeline(Muvera(dim, random_seed=42), doc_fde, xbn, obn)
        print("| pipeline | candidates | recall@10 | QPS 1 thread | QPS all threads | "
              "x FastEmbed (1 thread) | x FastEmbed (all) | x exhaustive f32 (1 thread) |")
        print("|---|---:|---:|---:|---:|---:|---:|---:|")
        ex1 = args.nq / t_ex_1
        print(f"| quanta exhaustive Chamfer, f32 tokens | all | 1.000 | {ex1:,.1f} | "
              f"{args.nq / t_ex_all:,.1f} | | | 1.0 |")
        print(f"| quanta exhaustive Chamfer, {args.storage} tokens | all | {recall(gt_s, gt):.3f} | "
              f"{args.nq / t_exs_1:,.1f} | {args.nq / t_exs_all:,.1f} | | | "
              f"{t_ex_1 / t_exs_1:.1f} |")
        rows = {"quanta": [], "fastembed": []}
        for c in cands:
            with A.limit_threads(1):
                ids, t_fe = best_time(lambda: fe.search(queries, c), reps=1)
            r_fe = recall(ids, gt)
            with A.limit_threads(threads):
                _, t_fe_all = best_time(lambda: fe.search(queries, c), reps=1)
            res1, t1 = best_time(lambda: index.search(xq, oq, K, candidates=c, threads=1), reps=1)
            _, ta = best_time(lambda: index.search(xq, oq, K, candidates=c), reps=1)
            r_q = recall(res1.ids, gt)
            rows["quanta"].append((r_q, args.nq / t1, args.nq / ta))
            rows["fastembed"].append((r_fe, args.nq / t_fe, args.nq / t_fe_all))
            print(f"| FastEmbed (NumPy) | {c} | {r_fe:.3f} | {args.nq / t_fe:,.1f} | "
                  f"{args.nq / t_fe_all:,.1f} | 1.0 | 1.0 | {args.nq / t_fe / ex1:.1f} |")
            print(f"| quanta MultiVectorIndex | {c} | {r_q:.3f} | {args.nq / t1:,.1f} | "
                  f"{args.nq / ta:,.1f} | {t_fe / t1:.1f} | {t_fe_all / ta:.1f} | "
                  f"{args.nq / t1 / ex1:.1f} |")
        print(equal_recall_summary(rows, args.nq / t_exs_1, args.nq / t_exs_all, recall(gt_s, gt)))
        curves[n] = (rows, ex1, args.nq / t_exs_1, recall(gt_s, gt))
        index = exact = fe = doc_fde = None  # free before the next size

    if args.plot:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        fig, axes = plt.subplots(1, len(sizes), figsize=(6 * len(sizes), 4.5), squeeze=False)
        for ax, n in zip(axes[0], sizes):
            rows, ex1, exs1, exs_recall = curves[n]
            for name, style in (("quanta", "o-"), ("fastembed", "s--")):
                r = np.array(rows[name])
                ax.plot(r[:, 0], r[:, 1], style, label=f"{name} 1 thread")
            ax.plot([1.0], [ex1], "k^", label="quanta exhaustive f32, 1 thread")
            ax.plot([exs_recall], [exs1], "kv", label=f"quanta exhaustive {args.storage}, 1 thread")
            ax.set_yscale("log")
            ax.set_xlabel("recall@10 vs exact Chamfer")
            ax.set_ylabel("queries/s")
            ax.set_title(f"{args.data}: {n} documents")
            ax.grid(alpha=0.3)
            ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(args.plot, dpi=110)
        print(f"\nplot: {args.plot}")


if __name__ == "__main__":
    main()
