"""quanta.cuda against the CPU indexes, on two backends: "emulated" runs quanta.cuda's host code
with NumPy stand-ins for CuPy and the kernels (tests/cuda_emulator.py; always runs), "gpu" runs
it on a CUDA device (skipped, with the reason, when there is none). Chunked scoring is forced
with a small quanta.cuda._SCORE_BYTES so that every index kind scores more than one chunk."""
import numpy as np
import pytest

import quanta
import quanta.cuda
import cuda_emulator
from conftest import clustered


@pytest.fixture(params=["emulated", pytest.param("gpu", marks=pytest.mark.gpu)])
def cp(request, monkeypatch):
    """The CuPy the test uses: the real one on a GPU, else the emulator's stand-in."""
    if request.param == "gpu":
        if not quanta.cuda_available():
            pytest.skip(f"no GPU: {quanta.cuda_status()['reason']}")
        return pytest.importorskip("cupy")
    fake, _ = cuda_emulator.install(monkeypatch)
    return fake


@pytest.fixture
def small_chunks(monkeypatch):
    """Scores in chunks of a few hundred columns, so every search spans several."""
    def set_columns(nq, columns):
        monkeypatch.setattr(quanta.cuda, "_SCORE_BYTES", 4 * nq * columns)
    return set_columns


def gpu_module():
    return quanta.cuda._module()


def overlap(I, I0):
    return float(np.mean([len(set(a) & set(b)) / len(b) for a, b in zip(I, I0)]))


def host(cp, x):
    return cp.asnumpy(x) if hasattr(x, "__cuda_array_interface__") else np.asarray(x)


# -- the shared top-k -----------------------------------------------------------------------------

@pytest.mark.parametrize("k", [1, 10, 100, 1000])
def test_topk_matches_numpy_across_chunks(cp, k):
    """Ties ordered by position, NaN below every number, results independent of chunking."""
    rng = np.random.default_rng(k)
    nq, n = 5, 3000
    s = rng.integers(0, 50, (nq, n)).astype(np.float32)  # many exact ties
    s[:, ::97] = np.nan
    s[0, :] = np.nan  # a query whose scores are all NaN
    mod, stream = gpu_module(), 0
    D, I = cp.empty((nq, k), cp.float32), cp.empty((nq, k), cp.int64)
    mod.topk(0, 1, 0, 0, nq, k, D.data.ptr, I.data.ptr, True, stream)
    for c0 in range(0, n, 700):  # uneven chunks, each a strided block of the full matrix
        part = cp.asarray(np.ascontiguousarray(s[:, c0:c0 + 700]))
        mod.topk(part.data.ptr, part.shape[1], c0, part.shape[1], nq, k, D.data.ptr, I.data.ptr,
                 False, stream)
    key = np.where(np.isnan(s), -np.inf, s).astype(np.float64)
    for i in range(nq):
        order = np.lexsort((np.arange(n), -key[i]))[:k]
        np.testing.assert_array_equal(host(cp, I)[i], order)
        np.testing.assert_array_equal(host(cp, D)[i], key[i][order].astype(np.float32))


def test_topk_refuses_bad_k(cp):
    mod = gpu_module()
    D, I = cp.empty((1, 1), cp.float32), cp.empty((1, 1), cp.int64)
    for k in (0, 1025):
        with pytest.raises(ValueError):
            mod.topk(0, 1, 0, 0, 1, k, D.data.ptr, I.data.ptr, True, 0)


# -- flat ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("storage", quanta.STORAGES)
@pytest.mark.parametrize("metric", ["ip", "l2", "cosine"])
@pytest.mark.parametrize("k", [1, 10, 100])
def test_gpu_flat_matches_cpu(cp, small_chunks, storage, metric, k):
    xb, xq = clustered(3000, 72, 30, seed=11)
    cpu = quanta.FlatIndex(72, metric, storage)
    cpu.add(xb, ids=np.arange(3000) + 7)
    gpu = quanta.cuda.FlatIndex(cpu)
    small_chunks(30, 700)
    D0, I0 = cpu.search(xq, k)
    D, I = gpu.search(cp.asarray(xq), k)
    assert isinstance(D, cp.ndarray) and isinstance(I, cp.ndarray)
    D, I = host(cp, D), host(cp, I)
    np.testing.assert_allclose(D, D0, rtol=1e-4, atol=1e-4)
    assert (I == I0).mean() >= 0.99
    Dh, Ih = gpu.search(xq, k)  # host in, host out
    assert isinstance(Dh, np.ndarray) and not hasattr(Dh, "__cuda_array_interface__")
    np.testing.assert_array_equal(Ih, I)


def test_gpu_flat_k1000_and_ties_in_position_order(cp, small_chunks):
    cpu = quanta.FlatIndex(16, "ip", "f32")
    cpu.add(np.ones((4000, 16), np.float32))
    gpu = quanta.cuda.FlatIndex(cpu)
    small_chunks(3, 900)
    D, I = gpu.search(np.ones((3, 16), np.float32), 1000)
    np.testing.assert_array_equal(I, np.broadcast_to(np.arange(1000), (3, 1000)))
    np.testing.assert_array_equal(D, 16.0)


def test_gpu_padding_and_errors(cp):
    cpu = quanta.FlatIndex(8, "l2", "f16")
    cpu.add(np.eye(8, dtype=np.float32)[:3])
    gpu = quanta.cuda.FlatIndex(cpu)
    D, I = gpu.search(np.eye(8, dtype=np.float32)[:2], 5)
    assert (I[:, 3:] == -1).all() and np.isinf(D[:, 3:]).all()
    with pytest.raises(ValueError, match="queries"):
        gpu.search(cp.ones((2, 9), cp.float32), 1)
    with pytest.raises(ValueError, match="NaN"):
        gpu.search(cp.full((1, 8), cp.nan, cp.float32), 1)
    with pytest.raises(ValueError, match="k must be <= 1024"):
        gpu.search(np.ones((1, 8), np.float32), 1025)
    with pytest.raises(TypeError):
        gpu.search(np.ones((1, 8), np.float32), 2.5)


def test_gpu_strided_fortran_and_float64_queries(cp):
    xb, xq = clustered(4000, 64, 40, seed=8)
    cpu = quanta.FlatIndex(64, "cosine", "f32")
    cpu.add(xb)
    gpu = quanta.cuda.FlatIndex(cpu)
    _, I0 = gpu.search(cp.asarray(xq), 10)
    wide = cp.zeros((40, 128), cp.float32)
    wide[:, ::2] = cp.asarray(xq)
    for q in (cp.asfortranarray(cp.asarray(xq)), wide[:, ::2], cp.asarray(xq, cp.float64),
              xq.astype(np.float64)[:, :], np.asfortranarray(xq)):
        np.testing.assert_array_equal(host(cp, gpu.search(q, 10).ids), host(cp, I0))


# -- PQ / IVF-PQ / binary ---------------------------------------------------------------------------

@pytest.mark.parametrize("spec", ["PQ8x8", "PQ8x4", "PQ7x4", "PQ8x4fs", "OPQ8,PQ8x8"])
@pytest.mark.parametrize("metric", ["l2", "ip"])
def test_gpu_pq_matches_cpu_adc_across_chunks(cp, small_chunks, spec, metric):
    """More than one score chunk: a wrong code stride re-scores the first rows under later
    positions (the bug the 1-D codes array caused)."""
    d = 56 if spec == "PQ7x4" else 64
    xb, xq = clustered(3000, d, 20, seed=5)
    cpu = quanta.index_factory(d, spec, metric=metric)
    cpu.train(xb, niter=5)
    cpu.add(xb, ids=np.arange(3000) * 2)
    gpu = quanta.cuda.PQIndex(cpu)
    small_chunks(20, 700)
    D, I = gpu.search(cp.asarray(xq), 10)
    D, I = host(cp, D), host(cp, I)
    # reference: float-table ADC of the stored codes
    xr = cpu.reconstruct(np.arange(3000) * 2)
    ref = ((xq[:, None] - xr[None]) ** 2).sum(-1) if metric == "l2" else xq @ xr.T
    np.testing.assert_allclose(D, np.take_along_axis(ref, I // 2, 1), rtol=1e-4, atol=1e-4)
    best = np.sort(ref, 1)[:, :10] if metric == "l2" else -np.sort(-ref, 1)[:, :10]
    np.testing.assert_allclose(D, best, rtol=1e-4, atol=1e-4)
    assert (I >= 2 * 700).any()  # later chunks did contribute


def test_gpu_pq_tables_above_48k(cp):
    """8-bit tables of m=64 (64 KiB) and m=128 (128 KiB): opt-in shared memory, or global
    memory on devices with less."""
    for d, m in ((128, 64), (256, 128)):
        xb, xq = clustered(1500, d, 10, seed=3)
        cpu = quanta.index_factory(d, f"PQ{m}x8")
        cpu.train(xb, niter=2)
        cpu.add(xb)
        D0, I0 = cpu.search(xq, 10)
        D, I = quanta.cuda.PQIndex(cpu).search(xq, 10)
        assert overlap(I, I0) >= 0.98
        np.testing.assert_allclose(D, D0, rtol=1e-3, atol=1e-3)


@pytest.mark.parametrize("spec", ["IVF16,PQ8x8", "IVF16,PQ8x4fs", "IVF16,PQ8x8,Refine(f16)",
                                  "OPQ8,IVF16,PQ8x8"])
@pytest.mark.parametrize("metric", ["l2", "ip"])
def test_gpu_ivfpq_matches_cpu(cp, small_chunks, spec, metric):
    xb, xq = clustered(3000, 64, 20, seed=6)
    cpu = quanta.index_factory(64, spec, metric=metric)
    cpu.train(xb, niter=5)
    cpu.add(xb)
    gpu = quanta.cuda.IVFPQIndex(cpu)
    small_chunks(20, 2000)  # query batches of a few queries
    for nprobe in (1, 4, 16):  # 16 = nlist: every list
        D, I = gpu.search(xq, 10, nprobe=nprobe)
        if cpu.refine is None:
            xr = cpu.reconstruct(np.arange(3000))
            ref = ((xq[:, None] - xr[None]) ** 2).sum(-1) if metric == "l2" else xq @ xr.T
            np.testing.assert_allclose(D, np.take_along_axis(ref, I, 1), rtol=1e-4, atol=1e-4)
        D0, I0 = cpu.search(xq, 10, nprobe=nprobe)
        if not cpu.fast_scan:  # fast-scan CPU distances come from uint8 tables
            np.testing.assert_allclose(D, D0, rtol=1e-3, atol=1e-3)
        assert overlap(I, I0) >= (0.8 if cpu.fast_scan else 0.98)
    with pytest.raises(ValueError):
        gpu.search(xq, 10, nprobe=17)


@pytest.mark.parametrize("metric", ["l2", "ip"])
def test_gpu_ivfpq_codes_of_the_vectors(cp, metric):
    """by_residual=False: one table per query for every list; SOAR indexes are refused."""
    xb, xq = clustered(3000, 64, 20, seed=7)
    cpu = quanta.IVFPQIndex(64, 16, 8, 8, metric, by_residual=False)
    cpu.train(xb, niter=5)
    cpu.add(xb)
    for nprobe in (2, 16):
        D, I = quanta.cuda.IVFPQIndex(cpu).search(xq, 10, nprobe=nprobe)
        D0, I0 = cpu.search(xq, 10, nprobe=nprobe)
        np.testing.assert_allclose(D, D0, rtol=1e-3, atol=1e-3)
        assert overlap(I, I0) >= 0.98
    soar = quanta.index_factory(64, "IVF16(soar),PQ8x8", metric=metric)
    soar.train(xb, niter=3)
    with pytest.raises(ValueError, match="soar"):
        quanta.cuda.IVFPQIndex(soar)


def test_gpu_ivf_scores_only_probed_rows(cp, monkeypatch):
    """The score row of a query is as wide as the lists it probes, not nprobe x the longest."""
    xb, xq = clustered(4000, 32, 30, seed=9, nclusters=4)  # skewed list sizes
    cpu = quanta.index_factory(32, "IVF32,PQ8x8")
    cpu.train(xb, niter=4)
    cpu.add(xb)
    gpu = quanta.cuda.IVFPQIndex(cpu)
    widths = []
    mod = gpu._mod
    real = mod.ivf_adc_scores

    def spy(*args):
        widths.append(args[-2])
        return real(*args)

    monkeypatch.setattr(mod, "ivf_adc_scores", spy)
    D, I = gpu.search(xq, 10, nprobe=4)
    sizes = cpu.native.state()["sizes"]
    assert widths and max(widths) < 4 * sizes.max()
    assert overlap(I, cpu.search(xq, 10, nprobe=4).ids) >= 0.98


@pytest.mark.parametrize("spec", ["RBE64x2", "RBE100x3", "RBE64x1q1,Refine(f16)"])
def test_gpu_binary_matches_cpu(cp, small_chunks, spec):
    xb, xq = clustered(2000, 64, 20, seed=7)
    cpu = quanta.index_factory(64, spec)
    cpu.train(xb)
    cpu.add(xb, ids=np.arange(2000) * 5)
    gpu = quanta.cuda.BinaryIndex(cpu)
    small_chunks(20, 600)
    D, I = gpu.search(cp.asarray(xq), 10)
    D0, I0 = cpu.search(xq, 10)
    # exact integer scores and the CPU's arithmetic: identical distances
    np.testing.assert_array_equal(host(cp, D), D0)
    same = D0[:, :-1] > D0[:, 1:]  # ties may order differently
    assert np.mean(host(cp, I)[:, :-1][same] == I0[:, :-1][same]) > 0.99


def test_gpu_kmeans(cp, small_chunks):
    xb, _ = clustered(6000, 32, 1, seed=7)
    small_chunks(6000, 20)  # the 64 centroids scored in chunks
    c, assign = quanta.cuda.kmeans(xb, 64, niter=10, seed=1)
    assert c.shape == (64, 32) and assign.shape == (6000,)
    d = ((xb[:, None] - c[None]) ** 2).sum(-1)
    assert (assign == d.argmin(1)).mean() >= 0.999  # the nearest centroid (float32 ties aside)
    inertia = d.min(1).sum()
    cpu = quanta.kmeans(xb, 64, niter=10, seed=1)
    cpu_inertia = ((xb[:, None] - cpu.centroids[None]) ** 2).sum(-1).min(1).sum()
    assert inertia <= 1.1 * cpu_inertia
    with pytest.raises(ValueError):
        quanta.cuda.kmeans(xb, 0)


# -- MUVERA ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("options", [
    dict(k_sim=4, d_proj=8, r_reps=5),
    dict(k_sim=3, d_proj=6, r_reps=3, projection="count_sketch", bucket_order="gray"),
    dict(k_sim=3, d_proj=None, r_reps=2),
    dict(k_sim=3, d_proj=8, r_reps=4, final_dim=50),
])
def test_gpu_fde_matches_cpu(cp, options):
    rng = np.random.default_rng(5)
    sets = [rng.standard_normal((int(rng.integers(1, 40)), 32)).astype(np.float32)
            for _ in range(30)]
    enc = quanta.FDEEncoder(32, seed=2, **options)
    gpu = quanta.cuda.FDEEncoder(enc)
    for cpu_fn, gpu_fn in ((enc.encode_documents, gpu.encode_documents),
                           (enc.encode_queries, gpu.encode_queries)):
        ref = cpu_fn(sets)
        got = gpu_fn([cp.asarray(s) for s in sets])
        assert isinstance(got, cp.ndarray)
        # a token whose hyperplane product is within rounding of 0 may change bucket: rare
        close = np.isclose(host(cp, got), ref, rtol=1e-4, atol=1e-4).all(axis=1)
        assert close.mean() >= 0.95


def _token_corpus(dim, ndocs, nq, seed):
    rng = np.random.default_rng(seed)
    topics = rng.standard_normal((50, dim)).astype(np.float32)
    docs = [topics[rng.integers(0, 50, int(rng.integers(5, 40)))] +
            0.3 * rng.standard_normal((1, dim)).astype(np.float32) for _ in range(ndocs)]
    queries = [topics[rng.integers(0, 50, int(rng.integers(2, 40)))] for _ in range(nq)]
    return docs, queries


def test_gpu_multivector_matches_cpu(cp, small_chunks, monkeypatch):
    docs, queries = _token_corpus(64, 300, 8, seed=6)
    cpu = quanta.MultiVectorIndex(64, k_sim=3, d_proj=8, r_reps=8, storage="f16",
                                  first_stage="fde", index="Flat")
    cpu.add(docs)
    gpu = quanta.cuda.MultiVectorIndex(cpu)
    small_chunks(8, 70)
    cands = []
    real = gpu._mod.chamfer_scores
    monkeypatch.setattr(gpu._mod, "chamfer_scores", lambda *a: (cands.append(a[5]), real(*a)))
    for exact in (True, False):
        cands.clear()
        D0, I0 = cpu.search(queries, k=10, exact=exact, candidates=100)
        D, I = gpu.search(queries, k=10, exact=exact, candidates=100)
        np.testing.assert_allclose(D, D0, rtol=1e-4, atol=1e-3)
        assert (I == I0).mean() >= 0.95
        # exact search scores documents by position: no nq x ntotal candidate array
        assert all(c == 0 for c in cands) if exact else all(c != 0 for c in cands)


@pytest.mark.parametrize("dim", [768, 1000])
def test_gpu_chamfer_any_dim(cp, dim):
    """Token tiles past 48 KiB of shared memory: dims beyond the old 768 limit."""
    docs, queries = _token_corpus(dim, 40, 3, seed=4)
    cpu = quanta.MultiVectorIndex(dim, k_sim=3, d_proj=8, r_reps=2, first_stage="fde",
                                  index="Flat")
    cpu.add(docs)
    D0, I0 = cpu.search(queries, k=10, exact=True)
    D, I = quanta.cuda.MultiVectorIndex(cpu).search(queries, k=10, exact=True)
    np.testing.assert_allclose(D, D0, rtol=1e-4, atol=1e-2)
    assert (I == I0).mean() >= 0.95


# -- sparse ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("values", ["f16", "u8"])
def test_sparse_exact_search_and_rescore(cp, small_chunks, values):
    sp = pytest.importorskip("scipy.sparse")
    rng = np.random.default_rng(5)
    for dim in (3000, 70_000):  # u16 and u32 term ids
        X = sp.random(400, dim, density=40 / dim, format="csr", dtype=np.float32, random_state=rng)
        Q = sp.random(6, dim, density=20 / dim, format="csr", dtype=np.float32, random_state=rng)
        X.data = rng.uniform(0.01, 2.0, X.nnz).astype(np.float32)
        cpu = quanta.SparseIndex(n_postings=50, values=values)
        cpu.add(X)
        gpu = quanta.cuda.SparseIndex(cpu)
        small_chunks(6, 150)
        D, I = gpu.search(Q, 10)
        Dc, Ic = cpu.search(Q, 10, exact=True)
        np.testing.assert_allclose(D, Dc, rtol=1e-4, atol=1e-5)
        assert (I == Ic).mean() > 0.98  # float near-ties may swap
        cand = np.where(Ic >= 0, Ic, -1)
        S = gpu.rescore(Q, cand)
        assert isinstance(S, np.ndarray) and not hasattr(S, "__cuda_array_interface__")
        np.testing.assert_allclose(S, np.where(cand >= 0, Dc, -np.inf), rtol=1e-4, atol=1e-5)
        Sd = gpu.rescore(Q, cp.asarray(cand))  # device candidates, device scores
        assert isinstance(Sd, cp.ndarray)
        np.testing.assert_array_equal(host(cp, Sd), S)
        with pytest.raises(ValueError):
            gpu.rescore(Q, cp.asarray(np.full_like(cand, 400)))


def test_sparse_skips_term_ids_past_dim(cp):
    """A corrupt term id (as a mapped file could hold) is skipped, not read past the query."""
    sp = pytest.importorskip("scipy.sparse")
    X = sp.csr_matrix(np.array([[1.0, 2.0, 0, 0], [0, 0, 3.0, 4.0]], np.float32))
    cpu = quanta.SparseIndex(n_postings=10)
    cpu.add(X)
    gpu = quanta.cuda.SparseIndex(cpu)
    comp = gpu._arrays["comp16"]
    comp[0] = 60000  # document 0's first entry now names a term far past dim
    S = gpu.rescore(sp.csr_matrix(np.ones((1, 4), np.float32)), np.array([[0, 1]]))
    lost = host(cp, gpu._arrays["val16"])[:1].view(np.float16)[0]  # the skipped entry's value
    np.testing.assert_allclose(S, [[3.0 - lost, 7.0]], rtol=1e-2)


# -- device handling --------------------------------------------------------------------------------

@pytest.mark.gpu
def test_gpu_non_blocking_stream():
    if not quanta.cuda_available():
        pytest.skip(f"no GPU: {quanta.cuda_status()['reason']}")
    cp = pytest.importorskip("cupy")
    xb, xq = clustered(50_000, 96, 300, seed=7)
    cpu = quanta.FlatIndex(96, "l2", "bf16")
    cpu.add(xb)
    gpu = quanta.cuda.FlatIndex(cpu)
    _, I0 = gpu.search(cp.asarray(xq), 20)
    s = cp.cuda.Stream(non_blocking=True)
    with s:
        big = cp.ones((4096, 4096), cp.float32)
        big @ big  # keep the stream busy first
        _, I = gpu.search(cp.asarray(xq), 20)
    s.synchronize()
    np.testing.assert_array_equal(host(cp, I), host(cp, I0))


@pytest.mark.gpu
def test_gpu_more_than_65535_queries():
    """Launch grids stay within 65,535 blocks along y: flat, PQ, IVF-PQ, binary, k-means,
    sparse re-scoring and Chamfer."""
    if not quanta.cuda_available():
        pytest.skip(f"no GPU: {quanta.cuda_status()['reason']}")
    cp = pytest.importorskip("cupy")
    sp = pytest.importorskip("scipy.sparse")
    xb, _ = clustered(2000, 32, 1, seed=5)
    xq = cp.random.default_rng(1).standard_normal((70_000, 32), dtype=cp.float32)
    for spec in ("Flat", "PQ8x4fs", "PQ8x8", "IVF16,PQ8x8", "RBE32x2"):
        cpu = quanta.index_factory(32, spec)
        if not cpu.is_trained:
            cpu.train(xb)
        cpu.add(xb)
        _, I = getattr(quanta.cuda, type(cpu).__name__)(cpu).search(xq, 5)
        I0 = cpu.search(cp.asnumpy(xq[-100:]), 5).ids
        assert overlap(cp.asnumpy(I[-100:]), I0) > 0.8, spec
    x = cp.random.default_rng(0).standard_normal((2_200_000, 4), dtype=cp.float32)
    c, a = quanta.cuda.kmeans(x, 8, niter=1)
    assert int(a.max()) < 8
    rng = np.random.default_rng(6)
    X = sp.random(500, 300, density=0.05, format="csr", dtype=np.float32, random_state=rng)
    sparse = quanta.SparseIndex(n_postings=50)
    sparse.add(X)
    Q = sp.random(70_000, 300, density=0.02, format="csr", dtype=np.float32, random_state=rng)
    S = quanta.cuda.SparseIndex(sparse).rescore(Q, np.zeros((70_000, 2), np.int64))
    np.testing.assert_allclose(S[-5:, 0], (Q[-5:] @ X[0].T).toarray().ravel(), rtol=1e-2,
                               atol=1e-2)  # f16 document values
    docs, _ = _token_corpus(32, 200, 1, seed=2)
    mv = quanta.MultiVectorIndex(32, k_sim=3, d_proj=8, r_reps=2, first_stage="fde",
                                 index="Flat")
    mv.add(docs)
    q_tok = np.asarray(xb[:1]).repeat(70_000, 0)  # 70,000 one-token queries
    D, I = quanta.cuda.MultiVectorIndex(mv).search(q_tok, np.arange(70_001), k=3, exact=True)
    D0, _ = mv.search(q_tok[:1], np.arange(2), k=3, exact=True)
    np.testing.assert_allclose(D[-1], D0[0], rtol=1e-4, atol=1e-4)


@pytest.mark.gpu
def test_gpu_index_stays_on_its_device():
    if not quanta.cuda_available():
        pytest.skip(f"no GPU: {quanta.cuda_status()['reason']}")
    cp = pytest.importorskip("cupy")
    if cp.cuda.runtime.getDeviceCount() < 2:
        pytest.skip("needs two GPUs")
    xb, xq = clustered(2000, 32, 10, seed=3)
    cpu = quanta.FlatIndex(32)
    cpu.add(xb)
    with cp.cuda.Device(1):
        gpu = quanta.cuda.FlatIndex(cpu)
        q1 = cp.asarray(xq)
    with cp.cuda.Device(0):  # searched from device 0 with queries on device 1
        _, I = gpu.search(q1, 5)
    np.testing.assert_array_equal(cp.asnumpy(I), cpu.search(xq, 5).ids)


def test_cuda_status_says_why(monkeypatch):
    status = quanta.cuda_status()
    assert set(status) == {"available", "reason", "devices", "runtime", "driver"}
    assert status["available"] == quanta.cuda_available() == (status["reason"] == "")
    monkeypatch.setattr(quanta, "_cuda", None)
    assert "no CUDA module" in quanta.cuda_status()["reason"]
    no_gpu = cuda_emulator.FakeCuda()
    no_gpu.device_count = lambda: 0
    no_gpu.device_error = lambda: "CUDA driver version is insufficient for CUDA runtime version"
    monkeypatch.setattr(quanta, "_cuda", no_gpu)
    for driver, says in ((0, "no NVIDIA driver"), (12020, "driver supports CUDA 12.2 but quanta "
                                                          "was built with CUDA 13.0")):
        no_gpu.driver_version = lambda: driver
        status = quanta.cuda_status()
        assert not status["available"] and says in status["reason"]
    no_gpu.device_error = lambda: "no CUDA-capable device is detected"
    no_gpu.driver_version = lambda: 13000
    assert quanta.cuda_status()["reason"] == "no CUDA-capable device is detected"
    with pytest.raises(RuntimeError, match="no CUDA-capable device"):
        quanta.cuda.FlatIndex(quanta.FlatIndex(4))


def test_emulator_takes_the_bindings_arguments():
    """The stand-in kernels take the compiled module's arguments, in its order, so that the
    emulated tests call quanta.cuda's kernels the way the GPU build does."""
    import inspect
    import pathlib
    import re
    src = (pathlib.Path(__file__).parents[1] / "python/bindings/module_cuda.cpp").read_text()
    fake = cuda_emulator.FakeCuda()
    blocks = src.split('m.def("')[1:]
    assert len(blocks) >= 12
    for block in blocks:
        name = block[:block.index('"')]
        args = re.findall(r'py::arg\("(\w+)"\)', block)
        assert list(inspect.signature(getattr(fake, name)).parameters) == args, name


def test_bench_gpu_runs_emulated(monkeypatch, capsys):
    """python -m bench.gpu, at toy sizes on the stand-ins: the script does not rot unrun."""
    bench_gpu = pytest.importorskip("bench.gpu")
    fake, _ = cuda_emulator.install(monkeypatch)
    monkeypatch.setitem(__import__("sys").modules, "cupy", fake)
    monkeypatch.setattr(quanta, "cuda_status", lambda: {"available": True, "reason": ""})
    assert bench_gpu.main(["--n", "3000", "--dim", "32", "--nq", "20", "--single", "3",
                           "--ivf-spec", "IVF16,PQ8x8", "--nprobes", "1,16", "--mv-docs", "20"]) == 0
    out = capsys.readouterr().out
    assert out.count("flat ") == len(quanta.STORAGES) and out.count("recall GPU") == 2
    assert "recall 0.9:" in out and "MUVERA" in out
