"""MUVERA encoder and multi-vector index: NumPy references, FastEmbed compatibility, the
identity-projection bound, exact Chamfer, recall of FDE retrieval + re-rank, bad input."""
import pickle
from pathlib import Path

import numpy as np
import pytest

import quanta
from quanta.multivector import as_token_sets

from conftest import recall_at_k

GOLDEN = Path(__file__).parent / "data" / "fastembed_muvera_golden.npz"


# --- references ---------------------------------------------------------------------------

def fde_reference(enc, sets, documents):
    """A plain NumPy MUVERA encoder over the encoder's own matrices (float64)."""
    m = enc.matrices
    d, k, dp, R = enc.dim, enc.k_sim, enc.d_proj, enc.r_reps
    B = 1 << k
    simhash = m["SIMH"].reshape(R, d, k).astype(np.float64)
    proj = m["PROJ"].reshape(R, d, dp).astype(np.float64) if m["PROJ"].size else None
    out = []
    for x in sets:
        x = x.astype(np.float64)
        reps = []
        for r in range(R):
            bits = (x @ simhash[r]) > 0
            if enc.bucket_order == "binary":
                ids = bits @ (1 << np.arange(k))
                pattern = np.arange(B)
            else:
                ids = np.zeros(len(x), np.int64)
                for i in range(k):
                    ids = (ids << 1) + (bits[:, i] ^ (ids & 1))
                pattern = np.arange(B) ^ (np.arange(B) >> 1)
            cent = np.zeros((B, d))
            count = np.bincount(ids, minlength=B)
            np.add.at(cent, ids, x)
            if documents:
                cent[count > 0] /= count[count > 0, None]
            if documents and enc.fill_empty:
                occupied = np.flatnonzero(count)
                first = {b: int(np.flatnonzero(ids == b)[0]) for b in occupied}
                if enc.bucket_order == "gray":
                    occupied = sorted(occupied, key=lambda b: first[b])
                for e in np.flatnonzero(count == 0):
                    dist = [bin(pattern[e] ^ pattern[b]).count("1") for b in occupied]
                    cent[e] = x[first[occupied[int(np.argmin(dist))]]]
            reps.append((cent @ proj[r] if proj is not None else cent).ravel())
        fde = np.concatenate(reps)
        if enc.final_dim:
            final = np.zeros(enc.final_dim)
            np.add.at(final, m["FIDX"], m["FSGN"] * fde)
            fde = final
        out.append(fde)
    return np.stack(out)


def chamfer_reference(queries, docs):
    return np.array([[(q.astype(np.float64) @ d.T.astype(np.float64)).max(axis=1).sum()
                      for d in docs] for q in queries])


def queries_as_amx_scores_them(queries, storage, dim):
    """With AMX the query tokens are rounded like the stored ones: to bf16 for bf16 rows, to
    int8 at each token's own scale (max |q| -> 127) for i8 rows."""
    if storage == "bf16" and dim % 32 == 0 and quanta._core.amx_bf16_active():
        import ml_dtypes
        return [q.astype(ml_dtypes.bfloat16).astype(np.float32) for q in queries]
    if storage == "i8" and dim % 64 == 0 and quanta._core.amx_int8_active():
        out = []
        for q in queries:
            sc = 127.0 / np.abs(q).max(axis=1, keepdims=True)
            out.append((np.clip(np.rint(q * sc), -127, 127) / sc).astype(np.float32))
        return out
    return queries


def token_sets(rng, n, dim, lo=1, hi=30):
    return [rng.standard_normal((int(rng.integers(lo, hi + 1)), dim)).astype(np.float32)
            for _ in range(n)]


def clustered_sets(n, nq, dim=48, ntopics=120, seed=0):
    """Documents and queries whose tokens gather around a few topics each (ColBERT-like)."""
    rng = np.random.default_rng(seed)
    topics = rng.standard_normal((ntopics, dim)).astype(np.float32)

    def draw(m, lo, hi):
        out = []
        for _ in range(m):
            own = rng.choice(ntopics, 3, replace=False)
            t = topics[rng.choice(own, int(rng.integers(lo, hi + 1)))]
            t = t + 0.35 * rng.standard_normal(t.shape).astype(np.float32)
            out.append((t / np.linalg.norm(t, axis=1, keepdims=True)).astype(np.float32))
        return out

    return draw(n, 8, 40), draw(nq, 4, 16)


# --- encoder ------------------------------------------------------------------------------

@pytest.mark.parametrize("options", [
    dict(k_sim=4, d_proj=8, r_reps=5),
    dict(k_sim=3, d_proj=6, r_reps=3, projection="count_sketch"),
    dict(k_sim=4, d_proj=None, r_reps=2, bucket_order="gray"),
    dict(k_sim=5, d_proj=8, r_reps=3, bucket_order="gray", projection="count_sketch"),
    dict(k_sim=3, d_proj=8, r_reps=4, final_dim=50),
    dict(k_sim=0, d_proj=8, r_reps=2),
    dict(k_sim=3, d_proj=8, r_reps=2, fill_empty=False),
])
def test_encoder_matches_numpy_reference(rng, options, simd_level):
    enc = quanta.FDEEncoder(20, seed=3, **options)
    sets = token_sets(rng, 25, 20)
    for documents, fn in ((True, enc.encode_documents), (False, enc.encode_queries)):
        got = fn(sets)
        assert got.dtype == np.float32 and got.shape == (25, enc.output_dim)
        np.testing.assert_allclose(got, fde_reference(enc, sets, documents), rtol=1e-4, atol=1e-4)


def test_encoder_sizes_and_defaults():
    enc = quanta.FDEEncoder(128)
    assert (enc.k_sim, enc.d_proj, enc.r_reps, enc.seed) == (5, 16, 20, 0)
    assert enc.output_dim == 10240
    assert quanta.FDEEncoder(32, d_proj=32, r_reps=3, k_sim=2).output_dim == 3 * 4 * 32
    assert quanta.FDEEncoder(32, final_dim=100).output_dim == 100


def test_fastembed_compatibility_golden():
    g = np.load(GOLDEN)
    for name, (k, dp, r) in {"default": (5, 16, 20), "small": (3, 8, 4),
                             "identity": (2, 24, 3)}.items():
        enc = quanta.FDEEncoder(24, k_sim=k, d_proj=dp, r_reps=r, seed=42)
        np.testing.assert_allclose(enc.encode_documents(g["doc_tokens"], g["doc_offsets"]),
                                   g[f"{name}_docs"], rtol=1e-5, atol=2e-5)
        np.testing.assert_allclose(enc.encode_queries(g["query_tokens"], g["query_offsets"]),
                                   g[f"{name}_queries"], rtol=1e-5, atol=2e-5)


def test_fastembed_compatibility_live(rng):
    muvera = pytest.importorskip("fastembed.postprocess").Muvera
    sets = token_sets(rng, 20, 64, 1, 50)
    for k, dp, r, seed in ((5, 16, 20, 42), (4, 8, 10, 7)):
        ref = muvera(64, k_sim=k, dim_proj=dp, r_reps=r, random_seed=seed)
        enc = quanta.FDEEncoder(64, k, dp, r, seed)
        np.testing.assert_allclose(enc.encode_documents(sets),
                                   np.stack([ref.process_document(s) for s in sets]),
                                   rtol=1e-5, atol=2e-5)
        np.testing.assert_allclose(enc.encode_queries(sets),
                                   np.stack([ref.process_query(s) for s in sets]),
                                   rtol=1e-5, atol=2e-5)


def test_identity_projection_never_overestimates_chamfer(rng):
    """Lemma A.3: with identity projections and filled document buckets every query token
    meets an average of document tokens (or one of them), never more than its best."""
    enc = quanta.FDEEncoder(16, k_sim=4, d_proj=None, r_reps=6, seed=1)
    docs, queries = token_sets(rng, 40, 16), token_sets(rng, 10, 16)
    est = enc.encode_queries(queries).astype(np.float64) @ enc.encode_documents(docs).T
    bound = enc.r_reps * chamfer_reference(queries, docs)
    assert (est <= bound + 1e-3 * np.abs(bound) + 1e-3).all()
    # and the bound is not vacuous: a one-token document is met exactly
    one = [rng.standard_normal((1, 16)).astype(np.float32)]
    est1 = enc.encode_queries(queries) @ enc.encode_documents(one).T
    np.testing.assert_allclose(est1, enc.r_reps * chamfer_reference(queries, one), rtol=1e-4,
                               atol=1e-3)


def test_encoding_threads_and_batches_agree(rng):
    enc = quanta.FDEEncoder(32, k_sim=4, d_proj=8, r_reps=6)
    sets = token_sets(rng, 100, 32)
    one = enc.encode_documents(sets, threads=1)
    np.testing.assert_array_equal(one, enc.encode_documents(sets, threads=2))
    np.testing.assert_array_equal(one[7], enc.encode_documents(sets[7])[0])
    x, off = as_token_sets(sets, None, 32)
    np.testing.assert_array_equal(one, enc.encode_documents(x, off))


def test_encoder_seed_and_persistence(tmp_path, rng):
    sets = token_sets(rng, 10, 12)
    a = quanta.FDEEncoder(12, k_sim=3, d_proj=4, r_reps=5, seed=9, projection="count_sketch",
                          final_dim=40)
    b = quanta.FDEEncoder(12, k_sim=3, d_proj=4, r_reps=5, seed=9, projection="count_sketch",
                          final_dim=40)
    c = quanta.FDEEncoder(12, k_sim=3, d_proj=4, r_reps=5, seed=10)
    np.testing.assert_array_equal(a.encode_documents(sets), b.encode_documents(sets))
    assert not np.array_equal(a.encode_queries(sets)[:, :40], c.encode_queries(sets)[:, :40])
    m = a.matrices  # public and read-only: the encoder's own state is not exposed to writes
    assert m["SIMH"].size == 5 * 12 * 3 and m["PROJ"].size == 5 * 12 * 4 and m["FIDX"].size
    with pytest.raises(ValueError):
        m["SIMH"][0] = 1.0
    a.save(tmp_path / "enc.qnt")
    for back in (quanta.load(tmp_path / "enc.qnt"), pickle.loads(pickle.dumps(a))):
        assert repr(back) == repr(a)
        np.testing.assert_array_equal(back.encode_documents(sets), a.encode_documents(sets))


def test_encoder_bad_input(rng):
    enc = quanta.FDEEncoder(8, k_sim=2, d_proj=4, r_reps=2)
    good = rng.standard_normal((5, 8)).astype(np.float32)
    with pytest.raises(ValueError, match="empty"):
        enc.encode_documents([good, good[:0]])
    with pytest.raises(ValueError, match="dim"):
        enc.encode_documents([good, rng.standard_normal((3, 9)).astype(np.float32)])
    with pytest.raises(ValueError, match="dim 9"):
        enc.encode_queries(rng.standard_normal((3, 9)).astype(np.float32))
    with pytest.raises(ValueError, match="NaN"):
        enc.encode_documents(np.full((2, 8), np.nan, np.float32))
    with pytest.raises(ValueError, match="offsets"):
        enc.encode_documents(good, np.array([0, 3, 2, 5]))
    with pytest.raises(ValueError, match="end at the token count"):
        enc.encode_documents(good, np.array([0, 4]))
    with pytest.raises(TypeError, match="offsets must be integers"):
        enc.encode_documents(good, np.array([0.0, 5.0]))
    with pytest.raises(TypeError, match="real numbers"):
        enc.encode_documents(np.array([["a"] * 8]))
    with pytest.raises(ValueError, match="empty list"):
        enc.encode_documents([])
    with pytest.raises(ValueError, match="d_proj"):
        quanta.FDEEncoder(8, d_proj=16)
    with pytest.raises(ValueError, match="identity"):
        quanta.FDEEncoder(8, d_proj=4, projection="identity")
    with pytest.raises(ValueError, match="projection"):
        quanta.FDEEncoder(8, projection="gaussian")
    with pytest.raises(ValueError, match="k_sim"):
        quanta.FDEEncoder(8, k_sim=31)
    with pytest.raises(TypeError, match="r_reps"):
        quanta.FDEEncoder(8, r_reps=2.5)
    # one token is a valid set
    assert enc.encode_documents(good[:1]).shape == (1, enc.output_dim)


# --- Chamfer ------------------------------------------------------------------------------

@pytest.mark.parametrize("dim", [24, 64])
@pytest.mark.parametrize("storage", ["f32", "f16", "bf16", "f8e4m3", "f8e5m2", "i8"])
def test_exact_search_matches_numpy_chamfer(rng, storage, dim, simd_level):
    docs, queries = token_sets(rng, 120, dim), token_sets(rng, 9, dim)
    index = quanta.MultiVectorIndex(dim, k_sim=2, d_proj=4, r_reps=2, storage=storage)
    index.add(docs)
    stored = [index.document(i) for i in range(len(docs))]
    if storage == "f32":
        for a, b in zip(stored, docs):
            np.testing.assert_array_equal(a, b)
    queries_as_scored = queries_as_amx_scores_them(queries, storage, dim)
    ref = chamfer_reference(queries_as_scored, stored)  # exact on the stored (decoded) tokens
    D, I = index.search(queries, k=15, exact=True)
    np.testing.assert_allclose(D, np.take_along_axis(ref, I, 1), rtol=1e-4, atol=1e-3)
    np.testing.assert_allclose(D, -np.sort(-ref, axis=1)[:, :15], rtol=1e-4, atol=1e-3)
    # re-ranking every document gives the exhaustive result
    cand = np.tile(np.arange(len(docs)), (len(queries), 1))
    D2, I2 = index.rerank(queries, None, cand, k=15)
    np.testing.assert_array_equal(I2, I)
    np.testing.assert_array_equal(D2, D)
    # and the same for any thread count
    D3, I3 = index.search(queries, k=15, exact=True, threads=1)
    np.testing.assert_array_equal(I3, I)
    np.testing.assert_array_equal(D3, D)


def test_compact_storage_keeps_ranking(rng):
    docs, queries = clustered_sets(400, 20)
    ref = chamfer_reference(queries, docs)
    true = np.argsort(-ref, axis=1, kind="stable")[:, :10]
    for storage, floor in (("f16", 0.99), ("f8e4m3", 0.9), ("i8", 0.9)):
        index = quanta.MultiVectorIndex(48, storage=storage, k_sim=2, d_proj=4, r_reps=2)
        index.add(docs)
        assert recall_at_k(index.search(queries, k=10, exact=True).ids, true) >= floor
        assert index.memory_usage < sum(d.nbytes for d in docs)


def test_fde_retrieval_and_rerank_recall():
    docs, queries = clustered_sets(3000, 40)
    true = np.argsort(-chamfer_reference(queries, docs), axis=1, kind="stable")[:, :10]
    index = quanta.MultiVectorIndex(48, seed=1, first_stage="fde")
    index.add(docs)
    fde_only = index.stage.search(index.fdes(queries, queries=True), 10).ids
    reranked = [recall_at_k(index.search(queries, k=10, candidates=c, shortlist=c).ids, true)
                for c in (10, 50, 200)]
    assert recall_at_k(fde_only, true) > 0.3          # FDEs alone rank with signal
    assert reranked[0] >= recall_at_k(fde_only, true)  # re-rank of the same 10 only helps
    assert reranked[0] <= reranked[1] <= reranked[2]
    assert reranked[2] >= 0.95


def test_inner_pq_index_and_merge(rng):
    docs, queries = clustered_sets(1500, 20)
    true = np.argsort(-chamfer_reference(queries, docs), axis=1, kind="stable")[:, :10]
    index = quanta.MultiVectorIndex(48, k_sim=4, d_proj=8, r_reps=8, first_stage="fde",
                                    index="PQ64x4fs")
    index.add(docs)  # the PQ is trained on the first add's FDEs
    assert recall_at_k(index.search(queries, k=10, candidates=200).ids, true) >= 0.9
    merged = index.search(queries, k=10, candidates=200, merge_tau=0.7)
    assert recall_at_k(merged.ids, true) >= 0.8


def test_merge_query_tokens(rng):
    q = token_sets(rng, 3, 8, 2, 6)
    x, off = quanta.merge_query_tokens(q, tau=10.0)  # nothing is that close: unchanged
    np.testing.assert_array_equal(x, np.concatenate(q))
    x, off = quanta.merge_query_tokens(q, tau=-np.inf)  # everything merges into one sum
    np.testing.assert_allclose(x, np.stack([s.sum(0) for s in q]), rtol=1e-6)
    np.testing.assert_array_equal(off, [0, 1, 2, 3])
    dup = [np.concatenate([q[0], q[0]])]  # exact duplicates merge pairwise
    x, off = quanta.merge_query_tokens(dup, tau=0.999 * float((q[0] ** 2).sum(1).min()))
    assert off[-1] <= len(q[0])


def test_batch_equals_one_by_one(rng):
    docs, queries = clustered_sets(500, 12)
    index = quanta.MultiVectorIndex(48, k_sim=3, d_proj=8, r_reps=6)
    index.add(docs[:200])
    index.add(docs[200:])
    for exact in (False, True):
        D, I = index.search(queries, k=5, exact=exact, threads=2)
        for i, q in enumerate(queries):
            d1, i1 = index.search(q, k=5, exact=exact, threads=1)
            np.testing.assert_array_equal(i1[0], I[i])
            np.testing.assert_array_equal(d1[0], D[i])


def test_index_persistence(tmp_path):
    docs, queries = clustered_sets(300, 8)
    index = quanta.MultiVectorIndex(48, k_sim=3, d_proj=8, r_reps=4, storage="f16",
                                    first_stage="fde", index="PQ16x4fs", candidates=50)
    index.add(docs)
    before = index.search(queries, k=5)
    index.save(tmp_path / "mv.qnt")
    for back in (quanta.load(tmp_path / "mv.qnt"), quanta.load(tmp_path / "mv.qnt", mmap=True),
                 pickle.loads(pickle.dumps(index))):
        assert back.ntotal == 300 and back.candidates == 50
        after = back.search(queries, k=5)
        np.testing.assert_array_equal(after.ids, before.ids)
        np.testing.assert_array_equal(after.distances, before.distances)
    # mapped: the tokens and the FDE codes are views of the file; writes copy them first
    mapped = quanta.load(tmp_path / "mv.qnt", mmap=True)
    assert mapped._tokens.mapped_bytes == index._tokens.codes().nbytes
    assert mapped._stage._index.mapped_bytes > 0
    saved = (tmp_path / "mv.qnt").read_bytes()
    mapped.remove([0, 1])
    mapped.add(docs[:2], ids=[1000, 1001])
    mapped.compact()
    assert mapped.ntotal == 300 and (tmp_path / "mv.qnt").read_bytes() == saved
    raw = (tmp_path / "mv.qnt").read_bytes()
    (tmp_path / "cut.qnt").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(quanta.FormatError):
        quanta.load(tmp_path / "cut.qnt")


def test_index_bad_input_and_edges(rng):
    index = quanta.MultiVectorIndex(8, k_sim=2, d_proj=4, r_reps=2)
    good = [rng.standard_normal((3, 8)).astype(np.float32) for _ in range(4)]
    with pytest.raises(ValueError, match="empty"):
        index.search(good[0], k=1)
    with pytest.raises(ValueError, match="empty"):
        index.add([good[0], good[0][:0]])
    assert index.ntotal == 0  # the failed add stored nothing
    index.add(good)
    with pytest.raises(ValueError, match="NaN"):
        index.add([np.full((2, 8), np.inf, np.float32)])
    with pytest.raises(ValueError, match="dim"):
        index.search(rng.standard_normal((2, 5)).astype(np.float32), k=1)
    assert index.ntotal == 4 and index.ntokens == 12
    with pytest.raises(ValueError, match="k must be"):
        index.search(good[0], k=0)
    # an unknown candidate id is skipped, not scored
    _, I = index.rerank(good[0], None, np.array([[7, 9]]), k=1)
    assert I[0, 0] == -1
    with pytest.raises(ValueError, match="storage"):
        quanta.MultiVectorIndex(8, storage="f4")
    # k beyond the index: padded with (-inf, -1) as every quanta index does
    D, I = index.search(good[0], k=6, exact=True)
    assert (I[0, 4:] == -1).all() and np.isneginf(D[0, 4:]).all()
    assert sorted(I[0, :4]) == [0, 1, 2, 3]
    D, I = index.search(good[0], k=6)
    assert sorted(I[0, :4]) == [0, 1, 2, 3] and (I[0, 4:] == -1).all()


# --- the engine contract: ids, filters, removal ---------------------------------------------

@pytest.mark.parametrize("stage,inner", [("fde", "Flat(bf16)"), ("fde", "IVF16,PQ64x4fs"),
                                         ("tokens", None)])
def test_ids_filters_remove_compact(stage, inner, tmp_path, monkeypatch):
    monkeypatch.setattr(quanta.multivector, "STAGE_MIN_TOKENS", 5000)  # built by the first add
    docs, queries = clustered_sets(1200, 12)
    ids = np.arange(len(docs), dtype=np.int64) * 7 + 3
    scores = chamfer_reference(queries, docs)
    index = quanta.MultiVectorIndex(48, seed=1, first_stage=stage, index=inner)
    index.add(docs[:700], ids=ids[:700])
    index.add(docs[700:], ids=ids[700:])
    assert index._stage is not None
    kw = {"nprobe": 16} if (inner or index.index_spec).startswith("IVF") else {}

    def truth(rows, k=10):
        order = np.argsort(-scores[:, rows], axis=1, kind="stable")[:, :k]
        return ids[rows][order], np.take_along_axis(scores[:, rows], order, 1)

    rng = np.random.default_rng(4)
    rows = np.sort(rng.choice(len(docs), 150, replace=False))
    # exact search under a filter equals the truth over the allowed documents
    D, I = index.search(queries, k=10, exact=True, filter=ids[rows])
    It, Dt = truth(rows)
    np.testing.assert_allclose(D, Dt, rtol=1e-2, atol=1e-2)
    assert recall_at_k(I, It) >= 0.95 and np.isin(I, ids[rows]).all()
    # the FDE stage and the re-rank both honour it
    D, I = index.search(queries, k=10, candidates=len(docs), filter=ids[rows], **kw)
    assert np.isin(I[I >= 0], ids[rows]).all() and recall_at_k(I, It) >= 0.95
    per_q = [ids[i::len(queries)] for i in range(len(queries))]
    _, I = index.search(queries, k=5, exact=True, filter=per_q)
    assert all(np.isin(I[i], per_q[i]).all() for i in range(len(queries)))
    for first in (slice(None), slice(1)):  # per-query filters through the first stage too
        _, I = index.search(queries[first], k=5, exact=False, filter=per_q[first], **kw)
        assert all(np.isin(I[i][I[i] >= 0], per_q[i]).all() for i in range(len(I)))
    # removal: never returned, same as a search over the rest, through save / load and compact
    _, I0 = index.search(queries, k=10, exact=True)
    gone = np.unique(I0[:, :2])
    assert index.remove(gone) == len(gone) and index.ntotal == len(docs) - len(gone)
    assert not index.contains(gone).any() and int(ids[0] if ids[0] not in gone else ids[1]) in index
    keep = np.flatnonzero(~np.isin(ids, gone))
    It, Dt = truth(keep)
    for idx in (index, quanta.from_bytes(index.to_bytes())):
        D, I = idx.search(queries, k=10, exact=True)
        assert not np.isin(I, gone).any()
        np.testing.assert_allclose(D, Dt, rtol=1e-2, atol=1e-2)
        _, I = idx.search(queries, k=10, candidates=len(docs), **kw)
        assert not np.isin(I, gone).any()
    before = index.memory_usage
    index.compact()
    assert index.memory_usage < before
    D, I = index.search(queries, k=10, exact=True)
    np.testing.assert_allclose(D, Dt, rtol=1e-2, atol=1e-2)
    # upsert
    index.add(docs[:1], ids=gone[:1])
    assert gone[0] in index and index.ntotal == len(docs) - len(gone) + 1


# --- the token stage ------------------------------------------------------------------------

def token_candidates_reference(scores, labels, q_offsets, nc):
    """XTR's estimate in plain Python: per query token, a document's best retrieved
    similarity, else that token's smallest retrieved one; ties by smaller label."""
    out = np.full((len(q_offsets) - 1, nc), -1, np.int64)
    for i in range(len(q_offsets) - 1):
        gain = {}
        for t in range(q_offsets[i], q_offsets[i + 1]):
            ok = labels[t] >= 0
            if not ok.any():
                continue
            floor = scores[t][ok].min()
            best = {}
            for s, label in zip(scores[t][ok], labels[t][ok]):
                best[label] = max(best.get(label, -np.inf), s)
            for label, s in best.items():
                gain[label] = gain.get(label, 0.0) + (s - floor)
        ranked = sorted(gain.items(), key=lambda kv: (-kv[1], kv[0]))[:nc]
        out[i, :len(ranked)] = [label for label, _ in ranked]
    return out


def test_token_candidates_matches_reference(rng):
    ntok, kp = 40, 12
    # scores best first per row, with ties; labels repeat (several tokens of one document)
    scores = -np.sort(-rng.integers(0, 6, (ntok, kp)).astype(np.float32), axis=1)
    labels = rng.integers(0, 15, (ntok, kp)).astype(np.int64)
    labels[3, 7:] = -1  # a token that found fewer than kp
    labels[5, :] = -1   # and one that found nothing
    q_offsets = np.array([0, 1, 6, 6, 20, 40], np.int64)  # an empty query too
    for nc in (1, 5, 15, 30):
        for threads in (1, 2):
            got = quanta._core.token_candidates(scores, labels, q_offsets, nc, threads)
            np.testing.assert_array_equal(
                got, token_candidates_reference(scores, labels, q_offsets, nc))
    with pytest.raises(TypeError, match="labels"):
        quanta._core.token_candidates(scores, labels[:, :3].copy(), q_offsets, 5, 1)
    with pytest.raises(ValueError, match="q_offsets"):
        quanta._core.token_candidates(scores, labels, np.array([0, 50], np.int64), 5, 1)


def test_token_stage_recall_and_default_choice():
    docs, queries = clustered_sets(3000, 40)  # 72k tokens: the stage is built
    true = np.argsort(-chamfer_reference(queries, docs), axis=1, kind="stable")[:, :10]
    index = quanta.MultiVectorIndex(48, storage="i8")
    index.add(docs)
    assert index._stage is not None and index.index_spec.startswith("IVF")
    assert not index._use_exact(index.candidates, index.token_hits, index.shortlist)
    # these token sets are hard for token retrieval (75 documents share each topic, so many
    # tie on every query token): more hits and candidates than on real tokens
    staged = index.search(queries, k=10, token_hits=1000, candidates=300)
    assert recall_at_k(staged.ids, true) >= 0.95
    few = index.search(queries, k=10, token_hits=100, candidates=100)
    assert recall_at_k(few.ids, true) < recall_at_k(staged.ids, true)  # the sweep matters
    assert index.memory_breakdown()["first_stage"] < index.memory_breakdown()["tokens"]


def test_small_corpus_is_searched_exhaustively(rng):
    docs, queries = clustered_sets(200, 8)  # ~5k tokens: no stage
    index = quanta.MultiVectorIndex(48)
    index.add(docs)
    assert index._stage is None and index.memory_breakdown()["first_stage"] == 0
    exact = index.search(queries, k=5, exact=True)
    for got in (index.search(queries, k=5), index.search(queries, k=5, exact=False)):
        np.testing.assert_array_equal(got.ids, exact.ids)
        np.testing.assert_array_equal(got.distances, exact.distances)


def test_token_stage_built_by_a_later_add(monkeypatch, tmp_path):
    monkeypatch.setattr(quanta.multivector, "STAGE_MIN_TOKENS", 20000)
    docs, queries = clustered_sets(1500, 12)
    true = np.argsort(-chamfer_reference(queries, docs), axis=1, kind="stable")[:, :10]
    gone = np.unique(true[:, 0][true[:, 0] < 700])[:2]  # answers, stored before the stage
    index = quanta.MultiVectorIndex(48, storage="f16")
    index.add(docs[:400])
    index.add(docs[400:700], ids=np.arange(400, 700))
    index.remove(gone)  # removed before the stage exists: never in it
    assert index._stage is None
    index.add(docs[700:], ids=np.arange(700, 1500))
    ntok = sum(len(d) for i, d in enumerate(docs) if i not in gone)
    assert index._stage is not None and index._stage.ntotal == ntok
    res = index.search(queries, k=10, exact=False, candidates=200)
    assert not np.isin(res.ids, gone).any()
    live = np.setdiff1d(np.arange(1500), gone)
    scores = chamfer_reference(queries, [docs[i] for i in live])
    want = live[np.argsort(-scores, axis=1, kind="stable")[:, :10]]
    assert recall_at_k(res.ids, want) >= 0.95
    # persistence keeps the stage (plainly, mapped, pickled): the same answers
    index.save(tmp_path / "mv.qnt")
    for back in (quanta.load(tmp_path / "mv.qnt"), quanta.load(tmp_path / "mv.qnt", mmap=True),
                 pickle.loads(pickle.dumps(index))):
        assert back.first_stage == "tokens" and back.index_spec == index.index_spec
        again = back.search(queries, k=10, exact=False, candidates=200)
        np.testing.assert_array_equal(again.ids, res.ids)
        np.testing.assert_array_equal(again.distances, res.distances)


def test_token_stage_bad_input():
    small = dict(k_sim=2, d_proj=4, r_reps=2)
    with pytest.raises(ValueError, match="first_stage"):
        quanta.MultiVectorIndex(8, first_stage="tokenz", **small)
    with pytest.raises(ValueError, match="token_hits"):
        quanta.MultiVectorIndex(8, token_hits=0, **small)
    with pytest.raises(ValueError):
        quanta.MultiVectorIndex(8, index="IVF8,PQ3x4fs", **small)  # refused when made
    index = quanta.MultiVectorIndex(8, **small)
    index.add([np.ones((2, 8), np.float32)])
    with pytest.raises(TypeError, match="token_hits"):
        index.search(np.ones((2, 8), np.float32), k=1, token_hits=1.5)
