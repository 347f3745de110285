import pickle

import numpy as np
import pytest

import quanta
from conftest import brute_force_knn, recall_at_k

torch = pytest.importorskip("torch")
from quanta import binary_train  # noqa: E402


@pytest.fixture(scope="module")
def data():
    return quanta.datasets.clustered(3000, 32, 60, seed=31)


@pytest.mark.parametrize("hidden, normalize", [(0, False), (16, True)])
def test_export_folds_batchnorm_and_matches_torch(data, hidden, normalize):
    xb, _ = data
    b = quanta.RecurrentBinarizer(32, 40, 2, seed=2).fit(xb)
    torch.manual_seed(0)
    model = binary_train._make_head(torch, b, hidden, normalize)
    if hidden == 0:
        model.load_linear(b._b.transforms())
    model.train()
    with torch.no_grad():  # move the BatchNorm running statistics off their defaults
        for _ in range(3):
            model(torch.from_numpy(xb[:512]))
    model.eval()
    with torch.no_grad():
        ref = model(torch.from_numpy(xb[:400])).numpy()
    first, recon, resid = model.export()
    out = quanta.RecurrentBinarizer(32, 40, 2)
    out.set_transforms(first, recon, resid, normalize_reconstruction=normalize)
    got = out.decode(out.encode(xb[:400]))
    assert np.mean(got == ref) > 0.999  # float32 vs torch: a sign may flip only at ~0
    if hidden == 0:  # the closed-form start is reproduced exactly
        np.testing.assert_array_equal(got, b.decode(b.encode(xb[:400])))


def test_fit_learned_unpaired_keeps_recall_and_needs_no_torch_to_encode(data, tmp_path):
    xb, xq = data
    _, gt = brute_force_knn(xb, xq, 10, "ip")
    closed = quanta.BinaryIndex(32, 32, 1, query_levels=1)
    closed.train(xb)
    closed.add(xb)
    b = quanta.RecurrentBinarizer(32, 32, 1, seed=1).fit_learned(xb, epochs=2)
    learned = quanta.BinaryIndex(32, 32, 1, query_levels=1)
    learned.train(xb, binarizer=b)
    learned.add(xb)
    r0 = recall_at_k(closed.search(xq, 10).ids, gt)
    r1 = recall_at_k(learned.search(xq, 10).ids, gt)
    assert r1 >= r0 - 0.03, (r0, r1)
    b.save(tmp_path / "b.qnt")  # plain arrays: encoding needs no torch
    np.testing.assert_array_equal(quanta.load(tmp_path / "b.qnt").encode(xq), b.encode(xq))
    np.testing.assert_array_equal(pickle.loads(pickle.dumps(learned)).search(xq, 10).ids,
                                  learned.search(xq, 10).ids)


def test_fit_learned_paired_mlp_and_errors(data):
    xb, _ = data
    rng = np.random.default_rng(0)
    other = xb + 0.05 * rng.standard_normal(xb.shape).astype(np.float32)
    b = quanta.RecurrentBinarizer(32, 32, 1, seed=3)
    b.fit_learned(xb, other, hidden=16, epochs=1, batch_size=512)
    assert b._b.transforms()[3] is True  # BEBR's normalized reconstructions with MLPs
    assert len(b._b.transforms()[0]) == 2  # Linear(+folded BN)+ReLU, Linear
    codes = b.encode(xb[:10])
    assert codes.shape == (10, 2)
    with pytest.raises(ValueError, match="pairs"):
        b.fit_learned(xb, other[:10])
    with pytest.raises(ValueError, match="epochs"):
        b.fit_learned(xb, epochs=0)
    index = quanta.BinaryIndex(32, 32, 2)
    with pytest.raises(ValueError, match="levels"):
        index.train(xb, binarizer=b)  # 1 level, the index needs 2
    with pytest.raises(TypeError, match="RecurrentBinarizer"):
        index.train(xb, binarizer="pca")
