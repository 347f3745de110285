import os
import pickle

import numpy as np
import pytest

import quanta
from conftest import brute_force_knn, clustered, recall_at_k

STORAGES = quanta.STORAGES
METRICS = ("ip", "l2", "cosine")


def amx_rounds_queries(index, nq):
    """bf16 rows searched in a batch on AMX tiles: the queries are rounded to bf16 too."""
    return (index.storage == "bf16" and index.dim % 32 == 0 and nq >= 4
            and quanta._core.amx_bf16_active())


def reference_scores(index, xq, metric):
    """NumPy scores against the index's own decoded rows: what the kernels must reproduce."""
    xr = index.reconstruct(np.arange(index.ntotal)).astype(np.float64)
    q = xq.astype(np.float64)
    if metric == "cosine":
        q = q / np.linalg.norm(q, axis=1, keepdims=True)
    if amx_rounds_queries(index, len(xq)):
        import ml_dtypes
        q = q.astype(np.float32).astype(ml_dtypes.bfloat16).astype(np.float64)
    if metric == "l2":
        return (q ** 2).sum(1)[:, None] - 2 * q @ xr.T + (xr ** 2).sum(1)[None, :]
    return q @ xr.T


def check_against_reference(index, xq, k, **kw):
    D, I = index.search(xq, k, **kw)
    ref = reference_scores(index, xq, index.metric)
    sign = 1 if index.metric == "l2" else -1
    best = np.sort(sign * ref, axis=1)[:, :k] * sign
    scale = np.abs(ref).max()
    np.testing.assert_allclose(D, best, rtol=1e-4, atol=1e-4 * scale)
    # The returned ids carry the returned scores (ties may be ordered either way).
    np.testing.assert_allclose(np.take_along_axis(ref, I, 1), D, rtol=1e-4, atol=1e-4 * scale)


@pytest.mark.parametrize("storage", STORAGES)
@pytest.mark.parametrize("metric", METRICS)
@pytest.mark.parametrize("dim", [3, 37, 64, 150])
def test_kernels_match_numpy(simd_level, storage, metric, dim, rng):
    xb = rng.standard_normal((700, dim)).astype(np.float32)
    xq = rng.standard_normal((41, dim)).astype(np.float32)
    index = quanta.FlatIndex(dim, metric, storage)
    index.add(xb)
    check_against_reference(index, xq, 7)        # batched (GEMM) path
    check_against_reference(index, xq[:2], 7)    # one query at a time


@pytest.mark.parametrize("f8_scale", ["none", "global", "vector"])
@pytest.mark.parametrize("storage", ["f8e4m3", "f8e5m2"])
def test_f8_scales_match_numpy(simd_level, storage, f8_scale, rng):
    xb, xq = clustered(500, 48, 20, seed=3)
    index = quanta.FlatIndex(48, "l2", storage, f8_scale=f8_scale)
    index.add(xb)
    check_against_reference(index, xq, 5)
    check_against_reference(index, xq[:1], 5)


def test_i8_int8_queries(simd_level, rng):
    xb, xq = clustered(2000, 96, 30, seed=4)
    index = quanta.FlatIndex(96, "ip", "i8")
    index.train(xb)
    index.add(xb)
    D, I = index.search(xq, 10, quantize_queries=True)
    # Exact integer reference: the same query quantization in NumPy.
    st = index._index.state()
    codes = st["codes"].view(np.int8).reshape(-1, 96).astype(np.int64)
    qs = xq * st["dim_scale"]
    qscale = np.abs(qs).max(1, keepdims=True) / 127
    q8 = np.rint(qs / qscale).astype(np.int64)
    ref = (q8 @ codes.T) * qscale
    np.testing.assert_allclose(D, -np.sort(-ref, 1)[:, :10], rtol=1e-5, atol=1e-6)
    _, I_true = brute_force_knn(xb, xq, 10, "ip")
    assert recall_at_k(I, I_true) >= 0.9


def test_simd_levels_agree(rng):
    xb = rng.standard_normal((3000, 50)).astype(np.float32)
    xq = rng.standard_normal((20, 50)).astype(np.float32)
    before = quanta.simd_level()
    results = {}
    try:
        for level in quanta._core.supported_isas():
            quanta.set_simd_level(level)
            for storage in STORAGES:
                index = quanta.FlatIndex(50, "ip", storage)
                index.add(xb)
                results[level, storage] = index.search(xq, 10)
    finally:
        quanta.set_simd_level(before)
    for (level, storage), (D, I) in results.items():
        D0, I0 = results["scalar", storage]
        np.testing.assert_allclose(D, D0, rtol=1e-5, atol=1e-5)
        assert (I == I0).mean() > 0.99


@pytest.mark.parametrize("storage", ["f32", "f8e4m3", "i8"])
def test_results_identical_for_any_thread_count(storage):
    xb, xq = clustered(20000, 32, 64, seed=5)
    xb = np.concatenate([xb, xb[:500]])  # exact duplicates: ties must break the same way
    index = quanta.FlatIndex(32, "ip", storage)
    index.add(xb)
    for q in (xq, xq[:1], xq[:3]):
        D1, I1 = index.search(q, 20, threads=1)
        for t in (2, 3, 8):
            D, I = index.search(q, 20, threads=t)
            np.testing.assert_array_equal(I, I1)
            np.testing.assert_array_equal(D, D1)


# Recall of each storage against exact float32 search, measured then set a little lower.
RECALL = {"f32": 0.999, "f16": 0.99, "bf16": 0.98, "f8e4m3": 0.88, "f8e5m2": 0.8, "i8": 0.95}


@pytest.mark.parametrize("storage", STORAGES)
def test_recall_on_clustered_data(storage):
    xb, xq = clustered(20000, 128, 200, seed=6)
    _, I_true = brute_force_knn(xb, xq, 10, "ip")
    index = quanta.FlatIndex(128, "ip", storage)
    index.add(xb)
    r = recall_at_k(index.search(xq, 10).ids, I_true)
    assert r >= RECALL[storage], f"{storage}: recall@10 {r:.3f}"


@pytest.mark.parametrize("storage", ["f8e4m3", "f8e5m2"])
def test_f8_scales_are_exact_casts(storage):
    # global: one power of two; vector: max|x| maps to the format's largest value.
    xb, _ = clustered(200, 384, 1, seed=7)
    fmax = {"f8e4m3": 448.0, "f8e5m2": 57344.0}[storage]
    g = quanta.FlatIndex(384, "ip", storage, f8_scale="global", f8_rounding="nearest")
    g.add(xb)
    s = g._index.state()["global_scale"]
    assert np.log2(s) == np.round(np.log2(s))
    assert np.abs(xb).max() / s <= fmax / 16 < 2 * np.abs(xb).max() / s
    expected = quanta.decode(quanta.encode(xb / s, storage), storage) * s
    np.testing.assert_array_equal(g.reconstruct(np.arange(200)), expected)
    v = quanta.FlatIndex(384, "ip", storage, f8_scale="vector", f8_rounding="nearest")
    v.add(xb)
    vs = v._index.state()["vector_scale"]
    np.testing.assert_allclose(vs, np.abs(xb).max(1) / fmax, rtol=1e-6)
    expected = quanta.decode(quanta.encode(xb / vs[:, None], storage), storage) * vs[:, None]
    np.testing.assert_allclose(v.reconstruct(np.arange(200)), expected, rtol=1e-6)


@pytest.mark.parametrize("storage", ["f8e4m3", "f8e5m2"])
def test_f8_anisotropic_rounding(storage):
    xb, xq = clustered(5000, 96, 200, seed=8)
    _, I_true = brute_force_knn(xb, xq, 10, "ip")
    near = quanta.FlatIndex(96, "ip", storage, f8_rounding="nearest")
    aniso = quanta.FlatIndex(96, "ip", storage)
    assert aniso.f8_rounding == "anisotropic"
    near.add(xb)
    aniso.add(xb)
    xn, xa = near.reconstruct(np.arange(5000)), aniso.reconstruct(np.arange(5000))
    # At most one grid step from nearest: |a - x| < 2 * step, where step >= |n - x| ...
    assert np.all(np.abs(xa - xb) <= 2.0 ** -2 * np.abs(xb) + 2 * np.abs(xn - xb) + 1e-12)
    # ... with a much smaller error along each vector,
    par_n = np.abs(((xn - xb) * xb).sum(1)).mean()
    par_a = np.abs(((xa - xb) * xb).sum(1)).mean()
    assert par_a < 0.5 * par_n
    # ... and recall no worse (measured: higher by 0.005-0.01).
    r_n = recall_at_k(near.search(xq, 10).ids, I_true)
    r_a = recall_at_k(aniso.search(xq, 10).ids, I_true)
    assert r_a >= r_n - 0.005, (r_a, r_n)


def test_real_embeddings_recall():
    path = os.path.join(os.path.dirname(__file__), "data", "minilm_sample.npz")
    if not os.path.exists(path):
        pytest.fail("tests/data/minilm_sample.npz is missing")
    data = np.load(path)
    xb, xq = data["base"].astype(np.float32), data["queries"].astype(np.float32)
    _, I_true = brute_force_knn(xb, xq, 10, "ip")
    # Measured on this sample: 1.0, 0.9995, 0.999, 0.9855, 0.9745, 0.996.
    floor = {"f32": 0.999, "f16": 0.995, "bf16": 0.99, "f8e4m3": 0.97, "f8e5m2": 0.95, "i8": 0.985}
    for storage in STORAGES:
        index = quanta.FlatIndex(xb.shape[1], "ip", storage)
        index.add(xb)
        r = recall_at_k(index.search(xq, 10).ids, I_true)
        assert r >= floor[storage], f"{storage}: recall@10 {r:.3f}"


# -- API behaviour -------------------------------------------------------------------------

def test_ids_reconstruct_and_padding(rng):
    xb = rng.standard_normal((10, 8)).astype(np.float32)
    index = quanta.FlatIndex(8, "l2")
    index.add(xb[:6], ids=np.arange(100, 106))
    index.add(xb[6:], ids=[7, 8, 9, 10])
    assert index.ntotal == 10 and len(index) == 10
    D, I = index.search(xb[7], k=15)
    assert D.shape == (1, 15) and I.dtype == np.int64
    assert I[0, 0] == 8 and D[0, 0] == pytest.approx(0, abs=1e-5)
    assert (I[0, 10:] == -1).all() and np.isinf(D[0, 10:]).all() and (D[0, 10:] > 0).all()
    np.testing.assert_array_equal(index.reconstruct([103, 9]), xb[[3, 8]])
    with pytest.raises(KeyError):
        index.reconstruct([5])
    empty = quanta.FlatIndex(8, "ip")
    D, I = empty.search(xb[:2], 3)
    assert (I == -1).all() and (D == -np.inf).all()


def test_default_ids_continue_positions(rng):
    index = quanta.FlatIndex(4)
    x = rng.standard_normal((5, 4)).astype(np.float32)
    index.add(x[:2])
    index.add(x[2:])
    assert index.search(x, 1).ids[:, 0].tolist() == [0, 1, 2, 3, 4]


def test_other_dtypes_are_converted(rng):
    x = rng.standard_normal((50, 16))
    index = quanta.FlatIndex(16, "ip")
    index.add(x)  # float64
    index.add(np.ones((3, 16), np.int32))
    assert index.ntotal == 53
    assert index.search(x[:3].T.copy().T, 1).ids[:, 0].tolist() == [0, 1, 2]  # non-contiguous


@pytest.mark.parametrize("call,exc,msg", [
    (lambda ix: ix.add(np.ones((3, 5), np.float32)), ValueError, "dim 5"),
    (lambda ix: ix.add(np.ones((2, 2, 8), np.float32)), ValueError, "2-D"),
    (lambda ix: ix.add(np.array([["a"] * 8])), TypeError, "real numbers"),
    (lambda ix: ix.add(np.full((2, 8), np.nan, np.float32)), ValueError, "NaN"),
    (lambda ix: ix.add(np.full((2, 8), np.inf, np.float32)), ValueError, "NaN"),
    (lambda ix: ix.add(np.ones((2, 8), np.float32), ids=[1.5, 2]), TypeError, "ids"),
    (lambda ix: ix.add(np.ones((2, 8), np.float32), ids=[1]), ValueError, "length 2"),
    (lambda ix: ix.add(np.ones((2, 8), np.float32), ids=[-1, 2]), ValueError, "non-negative"),
    (lambda ix: ix.search(np.ones((1, 8), np.float32), 0), ValueError, "k must be >= 1"),
    (lambda ix: ix.search(np.ones((1, 8), np.float32), 2.5), TypeError, "k must be an integer"),
    (lambda ix: ix.search(np.ones((1, 9), np.float32), 1), ValueError, "dim 9"),
    (lambda ix: ix.search(np.array([[np.nan] * 8], np.float32), 1), ValueError, "NaN"),
    (lambda ix: ix.search(np.ones((1, 8), np.float32), 1, threads=-1), ValueError, "threads"),
    (lambda ix: ix.train(np.zeros((0, 8), np.float32)), ValueError, "empty"),
])
def test_bad_input_raises_and_keeps_index(call, exc, msg, rng):
    index = quanta.FlatIndex(8, "ip", "i8")
    x = rng.standard_normal((20, 8)).astype(np.float32)
    index.add(x)
    before = index.search(x, 5)
    with pytest.raises(exc, match=msg):
        call(index)
    assert index.ntotal == 20
    after = index.search(x, 5)
    np.testing.assert_array_equal(before.ids, after.ids)
    np.testing.assert_array_equal(before.distances, after.distances)


def test_constructor_errors():
    with pytest.raises(ValueError, match="metric"):
        quanta.FlatIndex(8, "cos")
    with pytest.raises(ValueError, match="storage"):
        quanta.FlatIndex(8, "ip", "f4")
    with pytest.raises(ValueError, match="dim"):
        quanta.FlatIndex(0)
    with pytest.raises(TypeError, match="dim"):
        quanta.FlatIndex(8.0)
    with pytest.raises(ValueError, match="f8_scale"):
        quanta.FlatIndex(8, "ip", "f8e4m3", f8_scale="per-row")


def test_empty_add_and_empty_queries(rng):
    index = quanta.FlatIndex(8)
    index.add(np.zeros((0, 8), np.float32))
    assert index.ntotal == 0
    D, I = index.search(np.zeros((0, 8), np.float32), 3)
    assert D.shape == (0, 3) and I.shape == (0, 3)


# -- persistence ---------------------------------------------------------------------------

@pytest.mark.parametrize("storage,metric,f8_scale", [
    ("f32", "ip", "global"), ("f16", "l2", "global"), ("bf16", "cosine", "global"),
    ("f8e4m3", "l2", "vector"), ("f8e5m2", "ip", "global"), ("i8", "l2", "global")])
def test_save_load_pickle_round_trip(tmp_path, storage, metric, f8_scale, rng):
    xb = rng.standard_normal((300, 24)).astype(np.float32)
    index = quanta.FlatIndex(24, metric, storage, f8_scale=f8_scale)
    index.add(xb, ids=np.arange(300) * 3)
    expected = index.search(xb[:20], 5)
    path = tmp_path / "x.qnt"
    index.save(path)
    for other in (quanta.load(path), quanta.load(path, mmap=True),
                  pickle.loads(pickle.dumps(index)), quanta.from_bytes(index.to_bytes())):
        assert (other.dim, other.metric, other.storage, other.ntotal) == (24, metric, storage, 300)
        got = other.search(xb[:20], 5)
        np.testing.assert_array_equal(got.ids, expected.ids)
        np.testing.assert_array_equal(got.distances, expected.distances)
    header = quanta.read_header(path)
    assert header["kind"] == "FLAT" and header["ntotal"] == 300 and header["storage"] == storage


def test_corrupt_and_truncated_files(tmp_path, rng):
    index = quanta.FlatIndex(16, "ip", "f16")
    index.add(rng.standard_normal((100, 16)).astype(np.float32))
    path = tmp_path / "good.qnt"
    index.save(path)
    data = path.read_bytes()
    mid = len(data) // 2  # inside the codes
    cases = {
        "empty": b"",
        "short": data[:40],
        "truncated": data[:-100],
        "magic": b"NOTQUANT" + data[8:],
        "header": data[:30] + bytes([data[30] ^ 1]) + data[31:],
        "payload": data[:mid] + bytes([data[mid] ^ 0xFF]) + data[mid + 1:],
    }
    for name, blob in cases.items():
        bad = tmp_path / f"{name}.qnt"
        bad.write_bytes(blob)
        with pytest.raises(ValueError, match="not a valid quanta index"):
            quanta.load(bad)
        if name in ("empty", "short", "truncated", "magic", "header"):
            with pytest.raises(ValueError, match="not a valid quanta index"):
                quanta.load(bad, mmap=True)
            with pytest.raises(ValueError, match="not a valid quanta index"):
                quanta.read_header(bad)
    with pytest.raises(OSError):
        quanta.load(tmp_path / "missing.qnt")
    newer = bytearray(data)
    newer[8:10] = (99).to_bytes(2, "little")
    (tmp_path / "newer.qnt").write_bytes(bytes(newer))
    with pytest.raises(ValueError, match="format 99"):
        quanta.load(tmp_path / "newer.qnt")


def test_failed_save_keeps_existing_file(tmp_path, rng, monkeypatch):
    index = quanta.FlatIndex(8)
    index.add(rng.standard_normal((10, 8)).astype(np.float32))
    path = tmp_path / "keep.qnt"
    index.save(path)
    before = path.read_bytes()

    def boom(f):
        f.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(index, "_write", boom)
    with pytest.raises(OSError, match="disk full"):
        index.save(path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["keep.qnt"]


def test_build_info_and_levels():
    info = quanta.build_info()
    assert info["simd_active"] in info["simd_supported"]
    assert "scalar" in info["simd_compiled"]
    with pytest.raises(ValueError):
        quanta.set_simd_level("avx9000")
    # A level of the other architecture is refused, and the active level stays.
    foreign = "avx2" if "neon" in info["simd_compiled"] else "neon"
    with pytest.raises(ValueError, match="not supported here"):
        quanta.set_simd_level(foreign)
    assert quanta.simd_level() == info["simd_active"]


def test_concurrent_searches_from_python_threads():
    # search releases the GIL and is safe from many threads: same answers as one at a time.
    from concurrent.futures import ThreadPoolExecutor

    xb, xq = clustered(20000, 64, 64, seed=9)
    index = quanta.FlatIndex(64, "l2", "f16")
    index.add(xb, ids=np.arange(20000) * 2)
    expected = [index.search(xq[i:i + 8], 10, threads=1) for i in range(0, 64, 8)]
    with ThreadPoolExecutor(4) as pool:
        got = list(pool.map(lambda i: index.search(xq[i:i + 8], 10, threads=2), range(0, 64, 8)))
    for e, g in zip(expected, got):
        np.testing.assert_array_equal(e.ids, g.ids)
        np.testing.assert_array_equal(e.distances, g.distances)


def test_quanta_simd_environment_variable():
    import subprocess
    import sys

    code = "import quanta; print(quanta.simd_level())"
    out = subprocess.run([sys.executable, "-c", code], env={**os.environ, "QUANTA_SIMD": "scalar"},
                         capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "scalar"
    code = ("import quanta\ntry:\n    quanta.simd_level()\nexcept ValueError as e:\n"
            "    print('ValueError', e)")
    out = subprocess.run([sys.executable, "-c", code], env={**os.environ, "QUANTA_SIMD": "sse9"},
                         capture_output=True, text=True, check=True)
    assert "ValueError" in out.stdout and "QUANTA_SIMD" in out.stdout
