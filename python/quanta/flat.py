"""Exact (brute-force) search over vectors kept in a compact storage."""
from __future__ import annotations

from typing import NamedTuple

import numpy as np

from . import _core
from ._mutable import Removable
from ._rwlock import guarded
from ._types import Metric, Storage
from ._validate import (as_f32_matrix, as_ids, as_int, as_k, as_radius, as_threads, native_k,
                        reconstruct_ids)
from .filter import as_filters
from .io import FormatError, Persistent, register_kind, write_container
from .storage import _check_storage

METRICS = ("ip", "l2", "cosine")
F8_SCALES = ("none", "global", "vector")
F8_ROUNDINGS = ("nearest", "anisotropic")


class SearchResult(NamedTuple):
    """Search output: ``distances`` float32 (nq, k) and ``ids`` int64 (nq, k).

    Unpacks in faiss order: ``D, I = index.search(q, k)``. Rows with fewer than k hits are
    padded with id -1 and distance -inf (ip, cosine: similarities, higher is better) or +inf (l2).
    """

    distances: np.ndarray
    ids: np.ndarray

    def padded(self, k: int, metric: str) -> "SearchResult":
        """These results widened to k columns of missing results (a search asks its native
        part for at most the index's size: ``native_k``)."""
        nq, have = self.ids.shape
        if have >= k:
            return self
        try:
            D = np.full((nq, k), np.inf if metric == "l2" else -np.inf, np.float32)
            I = np.full((nq, k), -1, np.int64)
        except MemoryError:
            raise MemoryError(f"k={k}: a ({nq}, {k}) result does not fit in memory (the index "
                              f"can return at most {have} per query)") from None
        D[:, :have], I[:, :have] = self.distances, self.ids
        return SearchResult(D, I)


class RangeResult(NamedTuple):
    """Range search output in faiss's layout: query i's hits are
    ``distances[lims[i]:lims[i + 1]]`` and ``ids[lims[i]:lims[i + 1]]``, best first."""

    lims: np.ndarray
    distances: np.ndarray
    ids: np.ndarray

    def query(self, i: int):
        """(distances, ids) of query i."""
        a, b = int(self.lims[i]), int(self.lims[i + 1])
        return self.distances[a:b], self.ids[a:b]


@guarded
class FlatIndex(Removable, Persistent):
    """Exact k-NN search over vectors stored as f32, f16, bf16, f8e4m3, f8e5m2 or i8.

    Parameters
    ----------
    dim : vector dimension.
    metric : "ip" (inner product, higher is better), "l2" (squared Euclidean) or "cosine"
        (vectors and queries are normalized; distances are cosine similarities).
    storage : element type kept in the index; queries stay float32.
    f8_scale : float8 only. "global" (default) multiplies every vector by one power of two
        chosen on the first add (or ``train``) so that small components of normalized
        embeddings stay out of E4M3's coarse subnormal range; "vector" stores one float scale
        per vector (4 more bytes each); "none" is the plain cast.
    f8_rounding : float8 only. "anisotropic" (default) rounds each element up or down (never
        more than one step from nearest) to make the error of the whole vector small along the
        vector itself, which is what moves its inner products with near neighbours (ScaNN's
        anisotropic loss, weight 8); "nearest" is the plain round-to-nearest-even cast. On
        MiniLM text embeddings recall@10 of f8e4m3 goes from 0.980 to 0.987.

    ``i8`` stores round(x / s) with a symmetric per-dimension scale s = max|x| / 127, learned
    by ``train`` (or from the first ``add``). Thread safety: searches run from many threads at
    once; ``train`` / ``add`` / ``reset`` / ``remove`` / ``compact`` wait for them and run
    alone (a readers-writer lock per index).
    """

    def __init__(self, dim: int, metric: Metric = "ip", storage: Storage = "f32", *,
                 f8_scale: str = "global", f8_rounding: str = "anisotropic"):
        dim = as_int(dim, "dim", 1)
        if metric not in METRICS:
            raise ValueError(f"metric must be one of {METRICS}; got {metric!r}")
        _check_storage(storage)
        if f8_scale not in F8_SCALES:
            raise ValueError(f"f8_scale must be one of {F8_SCALES}; got {f8_scale!r}")
        if f8_rounding not in F8_ROUNDINGS:
            raise ValueError(f"f8_rounding must be one of {F8_ROUNDINGS}; got {f8_rounding!r}")
        self._index = _core.FlatIndex(int(dim), metric, storage, f8_scale,
                                      f8_rounding == "anisotropic")

    # -- properties -------------------------------------------------------------------------
    dim = property(lambda self: self._index.dim)
    ntotal = property(lambda self: self._index.ntotal)
    metric = property(lambda self: self._index.metric)
    storage = property(lambda self: self._index.storage)
    f8_scale = property(lambda self: self._index.f8_scale)
    f8_rounding = property(
        lambda self: "anisotropic" if self._index.f8_anisotropic else "nearest")
    is_trained = property(lambda self: self._index.is_trained)
    code_size = property(lambda self: self._index.code_size, doc="bytes per stored vector code")
    memory_usage = property(lambda self: self._index.memory_usage, doc="bytes held by the index")

    def __len__(self) -> int:
        return self.ntotal

    def __repr__(self) -> str:
        extra = f", f8_scale={self.f8_scale!r}" if self.storage.startswith("f8") else ""
        return (f"FlatIndex(dim={self.dim}, metric={self.metric!r}, storage={self.storage!r}"
                f"{extra}, ntotal={self.ntotal})")

    # -- building ---------------------------------------------------------------------------
    def train(self, x, *, threads: int = 0) -> None:
        """Learns the i8 per-dimension scales or the f8 global power of two from `x`; with
        such scales, an index holding vectors refuses (``reset()`` first). `threads` is
        accepted as every index's train takes it (one pass over x needs none)."""
        as_threads(threads)
        x = as_f32_matrix(x, self.dim, "x")
        if x.shape[0] == 0:
            raise ValueError("train: x is empty; pass at least one vector")
        self._index.train(x)

    def add(self, x, ids=None, *, threads: int = 0) -> None:
        """Adds vectors (n, dim); `ids` are int64 labels (default: positions n0 .. n0+n-1).

        Input of another real dtype is converted to float32 (a copy). On error nothing is added.
        """
        x = as_f32_matrix(x, self.dim, "x")
        ids = None if ids is None else as_ids(ids, x.shape[0])
        self._index.add(x, ids, as_threads(threads))

    def reset(self) -> None:
        """Removes all vectors (keeps the trained scales)."""
        self._index.reset()

    @property
    def native(self):
        """The native index (``quanta._core.FlatIndex``): for embedding and the GPU module."""
        return self._index

    # -- queries ----------------------------------------------------------------------------
    def search(self, q, k: int = 10, *, threads: int = 0, filter=None,
               quantize_queries: bool = False) -> SearchResult:
        """The k nearest stored vectors of each query, best first.

        threads: 0 uses all cores (see ``quanta.set_num_threads``); results do not depend on it.
        filter: ids the queries may return (see ``quanta.filter``): an allow-list of ids, a
            ``quanta.Filter``, or a list with one per query. A filter shared by every query
            scores only the allowed rows.
        quantize_queries: i8 storage only; int8 x int8 dot products (VNNI where present).
        """
        q = as_f32_matrix(q, self.dim, "queries")
        params = _core.FlatSearchParams()
        params.quantize_queries = bool(quantize_queries)
        k = as_k(k)
        kn = native_k(k, self.ntotal)
        result = SearchResult(*self._index.search(q, kn, as_threads(threads),
                                                  as_filters(filter, q.shape[0]), params))
        return result if kn == k else result.padded(k, self.metric)

    def range_search(self, q, radius: float, *, threads: int = 0, filter=None) -> RangeResult:
        """Every stored vector within `radius` of each query: l2 distance < radius, or
        ip / cosine similarity > radius; best first per query."""
        q = as_f32_matrix(q, self.dim, "queries")
        return RangeResult(*self._index.range_search(q, as_radius(radius), as_threads(threads),
                                                     as_filters(filter, q.shape[0])))

    def reconstruct(self, ids) -> np.ndarray:
        """The stored (decoded) vectors for `ids`, shape (len(ids), dim); cosine: normalized."""
        return reconstruct_ids(self._index, ids)

    # -- persistence ------------------------------------------------------------------------
    def _state(self):
        """(meta, arrays) of the saved form; an index built on these rows (the graph) adds
        its own."""
        st = self._index.state()
        arrays = {"CODE": st["codes"], "VSCL": st["vector_scale"], "NORM": st["sq_norms"],
                  "DSCL": st["dim_scale"], "IDS_": st["ids"], "DEAD": st["removed"]}
        meta = {"metric": self.metric, "storage": self.storage, "f8_scale": self.f8_scale,
                "f8_rounding": self.f8_rounding, "global_scale": st["global_scale"]}
        return meta, arrays

    def _write(self, f) -> None:
        write_container(f, "FLAT", self.dim, self._index.rows, *self._state())

    def _restore(self, rows, meta, arrays, mapped) -> None:
        parts = [np.ascontiguousarray(arrays[t]) for t in ("CODE", "VSCL", "NORM", "DSCL", "IDS_")]
        # Mapped: the codes, scales and norms are views of the file, kept alive here.
        self._index.restore(*parts, float(meta["global_scale"]), rows, removed_mask(arrays),
                            borrow=mapped)
        self._keep = parts if mapped else None

    maps_arrays = True  # quanta.load(path, mmap=True) searches the mapped vectors in place

    @classmethod
    def _from_parts(cls, dim, ntotal, meta, arrays, source, mapped=False):
        try:
            index = cls(dim, meta["metric"], meta["storage"], f8_scale=meta["f8_scale"],
                        f8_rounding=meta["f8_rounding"])
            index._restore(ntotal, meta, arrays, mapped)
        except (KeyError, TypeError, ValueError) as e:
            raise FormatError(f"{source}: not a valid FLAT index ({e})") from None
        return index


def removed_mask(arrays, tag="DEAD"):
    """The removed-row bitmap of a saved index (files written before removal have none)."""
    return np.ascontiguousarray(arrays.get(tag, np.zeros(0, np.uint64)), dtype=np.uint64)


def removed_rows(words, n: int) -> np.ndarray:
    """A native removed-row bitmap (uint64 words, bit i = row i; shorter than n bits when rows
    were added after the last remove) as one bool per row."""
    words = np.ascontiguousarray(words, np.uint64)
    dead = np.unpackbits(words.view(np.uint8), count=min(n, 64 * len(words)),
                         bitorder="little").astype(bool)
    return np.concatenate([dead, np.zeros(n - len(dead), bool)])


register_kind("FLAT", FlatIndex)
