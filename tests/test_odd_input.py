"""Odd but legal input gets a right answer or a clear error, never silent garbage."""
import os

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
                  quanta.BinaryIndex(16), quanta.IVFBinaryIndex(16, 4)):
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
