"""Seismic-style sparse index: exhaustive equality without pruning, recall trends, persistence,
batch == single, bad input."""
import gc
import pickle

import numpy as np
import pytest

import quanta
from conftest import recall_at_k

sp = pytest.importorskip("scipy.sparse")


def splade_like(n, nq, dim=3000, doc_nnz=50, q_nnz=16, ntopics=60, seed=0):
    """Zipf-popular terms, documents and queries drawn around topics, exponential weights."""
    rng = np.random.default_rng(seed)
    pop = 1.0 / np.arange(1, dim + 1) ** 0.8
    pop /= pop.sum()
    topics = [rng.choice(dim, 150, replace=False, p=pop) for _ in range(ntopics)]

    def draw(m, nnz):
        rows = []
        for _ in range(m):
            t = topics[rng.integers(ntopics)]
            terms = np.unique(np.concatenate([rng.choice(t, nnz // 2), rng.choice(dim, nnz // 2, p=pop)]))
            rows.append((terms, rng.exponential(1.0, len(terms)).astype(np.float32)))
        indptr = np.concatenate([[0], np.cumsum([len(r[0]) for r in rows])])
        return sp.csr_matrix((np.concatenate([r[1] for r in rows]),
                              np.concatenate([r[0] for r in rows]), indptr), shape=(m, dim))

    return draw(n, doc_nnz), draw(nq, q_nnz)


def exact_topk(X, Q, k):
    """NumPy truth on the f16-rounded document values the index stores."""
    Xr = X.copy()
    Xr.data = Xr.data.astype(np.float16).astype(np.float32)
    s = (Q @ Xr.T).toarray().astype(np.float64)
    order = np.argsort(-s, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(s, order, 1), order


def recall(I, I_true):
    return recall_at_k(np.asarray(I), np.asarray(I_true))


@pytest.fixture(scope="module")
def data():
    return splade_like(3000, 60)


def test_exhaustive_search_matches_numpy(data):
    X, Q = data
    index = quanta.SparseIndex(n_postings=100)
    index.add(X)
    D, I = index.search(Q, k=10, exact=True)
    Dt, It = exact_topk(X, Q, 10)
    np.testing.assert_allclose(D, Dt, rtol=1e-4, atol=1e-4)
    assert recall(I, It) >= 0.99  # only float near-ties may swap


def test_one_query_calls_reuse_scratch_across_indexes(data):
    """One query per call reuses each thread's scratch (dense query, marks) across calls and
    indexes of any size: results equal a batch, whatever was searched in between."""
    X, Q = data
    small, wide = quanta.SparseIndex(n_postings=100), quanta.SparseIndex(n_postings=100, dim=70000)
    small.add(X[:500])
    wide.add(X)  # dim > 65536: u32 term ids, a dense query of dim + 1 floats
    want = {id(ix): ix.search(Q, 10, 8, 0.9, threads=1) for ix in (small, wide)}
    for i in range(Q.shape[0]):
        for ix in (wide, small, wide):  # alternate: sizes and epochs interleave
            got = ix.search(Q[i], 10, 8, 0.9, threads=1)
            np.testing.assert_array_equal(got.ids[0], want[id(ix)].ids[i])
            np.testing.assert_array_equal(got.distances[0], want[id(ix)].distances[i])


@pytest.mark.parametrize("values", ["f16", "u8"])
def test_forward_dot_products_every_simd_level(simd_level, values):
    """The scoring kernels (gathers of the dense query) against SciPy, with documents longer
    and shorter than a vector and term ids over the whole 16-bit range; u32 ids (vocabularies
    over 65,536 terms) take the scalar path."""
    rng = np.random.default_rng(3)
    for dim in (70_000, 65_536, 40):
        X = sp.random(300, dim, density=min(1.0, 37 / dim), format="csr", dtype=np.float32,
                      random_state=rng)
        X.data = rng.uniform(0.01, 3.0, X.nnz).astype(np.float32)
        Q = sp.random(5, dim, density=min(1.0, 900 / dim), format="csr", dtype=np.float32,
                      random_state=rng)
        index = quanta.SparseIndex(n_postings=5, values=values)
        index.add(X)
        D, I = index.search(Q, 300, exact=True)
        Xr = X.copy()
        if values == "f16":
            Xr.data = Xr.data.astype(np.float16).astype(np.float32)
        else:  # u8 times each row's max / 255
            for r in range(Xr.shape[0]):
                row = Xr.data[Xr.indptr[r]:Xr.indptr[r + 1]]
                if len(row):
                    s = row.max() / 255
                    row[:] = np.rint(row / s) * s
        S = (Q @ Xr.T).toarray()
        got = np.full_like(S, np.nan)
        np.put_along_axis(got, np.where(I < 0, 0, I), D, 1)
        np.testing.assert_allclose(got, S, rtol=2e-5, atol=2e-5)


def test_no_pruning_exact_summaries_equal_exhaustive(data):
    """Every posting kept, summaries whole (quantized upward: upper bounds), every query term,
    heap_factor 1: a block is skipped only when no document in it can enter the top-k."""
    X, Q = data
    index = quanta.SparseIndex(n_postings=10**6, max_fraction=10.0, summary_energy=1.0)
    index.add(X)
    assert index._index.npostings == X.nnz
    De, Ie = index.search(Q, k=10, exact=True)
    for order in ("score", "list"):
        D, I = index.search(Q, k=10, query_cut=10**6, heap_factor=1.0, head=0, order=order)
        np.testing.assert_allclose(D, De, rtol=1e-5, atol=1e-5)
        assert recall(I, Ie) >= 0.99


def test_recall_rises_with_query_cut_and_lower_heap_factor(data):
    X, Q = data
    index = quanta.SparseIndex(n_postings=60, summary_energy=0.4)
    index.add(X)
    _, It = index.search(Q, k=10, exact=True)
    for order in ("score", "list"):
        by_cut = [recall(index.search(Q, 10, qc, 0.9, order=order).ids, It)
                  for qc in (1, 3, 6, 12)]
        by_hf = [recall(index.search(Q, 10, 4, hf, order=order).ids, It)
                 for hf in (1.2, 1.0, 0.8, 0.5)]
        assert all(a <= b + 0.01 for a, b in zip(by_cut, by_cut[1:])), (order, by_cut)
        assert all(a <= b + 0.01 for a, b in zip(by_hf, by_hf[1:])), (order, by_hf)
        assert by_cut[-1] > by_cut[0] and by_cut[-1] >= 0.9


def test_u8_values_and_inputs(data):
    X, Q = data
    a = quanta.SparseIndex(n_postings=100, values="u8")
    a.add((X.indptr, X.indices, X.data))  # the tuple form
    _, It = exact_topk(X, Q, 10)
    assert recall(a.search(Q, 10, exact=True).ids, It) >= 0.95
    assert a.memory_usage > 0 and a.ntotal == X.shape[0]


LAYOUTS = {"lists": dict(n_postings=80), "blocks": dict(layout="blocks", block_size=4)}


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_batch_threads_and_persistence(data, tmp_path, layout):
    X, Q = data
    index = quanta.SparseIndex(**LAYOUTS[layout])
    index.add(X, threads=2)
    other = quanta.SparseIndex(**LAYOUTS[layout])
    other.add(X, threads=1)  # the build does not depend on the thread count
    D, I = index.search(Q, 10, 5, 0.8, threads=2)
    D1, I1 = other.search(Q, 10, 5, 0.8, threads=1)
    np.testing.assert_array_equal(I, I1)
    np.testing.assert_array_equal(D, D1)
    for i in (0, 7, 31):  # batch == one query at a time, in query order
        d, j = index.search(Q[i], 10, 5, 0.8)
        np.testing.assert_array_equal(j[0], I[i])
    index.save(tmp_path / "s.qnt")
    for back in (quanta.load(tmp_path / "s.qnt"), quanta.load(tmp_path / "s.qnt", mmap=True),
                 pickle.loads(pickle.dumps(index))):
        Db, Ib = back.search(Q, 10, 5, 0.8)
        np.testing.assert_array_equal(Ib, I)
        np.testing.assert_array_equal(Db, D)
    mapped = quanta.load(tmp_path / "s.qnt", mmap=True)
    assert mapped._index.borrowed  # views, not copies
    mapped.compact()  # nothing to compact: the index keeps viewing the file, kept alive
    gc.collect()
    assert mapped._index.borrowed
    np.testing.assert_array_equal(mapped.search(Q, 10, 5, 0.8).ids, I)
    # save writes from read-only views of the native arrays (no second copy), which keep
    # the native index alive
    views, copies = index._index.state(view=True), index._index.state()
    assert views.keys() == copies.keys()
    native, index._index = index._index, None
    del native
    for name, v in views.items():
        np.testing.assert_array_equal(v, copies[name])
        assert not v.flags.writeable or v.size == 0
    raw = (tmp_path / "s.qnt").read_bytes()
    (tmp_path / "bad.qnt").write_bytes(raw[: len(raw) // 3])
    with pytest.raises(quanta.FormatError):
        quanta.load(tmp_path / "bad.qnt")


def test_corrupt_mapped_contents_give_errors_or_clamped_reads(data, tmp_path):
    """A loaded file is checked whole; a memory-mapped one only in its offsets (so the first
    query need not read it all), and the search clamps what it reads: no crash either way."""
    X, Q = data
    index = quanta.SparseIndex(n_postings=80)
    index.add(X)
    index.save(tmp_path / "s.qnt")
    st = index._index.state()
    raw = bytearray((tmp_path / "s.qnt").read_bytes())
    for name in ("postings", "comp16", "sblock"):
        a = st[name]
        at = bytes(raw).find(a.tobytes()[:64])
        assert at > 0
        bad = bytearray(raw)
        bad[at:at + 64] = b"\xff" * 64  # huge document numbers / term ids / block numbers
        (tmp_path / "c.qnt").write_bytes(bytes(bad))
        if name != "comp16":  # u16 term ids cannot leave the 65,536-entry query
            with pytest.raises(quanta.FormatError):
                quanta.load(tmp_path / "c.qnt")
        mapped = quanta.load(tmp_path / "c.qnt", mmap=True)
        D, I = mapped.search(Q, 10, 5, 0.8)
        assert ((I >= -1) & (I < X.shape[0])).all()


def test_file_formats(data, tmp_path):
    """The Seismic tools' inner binary format and JSONL rows build the same index as CSR."""
    X, Q = data
    base = quanta.SparseIndex(n_postings=80)
    base.add(X)
    D, I = base.search(Q, 10, 5, 0.8)
    quanta.sparse.write_inner_binary(tmp_path / "docs.bin", X)
    back = quanta.sparse.read_inner_binary(tmp_path / "docs.bin")
    for a, b in zip(back, (X.indptr, X.indices, X.data)):
        np.testing.assert_array_equal(a, b)
    from_bin = quanta.SparseIndex(n_postings=80, dim=X.shape[1])
    from_bin.add(tmp_path / "docs.bin")
    np.testing.assert_array_equal(from_bin.search(Q, 10, 5, 0.8).ids, I)
    raw = (tmp_path / "docs.bin").read_bytes()
    (tmp_path / "cut.bin").write_bytes(raw[:-12])
    with pytest.raises(quanta.FormatError):
        quanta.sparse.read_inner_binary(tmp_path / "cut.bin")

    import json
    def write_jsonl(path, M):
        with open(path, "w") as f:
            for r in range(M.shape[0]):
                row = M[r]
                vec = {f"t{j:05d}": float(v) for j, v in zip(row.indices, row.data)}
                f.write(json.dumps({"id": r, "content": "", "vector": vec}) + "\n")
    write_jsonl(tmp_path / "docs.jsonl", X)
    write_jsonl(tmp_path / "queries.jsonl", Q)
    js = quanta.SparseIndex(n_postings=80)
    js.add(tmp_path / "docs.jsonl")
    # the vocabulary is the sorted token set: the same order as the ids when every term occurs
    used = np.unique(X.indices)
    assert js.vocabulary == [f"t{j:05d}" for j in used]
    Dj, Ij = js.search(tmp_path / "queries.jsonl", 10, exact=True)
    De, Ie = base.search(Q, 10, exact=True)
    np.testing.assert_allclose(Dj, De, rtol=1e-5, atol=1e-6)
    js.save(tmp_path / "js.qnt")
    assert quanta.load(tmp_path / "js.qnt").vocabulary == js.vocabulary
    (tmp_path / "bad.jsonl").write_text('{"id": 1, "vector": [1, 2]}\n')
    with pytest.raises(quanta.FormatError):
        quanta.SparseIndex().add(tmp_path / "bad.jsonl")


def test_bad_input():
    index = quanta.SparseIndex(n_postings=10)
    ok = (np.array([0, 2, 3]), np.array([1, 4, 2]), np.array([0.5, 1.0, 2.0], np.float32))
    with pytest.raises(ValueError, match="empty"):
        index.search(ok, 3)
    with pytest.raises(ValueError, match="negative"):
        quanta.SparseIndex().add((np.array([0, 2]), np.array([1, 4]), np.array([0.5, -1.0])))
    with pytest.raises(ValueError, match="non-finite"):
        quanta.SparseIndex().add((np.array([0, 2]), np.array([1, 4]), np.array([0.5, np.nan])))
    with pytest.raises(ValueError, match="unsorted"):
        quanta.SparseIndex().add((np.array([0, 2]), np.array([4, 1]), np.array([0.5, 1.0])))
    with pytest.raises(ValueError, match="indptr"):
        quanta.SparseIndex().add((np.array([0, 5]), np.array([4, 1]), np.array([0.5, 1.0])))
    with pytest.raises(TypeError):
        quanta.SparseIndex().add(np.ones((3, 3)))
    with pytest.raises(ValueError, match="summary_energy"):
        quanta.SparseIndex(summary_energy=0.0)
    with pytest.raises(ValueError, match="knn"):
        quanta.SparseIndex(knn=-1)
    index.add(ok)
    with pytest.raises(ValueError, match="ids"):  # a failed add keeps what is stored
        index.add(ok, ids=[1, 2, 3, 4, 5, 6, 7])
    assert index.ntotal == len(ok[0]) - 1
    with pytest.raises(ValueError, match="beyond"):
        index.search((np.array([0, 1]), np.array([9]), np.array([1.0])), 2)
    with pytest.raises(ValueError, match="heap_factor"):
        index.search(ok, 2, heap_factor=0)
    with pytest.raises(ValueError, match="query_cut"):
        index.search(ok, 2, query_cut=0)
    with pytest.raises(ValueError, match="n_knn"):
        index.search(ok, 2, n_knn=1)  # built without a graph
    with pytest.raises(ValueError, match="order"):
        index.search(ok, 2, order="random")
    with pytest.raises(ValueError, match="layout"):
        quanta.SparseIndex(layout="graph")
    with pytest.raises(ValueError, match="layout"):
        quanta._core.SparseIndex.search_defaults("graph")
    with pytest.raises(ValueError, match="block_size"):
        quanta.SparseIndex(layout="blocks", block_size=0)
    # empty documents are kept (they score 0); k beyond the index pads with -1
    empty = quanta.SparseIndex()
    empty.add((np.array([0, 1, 1, 2]), np.array([3, 5]), np.array([1.0, 2.0], np.float32)))
    D, I = empty.search((np.array([0, 1]), np.array([5]), np.array([1.0])), 5, exact=True)
    assert I[0, 0] == 2 and (I[0, 3:] == -1).all()


def test_summary_cut_and_progress(data, tmp_path, capsys):
    """summary_cut builds summaries from each document's largest entries: fewer entries, recall
    close to the full summaries'; it is saved with the index. progress=True reports on stderr."""
    X, Q = data
    full = quanta.SparseIndex(n_postings=60)
    full.add(X)
    cut = quanta.SparseIndex(n_postings=60, summary_cut=8)
    cut.add(X, progress=True)
    assert "SparseIndex build" in capsys.readouterr().err
    assert cut._index.nsummary_entries < 0.7 * full._index.nsummary_entries
    assert cut.memory_usage < full.memory_usage
    _, It = full.search(Q, 10, exact=True)
    r_full = recall(full.search(Q, 10, 8, 0.9).ids, It)
    r_cut = recall(cut.search(Q, 10, 8, 0.9).ids, It)
    assert r_cut >= r_full - 0.1 and r_cut >= 0.8, (r_cut, r_full)
    cut.save(tmp_path / "c.qnt")
    back = quanta.load(tmp_path / "c.qnt")
    assert back.params["summary_cut"] == 8
    np.testing.assert_array_equal(back.search(Q, 10, 8, 0.9).ids, cut.search(Q, 10, 8, 0.9).ids)
    with pytest.raises(ValueError, match="summary_cut"):
        quanta.SparseIndex(summary_cut=0)


def test_knn_graph(data, tmp_path):
    """The graph holds each document's near neighbours (by the index's own search), and
    evaluating the results' neighbours never lowers recall; it is saved with the index."""
    X, Q = data
    index = quanta.SparseIndex(n_postings=40, knn=8)
    index.add(X)
    graph = np.asarray(index._index.state()["knn"]).reshape(X.shape[0], 8)
    assert (graph < X.shape[0]).mean() > 0.99
    _, Inn = index.search(X[:200], 9, exact=True)  # true neighbours, the document first
    hits = np.mean([len(set(graph[d]) & set(Inn[d, 1:])) / 8 for d in range(200)])
    assert hits > 0.7, hits
    _, It = index.search(Q, 10, exact=True)
    base = [recall(index.search(Q, 10, qc, 0.9).ids, It) for qc in (1, 2, 4)]
    refined = [recall(index.search(Q, 10, qc, 0.9, n_knn=8).ids, It) for qc in (1, 2, 4)]
    assert all(r >= b for r, b in zip(refined, base)) and refined[0] > base[0], (base, refined)
    index.save(tmp_path / "g.qnt")
    for back in (quanta.load(tmp_path / "g.qnt"), quanta.load(tmp_path / "g.qnt", mmap=True)):
        np.testing.assert_array_equal(back.search(Q, 10, 2, 0.9, n_knn=8).ids,
                                      index.search(Q, 10, 2, 0.9, n_knn=8).ids)
    with pytest.raises(ValueError, match="n_knn"):
        index.search(Q, 10, n_knn=9)


def test_head_first_scoring(data):
    """Rows are stored heaviest first; head scores a document on that prefix first. With every
    partial score kept (rerank >= the collection) or a head covering whole rows, results equal
    full scoring; with a head of 12-16 entries (of 50) and the default rerank, recall stays
    within a point of it."""
    X, Q = data
    index = quanta.SparseIndex(n_postings=60)
    index.add(X)
    st = index._index.state()
    vals = np.asarray(st["val16"]).view(np.float16).astype(np.float32)
    ptr = np.asarray(st["doc_ptr"])
    for d in range(0, X.shape[0], 97):
        row = vals[ptr[d]:ptr[d + 1]]
        assert (np.diff(row) <= 0).all()
        np.testing.assert_allclose(np.sort(row), np.sort(X[d].data.astype(np.float16)))
    full = index.search(Q, 10, 8, 0.9, head=0)
    np.testing.assert_array_equal(index.search(Q, 10, 8, 0.9).ids, full.ids)  # the default
    for kw in (dict(head=4, rerank=X.shape[0]), dict(head=X.getnnz(axis=1).max())):
        got = index.search(Q, 10, 8, 0.9, **kw)
        np.testing.assert_allclose(got.distances, full.distances, rtol=1e-5, atol=1e-5)
        assert recall(got.ids, full.ids) >= 0.99
    _, It = index.search(Q, 10, exact=True)
    r_full = recall(full.ids, It)
    for head in (12, 16):
        r = recall(index.search(Q, 10, 8, 0.9, head=head).ids, It)
        assert r >= r_full - 0.01, (head, r, r_full)
    # short heads lose results, fewer the more partial scores are kept: the gate is real
    by_rerank = [recall(index.search(Q, 10, 8, 0.9, head=4, rerank=r).ids, It)
                 for r in (10, 30, 100)]
    assert by_rerank[0] < by_rerank[1] <= by_rerank[2] + 0.01 and by_rerank[0] < r_full
    with pytest.raises(ValueError, match="head"):
        index.search(Q, 10, head=-1)
    with pytest.raises(ValueError, match="rerank"):
        index.search(Q, 10, head=4, rerank=5)


def test_without_posting_offsets(data, tmp_path):
    """posting_offsets=False: 4 bytes less per posting, the same results; saved with the index."""
    X, Q = data
    a = quanta.SparseIndex(n_postings=60)
    a.add(X)
    b = quanta.SparseIndex(n_postings=60, posting_offsets=False)
    b.add(X)
    assert a.memory_usage - b.memory_usage == 4 * a._index.npostings
    for kw in (dict(), dict(order="list", head=0), dict(exact=True)):
        np.testing.assert_array_equal(b.search(Q, 10, 6, 0.9, **kw).ids,
                                      a.search(Q, 10, 6, 0.9, **kw).ids)
    b.save(tmp_path / "b.qnt")
    back = quanta.load(tmp_path / "b.qnt", mmap=True)
    assert back.params["posting_offsets"] is False and back.memory_usage == b.memory_usage
    np.testing.assert_array_equal(back.search(Q, 10, 6, 0.9).ids, a.search(Q, 10, 6, 0.9).ids)


# -- the engine contract: ids, filters, removal, appending add ----------------------------------

def _truth_over(X, Q, rows, ids, k):
    """Exhaustive top-k over the given rows, as (scores, ids)."""
    D, order = exact_topk(X[rows], Q, k)
    return D, ids[rows][order]


def _unpruned(layout):
    """An index and search settings that prune nothing: every posting and whole summaries
    (lists), or every query term with heap_factor just below 1 (blocks, whose bounds are
    exact but for the 8-bit rounding of the query weights)."""
    if layout == "lists":
        return (quanta.SparseIndex(n_postings=10**6, max_fraction=10.0, summary_energy=1.0),
                dict(query_cut=10**6, heap_factor=1.0, head=0))
    return (quanta.SparseIndex(layout="blocks", block_size=4),
            dict(query_cut=10**6, heap_factor=0.97, head=0))


@pytest.mark.parametrize("layout", ["lists", "blocks"])
def test_ids_filters_and_exact_fallback(data, layout):
    X, Q = data
    n = X.shape[0]
    ids = np.arange(n, dtype=np.int64) * 5 + 11
    index, nopr = _unpruned(layout)
    index.add(X, ids=ids)  # nopr: no pruning, equals exhaustive
    rng = np.random.default_rng(2)
    for nallowed in (1500, 200, 20):  # 20 <= n / 64: scored directly
        rows = np.sort(rng.choice(n, nallowed, replace=False))
        D, I = index.search(Q, k=10, filter=ids[rows], **nopr)
        Dt, It = _truth_over(X, Q, rows, ids, 10)
        np.testing.assert_allclose(D, Dt, rtol=1e-4, atol=1e-4)
        assert recall(I, It) >= 0.99 and np.isin(I[I >= 0], ids[rows]).all()
        # approximate settings still return only allowed ids, k of them
        D, I = index.search(Q, k=10, filter=quanta.Filter.ids(ids[rows]))
        assert (I >= 0).all() and np.isin(I, ids[rows]).all()
    # per-query filters and a deny-list
    per_q = [ids[i::Q.shape[0]] for i in range(Q.shape[0])]
    _, I = index.search(Q, k=5, filter=per_q, exact=True)
    assert all(np.isin(I[i], per_q[i]).all() for i in range(Q.shape[0]))
    _, I0 = index.search(Q, k=5, exact=True)
    _, I = index.search(Q, k=5, exact=True, filter=~quanta.Filter.ids(np.unique(I0)))
    assert not np.isin(I, I0).any()
    _, I = index.search(Q, k=5, filter=[])
    assert (I == -1).all()


@pytest.mark.parametrize("layout", ["lists", "blocks"])
def test_remove_append_compact_and_persistence(data, tmp_path, layout):
    X, Q = data
    n = X.shape[0]
    ids = np.arange(n, dtype=np.int64) + 1000
    index, nopr = _unpruned(layout)
    first = 2000
    index.add(X[:first], ids=ids[:first])
    assert index.pending == 0 and index.native.ndocs == first
    index.add(X[first:], ids=ids[first:])  # appended: the delta part
    assert index.pending == n - first and index.native.ndocs == first
    assert index.ntotal == n and index.contains(ids).all()
    D, I = index.search(Q, k=10, exact=True)
    Dt, It = _truth_over(X, Q, np.arange(n), ids, 10)
    np.testing.assert_allclose(D, Dt, rtol=1e-4, atol=1e-4)
    gone = np.unique(I[:, :3])
    assert index.remove(gone) == len(gone) and index.remove(gone) == 0
    assert index.ntotal == n - len(gone) and gone[0] not in index
    keep = np.flatnonzero(~np.isin(ids, gone))
    Dt, It = _truth_over(X, Q, keep, ids, 10)
    for approx in (False, True):
        D, I = index.search(Q, k=10, exact=not approx, **(nopr if approx else {}))
        assert not np.isin(I, gone).any()
        np.testing.assert_allclose(D, Dt, rtol=1e-4, atol=1e-4)
    path = tmp_path / "s.qnt"
    index.save(path)
    for other in (quanta.load(path), quanta.load(path, mmap=True), pickle.loads(pickle.dumps(index))):
        assert other.ntotal == index.ntotal
        np.testing.assert_allclose(other.search(Q, k=10, exact=True).distances, Dt,
                                   rtol=1e-4, atol=1e-4)
    index.compact()  # one index again: the delta blocked in, the removed documents gone
    assert index.pending == 0 and index.native.ndocs == n - len(gone)
    D, I = index.search(Q, k=10, exact=True)
    np.testing.assert_allclose(D, Dt, rtol=1e-4, atol=1e-4)
    assert recall(I, It) >= 0.99
    # upsert: a removed id comes back with another document
    index.add(X[:1], ids=gone[:1])
    assert gone[0] in index


@pytest.fixture(scope="module")
def real_splade():
    """Real SPLADE vectors (splade-tiny over GCIDE definitions; tests/data/README.md): 3,000
    documents (71 entries on average, f16 values) and 100 held-out queries (70)."""
    from bench.build_splade import shipped_sample
    from bench.sparse import scipy_csr
    docs, queries, dim = shipped_sample()
    return scipy_csr(docs, dim), scipy_csr(queries, dim)


def test_defaults_and_presets_hold_on_real_splade(real_splade):
    """search() with no settings reaches recall@10 0.95 on real SPLADE rows, and every preset
    the recall it names; head-first scoring is what loses results on them (the reason it is
    off by default)."""
    X, Q = real_splade
    _, It = exact_topk(X, Q, 10)
    index = quanta.SparseIndex()
    index.add(X)
    parts = index.memory_breakdown()
    assert parts["knn graph"] == 0 and parts["forward index"] >= 4 * X.nnz  # u16 id, f16 value
    assert sum(parts.values()) == index.memory_usage
    default = recall(index.search(Q).ids, It)
    assert default >= 0.95, default
    assert recall(index.search(Q, head=16).ids, It) < default - 0.03
    for target in quanta.SparseIndex.PRESETS:
        index, settings = quanta.SparseIndex.preset(target)
        index.add(X)
        got = recall(index.search(Q, 10, **settings).ids, It)
        assert got >= target, (target, got, settings)


def _block_maxima(X, perm, bs):
    """NumPy: each block's maximum per term over the f16-rounded rows in the stored order."""
    Xp = X[perm].tocsr()
    n, dim = Xp.shape
    blk = np.repeat(np.arange(n) // bs, np.diff(Xp.indptr))
    M = np.zeros(((n + bs - 1) // bs, dim), np.float32)
    np.maximum.at(M, (blk, Xp.indices), Xp.data.astype(np.float16).astype(np.float32))
    return M


def test_blocks_layout_order_and_maxima_match_numpy(data):
    """Blocks layout: the documents stored in a bisection order (a permutation that groups
    rows sharing terms, the same on 1 and 2 threads); each block's per-term maxima as codes
    of the term's largest value / 255, rounded up; dense rows for the terms in at least 1/8
    of the blocks, (block, code) pairs in block order for the others."""
    X, Q = data
    n, dim, bs = X.shape[0], X.shape[1], 4
    one = quanta.SparseIndex(layout="blocks", block_size=bs)
    one.add(X, threads=1)
    two = quanta.SparseIndex(layout="blocks", block_size=bs)
    two.add(X, threads=2)
    st, st2 = one.native.state(), two.native.state()
    for name in st:
        np.testing.assert_array_equal(st[name], st2[name], err_msg=name)
    perm = one.native.ids()
    np.testing.assert_array_equal(np.sort(perm), np.arange(n))
    assert one.native.npostings == 0 and one.native.nblocks == (n + bs - 1) // bs
    M = _block_maxima(X, perm, bs)
    # the order groups rows that share terms: fewer (block, term) pairs than the given order
    assert (M > 0).sum() < 0.97 * (_block_maxima(X, np.arange(n), bs) > 0).sum()
    top = M.max(axis=0)
    scale = np.where(top > 0, top / np.float32(255), np.float32(1))
    np.testing.assert_array_equal(st["bm_scale"], scale)
    nb = M.shape[0]
    codes = np.zeros(M.shape, np.int64)
    dense = st["bm_dense_terms"]
    codes[:, dense] = st["bm_dense"].reshape(len(dense), nb).T
    ptr, entry = st["bm_ptr"], st["bm_entry"]
    for t in range(dim):
        e = entry[ptr[t]:ptr[t + 1]]
        assert np.all(np.diff(e >> 8) > 0)
        codes[e >> 8, t] = e & 255
    count = (M > 0).sum(axis=0)
    np.testing.assert_array_equal(dense, np.flatnonzero((count > 0) & (count * 8 >= nb)))
    assert ptr[-1] == count[count * 8 < nb].sum()
    held = M > 0
    np.testing.assert_array_equal(codes > 0, held)
    c = codes[held].astype(np.float32)
    s_ = np.broadcast_to(scale, M.shape)[held]
    assert np.all((c * s_ >= M[held]) | (c == 255))  # an upper bound ...
    assert np.all((c - 1) * s_ < M[held] * (1 + 1e-5))  # ... the smallest one (float ties)


def test_blocks_layout_recall_bounds_and_memory(data, real_splade):
    """Every query term and heap_factor 1 prune (almost) nothing; recall rises with
    query_cut and falls with heap_factor; on real SPLADE rows the default search reaches
    recall@10 0.95 in less memory than the f32 CSR of the documents."""
    X, Q = data
    index = quanta.SparseIndex(layout="blocks", block_size=4)
    index.add(X)
    De, Ie = index.search(Q, 10, exact=True)
    D, I = index.search(Q, 10, query_cut=10**6, heap_factor=1.0)
    assert recall(I, Ie) >= 0.99
    by_cut = [recall(index.search(Q, 10, qc, 1.0).ids, Ie) for qc in (2, 4, 8, 16)]
    by_hf = [recall(index.search(Q, 10, 8, hf).ids, Ie) for hf in (1.5, 1.2, 1.0, 0.8)]
    assert all(a <= b + 0.01 for a, b in zip(by_cut, by_cut[1:])), by_cut
    assert all(a <= b + 0.01 for a, b in zip(by_hf, by_hf[1:])), by_hf
    assert by_cut[-1] > by_cut[0] and by_hf[-1] > by_hf[0]

    X, Q = real_splade
    _, It = exact_topk(X, Q, 10)
    index = quanta.SparseIndex(layout="blocks")
    index.add(X)
    parts = index.memory_breakdown()
    assert parts["postings"] <= 4 and sum(parts.values()) == index.memory_usage  # no postings
    csr = 8 * X.nnz + 8 * (X.shape[0] + 1)  # f32 values, i32 term ids, i64 offsets
    # beyond 12 bytes per vocabulary term (each term's offset and scale), which this
    # 3,000-row sample does not amortize: 0.6% of the memory at 120,000 rows
    per_term = 12 * (X.shape[1] + 1)
    assert index.memory_usage - per_term <= csr, (index.memory_usage, csr)
    got = recall(index.search(Q).ids, It)
    assert got >= 0.95, got


def test_blocks_layout_wide_vocabulary(data):
    """Term ids past 65,535 (u32 ids in the forward index) bound and score the same way."""
    X, Q = data
    wide = sp.csr_matrix((X.data, X.indices + 67_000, X.indptr), shape=(X.shape[0], 70_000))
    Qw = sp.csr_matrix((Q.data, Q.indices + 67_000, Q.indptr), shape=(Q.shape[0], 70_000))
    narrow = quanta.SparseIndex(layout="blocks", block_size=4)
    narrow.add(X)
    index = quanta.SparseIndex(layout="blocks", block_size=4)
    index.add(wide)
    assert index.native.state()["comp32"].size == X.nnz
    _, Ie = index.search(Qw, 10, exact=True)
    D, I = index.search(Qw, 10, query_cut=10**6, heap_factor=0.97)
    assert recall(I, Ie) >= 0.99
    # the same order and blocks (scores differ only in float summation order)
    np.testing.assert_array_equal(index.native.ids(), narrow.native.ids())
    assert recall(I, narrow.search(Q, 10, query_cut=10**6, heap_factor=0.97).ids) >= 0.99


def test_blocks_layout_corrupt_files(data, tmp_path):
    """A loaded file's block maxima are checked whole; a memory-mapped one's block numbers are
    clamped by the search: errors or wrong results, never a crash."""
    X, Q = data
    index = quanta.SparseIndex(layout="blocks", block_size=4)
    index.add(X)
    index.save(tmp_path / "b.qnt")
    entry = index.native.state()["bm_entry"]
    raw = (tmp_path / "b.qnt").read_bytes()
    at = raw.find(entry.tobytes()[:64])
    assert at > 0
    bad = bytearray(raw)
    bad[at:at + 64] = b"\xff" * 64  # block numbers far beyond the index
    (tmp_path / "c.qnt").write_bytes(bytes(bad))
    with pytest.raises(quanta.FormatError):
        quanta.load(tmp_path / "c.qnt")
    D, I = quanta.load(tmp_path / "c.qnt", mmap=True).search(Q, 10)
    assert ((I >= -1) & (I < X.shape[0])).all()
