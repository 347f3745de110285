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
list after list in stored order as the reference does (``order="list"``, the default) or all
in one decreasing order of summary score up to the first below the bar (``order="score"``:
fewer visits, but its one order raises the k-th score sooner and skips more, so it finds less
at the same settings); visited blocks' documents are scored exactly against the whole query.
Lower ``heap_factor`` and higher ``query_cut`` raise recall and cost. Batches run on all
cores (``threads``, GIL released), results in query order.

Head-first scoring (``head``, a quanta addition, off by default): a visited document is
scored on its ``head`` largest entries first (the start of its stored row: a cache line or
two instead of a whole row) and in full only when that partial score is among the ``rerank``
(default 3k) best partial scores of the query so far. It suits rows whose heaviest entries
decide the score: on the synthetic 120-entry benchmark ``head=16`` is 2.2-3.0x faster than
full scoring, recall within 0.001; on real SPLADE rows (splade-tiny, 71 entries) it caps
recall@10 near 0.85, whatever the other settings.

kNN graph (``knn`` > 0): at build time every document is searched as a query on the finished
index (query_cut 10, heap_factor 0.9; the blocks layout: its search defaults, every document
scored whole) and its ``knn`` best other results are kept; at search time ``n_knn`` neighbours of
each result are scored after the block loop, which lets a small query_cut reach the recall
of a larger one.

Blocks layout (``layout="blocks"``, a quanta addition; block-max pruning as in BMP, Mallia et
al., SIGIR 2024): no posting lists. The documents are stored in a recursive graph bisection
order (BP: rows sharing terms end up together) and cut into blocks of ``block_size`` (6)
neighbours; each block keeps its exact maximum per term, 8 bits of that term's largest value
rounded up, term by term (a byte per block for terms in at least 1/8 of the blocks, else
(block, code) pairs). A search bounds every block over the query's ``query_cut`` heaviest
terms (16-bit sums, SIMD over the byte rows), visits the blocks in decreasing bound and stops
at the first below ``heap_factor`` times the k-th score: with every term and heap_factor 1 it
prunes nothing but through the 8-bit rounding of the query weights. Here heap_factor > 1
prunes harder and < 1 widens; defaults ``SEARCH_DEFAULTS["blocks"]``. Each document sits in
one block, so the index is the forward index (4 bytes per entry, 3 with u8 values) plus the
block maxima (3.0 bytes per entry on 120,000 real SPLADE rows): below the f32 CSR of the
documents (8 bytes per entry), where the lists layout takes 4-7x it. The
n_postings .. summary_cut, posting_offsets and ``order`` settings do not apply to it.

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

import numpy as np

from . import _core
from ._mutable import Removable
from ._progress import run_with_progress
from ._rwlock import guarded
from ._validate import as_ids, as_int, as_k, as_seed, as_threads, native_k
from .filter import as_filters, as_removal
from .flat import SearchResult, removed_mask
from .io import FormatError, Persistent, register_kind, write_container

# Version of the saved arrays (SparseIndex.State in cpp/include/quanta/index/seismic.hpp),
# meta key "format"; files of version 4 (meta "layout": 4) hold the lists layout without the
# block-max arrays and still load.
_FORMAT = 5
_BLOCK_MAX_FIELDS = {"bm_ptr": np.int64, "bm_entry": np.uint32, "bm_scale": np.float32,
                     "bm_dense_terms": np.uint32, "bm_dense": np.uint8}

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
    if need > 2 ** 31:
        raise ValueError(f"{name}: term id {need - 1} does not fit in int32 (term ids are in "
                         f"[0, 2^31 - 1])")
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


def integer_ids(ids) -> bool:
    """Whether JSONL "id" fields are all non-negative integers (then they are the ids)."""
    return all(isinstance(i, int) and not isinstance(i, bool) and i >= 0 for i in ids)


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


@guarded
class SparseIndex(Removable, Persistent):
    """Seismic-style index for non-negative sparse vectors (see the module docstring)."""

    maps_arrays = True  # quanta.load(path, mmap=True) maps the large arrays instead of reading

    # Build and search settings for recall@10 targets: the blocks layout (as fast as the lists
    # layout or faster on each of these sets, in 4.7-11x less memory: sparse_splade.md,
    # sparse_blocks_synthetic_bm25.md) with the
    # fastest setting on real SPLADE rows among those reaching the target + 0.005 on 120,000
    # real SPLADE rows (splade-tiny vectors of GCIDE definitions), the 3,000-row sample the
    # tests use, 200,000 synthetic SPLADE-like rows and 180,000 BM25 rows (python -m
    # bench.sparse_presets --builds blocks; bench/results/sparse_presets.md).
    PRESETS = {
        0.90: ({"layout": "blocks"}, dict(query_cut=30, heap_factor=1.0)),
        0.95: ({"layout": "blocks"}, dict(query_cut=35, heap_factor=1.0)),
        0.97: ({"layout": "blocks"}, dict(query_cut=40, heap_factor=1.0)),
        0.99: ({"layout": "blocks"}, dict(query_cut=50, heap_factor=1.0)),
    }

    def __init__(self, n_postings: int = 3500, centroid_fraction: float = 0.1,
                 min_cluster_size: int = 2, summary_energy: float = 0.4,
                 max_fraction: float = 1.5, doc_cut: int = 15, knn: int = 0, *,
                 summary_cut: int | None = None, values: str = "f16", dim: int | None = None,
                 posting_offsets: bool = True, seed: int = 1142, layout: str = "lists",
                 block_size: int = 6):
        if values not in ("f16", "u8"):
            raise ValueError(f"values must be 'f16' or 'u8'; got {values!r}")
        if layout not in ("lists", "blocks"):
            raise ValueError(f"layout must be 'lists' or 'blocks'; got {layout!r}")
        self.params = dict(layout=layout, block_size=as_int(block_size, "block_size", 1),
                           n_postings=as_int(n_postings, "n_postings", 1),
                           centroid_fraction=float(centroid_fraction),
                           min_cluster_size=as_int(min_cluster_size, "min_cluster_size"),
                           summary_energy=float(summary_energy), max_fraction=float(max_fraction),
                           doc_cut=as_int(doc_cut, "doc_cut", 1),
                           summary_cut=0 if summary_cut is None else as_int(summary_cut,
                                                                            "summary_cut", 1),
                           knn=as_int(knn, "knn"), posting_offsets=bool(posting_offsets))
        if not 0 < self.params["centroid_fraction"] <= 1:
            raise ValueError(f"centroid_fraction must be in (0, 1]; got {centroid_fraction}")
        if not 0 < self.params["summary_energy"] <= 1:
            raise ValueError(f"summary_energy must be in (0, 1]; got {summary_energy}")
        if not self.params["max_fraction"] > 0:
            raise ValueError(f"max_fraction must be > 0; got {max_fraction}")
        if dim is not None:
            dim = as_int(dim, "dim", 1)
        self.values, self.seed, self.dim = values, as_seed(seed), dim
        # the native index (made by the first add, when the vocabulary is known)
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
                                 self.values == "u8", p["posting_offsets"], self.seed,
                                 p["layout"], p["block_size"])

    @property
    def ntotal(self) -> int:
        """Documents held (removed ones excluded)."""
        return 0 if self._index is None else int(self._index.ntotal)

    @property
    def native(self):
        """The native index (``quanta.native`` SparseIndex, an ``IndexBase``: ``state()``,
        ``removed()``, ``ids()``, ...), or None before the first add. Its arrays are the
        main part's; documents added after the build sit in a delta part until
        ``compact()`` (see ``pending``)."""
        return self._index

    @property
    def pending(self) -> int:
        """Documents added after the build, searched exhaustively until ``compact()``."""
        return 0 if self._index is None else int(self._index.pending)

    @property
    def memory_usage(self) -> int:
        """Bytes of the index's arrays (memory-mapped ones included)."""
        return 0 if self._index is None else int(self._index.memory_usage)

    _PARTS = {"forward index": ("doc_ptr", "comp16", "comp32", "val16", "val8", "doc_scale"),
              "postings": ("list_ptr", "block_ptr", "postings", "postoff"),
              "summaries": ("block_step", "sdict_ptr", "sent_ptr", "sterm16", "sterm32", "soff",
                            "sblock", "scode") + tuple(_BLOCK_MAX_FIELDS),
              "knn graph": ("knn",)}

    def memory_breakdown(self) -> dict:
        """Bytes of the main index's arrays by part: forward index, postings (with block
        offsets), summaries (the lists layout's with their per-list term dictionary, or the
        blocks layout's block maxima) and kNN graph."""
        if self._index is None or self._index.ndocs == 0:
            return {part: 0 for part in self._PARTS}
        st = self._index.state(view=True)
        return {part: sum(int(np.asarray(st[name]).nbytes) for name in names)
                for part, names in self._PARTS.items()}

    def __repr__(self):
        return (f"SparseIndex({', '.join(f'{k}={v}' for k, v in self.params.items())}, "
                f"values={self.values!r}, dim={self.dim}, ntotal={self.ntotal})")

    def add(self, docs, ids=None, *, threads: int = 0, progress: bool | None = None) -> None:
        """Adds documents: a SciPy sparse matrix, an (indptr, indices, data) tuple, or a file
        path: ``.jsonl`` (Seismic's JSONL rows; the token vocabulary is kept in
        ``self.vocabulary`` and saved with the index; integer "id" fields become the ids) or
        the inner binary format. `ids`: int64 labels (default: positions, continuing after
        the documents already held).

        The first call builds the index (blocks, summaries, the kNN graph). Later calls keep
        their documents in a delta part that every search scores exhaustively alongside;
        ``compact()`` rebuilds one index from all of them. `progress`: a progress line on
        stderr (default: for 100,000 documents or more when stderr is a terminal)."""
        if isinstance(docs, (str, os.PathLike)):
            if os.fspath(docs).endswith(".jsonl"):
                if self._index is not None and self.vocabulary is None:
                    raise ValueError("JSONL documents need an index built from JSONL (its "
                                     "vocabulary); pass term ids instead")
                docs, file_ids, vocabulary = read_jsonl(docs, self.vocabulary)
                if self.vocabulary is None:
                    self.vocabulary = vocabulary
                    self.dim = self.dim or max(1, len(vocabulary))
                if ids is None and integer_ids(file_ids):
                    ids = np.array(file_ids, np.int64)
            else:
                docs = read_inner_binary(docs)
        indptr, indices, data, dim = as_csr(docs, self.dim)
        n = len(indptr) - 1
        if n < 1:
            raise ValueError("documents: no rows")
        ids = None if ids is None else as_ids(ids, n)
        threads = as_threads(threads)
        native = self._native(dim) if self._index is None else self._index
        if progress is None:
            progress = n > 100_000 and sys.stderr.isatty() and native.ndocs == 0
        run_with_progress(lambda: native.add(indptr, indices, data, ids, threads),
                          lambda: native.build_progress, "SparseIndex build" if progress else None,
                          "the posting lists")
        self._index, self.dim = native, dim

    def remove(self, ids) -> int:
        """Removes the documents with these ids (array-like or ``quanta.Filter``); returns how
        many were held. Searches never return them; ``compact()`` drops them from memory."""
        return 0 if self._index is None else int(self._index.remove(as_removal(ids)))

    def contains(self, ids) -> np.ndarray:
        """Whether each id is held (bool array)."""
        ids = np.ascontiguousarray(np.atleast_1d(ids), dtype=np.int64)
        return np.zeros(ids.shape, bool) if self._index is None else self._index.contains(ids)

    def compact(self, *, threads: int = 0) -> None:
        """Rebuilds one index from the live documents (the delta part included): blocks and
        summaries are made again, removed documents are gone."""
        threads = as_threads(threads)
        if self._index is not None:
            self._index.compact(threads)
            if not self._index.borrowed:  # rebuilt: the arrays are the index's own now
                self._keep = None

    def query_rows(self, queries):
        """Query rows from the same kinds of input as add: a ``.jsonl`` path (through the
        index's vocabulary) or an inner binary file become CSR rows; anything else is
        returned as given (a SciPy matrix or an (indptr, indices, data) tuple)."""
        if isinstance(queries, (str, os.PathLike)):
            if os.fspath(queries).endswith(".jsonl"):
                if self.vocabulary is None:
                    raise ValueError("JSONL queries need an index built from JSONL (its "
                                     "vocabulary); pass term ids instead")
                return read_jsonl(queries, self.vocabulary)[0]
            return read_inner_binary(queries)
        return queries

    # (query_cut, heap_factor) of search() by layout when not given: the native index's,
    # its float32 factor rounded back to the decimal it was written as
    SEARCH_DEFAULTS = {layout: (qc, round(hf, 6)) for layout in ("lists", "blocks")
                       for qc, hf in [_core.SparseIndex.search_defaults(layout)]}

    def search(self, queries, k: int = 10, query_cut: int | None = None,
               heap_factor: float | None = None, *,
               exact: bool = False, n_knn: int = 0, head: int = 0,
               rerank: int | None = None, order: str = "list",
               threads: int = 0, filter=None) -> SearchResult:
        """Top-k documents by inner product for each query row; (scores, ids), -1 where
        fewer than k documents were reached. query_cut and heap_factor default to the
        layout's ``SEARCH_DEFAULTS``. filter: ids the queries may return (see
        ``quanta.filter``), tested before a document is scored; a filter allowing at most
        1/64 of the documents is served by scoring them directly. n_knn (<= the index's knn): after the block loop,
        the first n_knn graph neighbours of each result are scored too.

        head > 0: a visited document is first scored on its head largest entries (a prefix of
        its stored row) and in full only when that partial score is among the rerank (default
        3 * k) best partial scores of the query so far: fewer bytes read per document, some
        results possibly lost (many on real SPLADE rows: see the module docstring). 0 (the
        default) scores every visited document in full.

        order (the lists layout only): "list" (the default) is the reference's loop: list
        after list (heaviest query term first), each list's blocks in stored order, every
        block below heap_factor * theta skipped. "score" visits the blocks of all query_cut lists in one decreasing order of
        summary score and stops at the first below heap_factor * theta: fewer visits, lower
        recall at the same settings."""
        if self.ntotal == 0:
            raise ValueError("search: the index is empty; add documents first")
        k, threads = as_k(k), as_threads(threads)
        default_cut, default_factor = self.SEARCH_DEFAULTS[self.params["layout"]]
        query_cut = as_int(default_cut if query_cut is None else query_cut, "query_cut", 1)
        heap_factor = default_factor if heap_factor is None else heap_factor
        if not (isinstance(heap_factor, (int, float, np.floating)) and np.isfinite(heap_factor)
                and heap_factor > 0):
            raise ValueError(f"heap_factor must be a positive number; got {heap_factor!r}")
        n_knn = as_int(n_knn, "n_knn", 0, self.params["knn"])
        if order not in ("score", "list"):
            raise ValueError(f"order must be 'score' or 'list'; got {order!r}")
        head = as_int(head, "head")
        rerank = 0 if rerank is None else as_int(rerank, "rerank", k)
        indptr, indices, data, _ = as_csr(self.query_rows(queries), self.dim, "queries")
        filters = as_filters(filter, len(indptr) - 1)
        kn = native_k(k, self.ntotal)
        D, I = self._index.search(indptr, indices, data, kn, query_cut, float(heap_factor),
                                  bool(exact), n_knn, head, rerank, order == "list", threads,
                                  filters)
        return SearchResult(D, I).padded(k, "ip")

    def _write(self, f):
        meta = {**self.params, "values": self.values, "seed": self.seed, "dim": self.dim,
                "format": _FORMAT, "vocabulary": self.vocabulary}
        arrays = {}
        ndocs = 0 if self._index is None else int(self._index.ndocs)
        if ndocs:
            st = self._index.state(view=True)
            meta["fields"] = list(st)
            arrays = {f"S{i:03d}": a for i, a in enumerate(st.values())}
            arrays.update(IDS_=self._index.ids(), DEAD=self._index.removed())
        if self.pending:  # the delta part's live documents, added again on load
            arrays.update(zip(("DPTR", "DIDX", "DVAL", "DIDS"), self._index.pending_docs()))
        write_container(f, "SPRS", self.dim or 0, ndocs, meta, arrays)

    @classmethod
    def _from_parts(cls, dim, ntotal, meta, arrays, source, mapped=False):
        try:
            out = cls(**{k: meta[k] for k in ("n_postings", "centroid_fraction",
                                              "min_cluster_size", "summary_energy",
                                              "max_fraction", "doc_cut", "knn")},
                      summary_cut=meta.get("summary_cut") or None,
                      posting_offsets=meta.get("posting_offsets", True),
                      values=meta["values"], seed=meta["seed"], dim=meta["dim"],
                      **({} if meta.get("layout") == 4 else
                         {"layout": meta["layout"], "block_size": meta["block_size"]}))
            out.vocabulary = meta.get("vocabulary")
            if arrays:
                version = 4 if meta.get("layout") == 4 else meta.get("format")
                if version not in (4, _FORMAT):
                    raise ValueError(f"format {version}, this quanta reads 4 and {_FORMAT}")
                state = {name: arrays[f"S{i:03d}"] for i, name in enumerate(meta["fields"])}
                for name, dtype in _BLOCK_MAX_FIELDS.items():  # absent from version 4
                    state.setdefault(name, np.zeros(0, dtype))
                offsets = "bm_ptr" if out.params["layout"] == "blocks" else "list_ptr"
                if state[offsets].size != dim + 1:  # before dim sizes any allocation
                    raise ValueError(f"{state[offsets].size} term offsets for dim {dim}")
                native = out._native(dim)
                # The arrays are views of the file's buffer or memory map: borrowed, not
                # copied; a memory-mapped file's contents are not all read up front.
                native.restore(state, borrow=True, check_contents=not mapped)
                if native.ndocs != ntotal:
                    raise ValueError("document count mismatch")
                native.set_ids(np.ascontiguousarray(arrays.get("IDS_", np.zeros(0, np.int64)),
                                                    np.int64), removed_mask(arrays))
                out._index, out._keep = native, state
                if "DPTR" in arrays:
                    native.add(*(np.ascontiguousarray(arrays[t]) for t in
                                 ("DPTR", "DIDX", "DVAL", "DIDS")), 0)
        except (KeyError, TypeError, ValueError) as e:
            raise FormatError(f"{source}: not a valid SparseIndex ({e})") from None
        return out


def _concat_csr(parts):
    """One (indptr, indices, data, ids) from several, in order."""
    indptr = [np.zeros(1, np.int64)]
    at = 0
    for p in parts:
        indptr.append(np.asarray(p[0][1:], np.int64) - int(p[0][0]) + at)
        at += int(p[0][-1] - p[0][0])
    return (np.concatenate(indptr),
            np.concatenate([np.asarray(p[1][int(p[0][0]):int(p[0][-1])], np.int32)
                            for p in parts]),
            np.concatenate([np.asarray(p[2][int(p[0][0]):int(p[0][-1])], np.float32)
                            for p in parts]),
            np.concatenate([np.asarray(p[3], np.int64) for p in parts]))


register_kind("SPRS", SparseIndex)
