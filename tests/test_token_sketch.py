"""The multi-vector index's token sketch: 4-bit PQ codes of every stored token that narrow the
candidates before the exact Chamfer re-rank."""
import pickle

import numpy as np
import pytest

import quanta
from quanta import _core
from conftest import recall_at_k
from test_multivector import chamfer_reference, clustered_sets


@pytest.fixture(scope="module")
def corpus():
    docs, queries = clustered_sets(2000, 12)  # ~48k tokens of 8-40: the stage and sketch built
    return docs, queries


@pytest.fixture()
def index(corpus):
    idx = quanta.MultiVectorIndex(48, storage="i8", seed=3)
    idx.add(corpus[0])
    return idx


def sketch_reference(store, q, docs):
    """Sum over query tokens of the smallest quantized table sum among each document's
    tokens, from the sketch's centroids and its fast-scan blocks (every document starting a
    block of 32 codes), with the tables quantized as the fast-scan tables are."""
    m, dim = store.sketch_m, q.shape[1]
    dsub, npairs = dim // m, (m + 1) // 2
    cent = store.sketch_centroids().reshape(m, 16, dsub).astype(np.float64)
    codes = store.sketch_codes()
    ntok = np.diff(store.offsets())
    first = np.concatenate([[0], np.cumsum((ntok + 31) // 32)])
    tables = -np.einsum("ijd,jcd->ijc", q.reshape(len(q), m, dsub).astype(np.float64), cent)
    lo, hi = tables.min(2), tables.max(2)
    a = 255.0 / (hi - lo).max()
    lut = np.minimum(255, np.rint((tables - lo[..., None]) * a)).astype(np.int64)
    j = np.arange(m)[None]
    out = []
    for d in docs:
        pos = first[d] * 32 + np.arange(ntok[d])[:, None]
        byte = codes[(pos // 32 * npairs + j // 2) * 32 + 16 * (j % 2) + pos % 16]
        code = np.where(pos % 32 < 16, byte & 15, byte >> 4)  # tokens x m
        sums = lut[:, j, code].sum(2)                         # query tokens x tokens
        out.append(sums.min(1).sum())
    return np.array(out)


def test_sketch_estimates_match_numpy_reference(index, corpus):
    store = index._tokens
    assert store.sketch_m == 12 and index.memory_breakdown()["sketch"] > 0
    # documents added after the sketch was built get codes too, longer ones over 2-3 blocks
    rng = np.random.default_rng(1)
    long_docs = [d / np.linalg.norm(d, axis=1, keepdims=True)
                 for d in rng.standard_normal((3, 70, 48)).astype(np.float32)]
    index.add(long_docs)
    docs = np.r_[np.arange(0, 2000, 37), np.arange(2000, 2003)].astype(np.int64)
    assert (np.diff(store.offsets())[docs] > 32).sum() >= 5
    for q in corpus[1][:4]:
        got = store.sketch_estimate(q, docs).astype(np.int64)
        ref = sketch_reference(store, q, docs)
        # the tables' float rounding may move a quantized entry by one; a wrong code or
        # block would move the sums by tens
        assert np.abs(got - ref).max() <= len(q)
        assert np.mean(got == ref) >= 0.95
    # the estimate ranks like Chamfer: its best 40 of all documents hold the exact top-10
    q = corpus[1][0]
    est = store.sketch_estimate(q, np.arange(2003, dtype=np.int64))
    true = np.argsort(-chamfer_reference([q], corpus[0] + long_docs)[0], kind="stable")[:10]
    assert len(set(np.argsort(est, kind="stable")[:40]) & set(true)) >= 9


def test_shortlist_is_the_sketch_best_candidates(index, corpus):
    queries = corpus[1]
    q, qo = quanta.multivector.as_token_sets(queries, None, 48)
    nc, ns = 150, 20
    hits = index._stage.search(q, index.token_hits, threads=1)
    cand = _core.token_candidates(np.ascontiguousarray(hits.distances, np.float32),
                                  np.ascontiguousarray(hits.ids, np.int64), qo, nc, 1)
    got = index.search(queries, k=10, candidates=nc, shortlist=ns, exact=False)
    for i, qi in enumerate(queries):
        c = np.sort(cand[i][cand[i] >= 0])
        est = index._tokens.sketch_estimate(qi, c)
        pick = c[np.lexsort((np.arange(len(c)), est))[:ns]]  # ties: lower position first
        want = index.rerank([qi], None, pick[None], k=10)
        np.testing.assert_array_equal(got.ids[i], want.ids[0])
        np.testing.assert_array_equal(got.distances[i], want.distances[0])
    # a shortlist as long as the candidates narrows nothing: the plain exact re-rank
    full = index.search(queries, k=10, candidates=nc, shortlist=nc, exact=False)
    want = index.rerank(queries, None, cand, k=10)
    np.testing.assert_array_equal(full.ids, want.ids)
    # threads do not change results
    again = index.search(queries, k=10, candidates=nc, shortlist=ns, exact=False, threads=2)
    np.testing.assert_array_equal(again.ids, got.ids)


def test_defaults_recall_with_the_sketch(index, corpus):
    docs, queries = corpus
    true = np.argsort(-chamfer_reference(queries, docs), axis=1, kind="stable")[:, :10]
    # these token sets tie heavily on every query token (see test_multivector): more hits
    staged = index.search(queries, k=10, token_hits=1000, exact=False)
    assert recall_at_k(staged.ids, true) >= 0.95
    narrow = index.search(queries, k=10, token_hits=1000, shortlist=10, exact=False)
    assert recall_at_k(narrow.ids, true) < recall_at_k(staged.ids, true)  # it can fail


def test_sketch_survives_save_load_mmap_pickle(index, corpus, tmp_path):
    queries = corpus[1]
    want = index.search(queries, k=10, shortlist=16, exact=False)
    path = tmp_path / "mv.qnt"
    index.save(path)
    for other in (quanta.load(path), quanta.load(path, mmap=True),
                  pickle.loads(pickle.dumps(index))):
        assert other._tokens.sketch_m == index._tokens.sketch_m
        assert other.memory_breakdown()["sketch"] == index.memory_breakdown()["sketch"]
        got = other.search(queries, k=10, shortlist=16, exact=False)
        np.testing.assert_array_equal(got.ids, want.ids)
        np.testing.assert_array_equal(got.distances, want.distances)
    mapped = quanta.load(path, mmap=True)
    assert mapped._tokens.mapped_bytes >= len(index._tokens.sketch_codes())
    mapped.add(corpus[0][:3])  # copy on write: the file is left as it was
    np.testing.assert_array_equal(quanta.load(path).search(queries, k=10).ids,
                                  index.search(queries, k=10).ids)


def test_sketch_follows_remove_and_compact(index, corpus):
    store, queries = index._tokens, corpus[1]
    q = queries[0]
    gone = np.arange(0, 2000, 3)
    keep = np.setdiff1d(np.arange(2000), gone)
    before = store.sketch_estimate(q, keep)
    assert index.remove(gone) == len(gone)
    want = index.search(queries, k=10, shortlist=16, exact=False)
    index.compact()
    assert store.ndocs == len(keep)
    np.testing.assert_array_equal(store.sketch_estimate(q, np.arange(len(keep))), before)
    got = index.search(queries, k=10, shortlist=16, exact=False)
    np.testing.assert_array_equal(got.ids, want.ids)
    assert not np.isin(got.ids, gone).any()


def test_a_failed_add_keeps_the_sketch_in_step(index, corpus, monkeypatch, tmp_path):
    store = index._tokens
    before = store.sketch_estimate(corpus[1][0], np.arange(50))
    ndocs, nbytes = store.ndocs, len(store.sketch_codes())

    def fail(*args, **kwargs):
        raise MemoryError("injected")
    monkeypatch.setattr(index._stage, "add", fail)
    with pytest.raises(MemoryError, match="injected"):
        index.add(corpus[0][:40])
    monkeypatch.undo()
    assert store.ndocs == ndocs and len(store.sketch_codes()) == nbytes
    np.testing.assert_array_equal(store.sketch_estimate(corpus[1][0], np.arange(50)), before)
    index.save(tmp_path / "mv.qnt")  # the file loads: the sketch matches the documents
    assert quanta.load(tmp_path / "mv.qnt").ntotal == index.ntotal


def test_sketch_bad_input(index, corpus):
    store, q = index._tokens, corpus[1][0]
    with pytest.raises(ValueError, match="shortlist"):
        index.search(corpus[1], k=10, shortlist=0)
    with pytest.raises(ValueError, match="out of range"):
        store.sketch_estimate(q, np.array([store.ndocs], np.int64))
    with pytest.raises(ValueError, match="out of range"):
        store.sketch_estimate(q, np.array([-1], np.int64))
    with pytest.raises(ValueError, match="shape"):
        store.sketch_estimate(q[:, :10].copy(), np.array([0], np.int64))
    bad = q.copy()
    bad[0, 0] = np.nan
    with pytest.raises(ValueError, match="finite"):
        store.sketch_estimate(bad, np.array([0], np.int64))
    small = quanta.MultiVectorIndex(48)
    small.add(corpus[0][:50])  # below STAGE_MIN_TOKENS: no sketch, no narrowing
    assert small._tokens.sketch_m == 0 and small.memory_breakdown()["sketch"] == 0
    with pytest.raises(ValueError, match="sketch"):
        small._tokens.sketch_estimate(q, np.array([0], np.int64))
    with pytest.raises(ValueError, match="m must divide"):
        small._tokens.build_sketch(7, 0, 1)
