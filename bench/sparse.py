"""Seismic-style sparse search: quanta.SparseIndex against pyseismic-lsr and BMP on the same data.

    python -m bench.sparse --data synthetic --n 200000 --nq 200 --knn 10 \
        --plot bench/results/sparse_synthetic.png
    python -m bench.sparse --data synthetic --n 1000000 --nq 200 --no-default-search \
        --plot bench/results/sparse_synthetic_1m.png
    python -m bench.sparse --data bm25 --n 180000 --nq 200 --head 0 --plot bench/results/sparse_bm25.png
    python -m bench.sparse --data splade --nq 500 --bmp 32,64 --plot bench/results/sparse_splade.png

Data:
- synthetic: SPLADE-like vectors: a 30,000-term vocabulary with Zipf-like popularity, documents
  of 120 non-zeros and queries of 40 drawn around shared topics (so neighbours exist),
  log-normal weights.
- bm25: BM25 vectors of GCIDE dictionary definitions (apt package dict-gcide): document weights
  tf (k1 + 1) / (tf + k1 (1 - b + b len / avglen)), query weights idf, so the inner product is
  the BM25 score; queries are held-out definitions.
- splade: real SPLADE vectors (splade-tiny) of GCIDE definitions, documents and held-out
  queries, from the cache `python -m bench.build_splade` makes.
``--variant layout=blocks`` adds the blocks layout (block-max pruning over documents in
bisection order), swept over its own grid (``--blocks-query-cuts``, ``--blocks-heap-factors``).
Ground truth: exact inner products (SciPy); recall@10 counts a returned document as correct
when its exact score reaches the true 10th score (ties handled). Both libraries get the same
build parameters (quanta also with summary_cut, summaries from each document's largest
entries); the sweep covers query_cut and heap_factor (each quanta index searched with its
default block order and head=0, every visited document scored whole as the reference does, and
with head=16, documents scored on their 16 largest entries first); QPS, the best of repeated
timings, at 1 thread (pyseismic-lsr: one search call per query) and all threads (batch calls);
build time on 1 thread (pyseismic-lsr in a subprocess with RAYON_NUM_THREADS=1, the only thread
control it obeys) and all threads; index memory. The summary gives, per recall target, each
system's fastest single-thread point reaching it and the ratio to the best peer.
BMP (``--bmp``, block sizes): see bench.bmp_peer for its integer impacts, BP document order
and alpha/beta sweep; its rows put alpha and beta in the query_cut and heap_factor columns.
"""
from __future__ import annotations

import argparse
import ast
import os
import re
import subprocess
import sys
import tempfile
import time

import numpy as np

QUERY_CUTS = (3, 5, 8, 10, 12, 15, 20, 30)
HEAP_FACTORS = (1.0, 0.9, 0.8, 0.7)
# The blocks layout bounds every block over the cut terms: it wants more terms and prunes
# (heap_factor > 1) where the lists layout widens (< 1).
BLOCKS_QUERY_CUTS = (20, 25, 30, 35, 40, 45, 50, 60, 70)
BLOCKS_HEAP_FACTORS = (1.2, 1.1, 1.0, 0.9, 0.8)
TARGETS = (0.90, 0.95, 0.97, 0.99)


def splade_like(n, nq, dim=30000, doc_nnz=120, q_nnz=40, ntopics=2000, seed=0):
    rng = np.random.default_rng(seed)
    pop = 1.0 / np.arange(1, dim + 1) ** 0.9
    pop /= pop.sum()
    cdf = pop.cumsum()
    cdf /= cdf[-1]

    def popular(shape):  # rng.choice(dim, shape, p=pop), draw for draw, without its O(dim) setup
        return cdf.searchsorted(rng.random(shape), side="right")

    topic_terms = popular((ntopics, 300))

    def draw(m, nnz):
        t = rng.integers(0, ntopics, m)
        half = nnz // 2
        rows, vals = [], []
        for i in range(m):
            u = np.unique(topic_terms[t[i], rng.integers(0, 300, half)])
            while len(u) < nnz:  # background terms until the row has nnz distinct terms
                u = np.unique(np.concatenate([u, popular(nnz - len(u))]))
            rows.append(u)
            vals.append(rng.lognormal(-0.5, 0.8, len(u)).astype(np.float32))
        indptr = np.concatenate([[0], np.cumsum([len(r) for r in rows])]).astype(np.int64)
        return indptr, np.concatenate(rows).astype(np.int32), np.concatenate(vals)

    return draw(n, doc_nnz), draw(nq, q_nnz), dim


_STOP = set("a an the of to in and or for on by with as at from is be it its that this which "
            "are was were not any one".split())


def bm25(n, nq, k1=0.9, b=0.4):
    """BM25 term vectors of GCIDE definitions (n documents, nq held-out queries)."""
    from bench.build_embeddings import gcide_texts
    import scipy.sparse as sp
    texts = gcide_texts()
    rng = np.random.default_rng(0)
    pick = rng.permutation(len(texts))[:n + nq]
    toks = [[w for w in re.findall(r"[a-z0-9]+", texts[i].lower()) if w not in _STOP]
            for i in pick]
    from collections import Counter
    df = Counter(w for t in toks[:n] for w in set(t))
    # terms of two or more documents (min_df = 2): 16-bit term ids for both libraries
    vocab = {w: j for j, w in enumerate(sorted(w for w, c in df.items() if c >= 2))}

    def counts(rows):
        indptr, idx, val = [0], [], []
        for t in rows:
            ids, c = np.unique([vocab[w] for w in t if w in vocab], return_counts=True)
            idx.append(ids)
            val.append(c)
            indptr.append(indptr[-1] + len(ids))
        return sp.csr_matrix((np.concatenate(val).astype(np.float32), np.concatenate(idx),
                              np.array(indptr)), shape=(len(rows), len(vocab)))

    D, Q = counts(toks[:n]), counts(toks[n:])
    df = np.bincount(D.indices, minlength=len(vocab))
    idf = np.log(1 + (n - df + 0.5) / (df + 0.5)).astype(np.float32)
    dl = np.diff(D.indptr)
    norm = np.repeat(k1 * (1 - b + b * dl / dl.mean()), dl).astype(np.float32)
    D.data = (D.data * (k1 + 1) / (D.data + norm)).astype(np.float32)
    Q.data = idf[Q.indices]
    keep = np.diff(Q.indptr) > 0
    Q = Q[keep]

    def tup(m):
        return (m.indptr.astype(np.int64), m.indices.astype(np.int32), m.data.astype(np.float32))

    return tup(D), tup(Q), len(vocab)


def scipy_csr(csr, dim):
    """A SciPy CSR matrix of an (indptr, indices, data) triple."""
    import scipy.sparse as sp
    return sp.csr_matrix((csr[2], csr[1], csr[0]), shape=(len(csr[0]) - 1, dim))


def exact_scores(docs, queries, dim):
    return (scipy_csr(queries, dim) @ scipy_csr(docs, dim).T).toarray()


def recall_ties(I, S, k=10):
    """Share of returned ids whose exact score reaches the true k-th score (ties count)."""
    kth = -np.partition(-S, k - 1, axis=1)[:, k - 1]
    hits = 0
    for i, row in enumerate(I):
        row = [d for d in row if d >= 0][:k]
        hits += int(np.sum(S[i, row] >= kth[i] - 1e-5 * abs(kth[i])))
    return hits / (k * len(I))


def csr_rows(csr):
    indptr, indices, data = csr
    return [(indices[indptr[i]:indptr[i + 1]], data[indptr[i]:indptr[i + 1]])
            for i in range(len(indptr) - 1)]


_SEISMIC_BUILD = r"""
import sys, time, seismic
path, out, params = sys.argv[1], sys.argv[2], eval(sys.argv[3])
t0 = time.perf_counter()
cls = seismic.SeismicIndexRaw if int(sys.argv[4]) <= 65536 else seismic.SeismicIndexRawLV
index = cls.build(path, **params)
print("BUILD_SECONDS", time.perf_counter() - t0, flush=True)
index.save(out)
"""


def seismic_build(docs, dim, build, threads, tmp):
    """pyseismic-lsr build in a subprocess (RAYON_NUM_THREADS is read once per process):
    returns (seconds, saved index path)."""
    import quanta
    path = os.path.join(tmp, "docs.bin")
    if not os.path.exists(path):
        quanta.sparse.write_inner_binary(path, docs)
    out = os.path.join(tmp, f"seismic_{threads}")
    env = dict(os.environ, RAYON_NUM_THREADS=str(threads))
    r = subprocess.run([sys.executable, "-c", _SEISMIC_BUILD, path, out, repr(build), str(dim)], env=env,
                       capture_output=True, text=True, check=True)
    secs = float(next(line.split()[1] for line in r.stdout.splitlines()
                      if line.startswith("BUILD_SECONDS")))
    return secs, out


def literal(text):
    """A Python literal (number, True/False) from a command-line setting, else the text."""
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def timed(run, least=0.25):
    """(best seconds of one call, its result), calling run until `least` seconds have passed:
    short batches are timed more than once, the same way for every system."""
    best, out, start = float("inf"), None, time.perf_counter()
    while best == float("inf") or time.perf_counter() - start < least:
        t0 = time.perf_counter()
        out = run()
        best = min(best, time.perf_counter() - t0)
    return best, out


def frontier(pts, col):
    """The points no other point beats in both recall and QPS column `col`, by recall."""
    pts = sorted(pts, key=lambda pt: (-pt[2], -pt[col]))
    out, best = [], -1.0
    for pt in pts:
        if pt[col] > best:
            out.append(pt)
            best = pt[col]
    return out[::-1]


def plot(rows, title, path):
    """Recall@10 vs QPS: every sweep point, and each system's frontier (1 and all threads)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for i, (name, pts) in enumerate(rows.items()):
        color = f"C{i}"
        for col, style, label in ((3, "o-", "1 thread"), (4, "s--", f"{os.cpu_count()} threads")):
            if all(np.isnan(pt[col]) for pt in pts):  # single-thread only (BMP)
                continue
            ax.scatter([pt[2] for pt in pts], [pt[col] for pt in pts], s=8, color=color,
                       alpha=0.35)
            f = frontier(pts, col)
            ax.plot([pt[2] for pt in f], [pt[col] for pt in f], style, color=color,
                    label=f"{name}, {label}")
    ax.set_yscale("log")
    ax.set_xlabel("recall@10")
    ax.set_ylabel("queries per second")
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    print(f"plot: {path}")


def replot(md_path, png_path):
    """Redraws the chart from a results file's sweep table."""
    rows, title = {}, os.path.basename(md_path)
    for line in open(md_path):
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 6 and cells[1].replace(".", "", 1).isdigit():
            rows.setdefault(cells[0], []).append(
                (float(cells[1]), float(cells[2]), float(cells[3]),
                 *(float("nan") if c == "-" else float(c.replace(",", "")) for c in cells[4:])))
        elif line.startswith("data "):
            title = line.split(" (")[0][len("data "):]
    plot(rows, title, png_path)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--data", choices=("synthetic", "bm25", "splade"), default="synthetic")
    p.add_argument("--n", type=int, default=200_000)
    p.add_argument("--nq", type=int, default=200)
    p.add_argument("--n-postings", type=int, default=3500)
    p.add_argument("--values", choices=("f16", "u8"), default="f16")
    p.add_argument("--summary-cut", type=int, default=32,
                   help="also build quanta with this summary_cut (0: only the default build)")
    p.add_argument("--variant", action="append", default=[], metavar="KEY=V,KEY=V",
                   help="also build quanta with these SparseIndex settings (repeatable), e.g. "
                        "n_postings=300,centroid_fraction=0.05")
    p.add_argument("--skip-seismic", action="store_true")
    p.add_argument("--no-default-search", action="store_true",
                   help="time and measure the reference-settings quanta build, then free it "
                        "instead of searching it (memory at 1M documents)")
    p.add_argument("--knn", type=int, default=0,
                   help="also compare kNN-graph refinement: quanta and pyseismic-lsr built "
                        "with this many neighbours, searched with n_knn = it")
    p.add_argument("--head", type=int, default=16,
                   help="also search every quanta index with head=H (0: not)")
    p.add_argument("--query-cuts", default=",".join(map(str, QUERY_CUTS)),
                   help="query_cut values of the sweep (comma-separated)")
    p.add_argument("--blocks-query-cuts", default=",".join(map(str, BLOCKS_QUERY_CUTS)),
                   help="query_cut values of the sweep of layout=blocks builds")
    p.add_argument("--blocks-heap-factors", default=",".join(map(str, BLOCKS_HEAP_FACTORS)),
                   help="heap_factor values of the sweep of layout=blocks builds")
    p.add_argument("--bmp", default="",
                   help="also BMP with these block sizes (comma-separated, e.g. 32,64)")
    p.add_argument("--bmp-order", choices=("bp", "given"), default="bp",
                   help="BMP's document order: BP reordering (its authors' setup) or as given")
    p.add_argument("--plot", help="write the recall/QPS chart to this PNG")
    p.add_argument("--replot", metavar="RESULTS_MD",
                   help="only redraw --plot from a saved results file (bench/results/sparse_*.md)")
    args = p.parse_args(argv)
    if args.replot:
        return replot(args.replot, args.plot)
    import quanta

    t0 = time.perf_counter()
    if args.data == "splade":
        from bench.build_splade import real_splade
        docs, queries, dim, _ = real_splade(args.n, args.nq)
    else:
        docs, queries, dim = (splade_like if args.data == "synthetic" else bm25)(args.n, args.nq)
    args.n, nq = len(docs[0]) - 1, len(queries[0]) - 1
    print(f"data {args.data}: {args.n} documents ({len(docs[1]) / args.n:.1f} nnz), {nq} queries "
          f"({len(queries[1]) / nq:.1f} nnz), {dim} terms; made in "
          f"{time.perf_counter() - t0:.0f} s")
    S = exact_scores(docs, queries, dim)
    build = dict(n_postings=args.n_postings, centroid_fraction=0.1, min_cluster_size=2,
                 summary_energy=0.4, max_fraction=1.5, doc_cut=15)
    csr_bytes = docs[0].nbytes + docs[1].nbytes + docs[2].nbytes
    variants = {"quanta": {}}
    if args.summary_cut:
        variants[f"quanta sc{args.summary_cut}"] = {"summary_cut": args.summary_cut}
    for v in args.variant:
        kv = dict(item.split("=") for item in v.split(","))
        variants[f"quanta {v}"] = {key: literal(val) for key, val in kv.items()}
    if args.knn:  # built on all threads only (the graph searches every document)
        variants[f"quanta sc{args.summary_cut} knn{args.knn}"] = {
            "summary_cut": args.summary_cut or None, "knn": args.knn}
    indexes, build_s = {}, {}
    for name, extra in variants.items():
        times = []
        for threads in ((0,) if "knn" in extra else (1, 0)):
            qi = quanta.SparseIndex(**{**build, "values": args.values, **extra})
            t0 = time.perf_counter()
            qi.add(docs, threads=threads)
            times.append(time.perf_counter() - t0)
        if len(times) == 1:
            times.insert(0, float("nan"))
        print(f"{name} build: {times[0]:.1f} s (1 thread), {times[1]:.1f} s (all "
              f"{os.cpu_count()}); memory {qi.memory_usage / 2**20:.1f} MiB (f32 CSR "
              f"{csr_bytes / 2**20:.1f} MiB, {qi.memory_usage / csr_bytes:.2f}x): " +
              ", ".join(f"{part} {b / 2**20:.1f}" for part, b in qi.memory_breakdown().items()))
        build_s[name] = times
        if not (args.no_default_search and not extra):
            indexes[name] = qi
        del qi

    searchers = {name: (qi, {"head": 0}) for name, qi in indexes.items()}
    if args.head:
        for name, qi in indexes.items():
            searchers[f"{name} head{args.head}"] = (qi, {"head": args.head})
    seismics = {}
    rows = {}
    if not args.skip_seismic:
        import seismic
        with tempfile.TemporaryDirectory() as tmp:
            sb1, _ = seismic_build(docs, dim, build, 1, tmp)
            sb_all, path = seismic_build(docs, dim, build, os.cpu_count(), tmp)
            cls = seismic.SeismicIndexRaw if dim <= 65536 else seismic.SeismicIndexRawLV
            seismics["pyseismic-lsr"] = (cls.load(path), 0)
            fsize = os.path.getsize(path)
            if args.knn:
                sbk, path = seismic_build(docs, dim, {**build, "nknn": args.knn},
                                          os.cpu_count(), tmp)
                seismics[f"pyseismic-lsr knn{args.knn}"] = (cls.load(path), args.knn)
                print(f"pyseismic-lsr knn{args.knn} build: {sbk:.1f} s (all threads)")
            qpath = os.path.join(tmp, "queries.bin")
            quanta.sparse.write_inner_binary(qpath, queries)
            qdata = open(qpath, "rb").read()
        qfile = tempfile.NamedTemporaryFile(suffix=".bin")
        qfile.write(qdata)
        qfile.flush()
        print(f"pyseismic-lsr build: {sb1:.1f} s (1 thread), {sb_all:.1f} s (all); saved index "
              f"{fsize / 2**20:.1f} MiB ({fsize / csr_bytes:.2f}x CSR)")
        for name, (b1, ball) in build_s.items():
            one = "" if b1 != b1 else f"builds {sb1 / b1:.1f}x faster on 1 thread; "
            mem = (f"; memory {indexes[name].memory_usage / fsize:.2f}x pyseismic-lsr's saved "
                   f"index" if name in indexes else "")
            print(f"  {name}: {one}its all-thread build "
                  f"takes 1/{sb1 / ball:.1f} of pyseismic-lsr's single-thread build{mem}")
        q_rows = [(t.astype(np.int32), v.astype(np.float32)) for t, v in csr_rows(queries)]

    print("\n| system | query_cut | heap_factor | recall@10 | QPS 1 thread | QPS all threads |")
    print("|---|---:|---:|---:|---:|---:|")
    sweep = [(int(qc), hf) for qc in args.query_cuts.split(",") for hf in HEAP_FACTORS]
    blocks_sweep = [(int(qc), float(hf)) for qc in args.blocks_query_cuts.split(",")
                    for hf in args.blocks_heap_factors.split(",")]
    sweeps = {name: blocks_sweep if qi.params["layout"] == "blocks" else sweep
              for name, (qi, _) in searchers.items()}
    sweeps.update({name: sweep for name in seismics})

    def record(name, qc, hf, recall, qps1, qps_all):
        rows.setdefault(name, []).append((qc, hf, recall, qps1, qps_all))
        print(f"| {name} | {qc} | {hf} | {recall:.3f} | {qps1:,.0f} | {qps_all:,.0f} |")

    for i in range(max(map(len, sweeps.values()), default=0)):  # the systems' points interleaved
        for name, (qi, kw) in searchers.items():
            if i >= len(sweeps[name]):
                continue
            qc, hf = sweeps[name][i]
            nk = qi.params["knn"]
            t1, I = timed(lambda: qi.search(queries, 10, qc, hf, n_knn=nk, threads=1, **kw).ids)
            ta, _ = timed(lambda: qi.search(queries, 10, qc, hf, n_knn=nk, **kw))
            record(name, qc, hf, recall_ties(I, S), nq / t1, nq / ta)
        for name, (se, nk) in seismics.items():
            if i >= len(sweeps[name]):
                continue
            qc, hf = sweeps[name][i]
            s1, res = timed(lambda: [se.search(t, v, 10, qc, hf, nk, True) for t, v in q_rows])
            Is = [[int(d) for _, d in r] for r in res]
            sa, _ = timed(lambda: se.batch_search(qfile.name, 10, qc, hf, nk, True))
            record(name, qc, hf, recall_ties(Is, S), nq / s1, nq / sa)

    if args.bmp:
        from bench.bmp_peer import ALPHAS, BETAS, BMP
        with tempfile.TemporaryDirectory() as tmp:
            for bsize in map(int, args.bmp.split(",")):
                name = f"BMP b{bsize}"
                b = BMP(docs, bsize, os.path.join(tmp, f"b{bsize}.bmp"), args.bmp_order)
                print(f"{name}: {args.bmp_order} order {b.order_seconds:.1f} s, build "
                      f"{b.build_seconds:.1f} s (1 thread), index file "
                      f"{b.bytes / 2**20:.1f} MiB ({b.bytes / csr_bytes:.2f}x CSR)")
                qd = b.query_dicts(queries)
                for alpha in ALPHAS:
                    for beta in BETAS:
                        t1, I = timed(lambda: b.search(qd, 10, alpha, beta))
                        rows.setdefault(name, []).append(  # no batch API: no all-thread QPS
                            (alpha, beta, recall_ties(I, S), nq / t1, float("nan")))
                        print(f"| {name} | {alpha} | {beta} | {rows[name][-1][2]:.3f} | "
                              f"{nq / t1:,.0f} | - |")

    print("\nBest single-thread QPS reaching each recall@10 target (all-thread QPS at that "
          "point; settings: query_cut, heap_factor or alpha, beta):")
    print("| recall@10 >= | index | QPS 1 / all threads (settings, recall) | best peer: QPS 1 / "
          "all (settings, recall) | x best peer, 1 thread | all threads |")
    print("|---:|---|---:|---:|---:|---:|")

    def fmt(q):
        if not q:
            return "not reached"
        every = "-" if np.isnan(q[4]) else f"{q[4]:,.0f}"
        return f"{q[3]:,.0f} / {every} ({q[0]}, {q[1]}, {q[2]:.3f})"

    for target in TARGETS:
        best = {}
        for name, pts in rows.items():
            ok = [pt for pt in pts if pt[2] >= target]
            best[name] = max(ok, key=lambda pt: pt[3]) if ok else None
        for name in searchers:
            knn = "knn" in name
            peers = [p for p in rows if p not in searchers and ("knn" in p) == knn and best[p]]
            peer = max(peers, key=lambda p: best[p][3], default=None)
            s = best[peer] if peer else None
            q = best.get(name)
            ratio = (f"{q[3] / s[3]:.2f} | " + ("-" if np.isnan(s[4]) else f"{q[4] / s[4]:.2f}")
                     if q and s else "- | -")
            print(f"| {target:.2f} | {name} | {fmt(q)} | {peer or 'none'}: {fmt(s)} | {ratio} |")

    if args.plot:
        plot(rows, f"{args.data}: {args.n:,} documents, {nq} queries", args.plot)


if __name__ == "__main__":
    main()
