"""GPU kernels against the CPU index. Skipped when no CUDA device (or CuPy) is present."""
import numpy as np
import pytest

import quanta
from conftest import clustered

pytestmark = pytest.mark.gpu

if not quanta.cuda_available():
    pytest.skip("no CUDA device visible", allow_module_level=True)
cp = pytest.importorskip("cupy")

import quanta.cuda  # noqa: E402


@pytest.mark.parametrize("storage", quanta.STORAGES)
@pytest.mark.parametrize("metric", ["ip", "l2", "cosine"])
@pytest.mark.parametrize("k", [1, 10, 100])
def test_gpu_flat_matches_cpu(storage, metric, k):
    xb, xq = clustered(5000, 72, 50, seed=11)
    cpu = quanta.FlatIndex(72, metric, storage)
    cpu.add(xb, ids=np.arange(5000) + 7)
    gpu = quanta.cuda.FlatIndex(cpu)
    D0, I0 = cpu.search(xq, k)
    D, I = gpu.search(cp.asarray(xq), k)
    assert isinstance(D, cp.ndarray) and isinstance(I, cp.ndarray)
    D, I = cp.asnumpy(D), cp.asnumpy(I)
    np.testing.assert_allclose(D, D0, rtol=1e-4, atol=1e-4)
    assert (I == I0).mean() >= 0.99
    Dh, Ih = gpu.search(xq, k)  # host in, host out
    assert isinstance(Dh, np.ndarray)
    np.testing.assert_array_equal(Ih, I)


def test_gpu_padding_and_errors():
    cpu = quanta.FlatIndex(8, "l2", "f16")
    cpu.add(np.eye(8, dtype=np.float32)[:3])
    gpu = quanta.cuda.FlatIndex(cpu)
    D, I = gpu.search(np.eye(8, dtype=np.float32)[:2], 5)
    assert (I[:, 3:] == -1).all() and np.isinf(D[:, 3:]).all()
    with pytest.raises(ValueError):
        gpu.search(cp.ones((2, 9), cp.float32), 1)
    with pytest.raises(ValueError):
        gpu.search(cp.full((1, 8), cp.nan, cp.float32), 1)


@pytest.mark.parametrize("spec", ["PQ8x8", "PQ8x4", "PQ8x4fs", "OPQ8,PQ8x8"])
@pytest.mark.parametrize("metric", ["l2", "ip"])
def test_gpu_pq_matches_cpu_adc(spec, metric):
    xb, xq = clustered(4000, 64, 40, seed=5)
    cpu = quanta.index_factory(64, spec, metric=metric)
    cpu.train(xb, niter=5)
    cpu.add(xb, ids=np.arange(4000) * 2)
    gpu = quanta.cuda.PQIndex(cpu)
    D, I = gpu.search(cp.asarray(xq), 10)
    D, I = cp.asnumpy(D), cp.asnumpy(I)
    # reference: float-table ADC of the stored codes
    xr = cpu.reconstruct(np.arange(4000) * 2)
    ref = ((xq[:, None] - xr[None]) ** 2).sum(-1) if metric == "l2" else xq @ xr.T
    np.testing.assert_allclose(D, np.take_along_axis(ref, I // 2, 1), rtol=1e-4, atol=1e-4)
    best = np.sort(ref, 1)[:, :10] if metric == "l2" else -np.sort(-ref, 1)[:, :10]
    np.testing.assert_allclose(D, best, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("spec", ["IVF16,PQ8x8", "IVF16,PQ8x4fs", "IVF16,PQ8x8,Refine(f16)",
                                  "OPQ8,IVF16,PQ8x8"])
@pytest.mark.parametrize("metric", ["l2", "ip"])
def test_gpu_ivfpq_matches_cpu(spec, metric):
    xb, xq = clustered(4000, 64, 40, seed=6)
    cpu = quanta.index_factory(64, spec, metric=metric)
    cpu.train(xb, niter=5)
    cpu.add(xb)
    gpu = quanta.cuda.IVFPQIndex(cpu)
    for nprobe in (1, 4, 16):
        D, I = gpu.search(xq, 10, nprobe=nprobe)
        if cpu.refine is None:
            xr = cpu.reconstruct(np.arange(4000))
            ref = ((xq[:, None] - xr[None]) ** 2).sum(-1) if metric == "l2" else xq @ xr.T
            np.testing.assert_allclose(D, np.take_along_axis(ref, I, 1), rtol=1e-4, atol=1e-4)
        D0, I0 = cpu.search(xq, 10, nprobe=nprobe)
        if not cpu.fast_scan:  # fast-scan CPU distances come from uint8 tables
            np.testing.assert_allclose(D, D0, rtol=1e-3, atol=1e-3)
        overlap = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(I, I0)])
        assert overlap >= (0.8 if cpu.fast_scan else 0.98), overlap


def test_gpu_kmeans():
    xb, _ = clustered(20000, 32, 1, seed=7)
    c, assign = quanta.cuda.kmeans(xb, 64, niter=10, seed=1)
    assert c.shape == (64, 32) and assign.shape == (20000,)
    d = ((xb[:, None] - c[None]) ** 2).sum(-1)
    assert (assign == d.argmin(1)).mean() >= 0.999  # the nearest centroid (float32 ties aside)
    inertia = d.min(1).sum()
    cpu = quanta.kmeans(xb, 64, niter=10, seed=1)
    cpu_inertia = ((xb[:, None] - cpu.centroids[None]) ** 2).sum(-1).min(1).sum()
    assert inertia <= 1.1 * cpu_inertia
    with pytest.raises(ValueError):
        quanta.cuda.kmeans(xb, 0)


@pytest.mark.parametrize("spec", ["RBE64x2", "RBE100x3", "RBE64x1q1,Refine(f16)"])
def test_gpu_binary_matches_cpu(spec):
    xb, xq = clustered(4000, 64, 40, seed=7)
    cpu = quanta.index_factory(64, spec)
    cpu.train(xb)
    cpu.add(xb, ids=np.arange(4000) * 5)
    gpu = quanta.cuda.BinaryIndex(cpu)
    D, I = gpu.search(cp.asarray(xq), 10)
    D0, I0 = cpu.search(xq, 10)
    # exact integer scores and the CPU's arithmetic: identical distances
    np.testing.assert_array_equal(cp.asnumpy(D), D0)
    same = D0[:, :-1] > D0[:, 1:]  # ties may order differently
    assert np.mean(cp.asnumpy(I)[:, :-1][same] == I0[:, :-1][same]) > 0.99


@pytest.mark.parametrize("options", [
    dict(k_sim=4, d_proj=8, r_reps=5),
    dict(k_sim=3, d_proj=6, r_reps=3, projection="count_sketch", bucket_order="gray"),
    dict(k_sim=3, d_proj=None, r_reps=2),
    dict(k_sim=3, d_proj=8, r_reps=4, final_dim=50),
])
def test_gpu_fde_matches_cpu(options):
    rng = np.random.default_rng(5)
    sets = [rng.standard_normal((int(rng.integers(1, 40)), 32)).astype(np.float32)
            for _ in range(60)]
    enc = quanta.FDEEncoder(32, seed=2, **options)
    gpu = quanta.cuda.FDEEncoder(enc)
    for cpu_fn, gpu_fn in ((enc.encode_documents, gpu.encode_documents),
                           (enc.encode_queries, gpu.encode_queries)):
        ref = cpu_fn(sets)
        got = gpu_fn([cp.asarray(s) for s in sets])
        assert isinstance(got, cp.ndarray)
        # a token whose hyperplane product is within rounding of 0 may change bucket: rare
        close = np.isclose(cp.asnumpy(got), ref, rtol=1e-4, atol=1e-4).all(axis=1)
        assert close.mean() >= 0.95


def test_gpu_multivector_matches_cpu():
    rng = np.random.default_rng(6)
    topics = rng.standard_normal((50, 64)).astype(np.float32)
    docs = [topics[rng.integers(0, 50, int(rng.integers(5, 30)))] +
            0.3 * rng.standard_normal((1, 64)).astype(np.float32) for _ in range(800)]
    queries = [topics[rng.integers(0, 50, 8)] for _ in range(20)]
    cpu = quanta.MultiVectorIndex(64, k_sim=3, d_proj=8, r_reps=8, storage="f16", index="Flat")
    cpu.add(docs)
    gpu = quanta.cuda.MultiVectorIndex(cpu)
    for exact in (True, False):
        D0, I0 = cpu.search(queries, k=10, exact=exact, candidates=100)
        D, I = gpu.search(queries, k=10, exact=exact, candidates=100)
        np.testing.assert_allclose(D, D0, rtol=1e-4, atol=1e-3)
        assert (I == I0).mean() >= 0.95


@pytest.mark.parametrize("values", ["f16", "u8"])
def test_sparse_exact_search_and_rescore(values):
    sp = pytest.importorskip("scipy.sparse")
    rng = np.random.default_rng(5)
    for dim in (3000, 70_000):  # u16 and u32 term ids
        X = sp.random(2000, dim, density=40 / dim, format="csr", dtype=np.float32, random_state=rng)
        Q = sp.random(30, dim, density=20 / dim, format="csr", dtype=np.float32, random_state=rng)
        X.data = rng.uniform(0.01, 2.0, X.nnz).astype(np.float32)
        cpu = quanta.SparseIndex(n_postings=50, values=values)
        cpu.add(X)
        gpu = quanta.cuda.SparseIndex(cpu)
        D, I = gpu.search(Q, 10)
        Dc, Ic = cpu.search(Q, 10, exact=True)
        np.testing.assert_allclose(D, Dc, rtol=1e-4, atol=1e-5)
        assert (I == Ic).mean() > 0.98  # float near-ties may swap
        cand = np.where(Ic >= 0, Ic, -1)
        S = gpu.rescore(Q, cand)
        np.testing.assert_allclose(S, np.where(cand >= 0, Dc, -np.inf), rtol=1e-4, atol=1e-5)
