"""Product quantization: the PQ codec and the flat PQ index (ADC, optional SDC)."""
from __future__ import annotations

import numpy as np

from . import _core
from ._mutable import Removable
from ._rwlock import guarded
from ._types import Metric, Storage
from ._validate import (as_f32_matrix, as_ids, as_int, as_k, as_nprobe, as_radius, as_seed,
                        as_threads, native_k, reconstruct_ids)
from .filter import as_filters
from .flat import METRICS, FlatIndex, RangeResult, SearchResult, removed_mask
from .io import FormatError, Persistent, register_kind, write_container
from .opq import train_rotation


class _QuantizedIndex(Removable):
    """What the PQ and binary indexes share: the native index of the codes in ``_index``,
    add / reset, and the optional exact re-ranking: the vectors are also kept in a FlatIndex
    of storage ``refine`` (any foundation storage), the base index returns
    ``k * refine_factor`` candidates and they are re-scored exactly against those vectors.
    With ``opq=True`` the native index codes ``x @ rotation`` (see ``quanta.opq``); the
    re-ranking vectors and everything returned stay in the caller's space.

    The stages are native wrappers around ``_index`` (``_core.PreTransformIndex`` for the
    rotation, ``_core.RefineIndex`` for the re-ranking): ``_coded`` is the codes' index in
    the caller's space, ``_top`` the whole chain that add / search / remove go through."""

    metric = property(lambda self: self._index.metric)
    ntotal = property(lambda self: self._index.ntotal)
    is_trained = property(lambda self: self._index.is_trained)
    memory_usage = property(lambda self: self._top.memory_usage,
                            doc="bytes held: codes, the rotation and the re-ranking vectors")

    def __len__(self):
        return self.ntotal

    def add(self, x, ids=None, *, threads: int = 0) -> None:
        """Adds vectors (n, dim) with optional int64 ids (default: positions). Needs train."""
        if not self.is_trained:
            raise ValueError("add: the index is not trained; call train(x) first")
        x = as_f32_matrix(x, self.dim, "x")
        ids = None if ids is None else as_ids(ids, x.shape[0])
        self._top.add(x, ids, as_threads(threads))

    opq = property(lambda self: self._opq, doc="whether an OPQ rotation precedes the codes")
    rotation = property(lambda self: self._rotation,
                        doc="the learned OPQ rotation R (dim, dim), codes are of x @ R; or None")

    def _set_stages(self, rotation, refine):
        """Installs the OPQ rotation and the re-ranking index, and the native chain over them."""
        self._rotation, self._refine = rotation, refine
        self._coded = self._index if rotation is None else \
            _core.PreTransformIndex(rotation, self._index)
        self._top = self._coded if refine is None else \
            _core.RefineIndex(self._coded, refine._index, self._refine_factor)

    def _fit_rotation(self, x, seed, threads):
        """Learns the OPQ rotation (when opq is set) and returns x in the coded space."""
        if not self._opq:
            return x
        self._set_stages(train_rotation(x, self.m, self.nbits, seed=seed, threads=threads),
                         self._refine)
        return self._coded.apply(x, threads)

    @property
    def native(self):
        """The native index searched (``quanta._core``): the codes' index, wrapped by a
        ``PreTransformIndex`` (OPQ) and a ``RefineIndex`` (re-ranking) when present. For
        embedding and for the GPU module; its methods take checked arguments only."""
        return self._top

    def _search_chain(self, q, k, threads, filters, params):
        """Searches the chain: the family's scan with its `params`, then the re-ranking."""
        if self._refine is not None:  # the chain's k_factor is refine_factor
            outer = _core.RefineSearchParams()
            outer.base = params
            params = outer
        return SearchResult(*self._top.search(q, k, threads, filters, params))

    def reset(self) -> None:
        """Removes all vectors (keeps the trained quantizers)."""
        self._top.reset()

    def _require_empty(self):
        """train() on a populated index would leave its stored codes meaning nothing."""
        rows = getattr(self._index, "rows", self._index.ntotal)
        if rows:
            raise ValueError(f"train: the index holds {rows} vectors coded by the current "
                             "quantizer; call reset() first (or train a new index)")

    def _removal_targets(self):  # the chain removes the re-ranking vectors with the codes
        return [self._top]

    def _init_refine(self, dim, metric, refine, refine_factor, opq=False):
        self._opq = bool(opq)
        self.refine_factor = refine_factor
        self._set_stages(None, None if refine is None else FlatIndex(dim, metric, refine))

    @property
    def refine_factor(self) -> int:
        """Candidates re-ranked per result (k * refine_factor); used when refine is set."""
        return self._refine_factor

    @refine_factor.setter
    def refine_factor(self, value):
        self._refine_factor = as_int(value, "refine_factor", 1)
        if getattr(self, "_refine", None) is not None:
            self._top.k_factor = self._refine_factor

    def _refine_repr(self) -> str:
        """The re-ranking part of a repr ("" without re-ranking)."""
        if self._refine is None:
            return ""
        return f", refine={self.refine!r}, refine_factor={self.refine_factor}"

    refine = property(lambda self: None if self._refine is None else self._refine.storage,
                      doc="storage of the re-ranking vectors, or None")

    def _train_refine(self, x):
        if self._refine is not None and not self._refine.is_trained:
            self._refine.train(x)

    def _extra_parts(self):
        """What the re-ranking stage and the rotation add to a saved index."""
        rot = {} if self._rotation is None else {"ROTM": self._rotation}
        if self._refine is None:
            return {"opq": self._opq}, rot
        st = self._refine._index.state()
        meta = {"opq": self._opq,
                "refine": {"storage": self._refine.storage, "f8_scale": self._refine.f8_scale,
                           "f8_rounding": self._refine.f8_rounding,
                           "global_scale": st["global_scale"], "factor": self.refine_factor,
                           "rows": self._refine._index.rows}}
        arrays = {"RCOD": st["codes"], "RVSC": st["vector_scale"], "RNRM": st["sq_norms"],
                  "RDSC": st["dim_scale"], "RIDS": st["ids"], "RDED": st["removed"], **rot}
        return meta, arrays

    def _restore_extra(self, meta, arrays, ntotal, mapped=False):
        """The rotation and the re-ranking vectors; mapped: the vectors are views of the
        file (kept alive in ``_keep``), as a mapped FlatIndex's."""
        r, refine = meta.get("refine"), None
        if r is not None:
            refine = FlatIndex(self.dim, self.metric, r["storage"], f8_scale=r["f8_scale"],
                               f8_rounding=r["f8_rounding"])
            self.refine_factor = int(r["factor"])
            parts = [np.ascontiguousarray(arrays[t]) for t in ("RCOD", "RVSC", "RNRM", "RDSC", "RIDS")]
            refine._index.restore(*parts, float(r["global_scale"]), int(r.get("rows", ntotal)),
                                  removed_mask(arrays, "RDED"), borrow=mapped)
            if mapped:
                self._keep = getattr(self, "_keep", []) + parts
        self._set_stages(_rotation_from(arrays, self.dim), refine)


class _PQCodesIndex(_QuantizedIndex):
    """What the PQ indexes add: their product quantizer and decoding, range search."""

    def _range(self, q, radius, threads, filter, params=None):
        """Range search of the codes' index (the re-ranking vectors are not used)."""
        if not self.is_trained:
            raise ValueError("range_search: the index is not trained; call train(x) first")
        q = as_f32_matrix(q, self.dim, "queries")
        return RangeResult(*self._coded.range_search(q, as_radius(radius), as_threads(threads),
                                                     as_filters(filter, q.shape[0]), params))

    def reconstruct(self, ids) -> np.ndarray:
        """The decoded vectors for `ids`, shape (len(ids), dim)."""
        return reconstruct_ids(self._coded, ids)

    @property
    def pq(self):
        """The product quantizer (a copy of its codebook and rotation; for IVF it codes
        residuals)."""
        out = PQ(self.dim, self.m, self.nbits, opq=self.opq)
        if self._index.pq().is_trained:
            out._pq.set_centroids(self._index.pq().centroids())
        out._rotation = self._rotation
        return out


class _Probed:
    """The IVF indexes' default nprobe: an integer in [1, nlist], checked when set (a bad
    value fails here, not in a later search or in a saved file). It starts at nlist / 32 (at
    least 1): faiss starts at 1, which on MiniLM embeddings with 1,024 lists (PQ96x4fs) gives
    recall@10 0.40 where 32 lists give 0.68 (0.86 re-ranked from f16 vectors with the default
    refine_factor, 0.94 with SOAR as well)."""

    @staticmethod
    def default_nprobe(nlist: int) -> int:
        return max(1, int(nlist) // 32)

    @property
    def nprobe(self) -> int:
        return self._nprobe

    @nprobe.setter
    def nprobe(self, value) -> None:
        self._nprobe = as_nprobe(value, self.nlist)


def _ivf_params(nprobe):
    params = _core.IVFSearchParams()
    params.nprobe = int(nprobe)
    return params


def searchable_together(index) -> bool:
    """Whether `index` can be a part of IVFPQIndex.search_together: fast-scan IVF-PQ codes
    searched alone (no OPQ, no re-ranking stage around them)."""
    return isinstance(index, IVFPQIndex) and index.fast_scan and index._top is index._index


def _coarse_arrays(coarse, nq, nlist):
    """(distances float32, lists int64) of a search's `coarse` argument, checked."""
    if not (isinstance(coarse, tuple) and len(coarse) == 2):
        raise TypeError("coarse must be the (distances, lists) pair coarse_search returns")
    cd, cl = np.asarray(coarse[0]), np.asarray(coarse[1])
    if cl.dtype.kind not in "iu" or cd.dtype.kind != "f":
        raise TypeError(f"coarse: distances must be floats and lists integers; got "
                        f"{cd.dtype} and {cl.dtype}")
    if cl.ndim != 2 or cl.shape[0] != nq or cd.shape != cl.shape or cl.shape[1] < 1:
        raise ValueError(f"coarse: distances and lists must both be ({nq}, nprobe); got "
                         f"{cd.shape} and {cl.shape}")
    if cl.size and (cl.min() < 0 or cl.max() >= nlist):
        raise ValueError(f"coarse: lists must be in [0, nlist={nlist})")
    return (np.ascontiguousarray(cd, np.float32), np.ascontiguousarray(cl, np.int64))


def _rotation_from(arrays, dim):
    if "ROTM" not in arrays:
        return None
    r = np.ascontiguousarray(arrays["ROTM"], np.float32)
    if r.shape != (dim, dim) or not np.isfinite(r).all():
        raise ValueError(f"the OPQ rotation must be a finite ({dim}, {dim}) matrix")
    return r


def _check_shape(dim, m, nbits):
    for name, v in (("dim", dim), ("m", m), ("nbits", nbits)):
        as_int(v, name, 0)
    if dim < 1 or m < 1 or dim % m:
        raise ValueError(f"dim ({dim}) must be a positive multiple of m ({m})")
    if nbits not in (4, 8):
        raise ValueError(f"nbits must be 4 or 8; got {nbits}")


def _check_fast_scan(fast_scan, m, nbits):
    if fast_scan and nbits != 4:
        raise ValueError(f"fast_scan needs nbits=4; got {nbits}")
    if fast_scan and m > 256:
        raise ValueError(f"fast_scan supports m <= 256; got {m}")


def _train_args(niter, seed, max_points_per_centroid, threads):
    return (as_int(niter, "niter"), as_seed(seed),
            as_int(max_points_per_centroid, "max_points_per_centroid"), as_threads(threads))


class PQ(Persistent):
    """Product quantizer: ``dim`` splits into ``m`` sub-vectors, each coded with ``nbits``
    (4 or 8) bits by its own k-means codebook. Codes are uint8 arrays of ``code_size`` bytes
    per vector (8 bits: one byte per sub-vector; 4 bits: two per byte, low nibble first).

    >>> pq = quanta.PQ(128, m=16, nbits=8); pq.train(x)
    >>> codes = pq.encode(x); x_hat = pq.decode(codes)
    >>> tables = pq.compute_distance_tables(q)        # (nq, m, 2**nbits), for your own scans

    ``opq=True`` learns an orthogonal rotation first (OPQ, see ``quanta.opq``): codes are of
    ``x @ pq.rotation``, ``decode`` rotates back, and the tables take unrotated queries.
    """

    def __init__(self, dim: int, m: int, nbits: int = 8, *, opq: bool = False):
        _check_shape(dim, m, nbits)
        self._pq = _core.PQ(int(dim), int(m), int(nbits))
        self._opq, self._rotation = bool(opq), None

    dim = property(lambda self: self._pq.dim)
    m = property(lambda self: self._pq.m)
    nbits = property(lambda self: self._pq.nbits)
    ksub = property(lambda self: self._pq.ksub, doc="centroids per sub-space (2**nbits)")
    dsub = property(lambda self: self._pq.dsub, doc="dimensions per sub-vector")
    code_size = property(lambda self: self._pq.code_size, doc="bytes per code")
    is_trained = property(lambda self: self._pq.is_trained)

    @property
    def centroids(self) -> np.ndarray:
        """The codebooks, shape (m, ksub, dsub)."""
        return self._pq.centroids().reshape(self.m, self.ksub, self.dsub)

    opq = property(lambda self: self._opq, doc="whether an OPQ rotation precedes the codes")
    rotation = property(lambda self: self._rotation,
                        doc="the learned OPQ rotation R (dim, dim): codes are of x @ R; or None")

    def __repr__(self):
        opq = ", opq=True" if self.opq else ""
        return (f"PQ(dim={self.dim}, m={self.m}, nbits={self.nbits}{opq}, "
                f"trained={self.is_trained})")

    def _rotated(self, x):
        return x if self._rotation is None else np.ascontiguousarray(x @ self._rotation)

    def train(self, x, *, niter: int = 25, seed: int = 0, max_points_per_centroid: int = 256,
              threads: int = 0) -> None:
        """k-means in every sub-space (seed + j for sub-space j); needs >= 2**nbits rows."""
        x = as_f32_matrix(x, self.dim, "x")
        if x.shape[0] < self.ksub:
            raise ValueError(f"train: {x.shape[0]} vectors; need at least {self.ksub}")
        args = _train_args(niter, seed, max_points_per_centroid, threads)
        if self._opq:
            self._rotation = train_rotation(x, self.m, self.nbits, seed=args[1], threads=args[3])
        self._pq.train(self._rotated(x), *args)

    def _trained(self):
        if not self.is_trained:
            raise ValueError("the quantizer is not trained; call train(x) first")

    def encode(self, x, *, threads: int = 0) -> np.ndarray:
        self._trained()
        return self._pq.encode(self._rotated(as_f32_matrix(x, self.dim, "x")), as_threads(threads))

    def decode(self, codes) -> np.ndarray:
        self._trained()
        codes = np.asarray(codes)
        if codes.dtype != np.uint8:
            raise TypeError(f"codes must be uint8; got {codes.dtype}")
        if codes.ndim == 1:
            codes = codes[None, :]
        out = self._pq.decode(np.ascontiguousarray(codes))
        return out if self._rotation is None else out @ self._rotation.T

    def compute_distance_tables(self, q, metric: str = "l2") -> np.ndarray:
        """ADC tables (nq, m, ksub): |q_j - c_jk|^2 for "l2", <q_j, c_jk> for "ip" (q_j: the
        sub-vectors of the rotated query when opq is set). The ADC distance of a code is the sum
        over j of table[j, code_j]."""
        self._trained()
        if metric not in ("l2", "ip"):
            raise ValueError(f"metric must be 'l2' or 'ip'; got {metric!r}")
        q = self._rotated(as_f32_matrix(q, self.dim, "queries"))
        return self._pq.distance_tables(q, metric == "l2")

    def compute_sdc_table(self, metric: str = "l2") -> np.ndarray:
        """SDC tables (m, ksub, ksub) between the centroids of every sub-space."""
        self._trained()
        if metric not in ("l2", "ip"):
            raise ValueError(f"metric must be 'l2' or 'ip'; got {metric!r}")
        return self._pq.sdc_tables(metric == "l2")

    # persistence: the codebook travels in the same container as the indexes
    def _write(self, f):
        rot = {} if self._rotation is None else {"ROTM": self._rotation}
        write_container(f, "PQ__", self.dim, 0, {"m": self.m, "nbits": self.nbits, "opq": self.opq},
                        {"CENT": self._pq.centroids() if self.is_trained else np.zeros(0, np.float32),
                         **rot})

    @classmethod
    def _from_parts(cls, dim, ntotal, meta, arrays, source):
        try:
            pq = cls(dim, meta["m"], meta["nbits"], opq=bool(meta.get("opq", False)))
            if arrays["CENT"].size:
                pq._pq.set_centroids(np.ascontiguousarray(arrays["CENT"], dtype=np.float32))
            pq._rotation = _rotation_from(arrays, dim)
        except (KeyError, TypeError, ValueError) as e:
            raise FormatError(f"{source}: not a valid PQ ({e})") from None
        return pq



@guarded
class PQIndex(_PQCodesIndex, Persistent):
    """Flat product-quantization index: ``m`` sub-quantizers of ``nbits`` (4 or 8) bits, so
    ``m * nbits / 8`` bytes per vector, searched with ADC lookup tables (the query stays
    float; ``sdc=True`` encodes it too). Distances are to the reconstructed vectors: squared
    L2 for "l2", inner products for "ip" and "cosine". Needs ``train`` before ``add``.

    ``fast_scan=True`` (4-bit codes, m <= 256; factory "PQ<m>x4fs") stores codes in blocks of
    32 vectors and scans them with uint8 lookup tables held in SIMD registers; distances are
    then estimates from the quantized tables (their error is at most m/2 table steps).
    """

    def __init__(self, dim: int, m: int, nbits: int = 8, metric: Metric = "ip", *,
                 fast_scan: bool = False, opq: bool = False, refine: Storage | None = None,
                 refine_factor: int = 4):
        _check_shape(dim, m, nbits)
        if metric not in METRICS:
            raise ValueError(f"metric must be one of {METRICS}; got {metric!r}")
        _check_fast_scan(fast_scan, m, nbits)
        if fast_scan:
            self._index = _core.PQFastScanIndex(int(dim), int(m), metric)
        else:
            self._index = _core.PQIndex(int(dim), int(m), int(nbits), metric)
        self._dim, self._m, self._nbits = int(dim), int(m), int(nbits)
        self._fast_scan = bool(fast_scan)
        self._init_refine(int(dim), metric, refine, refine_factor, opq)

    dim = property(lambda self: self._dim)
    m = property(lambda self: self._m)
    nbits = property(lambda self: self._nbits)
    code_size = property(lambda self: (self._m * self._nbits + 7) // 8)
    fast_scan = property(lambda self: self._fast_scan)

    def __repr__(self):
        fs = (", fast_scan=True" if self.fast_scan else "") + (", opq=True" if self.opq else "")
        return (f"PQIndex(dim={self.dim}, m={self.m}, nbits={self.nbits}, "
                f"metric={self.metric!r}{fs}{self._refine_repr()}, ntotal={self.ntotal})")


    def train(self, x, *, niter: int = 25, seed: int = 0, max_points_per_centroid: int = 256,
              threads: int = 0) -> None:
        self._require_empty()
        x = as_f32_matrix(x, self.dim, "x")
        if x.shape[0] < 2 ** self.nbits:
            raise ValueError(f"train: {x.shape[0]} vectors; need at least {2 ** self.nbits}")
        args = _train_args(niter, seed, max_points_per_centroid, threads)
        niter, seed, mppc, threads = args
        self._index.train(self._fit_rotation(x, seed, threads),
                          _core.TrainParams(niter=niter, seed=seed,
                                            max_points_per_centroid=mppc, threads=threads))
        self._train_refine(x)

    def search(self, q, k: int = 10, *, threads: int = 0, filter=None,
               sdc: bool = False) -> SearchResult:
        """The k best codes of each query (re-ranked exactly when ``refine`` is set).

        filter: ids the queries may return (see ``quanta.filter``); a filter shared by every
        query scans only the allowed codes.
        """
        if not self.is_trained:
            raise ValueError("search: the index is not trained; call train(x) first")
        q = as_f32_matrix(q, self.dim, "queries")
        k, threads = as_k(k), as_threads(threads)
        filters = as_filters(filter, q.shape[0])
        if self.fast_scan and sdc:
            raise ValueError("sdc=True is not available with fast_scan")

        params = _core.PQSearchParams()
        params.sdc = bool(sdc)
        kn = native_k(k, self.ntotal)
        result = self._search_chain(q, kn, threads, filters, params)
        return result if kn == k else result.padded(k, self.metric)

    def range_search(self, q, radius: float, *, threads: int = 0, filter=None) -> RangeResult:
        """Every vector whose code is within `radius` of each query (l2: distance < radius;
        ip / cosine: inner product > radius), best first. Fast-scan codes use their
        distance estimates."""
        return self._range(q, radius, threads, filter)

    def _write(self, f):
        cent = self._index.pq().centroids() if self.is_trained else np.zeros(0, np.float32)
        rmeta, rarrays = self._extra_parts()
        # Fast-scan codes are saved in their block layout, so a mapped file is scanned in place.
        codes = self._index.blocks() if self.fast_scan else self._index.codes()
        write_container(f, "PQIX", self.dim, self._index.rows,
                        {"m": self.m, "nbits": self.nbits, "metric": self.metric,
                         "fast_scan": self.fast_scan, "code_layout": "stored", **rmeta},
                        {"CENT": cent, "CODE": codes, "IDS_": self._index.ids(),
                         "DEAD": self._index.removed(), **rarrays})

    maps_arrays = True  # quanta.load(path, mmap=True) scans the mapped codes in place

    @classmethod
    def _from_parts(cls, dim, ntotal, meta, arrays, source, mapped=False):
        try:
            index = cls(dim, meta["m"], meta["nbits"], meta["metric"],
                        fast_scan=bool(meta.get("fast_scan", False)),
                        opq=bool(meta.get("opq", False)))
            if arrays["CENT"].size:
                index._index.pq().set_centroids(np.ascontiguousarray(arrays["CENT"], np.float32))
            codes = np.ascontiguousarray(arrays["CODE"])
            ids = np.ascontiguousarray(arrays["IDS_"])
            if not index.fast_scan:
                index._index.restore(codes, ids, ntotal, removed_mask(arrays), borrow=mapped)
            elif meta.get("code_layout") == "stored":
                index._index.restore_blocks(codes, ids, ntotal, removed_mask(arrays), mapped)
            else:  # older files: plain codes, packed here
                index._index.restore(codes, ids, ntotal, removed_mask(arrays))
            index._keep = [codes] if mapped else []
            index._restore_extra(meta, arrays, ntotal, mapped)
        except (KeyError, TypeError, ValueError) as e:
            raise FormatError(f"{source}: not a valid PQIX index ({e})") from None
        return index



register_kind("PQ__", PQ)
register_kind("PQIX", PQIndex)


@guarded
class IVFPQIndex(_Probed, _PQCodesIndex, Persistent):
    """IVF-PQ: ``nlist`` inverted lists from a coarse k-means; each vector stored as a PQ code
    (``m`` x ``nbits``). ``search`` visits the ``nprobe`` closest lists (``index.nprobe`` by
    default: nlist / 32 to start, at least 1). Distances are to the reconstructions: squared
    L2 for "l2", inner products for "ip" / "cosine".

    ``fast_scan=True`` (4-bit codes, m <= 256; factory "IVF<nlist>,PQ<m>x4fs") keeps each list
    in blocks of 32 codes scanned with uint8 tables in SIMD registers; a query's tables for all
    its probed lists share one quantization scale, and distances are estimates from them.

    ``by_residual``: whether the codes are of the residuals to the list centroids (the default
    for 8-bit codes, as faiss's IndexIVFPQ) or of the vectors themselves (the default with
    ``fast_scan``, as faiss's IndexIVFPQFastScan: one table per query serves every list; on
    MiniLM embeddings it gave higher recall at every nprobe and twice the speed).

    ``soar=True`` (factory "IVF<nlist>(soar),...") also stores each vector in a second list
    chosen by SOAR (ScaNN's spilled assignment: the list where its residual is most orthogonal
    to its first residual); searches return each vector once. Twice the codes and ids, for
    about a quarter of the lists at recall 0.95 on MiniLM embeddings.
    """

    def __init__(self, dim: int, nlist: int, m: int, nbits: int = 8, metric: Metric = "ip", *,
                 fast_scan: bool = False, by_residual: bool | None = None, soar: bool = False,
                 opq: bool = False, refine: Storage | None = None, refine_factor: int = 4):
        _check_shape(dim, m, nbits)
        as_int(nlist, "nlist", 1)
        if metric not in METRICS:
            raise ValueError(f"metric must be one of {METRICS}; got {metric!r}")
        _check_fast_scan(fast_scan, m, nbits)
        if by_residual is None:
            by_residual = not fast_scan
        self._index = _core.IVFPQIndex(int(dim), int(nlist), int(m), int(nbits), metric,
                                       bool(fast_scan), bool(by_residual), bool(soar))
        self._fast_scan = bool(fast_scan)
        self._dim, self._nlist, self._m, self._nbits = int(dim), int(nlist), int(m), int(nbits)
        self.nprobe = self.default_nprobe(nlist)
        self._init_refine(int(dim), metric, refine, refine_factor, opq)

    dim = property(lambda self: self._dim)
    nlist = property(lambda self: self._nlist)
    m = property(lambda self: self._m)
    nbits = property(lambda self: self._nbits)
    fast_scan = property(lambda self: self._fast_scan)
    by_residual = property(lambda self: self._index.by_residual,
                           doc="whether the codes are of residuals (else of the vectors)")
    soar = property(lambda self: self._index.soar,
                    doc="whether each vector is also stored in a second list (SOAR)")

    @property
    def coarse_centroids(self) -> np.ndarray:
        """The list centroids, shape (nlist, dim) (empty before training)."""
        c = self._index.coarse_centroids().reshape(-1, self.dim)
        return c if self._rotation is None else c @ self._rotation.T

    def __repr__(self):
        fs = (", fast_scan=True" if self.fast_scan else "") + (", opq=True" if self.opq else "") \
            + f", by_residual={self.by_residual}" + (", soar=True" if self.soar else "")
        return (f"IVFPQIndex(dim={self.dim}, nlist={self.nlist}, m={self.m}, nbits={self.nbits}, "
                f"metric={self.metric!r}{fs}{self._refine_repr()}, nprobe={self.nprobe}, "
                f"ntotal={self.ntotal})")

    def train(self, x, *, coarse_niter: int = 10, niter: int = 25, seed: int = 0,
              max_points_per_centroid: int = 256, threads: int = 0) -> None:
        """Coarse k-means (coarse_niter iterations), then PQ k-means on the residuals."""
        self._require_empty()
        x = as_f32_matrix(x, self.dim, "x")
        need = max(self.nlist, 2 ** self.nbits)
        if x.shape[0] < need:
            raise ValueError(f"train: {x.shape[0]} vectors; need at least {need}")
        coarse_niter = as_int(coarse_niter, "coarse_niter")
        niter, seed, mppc, threads = _train_args(niter, seed, max_points_per_centroid, threads)
        self._index.train(self._fit_rotation(x, seed, threads),
                          _core.TrainParams(niter=niter, coarse_niter=coarse_niter, seed=seed,
                                            max_points_per_centroid=mppc, threads=threads))
        self._train_refine(x)

    def coarse_search(self, q, nprobe: int | None = None, *, threads: int = 0) -> SearchResult:
        """The coarse step alone: each query's nprobe closest lists (``ids``, best first) and
        their coarse scores (``distances``: squared L2 for l2, inner products otherwise), as
        faiss's ``index.quantizer.search``. Indexes trained from the same state (the shards
        of ``quanta.distributed``) share their lists: one coarse step serves them all
        through ``search(..., coarse=)``."""
        if not self.is_trained:
            raise ValueError("coarse_search: the index is not trained; call train(x) first")
        nprobe = as_nprobe(self.nprobe if nprobe is None else nprobe, self.nlist)
        q = as_f32_matrix(q, self.dim, "queries")
        if self._rotation is not None:  # the lists live in the codes' (rotated) space
            q = self._coded.apply(q, as_threads(threads))
        return SearchResult(*self._index.coarse_search(q, nprobe, as_threads(threads)))

    def search(self, q, k: int = 10, *, nprobe: int | None = None, threads: int = 0,
               filter=None, coarse=None) -> SearchResult:
        """The k best codes among each query's nprobe closest lists (re-ranked exactly when
        ``refine`` is set).

        filter: ids the queries may return (see ``quanta.filter``). A query its filter leaves
        with fewer than k results is searched again with twice the lists, up to all of them;
        a filter allowing few ids (at most 1/16 of the codes nprobe lists hold) is served by
        scoring the allowed vectors directly, every list alike.
        coarse: the (distances, lists) of ``coarse_search`` for these queries (nq x nprobe;
        nprobe from their shape), from this index or one trained from the same state, used
        instead of this index's own coarse step (faiss's ``search_preassigned``).
        """
        q, params = self._probe(q, nprobe, coarse)
        k, threads = as_k(k), as_threads(threads)
        kn = native_k(k, self.ntotal)
        result = self._search_chain(q, kn, threads, as_filters(filter, q.shape[0]), params)
        return result if kn == k else result.padded(k, self.metric)

    def _probe(self, q, nprobe, coarse):
        """The checked queries and the search parameters of nprobe lists, or of the given
        coarse step (search's `coarse`)."""
        if not self.is_trained:
            raise ValueError("search: the index is not trained; call train(x) first")
        q = as_f32_matrix(q, self.dim, "queries")
        if coarse is not None:
            cd, cl = _coarse_arrays(coarse, q.shape[0], self.nlist)
            if nprobe is not None and nprobe != cl.shape[1]:
                raise ValueError(f"nprobe={nprobe} but coarse holds {cl.shape[1]} lists per "
                                 f"query")
            nprobe = cl.shape[1]
        params = _ivf_params(as_nprobe(self.nprobe if nprobe is None else nprobe, self.nlist))
        if coarse is not None:
            params.set_coarse(cd, cl)
        return q, params

    def search_together(self, others, q, k: int = 10, *, nprobe: int | None = None,
                        threads: int = 0, coarse=None) -> SearchResult:
        """This index and `others` (IVF-PQ fast-scan indexes trained from the same state,
        as the shards of ``quanta.distributed.build_sharded``; no OPQ or re-ranking stage)
        searched as one index holding all their vectors: each probed list is scanned in
        every part under one heap per query, so the results are a single index's. No
        filter (search each part with it and merge instead)."""
        parts = [self] + list(others)
        if not all(map(searchable_together, parts)):
            raise TypeError("search_together: fast-scan IVFPQIndex parts without OPQ or "
                            "re-ranking only")
        q, params = self._probe(q, nprobe, coarse)
        k = as_k(k)
        kn = native_k(k, sum(p.ntotal for p in parts))
        return SearchResult(*self._index.search_parts([p._index for p in parts[1:]], q, kn,
                                                      as_threads(threads), params)
                            ).padded(k, self.metric)

    def range_search(self, q, radius: float, *, nprobe: int | None = None, threads: int = 0,
                     filter=None) -> RangeResult:
        """Every code within `radius` among each query's nprobe closest lists (l2: distance
        < radius; ip / cosine: inner product > radius), best first."""
        nprobe = as_nprobe(self.nprobe if nprobe is None else nprobe, self.nlist)
        return self._range(q, radius, threads, filter, _ivf_params(nprobe))

    def _write(self, f):
        st = self._index.state(with_codes=False)
        rmeta, rarrays = self._extra_parts()
        cent = self._index.pq().centroids() if self.is_trained else np.zeros(0, np.float32)
        write_container(f, "IVPQ", self.dim, self.ntotal,
                        {"nlist": self.nlist, "m": self.m, "nbits": self.nbits,
                         "metric": self.metric, "nprobe": self.nprobe,
                         "fast_scan": self.fast_scan, "by_residual": self.by_residual,
                         "soar": self.soar,
                         "code_layout": "stored", **rmeta},
                        {"CENT": cent, "COAR": st["centroids"], "SIZE": st["sizes"],
                         "CODE": self._index.stored_codes(), "IDS_": st["ids"], **rarrays})

    maps_arrays = True  # quanta.load(path, mmap=True) scans the mapped lists in place

    @classmethod
    def _from_parts(cls, dim, ntotal, meta, arrays, source, mapped=False):
        try:
            index = cls(dim, meta["nlist"], meta["m"], meta["nbits"], meta["metric"],
                        fast_scan=bool(meta.get("fast_scan", False)),
                        by_residual=bool(meta.get("by_residual", True)),
                        soar=bool(meta.get("soar", False)),
                        opq=bool(meta.get("opq", False)))
            index.nprobe = int(meta.get("nprobe", 1))
            if arrays["CENT"].size:
                index._index.pq().set_centroids(np.ascontiguousarray(arrays["CENT"], np.float32))
            # Lists saved as they sit in memory (fast-scan blocks) can be views of a mapped
            # file; older files hold plain codes, packed again here.
            parts = [np.ascontiguousarray(arrays[t]) for t in ("COAR", "SIZE", "CODE", "IDS_")]
            index._index.restore(*parts, stored=meta.get("code_layout") == "stored",
                                 borrow=mapped)
            index._keep = parts[2:] if mapped else []
            if index.ntotal != ntotal:
                raise ValueError("ntotal does not match the lists")
            index._restore_extra(meta, arrays, ntotal, mapped)
        except (KeyError, TypeError, ValueError) as e:
            raise FormatError(f"{source}: not a valid IVPQ index ({e})") from None
        return index


register_kind("IVPQ", IVFPQIndex)
