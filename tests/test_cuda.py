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
