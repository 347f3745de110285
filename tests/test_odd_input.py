"""Odd but legal input gets a right answer or a clear error, never silent garbage."""
import os
import re
import subprocess
import sys

import numpy as np
import pytest

import quanta
from conftest import clustered


def test_subnormal_and_huge_rows_normalize_for_cosine():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((50, 16)).astype(np.float32)
    tiny = (x[:1] * 1e-42).astype(np.float32)  # subnormal: 1 / |row| is beyond float's range
    huge = (x[1:2] * 1e37).astype(np.float32)
    index = quanta.FlatIndex(16, "cosine")
    index.add(np.vstack([tiny, huge, x[2:]]))
    D, I = index.search(np.vstack([x[0:1], x[1:2]]), 1)
    assert np.isfinite(D).all() and list(I[:, 0]) == [0, 1]
    np.testing.assert_allclose(D[:, 0], 1.0, atol=1e-3)  # a row's cosine with itself


def test_nprobe_is_checked_when_set():
    xb, _ = clustered(500, 16, 1, seed=1)
    for index in (quanta.IVFPQIndex(16, 8, 4, 8), quanta.IVFBinaryIndex(64, 8)):
        with pytest.raises(TypeError, match="nprobe"):
            index.nprobe = "4"
        with pytest.raises(ValueError, match="nprobe"):
            index.nprobe = 9
        index.nprobe = 8
        assert index.nprobe == 8


def test_f16_storage_refuses_values_it_would_store_as_inf():
    index = quanta.FlatIndex(4, "ip", "f16")
    index.add(np.ones((2, 4), np.float32))
    with pytest.raises(ValueError, match="f16"):
        index.add(np.full((1, 4), 70000.0, np.float32))
    assert index.ntotal == 2  # nothing added by the failed call
    store = quanta.MultiVectorIndex(4, k_sim=1, d_proj=2, r_reps=1, storage="f16")
    with pytest.raises(ValueError, match="f16"):
        store.add([np.full((3, 4), 1e5, np.float32)])


def test_training_a_populated_index_is_refused():
    xb, _ = clustered(600, 16, 1, seed=2)
    for index in (quanta.PQIndex(16, 4, 4), quanta.IVFPQIndex(16, 4, 4, 4),
                  quanta.BinaryIndex(16), quanta.IVFBinaryIndex(16, 4),
                  quanta.FlatIndex(16, "l2", "i8"), quanta.FlatIndex(16, "ip", "f8e4m3"),
                  quanta.GraphIndex(16, degree=8, storage="i8", codes="PQ4x4")):
        index.train(xb)
        index.add(xb)
        before = index.search(xb[:5], 3).ids
        with pytest.raises(ValueError, match="reset"):
            index.train(xb)
        np.testing.assert_array_equal(index.search(xb[:5], 3).ids, before)
        index.reset()
        index.train(xb)  # an empty index trains again


def test_save_through_a_symlink_keeps_the_link(tmp_path):
    index = quanta.FlatIndex(4)
    index.add(np.ones((3, 4), np.float32))
    target = tmp_path / "real.qnt"
    index.save(target)
    link = tmp_path / "link.qnt"
    os.symlink(target, link)
    index.add(np.ones((1, 4), np.float32))
    index.save(link)
    assert link.is_symlink() and quanta.load(target).ntotal == 4


def test_bf16_float8_torch_and_dlpack_inputs():
    """bfloat16 / float8 arrays (ml_dtypes), CPU torch tensors (bfloat16 too) and DLPack-only
    objects are read as float32."""
    ml_dtypes = pytest.importorskip("ml_dtypes")
    x = np.random.default_rng(0).standard_normal((50, 16)).astype(np.float32)
    index = quanta.FlatIndex(16)
    index.add(x)
    want = index.search(x[:3].astype(ml_dtypes.bfloat16).astype(np.float32), 5).ids
    np.testing.assert_array_equal(index.search(x[:3].astype(ml_dtypes.bfloat16), 5).ids, want)
    index.add(x[:2].astype(ml_dtypes.float8_e4m3fn))
    assert index.ntotal == 52

    class OnlyDlpack:  # an array library NumPy knows only through DLPack
        def __init__(self, a):
            self._a = a

        def __dlpack__(self, **kw):
            return self._a.__dlpack__(**kw)

        def __dlpack_device__(self):
            return self._a.__dlpack_device__()

    np.testing.assert_array_equal(index.search(OnlyDlpack(x[:3]), 5).ids,
                                  index.search(x[:3], 5).ids)


def test_torch_tensors_of_any_float_type():
    torch = pytest.importorskip("torch")
    x = np.random.default_rng(1).standard_normal((50, 16)).astype(np.float32)
    index = quanta.FlatIndex(16)
    index.add(torch.from_numpy(x))
    t = torch.from_numpy(x[:3]).to(torch.bfloat16)
    want = index.search(t.float().numpy(), 5).ids
    np.testing.assert_array_equal(index.search(t, 5).ids, want)


SPECS = ["Flat", "Flat(i8)", "PQ8x8", "PQ8x4fs", "IVF8,PQ8x4fs,Refine(f16)", "RBE64x2",
         "IVF8,RBE64x2", "Graph8(f16),PQ8x4"]


def _filled(spec, x):
    index = quanta.index_factory(32, spec)
    if not index.is_trained:
        index.train(x)
    index.add(x)
    return index


@pytest.mark.parametrize("spec", SPECS)
def test_k_past_the_index_pads_without_sizing_anything_by_k(spec):
    """k = 10^6 on 300 vectors: the native search is asked for 300 (no heap of 10^6 per
    query), and the rest is the usual padding."""
    x, _ = clustered(300, 32, 1, seed=3)
    index = _filled(spec, x)
    D, I = index.search(x[:2], 10 ** 6)
    d, i = index.search(x[:2], 300)
    assert D.shape == I.shape == (2, 10 ** 6)
    np.testing.assert_array_equal(I[:, :300], i)
    np.testing.assert_array_equal(D[:, :300], d)
    assert (I[:, 300:] == -1).all()
    worst = np.inf if index.metric == "l2" else -np.inf
    assert (D[:, 300:] == worst).all()


def test_integer_arguments_out_of_range_name_themselves():
    """What pybind would refuse as "incompatible function arguments" (or NumPy as "negative
    dimensions") is refused first, naming the argument."""
    x, _ = clustered(300, 32, 1, seed=4)
    index = _filled("IVF8,PQ8x4fs", x)
    multi = quanta.MultiVectorIndex(32)
    multi.add(x[:60], np.arange(0, 61, 6))
    calls = {
        "k": lambda v: index.search(x[:2], v),
        "threads": lambda v: index.search(x[:2], 5, threads=v),
        "nprobe": lambda v: index.search(x[:2], 5, nprobe=v),
        "dim": lambda v: quanta.FlatIndex(v),
        "m": lambda v: quanta.PQIndex(32, v),
        "nlist": lambda v: quanta.IVFPQIndex(32, v, 8),
        "degree": lambda v: quanta.GraphIndex(32, degree=v),
        "width": lambda v: quanta.GraphIndex(32, width=v),
        "bits": lambda v: quanta.BinaryIndex(32, v),
        "r_reps": lambda v: quanta.MultiVectorIndex(32, r_reps=v),
        "niter": lambda v: quanta.PQIndex(32, 8).train(x, niter=v),
        "seed": lambda v: quanta.PQIndex(32, 8).train(x, seed=v),
        "coarse_niter": lambda v: quanta.IVFBinaryIndex(32, 8).train(x, coarse_niter=v),
        "max_train_points": lambda v: quanta.BinaryIndex(32).train(x, max_train_points=v),
        "refine_factor": lambda v: quanta.IVFPQIndex(32, 8, 8, refine="f16", refine_factor=v),
        "n": quanta.set_num_threads,
        "latent_dim": lambda v: quanta.datasets.clustered(10, 8, latent_dim=v),
        "Filter.range: hi": lambda v: quanta.Filter.range(0, v),
        "i": lambda v: multi.document(v),
    }
    for name, call in calls.items():
        bad = {"seed": (2 ** 70, 2 ** 64, -1),  # a uint64
               "Filter.range: hi": (2 ** 70, 2 ** 63, -2 ** 63 - 1),  # an int64
               "i": (2 ** 70, 2 ** 64, -1)}  # past the documents: "document ... out of range"
        for value in bad.get(name, (2 ** 70, 2 ** 64, 2 ** 63, 2 ** 32, -2 ** 63, -1)):
            with pytest.raises((ValueError, TypeError), match=re.escape(name) + " must") as e:
                call(value)
            assert "incompatible" not in str(e.value), (name, value)


def test_a_failed_train_leaves_the_index_as_it_was(monkeypatch):
    x, _ = clustered(600, 16, 1, seed=5)
    for make in (lambda: quanta.IVFBinaryIndex(16, 4), lambda: quanta.IVFPQIndex(16, 4, 4, 4),
                 lambda: quanta.PQIndex(16, 4, 4, refine="f8e4m3")):
        for trained_before in (False, True):
            index = make()
            if trained_before:
                index.train(x)
            before = index.to_bytes()
            # A failure after the first part of the training (the coarse quantizer, the codes)
            def fail(*args, **kwargs):
                raise MemoryError("injected")
            monkeypatch.setattr(type(index), "_train_refine", fail)
            with pytest.raises(MemoryError, match="injected"):
                index.train(x[::-1].copy(), seed=7)
            monkeypatch.undo()
            assert index.to_bytes() == before
            assert index.is_trained == trained_before
            index.train(x)  # and it trains and searches as a fresh index does
            index.add(x)
            fresh = make()
            fresh.train(x)
            fresh.add(x)
            np.testing.assert_array_equal(index.search(x[:20], 5).ids, fresh.search(x[:20], 5).ids)


def test_a_bad_binarizer_is_refused_before_the_coarse_training():
    x, _ = clustered(200, 16, 1, seed=6)
    index = quanta.IVFBinaryIndex(16, 4)
    before = index.to_bytes()
    with pytest.raises(TypeError, match="binarizer"):
        index.train(x, binarizer="nonsense")
    assert index.to_bytes() == before


def test_an_untrained_graph_with_codes_round_trips():
    index = quanta.index_factory(32, "Graph8(f16),PQ8x4")
    again = quanta.from_bytes(index.to_bytes())
    assert not again.is_trained and again.ntotal == 0
    x, _ = clustered(300, 32, 1, seed=7)
    again.add(x)
    assert again.search(x[:3], 1).ids[:, 0].tolist() == [0, 1, 2]


def test_a_binary_projection_too_large_is_refused_up_front():
    with pytest.raises(ValueError, match="bits"):
        quanta.BinaryIndex(100000)  # a 100,000 x 100,000 projection
    assert quanta.BinaryIndex(100000, bits=1024).bits == 1024


def test_a_save_removes_what_killed_saves_left_behind(tmp_path):
    from quanta import io
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    left = tmp_path / f"{io._TMP_PREFIX}{dead.pid}-abc123.tmp"   # a killed save's
    running = tmp_path / f"{io._TMP_PREFIX}{os.getpid()}-def456.tmp"  # a save under way
    other = tmp_path / f".quanta-otherhost-{dead.pid}-ghi789.tmp"  # another host's
    for p in (left, running, other):
        p.write_bytes(b"partial")
    index = quanta.FlatIndex(4)
    index.add(np.ones((2, 4), np.float32))
    index.save(tmp_path / "a.qnt")
    assert not left.exists() and running.exists() and other.exists()
    assert sorted(p.name for p in tmp_path.iterdir() if p.suffix == ".qnt") == ["a.qnt"]


@pytest.mark.parametrize("storage", ["f8e4m3", "f8e5m2"])
def test_f8_anisotropic_rounding_at_a_large_dim(storage):
    """A 16,384-d row: every element within one code of nearest, less error along the row."""
    x = np.random.default_rng(8).standard_normal((4, 16384)).astype(np.float32)
    near = quanta.FlatIndex(16384, "ip", storage, f8_rounding="nearest")
    aniso = quanta.FlatIndex(16384, "ip", storage)
    near.add(x)
    aniso.add(x)
    xn, xa = near.reconstruct(np.arange(4)), aniso.reconstruct(np.arange(4))
    assert np.all(np.abs(xa - x) <= 2.0 ** -2 * np.abs(x) + 2 * np.abs(xn - x) + 1e-12)
    assert np.abs(((xa - x) * x).sum(1)).mean() < 0.5 * np.abs(((xn - x) * x).sum(1)).mean()


def test_sparse_term_ids_past_int32_are_named():
    index = quanta.SparseIndex(n_postings=10)
    for dtype in (np.int64, np.uint64):
        with pytest.raises(ValueError, match="term id 8589934592 does not fit in int32"):
            index.add((np.array([0, 2]), np.array([5, 2 ** 33], dtype),
                       np.array([1.0, 2.0], np.float32)))
    assert index.ntotal == 0


def test_kmeans_integer_arguments_name_themselves():
    x, _ = clustered(100, 8, 1, seed=9)
    for name in ("niter", "seed", "max_points_per_centroid"):
        with pytest.raises(ValueError, match=name):
            quanta.kmeans(x, 4, **{name: 2 ** 70})
