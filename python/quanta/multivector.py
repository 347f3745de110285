"""Multi-vector (ColBERT-style) retrieval: a first stage (every document token in an IVF-PQ
fast-scan index, or MUVERA fixed-dimensional encodings (FDEs) in any index) and exact Chamfer
(MaxSim) re-ranking.

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
from ._validate import (INT64_MAX, as_f32_matrix, as_ids, as_int, as_k, as_seed, as_threads,
                        native_k)
from .factory import index_factory
from .filter import as_filters, as_removal, is_per_query
from .flat import SearchResult, removed_mask, removed_rows
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
        self.dim = as_int(dim, "dim", 1)
        self.k_sim = as_int(k_sim, "k_sim", 0)
        if self.k_sim > 20:
            raise ValueError(f"k_sim must be <= 20 (2**k_sim buckets per repetition); got {k_sim}")
        self.r_reps = as_int(r_reps, "r_reps", 1)
        self.projection = _choice("projection", projection, _PROJECTIONS)
        self.bucket_order = _choice("bucket_order", bucket_order, _ORDERS)
        self.d_proj = self.dim if d_proj is None else as_int(d_proj, "d_proj", 1)
        if self.projection == "auto":
            if self.d_proj > self.dim:
                raise ValueError(f"d_proj={self.d_proj} > dim={self.dim}: cannot project up "
                                 f"(use projection='count_sketch' or 'dense' explicitly)")
            kind = "identity" if self.d_proj == self.dim else "dense"
        else:
            kind = self.projection
        if kind == "identity" and self.d_proj != self.dim:
            raise ValueError(f"projection='identity' needs d_proj == dim ({self.dim}); got {self.d_proj}")
        self.seed = as_seed(seed)
        self.fill_empty = bool(fill_empty)
        self.final_dim = as_int(final_dim, "final_dim", 0)

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

    @property
    def matrices(self) -> dict:
        """The encoder's random matrices, read-only, flattened float32 / int32 arrays:
        ``SIMH`` (r_reps x dim x k_sim SimHash hyperplanes, in that order), ``PROJ`` (r_reps x
        dim x d_proj projections; empty when ``projection="identity"``), ``FIDX`` and
        ``FSGN`` (the final count-sketch's output index and sign of each FDE coordinate;
        empty without ``final_dim``). What a GPU or other encoder needs to reproduce it."""
        out = {}
        for name, a in self._matrices.items():
            view = a.view()
            view.flags.writeable = False
            out[name] = view
        return out

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
        out.dim = as_int(dim, "dim", 1)
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


_STAGES = ("tokens", "fde")
# The token stage is built once the corpus holds this many tokens (below it the exhaustive
# search is about as fast, and too few tokens train no useful IVF).
STAGE_MIN_TOKENS = 32768


def token_stage_spec(dim: int, ntokens: int) -> str:
    """The token stage's IVF-PQ spec for a corpus of ntokens: the largest power of two up to
    1.5 sqrt(ntokens) lists (64 .. 8192) and 4-bit fast-scan codes of 4 dimensions per
    subquantizer. Measured on MiniLM tokens (520k tokens): 1,024 lists gave the recall of 2,048 with a
    cheaper stage, and 4 dimensions per code reached recall@10 0.95 with half the candidates
    of 8 dimensions per code."""
    nlist = 1 << int(np.clip(np.floor(np.log2(1.5 * np.sqrt(max(ntokens, 1)))), 6, 13))
    return f"IVF{nlist},PQ{_code_m(dim)}x4fs"


def _code_m(dim: int, dsub: int = 4) -> int:
    """Sub-quantizers of dsub dimensions each (fewer where dim is not a multiple of dsub)."""
    return dim // next(sub for sub in (dsub, 4, 2, 1) if dim % sub == 0)


@guarded
class MultiVectorIndex(Removable, Persistent):
    """Multi-vector retrieval: a cheap first stage picks candidates, exact Chamfer ranks them.

    ``add(tokens, offsets)`` stores every document's token vectors (in ``storage``: f32, f16,
    bf16, f8e4m3, f8e5m2 or i8; i8 and float8 with one global scale). ``search`` takes
    ``candidates`` (300) documents per query from the first stage and re-ranks the
    ``shortlist`` (64) best of them, by the token sketch below, by exact Chamfer similarity
    (sum over query tokens of the best document token's inner product); scores are Chamfer
    similarities, higher first; labels are the documents' ids (``add(..., ids=)``;
    default: positions in add order).

    First stages (``first_stage``):

    * ``"tokens"`` (default): every document token in an IVF-PQ fast-scan index labelled by
      its document (``index``: an ``index_factory`` spec; default ``token_stage_spec``, built
      and trained once the corpus reaches ``STAGE_MIN_TOKENS`` tokens). Each query token
      retrieves its ``token_hits`` (200) best document tokens; a document's estimate is the sum over
      query tokens of its best retrieved similarity, a query token that did not reach it
      counting that token's smallest retrieved similarity (XTR, Lee et al. 2023). Its cost
      follows the query's length like the exact score does, so short queries stay cheap; it
      holds about 57 bytes per 384-d token (96 bytes of 4-bit codes halved, the label, lists).
    * ``"fde"``: MUVERA fixed-dimensional encodings (``encoder``, 10,240 floats with the
      defaults) in an inner index (``index``; default "Flat(bf16)"; PQ/IVF specs are trained on
      the first add's FDEs). One vector per document, but a flat scan of it costs about as much
      as exact Chamfer on short queries.

    The token sketch: from ``STAGE_MIN_TOKENS`` tokens on, every stored token also has a 4-bit
    PQ code (8 dimensions per sub-quantizer from 256-d up, else 4; each document's codes in
    their own 32-code fast-scan blocks: about 1 KB per document of 29 384-d tokens). Of the
    ``candidates`` the first stage gives, the ``shortlist`` best by Chamfer estimated from
    these codes get the exact score; estimating a candidate costs about a sixth of scoring it
    exactly. Files saved before the sketch existed load without one and score every
    candidate exactly.

    ``exact=None`` (default) scores every document instead whenever that is estimated to be
    cheaper than the first stage plus the re-rank (small corpora, or before the token stage is
    built); ``exact=True`` always does (batched over the queries, GEMM speed: the ground
    truth), ``exact=False`` uses the first stage whenever there is one. On CPUs with AMX, bf16
    and i8 tokens are scored by AMX tiles.
    ``search(filter=...)``, ``remove``, ``contains`` and ``compact`` follow the engine contract
    of the dense indexes (see ``quanta.filter``).
    """

    def __init__(self, dim: int, k_sim: int = 5, d_proj: int | None = 16, r_reps: int = 20,
                 seed: int = 0, *, storage: Storage = "f32", first_stage: str = "tokens",
                 index: str | None = None, candidates: int = 300, token_hits: int = 200,
                 shortlist: int = 64, encoder: FDEEncoder | None = None, **encoder_options):
        self.storage = _choice("storage", storage, STORAGES)
        self.first_stage = _choice("first_stage", first_stage, _STAGES)
        self.candidates = as_int(candidates, "candidates", 1)
        self.token_hits = as_int(token_hits, "token_hits", 1)
        self.shortlist = as_int(shortlist, "shortlist", 1)
        if encoder is not None:
            if not isinstance(encoder, FDEEncoder):
                raise TypeError("encoder must be a quanta.FDEEncoder")
            if encoder.dim != dim:
                raise ValueError(f"encoder has dim {encoder.dim}, the index {dim}")
            self.encoder = encoder
        else:
            self.encoder = FDEEncoder(dim, k_sim, d_proj, r_reps, seed, **encoder_options)
        self.dim = self.encoder.dim
        if self.first_stage == "fde":
            self.index_spec = "Flat(bf16)" if index is None else index
            self._stage = index_factory(self.encoder.output_dim, self.index_spec, metric="ip")
        else:
            self.index_spec = index  # None: token_stage_spec when the stage is built
            if index is not None:  # a bad spec fails here, not at the add that builds it
                index_factory(self.dim, index, metric="ip")
            self._stage = None
        self._tokens = _core.TokenStore(self.dim, self.storage)

    ntotal = property(lambda self: self._tokens.ntotal, doc="Documents held (removed excluded).")
    ntokens = property(lambda self: self._tokens.ntokens, doc="Token vectors stored.")
    stage = property(lambda self: self._stage,
                     doc="The first stage's index (FDEs, or one token per row for "
                         "first_stage='tokens'); None until a token stage is built.")
    tokens = property(lambda self: self._tokens,
                      doc="The stored tokens (quanta.native TokenStore): codes(), offsets(), "
                          "ids(), removed(), scale. Read it; change the index through its "
                          "methods.")

    @property
    def memory_usage(self) -> int:
        """Bytes held: token codes, offsets and the first stage."""
        stage = 0 if self._stage is None else self._stage.memory_usage
        return int(self._tokens.memory_usage + stage)

    def memory_breakdown(self) -> dict:
        """Bytes by part: the stored tokens, their sketch and the first stage."""
        stage = 0 if self._stage is None else int(self._stage.memory_usage)
        sketch = int(self._tokens.sketch_bytes)
        return {"tokens": int(self._tokens.memory_usage) - sketch, "sketch": sketch,
                "first_stage": stage}

    def __repr__(self):
        return (f"MultiVectorIndex(dim={self.dim}, storage={self.storage!r}, "
                f"first_stage={self.first_stage!r}, index={self.index_spec!r}, "
                f"candidates={self.candidates}, token_hits={self.token_hits}, "
                f"shortlist={self.shortlist}, "
                f"ntotal={self.ntotal}, encoder={self.encoder!r})")

    def add(self, tokens, offsets=None, ids=None, *, threads: int = 0) -> None:
        """Adds documents (a ragged batch) with optional int64 `ids` (default: positions,
        continuing after the documents stored). Validates everything first: a failed call
        stores nothing."""
        x, off = as_token_sets(tokens, offsets, self.dim)
        threads = as_threads(threads)
        n = len(off) - 1
        given = None if ids is None else as_ids(ids, n)
        before = self._tokens.ndocs
        # The first stage is labelled with the same ids (explicit: its own default numbering
        # may differ once it drops removed entries).
        labels = np.arange(before, before + n, dtype=np.int64) if given is None else given
        if self.first_stage == "fde":
            rows = self.encoder._e.encode(x, off, True, self.encoder.fill_empty, threads)
        else:
            rows, labels = x, np.repeat(labels, np.diff(off))
        stage = self._stage
        if stage is not None and not stage.is_trained:
            stage.train(rows)
        self._tokens.add(x, off, given, threads)
        try:
            if self._tokens.sketch_m == 0 and self._tokens.ntokens >= STAGE_MIN_TOKENS:
                self._tokens.build_sketch(  # coarser codes pay on wide tokens
                    _code_m(self.dim, 8 if self.dim >= 256 else 4), self.encoder.seed, threads)
            if stage is not None:
                _add_in_slices(stage, rows, labels, threads)
            elif self._tokens.ntokens >= STAGE_MIN_TOKENS:
                self._stage = self._build_token_stage(x, labels, before, threads)
        except BaseException:  # keep the stores in step (truncating keeps a sketch built here)
            self._tokens.truncate(before)
            raise

    def _build_token_stage(self, x, labels, before, threads):
        """The token stage over the live documents stored before this add (decoded from their
        storage) and this add's tokens x (labelled per token)."""
        docs = np.flatnonzero(~removed_rows(self._tokens.removed(), before))
        if len(docs):
            ids = self._tokens.ids()
            old = np.asarray(docs, np.int64) if len(ids) == 0 else ids[docs]
            x = np.concatenate([self._tokens.tokens(int(i)) for i in docs] + [x])
            labels = np.concatenate(
                [np.repeat(old, np.diff(self._tokens.offsets())[docs]), labels])
        spec = self.index_spec or token_stage_spec(self.dim, len(x))
        stage = index_factory(self.dim, spec, metric="ip")
        # trained on a sample of 64 tokens per list (the stage only ranks candidates), drawn
        # here so that no copy of every token is made; added in slices for the same reason
        nlist = getattr(stage, "nlist", 256)
        rng = np.random.default_rng(self.encoder.seed)
        sample = x[np.sort(rng.choice(len(x), min(len(x), 64 * nlist), replace=False))]
        stage.train(sample, max_points_per_centroid=64, threads=threads)
        _add_in_slices(stage, x, labels, threads)
        if self.index_spec is None:  # recall@10 was flat from nlist / 256 to nlist / 32 lists
            stage.nprobe = min(stage.nlist, max(8, stage.nlist // 128))
        self.index_spec = spec
        return stage

    def remove(self, ids) -> int:
        """Removes the documents with these ids (array-like or ``quanta.Filter``); returns how
        many were held. Searches never return them; ``compact()`` frees their tokens."""
        removed = int(self._tokens.remove(as_removal(ids)))
        if self._stage is not None:
            self._stage.remove(ids)  # the same ids label the stage's rows
        return removed

    def compact(self) -> None:
        """Frees the removed documents' tokens and first-stage rows."""
        self._tokens.compact()
        if self._stage is not None:
            self._stage.compact()

    def contains(self, ids) -> np.ndarray:
        """Whether each id is held (bool array)."""
        return self._tokens.contains(np.ascontiguousarray(np.atleast_1d(ids), dtype=np.int64))

    def _use_exact(self, candidates: int, token_hits: int, shortlist: int) -> bool:
        """Whether scoring every document is estimated cheaper than the first stage and a
        re-rank of `candidates` documents. Both costs grow with the query's token count, so
        the choice depends on the corpus: per query token, the exhaustive search scores every
        stored token, the token stage pays a fixed cost, its probed lists, the sketch's
        estimate of the candidates and the exact score of the shortlist's tokens (constants
        measured on one AVX2 core, 384-d MiniLM tokens)."""
        if self.first_stage == "fde":
            return False
        ntok, ndocs = self._tokens.ntokens, max(self._tokens.ndocs, 1)
        scanned = ntok * getattr(self._stage, "nprobe", 1) / getattr(self._stage, "nlist", 1)
        rerank = candidates * ntok / ndocs * _RERANK_TOKEN_NS
        if self._tokens.sketch_m and shortlist < candidates:
            blocks = (ntok / ndocs + 31) // 32
            rerank = (candidates * blocks * _SKETCH_BLOCK_NS
                      + shortlist * ntok / ndocs * _RERANK_TOKEN_NS)
        stage = _STAGE_FIXED_NS + token_hits * _HIT_NS + scanned * _CODE_NS + rerank
        # below ~128 dimensions the exhaustive scan's cost per token stops shrinking (measured:
        # 5 ns per token at 48-d)
        return ntok * _EXACT_TOKEN_NS * max(self.dim, 128) / 384 <= stage

    def search(self, q_tokens, q_offsets=None, k: int = 10, *, candidates: int | None = None,
               exact: bool | None = None, token_hits: int | None = None,
               shortlist: int | None = None, merge_tau: float | None = None, threads: int = 0,
               filter=None, **inner) -> SearchResult:
        """Top-k documents by Chamfer similarity for each query of a ragged batch.

        candidates: documents taken from the first stage per query (default the index's
        ``candidates``); shortlist: how many of them are scored exactly, the best by the token
        sketch (default the index's; no narrowing before the sketch is built); token_hits:
        document tokens each query token retrieves (token stage; default the index's); exact:
        True scores every document, False uses the first stage whenever the index has one (the
        token stage is built at STAGE_MIN_TOKENS tokens), None picks the cheaper (see the class
        docstring); merge_tau: merge query tokens by ball carving (``merge_query_tokens``)
        before the re-rank; inner: passed to the first stage's
        search (e.g. ``nprobe``); filter: ids the queries may return (see ``quanta.filter``),
        applied in the first stage and again in the re-rank. Missing results (k > ntotal) are
        (-inf, -1).
        """
        q, q_off = as_token_sets(q_tokens, q_offsets, self.dim, "q_tokens")
        k, threads = as_k(k), as_threads(threads)
        if self.ntotal == 0:
            raise ValueError("search: the index is empty; add documents first")
        filters = as_filters(filter, len(q_off) - 1)
        nc = self.candidates if candidates is None else as_int(candidates, "candidates", 1)
        kn = native_k(k, self.ntotal)
        nc = max(nc, kn)
        kp = self.token_hits if token_hits is None else as_int(token_hits, "token_hits", 1)
        ns = self.shortlist if shortlist is None else as_int(shortlist, "shortlist", 1)
        ns = max(ns, kn)
        if exact or self._stage is None or (
                exact is None and not inner and self._use_exact(nc, kp, ns)):
            D, I = self._tokens.search(q, q_off, kn, threads, filters)
            return SearchResult(D, I).padded(k, "ip")
        if self.first_stage == "fde":
            fde = self.encoder._e.encode(q, q_off, False, False, threads)
            _, cand = self._stage.search(fde, nc, threads=threads, filter=filter, **inner)
        else:
            if filters is not None and is_per_query(filter):  # one filter per query token
                filter = [f for f, n in zip(filter, np.diff(q_off)) for _ in range(n)]
            hits = self._stage.search(q, kp, threads=threads, filter=filter, **inner)
            cand = _core.token_candidates(np.ascontiguousarray(hits.distances, np.float32),
                                          np.ascontiguousarray(hits.ids, np.int64), q_off, nc,
                                          threads)
        if merge_tau is not None:
            q, q_off = merge_query_tokens(q, q_off, float(merge_tau))
        D, I = self._tokens.rerank(q, q_off, np.ascontiguousarray(cand, np.int64), kn, threads,
                                   filters, ns)
        return SearchResult(D, I).padded(k, "ip")

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
        k = as_k(k)
        D, I = self._tokens.rerank(q, q_off, np.ascontiguousarray(cand, np.int64),
                                   native_k(k, self.ntotal), as_threads(threads), None)
        return SearchResult(D, I).padded(k, "ip")

    def document(self, i: int) -> np.ndarray:
        """The token vectors of the document at position i (add order, before any compact),
        as stored (decoded)."""
        return self._tokens.tokens(as_int(i, "i", 0, INT64_MAX))

    def fdes(self, tokens, offsets=None, *, queries: bool = False, threads: int = 0):
        """The MUVERA FDEs of a batch of documents (or queries) under this index's encoder."""
        enc = self.encoder
        return enc.encode_queries(tokens, offsets, threads=threads) if queries else \
            enc.encode_documents(tokens, offsets, threads=threads)

    def _write(self, f):
        meta = {"encoder": self.encoder._meta(), "storage": self.storage,
                "first_stage": self.first_stage, "index": self.index_spec,
                "candidates": self.candidates, "token_hits": self.token_hits,
                "shortlist": self.shortlist, "sketch_m": int(self._tokens.sketch_m),
                "scale": float(self._tokens.scale)}
        enc = {_ENC_TAGS[t]: a for t, a in self.encoder._matrices.items()}
        stage = {} if self._stage is None else {
            "FDEX": np.frombuffer(to_bytes(self._stage), np.uint8)}
        if self._tokens.sketch_m:
            stage.update(SKCE=self._tokens.sketch_centroids(), SKCO=self._tokens.sketch_codes())
        write_container(f, "MVIX", self.dim, self._tokens.ndocs, meta,
                        {"CODE": self._tokens.codes(), "OFFS": self._tokens.offsets(),
                         "IDS_": self._tokens.ids(), "DEAD": self._tokens.removed(),
                         **stage, **enc})

    maps_arrays = True  # quanta.load(path, mmap=True) serves tokens and the stage from the file

    @classmethod
    def _from_parts(cls, dim, ntotal, meta, arrays, source, mapped=False):
        try:
            enc = FDEEncoder._from_arrays(dim, meta["encoder"],
                                          {t: arrays[m] for t, m in _ENC_TAGS.items()})
            first = meta.get("first_stage", "fde")  # files before the token stage: FDEs
            out = cls(dim, storage=meta["storage"], first_stage=first, index=meta["index"],
                      candidates=meta["candidates"], token_hits=meta.get("token_hits", 400),
                      shortlist=meta.get("shortlist", 64), encoder=enc)
            codes = np.ascontiguousarray(arrays["CODE"])
            sketch_m = as_int(meta.get("sketch_m", 0), "sketch_m", 0)  # 0: files without one
            sketch = [np.ascontiguousarray(arrays[t]) if sketch_m else np.zeros(0, dt)
                      for t, dt in (("SKCE", np.float32), ("SKCO", np.uint8))]
            out._tokens.restore(codes, np.ascontiguousarray(arrays["OFFS"]), meta["scale"],
                                np.ascontiguousarray(arrays.get("IDS_", np.zeros(0, np.int64))),
                                removed_mask(arrays), borrow=mapped, sketch_m=sketch_m,
                                sketch_centroids=sketch[0], sketch_codes=sketch[1])
            out._keep = [codes, sketch[1]] if mapped else []
            # The first stage is a container inside this one: mapped, its arrays view the file.
            if "FDEX" in arrays:
                out._stage = from_buffer(arrays["FDEX"] if mapped else bytes(arrays["FDEX"]),
                                         source, mapped)
            elif first == "fde":
                raise ValueError("the FDE index is missing")
            if out._stage is not None and out._stage.dim != (
                    enc.output_dim if first == "fde" else dim):
                raise ValueError("the first stage's dimension does not match")
            if out._tokens.ndocs != ntotal or (
                    first == "fde" and out._stage.ntotal != out._tokens.ntotal):
                raise ValueError("document counts disagree")
            if first == "tokens" and out._stage is not None and \
                    out._stage.ntotal != out._tokens.ntokens - _removed_tokens(out._tokens):
                raise ValueError("token counts disagree")
        except (KeyError, TypeError, ValueError) as e:
            raise FormatError(f"{source}: not a valid MultiVectorIndex ({e})") from None
        return out


def _add_in_slices(stage, rows, labels, threads, step=1 << 18):
    """stage.add in slices of `step` rows: a corpus of millions of tokens is never copied
    whole (float32 tokens of 200k documents are 8 GB). A failed slice takes the earlier ones
    back out, so the stage and the token store stay in step."""
    for s in range(0, len(rows), step):
        try:
            stage.add(rows[s:s + step], labels[s:s + step], threads=threads)
        except BaseException:
            if s:
                stage.remove(np.unique(labels[:s]))
            raise


# Per query token, in ns (see _use_exact): measured with bench.multivector on 20k-200k real
# documents, one AVX2 core.
_STAGE_FIXED_NS = 100_000   # coarse search of the lists, tables, the query's bookkeeping
_HIT_NS = 20                # collecting one retrieved token
_CODE_NS = 2.0              # one 4-bit fast-scan code
_RERANK_TOKEN_NS = 25.0     # one candidate token in the exact re-rank (gathered rows)
_SKETCH_BLOCK_NS = 50.0     # one candidate's block of 32 sketch codes (48 sub-quantizers)
_EXACT_TOKEN_NS = 15.0      # one stored token in the exhaustive search (GEMM), at 384-d


def _removed_tokens(store) -> int:
    """Tokens of the removed documents still stored."""
    return int(np.diff(store.offsets())[removed_rows(store.removed(), store.ndocs)].sum())


register_kind("MVIX", MultiVectorIndex)
