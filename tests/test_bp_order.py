"""bench.bp_order (the BP document order the BMP peer is indexed in): a permutation that puts
documents sharing terms into the same blocks."""
import numpy as np

from bench.bp_order import bp_order


def block_term_pairs(indptr, indices, perm, block):
    """Distinct (block, term) pairs when documents are stored in `perm` order: what block-max
    indexes keep one bound for."""
    pos = np.empty(len(perm), np.int64)
    pos[perm] = np.arange(len(perm))
    doc = np.repeat(np.arange(len(indptr) - 1), np.diff(indptr))
    return len(np.unique((pos[doc] // block) * (int(indices.max()) + 1) + indices))


def test_bp_order_groups_documents_that_share_terms():
    rng = np.random.default_rng(0)
    topics = [rng.choice(2000, 40, replace=False) for _ in range(30)]
    rows = [np.unique(rng.choice(topics[rng.integers(30)], 12)) for _ in range(1500)]
    indptr = np.concatenate([[0], np.cumsum([len(r) for r in rows])])
    indices = np.concatenate(rows).astype(np.int32)
    perm = bp_order(indptr, indices, 2000)
    assert np.array_equal(np.sort(perm), np.arange(1500))
    given = block_term_pairs(indptr, indices, np.arange(1500), 32)
    assert block_term_pairs(indptr, indices, perm, 32) < 0.7 * given
    assert np.array_equal(bp_order(indptr[:2], indices[:indptr[1]], 2000), [0])  # one document
