"""GPU search (CuPy in, CuPy out): flat scans over the storages of :class:`quanta.FlatIndex`,
ADC scans of :class:`quanta.PQIndex` / :class:`quanta.IVFPQIndex`, exact scans of recurrent
binary codes (:class:`quanta.BinaryIndex`), and k-means.

>>> gpu = quanta.cuda.FlatIndex(cpu_index)       # uploads the codes once
>>> D, I = gpu.search(cupy_queries, k=10)         # cupy arrays back; numpy in gives numpy out

Needs a build with the CUDA module, a visible GPU and CuPy (``pip install quanta[gpu]``).
"""
from __future__ import annotations

import numpy as np

from ._validate import as_k
from .flat import FlatIndex as _CpuFlatIndex, SearchResult

_STORAGE_CODE = {"f32": 0, "f16": 1, "bf16": 2, "f8e4m3": 3, "f8e5m2": 4, "i8": 5}


def _module():
    from . import _cuda  # noqa: F401  (ImportError when built without CUDA)
    if _cuda.device_count() == 0:
        raise RuntimeError("quanta.cuda: no CUDA device is visible")
    return _cuda


def _cupy():
    try:
        import cupy
    except ImportError as e:
        raise RuntimeError("quanta.cuda needs CuPy: pip install 'quanta[gpu]'") from e
    return cupy



def _stages(index):
    """(codes' native index, rotation or None, re-ranking native FlatIndex or None), read from
    the index's public native chain (``index.native``)."""
    from . import _core
    top, rotation, refine = index.native, None, None
    if isinstance(top, _core.RefineIndex):
        refine, top = top.refine, top.base
    if isinstance(top, _core.PreTransformIndex):
        rotation, top = top.matrix, top.inner
    return top, rotation, refine


def _require_compact(index, native):
    """GPU copies hold live rows only: an index with removed rows must compact() first."""
    rows = getattr(native, "rows", index.ntotal)
    if rows != index.ntotal:
        raise ValueError(f"the index holds {rows - index.ntotal} removed vectors; call "
                         f"index.compact() before copying it to the GPU")

class FlatIndex:
    """A device copy of a CPU :class:`quanta.FlatIndex`, searched with CUDA kernels.

    Scores are computed in float32 from the same stored elements as on the CPU, so results
    match the CPU index up to float rounding. Supports k <= 1024.
    """

    def __init__(self, index: _CpuFlatIndex):
        if not isinstance(index, _CpuFlatIndex):
            raise TypeError("index must be a quanta.FlatIndex")
        _require_compact(index, index.native)
        self._mod = _module()
        cp = _cupy()
        st = index.native.state()
        n = index.ntotal
        if index.f8_scale == "vector":
            row_scale = st["vector_scale"]
        elif index.f8_scale == "global" and index.storage.startswith("f8"):
            row_scale = np.full(n, st["global_scale"], np.float32)
        else:
            row_scale = np.ones(n, np.float32)
        mul = 2.0 if index.metric == "l2" else 1.0
        a = (mul * row_scale).astype(np.float32)
        b = -st["sq_norms"] if index.metric == "l2" else np.zeros(n, np.float32)
        self.dim, self.ntotal = index.dim, n
        self.metric, self.storage = index.metric, index.storage
        self._codes = cp.asarray(st["codes"])
        self._a = cp.asarray(a)
        self._b = cp.asarray(b.astype(np.float32))
        self._dim_scale = cp.asarray(st["dim_scale"]) if st["dim_scale"].size else None
        self._ids = cp.asarray(st["ids"]) if st["ids"].size else None

    def search(self, q, k: int = 10) -> SearchResult:
        cp = _cupy()
        k = as_k(k)
        q, on_host = _queries(cp, q, self.dim, self.metric)
        qnorm = (q * q).sum(axis=1) if self.metric == "l2" else None
        if self._dim_scale is not None:
            q = cp.ascontiguousarray(q * self._dim_scale[None, :])
        nq = q.shape[0]
        D = cp.empty((nq, k), cp.float32)
        I = cp.empty((nq, k), cp.int64)
        stream = cp.cuda.get_current_stream().ptr
        self._mod.flat_search(self._codes.data.ptr, self.ntotal, self.dim,
                              _STORAGE_CODE[self.storage], self._a.data.ptr, self._b.data.ptr,
                              q.data.ptr, nq, k, D.data.ptr, I.data.ptr, stream)
        if self.metric == "l2":
            D = cp.where(I >= 0, qnorm[:, None] - D, cp.inf).astype(cp.float32)
        if self._ids is not None:
            I = cp.where(I >= 0, self._ids[cp.maximum(I, 0)], -1)
        if on_host:
            return SearchResult(cp.asnumpy(D), cp.asnumpy(I))
        return SearchResult(D, I)


# -- PQ / IVF-PQ ADC scans and k-means --------------------------------------------------------

_SCORE_BYTES = 256 << 20  # device memory for one batch of scores or lookup tables


def _chunked_topk(mod, cp, nq, ncols, k, score):
    """The k best (score desc, column asc) of nq rows whose ncols columns are scored in chunks
    by score(c0, cols, out) into out (nq x chunk float32): (D, I) on the device."""
    stream = cp.cuda.get_current_stream().ptr
    D = cp.empty((nq, k), cp.float32)
    I = cp.empty((nq, k), cp.int64)
    mod.topk(0, 1, 0, 0, nq, k, D.data.ptr, I.data.ptr, True, stream)
    chunk = max(1, min(ncols, _SCORE_BYTES // (4 * nq)))
    scores = cp.empty((nq, chunk), cp.float32)
    for c0 in range(0, ncols, chunk):
        cols = min(chunk, ncols - c0)
        score(c0, cols, scores)
        mod.topk(scores.data.ptr, cols, c0, cols, nq, k, D.data.ptr, I.data.ptr, False, stream)
    return D, I


def _queries(cp, q, dim, metric):
    """Validated float32 device queries (normalized for cosine) and whether q was on the host."""
    on_host = not hasattr(q, "__cuda_array_interface__")
    q = cp.asarray(q)
    if q.dtype.kind not in "fiu":
        raise TypeError(f"queries must hold real numbers; got dtype {q.dtype}")
    if q.ndim == 1:
        q = q[None, :]
    if q.ndim != 2 or q.shape[1] != dim:
        raise ValueError(f"queries must have shape (nq, {dim}); got {q.shape}")
    q = cp.ascontiguousarray(q, dtype=cp.float32)
    if not bool(cp.isfinite(q).all()):
        raise ValueError("queries contain NaN or infinity")
    if metric == "cosine":
        norms = cp.linalg.norm(q, axis=1, keepdims=True)
        q = q / cp.where(norms > 0, norms, 1)
    return q, on_host


def _tables(cp, q, centroids, l2):
    """ADC tables (nq, m, ksub): |q_j - c_jk|^2 for l2, <q_j, c_jk> for ip."""
    m, ksub, dsub = centroids.shape
    qs = q.reshape(q.shape[0], m, dsub)
    dots = cp.einsum("imd,mkd->imk", qs, centroids)
    if not l2:
        return cp.ascontiguousarray(dots, dtype=cp.float32)
    t = (qs * qs).sum(-1)[:, :, None] - 2 * dots + (centroids * centroids).sum(-1)[None]
    return cp.ascontiguousarray(cp.maximum(t, 0), dtype=cp.float32)


class _GpuQuantized:
    """Shared by the GPU PQ indexes: the CPU index's re-ranking (if any) runs on the host."""

    def _setup(self, index, cpu_cls):
        if not isinstance(index, cpu_cls):
            raise TypeError(f"index must be a quanta.{cpu_cls.__name__}")
        if not index.is_trained:
            raise ValueError("index must be trained")
        self._native, rotation, self._refine = _stages(index)
        _require_compact(index, self._native)
        self._mod, cp = _module(), _cupy()
        self._refine_factor = index.refine_factor
        self.dim, self.m, self.nbits, self.metric = index.dim, index.m, index.nbits, index.metric
        self.ntotal = index.ntotal
        self._cent = cp.asarray(index.pq.centroids)
        self._rot = None if rotation is None else cp.asarray(rotation)
        return cp

    def _scan_queries(self, cp, q):
        """The queries in the codes' space (rotated by an OPQ index's rotation)."""
        return q if self._rot is None else cp.ascontiguousarray(q @ self._rot)

    def _candidates(self, k):
        """How many candidates per query the GPU returns: k, or k * refine_factor to re-rank."""
        return k if self._refine is None else k * self._refine_factor

    def _finish(self, cp, q, on_host, D, I, k):
        if self._refine is not None:
            res = self._refine.search_subset(cp.asnumpy(q), cp.asnumpy(I), k, 0)
            return SearchResult(*res) if on_host else SearchResult(cp.asarray(res[0]),
                                                                   cp.asarray(res[1]))
        return SearchResult(cp.asnumpy(D), cp.asnumpy(I)) if on_host else SearchResult(D, I)


class PQIndex(_GpuQuantized):
    """A device copy of a CPU :class:`quanta.PQIndex` (8-bit or 4-bit / fast-scan codes),
    searched by ADC with float lookup tables in shared memory (the same distances as the CPU's
    float-table ADC; fast-scan indexes get exact tables here, not uint8 ones). A CPU index
    with ``refine`` re-ranks the GPU's candidates on the host. Supports k <= 1024."""

    def __init__(self, index):
        from .pq import PQIndex as _CpuPQ
        cp = self._setup(index, _CpuPQ)
        self._codes = cp.asarray(self._native.codes())
        ids = self._native.ids()
        self._ids = cp.asarray(ids) if ids.size else None

    def search(self, q, k: int = 10) -> SearchResult:
        cp = _cupy()
        k = as_k(k)
        q, on_host = _queries(cp, q, self.dim, self.metric)
        kk = self._candidates(k)
        l2 = self.metric == "l2"
        nq, n = q.shape[0], self.ntotal
        D = cp.empty((nq, kk), cp.float32)
        I = cp.empty((nq, kk), cp.int64)
        stream = cp.cuda.get_current_stream().ptr
        tsize = self.m << self.nbits
        qb = max(1, min(nq, _SCORE_BYTES // (4 * tsize)))
        cs = self._codes.shape[1] if self._codes.ndim == 2 else 0
        qs = self._scan_queries(cp, q)
        for i0 in range(0, nq, qb):
            qc = qs[i0:i0 + qb]
            nqc = qc.shape[0]
            luts = _tables(cp, qc, self._cent, l2)
            Dc, Ic = D[i0:i0 + nqc], I[i0:i0 + nqc]
            self._mod.topk(0, 1, 0, 0, nqc, kk, Dc.data.ptr, Ic.data.ptr, True, stream)
            chunk = max(1, min(n, _SCORE_BYTES // (4 * nqc)))
            scores = cp.empty((nqc, chunk), cp.float32)
            for r0 in range(0, n, chunk):
                rows = min(chunk, n - r0)
                self._mod.adc_scores(self._codes.data.ptr + r0 * cs, rows, self.m, self.nbits,
                                     luts.data.ptr, 0, -1.0 if l2 else 1.0, nqc,
                                     scores.data.ptr, chunk, stream)
                self._mod.topk(scores.data.ptr, chunk, r0, rows, nqc, kk, Dc.data.ptr,
                               Ic.data.ptr, False, stream)
        if l2:
            D = cp.where(I >= 0, -D, cp.inf).astype(cp.float32)
        if self._ids is not None:
            I = cp.where(I >= 0, self._ids[cp.maximum(I, 0)], -1)
        return self._finish(cp, q, on_host, D, I, k)


class IVFPQIndex(_GpuQuantized):
    """A device copy of a CPU :class:`quanta.IVFPQIndex`: the coarse step is the GPU flat scan
    over the centroids, then one thread block per (query, probed list) scores the list's codes
    with that pair's float table in shared memory (l2: from q - centroid; ip: one table per
    query plus <q, centroid>). Distances match the CPU's float-table ADC; fast-scan indexes
    get exact tables here. Supports k <= 1024."""

    def __init__(self, index):
        from .pq import IVFPQIndex as _CpuIVF
        cp = self._setup(index, _CpuIVF)
        if not index.by_residual:
            raise ValueError("quanta.cuda.IVFPQIndex supports by_residual=True indexes only")
        self.nlist, self.nprobe = index.nlist, index.nprobe
        st = self._native.state()
        sizes = st["sizes"].astype(np.int64)
        self._offsets = cp.asarray(np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64))
        self._maxlen = int(sizes.max()) if sizes.size else 0
        self._codes = cp.asarray(st["codes"])
        self._ids = cp.asarray(st["ids"])
        cen = st["centroids"].reshape(self.nlist, self.dim)
        self._coarse_cen = cp.asarray(cen)
        coarse = _CpuFlatIndex(self.dim, "l2" if self.metric == "l2" else "ip")
        coarse.add(cen)
        self._coarse = FlatIndex(coarse)

    def search(self, q, k: int = 10, *, nprobe: int | None = None) -> SearchResult:
        cp = _cupy()
        k = as_k(k)
        nprobe = self.nprobe if nprobe is None else nprobe
        if isinstance(nprobe, bool) or not isinstance(nprobe, (int, np.integer)) \
                or not 1 <= nprobe <= self.nlist:
            raise ValueError(f"nprobe must be an integer in [1, nlist={self.nlist}]; got {nprobe!r}")
        q, on_host = _queries(cp, q, self.dim, self.metric)
        kk = self._candidates(k)
        l2 = self.metric == "l2"
        nq = q.shape[0]
        D = cp.full((nq, kk), -cp.inf, cp.float32)
        I = cp.full((nq, kk), -1, cp.int64)
        if self.ntotal == 0 or nq == 0:
            return self._finish(cp, q, on_host, cp.where(I >= 0, D, cp.inf if l2 else -cp.inf),
                                I, k)
        qs = self._scan_queries(cp, q)
        _, probes = self._coarse.search(qs, nprobe)
        stream = cp.cuda.get_current_stream().ptr
        tsize = self.m << self.nbits
        per_query = 4 * nprobe * max(self._maxlen, tsize)
        qb = max(1, min(nq, _SCORE_BYTES // per_query))
        for i0 in range(0, nq, qb):
            qc, pc = qs[i0:i0 + qb], cp.ascontiguousarray(probes[i0:i0 + qb])
            nqc = qc.shape[0]
            cen = self._coarse_cen[cp.maximum(pc, 0)]  # (nqc, nprobe, dim)
            if l2:
                luts = _tables(cp, (qc[:, None, :] - cen).reshape(-1, self.dim), self._cent, True)
                bias = cp.zeros(nqc * nprobe, cp.float32)
            else:
                luts = cp.ascontiguousarray(cp.repeat(_tables(cp, qc, self._cent, False), nprobe, 0))
                bias = cp.ascontiguousarray((cen * qc[:, None, :]).sum(-1).ravel(), cp.float32)
            width = nprobe * self._maxlen
            scores = cp.empty((nqc, width), cp.float32)
            self._mod.ivf_adc_scores(self._codes.data.ptr, self._offsets.data.ptr, pc.data.ptr,
                                     nprobe, self.m, self.nbits, luts.data.ptr, bias.data.ptr,
                                     -1.0 if l2 else 1.0, nqc, self._maxlen, scores.data.ptr,
                                     stream)
            Dc, Ic = D[i0:i0 + nqc], I[i0:i0 + nqc]
            self._mod.topk(scores.data.ptr, width, 0, width, nqc, kk, Dc.data.ptr, Ic.data.ptr,
                           True, stream)
            # position p * maxlen + r -> row offsets[list] + r; -inf marks padding past a list
            p, r = Ic // self._maxlen, Ic % self._maxlen
            lists = cp.take_along_axis(pc, cp.maximum(p, 0), 1)
            valid = (Ic >= 0) & cp.isfinite(Dc) & (lists >= 0)
            rows = self._offsets[cp.maximum(lists, 0)] + r
            I[i0:i0 + nqc] = cp.where(valid, self._ids[cp.where(valid, rows, 0)], -1)
        D = cp.where(I >= 0, -D if l2 else D, cp.inf if l2 else -cp.inf).astype(cp.float32)
        return self._finish(cp, q, on_host, D, I, k)


class BinaryIndex(_GpuQuantized):
    """A device copy of a CPU :class:`quanta.BinaryIndex` (recurrent binary codes): one thread
    per code sums bit-plane popcounts (``__popcll``) against the query's planes in shared
    memory, and the code cosine comes from the same integer formula and double arithmetic as
    on the CPU, so scores are identical to the CPU's whatever its scoring path. Queries are
    encoded on the host by the index's binarizer; a CPU ``refine`` re-ranks on the host.
    Supports k <= 1024."""

    def __init__(self, index):
        from .binary import BinaryIndex as _CpuBinary
        if not isinstance(index, _CpuBinary):
            raise TypeError("index must be a quanta.BinaryIndex")
        if not index.is_trained:
            raise ValueError("index must be trained")
        self._native, _, self._refine = _stages(index)
        _require_compact(index, self._native)
        self._mod, cp = _module(), _cupy()
        self._cpu = index
        self._refine_factor = index.refine_factor
        self.dim, self.metric, self.ntotal = index.dim, index.metric, index.ntotal
        self._planes, self._qplanes = index.levels + 1, index.query_levels + 1
        self._words = index.binarizer.words
        codes = self._native.codes()
        self._codes = cp.asarray(codes)
        sums, inv = self._stats(codes, self._planes)
        self._dsum, self._dinv = cp.asarray(sums), cp.asarray(inv)
        ids = self._native.ids()
        self._ids = cp.asarray(ids) if ids.size else None

    def _stats(self, codes, planes):
        """sum_j c_j and 1 / sqrt(sum_j (2 c_j - K)^2), as the CPU index computes them."""
        if len(codes) == 0:
            return np.zeros(0, np.int32), np.zeros(0, np.float32)
        v = self._cpu.binarizer.values(codes).astype(np.int64)
        norm2 = ((2 * v - (2 ** planes - 1)) ** 2).sum(1).astype(np.float64)
        return v.sum(1).astype(np.int32), (1.0 / np.sqrt(norm2)).astype(np.float32)

    def search(self, q, k: int = 10) -> SearchResult:
        cp = _cupy()
        k = as_k(k)
        q, on_host = _queries(cp, q, self.dim, "ip")
        kk = self._candidates(k)
        qcodes = self._cpu.binarizer.encode(cp.asnumpy(q))
        qsum, qinv = self._stats(qcodes, self._qplanes)
        qc, qs, qi = cp.asarray(qcodes), cp.asarray(qsum), cp.asarray(qinv)
        nq, n = q.shape[0], self.ntotal
        D = cp.empty((nq, kk), cp.float32)
        I = cp.empty((nq, kk), cp.int64)
        stream = cp.cuda.get_current_stream().ptr
        qw = self._qplanes * self._words
        qb = max(1, min(nq, 4096))
        for i0 in range(0, nq, qb):
            nqc = min(qb, nq - i0)
            Dc, Ic = D[i0:i0 + nqc], I[i0:i0 + nqc]
            self._mod.topk(0, 1, 0, 0, nqc, kk, Dc.data.ptr, Ic.data.ptr, True, stream)
            chunk = max(1, min(n, _SCORE_BYTES // (4 * nqc)))
            scores = cp.empty((nqc, chunk), cp.float32)
            for r0 in range(0, n, chunk):
                rows = min(chunk, n - r0)
                self._mod.rbe_scores(self._codes.data.ptr + r0 * self._planes * self._words * 8,
                                     rows, self._planes, self._dsum.data.ptr + 4 * r0,
                                     self._dinv.data.ptr + 4 * r0,
                                     qc.data.ptr + i0 * qw * 8, nqc, self._qplanes,
                                     qs.data.ptr + 4 * i0, qi.data.ptr + 4 * i0, self._words,
                                     self._cpu.bits, scores.data.ptr, chunk, stream)
                self._mod.topk(scores.data.ptr, chunk, r0, rows, nqc, kk, Dc.data.ptr,
                               Ic.data.ptr, False, stream)
        if self._ids is not None:
            I = cp.where(I >= 0, self._ids[cp.maximum(I, 0)], -1)
        return self._finish(cp, q, on_host, D, I, k)


def kmeans(x, k: int, *, niter: int = 25, seed: int = 0, spherical: bool = False):
    """Lloyd's k-means on the GPU: seeded random initial centroids (distinct rows), assignment
    by the GPU flat scan, centroid update by scatter-add, empty clusters re-seeded from random
    rows; ``spherical`` normalizes the centroids (inner-product clustering). Returns
    ``(centroids, assign)``, CuPy arrays for CuPy input and NumPy arrays for NumPy input."""
    mod, cp = _module(), _cupy()
    import cupyx
    on_host = not hasattr(x, "__cuda_array_interface__")
    x = cp.ascontiguousarray(cp.asarray(x), dtype=cp.float32)
    if x.ndim != 2 or x.shape[0] == 0:
        raise ValueError(f"x must be a non-empty 2-D array; got shape {x.shape}")
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 1 <= k <= x.shape[0]:
        raise ValueError(f"k must be an integer in [1, n={x.shape[0]}]; got {k!r}")
    if not bool(cp.isfinite(x).all()):
        raise ValueError("x contains NaN or infinity")
    n, d = x.shape
    rng = np.random.default_rng(seed)
    c = x[cp.asarray(rng.choice(n, k, replace=False))].copy()
    stream = cp.cuda.get_current_stream().ptr
    s = cp.empty((n, 1), cp.float32)
    assign = cp.empty((n, 1), cp.int64)
    for it in range(niter + 1):
        if spherical:
            c /= cp.maximum(cp.linalg.norm(c, axis=1, keepdims=True), 1e-30)
        a = cp.full(k, 1.0 if spherical else 2.0, cp.float32)
        b = cp.zeros(k, cp.float32) if spherical else -(c * c).sum(1).astype(cp.float32)
        mod.flat_search(c.data.ptr, k, d, 0, a.data.ptr, b.data.ptr, x.data.ptr, n, 1,
                        s.data.ptr, assign.data.ptr, stream)
        if it == niter:
            break
        lab = assign.ravel()
        sums = cp.zeros((k, d), cp.float32)
        cupyx.scatter_add(sums, lab, x)
        counts = cp.bincount(lab, minlength=k).astype(cp.float32)
        empty = counts == 0
        c = cp.where(empty[:, None], c, sums / cp.maximum(counts, 1)[:, None])
        ne = int(empty.sum())
        if ne:
            c[cp.nonzero(empty)[0]] = x[cp.asarray(rng.choice(n, ne, replace=False))]
    c = cp.ascontiguousarray(c)
    lab = assign.ravel()
    return (cp.asnumpy(c), cp.asnumpy(lab)) if on_host else (c, lab)


# -- MUVERA: FDE encoding and Chamfer re-ranking -----------------------------------------------

def _ragged(cp, tokens, offsets, dim, name):
    """Validated device (tokens float32, offsets int64) and whether the input was on the host.
    A list of arrays (host or device) is concatenated; offsets are checked on the host."""
    if offsets is None:
        sets = list(tokens) if isinstance(tokens, (list, tuple)) else [tokens]
        on_host = not any(hasattr(s, "__cuda_array_interface__") for s in sets)
        sets = [cp.asarray(s) for s in sets]
        if not sets or any(s.ndim != 2 or s.shape[0] == 0 for s in sets):
            raise ValueError(f"{name}: every set must be a non-empty 2-D (n_i, dim) array")
        off = np.concatenate([[0], np.cumsum([s.shape[0] for s in sets])]).astype(np.int64)
        x = cp.concatenate(sets)
    else:
        on_host = not hasattr(tokens, "__cuda_array_interface__")
        x = cp.asarray(tokens)
        off = np.asarray(cp.asnumpy(offsets) if hasattr(offsets, "__cuda_array_interface__")
                         else offsets)
        if off.dtype.kind not in "iu" or off.ndim != 1 or len(off) < 2:
            raise TypeError(f"{name} offsets must be a 1-D integer array of n + 1 >= 2 entries")
        off = off.astype(np.int64)
        if x.ndim != 2 or off[0] != 0 or off[-1] != x.shape[0] or (np.diff(off) <= 0).any():
            raise ValueError(f"{name} offsets must start at 0, end at the token count and "
                             f"leave no set empty")
    if x.dtype.kind not in "fiu":
        raise TypeError(f"{name} must hold real numbers; got dtype {x.dtype}")
    if x.shape[1] != dim:
        raise ValueError(f"{name} has dim {x.shape[1]}; expected {dim}")
    x = cp.ascontiguousarray(x, dtype=cp.float32)
    if not bool(cp.isfinite(x).all()):
        raise ValueError(f"{name} contain NaN or infinity")
    return x, cp.asarray(off), on_host


class FDEEncoder:
    """A device copy of a :class:`quanta.FDEEncoder` (same matrices, same encodings up to float
    rounding): one cuBLAS GEMM of the tokens with the hyperplanes and projections of every
    repetition, then one warp per (set, repetition) adds the tokens of each bucket in order
    (averages and the Hamming-nearest fill for documents), and a gather kernel applies the
    final count-sketch. CuPy in, CuPy out (NumPy in gives NumPy out)."""

    def __init__(self, encoder):
        from .multivector import FDEEncoder as _CpuEncoder
        if not isinstance(encoder, _CpuEncoder):
            raise TypeError("encoder must be a quanta.FDEEncoder")
        if encoder.k_sim > 10:
            raise ValueError("the GPU encoder takes k_sim <= 10")
        self._mod, cp = _module(), _cupy()
        self.cpu = encoder
        m, R, d, k, dp = encoder._matrices, encoder.r_reps, encoder.dim, encoder.k_sim, encoder.d_proj
        cols = [m["SIMH"].reshape(R, d, k).transpose(1, 0, 2).reshape(d, R * k)]
        self._proj_col = -1
        if m["PROJ"].size:
            self._proj_col = R * k
            cols.append(m["PROJ"].reshape(R, d, dp).transpose(1, 0, 2).reshape(d, R * dp))
        self._fused = cp.asarray(np.ascontiguousarray(np.hstack(cols), np.float32))
        self.fde_dim = R * (1 << k) * dp
        if encoder.final_dim:  # count-sketch as a gather: per output, its inputs in order
            order = np.argsort(m["FIDX"], kind="stable")
            ptr = np.zeros(encoder.final_dim + 1, np.int64)
            np.cumsum(np.bincount(m["FIDX"], minlength=encoder.final_dim), out=ptr[1:])
            self._final = (cp.asarray(ptr), cp.asarray(order.astype(np.int32)),
                           cp.asarray(m["FSGN"][order]))

    def _encode(self, cp, x, off, documents):
        enc = self.cpu
        n = int(off.shape[0]) - 1
        y = cp.ascontiguousarray(x @ self._fused)
        stream = cp.cuda.get_current_stream().ptr
        out = cp.empty((n, self.fde_dim), cp.float32)
        self._mod.fde_aggregate(y.data.ptr, y.shape[1], self._proj_col, x.data.ptr, enc.dim,
                                off.data.ptr, n, enc.k_sim, enc.d_proj, enc.r_reps,
                                enc.bucket_order == "gray", documents,
                                documents and enc.fill_empty, out.data.ptr, stream)
        if not enc.final_dim:
            return out
        ptr, idx, sign = self._final
        fin = cp.empty((n, enc.final_dim), cp.float32)
        self._mod.fde_final(out.data.ptr, n, self.fde_dim, ptr.data.ptr, idx.data.ptr,
                            sign.data.ptr, enc.final_dim, fin.data.ptr, stream)
        return fin

    def encode_documents(self, tokens, offsets=None):
        cp = _cupy()
        x, off, on_host = _ragged(cp, tokens, offsets, self.cpu.dim, "tokens")
        out = self._encode(cp, x, off, True)
        return cp.asnumpy(out) if on_host else out

    def encode_queries(self, tokens, offsets=None):
        cp = _cupy()
        x, off, on_host = _ragged(cp, tokens, offsets, self.cpu.dim, "tokens")
        out = self._encode(cp, x, off, False)
        return cp.asnumpy(out) if on_host else out


class MultiVectorIndex:
    """A device copy of a :class:`quanta.MultiVectorIndex` whose inner FDE index is flat: FDEs
    of the queries on the GPU, the flat FDE scan, then exact Chamfer scores of the candidates
    (one block per (query, candidate), tokens staged through shared memory, float32) and the
    GPU top-k. Tokens are held as float32 (decoded from the index's storage). ``exact=True``
    scores every document. Supports k <= 1024 and dim <= 768."""

    def __init__(self, index):
        from .multivector import MultiVectorIndex as _CpuMV
        from .storage import decode
        if not isinstance(index, _CpuMV):
            raise TypeError("index must be a quanta.MultiVectorIndex")
        if not isinstance(index._fde_index, _CpuFlatIndex):
            raise ValueError("the GPU copy needs a flat inner FDE index ('Flat' or 'Flat(<storage>)')")
        if index.dim > 768:
            raise ValueError("the GPU Chamfer kernel takes dim <= 768")
        if index._tokens.ids().size or index._tokens.removed().any():
            raise ValueError("the GPU copy serves document positions: build the index without "
                             "ids, and compact() it after removing")
        self._mod, cp = _module(), _cupy()
        self.cpu, self.dim, self.ntotal = index, index.dim, index.ntotal
        self.encoder = FDEEncoder(index.encoder)
        self._fde = FlatIndex(index._fde_index)
        codes = index._tokens.codes()
        raw = {"f32": np.float32, "f16": np.uint16, "bf16": np.uint16}.get(index.storage, np.uint8)
        tok = decode(codes.view(raw), index.storage) if index.storage != "i8" else \
            codes.view(np.int8).astype(np.float32)
        scale = index._tokens.scale or 1.0
        self._tokens = cp.asarray((tok.reshape(-1, index.dim) / scale).astype(np.float32))
        self._offsets = cp.asarray(index._tokens.offsets())

    def search(self, q_tokens, q_offsets=None, k: int = 10, *, candidates: int | None = None,
               exact: bool = False) -> SearchResult:
        cp = _cupy()
        k = as_k(k)
        if self.ntotal == 0:
            raise ValueError("search: the index is empty")
        q, qoff, on_host = _ragged(cp, q_tokens, q_offsets, self.dim, "q_tokens")
        nq = int(qoff.shape[0]) - 1
        if exact:
            cand = cp.broadcast_to(cp.arange(self.ntotal, dtype=cp.int64), (nq, self.ntotal))
        else:
            nc = self.cpu.candidates if candidates is None else int(candidates)
            fde = self.encoder._encode(cp, q, qoff, False)
            cand = self._fde.search(fde, min(max(nc, k), 1024)).ids
        cand = cp.ascontiguousarray(cand)
        stream = cp.cuda.get_current_stream().ptr

        def score(c0, cols, scores):
            part = cp.ascontiguousarray(cand[:, c0:c0 + cols])
            self._mod.chamfer_scores(q.data.ptr, qoff.data.ptr, nq, self._tokens.data.ptr,
                                     self._offsets.data.ptr, part.data.ptr, cols, self.dim,
                                     scores.data.ptr, stream)

        D, I = _chunked_topk(self._mod, cp, nq, cand.shape[1], k, score)
        I = cp.where(I >= 0, cp.take_along_axis(cand, cp.maximum(I, 0), axis=1), -1)
        return SearchResult(cp.asnumpy(D), cp.asnumpy(I)) if on_host else SearchResult(D, I)


class SparseIndex:
    """The forward index of a :class:`quanta.SparseIndex` on the GPU: exact inner products,
    one warp per (query, document), for exhaustive search (``search``, the ground truth of
    a large query batch) and for re-scoring candidate batches (``rescore``). The block loop
    of approximate search stays on the CPU index. Queries: anything the CPU index takes;
    results on the host. Supports k <= 1024."""

    def __init__(self, index):
        from .sparse import SparseIndex as _CpuSparse
        if not isinstance(index, _CpuSparse):
            raise TypeError("index must be a quanta.SparseIndex")
        if index._index is None:
            raise ValueError("the index is empty; add documents first")
        if index._delta is not None or index._index.removed().any() or index._index.ids().size:
            raise ValueError("the GPU copy serves positions of one built index: call "
                             "index.compact() after adding to it or removing from it, and "
                             "build it without ids")
        self._mod, cp = _module(), _cupy()
        self.cpu, self.dim, self.ntotal = index, index.dim, index.ntotal
        st = index._index.state()
        self._arrays = {name: cp.asarray(st[name]) for name in
                        ("doc_ptr", "comp16", "comp32", "val16", "val8", "doc_scale")}

    def _ptr(self, name):
        a = self._arrays[name]
        return a.data.ptr if a.size else 0

    def _dense(self, cp, queries):
        from .sparse import as_csr
        indptr, indices, data, _ = as_csr(self.cpu._rows(queries), self.dim, "queries")
        nq = len(indptr) - 1
        if len(data) and (not np.isfinite(data).all() or data.min() < 0):
            raise ValueError("queries: values must be finite and >= 0")
        q = np.zeros((nq, self.dim), np.float32)
        q[np.repeat(np.arange(nq), np.diff(indptr)), indices] = data
        return q

    def _scores(self, cp, qd, cand, row0, nc, out):
        a = self._ptr
        self._mod.sparse_scores(qd.data.ptr, qd.shape[0], self.dim, a("doc_ptr"), a("comp16"),
                                a("comp32"), a("val16"), a("val8"), a("doc_scale"),
                                0 if cand is None else cand.data.ptr, row0, nc, out.data.ptr,
                                cp.cuda.get_current_stream().ptr)

    def rescore(self, queries, candidates):
        """Exact scores (nq x nc float32, -inf where a candidate is -1) of candidate document
        positions (nq x nc integers) for each query row."""
        cp = _cupy()
        q = self._dense(cp, queries)
        cand = np.asarray(candidates)
        if cand.ndim != 2 or cand.shape[0] != len(q) or cand.dtype.kind not in "iu":
            raise ValueError(f"candidates must be an integer array of shape ({len(q)}, nc)")
        if cand.size and (cand.max() >= self.ntotal or cand.min() < -1):
            raise ValueError(f"candidates must be in [-1, {self.ntotal})")
        out = cp.empty(cand.shape, cp.float32)
        self._scores(cp, cp.asarray(q), cp.asarray(cand, cp.int64), 0, cand.shape[1], out)
        return cp.asnumpy(out)

    def search(self, queries, k: int = 10) -> SearchResult:
        """Exhaustive top-k by inner product (every document scored on the GPU)."""
        cp = _cupy()
        k = as_k(k)
        if k > 1024:
            raise ValueError("the GPU top-k takes k <= 1024")
        q = self._dense(cp, queries)
        nq, n = len(q), self.ntotal
        D = np.empty((nq, k), np.float32)
        I = np.empty((nq, k), np.int64)
        qb = max(1, min(nq, _SCORE_BYTES // (4 * max(self.dim, 1))))
        for q0 in range(0, nq, qb):
            qd = cp.asarray(q[q0:q0 + qb])
            Dc, Ic = _chunked_topk(self._mod, cp, qd.shape[0], n, k,
                                   lambda c0, cols, out: self._scores(cp, qd, None, c0, cols, out))
            D[q0:q0 + len(qd)], I[q0:q0 + len(qd)] = cp.asnumpy(Dc), cp.asnumpy(Ic)
        return SearchResult(D, I)
