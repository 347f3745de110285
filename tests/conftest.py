import numpy as np
import pytest

import quanta


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


@pytest.fixture(params=quanta._core.supported_isas())
def simd_level(request):
    """Runs the test once per SIMD level this CPU supports, then restores the level."""
    before = quanta.simd_level()
    quanta.set_simd_level(request.param)
    yield request.param
    quanta.set_simd_level(before)


def clustered(n, dim, nq, seed=0, nclusters=64, normalize=True):
    """Gaussian clusters of varied spread around random centres; queries from the same mixture."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((nclusters, dim)).astype(np.float32)
    spread = rng.uniform(0.6, 1.2, nclusters).astype(np.float32)

    def draw(m):
        c = rng.integers(0, nclusters, m)
        x = centres[c] + spread[c, None] * rng.standard_normal((m, dim)).astype(np.float32)
        if normalize:
            x /= np.linalg.norm(x, axis=1, keepdims=True)
        return x.astype(np.float32)

    return draw(n), draw(nq)


def brute_force_knn(xb, xq, k, metric):
    xb = xb.astype(np.float64)
    xq = xq.astype(np.float64)
    if metric == "cosine":
        xb = xb / np.maximum(np.linalg.norm(xb, axis=1, keepdims=True), 1e-30)
        xq = xq / np.maximum(np.linalg.norm(xq, axis=1, keepdims=True), 1e-30)
    if metric == "l2":
        d = (xq ** 2).sum(1)[:, None] - 2 * xq @ xb.T + (xb ** 2).sum(1)[None, :]
        order = np.argsort(d, axis=1, kind="stable")[:, :k]
    else:
        d = xq @ xb.T
        order = np.argsort(-d, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(d, order, 1), order


def recall_at_k(I, I_true):
    k = I_true.shape[1]
    return float(np.mean([len(set(a[:k]) & set(b)) / k for a, b in zip(I, I_true)]))
