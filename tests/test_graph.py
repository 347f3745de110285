"""GraphIndex: recall against exact search (clustered and real MiniLM embeddings), one-thread
determinism, the engine contract (ids, filters, removal, range search), persistence and bad
input."""
import pathlib
import pickle

import numpy as np
import pytest

import quanta
from conftest import brute_force_knn, clustered

N, DIM, NQ, K = 4000, 48, 40, 10


def recall(I, It):
    return float(np.mean([len(set(a[:K]) & set(b[:K])) / K for a, b in zip(I, It)]))


@pytest.fixture(scope="module")
def data():
    xb, xq = clustered(N, DIM, NQ, seed=21)
    return xb, xq, np.arange(N, dtype=np.int64) * 3 + 5


@pytest.fixture(scope="module")
def graph(data):
    xb, _, ids = data
    g = quanta.GraphIndex(DIM, "ip", 24, "f32")
    g.add(xb, ids, threads=1)
    return g


@pytest.mark.parametrize("metric", ["ip", "l2", "cosine"])
@pytest.mark.parametrize("storage", ["f32", "f16", "bf16", "i8", "f8e4m3"])
def test_recall_on_clustered_data(metric, storage):
    xb, xq = clustered(N, DIM, NQ, seed=4, normalize=metric != "cosine")
    g = quanta.GraphIndex(DIM, metric, 24, storage)
    g.add(xb)
    flat = quanta.FlatIndex(DIM, metric, storage)
    flat.add(xb)
    _, It = flat.search(xq, K)  # the same stored vectors, exactly
    D, I = g.search(xq, K, width=64)
    assert recall(I, It) >= 0.95, recall(I, It)
    # distances are the exact ones of the stored vectors returned
    Df, _ = flat.search(xq, N)
    _, If = flat.search(xq, N)
    order = np.argsort(If, axis=1)
    for i in range(3):
        want = Df[i][order[i]][I[i]]
        np.testing.assert_allclose(D[i], want, rtol=1e-4, atol=1e-4)
    # a wider beam finds at least as much
    assert recall(g.search(xq, K, width=200).ids, It) >= recall(I, It) - 0.01


@pytest.mark.parametrize("spec", ["Graph32(f16)", "Graph32(f16),PQ96x4", "Graph32(f16),RaBitQ"])
def test_recall_on_real_embeddings(spec):
    d = np.load(pathlib.Path(__file__).parent / "data" / "minilm_sample.npz")
    xb, xq = d["base"], d["queries"]
    _, It = brute_force_knn(xb, xq, K, "ip")
    g = quanta.index_factory(xb.shape[1], spec)
    g.add(xb)
    assert recall(g.search(xq, K, width=64).ids, It) >= 0.95


def test_max_candidates_chooses_lists_among_all_scored(tmp_path):
    # Lists chosen among the 256 closest vertices each insertion search scored (beyond its
    # beam of 32): a graph as good or better, the same every one-thread build, and kept in files.
    xb, xq = clustered(N, DIM, NQ, seed=14)
    _, It = brute_force_knn(xb, xq, K, "ip")
    got = {}
    for maxc in (0, 256):
        g = quanta.GraphIndex(DIM, "ip", 16, "f16", build_width=32, max_candidates=maxc)
        g.add(xb, threads=1)
        got[maxc] = (g, recall(g.search(xq, K, width=24).ids, It))
    g, r = got[256]
    assert r >= 0.9 and r >= got[0][1] - 0.02, (r, got[0][1])
    assert g.max_candidates == 256 and "max_candidates=256" in repr(g)
    again = quanta.GraphIndex(DIM, "ip", 16, "f16", build_width=32, max_candidates=256)
    again.add(xb, threads=1)
    np.testing.assert_array_equal(again.native.adjacency(), g.native.adjacency())
    assert not np.array_equal(again.native.adjacency(), got[0][0].native.adjacency())
    g.save(tmp_path / "g.qnt")
    assert repr(quanta.load(tmp_path / "g.qnt")) == repr(g)
    with pytest.raises(ValueError, match="max_candidates"):
        quanta.GraphIndex(DIM, max_candidates=-1)


def test_one_thread_builds_are_identical_and_search_ignores_threads(data):
    xb, xq, _ = data
    a, b = quanta.GraphIndex(DIM, degree=16), quanta.GraphIndex(DIM, degree=16)
    a.add(xb, threads=1)
    b.add(xb, threads=1)
    np.testing.assert_array_equal(a.native.adjacency(), b.native.adjacency())
    r1 = a.search(xq, K, threads=1)
    r2 = a.search(xq, K, threads=2)
    np.testing.assert_array_equal(r1.ids, r2.ids)
    np.testing.assert_array_equal(r1.distances, r2.distances)
    # several threads insert in another order: another graph, the same quality
    c = quanta.GraphIndex(DIM, degree=16)
    c.add(xb, threads=2)
    _, It = brute_force_knn(xb, xq, K, "ip")
    assert recall(c.search(xq, K, width=32).ids, It) >= recall(r1.ids, It) - 0.02


def test_incremental_add_joins_the_graph(data):
    xb, xq, ids = data
    g = quanta.GraphIndex(DIM, degree=24)
    g.add(xb[:N // 2], ids[:N // 2])
    g.add(xb[N // 2:], ids[N // 2:], threads=2)
    _, It = brute_force_knn(xb, xq, K, "ip")
    assert recall(g.search(xq, K).ids, ids[It]) >= 0.95
    assert g.ntotal == N and len(g) == N


def test_user_ids_k_beyond_the_index_and_empty(data):
    xb, xq, ids = data
    g = quanta.GraphIndex(DIM)
    D, I = g.search(xq[:2], 3)
    assert (I == -1).all() and np.isneginf(D).all()
    g.add(xb[:5], ids[:5])
    D, I = g.search(xq[:2], 8)
    assert sorted(I[0][:5]) == sorted(ids[:5]) and (I[:, 5:] == -1).all()
    np.testing.assert_allclose(g.reconstruct(ids[:2]), xb[:2], rtol=1e-6)


@pytest.mark.parametrize("fraction", [0.5, 0.1, 0.004])
def test_filtered_search(graph, data, fraction):
    xb, xq, ids = data
    rows = np.sort(np.random.default_rng(int(fraction * 1000)).choice(N, int(N * fraction),
                                                                      replace=False))
    # The beam holds about fraction x width allowed vertices: 96 keeps ~10 at fraction 0.1.
    D, I = graph.search(xq, K, filter=ids[rows], width=96)
    assert np.isin(I[I >= 0], ids[rows]).all()
    Dt, It = brute_force_knn(xb[rows], xq, K, "ip")
    if len(rows) <= 96:  # the width covers the allowed set: exactly brute force
        np.testing.assert_array_equal(I, ids[rows][It])
        np.testing.assert_allclose(D, Dt, rtol=1e-4, atol=1e-4)
    else:
        assert (I >= 0).all() and recall(I, ids[rows][It]) >= 0.9


def test_per_query_and_deny_filters(graph, data):
    xb, xq, ids = data
    per_query = [ids[i::NQ] for i in range(NQ)]
    _, I = graph.search(xq, K, filter=per_query)
    for i in range(NQ):
        assert np.isin(I[i], per_query[i]).all()
    _, I_all = graph.search(xq, K)
    banned = np.unique(I_all)
    _, I = graph.search(xq, K, filter=~quanta.Filter.ids(banned))
    assert not np.isin(I, banned).any() and (I >= 0).all()
    _, I = graph.search(xq, K, filter=[])
    assert (I == -1).all()


def test_remove_routes_around_and_compact_reconnects(data, tmp_path):
    xb, xq, ids = data
    g = quanta.GraphIndex(DIM, degree=24)
    g.add(xb, ids)
    _, I0 = g.search(xq, K)
    gone = np.unique(I0[:, :5])
    assert g.remove(gone) == len(gone) and g.ntotal == N - len(gone)
    assert not g.contains(gone).any() and g.contains(ids[~np.isin(ids, gone)]).all()
    keep = ~np.isin(ids, gone)
    _, It = brute_force_knn(xb[keep], xq, K, "ip")
    _, I = g.search(xq, K)
    assert not np.isin(I, gone).any() and recall(I, ids[keep][It]) >= 0.95
    g.save(tmp_path / "g.qnt")
    np.testing.assert_array_equal(quanta.load(tmp_path / "g.qnt").search(xq, K).ids, I)
    g.compact()
    assert g.native.rows == N - len(gone)
    _, I = g.search(xq, K)
    assert not np.isin(I, gone).any() and recall(I, ids[keep][It]) >= 0.95
    g.add(xb[:1] * 0.5, gone[:1])  # upsert
    assert g.contains(gone[:1]).all()


def test_range_search_is_within_radius_and_finds_the_close_ones(graph, data):
    xb, xq, ids = data
    Dt, It = brute_force_knn(xb, xq, N, "ip")
    radius = float(np.median(Dt[:, 15]))
    res = graph.range_search(xq, radius, width=128)
    for i in range(NQ):
        d, got = res.query(i)
        assert (d > radius).all() and (np.diff(d) <= 0).all()
        want = set(ids[It[i][Dt[i] > radius]].tolist())
        assert set(got.tolist()) <= want and len(got) >= 0.9 * len(want)


def test_save_load_mmap_pickle(graph, data, tmp_path):
    xb, xq, ids = data
    path = tmp_path / "g.qnt"
    graph.save(path)
    ref = graph.search(xq, K)
    for other in (quanta.load(path), quanta.load(path, mmap=True),
                  pickle.loads(pickle.dumps(graph)), quanta.from_bytes(graph.to_bytes())):
        assert repr(other) == repr(graph)
        r = other.search(xq, K)
        np.testing.assert_array_equal(r.ids, ref.ids)
        np.testing.assert_array_equal(r.distances, ref.distances)
    mapped = quanta.load(path, mmap=True)
    assert mapped.native.mapped_bytes >= N * graph.degree * 4
    before = path.read_bytes()
    mapped.add(xb[:3] * 0.9)  # copies what it changes; the file stays as it was
    mapped.remove(ids[:3])
    mapped.compact()
    assert path.read_bytes() == before
    assert quanta.read_header(path)["kind"] == "GRPH"


def test_corrupt_graph_files_fail_cleanly(graph, tmp_path):
    from quanta.io import read_container, write_container
    path = tmp_path / "g.qnt"
    graph.save(path)
    kind, dim, ntotal, meta, arrays = read_container(path.read_bytes())
    bad = dict(arrays, ADJ_=arrays["ADJ_"][:-1])  # one vertex short
    with open(tmp_path / "short.qnt", "wb") as f:
        write_container(f, kind, dim, ntotal, meta, bad)
    with pytest.raises(quanta.FormatError):
        quanta.load(tmp_path / "short.qnt")
    with open(tmp_path / "entry.qnt", "wb") as f:
        write_container(f, kind, dim, ntotal, dict(meta, entry=ntotal + 5), arrays)
    with pytest.raises(quanta.FormatError):
        quanta.load(tmp_path / "entry.qnt")
    # neighbour ids past the end: skipped, never read
    wild = dict(arrays, ADJ_=np.where(arrays["ADJ_"] % 7 == 0, 10 ** 9, arrays["ADJ_"])
                .astype(np.uint32))
    with open(tmp_path / "wild.qnt", "wb") as f:
        write_container(f, kind, dim, ntotal, meta, wild)
    for g in (quanta.load(tmp_path / "wild.qnt"), quanta.load(tmp_path / "wild.qnt", mmap=True)):
        assert g.search(np.ones((2, dim), np.float32), 5).ids.shape == (2, 5)


def test_bad_input(data):
    xb, xq, _ = data
    with pytest.raises(ValueError, match="degree"):
        quanta.GraphIndex(DIM, degree=1)
    with pytest.raises(ValueError, match="degree"):
        quanta.GraphIndex(DIM, degree=300)
    with pytest.raises(TypeError, match="degree"):
        quanta.GraphIndex(DIM, degree=2.5)
    with pytest.raises(ValueError, match="alpha"):
        quanta.GraphIndex(DIM, alpha=0.5)
    with pytest.raises(ValueError, match="alpha"):
        quanta.GraphIndex(DIM, alpha=float("nan"))
    with pytest.raises(ValueError, match="metric"):
        quanta.GraphIndex(DIM, "hamming")
    with pytest.raises(ValueError, match="storage"):
        quanta.GraphIndex(DIM, storage="f64")
    with pytest.raises(ValueError, match="width"):
        quanta.GraphIndex(DIM, width=0)
    g = quanta.GraphIndex(DIM)
    g.add(xb[:100])
    with pytest.raises(ValueError, match="dim"):
        g.add(xb[:5, :10])
    with pytest.raises(ValueError, match="NaN"):
        g.add(np.full((2, DIM), np.nan, np.float32))
    with pytest.raises(TypeError):
        g.add(np.array([["a"] * DIM]))
    with pytest.raises(ValueError):
        g.search(xq, 0)
    with pytest.raises(ValueError, match="width"):
        g.search(xq, 5, width=0)
    with pytest.raises(ValueError, match="dim"):
        g.search(xq[:, :5], 5)
    assert g.ntotal == 100  # nothing lost on the failed calls
    with pytest.raises(ValueError):
        quanta.index_factory(DIM, "Graph32(f99)")
    with pytest.raises(ValueError):
        quanta.index_factory(DIM, "Graph32,Refine(f16)")
    assert quanta.index_factory(DIM, "Graph16", metric="l2").metric == "l2"


@pytest.mark.parametrize("storage", quanta.STORAGES)
def test_scores_match_numpy_at_every_simd_level(storage, data):
    """The gathered-row kernel (dot_gather) of every SIMD level against NumPy on the decoded
    rows, for an odd dim (masked tails)."""
    xb, xq = clustered(600, 45, 8, seed=2)
    g = quanta.GraphIndex(45, "ip", 16, storage)
    g.add(xb)
    rows = g.reconstruct(np.arange(600)).astype(np.float64)
    before = quanta.simd_level()
    try:
        for level in quanta.build_info()["simd_supported"]:
            quanta.set_simd_level(level)
            D, I = g.search(xq, 5)
            want = np.einsum("qd,qkd->qk", xq.astype(np.float64), rows[I])
            np.testing.assert_allclose(D, want, rtol=1e-4, atol=1e-4, err_msg=level)
    finally:
        quanta.set_simd_level(before)


def _assert_f16_scores(xb, xq, metric, D, I):
    """D holds the exact scores (metric) of the f16-stored rows I of xb."""
    flat = quanta.FlatIndex(DIM, metric, "f16")
    flat.add(xb)
    rows = flat.reconstruct(np.arange(len(xb))).astype(np.float64)
    q = xq / np.linalg.norm(xq, axis=1, keepdims=True) if metric == "cosine" else xq
    want = (((q[:, None, :] - rows[I]) ** 2).sum(-1) if metric == "l2"
            else np.einsum("qd,qkd->qk", q, rows[I]))
    np.testing.assert_allclose(D, want, rtol=1e-3, atol=1e-3)


@pytest.mark.parametrize("metric", ["ip", "l2", "cosine"])
def test_estimation_codes_keep_recall_and_persist(metric, tmp_path):
    xb, xq = clustered(N, DIM, NQ, seed=8, normalize=metric != "cosine")
    _, It = brute_force_knn(xb, xq, K, metric)
    g = quanta.index_factory(DIM, "Graph24(f16),PQ12x4", metric=metric)
    assert g.codes == "PQ12x4" and not g.is_trained
    g.add(xb)  # trains the quantizer from its rows
    assert g.is_trained and g.native.codes().size == N * 6
    D, I = g.search(xq, K, width=64)
    assert recall(I, It) >= 0.93
    # the exact scores of what it returns, whatever the estimates said
    _assert_f16_scores(xb, xq, metric, D, I)
    # a larger slack scores more neighbours exactly: at least as good
    assert recall(g.search(xq, K, width=64, slack=8.0).ids, It) >= recall(I, It) - 0.01
    g.save(tmp_path / "g.qnt")
    for other in (quanta.load(tmp_path / "g.qnt"), quanta.load(tmp_path / "g.qnt", mmap=True)):
        assert repr(other) == repr(g)
        np.testing.assert_array_equal(other.search(xq, K, width=64).ids, I)
    # removal and compaction carry the codes along
    g.remove(np.arange(0, N, 2))
    g.compact()
    assert g.native.codes().size == (N // 2) * 6
    keep = np.arange(1, N, 2)
    _, It2 = brute_force_knn(xb[keep], xq, K, metric)
    assert recall(g.search(xq, K, width=64).ids, keep[It2]) >= 0.9


def _rabitq_reference(state, x, dim):
    """RaBitQ codes (sign bits, packed as the native codes) and factors |r|^2 / |P r|_1 of
    rows x from the codec's state (centre, permutation, signs, orthogonal 64-blocks), in
    NumPy; also the rotation P as a matrix."""
    center, perm = state[:dim], state[dim:2 * dim].astype(np.int64)
    sign, blocks = state[2 * dim:3 * dim], state[3 * dim:]
    P, at = np.zeros((dim, dim)), 0
    for s in range(0, dim, 64):
        b = min(64, dim - s)
        Q = blocks[at:at + b * b].reshape(b, b).astype(np.float64)
        at += b * b
        # (P x)[s + i] = sum_t Q[i, t] * sign[s + t] * x[perm[s + t]]
        P[s:s + b, perm[s:s + b]] = Q * sign[s:s + b]
    r = x.astype(np.float64) - center
    rr = r @ P.T
    bits = np.packbits(rr > 0, axis=1, bitorder="little")
    factors = (r * r).sum(1) / np.abs(rr).sum(1)
    return bits, factors, P, center


@pytest.mark.parametrize("metric", ["ip", "l2", "cosine"])
def test_rabitq_codes_match_numpy_and_estimate(metric, tmp_path):
    xb, xq = clustered(N, DIM, NQ, seed=9, normalize=metric != "cosine")
    g = quanta.index_factory(DIM, "Graph24(f16),RaBitQ", metric=metric)
    assert g.codes == "RaBitQ" and not g.is_trained
    g.add(xb)  # trains: the centre is the rows' mean
    assert g.is_trained
    rows = xb / np.linalg.norm(xb, axis=1, keepdims=True) if metric == "cosine" else xb
    state = g.native.codec_state()
    bits, factors, P, center = _rabitq_reference(state, rows, DIM)
    np.testing.assert_allclose(P @ P.T, np.eye(DIM), atol=1e-5)  # a rotation
    np.testing.assert_allclose(center, rows.mean(0), rtol=1e-4, atol=1e-5)
    # per row: DIM / 8 code bytes, the factor, and for l2 |x|^2
    per = DIM // 8 + (8 if metric == "l2" else 4)
    codes = g.native.codes().reshape(N, per)
    np.testing.assert_array_equal(codes[:, :DIM // 8], bits)
    np.testing.assert_allclose(codes[:, DIM // 8:DIM // 8 + 4].copy().view(np.float32)[:, 0],
                               factors, rtol=1e-4)
    if metric == "l2":
        np.testing.assert_allclose(codes[:, -4:].copy().view(np.float32)[:, 0],
                                   (rows.astype(np.float64) ** 2).sum(1), rtol=1e-4)
    # the estimate <q, c> + f <P q, signs> tracks the true inner product: unbiased, and at 48
    # dimensions its error (about |q| |x - c| / sqrt(dim)) is two thirds of the scores' spread
    signs = np.where(np.unpackbits(bits, axis=1, bitorder="little")[:, :DIM] > 0, 1.0, -1.0)
    q = xq[:8].astype(np.float64)
    est = (q @ center)[:, None] + (signs @ P @ q.T).T * factors
    true = q @ rows.T.astype(np.float64)
    err = est - true
    assert abs(err.mean()) < 0.05 * true.std() and err.std() < 0.75 * true.std(), \
        (err.mean(), err.std(), true.std())
    # the search: recall, the exact scores of what it returns, persistence, compaction
    _, It = brute_force_knn(xb, xq, K, metric)
    D, I = g.search(xq, K, width=64)
    assert recall(I, It) >= 0.93
    _assert_f16_scores(xb, xq, metric, D, I)
    g.save(tmp_path / "g.qnt")
    for other in (quanta.load(tmp_path / "g.qnt"), quanta.load(tmp_path / "g.qnt", mmap=True),
                  pickle.loads(pickle.dumps(g))):
        assert repr(other) == repr(g)
        np.testing.assert_array_equal(other.search(xq, K, width=64).ids, I)
    g.remove(np.arange(0, N, 2))
    g.compact()
    np.testing.assert_array_equal(g.native.codes().reshape(-1, per), codes[1::2])
    _, It2 = brute_force_knn(xb[1::2], xq, K, metric)
    assert recall((g.search(xq, K, width=64).ids - 1) // 2, It2) >= 0.9


def _row_codes(packed_row, m, degree):
    """The plain 4-bit codes (degree x m) of one row in the fast-scan layout (a reference
    reader of fast_scan_codes.hpp: block b, pair t, byte 16 h + v holds sub-quantizer 2t + h of
    vector v in its low nibble and of vector v + 16 in its high nibble)."""
    npairs = (m + 1) // 2
    out = np.zeros((degree, m), np.uint8)
    for pos in range(degree):
        for j in range(m):
            byte = packed_row[(pos // 32 * npairs + j // 2) * 32 + 16 * (j % 2) + pos % 16]
            out[pos, j] = byte & 15 if pos % 32 < 16 else byte >> 4
    return out


def test_neighbour_codes_follow_the_lists_through_adds_and_compaction():
    xb, xq = clustered(1500, DIM, NQ, seed=12)
    degree, m = 40, 12  # two fast-scan blocks per row, the second one partly empty
    g = quanta.GraphIndex(DIM, "ip", degree, "f16", codes=f"PQ{m}x4")

    def check():
        adj = g.native.adjacency().reshape(-1, degree)
        plain = g.native.codes().reshape(-1, m // 2)
        unpacked = np.stack([plain & 15, plain >> 4], axis=-1).reshape(-1, m)
        packed = g.native.neighbour_codes().reshape(len(adj), -1)
        assert packed.shape[1] == 4 * degree + 2 * (m // 2) * 32  # the list, then two blocks
        np.testing.assert_array_equal(packed[:, :4 * degree].copy().view(np.uint32), adj)
        for v in range(0, len(adj), 97):
            want = np.zeros((degree, m), np.uint8)
            live = adj[v] != 0xFFFFFFFF
            want[live] = unpacked[adj[v][live]]
            np.testing.assert_array_equal(_row_codes(packed[v, 4 * degree:], m, degree), want)

    g.add(xb[:1000])
    check()
    g.add(xb[1000:])  # the old rows that gained a neighbour are packed again
    check()
    g.remove(np.arange(0, 1500, 3))
    g.compact()
    check()
    _, It = brute_force_knn(xb[np.arange(1500) % 3 != 0], xq, K, "ip")
    keep = np.flatnonzero(np.arange(1500) % 3 != 0)
    assert recall(g.search(xq, K, width=64).ids, keep[It]) >= 0.9


def check_pivots(index):
    """A coded graph's pivots (where its searches may start): the entry, then 127 distinct
    vertices spread over the rows."""
    p = index.native.pivots()
    assert len(p) == 128 and p[0] == index.native.entry
    assert len(set(p.tolist())) == 128 and p.max() < index.native.rows
    assert np.diff(np.sort(p)).max() <= 3 * index.native.rows / 128
    return p


@pytest.mark.parametrize("codes", ["PQ12x4", "RaBitQ"])
def test_coded_graph_holds_its_lists_once(codes, tmp_path):
    # With 4-bit codes the lists live in the neighbour rows only: after a build, a load or a
    # compaction the index holds the vectors, the rows, the per-vector codes, the codec and
    # the pivots (their ids, fast-scan code blocks and RaBitQ's factors).
    xb, xq = clustered(N, DIM, NQ, seed=12)
    g = quanta.GraphIndex(DIM, "ip", 24, "f16", codes=codes)
    g.add(xb[:3000])
    g.add(xb[3000:])  # an incremental add rebuilds the lists from the rows and drops them again
    nat = g.native
    m, factors = DIM // 4, 1 if codes == "RaBitQ" else 0

    def parts(index):
        np_ = len(check_pivots(index))
        pivots = np_ * 4 + -(-np_ // 32) * ((m + 1) // 2) * 32 + np_ * factors * 4
        return (index.native.vectors.memory_usage + index.native.neighbour_codes().nbytes +
                index.native.codes().nbytes + index.native.codec_state().nbytes + pivots)

    assert g.memory_usage == parts(g)
    rows = nat.neighbour_codes().reshape(N, -1)[:, :4 * 24].copy().view(np.uint32)
    np.testing.assert_array_equal(nat.adjacency().reshape(N, 24), rows)
    I = g.search(xq, K, width=48).ids
    g.save(tmp_path / "g.qnt")
    for other in (quanta.load(tmp_path / "g.qnt"), pickle.loads(pickle.dumps(g))):
        assert other.memory_usage == parts(other)
        np.testing.assert_array_equal(other.native.pivots(), nat.pivots())
        np.testing.assert_array_equal(other.search(xq, K, width=48).ids, I)
    g.remove(np.arange(0, N, 3))
    g.compact()
    assert g.memory_usage == parts(g)
    _, It = brute_force_knn(xb[np.arange(N) % 3 != 0], xq, K, "ip")
    live = np.flatnonzero(np.arange(N) % 3 != 0)
    got = g.search(xq, K, width=48).ids
    assert recall(np.searchsorted(live, got), It) >= 0.9


def test_pivots_are_live_and_only_in_large_coded_graphs():
    xb, xq = clustered(N, DIM, NQ, seed=16)
    g = quanta.GraphIndex(DIM, "l2", 16, "f16", codes="PQ12x4")
    g.add(xb[:500])
    assert len(g.native.pivots()) == 0  # under 4 x 128 vertices: searches start at the entry
    g.add(xb[500:3000])
    gone = check_pivots(g)[1::2]
    g.remove(gone)  # default ids are positions
    g.add(xb[3000:])  # pivots are chosen again, among the live vertices
    p = check_pivots(g)
    assert not np.isin(p, gone).any()
    plain = quanta.GraphIndex(DIM, "l2", 16, "f16")
    plain.add(xb)
    assert len(plain.native.pivots()) == 0  # no codes to estimate them with
    _, It = brute_force_knn(np.delete(xb, gone, axis=0), xq, K, "l2")
    live = np.delete(np.arange(N), gone)
    assert recall(np.searchsorted(live, g.search(xq, K, width=48).ids), It) >= 0.9


@pytest.mark.parametrize("refine", [0, 1])
def test_rows_with_codes_are_filled(refine):
    # With 4-bit codes every slot of a row is estimated anyway: the slots RobustPrune leaves
    # empty get the closest candidates it dropped, so rows are full; without codes they are not.
    xb, xq = clustered(2000, DIM, NQ, seed=15)
    _, It = brute_force_knn(xb, xq, K, "ip")
    lengths = {}
    for codes in (None, "PQ12x4"):
        g = quanta.GraphIndex(DIM, "ip", 32, "f16", codes=codes, refine=refine)
        g.add(xb, threads=1)
        adj = g.native.adjacency().reshape(-1, 32)
        live = adj != 0xFFFFFFFF
        lengths[codes] = live.sum(1)
        for v in range(len(adj)):
            row = adj[v][live[v]]
            assert len(set(row.tolist())) == len(row) and v not in row and (row < len(adj)).all()
        assert recall(g.search(xq, K, width=48).ids, It) >= 0.9
    assert lengths[None].min() < 32  # RobustPrune alone leaves some rows short...
    # ...which the fill completes (without refinement, a vertex inserted while the graph was
    # small met fewer candidates than that)
    assert np.mean(lengths["PQ12x4"] == 32) >= (1 if refine else 0.95)


def test_files_without_neighbour_codes_load(tmp_path):
    # Files written before the fast-scan rows hold no GNBC section: it is derived again.
    xb, xq = clustered(1000, DIM, NQ, seed=13)
    g = quanta.GraphIndex(DIM, "l2", 24, "f16", codes="PQ24x4")
    g.add(xb)
    kind, dim, ntotal, meta, arrays = quanta.io.read_container(g.to_bytes())
    del arrays["GNBC"]
    old = quanta.GraphIndex._from_parts(dim, ntotal, meta, arrays, "old file")
    np.testing.assert_array_equal(old.native.neighbour_codes(), g.native.neighbour_codes())
    np.testing.assert_array_equal(old.search(xq, K).ids, g.search(xq, K).ids)
    arrays["GNBC"] = arrays["GCOD"]  # the wrong size: a clear error, not a crash
    with pytest.raises(quanta.FormatError, match="neighbours' codes"):
        quanta.GraphIndex._from_parts(dim, ntotal, meta, arrays, "bad file")


def test_refine_setting():
    xb, xq = clustered(N, DIM, NQ, seed=14)
    _, It = brute_force_knn(xb, xq, K, "ip")
    got = {}
    for refine in (0, 1):
        g = quanta.GraphIndex(DIM, "ip", 16, "f32", refine=refine)
        assert g.refine == refine
        g.add(xb, threads=1)
        got[refine] = recall(g.search(xq, K, width=16).ids, It)
    assert got[1] >= got[0] - 0.005 and got[1] >= 0.85


def test_codes_and_slack_validation():
    with pytest.raises(ValueError, match="codes"):
        quanta.GraphIndex(DIM, codes="PQ7x4")  # 7 does not divide 48
    with pytest.raises(ValueError, match="codes"):
        quanta.GraphIndex(DIM, codes="OPQ8")
    with pytest.raises(ValueError, match="codes"):
        quanta.index_factory(DIM, "Graph16,PQ12x5")
    with pytest.raises(ValueError, match="RaBitQ"):
        quanta.GraphIndex(50, codes="RaBitQ")  # 50 is not a multiple of 4
    assert quanta.native.parse_index_spec("Graph16(f16),RaBitQ")["rabitq"]
    g = quanta.GraphIndex(DIM, codes="PQ12")
    assert g.codes == "PQ12x4"
    g.add(clustered(300, DIM, 1, seed=1)[0])
    with pytest.raises(ValueError, match="slack"):
        g.search(np.ones((1, DIM), np.float32), 3, slack=-1)
    with pytest.raises(ValueError):
        quanta.GraphIndex(DIM, codes="PQ12").add(np.ones((5, DIM), np.float32))  # < 16 rows


def test_progress_line_and_errors_from_the_build_thread(capfd):
    xb, _ = clustered(3000, DIM, 1, seed=3)
    g = quanta.GraphIndex(DIM, storage="f16")
    g.add(xb, progress=True)
    assert "GraphIndex add: 100.0% of the vectors" in capfd.readouterr().err
    with pytest.raises(ValueError, match="f16"):
        g.add(np.full((2, DIM), 1e6, np.float32), progress=True)  # raised in the worker thread
    assert g.ntotal == 3000
