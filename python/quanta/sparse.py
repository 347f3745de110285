"""Seismic-style approximate top-k inner-product search over learned sparse vectors.

>>> index = quanta.SparseIndex(n_postings=3500, summary_energy=0.4)
>>> index.add(docs_csr)                         # scipy.sparse CSR, or (indptr, indices, data)
>>> D, I = index.search(queries_csr, k=10, query_cut=10, heap_factor=0.8)
>>> D, I = index.search(queries_csr, k=10, exact=True)   # every document scored: the truth

Build (Bruch et al., SIGIR 2024, and the pyseismic-lsr reference): a forward index of the
documents (term ids as u16 for vocabularies up to 65,536 terms, else u32; values as f16, or u8
times a per-document scale with ``values="u8"``); per term a posting list pruned globally (the
``n_postings * vocabulary`` largest entries of the collection, at most
``n_postings * max_fraction`` per list), cut into blocks by one pass of k-means around
sampled documents (``centroid_fraction`` of the list; documents compared on their ``doc_cut``
largest entries; clusters of at most ``min_cluster_size`` documents dissolve), each block
summarized by the coordinate-wise maximum of its documents, cut to ``summary_energy`` of its
L1 mass and quantized to 8 bits (rounded up). Defaults are pyseismic-lsr's build defaults.

Search: the query's ``query_cut`` heaviest terms, heaviest first (its blocks in decreasing
summary score); a block whose summary dot product is below ``heap_factor`` times the current
k-th best score is skipped, the others' documents are scored exactly against the whole query.
Lower ``heap_factor`` and higher ``query_cut`` raise recall and cost. Batches run on all cores
(``threads``), results in query order.

Presets (build, then search) in the spirit of the reference's grid-searched configurations
(``SparseIndex.PRESETS``); measure on your data: recall depends on the encoder.
"""
from __future__ import annotations

import numpy as np

from . import _core
from ._validate import as_k, as_threads
from .flat import SearchResult
from .io import FormatError, Persistent, register_kind, write_container

_STATE = ("doc_ptr", "comp", "val16", "val8", "doc_scale", "list_ptr", "block_ptr", "sum_ptr",
          "postings", "sum_comp", "sum_code", "block_min", "block_step")
_DTYPES = {"doc_ptr": np.int64, "comp": np.uint32, "val16": np.uint16, "val8": np.uint8,
           "doc_scale": np.float32, "list_ptr": np.int64, "block_ptr": np.int64,
           "sum_ptr": np.int64, "postings": np.uint32, "sum_comp": np.uint32,
           "sum_code": np.uint8, "block_min": np.float32, "block_step": np.float32}


def as_csr(x, dim: int | None = None, name: str = "documents"):
    """(indptr int64, indices int32, values float32, dim) from a SciPy sparse matrix or an
    (indptr, indices, data) tuple. Rows must have sorted, distinct term ids (SciPy matrices are
    sorted here first); values finite and >= 0 (checked natively)."""
    if hasattr(x, "tocsr") and hasattr(x, "shape"):
        x = x.tocsr()
        if not x.has_sorted_indices:
            x = x.sorted_indices()
        if dim is not None and x.shape[1] > dim:
            raise ValueError(f"{name} have {x.shape[1]} columns but the index has {dim} terms")
        return (np.ascontiguousarray(x.indptr, np.int64), np.ascontiguousarray(x.indices, np.int32),
                np.ascontiguousarray(x.data, np.float32), dim or x.shape[1])
    if not (isinstance(x, (tuple, list)) and len(x) == 3):
        raise TypeError(f"{name} must be a scipy.sparse matrix or an (indptr, indices, data) tuple")
    indptr, indices, data = (np.asarray(a) for a in x)
    for a, what in ((indptr, "indptr"), (indices, "indices")):
        if a.dtype.kind not in "iu" or a.ndim != 1:
            raise TypeError(f"{name} {what} must be a 1-D integer array")
    if data.dtype.kind not in "fiu" or data.ndim != 1:
        raise TypeError(f"{name} data must be a 1-D array of real numbers")
    if len(indptr) < 2 or len(indices) != len(data) or indptr[-1] != len(indices):
        raise ValueError(f"{name}: indptr must have n + 1 >= 2 entries ending at len(indices), "
                         f"and indices and data the same length")
    if len(indices) and indices.min() < 0:
        raise ValueError(f"{name}: negative term id {int(indices.min())}")
    need = int(indices.max()) + 1 if len(indices) else 1
    if dim is not None and need > dim:
        raise ValueError(f"{name}: term id {need - 1} is beyond the index's {dim} terms")
    return (np.ascontiguousarray(indptr, np.int64), np.ascontiguousarray(indices, np.int32),
            np.ascontiguousarray(data, np.float32), dim or need)


class SparseIndex(Persistent):
    """Seismic-style index for non-negative sparse vectors (see the module docstring)."""

    PRESETS = {  # build and search settings for recall@10 targets (MS MARCO SPLADE, reference)
        0.90: (dict(n_postings=2000, centroid_fraction=0.2, summary_energy=0.5, max_fraction=3),
               dict(query_cut=4, heap_factor=0.9)),
        0.95: (dict(n_postings=4000, centroid_fraction=0.2, summary_energy=0.5, max_fraction=3),
               dict(query_cut=4, heap_factor=0.9)),
        0.97: (dict(n_postings=4000, centroid_fraction=0.2, summary_energy=0.5, max_fraction=3),
               dict(query_cut=6, heap_factor=0.8)),
    }

    def __init__(self, n_postings: int = 3500, centroid_fraction: float = 0.1,
                 min_cluster_size: int = 2, summary_energy: float = 0.4,
                 max_fraction: float = 1.5, doc_cut: int = 15, knn: int = 0, *,
                 values: str = "f16", dim: int | None = None, seed: int = 1142):
        if knn:
            raise ValueError("knn graphs are not implemented yet; use knn=0")
        if values not in ("f16", "u8"):
            raise ValueError(f"values must be 'f16' or 'u8'; got {values!r}")
        self.params = dict(n_postings=int(n_postings), centroid_fraction=float(centroid_fraction),
                           min_cluster_size=int(min_cluster_size),
                           summary_energy=float(summary_energy), max_fraction=float(max_fraction),
                           doc_cut=int(doc_cut))
        for key in ("n_postings", "doc_cut"):
            if self.params[key] < 1:
                raise ValueError(f"{key} must be >= 1; got {self.params[key]}")
        if not 0 < self.params["centroid_fraction"] <= 1:
            raise ValueError(f"centroid_fraction must be in (0, 1]; got {centroid_fraction}")
        if not 0 < self.params["summary_energy"] <= 1:
            raise ValueError(f"summary_energy must be in (0, 1]; got {summary_energy}")
        if not self.params["max_fraction"] > 0:
            raise ValueError(f"max_fraction must be > 0; got {max_fraction}")
        if self.params["min_cluster_size"] < 0:
            raise ValueError(f"min_cluster_size must be >= 0; got {min_cluster_size}")
        self.values, self.seed, self.dim = values, int(seed), dim
        self._index = None

    @classmethod
    def preset(cls, recall: float, **overrides):
        """(index, search settings) for a recall@10 target in PRESETS (0.90, 0.95, 0.97)."""
        if recall not in cls.PRESETS:
            raise ValueError(f"recall must be one of {sorted(cls.PRESETS)}; got {recall}")
        build, search = cls.PRESETS[recall]
        return cls(**{**build, **overrides}), dict(search)

    def _native(self, dim):
        p = self.params
        return _core.SparseIndex(dim, p["n_postings"], p["centroid_fraction"],
                                 p["min_cluster_size"], p["summary_energy"], p["max_fraction"],
                                 p["doc_cut"], self.values == "u8", self.seed)

    ntotal = property(lambda self: 0 if self._index is None else self._index.ndocs)

    @property
    def memory_usage(self) -> int:
        return 0 if self._index is None else int(self._index.memory_usage)

    def __repr__(self):
        return (f"SparseIndex({', '.join(f'{k}={v}' for k, v in self.params.items())}, "
                f"values={self.values!r}, dim={self.dim}, ntotal={self.ntotal})")

    def add(self, docs, *, threads: int = 0) -> None:
        """Builds the index over `docs` (scipy.sparse CSR or (indptr, indices, data)). The
        index is static: build it once from all documents."""
        if self._index is not None:
            raise ValueError("the index is built already (Seismic indexes are static); build a "
                             "new SparseIndex from all documents")
        indptr, indices, data, dim = as_csr(docs, self.dim)
        if len(indptr) < 2:
            raise ValueError("documents: no rows")
        native = self._native(dim)
        native.build(indptr, indices, data, as_threads(threads))
        self._index, self.dim = native, dim

    def search(self, queries, k: int = 10, query_cut: int = 10, heap_factor: float = 0.8, *,
               exact: bool = False, threads: int = 0) -> SearchResult:
        """Top-k documents by inner product for each query row; (scores, positions), -1 where
        fewer than k documents were reached."""
        if self._index is None:
            raise ValueError("search: the index is empty; add documents first")
        k, threads = as_k(k), as_threads(threads)
        if isinstance(query_cut, bool) or not isinstance(query_cut, (int, np.integer)) \
                or query_cut < 1:
            raise ValueError(f"query_cut must be an integer >= 1; got {query_cut!r}")
        if not (isinstance(heap_factor, (int, float, np.floating)) and np.isfinite(heap_factor)
                and heap_factor > 0):
            raise ValueError(f"heap_factor must be a positive number; got {heap_factor!r}")
        indptr, indices, data, _ = as_csr(queries, self.dim, "queries")
        D, I = self._index.search(indptr, indices, data, k, int(query_cut), float(heap_factor),
                                  bool(exact), threads)
        return SearchResult(D, I)

    def _write(self, f):
        meta = {**self.params, "values": self.values, "seed": self.seed, "dim": self.dim}
        arrays = {}
        if self._index is not None:
            st = self._index.state()
            arrays = {f"S{i:03d}": np.asarray(st[name]) for i, name in enumerate(_STATE)}
        write_container(f, "SPRS", self.dim or 0, self.ntotal, meta, arrays)

    @classmethod
    def _from_parts(cls, dim, ntotal, meta, arrays, source):
        try:
            out = cls(**{k: meta[k] for k in ("n_postings", "centroid_fraction",
                                              "min_cluster_size", "summary_energy",
                                              "max_fraction", "doc_cut")},
                      values=meta["values"], seed=meta["seed"], dim=meta["dim"])
            if arrays:
                native = out._native(dim)
                native.restore({name: np.ascontiguousarray(arrays[f"S{i:03d}"], _DTYPES[name])
                                for i, name in enumerate(_STATE)})
                if native.ndocs != ntotal:
                    raise ValueError("document count mismatch")
                out._index = native
        except (KeyError, TypeError, ValueError) as e:
            raise FormatError(f"{source}: not a valid SparseIndex ({e})") from None
        return out


register_kind("SPRS", SparseIndex)
