"""Seismic-style sparse search: quanta.SparseIndex against pyseismic-lsr on the same data.

    python -m bench.sparse --n 100000 --nq 200

Data: synthetic SPLADE-like vectors: a 30,000-term vocabulary with Zipf-like popularity,
documents of about 120 non-zeros and queries of about 40 drawn around shared topics (so
neighbours exist), log-normal weights. Ground truth: exact inner-product top-10 (quanta's
exhaustive search, tested against SciPy). Both libraries get the same build parameters; the
sweep covers query_cut and heap_factor; QPS at 1 thread (pyseismic-lsr: one search call per
query) and all threads (batch calls), build time and index memory.
"""
from __future__ import annotations

import argparse
import time

import numpy as np

from bench.datasets import recall_at_k


def splade_like(n, nq, dim=30000, doc_nnz=120, q_nnz=40, ntopics=2000, seed=0):
    rng = np.random.default_rng(seed)
    pop = 1.0 / np.arange(1, dim + 1) ** 0.9
    pop /= pop.sum()
    topic_terms = rng.choice(dim, (ntopics, 300), p=pop)

    def draw(m, nnz):
        t = rng.integers(0, ntopics, m)
        half = nnz // 2
        own = topic_terms[t[:, None], rng.integers(0, 300, (m, half))]
        background = rng.choice(dim, (m, nnz - half), p=pop)
        terms = np.concatenate([own, background], axis=1)
        rows, vals = [], []
        for i in range(m):
            u = np.unique(terms[i])
            rows.append(u)
            vals.append(rng.lognormal(-0.5, 0.8, len(u)).astype(np.float32))
        indptr = np.concatenate([[0], np.cumsum([len(r) for r in rows])]).astype(np.int64)
        return indptr, np.concatenate(rows).astype(np.int32), np.concatenate(vals)

    return draw(n, doc_nnz), draw(nq, q_nnz), dim


def rows(csr):
    indptr, indices, data = csr
    return [(indices[indptr[i]:indptr[i + 1]], data[indptr[i]:indptr[i + 1]])
            for i in range(len(indptr) - 1)]


def recall(I, gt):
    """recall@10; ragged result lists are padded with -1."""
    return recall_at_k(np.array([list(r) + [-1] * (10 - len(r)) for r in I]), gt, 10)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--n", type=int, default=100_000)
    p.add_argument("--nq", type=int, default=200)
    p.add_argument("--n-postings", type=int, default=3500)
    p.add_argument("--skip-seismic", action="store_true")
    args = p.parse_args(argv)
    import quanta

    t0 = time.perf_counter()
    docs, queries, dim = splade_like(args.n, args.nq)
    print(f"data: {args.n} documents ({len(docs[1]) / args.n:.0f} nnz), {args.nq} queries "
          f"({len(queries[1]) / args.nq:.0f} nnz), {dim} terms; generated in "
          f"{time.perf_counter() - t0:.0f} s")
    build = dict(n_postings=args.n_postings, centroid_fraction=0.1, min_cluster_size=2,
                 summary_energy=0.4, max_fraction=1.5, doc_cut=15)
    csr_bytes = docs[0].nbytes + docs[1].nbytes + docs[2].nbytes
    qi = quanta.SparseIndex(**build)
    t0 = time.perf_counter()
    qi.add(docs, threads=1)
    qb1 = time.perf_counter() - t0
    qi2 = quanta.SparseIndex(**build)
    t0 = time.perf_counter()
    qi2.add(docs)
    qb_all = time.perf_counter() - t0
    del qi2
    gt = qi.search(queries, 10, exact=True).ids
    print(f"quanta build {qb1:.1f} s (1 thread), {qb_all:.1f} s (all); memory "
          f"{qi.memory_usage / 2**20:.0f} MiB (f32 CSR {csr_bytes / 2**20:.0f} MiB)")

    se = None
    if not args.skip_seismic:
        import seismic
        ds = seismic.SeismicDataset()
        string_type = seismic.get_seismic_string()
        for i, (t, v) in enumerate(rows(docs)):
            ds.add_document(str(i), t.astype(str).astype(string_type), v)
        t0 = time.perf_counter()
        se = seismic.SeismicIndex.build_from_dataset(ds, **build)
        sb = time.perf_counter() - t0
        print(f"pyseismic-lsr build {sb:.1f} s (its default threads), quanta x {sb / qb1:.1f} "
              f"faster on 1 thread")
        q_rows = [(t.astype(str).astype(string_type), v) for t, v in rows(queries)]

    print("| system | query_cut | heap_factor | recall@10 | QPS 1 thread | QPS all threads |")
    print("|---|---:|---:|---:|---:|---:|")
    for qc in (3, 5, 10, 20):
        for hf in (1.0, 0.9, 0.8, 0.7):
            t0 = time.perf_counter()
            I = qi.search(queries, 10, qc, hf, threads=1).ids
            t1 = time.perf_counter() - t0
            t0 = time.perf_counter()
            qi.search(queries, 10, qc, hf)
            ta = time.perf_counter() - t0
            print(f"| quanta | {qc} | {hf} | {recall(I, gt):.3f} | {args.nq / t1:,.0f} | "
                  f"{args.nq / ta:,.0f} |")
            if se is not None:
                t0 = time.perf_counter()
                res = [se.search(str(i), t, v, 10, qc, hf) for i, (t, v) in enumerate(q_rows)]
                s1 = time.perf_counter() - t0
                Is = [[int(d) for _, _, d in r] for r in res]
                t0 = time.perf_counter()
                se.batch_search(np.array([str(i) for i in range(len(q_rows))], dtype=string_type),
                                [t for t, _ in q_rows],
                                [v for _, v in q_rows], 10, qc, hf)
                sa = time.perf_counter() - t0
                print(f"| pyseismic-lsr | {qc} | {hf} | {recall(Is, gt):.3f} | "
                      f"{args.nq / s1:,.0f} | {args.nq / sa:,.0f} |")


if __name__ == "__main__":
    main()
