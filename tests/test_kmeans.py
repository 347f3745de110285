import numpy as np
import pytest

import quanta


def blobs(k, per, dim, seed=0, sep=10.0):
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((k, dim)) * sep
    labels = np.repeat(np.arange(k), per)
    x = centres[labels] + rng.standard_normal((k * per, dim))
    return x.astype(np.float32), labels, centres


def test_recovers_separated_clusters():
    x, labels, centres = blobs(8, 200, 16)
    res = quanta.kmeans(x, 8, seed=3)
    assert res.centroids.shape == (8, 16) and res.assignments.shape == (1600,)
    # every true cluster maps to exactly one found cluster and back
    pairs = {(a, b) for a, b in zip(labels, res.assignments)}
    assert len(pairs) == 8
    for c in range(8):
        found = res.centroids[res.assignments[labels == c][0]]
        assert np.linalg.norm(found - centres[c]) < 0.5


@pytest.mark.parametrize("init", ["k-means++", "random"])
def test_objective_decreases_and_matches_assignment(init):
    x = quanta.datasets.clustered(5000, 32, 1, seed=2)[0]
    res = quanta.kmeans(x, 50, niter=15, seed=1, init=init)
    obj = res.objective
    assert len(obj) == 15 and np.all(np.diff(obj) <= 1e-6 * obj[0])
    # assignments are the nearest centroids (NumPy reference)
    d = ((x[:, None, :] - res.centroids[None]) ** 2).sum(-1)
    best = d.min(1)
    np.testing.assert_allclose(d[np.arange(len(x)), res.assignments], best, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("init", ["k-means++", "random"])
@pytest.mark.parametrize("dim", [24, 96])  # per-point kernel and GEMM assignment
def test_deterministic_for_seed_whatever_threads(init, dim):
    x = quanta.datasets.clustered(20000, dim, 1, seed=4)[0]
    a = quanta.kmeans(x, 64, seed=7, threads=1, init=init)
    b = quanta.kmeans(x, 64, seed=7, threads=2, init=init)
    c = quanta.kmeans(x, 64, seed=8, threads=2, init=init)
    np.testing.assert_array_equal(a.centroids, b.centroids)
    np.testing.assert_array_equal(a.assignments, b.assignments)
    assert not np.array_equal(a.centroids, c.centroids)


def test_subsampling_and_full_assignment():
    x = quanta.datasets.clustered(30000, 8, 1, seed=5)[0]
    res = quanta.kmeans(x, 16, max_points_per_centroid=50, niter=5)
    assert res.assignments.shape == (30000,)
    assert set(np.unique(res.assignments)) == set(range(16))


def test_empty_clusters_are_repaired():
    # 5 distinct points, 8 clusters: empties at every iteration must be split, never NaN
    rng = np.random.default_rng(0)
    x = np.repeat(rng.standard_normal((5, 4)).astype(np.float32), 40, axis=0)
    res = quanta.kmeans(x, 8, niter=5)
    assert np.isfinite(res.centroids).all()


def test_spherical():
    x = quanta.datasets.clustered(3000, 16, 1, seed=6)[0]
    res = quanta.kmeans(x, 10, spherical=True, niter=10)
    np.testing.assert_allclose(np.linalg.norm(res.centroids, axis=1), 1, rtol=1e-5)
    assert np.all(np.diff(res.objective) >= -1e-6 * abs(res.objective[0]))  # sum of ip rises
    np.testing.assert_array_equal(res.assignments, np.argmax(x @ res.centroids.T, axis=1))


def test_errors():
    x = np.ones((5, 3), np.float32)
    with pytest.raises(ValueError, match="at least k"):
        quanta.kmeans(x, 6)
    with pytest.raises(ValueError, match="k must be"):
        quanta.kmeans(x, 0)
    with pytest.raises(TypeError):
        quanta.kmeans(x, 2.5)
    with pytest.raises(ValueError, match="init"):
        quanta.kmeans(x, 2, init="kmeans")
    with pytest.raises(ValueError, match="NaN"):
        quanta.kmeans(np.full((10, 3), np.nan, np.float32), 2)
    with pytest.raises(TypeError):
        quanta.kmeans(np.array([["a", "b"]]), 1)
