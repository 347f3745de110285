"""What ``build_sharded`` reads, split into one part per shard.

A source knows its size, draws a training sample, and cuts itself into contiguous parts. A
part is a plain picklable value (an array, a ``FileRows``, a Ray Dataset split, a CSR tuple,
a token batch) that ``batches`` turns into the rows the shard's ``add`` takes, in the worker
that builds it: files are read there, not shipped through the driver.
"""
from __future__ import annotations

import os
from abc import ABC, abstractmethod
from typing import NamedTuple

import numpy as np

from .._validate import as_f32_matrix, as_ids
from ..datasets import read_vectors, sample_rows
from ..multivector import as_token_sets
from ..sparse import _concat_csr, as_csr, integer_ids, read_jsonl


def _bounds(n: int, n_shards: int) -> np.ndarray:
    """Row boundaries of n rows cut into n_shards contiguous parts whose sizes differ by at
    most one."""
    return np.linspace(0, n, n_shards + 1).round().astype(np.int64)


class Part(NamedTuple):
    """One shard's input: `data` (what ``batches`` reads), its first global row `start`, its
    row count, and its ids (None: the global positions start .. start + rows - 1)."""

    data: object
    start: int
    rows: int
    ids: np.ndarray | None


class FileRows(NamedTuple):
    """Rows lo .. hi - 1 of each listed vector file, in order (read in the worker)."""

    pieces: list  # of (path, lo, hi)


class DatasetRows(NamedTuple):
    """A split of a Ray Dataset: its vector column and, optionally, its id column."""

    dataset: object
    column: str
    id_column: str | None


class JsonlRows(NamedTuple):
    """Seismic JSONL files read through one shared vocabulary; own_ids: their "id" fields
    are the ids (else global positions)."""

    paths: list
    own_ids: bool


def _dense_column(batch, column):
    x = batch[column]
    if x.dtype == object:  # a column of per-row arrays (Arrow lists)
        x = np.stack(list(x))
    return x


def batches(part: Part, batch_size: int, vocabulary=None):
    """Yields (rows, ids) of a part in order: float32 (n, dim) dense rows, (indptr, indices,
    data) sparse rows (JSONL through `vocabulary`) or (tokens, offsets) token sets; ids
    int64."""
    data, at = part.data, 0

    def ids_of(n):
        nonlocal at
        ids = (np.arange(part.start + at, part.start + at + n, dtype=np.int64)
               if part.ids is None else part.ids[at:at + n])
        at += n
        return ids

    if isinstance(data, FileRows):
        for path, lo, hi in data.pieces:
            x = read_vectors(path)
            for a in range(lo, hi, batch_size):
                rows = np.asarray(x[a:min(hi, a + batch_size)], np.float32)
                yield rows, ids_of(len(rows))
    elif isinstance(data, DatasetRows):
        for b in data.dataset.iter_batches(batch_size=batch_size, batch_format="numpy"):
            rows = _dense_column(b, data.column)
            ids = (as_ids(b[data.id_column], len(rows), f"column {data.id_column!r}")
                   if data.id_column else ids_of(len(rows)))
            yield rows, ids
    elif isinstance(data, JsonlRows):  # one batch: a sparse index is built by one add
        rows, file_ids = zip(*(read_jsonl(p, vocabulary)[:2] for p in data.paths))
        csr = _concat_csr([(*r, np.zeros(0)) for r in rows])[:3]
        yield csr, (np.concatenate([np.asarray(i, np.int64) for i in file_ids])
                    if data.own_ids else ids_of(part.rows))
    elif isinstance(data, np.ndarray):
        for a in range(0, len(data), batch_size):
            rows = data[a:a + batch_size]
            yield rows, ids_of(len(rows))
    else:  # sparse (indptr, indices, data) or token sets (tokens, offsets): one batch
        yield data, ids_of(part.rows)


class Source(ABC):
    """n rows of one kind ("dense", "sparse" or "multivector"); dim for dense and sparse.
    Dense sources also draw training rows: ``sample(size, seed)``, float32."""

    kind = "dense"
    dim: int | None = None
    n: int = 0

    @abstractmethod
    def parts(self, n_shards: int) -> list:
        """The source cut into n_shards contiguous Parts."""

    def prepare(self, index) -> None:
        """Sets what every shard's index must share before it is pickled (sparse: the
        vocabulary and dimension)."""


def _check_ids(ids, n):
    return None if ids is None else as_ids(ids, n, "ids")


class ArraySource(Source):
    """A NumPy array or memory map (n, dim): each part is a slice (a memory map's slice is
    read when the part is put in Ray's object store, or when the local build adds it)."""

    def __init__(self, x, ids):
        if x.ndim != 2 or x.dtype.kind not in "fiu":
            raise ValueError(f"source must be a 2-D array of real numbers (n, dim); got shape "
                             f"{x.shape}, dtype {x.dtype}")
        self.x, (self.n, self.dim) = x, x.shape
        self.ids = _check_ids(ids, self.n)

    def sample(self, size, seed):
        rows = sample_rows(self.n, size, seed)
        return as_f32_matrix(self.x[rows], self.dim, "source")

    def parts(self, n_shards):
        b = _bounds(self.n, n_shards)
        return [Part(self.x[lo:hi], int(lo), int(hi - lo),
                     None if self.ids is None else self.ids[lo:hi])
                for lo, hi in zip(b[:-1], b[1:])]


class FileSource(Source):
    """Vector files (.npy, .fvecs, .fbin, ...; see ``quanta.datasets.read_vectors``) read as
    one sequence of rows; parts name row ranges, which the workers read themselves."""

    def __init__(self, paths, ids):
        self.paths = [os.fspath(p) for p in paths]
        if not self.paths:
            raise ValueError("source: an empty list of files")
        arrays = [read_vectors(p) for p in self.paths]
        dims = {a.shape[1] for a in arrays}
        if len(dims) != 1:
            raise ValueError(f"source files have different dimensions: {sorted(dims)}")
        self.dim = dims.pop()
        self.counts = np.array([len(a) for a in arrays], np.int64)
        self.starts = np.concatenate([[0], np.cumsum(self.counts)])
        self.n = int(self.starts[-1])
        self.ids = _check_ids(ids, self.n)

    def sample(self, size, seed):
        rows = sample_rows(self.n, size, seed)
        file = np.searchsorted(self.starts, rows, side="right") - 1
        out = np.empty((len(rows), self.dim), np.float32)
        for f in np.unique(file):
            pick = file == f
            out[pick] = read_vectors(self.paths[f])[rows[pick] - self.starts[f]]
        return as_f32_matrix(out, self.dim, "source")

    def parts(self, n_shards):
        b = _bounds(self.n, n_shards)
        out = []
        for lo, hi in zip(b[:-1], b[1:]):
            pieces = [(p, int(max(lo, s) - s), int(min(hi, s + c) - s))
                      for p, s, c in zip(self.paths, self.starts[:-1], self.counts)
                      if max(lo, s) < min(hi, s + c)]
            out.append(Part(FileRows(pieces), int(lo), int(hi - lo),
                            None if self.ids is None else self.ids[lo:hi]))
        return out


class DatasetSource(Source):
    """A Ray Dataset with one vector column (`column`; found when the dataset has one other
    than `id_column`) and, optionally, an int64 id column."""

    def __init__(self, ds, column, id_column):
        names = list(ds.schema().names)
        if id_column is not None and id_column not in names:
            raise ValueError(f"id_column {id_column!r} is not a column of the dataset ({names})")
        if column is None:
            rest = [c for c in names if c != id_column]
            if len(rest) != 1:
                raise ValueError(f"the dataset has columns {names}: pass column= (the vectors)")
            column = rest[0]
        if column not in names:
            raise ValueError(f"column {column!r} is not a column of the dataset ({names})")
        self.ds, self.column, self.id_column = ds, column, id_column
        self.n = int(ds.count())
        if self.n == 0:
            raise ValueError("source: the dataset has no rows")
        self.dim = int(_dense_column(ds.take_batch(1, batch_format="numpy"), column).shape[1])

    def sample(self, size, seed):
        frac = min(1.0, 1.2 * size / self.n)
        ds = self.ds if frac >= 1 else self.ds.random_sample(frac, seed=seed)
        return as_f32_matrix(_dense_column(ds.take_batch(size, batch_format="numpy"),
                                           self.column), self.dim, "source")

    def parts(self, n_shards):
        splits = self.ds.split(n_shards, equal=False)
        counts = [int(s.count()) for s in splits]
        starts = np.concatenate([[0], np.cumsum(counts)])
        return [Part(DatasetRows(s, self.column, self.id_column), int(a), c, None)
                for s, a, c in zip(splits, starts, counts)]


class SparseSource(Source):
    """Sparse rows: one SciPy matrix or (indptr, indices, data) tuple, or a list of them
    (batches, in order)."""

    kind = "sparse"

    def __init__(self, docs, ids, dim):
        batches_ = docs if isinstance(docs, list) else [docs]
        parts = [as_csr(b, dim) for b in batches_]
        self.dim = max(p[3] for p in parts) if dim is None else dim
        self.indptr, self.indices, self.data, _ = _concat_csr(
            [(p[0], p[1], p[2], np.zeros(0)) for p in parts])
        self.n = len(self.indptr) - 1
        self.ids = _check_ids(ids, self.n)

    def prepare(self, index):
        if index.dim is not None and index.dim < self.dim:
            raise ValueError(f"the documents use {self.dim} terms, the index has dim {index.dim}")
        index.dim = index.dim or self.dim

    def parts(self, n_shards):
        b = _bounds(self.n, n_shards)
        out = []
        for lo, hi in zip(b[:-1], b[1:]):
            a, z = self.indptr[lo], self.indptr[hi]
            rows = (self.indptr[lo:hi + 1] - a, self.indices[a:z], self.data[a:z])
            out.append(Part(rows, int(lo), int(hi - lo),
                            None if self.ids is None else self.ids[lo:hi]))
        return out


class JsonlSource(Source):
    """Seismic JSONL files, whole files per shard. The vocabulary of every file's tokens is
    made here (one pass over the files) and shared by all shards, so that term ids mean the
    same everywhere; the files' integer "id" fields are the ids when every row has one, else
    global positions."""

    kind = "sparse"

    def __init__(self, paths):
        self.paths = [os.fspath(p) for p in paths]
        tokens, self.counts, file_ids = set(), [], []
        for p in self.paths:
            (indptr, _, _), ids, vocab = read_jsonl(p)
            tokens.update(vocab)
            self.counts.append(len(indptr) - 1)
            file_ids.append(ids)
        self.vocabulary = sorted(tokens)
        self.dim = max(1, len(self.vocabulary))
        self.n = int(sum(self.counts))
        self.own_ids = all(integer_ids(ids) for ids in file_ids)

    def prepare(self, index):
        if index.vocabulary is not None and index.vocabulary != self.vocabulary:
            raise ValueError("the index already has a vocabulary other than the files'")
        index.vocabulary, index.dim = self.vocabulary, self.dim

    def parts(self, n_shards):
        if n_shards > len(self.paths):
            raise ValueError(f"n_shards={n_shards} but only {len(self.paths)} JSONL files: "
                             f"JSONL sources are split by whole files")
        b = _bounds(len(self.paths), n_shards)
        starts = np.concatenate([[0], np.cumsum(self.counts)])
        return [Part(JsonlRows(self.paths[lo:hi], self.own_ids), int(starts[lo]),
                     int(starts[hi] - starts[lo]), None)
                for lo, hi in zip(b[:-1], b[1:])]


class TokenSource(Source):
    """Token sets of documents: a list of (ntokens, dim) arrays or (tokens, offsets)."""

    kind = "multivector"

    def __init__(self, docs, ids, dim):
        tokens, offsets = docs if isinstance(docs, tuple) else (docs, None)
        self.x, self.off = as_token_sets(tokens, offsets, dim, "source")
        self.dim, self.n = self.x.shape[1], len(self.off) - 1
        self.ids = _check_ids(ids, self.n)

    def parts(self, n_shards):
        b = _bounds(self.n, n_shards)
        return [Part((self.x[self.off[lo]:self.off[hi]], self.off[lo:hi + 1] - self.off[lo]),
                     int(lo), int(hi - lo), None if self.ids is None else self.ids[lo:hi])
                for lo, hi in zip(b[:-1], b[1:])]


def _is_paths(x) -> bool:
    return isinstance(x, (str, os.PathLike)) or (
        isinstance(x, (list, tuple)) and bool(x)
        and all(isinstance(p, (str, os.PathLike)) for p in x))


def as_source(source, kind: str, *, ids=None, column=None, id_column=None,
              dim=None) -> Source:
    """The Source for `source` when the index is of `kind` ("dense", "sparse",
    "multivector")."""
    if _is_paths(source):
        paths = [source] if isinstance(source, (str, os.PathLike)) else list(source)
        if kind == "sparse":
            if not all(os.fspath(p).endswith(".jsonl") for p in paths):
                raise ValueError("sparse file sources are Seismic JSONL files (.jsonl)")
            if ids is not None:
                raise ValueError("ids: JSONL files carry their own ids (the 'id' fields)")
            return JsonlSource(paths)
        if kind == "multivector":
            raise TypeError("a MultiVectorIndex is built from token sets (a list of arrays or "
                            "(tokens, offsets)), not files")
        return FileSource(paths, ids)
    if type(source).__module__.startswith("ray.data"):
        if kind != "dense":
            raise TypeError("Ray Dataset sources hold dense vectors")
        if ids is not None:
            raise ValueError("ids: a Ray Dataset gives its ids through id_column=")
        return DatasetSource(source, column, id_column)
    if kind == "sparse":
        return SparseSource(source, ids, dim)
    if kind == "multivector":
        return TokenSource(source, ids, dim)
    if not hasattr(source, "shape") or not hasattr(source, "dtype"):
        raise TypeError("source must be a NumPy array or memmap, a list of .npy / .fvecs / "
                        f".fbin files or a Ray Dataset; got {type(source).__name__}")
    return ArraySource(source, ids)
