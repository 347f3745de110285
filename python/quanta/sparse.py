"""Seismic-style approximate top-k inner-product search over learned sparse vectors.

>>> index = quanta.SparseIndex(n_postings=3500, summary_energy=0.4)
>>> index.add(docs_csr)              # scipy.sparse CSR, (indptr, indices, data), .jsonl or .bin
>>> D, I = index.search(queries_csr, k=10, query_cut=10, heap_factor=0.8)
>>> D, I = index.search(queries_csr, k=10, exact=True)   # every document scored: the truth

Build (Bruch et al., SIGIR 2024, and the pyseismic-lsr reference): a forward index of the
documents (term ids as u16 for vocabularies up to 65,536 terms, else u32; values as f16, or u8
times a per-document scale with ``values="u8"``; each row stored heaviest entry first); per
term a posting list pruned globally (the ``n_postings * vocabulary`` largest entries of the
collection, at most ``n_postings * max_fraction`` per list), cut into blocks by one pass of
k-means around sampled documents (``centroid_fraction`` of the list; documents and centroids
compared on their ``doc_cut`` largest entries; clusters of at most ``min_cluster_size``
documents dissolve), each block summarized by the coordinate-wise maximum of its documents, cut
to ``summary_energy`` of its L1 mass and quantized to 8 bits (rounded up). Defaults are
pyseismic-lsr's build defaults. ``summary_cut`` (a quanta addition, off by default) builds the
summaries from each document's ``summary_cut`` largest entries only: smaller summaries, a
faster build and search, slightly lower recall at the same search settings.
``posting_offsets=False`` drops the forward offset stored per posting (4 bytes each, used to
prefetch visited documents): the same results from less memory, 2-25% slower searches.

Search: the query's ``query_cut`` heaviest terms; the blocks of their lists are visited
unless their summary dot product is below ``heap_factor`` times the current k-th best score,
either list after list in stored order as the reference does (``order="list"``, the default
for short rows such as BM25's) or all in one decreasing order of summary score up to the
first below the bar (``order="score"``, the default for long rows: fewer visits); visited
blocks' documents are scored exactly against the whole query. Lower ``heap_factor`` and
higher ``query_cut`` raise recall and cost. Batches run on all cores (``threads``, GIL
released), results in query order.

Head-first scoring (``head``, a quanta addition): a visited document is scored on its
``head`` largest entries first (the start of its stored row: a cache line or two instead of a
whole row) and in full only when that partial score is among the ``rerank`` (default 3k) best
partial scores of the query so far. On the synthetic 120-entry benchmark ``head=16`` is
2.2-3.0x faster than full scoring, recall within 0.001. The default, ``head=None``, is 16 for
documents averaging over 32 entries and 0 (every visited document scored whole) otherwise;
documents no longer than the head are always scored whole.

kNN graph (``knn`` > 0): at build time every document is searched as a query on the finished
index (query_cut 10, heap_factor 0.9) and its ``knn`` best other results are kept; at search
time ``n_knn`` neighbours of each result are scored after the block loop, which lets a small
query_cut reach the recall of a larger one.

Files: ``add`` and ``search`` also take paths: JSONL rows of the Seismic tools (``{"id",
"content", "vector": {token: weight}}``, the vocabulary kept with the index) or their inner
binary format (u32 row count, then per row u32 n, n u32 term ids, n f32 values); see
``read_jsonl``, ``read_inner_binary``, ``write_inner_binary``. ``quanta.load(path,
mmap=True)`` maps the arrays instead of reading them.

Presets: ``SparseIndex.PRESETS`` / ``SparseIndex.preset(recall)``, measured here (see
bench/results/sparse_*.md); recall depends on the encoder: measure on your data.
"""
from __future__ import annotations

import os
import sys
import threading

import numpy as np

from . import _core
from ._validate import as_k, as_threads
from .flat import SearchResult
from .io import FormatError, Persistent, register_kind, write_container

AUTO_HEAD = 16  # search(head=None): the head of documents averaging over 2 * AUTO_HEAD entries
#                 (shorter rows: head 0 and order "list")
_LAYOUT = 4  # of the saved arrays (SparseIndex.State in cpp/include/quanta/seismic.hpp)

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


def read_inner_binary(path):
    """(indptr, indices, data) of a file in the Seismic tools' inner binary format:
    little-endian u32 row count, then per row u32 n, n u32 term ids, n f32 values."""
    raw = np.fromfile(os.fspath(path), dtype="<u4")
    if len(raw) < 1:
        raise FormatError(f"{path}: empty file, not in the inner binary format")
    n, pos = int(raw[0]), 1
    if n > len(raw) - 1:  # every row takes at least its length word
        raise FormatError(f"{path}: declares {n} rows in {4 * len(raw)} bytes")
    indptr = np.zeros(n + 1, np.int64)
    starts = np.empty(n, np.int64)
    for i in range(n):
        if pos >= len(raw):
            raise FormatError(f"{path}: truncated at row {i} of {n}")
        m = int(raw[pos])
        starts[i] = pos + 1
        indptr[i + 1] = indptr[i] + m
        pos += 1 + 2 * m
    if pos != len(raw):
        raise FormatError(f"{path}: {4 * (len(raw) - pos):+d} bytes beyond the {n} rows it declares")
    take = np.repeat(starts - indptr[:-1], np.diff(indptr)) + np.arange(indptr[-1])
    lens = np.repeat(np.diff(indptr), np.diff(indptr))
    indices = raw[take].astype(np.int64)
    if len(indices) and indices.max() >= 2**31:
        raise FormatError(f"{path}: term id {int(indices.max())} beyond 2^31")
    data = raw[take + lens].view(np.float32)
    return indptr, indices.astype(np.int32), np.ascontiguousarray(data)


def write_inner_binary(path, x) -> None:
    """Writes sparse rows (SciPy matrix or (indptr, indices, data)) in the inner binary format."""
    indptr, indices, data, _ = as_csr(x)
    lens = np.diff(indptr).astype("<u4")
    out = np.empty(1 + len(lens) + 2 * len(indices), "<u4")
    out[0] = len(lens)
    head = np.arange(len(lens)) + 2 * indptr[:-1] + 1  # where each row's length goes
    out[head] = lens
    ent = np.repeat(head + 1 - indptr[:-1], lens) + np.arange(len(indices))
    out[ent] = indices
    out[ent + np.repeat(lens, lens)] = data.astype("<f4").view("<u4")
    with open(os.fspath(path), "wb") as f:
        out.tofile(f)


def read_jsonl(path, vocabulary=None):
    """((indptr, indices, data), ids, vocabulary) from a JSONL file of the Seismic tools: one
    object per line with "id", optional "content" and "vector" ({token: weight}). Without a
    `vocabulary` (list of tokens) one is made from the file's tokens, sorted; with one, tokens
    outside it are dropped (queries against a built index)."""
    import json
    rows, ids = [], []
    with open(os.fspath(path), encoding="utf-8") as f:
        for line_no, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
                vec = obj["vector"]
                ids.append(obj.get("id", len(ids)))
            except (ValueError, KeyError, TypeError) as e:
                raise FormatError(f"{path}:{line_no}: not a JSONL vector row ({e})") from None
            if not isinstance(vec, dict):
                raise FormatError(f"{path}:{line_no}: 'vector' must be an object token -> weight")
            rows.append(vec)
    if vocabulary is None:
        vocabulary = sorted({t for r in rows for t in r})
    lookup = {t: i for i, t in enumerate(vocabulary)}
    indptr, indices, data = [0], [], []
    for r in rows:
        pairs = sorted((lookup[t], float(v)) for t, v in r.items() if t in lookup)
        indices += [p[0] for p in pairs]
        data += [p[1] for p in pairs]
        indptr.append(len(indices))
    return ((np.array(indptr, np.int64), np.array(indices, np.int32),
             np.array(data, np.float32)), ids, list(vocabulary))


def _run_with_progress(work, native, label):
    """Runs `work` (a native call that releases the GIL) in a thread; with a label, prints
    the native build progress to stderr meanwhile. Exceptions reach the caller."""
    if label is None:
        return work()
    failure = []

    def target():
        try:
            work()
        except BaseException as e:  # re-raised below, in the caller's thread
            failure.append(e)

    t = threading.Thread(target=target, daemon=True)
    t.start()
    while t.is_alive():
        t.join(0.5)
        print(f"\r{label}: {100 * native.build_progress:5.1f}% of the posting lists", end="",
              file=sys.stderr, flush=True)
    if failure:
        print(file=sys.stderr)
        raise failure[0]
    print(f"\r{label}: 100.0% of the posting lists", file=sys.stderr)


class SparseIndex(Persistent):
    """Seismic-style index for non-negative sparse vectors (see the module docstring)."""

    maps_arrays = True  # quanta.load(path, mmap=True) maps the large arrays instead of reading

    # Build and search settings for recall@10 targets, measured by bench.sparse on 200,000
    # synthetic SPLADE-like documents and 180,000 BM25 documents with the default head and
    # order (recall there: synthetic / BM25): 0.90: 0.957 / 0.939; 0.95: 0.983 / 0.970;
    # 0.97: 0.984 / 0.976; 0.99: 0.999 / 0.996.
    PRESETS = {
        0.90: (dict(summary_cut=32), dict(query_cut=8, heap_factor=1.0)),
        0.95: (dict(summary_cut=32), dict(query_cut=10, heap_factor=0.9)),
        0.97: (dict(summary_cut=32), dict(query_cut=10, heap_factor=0.8)),
        0.99: (dict(summary_cut=32), dict(query_cut=20, heap_factor=0.8)),
    }

    def __init__(self, n_postings: int = 3500, centroid_fraction: float = 0.1,
                 min_cluster_size: int = 2, summary_energy: float = 0.4,
                 max_fraction: float = 1.5, doc_cut: int = 15, knn: int = 0, *,
                 summary_cut: int | None = None, values: str = "f16", dim: int | None = None,
                 posting_offsets: bool = True, seed: int = 1142):
        if values not in ("f16", "u8"):
            raise ValueError(f"values must be 'f16' or 'u8'; got {values!r}")
        self.params = dict(n_postings=int(n_postings), centroid_fraction=float(centroid_fraction),
                           min_cluster_size=int(min_cluster_size),
                           summary_energy=float(summary_energy), max_fraction=float(max_fraction),
                           doc_cut=int(doc_cut),
                           summary_cut=0 if summary_cut is None else int(summary_cut),
                           knn=int(knn), posting_offsets=bool(posting_offsets))
        for key in ("n_postings", "doc_cut") + (("summary_cut",) if summary_cut is not None else ()):
            if self.params[key] < 1:
                raise ValueError(f"{key} must be >= 1; got {self.params[key]}")
        if not 0 < self.params["centroid_fraction"] <= 1:
            raise ValueError(f"centroid_fraction must be in (0, 1]; got {centroid_fraction}")
        if not 0 < self.params["summary_energy"] <= 1:
            raise ValueError(f"summary_energy must be in (0, 1]; got {summary_energy}")
        if not self.params["max_fraction"] > 0:
            raise ValueError(f"max_fraction must be > 0; got {max_fraction}")
        if self.params["knn"] < 0:
            raise ValueError(f"knn must be >= 0; got {knn}")
        if self.params["min_cluster_size"] < 0:
            raise ValueError(f"min_cluster_size must be >= 0; got {min_cluster_size}")
        self.values, self.seed, self.dim = values, int(seed), dim
        self._index = self._keep = self.vocabulary = None

    @classmethod
    def preset(cls, recall: float, **overrides):
        """(index, search settings) for a recall@10 target in PRESETS (0.90 .. 0.99)."""
        if recall not in cls.PRESETS:
            raise ValueError(f"recall must be one of {sorted(cls.PRESETS)}; got {recall}")
        build, search = cls.PRESETS[recall]
        return cls(**{**build, **overrides}), dict(search)

    def _native(self, dim):
        p = self.params
        return _core.SparseIndex(dim, p["n_postings"], p["centroid_fraction"],
                                 p["min_cluster_size"], p["summary_energy"], p["max_fraction"],
                                 p["doc_cut"], p["summary_cut"], p["knn"],
                                 self.values == "u8", p["posting_offsets"], self.seed)

    ntotal = property(lambda self: 0 if self._index is None else self._index.ndocs)

    @property
    def memory_usage(self) -> int:
        """Bytes of the index's arrays (memory-mapped ones included)."""
        return 0 if self._index is None else int(self._index.memory_usage)

    def __repr__(self):
        return (f"SparseIndex({', '.join(f'{k}={v}' for k, v in self.params.items())}, "
                f"values={self.values!r}, dim={self.dim}, ntotal={self.ntotal})")

    def add(self, docs, *, threads: int = 0, progress: bool | None = None) -> None:
        """Builds the index over `docs`: a SciPy sparse matrix, an (indptr, indices, data)
        tuple, or a file path: ``.jsonl`` (Seismic's JSONL rows; the token vocabulary is kept
        in ``self.vocabulary`` and saved with the index) or the inner binary format. The index
        is static: build it once from all documents. `progress`: a progress line on stderr
        (default: for 100,000 documents or more when stderr is a terminal)."""
        if self._index is not None:
            raise ValueError("the index is built already (Seismic indexes are static); build a "
                             "new SparseIndex from all documents")
        if isinstance(docs, (str, os.PathLike)):
            if os.fspath(docs).endswith(".jsonl"):
                docs, _, vocabulary = read_jsonl(docs)
                self.vocabulary = vocabulary
                self.dim = self.dim or max(1, len(vocabulary))
            else:
                docs = read_inner_binary(docs)
        indptr, indices, data, dim = as_csr(docs, self.dim)
        if len(indptr) < 2:
            raise ValueError("documents: no rows")
        native = self._native(dim)
        if progress is None:
            progress = len(indptr) > 100_000 and sys.stderr.isatty()
        _run_with_progress(lambda: native.build(indptr, indices, data, as_threads(threads)),
                           native, "SparseIndex build" if progress else None)
        self._index, self.dim = native, dim

    def _rows(self, queries):
        """Query rows from the same kinds of input as add (JSONL through the vocabulary)."""
        if isinstance(queries, (str, os.PathLike)):
            if os.fspath(queries).endswith(".jsonl"):
                if self.vocabulary is None:
                    raise ValueError("JSONL queries need an index built from JSONL (its "
                                     "vocabulary); pass term ids instead")
                return read_jsonl(queries, self.vocabulary)[0]
            return read_inner_binary(queries)
        return queries

    def search(self, queries, k: int = 10, query_cut: int = 10, heap_factor: float = 0.8, *,
               exact: bool = False, n_knn: int = 0, head: int | None = None,
               rerank: int | None = None, order: str | None = None,
               threads: int = 0) -> SearchResult:
        """Top-k documents by inner product for each query row; (scores, positions), -1 where
        fewer than k documents were reached. n_knn (<= the index's knn): after the block loop,
        the first n_knn graph neighbours of each result are scored too.

        head > 0: a visited document is first scored on its head largest entries (a prefix of
        its stored row) and in full only when that partial score is among the rerank (default
        3 * k) best partial scores of the query so far: fewer bytes read per document, a few
        results possibly lost. 0 scores every visited document in full. None (the default):
        16 when the documents average more than 32 entries (SPLADE-like rows), else 0 (short
        rows such as BM25's are read whole in one go).

        order: "score" visits the blocks of all query_cut lists in one decreasing order of
        summary score and stops at the first below heap_factor * theta; "list" is the
        reference's loop: list after list (heaviest query term first), each list's blocks in
        stored order, every block below heap_factor * theta skipped. None (the default):
        "score" for long rows, where each visit is dear and the order saves visits; "list"
        for short rows (the same rule as head), where the ordering would cost more than the
        visits it saves."""
        if self._index is None:
            raise ValueError("search: the index is empty; add documents first")
        k, threads = as_k(k), as_threads(threads)
        if isinstance(query_cut, bool) or not isinstance(query_cut, (int, np.integer)) \
                or query_cut < 1:
            raise ValueError(f"query_cut must be an integer >= 1; got {query_cut!r}")
        if not (isinstance(heap_factor, (int, float, np.floating)) and np.isfinite(heap_factor)
                and heap_factor > 0):
            raise ValueError(f"heap_factor must be a positive number; got {heap_factor!r}")
        if isinstance(n_knn, bool) or not isinstance(n_knn, (int, np.integer)) \
                or not 0 <= n_knn <= self.params["knn"]:
            raise ValueError(f"n_knn must be an integer in [0, knn={self.params['knn']}]; "
                             f"got {n_knn!r}")
        long_rows = self._index.nnz > 2 * AUTO_HEAD * self._index.ndocs
        if head is None:
            head = AUTO_HEAD if long_rows else 0
        if order is None:
            order = "score" if long_rows else "list"
        if order not in ("score", "list"):
            raise ValueError(f"order must be 'score' or 'list'; got {order!r}")
        if isinstance(head, bool) or not isinstance(head, (int, np.integer)) or head < 0:
            raise ValueError(f"head must be an integer >= 0; got {head!r}")
        if rerank is not None and (isinstance(rerank, bool) or
                                   not isinstance(rerank, (int, np.integer)) or rerank < k):
            raise ValueError(f"rerank must be an integer >= k={k}; got {rerank!r}")
        indptr, indices, data, _ = as_csr(self._rows(queries), self.dim, "queries")
        D, I = self._index.search(indptr, indices, data, k, int(query_cut), float(heap_factor),
                                  bool(exact), int(n_knn), int(head), int(rerank or 0),
                                  order == "list", threads)
        return SearchResult(D, I)

    def _write(self, f):
        meta = {**self.params, "values": self.values, "seed": self.seed, "dim": self.dim,
                "layout": _LAYOUT, "vocabulary": self.vocabulary}
        arrays = {}
        if self._index is not None:
            st = self._index.state()
            meta["fields"] = list(st)
            arrays = {f"S{i:03d}": a for i, a in enumerate(st.values())}
        write_container(f, "SPRS", self.dim or 0, self.ntotal, meta, arrays)

    @classmethod
    def _from_parts(cls, dim, ntotal, meta, arrays, source, mapped=False):
        try:
            out = cls(**{k: meta[k] for k in ("n_postings", "centroid_fraction",
                                              "min_cluster_size", "summary_energy",
                                              "max_fraction", "doc_cut", "knn")},
                      summary_cut=meta.get("summary_cut") or None,
                      posting_offsets=meta.get("posting_offsets", True),
                      values=meta["values"], seed=meta["seed"], dim=meta["dim"])
            out.vocabulary = meta.get("vocabulary")
            if arrays:
                if meta.get("layout") != _LAYOUT:
                    raise ValueError(f"layout {meta.get('layout')}, this quanta reads {_LAYOUT}")
                state = {name: arrays[f"S{i:03d}"] for i, name in enumerate(meta["fields"])}
                native = out._native(dim)
                # The arrays are views of the file's buffer or memory map: borrowed, not
                # copied; a memory-mapped file's contents are not all read up front.
                native.restore(state, borrow=True, check_contents=not mapped)
                if native.ndocs != ntotal:
                    raise ValueError("document count mismatch")
                out._index, out._keep = native, state
        except (KeyError, TypeError, ValueError) as e:
            raise FormatError(f"{source}: not a valid SparseIndex ({e})") from None
        return out


register_kind("SPRS", SparseIndex)
