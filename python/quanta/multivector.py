"""Multi-vector (ColBERT-style) retrieval: MUVERA fixed-dimensional encodings (FDEs) and exact
Chamfer (MaxSim) re-ranking.

A multi-vector batch is ragged: ``tokens`` (all token vectors, float32, ``(ntokens, dim)``)
plus ``offsets`` (int64, ``n + 1`` entries; set ``i`` is ``tokens[offsets[i]:offsets[i + 1]]``).
Everywhere a batch is taken, a list of ``(n_i, dim)`` arrays works too, and a single 2-D
array without offsets is one set.

>>> import numpy as np, quanta
>>> docs = [np.random.rand(30, 128).astype(np.float32) for _ in range(1000)]
>>> index = quanta.MultiVectorIndex(128)
>>> index.add(docs)
>>> res = index.search([np.random.rand(32, 128).astype(np.float32)], k=10)
"""
from __future__ import annotations

import numpy as np

from . import _core
from ._mutable import Removable
from ._rwlock import guarded
from ._types import Storage
from ._validate import as_f32_matrix, as_ids, as_k, as_threads
from .factory import index_factory
from .filter import as_filters, as_removal
from .flat import SearchResult, removed_mask
from .io import FormatError, Persistent, from_buffer, register_kind, to_bytes, write_container
from .storage import STORAGES

_PROJECTIONS = ("auto", "identity", "dense", "count_sketch")
_ORDERS = ("binary", "gray")
_ENC_TAGS = {"SIMH": "MSIM", "PROJ": "MPRJ", "FIDX": "MFIX", "FSGN": "MFSG"}  # in MVIX files


def as_token_sets(tokens, offsets, dim: int | None, name: str = "tokens",
                  check_finite: bool = False):
    """(tokens float32 (ntokens, dim), offsets int64 (n + 1,)) from any accepted form. NaN and
    infinity are left to the native calls, which reject them (check_finite for NumPy users)."""
    if offsets is None:
        if isinstance(tokens, (list, tuple)):
            if not tokens:
                raise ValueError(f"{name}: empty list (no sets)")
            sets = [as_f32_matrix(t, dim, f"{name}[{i}]", check_finite)
                    for i, t in enumerate(tokens)]
            dim = sets[0].shape[1] if dim is None else dim
            for i, s in enumerate(sets):
                if s.shape[1] != dim:
                    raise ValueError(f"{name}[{i}] has dim {s.shape[1]}, {name}[0] has {dim}")
                if len(s) == 0:
                    raise ValueError(f"{name}[{i}] is empty: every set needs at least one token")
            offsets = np.zeros(len(sets) + 1, np.int64)
            np.cumsum([len(s) for s in sets], out=offsets[1:])
            return np.ascontiguousarray(np.concatenate(sets)), offsets
        x = as_f32_matrix(tokens, dim, name, check_finite)
        if len(x) == 0:
            raise ValueError(f"{name} is empty: a set needs at least one token")
        return x, np.array([0, len(x)], np.int64)
    x = as_f32_matrix(tokens, dim, name, check_finite)
    off = np.asarray(offsets)
    if off.dtype.kind not in "iu":
        raise TypeError(f"{name} offsets must be integers (int64); got dtype {off.dtype}")
    if off.ndim != 1 or len(off) < 2:
        raise ValueError(f"{name} offsets must be 1-D with n + 1 >= 2 entries; got shape {off.shape}")
    off = np.ascontiguousarray(off, np.int64)
    if off[0] != 0 or off[-1] != len(x):
        raise ValueError(f"{name} offsets must start at 0 and end at the token count {len(x)}; "
                         f"got {int(off[0])} .. {int(off[-1])}")
    steps = np.diff(off)
    if (steps <= 0).any():
        i = int(np.argmax(steps <= 0))
        raise ValueError(f"{name} set {i} is empty or has decreasing offsets "
                         f"(offsets[{i}] = {int(off[i])}, offsets[{i + 1}] = {int(off[i + 1])})")
    return x, off


def _choice(name, value, allowed):
    if value not in allowed:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, allowed))}; got {value!r}")
    return value


def _positive_int(name, value, minimum=1):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an integer; got {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}; got {value}")
    return int(value)


class FDEEncoder(Persistent):
    """MUVERA fixed-dimensional encodings of token sets.

    Per repetition (``r_reps``), ``k_sim`` random hyperplanes (SimHash) split the token space
    into ``2**k_sim`` buckets; a query's bucket holds the **sum** of its tokens there, a
    document's the **average** (an empty document bucket copies the token nearest it in
    Hamming distance when ``fill_empty``), each projected to ``d_proj`` dimensions. The output
    has ``r_reps * 2**k_sim * d_proj`` floats (10,240 with the defaults, FastEmbed's), or
    ``final_dim`` with a final count-sketch projection; ``<query FDE, document FDE>``
    approximates the Chamfer similarity.

    Switches that reproduce the reference implementations:

    * ``projection``: ``"auto"`` (FastEmbed: dense when d_proj < dim, else identity),
      ``"dense"`` (random +-1 scaled by 1/sqrt(d_proj): the paper, FastEmbed, Weaviate),
      ``"count_sketch"`` (one unscaled +-1 per input dimension: graph-mining's AMS sketch) or
      ``"identity"`` (d_proj must equal dim).
    * ``bucket_order``: ``"binary"`` (hyperplane i is bit i: FastEmbed, Weaviate; ties in the
      fill go to the lowest bucket id) or ``"gray"`` (graph-mining's C++: bits appended most
      significant first and Gray-decoded; ties go to the lowest token index).
    * ``seed``: the matrices are drawn from ``numpy.random.default_rng(seed)`` in FastEmbed's
      order (per repetition a (dim, k_sim) normal matrix, then the (r_reps, dim, d_proj) signs),
      so ``FDEEncoder(dim, seed=42)`` gives FastEmbed's ``Muvera(dim, random_seed=42)`` encodings
      (to float32 rounding). The matrices are stored with the encoder (``save``/pickle).

    Encoding runs in C++ on all cores (``threads``); one GEMM per block of tokens gives the
    hyperplane signs and the projections together.
    """

    def __init__(self, dim: int, k_sim: int = 5, d_proj: int | None = 16, r_reps: int = 20,
                 seed: int = 0, *, projection: str = "auto", bucket_order: str = "binary",
                 fill_empty: bool = True, final_dim: int = 0):
        self.dim = _positive_int("dim", dim)
        self.k_sim = _positive_int("k_sim", k_sim, 0)
        if self.k_sim > 20:
            raise ValueError(f"k_sim must be <= 20 (2**k_sim buckets per repetition); got {k_sim}")
        self.r_reps = _positive_int("r_reps", r_reps)
        self.projection = _choice("projection", projection, _PROJECTIONS)
        self.bucket_order = _choice("bucket_order", bucket_order, _ORDERS)
        self.d_proj = self.dim if d_proj is None else _positive_int("d_proj", d_proj)
        if self.projection == "auto":
            if self.d_proj > self.dim:
                raise ValueError(f"d_proj={self.d_proj} > dim={self.dim}: cannot project up "
                                 f"(use projection='count_sketch' or 'dense' explicitly)")
            kind = "identity" if self.d_proj == self.dim else "dense"
        else:
            kind = self.projection
        if kind == "identity" and self.d_proj != self.dim:
            raise ValueError(f"projection='identity' needs d_proj == dim ({self.dim}); got {self.d_proj}")
        self.seed = int(seed)
        self.fill_empty = bool(fill_empty)
        self.final_dim = _positive_int("final_dim", final_dim, 0)

        # FastEmbed's draws, in its order (the sign tensor is drawn even when unused, so that
        # every later draw lines up)
        rng = np.random.default_rng(self.seed)
        simhash = np.stack([rng.normal(size=(self.dim, self.k_sim)) for _ in range(self.r_reps)])
        signs = rng.choice([-1, 1], size=(self.r_reps, self.dim, self.d_proj))
        if kind == "dense":
            proj = signs / np.sqrt(self.d_proj)
        elif kind == "count_sketch":
            cols = rng.integers(0, self.d_proj, size=(self.r_reps, self.dim))
            sign = rng.choice([-1.0, 1.0], size=(self.r_reps, self.dim))
            proj = np.zeros((self.r_reps, self.dim, self.d_proj))
            np.put_along_axis(proj, cols[..., None], sign[..., None], axis=2)
        else:
            proj = np.zeros(0)
        fde_dim = self.r_reps * (1 << self.k_sim) * self.d_proj
        if self.final_dim:
            final_index = rng.integers(0, self.final_dim, size=fde_dim)
            final_sign = rng.choice([-1.0, 1.0], size=fde_dim)
        else:
            final_index, final_sign = np.zeros(0), np.zeros(0)
        self._build(simhash, proj, final_index, final_sign)

    def _build(self, simhash, proj, final_index, final_sign):
        self._matrices = {"SIMH": np.ascontiguousarray(simhash, np.float32).ravel(),
                          "PROJ": np.ascontiguousarray(proj, np.float32).ravel(),
                          "FIDX": np.ascontiguousarray(final_index, np.int32).ravel(),
                          "FSGN": np.ascontiguousarray(final_sign, np.float32).ravel()}
        m = self._matrices
        self._e = _core.FDEEncoder(self.dim, self.k_sim, self.d_proj, self.r_reps,
                                   self.bucket_order == "gray", self.final_dim,
                                   m["SIMH"], m["PROJ"], m["FIDX"], m["FSGN"])

    @property
    def output_dim(self) -> int:
        """Length of one encoding."""
        return self._e.output_dim

    def __repr__(self):
        return (f"FDEEncoder(dim={self.dim}, k_sim={self.k_sim}, d_proj={self.d_proj}, "
                f"r_reps={self.r_reps}, seed={self.seed}, projection={self.projection!r}, "
                f"bucket_order={self.bucket_order!r}, final_dim={self.final_dim}) "
                f"-> {self.output_dim} dims")

    def encode_documents(self, tokens, offsets=None, *, threads: int = 0) -> np.ndarray:
        """FDEs of documents (bucket averages, empty buckets filled when ``fill_empty``):
        float32 ``(n, output_dim)``."""
        x, off = as_token_sets(tokens, offsets, self.dim)
        return self._e.encode(x, off, True, self.fill_empty, as_threads(threads))

    def encode_queries(self, tokens, offsets=None, *, threads: int = 0) -> np.ndarray:
        """FDEs of queries (bucket sums, no fill): float32 ``(n, output_dim)``."""
        x, off = as_token_sets(tokens, offsets, self.dim)
        return self._e.encode(x, off, False, False, as_threads(threads))

    def _meta(self):
        return {"k_sim": self.k_sim, "d_proj": self.d_proj, "r_reps": self.r_reps,
                "seed": self.seed, "projection": self.projection,
                "bucket_order": self.bucket_order, "fill_empty": self.fill_empty,
                "final_dim": self.final_dim}

    def _write(self, f):
        write_container(f, "FDEE", self.dim, 0, self._meta(), self._matrices)

    @classmethod
    def _from_arrays(cls, dim, meta, arrays):
        """The encoder with its stored matrices (not redrawn: a saved encoder re-encodes
        identically whatever NumPy's generators do later)."""
        out = cls.__new__(cls)
        out.dim = _positive_int("dim", dim)
        out.k_sim, out.d_proj, out.r_reps = meta["k_sim"], meta["d_proj"], meta["r_reps"]
        out.seed, out.final_dim = meta["seed"], meta["final_dim"]
        out.projection = _choice("projection", meta["projection"], _PROJECTIONS)
        out.bucket_order = _choice("bucket_order", meta["bucket_order"], _ORDERS)
        out.fill_empty = bool(meta["fill_empty"])
        out._build(*(np.asarray(arrays[t]) for t in ("SIMH", "PROJ", "FIDX", "FSGN")))
        return out

    @classmethod
    def _from_parts(cls, dim, ntotal, meta, arrays, source):
        try:
            return cls._from_arrays(dim, meta, arrays)
        except (KeyError, TypeError, ValueError) as e:
            raise FormatError(f"{source}: not a valid FDEEncoder ({e})") from None


register_kind("FDEE", FDEEncoder)


def merge_query_tokens(tokens, offsets=None, tau: float = 0.7):
    """MUVERA's ball carving of query tokens: repeatedly take the first unclustered token,
    group every unclustered token whose inner product with it is >= tau, and replace the group
    by its sum. Returns the merged batch (tokens, offsets)."""
    x, off = as_token_sets(tokens, offsets, None, "query tokens", check_finite=True)
    out, new_off = [], [0]
    for i in range(len(off) - 1):
        q = x[off[i]:off[i + 1]]
        gram = q @ q.T
        free = np.ones(len(q), bool)
        for t in range(len(q)):
            if not free[t]:
                continue
            members = free & (gram[t] >= tau)
            members[t] = True
            out.append(q[members].sum(axis=0))
            free &= ~members
        new_off.append(len(out))
    return np.ascontiguousarray(np.stack(out), np.float32), np.asarray(new_off, np.int64)


@guarded
class MultiVectorIndex(Removable, Persistent):
    """Multi-vector retrieval: MUVERA FDEs in an inner dense index, then exact Chamfer.

    ``add(tokens, offsets)`` stores every document's token vectors (in ``storage``: f32, f16,
    bf16, f8e4m3, f8e5m2 or i8; i8 and float8 with one global scale) and its document FDE in
    the inner index (``index``: an ``index_factory`` spec over the FDEs with inner-product
    metric; "Flat(bf16)" by default: half the memory of float32 FDEs, and AMX tiles where the
    CPU has them; PQ/IVF specs are trained on the first add's FDEs). On CPUs with AMX
    (Sapphire Rapids and later) bf16 and i8 tokens are scored by AMX tiles, the query tokens
    rounded to bf16, or to int8 at each token's own scale: ``storage="i8"`` (a quarter of the
    float32 bytes, about twice bf16's re-rank speed) or ``"bf16"`` is then the fast choice.
    ``search`` encodes the queries, takes ``candidates`` per query from the inner index and
    re-ranks them by exact Chamfer similarity (sum over query tokens of the best document
    token's inner product); ``exact=True`` scores every document instead (batched over the
    queries, GEMM speed): the ground truth. Scores are Chamfer similarities, higher first;
    labels are the documents' ids (``add(..., ids=)``; default: positions in add order).
    ``search(filter=...)``, ``remove``, ``contains`` and ``compact`` follow the engine
    contract of the dense indexes (see ``quanta.filter``).
    """

    def __init__(self, dim: int, k_sim: int = 5, d_proj: int | None = 16, r_reps: int = 20,
                 seed: int = 0, *, storage: Storage = "f32", index: str = "Flat(bf16)",
                 candidates: int = 100, encoder: FDEEncoder | None = None, **encoder_options):
        self.storage = _choice("storage", storage, STORAGES)
        self.candidates = _positive_int("candidates", candidates)
        if encoder is not None:
            if not isinstance(encoder, FDEEncoder):
                raise TypeError("encoder must be a quanta.FDEEncoder")
            if encoder.dim != dim:
                raise ValueError(f"encoder has dim {encoder.dim}, the index {dim}")
            self.encoder = encoder
        else:
            self.encoder = FDEEncoder(dim, k_sim, d_proj, r_reps, seed, **encoder_options)
        self.dim = self.encoder.dim
        self.index_spec = index
        self._fde_index = index_factory(self.encoder.output_dim, index, metric="ip")
        self._tokens = _core.TokenStore(self.dim, self.storage)

    ntotal = property(lambda self: self._tokens.ntotal, doc="Documents held (removed excluded).")
    ntokens = property(lambda self: self._tokens.ntokens, doc="Token vectors stored.")

    @property
    def memory_usage(self) -> int:
        """Bytes held: token codes, offsets and the inner FDE index."""
        return int(self._tokens.memory_usage + self._fde_index.memory_usage)

    def __repr__(self):
        return (f"MultiVectorIndex(dim={self.dim}, storage={self.storage!r}, "
                f"index={self.index_spec!r}, candidates={self.candidates}, ntotal={self.ntotal}, "
                f"encoder={self.encoder!r})")

    def add(self, tokens, offsets=None, ids=None, *, threads: int = 0) -> None:
        """Adds documents (a ragged batch) with optional int64 `ids` (default: positions,
        continuing after the documents stored). Validates everything first: a failed call
        stores nothing."""
        x, off = as_token_sets(tokens, offsets, self.dim)
        threads = as_threads(threads)
        n = len(off) - 1
        given = None if ids is None else as_ids(ids, n)
        before = self._tokens.ndocs
        # The inner index is labelled with the same ids (explicit: its own default numbering
        # may differ once it drops removed entries).
        inner_ids = np.arange(before, before + n, dtype=np.int64) if given is None else given
        fde = self.encoder._e.encode(x, off, True, self.encoder.fill_empty, threads)
        if not self._fde_index.is_trained:
            self._fde_index.train(fde)
        self._tokens.add(x, off, given, threads)
        try:
            self._fde_index.add(fde, inner_ids, threads=threads)
        except BaseException:  # keep the two stores in step
            self._tokens.truncate(before)
            raise

    def remove(self, ids) -> int:
        """Removes the documents with these ids (array-like or ``quanta.Filter``); returns how
        many were held. Searches never return them; ``compact()`` frees their tokens."""
        removed = int(self._tokens.remove(as_removal(ids)))
        self._fde_index.remove(ids)  # the same ids label the FDEs
        return removed

    def contains(self, ids) -> np.ndarray:
        """Whether each id is held (bool array)."""
        return self._tokens.contains(np.ascontiguousarray(np.atleast_1d(ids), dtype=np.int64))

    def compact(self) -> None:
        """Frees the removed documents' tokens and FDEs."""
        self._tokens.compact()
        self._fde_index.compact()

    def search(self, q_tokens, q_offsets=None, k: int = 10, *, candidates: int | None = None,
               exact: bool = False, merge_tau: float | None = None, threads: int = 0,
               filter=None, **inner) -> SearchResult:
        """Top-k documents by Chamfer similarity for each query of a ragged batch.

        candidates: FDE candidates re-ranked per query (default the index's ``candidates``);
        exact: score every document (no FDEs); merge_tau: merge query tokens by ball carving
        (``merge_query_tokens``) before the re-rank; inner: passed to the inner index's search
        (e.g. ``nprobe``); filter: ids the queries may return (see ``quanta.filter``), applied
        in the inner index's scan and again in the re-rank. Missing results (k > ntotal) are
        (-inf, -1).
        """
        q, q_off = as_token_sets(q_tokens, q_offsets, self.dim, "q_tokens")
        k, threads = as_k(k), as_threads(threads)
        if self.ntotal == 0:
            raise ValueError("search: the index is empty; add documents first")
        filters = as_filters(filter, len(q_off) - 1)
        if exact:
            D, I = self._tokens.search(q, q_off, k, threads, filters)
            return SearchResult(D, I)
        nc = self.candidates if candidates is None else _positive_int("candidates", candidates)
        fde = self.encoder._e.encode(q, q_off, False, False, threads)
        _, cand = self._fde_index.search(fde, max(nc, k), threads=threads, filter=filter, **inner)
        if merge_tau is not None:
            q, q_off = merge_query_tokens(q, q_off, float(merge_tau))
        D, I = self._tokens.rerank(q, q_off, np.ascontiguousarray(cand, np.int64), k, threads,
                                   filters)
        return SearchResult(D, I)

    def rerank(self, q_tokens, q_offsets, candidates, k: int = 10, *,
               threads: int = 0) -> SearchResult:
        """Exact Chamfer top-k of each query among its candidate document ids ((nq, nc)
        int64; -1, removed and unknown ids are skipped)."""
        q, q_off = as_token_sets(q_tokens, q_offsets, self.dim, "q_tokens")
        cand = np.asarray(candidates)
        if cand.dtype.kind not in "iu":
            raise TypeError(f"candidates must be integers; got dtype {cand.dtype}")
        if cand.ndim != 2 or cand.shape[0] != len(q_off) - 1:
            raise ValueError(f"candidates must have shape ({len(q_off) - 1}, nc); got {cand.shape}")
        D, I = self._tokens.rerank(q, q_off, np.ascontiguousarray(cand, np.int64), as_k(k),
                                   as_threads(threads), None)
        return SearchResult(D, I)

    def document(self, i: int) -> np.ndarray:
        """The token vectors of the document at position i (add order, before any compact),
        as stored (decoded)."""
        return self._tokens.tokens(int(i))

    def fdes(self, tokens, offsets=None, *, queries: bool = False, threads: int = 0):
        """The FDEs this index uses for a batch of documents (or queries)."""
        enc = self.encoder
        return enc.encode_queries(tokens, offsets, threads=threads) if queries else \
            enc.encode_documents(tokens, offsets, threads=threads)

    def _write(self, f):
        meta = {"encoder": self.encoder._meta(), "storage": self.storage,
                "index": self.index_spec, "candidates": self.candidates,
                "scale": float(self._tokens.scale)}
        enc = {_ENC_TAGS[t]: a for t, a in self.encoder._matrices.items()}
        inner = np.frombuffer(to_bytes(self._fde_index), np.uint8)
        write_container(f, "MVIX", self.dim, self._tokens.ndocs, meta,
                        {"CODE": self._tokens.codes(), "OFFS": self._tokens.offsets(),
                         "IDS_": self._tokens.ids(), "DEAD": self._tokens.removed(),
                         "FDEX": inner, **enc})

    maps_arrays = True  # quanta.load(path, mmap=True) serves tokens and FDEs from the file

    @classmethod
    def _from_parts(cls, dim, ntotal, meta, arrays, source, mapped=False):
        try:
            enc = FDEEncoder._from_arrays(dim, meta["encoder"],
                                          {t: arrays[m] for t, m in _ENC_TAGS.items()})
            out = cls(dim, storage=meta["storage"], index=meta["index"],
                      candidates=meta["candidates"], encoder=enc)
            codes = np.ascontiguousarray(arrays["CODE"])
            out._tokens.restore(codes, np.ascontiguousarray(arrays["OFFS"]), meta["scale"],
                                np.ascontiguousarray(arrays.get("IDS_", np.zeros(0, np.int64))),
                                removed_mask(arrays), borrow=mapped)
            out._keep = [codes] if mapped else []
            # The FDE index is a container inside this one: mapped, its arrays view the file.
            out._fde_index = from_buffer(arrays["FDEX"] if mapped else bytes(arrays["FDEX"]),
                                         source, mapped)
            if out._tokens.ndocs != ntotal or out._fde_index.ntotal != out._tokens.ntotal:
                raise ValueError("document counts disagree")
        except (KeyError, TypeError, ValueError) as e:
            raise FormatError(f"{source}: not a valid MultiVectorIndex ({e})") from None
        return out


register_kind("MVIX", MultiVectorIndex)
