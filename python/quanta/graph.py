"""A proximity-graph index over vectors kept in any quanta storage."""
from __future__ import annotations

import math
import re
import sys

import numpy as np

from . import _core
from ._mutable import Removable
from ._progress import run_with_progress
from ._rwlock import guarded, lock_of
from ._types import Metric, Storage
from ._validate import (as_f32_matrix, as_ids, as_int, as_k, as_radius, as_threads,
                        reconstruct_ids)
from .filter import as_filters
from .flat import FlatIndex, RangeResult, SearchResult
from .io import FormatError, Persistent, register_kind, write_container


_PARAMS = {}  # (width, slack) -> GraphSearchParams
_SLACK = 2.0  # search()'s default slack; self._defaults: the settings of it and self.width
_CODES = re.compile(r"^PQ(?P<m>[0-9]+)(?:x(?P<nbits>[48]))?$")


def parse_codes(codes):
    """(m, nbits, rabitq) of a codes spec "PQ<m>x4" / "PQ<m>x8" ("PQ<m>": 4 bits) or
    "RaBitQ"; (0, 4, False) for None."""
    if codes is None or codes == "none":
        return 0, 4, False
    if codes == "RaBitQ":
        return 0, 4, True
    match = _CODES.match(codes) if isinstance(codes, str) else None
    if not match or int(match.group("m")) < 1:
        raise ValueError(f"codes must be None, 'RaBitQ' or 'PQ<m>x4' / 'PQ<m>x8' (m dividing "
                         f"dim); got {codes!r}")
    return int(match.group("m")), int(match.group("nbits") or 4), False


@guarded
class GraphIndex(Removable, Persistent):
    """Graph search (one layer, as Vamana / NSG) over vectors stored as f32, f16, bf16,
    f8e4m3, f8e5m2 or i8; factory spec ``"Graph<degree>"`` or ``"Graph<degree>(<storage>)"``,
    e.g. ``"Graph32(f16)"``.

    Each vector keeps up to ``degree`` neighbours, chosen by RobustPrune (DiskANN) among the
    ``build_width`` candidates of a beam search when it is inserted (``alpha`` = 1 is HNSW's
    neighbour heuristic; larger values keep more, longer edges). A search starts from the
    medoid and expands the closest unexpanded vertex of a beam of ``width`` candidates
    (hnswlib's ``ef``), scoring each vertex exactly from the stored vectors as it is met: a
    wider beam finds more of the true neighbours, slower.

    Parameters
    ----------
    dim, metric, storage, f8_scale, f8_rounding : as for :class:`quanta.FlatIndex`.
    degree : neighbours per vertex (2 to 256); memory is 4 bytes per neighbour slot.
    build_width : beam of the insertion search; larger builds better graphs, slower.
    alpha : RobustPrune's slack, >= 1.
    width : the default search beam (``search(..., width=)`` overrides it).
    refine : refinement passes after the insertions: each new vector searches the finished
        graph again and re-chooses its neighbours (Vamana's second pass); 0 builds faster, a
        worse graph.
    max_candidates : 0 (default): a vector's neighbours are chosen among the final beam of its
        insertion search; else among up to this many of the closest vectors that search
        scored (DiskANN's ``maxc``), so farther ones can become long links. On 100k
        clustered 384-d vectors with PQ96x4 codes, 256 raised recall@10 at width 32 from
        0.872 to 0.923 for 1.5-1.9x the build time; on 120k MiniLM embeddings it gained
        nothing.
    codes : ``"PQ<m>x4"``: SymphonyQG's layout. Each vertex's row holds a copy of its list and
        its neighbours' 4-bit product-quantization codes in the fast-scan layout, so one SIMD
        pass over the row estimates all its neighbours (``degree`` x (m / 2 + 4) bytes per
        vector more). The beam is ordered by these estimates and only the vertex being
        expanded is scored exactly: far fewer vector rows are read, 1.3-2.7x the speed of the
        plain f16 graph at the same recall (384-d MiniLM and clustered data). Such a search
        starts from the best of 128 pivots (vertices spread over the graph, estimated in one
        fast-scan call) rather than the medoid, once the graph holds 512 vectors. As every
        slot of a row is estimated anyway, the slots RobustPrune leaves empty are filled with
        the closest candidates it dropped. Larger m estimates better at more bytes and more work
        per vertex; ``dim / 4`` to ``dim / 3`` were the fastest on 384-d data. Trained by
        ``train`` or the first ``add``. Factory: ``"Graph32(f16),PQ96x4"``.
        ``"RaBitQ"``: RaBitQ's one-bit codes (SymphonyQG's own estimates) in the same layout:
        each vector centred on the training mean, rotated, coded by its signs, with one float
        per vector that makes the estimate unbiased (dim / 8 + 4 bytes per neighbour slot, +4
        more for l2; dim a multiple of 4, at most 1024). Training only takes the mean. On 120k
        MiniLM vectors it reached up to 0.017 more recall@10 than PQ96x4 at widths 10-24,
        the same above, at 0.84-0.97x its QPS at recall 0.90-0.99; on clustered data the
        same recall per width.
        ``"PQ<m>x8"``: an 8-bit code per vector; a neighbour is scored exactly only when its
        estimate could enter the beam (within ``slack`` times the estimation error seen so
        far in the search).

    Removed vectors keep routing searches until ``compact()`` reconnects their neighbours and
    drops them. A filter that allows few ids (fewer than the width, or under 5% of the rows) is
    answered by an exact scan of those rows; otherwise disallowed vertices route but are never
    returned, and a query whose beam meets fewer than k allowed vertices falls back to the
    exact scan. ``add`` after a build inserts into the graph. A build on one thread gives the
    same graph every time; on several, insertions interleave (the graph differs, its recall
    does not measurably). Search results do not depend on the thread count.
    """

    def __init__(self, dim: int, metric: Metric = "ip", degree: int = 32,
                 storage: Storage = "f32", *,
                 build_width: int = 128, alpha: float = 1.0, width: int = 64,
                 codes: str | None = None, refine: int = 1, max_candidates: int = 0,
                 f8_scale: str = "global", f8_rounding: str = "anisotropic"):
        self._flat = FlatIndex(dim, metric, storage, f8_scale=f8_scale, f8_rounding=f8_rounding)
        degree = as_int(degree, "degree", 2, 256)
        build_width = as_int(build_width, "build_width", 1)
        if isinstance(alpha, (bool, np.bool_)) or not isinstance(alpha, (int, float, np.number)):
            raise TypeError(f"alpha must be a real number; got {type(alpha).__name__}")
        if not (math.isfinite(alpha) and alpha >= 1):
            raise ValueError(f"alpha must be a finite number >= 1; got {alpha}")
        pq_m, pq_nbits, rabitq = parse_codes(codes)
        if pq_m and self._flat.dim % pq_m:
            raise ValueError(f"codes: PQ m = {pq_m} must divide dim = {self._flat.dim}")
        refine = as_int(refine, "refine", 0, 8)
        max_candidates = as_int(max_candidates, "max_candidates", 0)
        self._index = _core.GraphIndex(self._flat.native, degree, build_width, float(alpha),
                                       pq_m, pq_nbits, refine, rabitq, max_candidates)
        self._codes = "RaBitQ" if rabitq else f"PQ{pq_m}x{pq_nbits}" if pq_m else None
        self._dim = self._flat.dim  # read on every search: a plain attribute is the cheapest
        self.width = width

    # -- properties -------------------------------------------------------------------------
    dim = property(lambda self: self._dim)
    ntotal = property(lambda self: self._index.ntotal)
    metric = property(lambda self: self._index.metric)
    storage = property(lambda self: self._flat.storage)
    degree = property(lambda self: self._index.degree)
    build_width = property(lambda self: self._index.build_width)
    alpha = property(lambda self: self._index.alpha)
    refine = property(lambda self: self._index.refine)
    max_candidates = property(lambda self: self._index.max_candidates)
    codes = property(lambda self: self._codes, doc="the estimation codes' spec, or None")
    is_trained = property(lambda self: self._index.is_trained)
    memory_usage = property(lambda self: self._index.memory_usage, doc="bytes held by the index")

    @property
    def width(self) -> int:
        """The default search beam."""
        return self._width

    @width.setter
    def width(self, value) -> None:
        self._width = as_int(value, "width", 1)
        self._defaults = self._params(None, _SLACK)

    @property
    def native(self):
        """The native index (``quanta._core.GraphIndex``), for embedding."""
        return self._index

    def __len__(self) -> int:
        return self.ntotal

    def __repr__(self) -> str:
        extra = f", codes={self.codes!r}" if self.codes else ""
        if self.max_candidates:
            extra += f", max_candidates={self.max_candidates}"
        return (f"GraphIndex(dim={self.dim}, metric={self.metric!r}, degree={self.degree}, "
                f"storage={self.storage!r}, build_width={self.build_width}, alpha={self.alpha:g}, "
                f"refine={self.refine}, width={self.width}{extra}, ntotal={self.ntotal})")

    # -- building ---------------------------------------------------------------------------
    def train(self, x, *, threads: int = 0) -> None:
        """Learns the storage's scales (i8, f8 with a global scale) and the estimation codes'
        quantizer; without them there is nothing to train. The first ``add`` trains what is
        not trained yet from its own rows. An index holding vectors refuses (``reset()``
        first)."""
        x = as_f32_matrix(x, self.dim, "x")
        if x.shape[0] == 0:
            raise ValueError("train: x is empty; pass at least one vector")
        self._index.train(x, _core.TrainParams(threads=as_threads(threads)))

    def add(self, x, ids=None, *, threads: int = 0, progress: bool | None = None) -> None:
        """Stores vectors (n, dim) and inserts them into the graph; `ids` are int64 labels
        (default: positions). On error nothing is added. `progress`: a progress line on
        stderr (default: for more than 100,000 vectors when stderr is a terminal)."""
        x = as_f32_matrix(x, self.dim, "x")
        ids = None if ids is None else as_ids(ids, x.shape[0])
        if progress is None:
            progress = x.shape[0] > 100_000 and sys.stderr.isatty()
        native = self._index
        run_with_progress(lambda: native.add(x, ids, as_threads(threads)),
                          lambda: native.build_progress, "GraphIndex add" if progress else None,
                          "the vectors")

    def reset(self) -> None:
        """Removes every vector and the graph (keeps the trained scales)."""
        self._index.reset()

    # -- queries ----------------------------------------------------------------------------
    def _params(self, width, slack):
        """Search settings; made once per (width, slack) and never changed after (the native
        search copies them), so threads may share them."""
        width = self.width if width is None else as_int(width, "width", 1)
        if isinstance(slack, (bool, np.bool_)) or not isinstance(slack, (int, float, np.number)) \
                or not (math.isfinite(slack) and slack >= 0):
            raise ValueError(f"slack must be a finite number >= 0; got {slack!r}")
        key = (width, float(slack))
        params = _PARAMS.get(key)
        if params is None:
            params = _core.GraphSearchParams()
            params.width, params.slack = key
            if len(_PARAMS) < 1024:
                _PARAMS[key] = params
        return params

    def search(self, q, k: int = 10, *, width: int | None = None, threads: int = 0,
               filter=None, slack: float = _SLACK) -> SearchResult:
        """The k nearest stored vectors of each query found by the beam, best first.

        width: the beam (default ``index.width``; raised to k when smaller).
        slack: with 8-bit estimation codes, how far (in mean estimation errors) an estimate
            may be from entering the beam and still be scored exactly; smaller is faster,
            larger finds more. 4-bit codes do not use it.
        threads: queries are spread over threads; results do not depend on it.
        filter: ids the queries may return (see ``quanta.filter``).
        """
        q = as_f32_matrix(q, self._dim, "queries", check_finite=False)  # checked natively
        k = as_k(k)
        params = self._defaults if width is None and slack is _SLACK else \
            self._params(width, slack)
        filters = None if filter is None else as_filters(filter, q.shape[0])
        # The native call holds the index's read lock (locked_natively) and returns at most
        # ntotal columns.
        result = SearchResult(*self._index.search(q, k, as_threads(threads), filters, params,
                                                  self.__dict__.get("_rwlock") or lock_of(self)))
        return result if result.ids.shape[1] == k else result.padded(k, self.metric)

    def range_search(self, q, radius: float, *, width: int | None = None, threads: int = 0,
                     filter=None) -> RangeResult:
        """The vertices within `radius` among those each query's beam meets (l2 distance <
        radius, or ip / cosine similarity > radius), best first: approximate, as in any graph;
        a wider beam meets more."""
        q = as_f32_matrix(q, self.dim, "queries", check_finite=False)  # checked natively
        return RangeResult(*self._index.range_search(q, as_radius(radius), as_threads(threads),
                                                     as_filters(filter, q.shape[0]),
                                                     self._params(width, 2.0)))

    def reconstruct(self, ids) -> np.ndarray:
        """The stored (decoded) vectors for `ids`, shape (len(ids), dim)."""
        return reconstruct_ids(self._index, ids)

    # -- persistence ------------------------------------------------------------------------
    def _write(self, f) -> None:
        meta, arrays = self._flat._state()
        arrays["ADJ_"] = self._index.adjacency().reshape(-1, self.degree)
        arrays["GCOD"] = self._index.codes()
        arrays["GPQC"] = self._index.codec_state()
        arrays["GNBC"] = self._index.neighbour_codes()
        meta.update(degree=self.degree, build_width=self.build_width, alpha=self.alpha,
                    width=self.width, entry=int(self._index.entry), codes=self.codes,
                    refine=self.refine, max_candidates=self.max_candidates)
        write_container(f, "GRPH", self.dim, self._index.rows, meta, arrays)

    locked_natively = ("search",)  # see quanta._rwlock.guarded

    maps_arrays = True  # quanta.load(path, mmap=True) searches the mapped vectors and graph

    @classmethod
    def _from_parts(cls, dim, ntotal, meta, arrays, source, mapped=False):
        try:
            index = cls(dim, meta["metric"], meta["degree"], meta["storage"],
                        build_width=meta["build_width"], alpha=meta["alpha"],
                        width=meta["width"], codes=meta.get("codes"),
                        refine=meta.get("refine", 1),
                        max_candidates=meta.get("max_candidates", 0), f8_scale=meta["f8_scale"],
                        f8_rounding=meta["f8_rounding"])
            index._flat._restore(ntotal, meta, arrays, mapped)
            # GNBC (the neighbours' codes) is derived: files written before it have none.
            parts = [np.ascontiguousarray(arrays.get(t, np.empty(0, d)), dtype=d) for t, d in
                     (("ADJ_", np.uint32), ("GCOD", np.uint8), ("GPQC", np.float32),
                      ("GNBC", np.uint8))]
            index._index.restore(parts[0].reshape(-1), int(meta["entry"]), parts[1].reshape(-1),
                                 parts[2].reshape(-1), parts[3].reshape(-1), borrow=mapped)
            index._adj = parts if mapped else None  # the mapped graph and codes, kept alive
        except (KeyError, TypeError, ValueError) as e:
            raise FormatError(f"{source}: not a valid GRPH index ({e})") from None
        return index


register_kind("GRPH", GraphIndex)
