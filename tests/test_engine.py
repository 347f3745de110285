"""The engine contract on the dense indexes: filtered search, removal, range search.

Oracles: a filtered search must equal an unfiltered search of the same trained index holding
only the allowed rows (same codes, same relative order, so the same ties); brute force in
NumPy for the exact index."""
import pickle

import numpy as np
import pytest

import quanta
from conftest import brute_force_knn, clustered

N, DIM, NQ, K = 3000, 32, 20, 10


@pytest.fixture(scope="module")
def data():
    xb, xq = clustered(N, DIM, NQ, seed=3, normalize=False)
    ids = np.arange(N, dtype=np.int64) * 3 + 7  # user ids, not positions
    return xb, xq, ids


def make(kind, metric="l2"):
    if kind == "flat":
        return quanta.FlatIndex(DIM, metric)
    if kind == "flat-f16":
        return quanta.FlatIndex(DIM, metric, "f16")
    if kind == "pq":
        return quanta.PQIndex(DIM, 8, 8, metric)
    if kind == "pq-fs":
        return quanta.PQIndex(DIM, 8, 4, metric, fast_scan=True)
    if kind == "pq-refine":
        return quanta.PQIndex(DIM, 8, 4, metric, fast_scan=True, refine="f32")
    if kind == "ivf":
        return quanta.IVFPQIndex(DIM, 16, 8, 8, metric)
    if kind == "ivf-fs":
        return quanta.IVFPQIndex(DIM, 16, 8, 4, metric, fast_scan=True, by_residual=True)
    if kind == "ivf-fs-flat":
        return quanta.IVFPQIndex(DIM, 16, 8, 4, metric, fast_scan=True, by_residual=False)
    if kind == "ivf-fs-soar":
        return quanta.IVFPQIndex(DIM, 16, 8, 4, metric, fast_scan=True, soar=True)
    if kind == "ivf-soar":  # residual 8-bit codes: each copy has its own code
        return quanta.IVFPQIndex(DIM, 16, 8, 8, metric, soar=True)
    if kind == "rbe":  # recurrent binary codes score by inner product
        return quanta.BinaryIndex(DIM, 64, 2, "ip")
    if kind == "rbe-ivf":
        return quanta.IVFBinaryIndex(DIM, 16, 64, 2, "ip")
    raise AssertionError(kind)


KINDS = ["flat", "flat-f16", "pq", "pq-fs", "pq-refine", "ivf", "ivf-fs", "ivf-fs-flat",
         "ivf-fs-soar", "ivf-soar", "rbe", "rbe-ivf"]
FULL = {"nprobe": 16}  # every list: no pruning


def search_kw(kind):
    return FULL if "ivf" in kind else {}


def built(kind, data, metric="l2", rows=None):
    xb, _, ids = data
    index = make(kind, metric)
    if not index.is_trained:
        index.train(xb)
    rows = np.arange(N) if rows is None else rows
    index.add(xb[rows], ids[rows])
    return index


def twin(index, data, rows):
    """The same trained index holding only `rows` (in order): the filtered search's oracle."""
    xb, _, ids = data
    out = quanta.from_bytes(index.to_bytes())
    out.reset()
    out.add(xb[rows], ids[rows])
    return out


def uses_exact_fallback(kind, nallowed, nprobe=16):
    entries = 2 * N if "soar" in kind else N  # SOAR stores each vector twice
    return kind.startswith("ivf") and nallowed <= entries // 16 * nprobe // 16


@pytest.fixture(scope="module")
def indexes(data):
    return {kind: built(kind, data) for kind in KINDS}


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("fraction", [0.5, 0.15, 0.05, 0.004])
def test_filtered_equals_search_of_allowed_rows(kind, fraction, data, indexes):
    xb, xq, ids = data
    rng = np.random.default_rng(int(fraction * 1000))
    rows = np.sort(rng.choice(N, max(1, int(N * fraction)), replace=False))
    index = indexes[kind]
    if uses_exact_fallback(kind, len(rows)):
        # the allowed vectors are scored directly: by their reconstructions
        rec = index.reconstruct(ids[rows])
        Dt, It = brute_force_knn(rec, xq, K, "l2")
        D, I = index.search(xq, K, filter=ids[rows], **search_kw(kind))
        np.testing.assert_array_equal(I, ids[rows][It])
        np.testing.assert_allclose(D, Dt, rtol=1e-4, atol=1e-4)
        return
    ref = twin(index, data, rows)
    for filt in (ids[rows], quanta.Filter.ids(ids[rows]),
                 quanta.Filter.bitmap(np.isin(np.arange(ids.max() + 1), ids[rows]))):
        D, I = index.search(xq, K, filter=filt, **search_kw(kind))
        D0, I0 = ref.search(xq, K, **search_kw(kind))
        np.testing.assert_array_equal(I, I0)
        np.testing.assert_allclose(D, D0, rtol=1e-5, atol=1e-5)
        assert np.isin(I[I >= 0], ids[rows]).all()


@pytest.mark.parametrize("kind", KINDS)
def test_per_query_filters_deny_lists_and_empty(kind, data, indexes):
    xb, xq, ids = data
    index = indexes[kind]
    kw = search_kw(kind)
    # one filter per query: query i may return ids of the rows i, i + NQ, i + 2 NQ, ...
    per_query = [ids[i::NQ] for i in range(NQ)]
    D, I = index.search(xq, K, filter=per_query, **kw)
    for i in range(NQ):
        assert np.isin(I[i], per_query[i]).all()
        Di, Ii = index.search(xq[i:i + 1], K, filter=per_query[i], **kw)
        np.testing.assert_array_equal(I[i], Ii[0])
    # a deny-list: never the unfiltered top results
    _, I_all = index.search(xq, K, **kw)
    banned = np.unique(I_all)
    D, I = index.search(xq, K, filter=~quanta.Filter.ids(banned), **kw)
    assert not np.isin(I, banned).any() and (I >= 0).all()
    # an empty allow-list: nothing, padded
    D, I = index.search(xq, K, filter=[], **kw)
    assert (I == -1).all()
    # a range filter on ids
    lo, hi = int(ids[100]), int(ids[400])
    _, I = index.search(xq, K, filter=quanta.Filter.range(lo, hi), **kw)
    assert ((I >= lo) & (I < hi)).all()


def test_flat_filtered_matches_brute_force(data):
    xb, xq, ids = data
    rng = np.random.default_rng(5)
    for metric in ("l2", "ip", "cosine"):
        index = quanta.FlatIndex(DIM, metric)
        index.add(xb, ids)
        rows = np.sort(rng.choice(N, 300, replace=False))
        for nq in (1, NQ):  # the row scan and the GEMM path
            D, I = index.search(xq[:nq], K, filter=ids[rows])
            Dt, It = brute_force_knn(xb[rows], xq[:nq], K, metric)
            np.testing.assert_array_equal(I, ids[rows][It])
            np.testing.assert_allclose(D, Dt, rtol=1e-4, atol=1e-4)


def test_filter_validation(data, indexes):
    xb, xq, ids = data
    index = indexes["flat"]
    with pytest.raises(ValueError, match="one per query"):
        index.search(xq, K, filter=[ids[:3], ids[:3]])
    with pytest.raises(TypeError):
        index.search(xq, K, filter=np.array([0.5, 1.5]))
    with pytest.raises(TypeError):
        quanta.Filter.bitmap(np.array([1, 0, 1]))
    f = quanta.Filter.ids([5, 9])
    assert f.max_allowed == 2 and (~f).max_allowed is None
    np.testing.assert_array_equal(f.allows([5, 6, 9]), [True, False, True])
    np.testing.assert_array_equal((~f).allows([5, 6]), [False, True])


@pytest.mark.parametrize("kind", KINDS)
def test_remove_upsert_compact_and_persistence(kind, data, tmp_path):
    xb, xq, ids = data
    index = built(kind, data)
    kw = search_kw(kind)
    _, I_before = index.search(xq, K, **kw)
    gone = np.unique(I_before[:, :3])
    assert index.remove(gone) == len(gone)
    assert index.remove(gone) == 0  # already removed
    assert index.ntotal == N - len(gone)
    assert not index.contains(gone).any() and gone[0] not in index
    assert index.contains(ids[~np.isin(ids, gone)]).all()
    D, I = index.search(xq, K, **kw)
    assert not np.isin(I, gone).any() and (I >= 0).all()
    # the same as an index built without them
    keep = np.flatnonzero(~np.isin(ids, gone))
    ref = twin(built(kind, data), data, keep)
    D0, I0 = ref.search(xq, K, **kw)
    np.testing.assert_array_equal(I, I0)
    # survives save / load / pickle
    path = tmp_path / "idx.qnt"
    index.save(path)
    for other in (quanta.load(path), pickle.loads(pickle.dumps(index))):
        assert other.ntotal == index.ntotal
        np.testing.assert_array_equal(other.search(xq, K, **kw).ids, I)
    # compact: the same results and the memory of a fresh index holding the rest
    index.compact()
    np.testing.assert_array_equal(index.search(xq, K, **kw).ids, I)
    assert index.memory_usage <= ref.memory_usage + 64
    # upsert: the removed ids come back with new vectors
    index.add(xb[:2] * 0.5, gone[:2])
    assert index.contains(gone[:2]).all() and index.ntotal == N - len(gone) + 2
    if kind.startswith("flat"):
        _, I = index.search(xb[:1] * 0.5, 1)
        assert I[0, 0] == gone[0]


@pytest.mark.parametrize("kind", KINDS)
def test_adds_after_a_remove_survive_save_and_load(kind, data, tmp_path):
    # the removed-item mask covers the rows up to the last remove only; a later add must not
    # make the saved file unloadable (it did: "mask does not match the item count")
    xb, xq, ids = data
    index = make(kind, "l2")
    if not index.is_trained:
        index.train(xb)
    half = N // 2
    index.add(xb[:half], ids[:half])
    index.remove(ids[:3])
    index.add(xb[half:], ids[half:])
    kw = search_kw(kind)
    want = index.search(xq, K, **kw)
    index.save(tmp_path / "idx.qnt")
    for other in (quanta.load(tmp_path / "idx.qnt"), quanta.load(tmp_path / "idx.qnt", mmap=True)):
        assert other.ntotal == N - 3 and not other.contains(ids[:3]).any()
        np.testing.assert_array_equal(other.search(xq, K, **kw).ids, want.ids)


@pytest.mark.parametrize("metric", ["l2", "ip"])
def test_flat_range_search_matches_brute_force(metric, data):
    xb, xq, ids = data
    index = quanta.FlatIndex(DIM, metric)
    index.add(xb, ids)
    Dt, It = brute_force_knn(xb, xq, N, metric)
    radius = float(np.median(Dt[:, 20]))
    res = index.range_search(xq, radius)
    assert len(res.lims) == NQ + 1
    for i in range(NQ):
        d, I = res.query(i)
        want = It[i][Dt[i] < radius] if metric == "l2" else It[i][Dt[i] > radius]
        assert set(I.tolist()) == set(ids[want].tolist())
        assert (np.diff(d) >= 0).all() if metric == "l2" else (np.diff(d) <= 0).all()
    # with a filter and removed rows
    index.remove(ids[:1000])
    res2 = index.range_search(xq, radius, filter=quanta.Filter.range(0, int(ids[2000])))
    assert ((res2.ids >= ids[1000]) & (res2.ids < ids[2000])).all()


@pytest.mark.parametrize("kind", ["pq", "pq-fs", "ivf", "ivf-fs"])
def test_quantized_range_search_matches_top_k(kind, data, indexes):
    """Range hits are exactly the codes a full search ranks within the radius."""
    xb, xq, ids = data
    index = indexes[kind]
    kw = search_kw(kind)
    D, I = index.search(xq, 200, **kw)
    radius = float(np.median(D[:, 50]))
    res = index.range_search(xq, radius, **kw)
    for i in range(NQ):
        d, got = res.query(i)
        want = I[i][D[i] < radius]
        assert set(got.tolist()) == set(want.tolist())
        np.testing.assert_allclose(np.sort(d), np.sort(D[i][D[i] < radius]), rtol=1e-4,
                                   atol=1e-4)


@pytest.mark.parametrize("kind", ["ivf", "ivf-fs"])
def test_ivf_selective_filter_widens_and_falls_back(kind, data, indexes):
    xb, xq, ids = data
    index = indexes[kind]
    # 40 allowed ids in one cluster-agnostic sample: nprobe=1 alone would miss most of them.
    rows = np.random.default_rng(9).choice(N, 40, replace=False)
    D, I = index.search(xq, K, nprobe=1, filter=ids[rows])
    assert (I >= 0).all() and np.isin(I, ids[rows]).all()
    # the exact fallback (a handful of ids) ranks them by their reconstructions
    few = ids[rows[:12]]
    D, I = index.search(xq, K, nprobe=4, filter=few)
    rec = index.reconstruct(few)
    d = ((xq[:, None, :] - rec[None]) ** 2).sum(-1)
    order = np.argsort(d, axis=1, kind="stable")[:, :K]
    np.testing.assert_array_equal(I, few[order])
    np.testing.assert_allclose(D, np.take_along_axis(d, order, 1), rtol=1e-4, atol=1e-4)


def test_saved_files_follow_the_umask_and_verify(data, tmp_path):
    import os
    xb, xq, ids = data
    index = quanta.FlatIndex(DIM, "l2")
    index.add(xb)  # 384 KB of vectors: a section a mapped load does not read
    old = os.umask(0o027)
    try:
        index.save(tmp_path / "a.qnt")
    finally:
        os.umask(old)
    assert (os.stat(tmp_path / "a.qnt").st_mode & 0o777) == 0o640
    assert quanta.verify(tmp_path / "a.qnt")["ntotal"] == N
    raw = bytearray((tmp_path / "a.qnt").read_bytes())
    raw[len(raw) // 2] ^= 0xFF  # inside the vectors
    (tmp_path / "b.qnt").write_bytes(bytes(raw))
    quanta.load(tmp_path / "b.qnt", mmap=True)  # a mapped load does not read the payloads
    with pytest.raises(quanta.FormatError, match="checksum"):
        quanta.verify(tmp_path / "b.qnt")
    # ... but it checks the small sections that say how to read them (META first)
    raw = bytearray((tmp_path / "a.qnt").read_bytes())
    raw[raw.index(b'"metric"')] ^= 0x01
    (tmp_path / "c.qnt").write_bytes(bytes(raw))
    with pytest.raises(quanta.FormatError, match="META.*checksum"):
        quanta.load(tmp_path / "c.qnt", mmap=True)


MAPPED_KINDS = KINDS  # every dense kind


def mapped_bytes(index):
    """Bytes the index (and its re-ranking store) serve from a file they view."""
    refine = getattr(index, "_refine", None)
    return index._index.mapped_bytes + (0 if refine is None else refine._index.mapped_bytes)


@pytest.mark.parametrize("kind", MAPPED_KINDS)
def test_mmap_load_serves_the_codes_from_the_file(kind, data, tmp_path):
    xb, xq, ids = data
    index = built(kind, data)
    index.remove(ids[:50])
    path = tmp_path / "m.qnt"
    index.save(path)
    mapped = quanta.load(path, mmap=True)
    codes = index._index.state()["codes"] if kind.startswith("flat") else None
    assert mapped_bytes(mapped) >= (codes.nbytes if codes is not None else N)
    assert mapped_bytes(index) == 0 and mapped_bytes(quanta.load(path)) == 0
    kw = search_kw(kind)
    np.testing.assert_array_equal(mapped.search(xq, K, **kw).ids, index.search(xq, K, **kw).ids)
    np.testing.assert_array_equal(mapped.search(xq, K, filter=ids[::7], **kw).ids,
                                  index.search(xq, K, filter=ids[::7], **kw).ids)
    assert not mapped.contains(ids[:50]).any() and mapped.ntotal == N - 50
    # writes copy the mapped arrays first; the file is left as it was
    before = path.read_bytes()
    mapped.remove(ids[50:60])
    mapped.add(xb[:5], ids[:5])
    mapped.compact()
    assert mapped.contains(ids[:5]).all() and not mapped.contains(ids[50:60]).any()
    assert path.read_bytes() == before
    np.testing.assert_array_equal(quanta.load(path, mmap=True).search(xq, K, **kw).ids,
                                  index.search(xq, K, **kw).ids)


@pytest.mark.parametrize("kind", ["pq-fs", "ivf", "ivf-fs", "rbe", "rbe-ivf"])
def test_files_with_plain_codes_still_load(kind, data, tmp_path):
    """Files written before codes were saved in their in-memory layout hold plain codes."""
    from quanta.io import read_container, write_container
    xb, xq, ids = data
    index = built(kind, data)
    path = tmp_path / "new.qnt"
    index.save(path)
    fourcc, dim, ntotal, meta, arrays = read_container(path.read_bytes())
    meta.pop("code_layout")
    native = index._index
    plain = native.state()["codes"] if "ivf" in kind else native.codes()
    arrays = {t: a for t, a in arrays.items() if t not in ("BLKS", "SUMS", "INVN", "MINN")}
    arrays["CODE"] = plain
    meta.pop("min_norm2", None)
    with open(tmp_path / "old.qnt", "wb") as f:
        write_container(f, fourcc, dim, ntotal, meta, arrays)
    for old in (quanta.load(tmp_path / "old.qnt"), quanta.load(tmp_path / "old.qnt", mmap=True)):
        np.testing.assert_array_equal(old.search(xq, K, **search_kw(kind)).ids,
                                      index.search(xq, K, **search_kw(kind)).ids)


def test_one_default_metric_for_every_class_and_the_factory():
    made = [quanta.FlatIndex(16), quanta.PQIndex(16, 4), quanta.PQIndex(16, 4, 4, fast_scan=True),
            quanta.IVFPQIndex(16, 4, 4), quanta.BinaryIndex(64), quanta.IVFBinaryIndex(64, 4),
            quanta.index_factory(16, "Flat"), quanta.index_factory(16, "IVF4,PQ4x4fs")]
    assert [index.metric for index in made] == ["ip"] * len(made)


@pytest.mark.parametrize("kind", ["ivf-fs", "ivf-fs-flat"])
def test_selective_shared_filter_skips_blocks_exactly(kind, data, indexes):
    """A shared filter leaving most 32-code blocks without an allowed code: those blocks are
    skipped, and the results are the index holding only the allowed rows."""
    xb, xq, ids = data
    rows = np.sort(np.random.default_rng(3).choice(N, N // 50, replace=False))
    assert not uses_exact_fallback(kind, len(rows), nprobe=4)
    D, I = indexes[kind].search(xq, K, filter=ids[rows], nprobe=4)
    D0, I0 = twin(indexes[kind], data, rows).search(xq, K, nprobe=4)
    np.testing.assert_array_equal(I, I0)
    np.testing.assert_allclose(D, D0, rtol=1e-5, atol=1e-5)


# -- composition: the native RefineIndex and PreTransformIndex wrappers -----------------------

def test_refine_index_rescores_the_base_candidates_exactly(data):
    from quanta import _core
    xb, xq, ids = data
    base = quanta.PQIndex(DIM, 8, 4, "l2", fast_scan=True)
    base.train(xb)
    base.add(xb, ids)
    exact = quanta.FlatIndex(DIM, "l2")
    exact.add(xb, ids)
    chain = _core.RefineIndex(base._index, exact._index, 3)
    D, I = chain.search(xq, K, 1, None)
    _, cand = base._index.search(xq, 3 * K, 1, None)
    for i in range(NQ):  # the K best of the candidates by exact distance
        c = cand[i][cand[i] >= 0]
        d = ((xb[np.searchsorted(ids, c)] - xq[i]) ** 2).sum(1)
        order = np.lexsort((c, d))[:K]
        np.testing.assert_array_equal(I[i], c[order])
        np.testing.assert_allclose(D[i], d[order], rtol=1e-4, atol=1e-4)
    assert chain.remove(quanta.Filter.ids(ids[:5])._native) == 5
    assert not chain.contains(ids[:5]).any() and exact.ntotal == N - 5
    with pytest.raises(ValueError, match="same dim"):
        _core.RefineIndex(base._index, quanta.FlatIndex(DIM + 1, "l2")._index, 2)
    with pytest.raises(ValueError, match="refine_factor"):
        _core.RefineIndex(base._index, exact._index, 0)


def test_pre_transform_index_maps_vectors_before_the_inner_index(data):
    from quanta import _core
    xb, xq, ids = data
    rot = np.linalg.qr(np.random.default_rng(0).standard_normal((DIM, DIM)))[0].astype(np.float32)
    inner = quanta.FlatIndex(DIM, "l2")
    chain = _core.PreTransformIndex(rot, inner._index)
    chain.add(xb, ids, 1)
    np.testing.assert_allclose(chain.apply(xq, 1), xq @ rot, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(chain.reconstruct(ids[:3]), xb[:3], rtol=1e-4, atol=1e-4)
    D, I = chain.search(xq, K, 1, None)
    Dt, It = brute_force_knn(xb, xq, K, "l2")  # a rotation keeps l2 distances
    assert (I == ids[It]).mean() > 0.99
    np.testing.assert_allclose(D, Dt, rtol=1e-3, atol=1e-3)
    with pytest.raises(ValueError, match="orthogonal"):
        _core.PreTransformIndex(rot * 2, inner._index)
    with pytest.raises(ValueError, match="matrix"):
        _core.PreTransformIndex(rot[:4], inner._index)


def test_family_settings_pass_through_the_index_base(data, indexes):
    from quanta import _core
    xb, xq, ids = data
    index = indexes["ivf-fs"]
    params = _core.IVFSearchParams()
    params.nprobe = 3
    np.testing.assert_array_equal(_core.Index.search(index._index, xq, K, 1, None, params)[1],
                                  index.search(xq, K, nprobe=3).ids)
    # the common settings alone: the family's defaults (one list)
    np.testing.assert_array_equal(_core.Index.search(index._index, xq, K, 1, None)[1],
                                  index.search(xq, K, nprobe=1).ids)


def test_non_finite_stored_norms_are_refused(data, tmp_path):
    from quanta.io import read_container, write_container
    xb, xq, ids = data
    index = quanta.FlatIndex(DIM, "l2")
    index.add(xb)
    fourcc, dim, ntotal, meta, arrays = read_container(index.to_bytes())
    arrays = dict(arrays, NORM=np.where(np.arange(N) == 7, -np.inf, arrays["NORM"]).astype(np.float32))
    with open(tmp_path / "n.qnt", "wb") as f:
        write_container(f, fourcc, dim, ntotal, meta, arrays)
    for mmap in (False, True):
        with pytest.raises(quanta.FormatError, match="non-finite"):
            quanta.load(tmp_path / "n.qnt", mmap=mmap)


# -- the native factory: the same grammar and chains as quanta.index_factory ------------------

NATIVE_SPECS = {"Flat": "FlatIndex", "Flat(f16)": "FlatIndex", "Flat(i8)": "FlatIndex",
                "PQ8x8": "PQIndex", "PQ8x4fs": "PQFastScanIndex",
                "IVF16,PQ8x8": "IVFPQIndex", "IVF16(soar),PQ8x4fs": "IVFPQIndex",
                "PQ8x4fs,Refine(f16)": "RefineIndex", "IVF16,PQ8x4fs,RFlat": "RefineIndex",
                "Graph8(f16)": "GraphIndex", "Graph8(f16),PQ8x4": "GraphIndex",
                "RBE64x2": "BinaryIndex", "IVF16,RBE64x1,Refine(bf16)": "RefineIndex"}


@pytest.mark.parametrize("spec", list(NATIVE_SPECS))
def test_native_factory_builds_what_the_python_factory_does(data, spec):
    """The native chain of a spec, trained through the contract's train with the default
    TrainParams, answers exactly as quanta.index_factory's index trained with its defaults."""
    from quanta import _core
    xb, xq, ids = data
    native = quanta.native.index_factory(DIM, spec, "l2" if "RBE" not in spec else "ip")
    assert type(native).__name__ == NATIVE_SPECS[spec]
    assert isinstance(native, quanta.native.Index) and native.dim == DIM
    py = quanta.index_factory(DIM, spec, metric=native.metric)
    if "RBE" in spec:  # the binarizer is fitted with NumPy: train refuses until it is
        with pytest.raises(ValueError, match="binarizer"):
            native.train(xb, quanta.native.TrainParams())
        return
    assert type(py.native).__name__ == NATIVE_SPECS[spec]
    native.train(xb, quanta.native.TrainParams(threads=1))
    py.train(xb, threads=1)
    native.add(xb, ids, 1)
    py.add(xb, ids, threads=1)
    assert native.ntotal == py.ntotal == N
    params = None
    if "IVF" in spec:
        params = _core.IVFSearchParams()
        params.nprobe = 4
        if "Refine" in spec or "RFlat" in spec:
            outer = _core.RefineSearchParams()
            outer.base = params
            params = outer
        kw = {"nprobe": 4}
    else:
        kw = {}
    if "Graph" in spec:
        params = _core.GraphSearchParams()
        params.width = py.width
    D, I = native.search(xq, K, 1, None, params)
    ref = py.search(xq, K, threads=1, **kw)
    np.testing.assert_array_equal(I, ref.ids)
    np.testing.assert_allclose(D, ref.distances, rtol=1e-6)


def test_native_factory_refuses_bad_specs_and_opq():
    for spec, what in [("Flat(f64)", "unknown storage"), ("PQ8x8fs", "4-bit"),
                       ("IVF16,Flat", "must be followed"), ("Flat,Refine(f16)", "follows a PQ"),
                       ("OPQ8,PQ4x8", "must match"), ("RBE64x9", "1 to 8 planes"),
                       ("Graph8,PQ8x5", "PQ<m>x4"), ("HNSW32", "unknown index spec"),
                       ("IVF16(soar),RBE64x1", "soar")]:
        with pytest.raises(ValueError, match="spec"):
            quanta.native.parse_index_spec(spec)
        with pytest.raises(ValueError, match=what):
            quanta.index_factory(DIM, spec)
    assert quanta.native.parse_index_spec("OPQ8,IVF16,PQ8x4fs,Refine(f8e4m3)") == dict(
        family="ivf_pq", storage="f32", m=8, nbits=4, fast_scan=True, nlist=16, soar=False,
        bits=0, planes=0, query_planes=0, degree=0, rabitq=False, opq=True, refine="f8e4m3")
    with pytest.raises(ValueError, match="OPQ rotations"):
        quanta.native.index_factory(DIM, "OPQ8,PQ8x8", "l2")
    for dim, spec, what in [(0, "Flat", "dim"), (DIM, "PQ7x8", "multiple"),
                            (DIM, "Graph300", "degree"), (DIM, "PQ99999999999", "too large")]:
        with pytest.raises(ValueError, match=what):
            quanta.native.index_factory(dim, spec, "l2")
    bad = np.ones((300, DIM), np.float32)
    bad[3, 4] = np.nan
    for spec in ("PQ8x8", "IVF16,PQ8x4fs,Refine(f16)", "Graph8,PQ8x4"):
        native = quanta.native.index_factory(DIM, spec, "l2")
        with pytest.raises(ValueError, match="NaN"):
            native.train(bad, quanta.native.TrainParams())
        assert not native.is_trained


def test_every_family_is_an_index_base(data):
    """Sparse rows and token sets implement the same verbs as the dense families."""
    import scipy.sparse as sp
    xb = data[0]
    rng = np.random.default_rng(0)
    docs = sp.random(200, 500, density=0.05, random_state=1, format="csr", dtype=np.float32)
    sparse = quanta.SparseIndex()
    sparse.add(docs, np.arange(200) * 2)
    tokens = quanta.MultiVectorIndex(DIM)
    tokens.add([rng.random((5, DIM), dtype=np.float32) for _ in range(50)])
    dense = quanta.index_factory(DIM, "Flat")
    dense.add(xb[:100])
    for native in (sparse.native, tokens.tokens, dense.native):
        assert isinstance(native, quanta.native.IndexBase)
        n = native.ntotal
        assert native.is_trained and native.metric in ("ip", "l2") and native.memory_usage > 0
        held = native.contains(np.array([0, 2], np.int64))
        assert native.remove(quanta.Filter.ids([0, 2])._native) == held.sum() > 0
        assert native.ntotal == n - held.sum() and not native.contains(np.array([0, 2])).any()
        native.compact()
        assert native.ntotal == n - held.sum()
        native.reset()
        assert native.ntotal == 0
