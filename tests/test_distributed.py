"""quanta.distributed: sharded builds (locally and on a local Ray cluster) searched as one
index. Sharded Flat must equal the single index exactly; the approximate kinds must match its
recall; failures must name the shard."""
import os

import numpy as np
import pytest

import quanta
from quanta.distributed import ShardedIndex, ShardError, build_sharded
from conftest import brute_force_knn, clustered, recall_at_k


@pytest.fixture(scope="module")
def data():
    return clustered(6000, 32, 60, seed=3)


def single(spec, xb, ids=None, metric="ip"):
    index = quanta.index_factory(xb.shape[1], spec, metric)
    if not index.is_trained:
        index.train(xb)  # build_sharded trains on every row when there are fewer than train_size
    index.add(xb, ids)
    return index


@pytest.mark.parametrize("metric", ["ip", "l2"])
def test_sharded_flat_equals_the_single_index(tmp_path, data, metric):
    xb, xq = data
    ids = np.arange(len(xb), dtype=np.int64) * 7 + 1000  # global ids, not positions
    sharded = build_sharded("Flat", xb, 4, tmp_path, metric=metric, ids=ids, backend="local")
    assert sharded.n_shards == 4 and sharded.ntotal == len(xb)
    assert sorted(sharded.shard_sizes) == [1500] * 4
    D0, I0 = single("Flat", xb, ids, metric).search(xq, 10)
    D, I = sharded.search(xq, 10)
    np.testing.assert_array_equal(I, I0)
    np.testing.assert_array_equal(D, D0)
    # more than a shard holds: padded exactly as a single index pads
    small = build_sharded("Flat", xb[:12], 3, tmp_path / "small", metric=metric,
                          backend="local")
    D0, I0 = single("Flat", xb[:12], metric=metric).search(xq[:5], 20)
    D, I = small.search(xq[:5], 20)
    np.testing.assert_array_equal(I, I0)
    np.testing.assert_array_equal(D, D0)


def test_sharded_flat_filters_range_search_remove_and_save(tmp_path, data):
    xb, xq = data
    sharded = build_sharded("Flat(f16)", xb, 3, tmp_path, backend="local")
    ref = single("Flat(f16)", xb)
    allow = quanta.Filter.range(1000, 2500)
    for f in (allow, ~allow, np.arange(0, 6000, 5), [allow, None] * 30):
        np.testing.assert_array_equal(sharded.search(xq, 10, filter=f).ids,
                                      ref.search(xq, 10, filter=f).ids)
    R, R0 = sharded.range_search(xq, 0.6), ref.range_search(xq, 0.6)
    np.testing.assert_array_equal(R.lims, R0.lims)
    for i in range(len(xq)):
        np.testing.assert_array_equal(np.sort(R.query(i)[1]), np.sort(R0.query(i)[1]))
        assert np.all(np.diff(R.query(i)[0]) <= 0)  # best first
    gone = ref.search(xq[:5], 3).ids.ravel()
    assert sharded.remove(gone) == ref.remove(gone) == len(np.unique(gone))
    assert not sharded.contains(gone).any()
    assert sharded.contains(np.setdiff1d(np.arange(len(xb)), gone)).all()
    np.testing.assert_array_equal(sharded.search(xq, 10).ids, ref.search(xq, 10).ids)
    sharded.save()
    again = ShardedIndex.open(tmp_path)
    assert again.ntotal == len(xb) - len(np.unique(gone))
    assert again.manifest["ntotal"] == again.ntotal
    np.testing.assert_array_equal(again.search(xq, 10).ids, ref.search(xq, 10).ids)


@pytest.mark.parametrize("spec", ["IVF32,PQ8x4fs", "IVF32,PQ8x8", "PQ8x8", "RBE32x2"])
def test_sharded_quantized_recall_matches_the_single_index(tmp_path, data, spec):
    xb, xq = data
    _, gt = brute_force_knn(xb, xq, 10, "ip")
    kw = {"nprobe": 6} if spec.startswith("IVF") else {}
    sharded = build_sharded(spec, xb, 4, tmp_path, backend="local")
    one = single(spec, xb)
    r_sharded = recall_at_k(sharded.search(xq, 10, **kw).ids, gt)
    r_single = recall_at_k(one.search(xq, 10, **kw).ids, gt)
    assert abs(r_sharded - r_single) <= 0.005, (r_sharded, r_single)
    if spec == "IVF32,PQ8x4fs":  # searched as one index (search_together): the same results
        assert sharded._backend.together
        D, I = sharded.search(xq, 10, nprobe=6)
        D0, I0 = one.search(xq, 10, nprobe=6)
        np.testing.assert_array_equal(I, I0)
        np.testing.assert_array_equal(D, D0)
        # a filter goes shard by shard, then the merge (each shard widens its own search
        # when the filter leaves it short, so the probed lists may differ from one index's)
        f = quanta.Filter.range(0, 3000)
        _, gt_f = brute_force_knn(xb[:3000], xq, 10, "ip")
        I = sharded.search(xq, 10, nprobe=6, filter=f).ids
        assert ((I >= 0) & (I < 3000)).all()
        assert recall_at_k(I, gt_f) >= recall_at_k(one.search(xq, 10, nprobe=6, filter=f).ids,
                                                   gt_f) - 0.02


def test_search_together_refuses_parts_of_other_states(data):
    xb, xq = data
    a, b = single("IVF32,PQ8x4fs", xb[:3000]), single("IVF32,PQ8x4fs", xb[3000:])
    with pytest.raises(ValueError, match="same state"):
        a.search_together([b], xq, 10)
    with pytest.raises(TypeError, match="fast-scan"):
        a.search_together([single("IVF32,PQ8x4fs,Refine(f16)", xb[:3000])], xq, 10)


def test_sharded_graph_and_exact_rerank(tmp_path, data):
    xb, xq = data
    _, gt = brute_force_knn(xb, xq, 10, "ip")
    graph = build_sharded("Graph16(f16)", xb, 3, tmp_path / "g", backend="local")
    assert recall_at_k(graph.search(xq, 10, width=48).ids, gt) >= \
        recall_at_k(single("Graph16(f16)", xb).search(xq, 10, width=48).ids, gt) - 0.02
    build_sharded("PQ8x4fs", xb, 3, tmp_path / "pq", backend="local")
    plain = ShardedIndex.open(tmp_path / "pq")
    with pytest.raises(ValueError, match="vectors"):
        plain.search(xq, 10, rerank_factor=4)
    exact = ShardedIndex.open(tmp_path / "pq", vectors=xb)
    r_plain = recall_at_k(plain.search(xq, 10).ids, gt)
    D, I = exact.search(xq, 10, rerank_factor=8)
    assert recall_at_k(I, gt) > max(0.9, r_plain + 0.2)
    np.testing.assert_allclose(D, np.einsum("qkd,qd->qk", xb[I], xq), rtol=1e-5, atol=1e-6)


def test_sharded_sparse_and_multivector(tmp_path):
    from bench.build_splade import shipped_sample
    docs, queries, dim = shipped_sample()
    exact = quanta.SparseIndex(dim=dim)
    exact.add(docs)
    _, gt = exact.search(queries, 10, exact=True)
    sharded = build_sharded(quanta.SparseIndex(), docs, 3, tmp_path / "s", backend="local")
    one = quanta.SparseIndex(dim=dim)
    one.add(docs)
    # the posting budget is the corpus's: each shard keeps its share, together about one index
    shards = sharded._backend.indexes
    assert abs(sum(s.params["n_postings"] for s in shards) - one.params["n_postings"]) <= 2
    held = sum(int(s._index.npostings) for s in shards)
    assert 0.8 * int(one._index.npostings) <= held <= 1.1 * int(one._index.npostings)
    for cut in (10, 20):
        # each shard keeps its own k best, so it scores more documents: recall is not lower
        assert recall_at_k(sharded.search(queries, 10, query_cut=cut).ids, gt) >= \
            recall_at_k(one.search(queries, 10, query_cut=cut).ids, gt) - 0.005
    np.testing.assert_array_equal(sharded.search(queries, 10, exact=True).ids, gt)

    rng = np.random.default_rng(0)
    sets = [rng.standard_normal((int(rng.integers(2, 9)), 16)).astype(np.float32)
            for _ in range(300)]
    qsets = [rng.standard_normal((3, 16)).astype(np.float32) for _ in range(20)]
    mv = build_sharded(quanta.MultiVectorIndex(16), sets, 3, tmp_path / "m", backend="local")
    ref = quanta.MultiVectorIndex(16)
    ref.add(sets)
    D0, I0 = ref.search(qsets, k=5, exact=True)
    D, I = mv.search(qsets, k=5, exact=True)
    np.testing.assert_array_equal(I, I0)
    np.testing.assert_allclose(D, D0, rtol=1e-6)


def test_sharded_from_files_and_jsonl(tmp_path, data):
    xb, xq = data
    np.save(tmp_path / "a.npy", xb[:2500])
    with open(tmp_path / "b.fbin", "wb") as f:
        np.array([3500, 32], "<i4").tofile(f)
        xb[2500:].tofile(f)
    sharded = build_sharded("Flat", [tmp_path / "a.npy", tmp_path / "b.fbin"], 4,
                            tmp_path / "out", backend="local")
    np.testing.assert_array_equal(sharded.search(xq, 10).ids, single("Flat", xb).search(xq, 10).ids)
    mapped = build_sharded("Flat", np.load(tmp_path / "a.npy", mmap_mode="r"), 2,
                           tmp_path / "mm", backend="local")
    np.testing.assert_array_equal(mapped.search(xq, 10).ids,
                                  single("Flat", xb[:2500]).search(xq, 10).ids)

    import json
    rows = [{"id": 100 + i, "vector": {w: float(v) for w, v in zip(("cat", "dog", "eel", f"t{i % 7}"),
                                                                  (1 + i % 3, i % 5, 0.5, 2))}}
            for i in range(40)]
    for j in range(2):  # "eel" only in the first file: the vocabulary must be shared
        with open(tmp_path / f"d{j}.jsonl", "w") as f:
            for r in rows[20 * j:20 * j + 20]:
                if j:
                    r["vector"].pop("eel")
                f.write(json.dumps(r) + "\n")
    with open(tmp_path / "q.jsonl", "w") as f:
        f.write(json.dumps({"id": 0, "vector": {"eel": 1.0, "t3": 1.0}}) + "\n")
    sp = build_sharded(quanta.SparseIndex(), [tmp_path / "d0.jsonl", tmp_path / "d1.jsonl"], 2,
                       tmp_path / "sp", backend="local")
    D, I = sp.search(tmp_path / "q.jsonl", 5, exact=True)
    assert set(I[0]) <= set(range(100, 140))
    assert I[0][0] in (103, 110, 117)  # "eel" and "t3" together score highest


def test_sharded_build_refusals(tmp_path, data):
    xb, _ = data
    with pytest.raises(ValueError, match="n_shards"):
        build_sharded("Flat", xb[:3], 4, tmp_path, backend="local")
    with pytest.raises(ValueError, match="backend"):
        build_sharded("Flat", xb, 2, tmp_path, backend="spark")
    full = quanta.FlatIndex(32)
    full.add(xb[:5])
    with pytest.raises(ValueError, match="empty"):
        build_sharded(full, xb, 2, tmp_path, backend="local")
    with pytest.raises(ValueError, match="dim"):
        build_sharded(quanta.FlatIndex(16), xb, 2, tmp_path, backend="local")
    with pytest.raises(TypeError, match="source"):
        build_sharded("Flat", {"x": 1}, 2, tmp_path, backend="local")
    first = build_sharded("Flat", xb, 2, tmp_path, backend="local")
    with pytest.raises(FileExistsError, match="overwrite"):
        build_sharded("Flat", xb, 2, tmp_path, backend="local")
    bad = xb.copy()
    bad[5000, 3] = np.nan  # in the last shard: the first ones are written, then it fails
    with pytest.raises(ValueError, match="NaN"):
        build_sharded("Flat", bad, 3, tmp_path, backend="local", overwrite=True)
    assert sorted(os.listdir(tmp_path)) == sorted(
        ["quanta-shards.json", first.manifest["trained"]] +
        [s["file"] for s in first.manifest["shards"]])
    assert ShardedIndex.open(tmp_path).ntotal == len(xb)  # the old index is intact
    build_sharded("Flat", xb[:100], 3, tmp_path, backend="local", overwrite=True)
    assert ShardedIndex.open(tmp_path).ntotal == 100 and len(os.listdir(tmp_path)) == 5


def test_missing_or_corrupt_shards_are_named(tmp_path, data):
    xb, xq = data
    sharded = build_sharded("Flat", xb, 3, tmp_path, backend="local")
    files = [os.path.join(tmp_path, s["file"]) for s in sharded.manifest["shards"]]
    sharded.close()
    raw = open(files[1], "rb").read()
    with open(files[1], "wb") as f:  # same size, one byte of the vectors changed
        mid = len(raw) // 2
        f.write(raw[:mid] + bytes([raw[mid] ^ 0xFF]) + raw[mid + 1:])
    ShardedIndex.open(tmp_path)  # a mapped open does not read the arrays
    with pytest.raises(ShardError, match="shard 1 .*checksum"):
        ShardedIndex.open(tmp_path, verify=True)
    with open(files[1], "wb") as f:
        f.write(raw[:-100])
    with pytest.raises(ShardError, match="shard 1 .*truncated"):
        ShardedIndex.open(tmp_path)
    with open(files[1], "wb") as f:
        f.write(raw)
    os.unlink(files[2])
    with pytest.raises(ShardError, match=f"shard 2 .*{os.path.basename(files[2])}.* missing"):
        ShardedIndex.open(tmp_path)
    with pytest.raises(FileNotFoundError, match="build_sharded"):
        ShardedIndex.open(tmp_path / "nothing")


def test_filters_pickle():
    import pickle
    f = ~quanta.Filter.ids([1, 5, 9])
    g = pickle.loads(pickle.dumps(f))
    assert repr(g) == repr(f)
    np.testing.assert_array_equal(g.allows([1, 2, 9, 10]), [False, True, False, True])
    m = pickle.loads(pickle.dumps(quanta.Filter.bitmap(np.array([0, 1, 1], bool))))
    np.testing.assert_array_equal(m.allows([0, 1, 2, 3]), [False, True, True, False])
    r = pickle.loads(pickle.dumps(~~quanta.Filter.range(3, 5)))
    np.testing.assert_array_equal(r.allows([2, 3, 4, 5]), [False, True, True, False])


# -- on a local Ray cluster ------------------------------------------------------------------

@pytest.fixture(scope="module")
def ray_cluster():
    ray = pytest.importorskip("ray", reason="Ray is not installed (pip install 'quanta[ray]')")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield ray
    ray.shutdown()


def test_ray_build_and_actors_match_the_local_build(tmp_path, data, ray_cluster):
    xb, xq = data
    spec = "IVF32,PQ8x4fs,Refine(f16)"
    ids = np.arange(len(xb), dtype=np.int64)[::-1] * 3
    on_ray = build_sharded(spec, xb, 3, tmp_path / "ray", ids=ids)
    local = build_sharded(spec, xb, 3, tmp_path / "local", ids=ids, backend="local")
    served = ShardedIndex.open(tmp_path / "ray", ray=True)
    want = local.search(xq, 10, nprobe=8)
    for index in (on_ray, served):
        got = index.search(xq, 10, nprobe=8)
        np.testing.assert_array_equal(got.ids, want.ids)
        np.testing.assert_array_equal(got.distances, want.distances)
    f = quanta.Filter.ids(ids[::3])
    np.testing.assert_array_equal(served.search(xq, 10, nprobe=8, filter=f).ids,
                                  local.search(xq, 10, nprobe=8, filter=f).ids)
    with pytest.raises(ValueError, match="nprobe"):  # the caller's error, as on one index
        served.search(xq, 10, nprobe=0)

    # an actor that dies is restarted by Ray (it maps its file again) and gets this
    # session's removals replayed: a removed id never comes back
    top = served.search(xq[:1], 1, nprobe=8).ids[0, 0]
    assert served.remove([top]) == 1
    ray_cluster.kill(served._backend.actors[0], no_restart=False)
    ray_cluster.kill(served._backend.actors[1], no_restart=False)
    ray_cluster.kill(served._backend.actors[2], no_restart=False)
    assert top not in served.search(xq[:1], 10, nprobe=8).ids
    assert served.ntotal == len(xb) - 1
    # one that cannot come back makes every search fail, naming it
    ray_cluster.kill(served._backend.actors[1], no_restart=True)
    with pytest.raises(ShardError, match="shard 1"):
        served.search(xq, 10, nprobe=8)
    served.close()


def test_ray_dataset_source(tmp_path, data, ray_cluster):
    rd = pytest.importorskip("ray.data", reason="Ray Data needs pyarrow")
    xb, xq = data
    ds = rd.from_items([{"id": 5 * i, "emb": v} for i, v in enumerate(xb[:900])])
    sharded = build_sharded("Flat", ds, 3, tmp_path, column="emb", id_column="id")
    D0, I0 = single("Flat", xb[:900], np.arange(900) * 5).search(xq, 10)
    np.testing.assert_array_equal(sharded.search(xq, 10).ids, I0)


def test_ray_task_that_dies_is_retried(tmp_path, data, ray_cluster):
    xb, xq = data
    marker = tmp_path / "died-once"

    class DiesOnce:  # a Flat index whose first add ends its worker process
        def __init__(self, always):
            self.inner, self.always = quanta.FlatIndex(32), always
            self.dim, self.metric, self.ntotal = 32, "ip", 0

        def add(self, x, ids=None, threads=0):
            if self.always or not marker.exists():
                marker.touch()
                os._exit(1)
            self.inner.add(x, ids, threads=threads)

        def save(self, path):
            self.inner.save(path)
            self.ntotal = self.inner.ntotal

    sharded = build_sharded(DiesOnce(False), xb, 2, tmp_path / "ok", max_retries=2)
    assert marker.exists() and sharded.ntotal == len(xb)
    np.testing.assert_array_equal(sharded.search(xq, 10).ids, single("Flat", xb).search(xq, 10).ids)
    with pytest.raises(ShardError, match="could not be built"):
        build_sharded(DiesOnce(True), xb, 2, tmp_path / "bad", max_retries=1)
    assert not os.path.exists(tmp_path / "bad" / "quanta-shards.json")
