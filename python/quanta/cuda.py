"""GPU search (CuPy in, CuPy out): flat scans over the storages of :class:`quanta.FlatIndex`,
ADC scans of :class:`quanta.PQIndex` / :class:`quanta.IVFPQIndex`, exact scans of recurrent
binary codes (:class:`quanta.BinaryIndex`), and k-means.

>>> gpu = quanta.cuda.FlatIndex(cpu_index)       # uploads the codes once
>>> D, I = gpu.search(cupy_queries, k=10)         # cupy arrays back; numpy in gives numpy out

Needs a build with the CUDA module, a visible GPU and CuPy (``pip install quanta[gpu]``).
"""
from __future__ import annotations

import numpy as np

from ._validate import as_k, as_nprobe
from .flat import FlatIndex as _CpuFlatIndex, SearchResult

_STORAGE_CODE = {"f32": 0, "f16": 1, "bf16": 2, "f8e4m3": 3, "f8e5m2": 4, "i8": 5}


def _module():
    from . import cuda_status
    status = cuda_status()
    if not status["available"]:
        raise RuntimeError(f"quanta.cuda: {status['reason']}")
    from . import _cuda
    return _cuda


def _cupy():
    try:
        import cupy
    except ImportError as e:
        raise RuntimeError("quanta.cuda needs CuPy: pip install 'quanta[gpu]'") from e
    return cupy


def _cupyx():
    import cupyx
    return cupyx


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


class _OnDevice:
    """Pins a GPU copy to the device that was current when it was made: its searches run
    there, whatever device is current for the caller."""

    def _pin(self, cp):
        self.device = cp.cuda.Device().id

    def _device(self, cp):
        return cp.cuda.Device(self.device)


def _here(cp, x):
    """x as an array on the current device (a copy when it lives on another one)."""
    if hasattr(x, "__cuda_array_interface__") and hasattr(x, "device") \
            and x.device.id != cp.cuda.Device().id:
        return cp.asarray(x).copy()
    return cp.asarray(x)


class FlatIndex(_OnDevice):
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
        self._pin(cp)
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
        self._row_bytes = self._codes.size // max(n, 1)
        self._a = cp.asarray(a)
        self._b = cp.asarray(b.astype(np.float32))
        self._dim_scale = cp.asarray(st["dim_scale"]) if st["dim_scale"].size else None
        self._ids = cp.asarray(st["ids"]) if st["ids"].size else None

    def search(self, q, k: int = 10) -> SearchResult:
        cp = _cupy()
        k = _as_gpu_k(k)
        with self._device(cp):
            q, on_host = _queries(cp, q, self.dim, self.metric)
            qnorm = (q * q).sum(axis=1) if self.metric == "l2" else None
            if self._dim_scale is not None:
                q = cp.ascontiguousarray(q * self._dim_scale[None, :])
            D, I = _flat_topk(self._mod, cp, self._codes, self._row_bytes, self.ntotal, self.dim,
                              _STORAGE_CODE[self.storage], self._a, self._b, q, k)
            if self.metric == "l2":
                D = cp.where(I >= 0, qnorm[:, None] - D, cp.inf).astype(cp.float32)
            if self._ids is not None:
                I = cp.where(I >= 0, self._ids[cp.maximum(I, 0)], -1)
            return _result(cp, D, I, on_host)


def _flat_topk(mod, cp, codes, row_bytes, n, dim, storage, a, b, q, k):
    """The k best of a[j] <q_i, row j> + b[j] over the rows of a flat scan: (D, I) on the
    device, positions in I."""
    stream = cp.cuda.get_current_stream().ptr

    def score(c0, cols, out):
        mod.flat_scores(codes.data.ptr + c0 * row_bytes, cols, dim, storage,
                        a.data.ptr + 4 * c0, b.data.ptr + 4 * c0, q.data.ptr, q.shape[0],
                        out.data.ptr, cols, stream)

    return _chunked_topk(mod, cp, q.shape[0], n, k, score)


def _result(cp, D, I, on_host):
    """A SearchResult on the host for host queries, on the device for device queries."""
    return SearchResult(cp.asnumpy(D), cp.asnumpy(I)) if on_host else SearchResult(D, I)


# -- PQ / IVF-PQ ADC scans and k-means --------------------------------------------------------

_SCORE_BYTES = 256 << 20  # device memory for one batch of scores or lookup tables
_MAX_K = 1024             # the GPU top-k's limit


def _as_gpu_k(k) -> int:
    k = as_k(k)
    if k > _MAX_K:
        raise ValueError(f"k must be <= {_MAX_K} on the GPU; got {k}")
    return k


def _chunked_topk(mod, cp, nq, ncols, k, score):
    """The k best (score desc, column asc) of nq rows whose ncols columns are scored in chunks
    by score(c0, cols, out), which writes an nq x cols block (row stride cols) into out:
    (D, I) on the device, columns in I, -inf / -1 past the last candidate."""
    stream = cp.cuda.get_current_stream().ptr
    D = cp.empty((nq, k), cp.float32)
    I = cp.empty((nq, k), cp.int64)
    mod.topk(0, 1, 0, 0, nq, k, D.data.ptr, I.data.ptr, True, stream)
    if nq == 0 or ncols == 0:
        return D, I
    chunk = max(1, min(ncols, _SCORE_BYTES // (4 * nq)))
    scores = cp.empty(nq * chunk, cp.float32)
    for c0 in range(0, ncols, chunk):
        cols = min(chunk, ncols - c0)
        score(c0, cols, scores)
        mod.topk(scores.data.ptr, cols, c0, cols, nq, k, D.data.ptr, I.data.ptr, False, stream)
    return D, I


def _batches(nq, per_query_bytes):
    """Query ranges [i0, i1) whose scratch (tables, scores) stays within _SCORE_BYTES."""
    step = max(1, _SCORE_BYTES // max(1, per_query_bytes))
    return [(i0, min(nq, i0 + step)) for i0 in range(0, nq, step)]


def _queries(cp, q, dim, metric):
    """Validated float32 device queries (normalized for cosine) and whether q was on the host."""
    on_host = not hasattr(q, "__cuda_array_interface__")
    q = _here(cp, q)
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


class _GpuQuantized(_OnDevice):
    """Shared by the GPU PQ and binary indexes: the CPU index's re-ranking (if any) runs on
    the host."""

    def _setup(self, index, cpu_cls):
        if not isinstance(index, cpu_cls):
            raise TypeError(f"index must be a quanta.{cpu_cls.__name__}")
        if not index.is_trained:
            raise ValueError("index must be trained")
        self._native, rotation, self._refine = _stages(index)
        _require_compact(index, self._native)
        self._mod, cp = _module(), _cupy()
        self._pin(cp)
        self._refine_factor = index.refine_factor
        self.dim, self.metric, self.ntotal = index.dim, index.metric, index.ntotal
        self._rot = None if rotation is None else cp.asarray(rotation)
        return cp

    def _load_ids(self, cp):
        """User ids of a flat code array's rows (None: the positions are the ids)."""
        ids = self._native.ids()
        self._ids = cp.asarray(ids) if ids.size else None

    def _scan_queries(self, cp, q):
        """The queries in the codes' space (rotated by an OPQ index's rotation)."""
        return q if self._rot is None else cp.ascontiguousarray(q @ self._rot)

    def _candidates(self, k):
        """How many candidates per query the GPU returns: k, or k * refine_factor to re-rank."""
        return k if self._refine is None else min(k * self._refine_factor, _MAX_K)

    def _user_ids(self, cp, I):
        return I if self._ids is None else cp.where(I >= 0, self._ids[cp.maximum(I, 0)], -1)

    def _finish(self, cp, q, on_host, D, I, k):
        if self._refine is not None:
            D, I = self._refine.search_subset(cp.asnumpy(q), cp.asnumpy(I), k, 0)
            D, I = cp.asarray(D), cp.asarray(I)
        return _result(cp, D, I, on_host)


class _GpuPQ(_GpuQuantized):
    def _setup(self, index, cpu_cls):
        cp = super()._setup(index, cpu_cls)
        self.m, self.nbits = index.m, index.nbits
        self._code_size = (self.m * self.nbits + 7) // 8  # the kernels' packing
        self._cent = cp.asarray(index.pq.centroids)
        return cp


class PQIndex(_GpuPQ):
    """A device copy of a CPU :class:`quanta.PQIndex` (8-bit or 4-bit / fast-scan codes),
    searched by ADC with float lookup tables in shared memory (the same distances as the CPU's
    float-table ADC; fast-scan indexes get exact tables here, not uint8 ones). A CPU index
    with ``refine`` re-ranks the GPU's candidates on the host. Supports k <= 1024."""

    def __init__(self, index):
        from .pq import PQIndex as _CpuPQ
        cp = self._setup(index, _CpuPQ)
        self._load_ids(cp)
        codes = np.ascontiguousarray(self._native.codes()).reshape(-1)
        if codes.size != self.ntotal * self._code_size:
            raise ValueError(f"expected {self.ntotal} codes of {self._code_size} bytes; got "
                             f"{codes.size} bytes")
        self._codes = cp.asarray(codes)

    def search(self, q, k: int = 10) -> SearchResult:
        cp = _cupy()
        k = _as_gpu_k(k)
        with self._device(cp):
            q, on_host = _queries(cp, q, self.dim, self.metric)
            kk = self._candidates(k)
            l2 = self.metric == "l2"
            nq, cs = q.shape[0], self._code_size
            D = cp.empty((nq, kk), cp.float32)
            I = cp.empty((nq, kk), cp.int64)
            stream = cp.cuda.get_current_stream().ptr
            qs = self._scan_queries(cp, q)
            for i0, i1 in _batches(nq, 4 * (self.m << self.nbits)):
                luts = _tables(cp, qs[i0:i1], self._cent, l2)

                def score(c0, cols, out):
                    self._mod.adc_scores(self._codes.data.ptr + c0 * cs, cols, self.m,
                                         self.nbits, luts.data.ptr, 0, -1.0 if l2 else 1.0,
                                         i1 - i0, out.data.ptr, cols, stream)

                D[i0:i1], I[i0:i1] = _chunked_topk(self._mod, cp, i1 - i0, self.ntotal, kk, score)
            if l2:
                D = cp.where(I >= 0, -D, cp.inf).astype(cp.float32)
            return self._finish(cp, q, on_host, D, self._user_ids(cp, I), k)


class IVFPQIndex(_GpuPQ):
    """A device copy of a CPU :class:`quanta.IVFPQIndex`: the coarse step is the GPU flat scan
    over the centroids, then one thread block per (query, probed list) scores the list's codes
    with that pair's float table in shared memory (residual codes, l2: from q - centroid; ip: one
    table per query plus <q, centroid>; codes of the vectors: one table per query) into the
    query's row of scores, the probed lists back to back. SOAR indexes are not supported.
    Distances match the CPU's float-table ADC; fast-scan indexes get exact tables here.
    Supports k <= 1024."""

    def __init__(self, index):
        from .pq import IVFPQIndex as _CpuIVF
        cp = self._setup(index, _CpuIVF)
        if index.soar:
            raise ValueError("quanta.cuda.IVFPQIndex supports soar=False indexes only")
        self.nlist, self.nprobe, self._residual = index.nlist, index.nprobe, index.by_residual
        st = self._native.state()
        sizes = st["sizes"].astype(np.int64)
        self._sizes = cp.asarray(sizes)
        self._offsets = cp.asarray(np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64))
        self._codes = cp.asarray(st["codes"])
        self._ids = cp.asarray(st["ids"])
        cen = st["centroids"].reshape(self.nlist, self.dim)
        self._coarse_cen = cp.asarray(cen)
        coarse = _CpuFlatIndex(self.dim, "l2" if self.metric == "l2" else "ip")
        coarse.add(cen)
        self._coarse = FlatIndex(coarse)

    def search(self, q, k: int = 10, *, nprobe: int | None = None) -> SearchResult:
        cp = _cupy()
        k = _as_gpu_k(k)
        nprobe = as_nprobe(self.nprobe if nprobe is None else nprobe, self.nlist)
        with self._device(cp):
            q, on_host = _queries(cp, q, self.dim, self.metric)
            kk = self._candidates(k)
            l2 = self.metric == "l2"
            nq = q.shape[0]
            D = cp.full((nq, kk), -cp.inf, cp.float32)
            I = cp.full((nq, kk), -1, cp.int64)
            if self.ntotal > 0 and nq > 0:
                self._scan(cp, self._scan_queries(cp, q), nprobe, kk, D, I)
            D = cp.where(I >= 0, -D if l2 else D, cp.inf if l2 else -cp.inf).astype(cp.float32)
            return self._finish(cp, q, on_host, D, I, k)

    def _scan(self, cp, qs, nprobe, kk, D, I):
        """Fills D (scores, higher better) and I (user ids) for the queries qs."""
        l2 = self.metric == "l2"
        _, probes = self._coarse.search(qs, nprobe)
        sizes = cp.where(probes >= 0, self._sizes[cp.maximum(probes, 0)], 0)
        start = cp.cumsum(sizes, axis=1) - sizes  # each probed list's first column
        total = sizes.sum(axis=1)
        width = max(1, int(total.max()))
        stream = cp.cuda.get_current_stream().ptr
        tsize = self.m << self.nbits
        for i0, i1 in _batches(qs.shape[0], 4 * max(width, nprobe * tsize)):
            nqc = i1 - i0
            qc, pc = qs[i0:i1], cp.ascontiguousarray(probes[i0:i1])
            cen = self._coarse_cen[cp.maximum(pc, 0)]  # (nqc, nprobe, dim)
            if not self._residual:  # the codes are of the vectors: one table for every list
                luts = cp.ascontiguousarray(cp.repeat(_tables(cp, qc, self._cent, l2), nprobe, 0))
                bias = cp.zeros(nqc * nprobe, cp.float32)
            elif l2:
                luts = _tables(cp, (qc[:, None, :] - cen).reshape(-1, self.dim), self._cent, True)
                bias = cp.zeros(nqc * nprobe, cp.float32)
            else:
                luts = cp.ascontiguousarray(cp.repeat(_tables(cp, qc, self._cent, False), nprobe, 0))
                bias = cp.ascontiguousarray((cen * qc[:, None, :]).sum(-1).ravel(), cp.float32)
            st = cp.ascontiguousarray(start[i0:i1])
            scores = cp.full((nqc, width), -cp.inf, cp.float32)
            self._mod.ivf_adc_scores(self._codes.data.ptr, self._offsets.data.ptr, pc.data.ptr,
                                     st.data.ptr, nprobe, self.m, self.nbits, luts.data.ptr,
                                     bias.data.ptr, -1.0 if l2 else 1.0, nqc, scores.data.ptr,
                                     width, stream)
            Dc, Ic = D[i0:i1], I[i0:i1]
            self._mod.topk(scores.data.ptr, width, 0, width, nqc, kk, Dc.data.ptr, Ic.data.ptr,
                           True, stream)
            # column -> (probe, row in its list): the last probe starting at or before it
            flat_start = (st + width * cp.arange(nqc)[:, None]).ravel()
            col = cp.maximum(Ic, 0) + width * cp.arange(nqc)[:, None]
            slot = cp.searchsorted(flat_start, col.ravel(), side="right").reshape(col.shape) - 1
            r = col - flat_start[slot]
            lists = pc.ravel()[slot]
            valid = (Ic >= 0) & (lists >= 0) & (r < sizes[i0:i1].ravel()[slot])
            rows = self._offsets[cp.maximum(lists, 0)] + r
            I[i0:i1] = cp.where(valid, self._ids[cp.where(valid, rows, 0)], -1)


class BinaryIndex(_GpuQuantized):
    """A device copy of a CPU :class:`quanta.BinaryIndex` (recurrent binary codes): one thread
    per code sums bit-plane popcounts (``__popcll``) against the query's planes in shared
    memory, and the code cosine comes from the same integer formula and double arithmetic as
    on the CPU, so scores are identical to the CPU's whatever its scoring path. Queries are
    encoded on the host by the index's binarizer; a CPU ``refine`` re-ranks on the host.
    Supports k <= 1024."""

    def __init__(self, index):
        from .binary import BinaryIndex as _CpuBinary
        cp = self._setup(index, _CpuBinary)
        self._load_ids(cp)
        self._cpu = index
        self._planes, self._qplanes = index.levels + 1, index.query_levels + 1
        self._words = index.binarizer.words
        codes = self._native.codes()
        self._codes = cp.asarray(codes)
        sums, inv = self._stats(codes, self._planes)
        self._dsum, self._dinv = cp.asarray(sums), cp.asarray(inv)

    def _stats(self, codes, planes):
        """sum_j c_j and 1 / sqrt(sum_j (2 c_j - K)^2), as the CPU index computes them."""
        if len(codes) == 0:
            return np.zeros(0, np.int32), np.zeros(0, np.float32)
        v = self._cpu.binarizer.values(codes).astype(np.int64)
        norm2 = ((2 * v - (2 ** planes - 1)) ** 2).sum(1).astype(np.float64)
        return v.sum(1).astype(np.int32), (1.0 / np.sqrt(norm2)).astype(np.float32)

    def search(self, q, k: int = 10) -> SearchResult:
        cp = _cupy()
        k = _as_gpu_k(k)
        with self._device(cp):
            q, on_host = _queries(cp, q, self.dim, "ip")
            kk = self._candidates(k)
            qcodes = self._cpu.binarizer.encode(cp.asnumpy(q))
            qsum, qinv = self._stats(qcodes, self._qplanes)
            qc, qs, qi = cp.asarray(qcodes), cp.asarray(qsum), cp.asarray(qinv)
            row_bytes = self._planes * self._words * 8

            def score(c0, cols, out):
                self._mod.rbe_scores(self._codes.data.ptr + c0 * row_bytes, cols, self._planes,
                                     self._dsum.data.ptr + 4 * c0, self._dinv.data.ptr + 4 * c0,
                                     qc.data.ptr, q.shape[0], self._qplanes, qs.data.ptr,
                                     qi.data.ptr, self._words, self._cpu.bits, out.data.ptr,
                                     cols, cp.cuda.get_current_stream().ptr)

            D, I = _chunked_topk(self._mod, cp, q.shape[0], self.ntotal, kk, score)
            return self._finish(cp, q, on_host, D, self._user_ids(cp, I), k)


def kmeans(x, k: int, *, niter: int = 25, seed: int = 0, spherical: bool = False):
    """Lloyd's k-means on the GPU: seeded random initial centroids (distinct rows), assignment
    by the GPU flat scan, centroid update by scatter-add, empty clusters re-seeded from random
    rows; ``spherical`` normalizes the centroids (inner-product clustering). Returns
    ``(centroids, assign)``, CuPy arrays for CuPy input and NumPy arrays for NumPy input."""
    mod, cp = _module(), _cupy()
    on_host = not hasattr(x, "__cuda_array_interface__")
    x = cp.ascontiguousarray(_here(cp, x), dtype=cp.float32)
    if x.ndim != 2 or x.shape[0] == 0:
        raise ValueError(f"x must be a non-empty 2-D array; got shape {x.shape}")
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 1 <= k <= x.shape[0]:
        raise ValueError(f"k must be an integer in [1, n={x.shape[0]}]; got {k!r}")
    if not bool(cp.isfinite(x).all()):
        raise ValueError("x contains NaN or infinity")
    n, d = x.shape
    rng = np.random.default_rng(seed)
    c = x[cp.asarray(rng.choice(n, k, replace=False))].copy()
    for it in range(niter + 1):
        if spherical:
            c /= cp.maximum(cp.linalg.norm(c, axis=1, keepdims=True), 1e-30)
        c = cp.ascontiguousarray(c, dtype=cp.float32)
        a = cp.full(k, 1.0 if spherical else 2.0, cp.float32)
        b = cp.zeros(k, cp.float32) if spherical else -(c * c).sum(1).astype(cp.float32)
        _, assign = _flat_topk(mod, cp, c, 4 * d, k, d, 0, a, b, x, 1)
        lab = assign.ravel()
        if it == niter:
            break
        sums = cp.zeros((k, d), cp.float32)
        _cupyx().scatter_add(sums, lab, x)
        counts = cp.bincount(lab, minlength=k).astype(cp.float32)
        empty = counts == 0
        c = cp.where(empty[:, None], c, sums / cp.maximum(counts, 1)[:, None])
        ne = int(empty.sum())
        if ne:
            c[cp.nonzero(empty)[0]] = x[cp.asarray(rng.choice(n, ne, replace=False))]
    return (cp.asnumpy(c), cp.asnumpy(lab)) if on_host else (c, lab)


# -- MUVERA: FDE encoding and Chamfer re-ranking -----------------------------------------------

def _ragged(cp, tokens, offsets, dim, name):
    """Validated device (tokens float32, offsets int64) and whether the input was on the host.
    A list of arrays (host or device) is concatenated; offsets are checked on the host."""
    if offsets is None:
        sets = list(tokens) if isinstance(tokens, (list, tuple)) else [tokens]
        on_host = not any(hasattr(s, "__cuda_array_interface__") for s in sets)
        sets = [_here(cp, s) for s in sets]
        if not sets or any(s.ndim != 2 or s.shape[0] == 0 for s in sets):
            raise ValueError(f"{name}: every set must be a non-empty 2-D (n_i, dim) array")
        off = np.concatenate([[0], np.cumsum([s.shape[0] for s in sets])]).astype(np.int64)
        x = cp.concatenate(sets)
    else:
        on_host = not hasattr(tokens, "__cuda_array_interface__")
        x = _here(cp, tokens)
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


class FDEEncoder(_OnDevice):
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
        self._pin(cp)
        self.cpu = encoder
        m, R, d, k, dp = encoder.matrices, encoder.r_reps, encoder.dim, encoder.k_sim, encoder.d_proj
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

    def _encode_sets(self, tokens, offsets, documents):
        cp = _cupy()
        with self._device(cp):
            x, off, on_host = _ragged(cp, tokens, offsets, self.cpu.dim, "tokens")
            out = self._encode(cp, x, off, documents)
            return cp.asnumpy(out) if on_host else out

    def encode_documents(self, tokens, offsets=None):
        return self._encode_sets(tokens, offsets, True)

    def encode_queries(self, tokens, offsets=None):
        return self._encode_sets(tokens, offsets, False)


class MultiVectorIndex(_OnDevice):
    """A device copy of a :class:`quanta.MultiVectorIndex` built with ``first_stage="fde"`` and a
    flat FDE index: FDEs
    of the queries on the GPU, the flat FDE scan, then exact Chamfer scores of the candidates
    (one block per (query, candidate), tokens staged through shared memory in 32 x 64 tiles,
    float32, any dim) and the GPU top-k. Tokens are held as float32 (decoded from the index's
    storage). ``exact=True`` scores every document. Supports k <= 1024."""

    def __init__(self, index):
        from .multivector import MultiVectorIndex as _CpuMV
        from .storage import _RAW, decode
        if not isinstance(index, _CpuMV):
            raise TypeError("index must be a quanta.MultiVectorIndex")
        if index.first_stage != "fde" or not isinstance(index.stage, _CpuFlatIndex):
            raise ValueError("the GPU copy needs an index built with first_stage='fde' and a "
                             "flat FDE index ('Flat' or 'Flat(<storage>)')")
        if index.tokens.ids().size or index.tokens.removed().any():
            raise ValueError("the GPU copy serves document positions: build the index without "
                             "ids, and compact() it after removing")
        self._mod, cp = _module(), _cupy()
        self._pin(cp)
        self.cpu, self.dim, self.ntotal = index, index.dim, index.ntotal
        self.encoder = FDEEncoder(index.encoder)
        self._fde = FlatIndex(index.stage)
        codes = index.tokens.codes()
        tok = decode(codes.view(_RAW[index.storage]), index.storage) \
            if index.storage != "i8" else codes.view(np.int8).astype(np.float32)
        scale = index.tokens.scale or 1.0
        self._tokens = cp.asarray((tok.reshape(-1, index.dim) / scale).astype(np.float32))
        self._offsets = cp.asarray(index.tokens.offsets())

    def search(self, q_tokens, q_offsets=None, k: int = 10, *, candidates: int | None = None,
               exact: bool = False) -> SearchResult:
        cp = _cupy()
        k = _as_gpu_k(k)
        if self.ntotal == 0:
            raise ValueError("search: the index is empty")
        with self._device(cp):
            q, qoff, on_host = _ragged(cp, q_tokens, q_offsets, self.dim, "q_tokens")
            nq = int(qoff.shape[0]) - 1
            cand = None  # exact: every document, by position, no candidate array
            if not exact:
                nc = self.cpu.candidates if candidates is None else int(candidates)
                fde = self.encoder._encode(cp, q, qoff, False)
                cand = cp.ascontiguousarray(self._fde.search(fde, min(max(nc, k), _MAX_K)).ids)
            stream = cp.cuda.get_current_stream().ptr

            def score(c0, cols, scores):
                part = None if cand is None else cp.ascontiguousarray(cand[:, c0:c0 + cols])
                self._mod.chamfer_scores(q.data.ptr, qoff.data.ptr, nq, self._tokens.data.ptr,
                                         self._offsets.data.ptr, _ptr(part), c0, cols, self.dim,
                                         scores.data.ptr, stream)

            ncols = self.ntotal if cand is None else cand.shape[1]
            D, I = _chunked_topk(self._mod, cp, nq, ncols, k, score)
            if cand is not None:
                I = cp.where(I >= 0, cp.take_along_axis(cand, cp.maximum(I, 0), axis=1), -1)
            return _result(cp, D, I, on_host)


def _ptr(a):
    """A device array's address; 0 (a null pointer) for None or an empty array."""
    return 0 if a is None or a.size == 0 else a.data.ptr


class SparseIndex(_OnDevice):
    """The forward index of a :class:`quanta.SparseIndex` on the GPU: exact inner products,
    one warp per (query, document), for exhaustive search (``search``, the ground truth of
    a large query batch) and for re-scoring candidate batches (``rescore``). The block loop
    of approximate search stays on the CPU index. Queries: anything the CPU index takes.
    Term ids at or past ``dim`` (a corrupt mapped file) are skipped, as on the CPU.
    Supports k <= 1024."""

    def __init__(self, index):
        from .sparse import SparseIndex as _CpuSparse
        if not isinstance(index, _CpuSparse):
            raise TypeError("index must be a quanta.SparseIndex")
        if index.native is None:
            raise ValueError("the index is empty; add documents first")
        if index.params["layout"] == "blocks":
            raise ValueError("the GPU copy serves documents by position, and the blocks layout "
                             "stores them in an order of its own: build with layout='lists'")
        if index.pending or index.native.removed().any() or index.native.ids().size:
            raise ValueError("the GPU copy serves positions of one built index: call "
                             "index.compact() after adding to it or removing from it, and "
                             "build it without ids")
        self._mod, cp = _module(), _cupy()
        self._pin(cp)
        self.cpu, self.dim, self.ntotal = index, index.dim, index.ntotal
        st = index.native.state()
        ptr = np.asarray(st["doc_ptr"], np.int64)
        nnz = max(st["comp16"].size, st["comp32"].size)
        # the kernel reads entries doc_ptr[d] .. doc_ptr[d + 1]: they must lie in the arrays
        if len(ptr) != self.ntotal + 1 or ptr[0] != 0 or ptr[-1] != nnz or (np.diff(ptr) < 0).any():
            raise ValueError("the index's document offsets are corrupt; rebuild or reload it")
        self._arrays = {name: cp.asarray(st[name]) for name in
                        ("doc_ptr", "comp16", "comp32", "val16", "val8", "doc_scale")}

    def _dense(self, queries):
        from .sparse import as_csr
        indptr, indices, data, _ = as_csr(self.cpu.query_rows(queries), self.dim, "queries")
        nq = len(indptr) - 1
        if len(data) and (not np.isfinite(data).all() or data.min() < 0):
            raise ValueError("queries: values must be finite and >= 0")
        q = np.zeros((nq, self.dim), np.float32)
        q[np.repeat(np.arange(nq), np.diff(indptr)), indices] = data
        return q

    def _scores(self, cp, qd, cand, row0, nc, out):
        a = {name: _ptr(v) for name, v in self._arrays.items()}
        self._mod.sparse_scores(qd.data.ptr, qd.shape[0], self.dim, a["doc_ptr"], a["comp16"],
                                a["comp32"], a["val16"], a["val8"], a["doc_scale"], _ptr(cand),
                                row0, nc, out.data.ptr, cp.cuda.get_current_stream().ptr)

    def rescore(self, queries, candidates):
        """Exact scores (nq x nc float32, -inf where a candidate is -1) of candidate document
        positions (nq x nc integers, NumPy or CuPy) for each query row; a CuPy array of
        candidates gives a CuPy array back."""
        cp = _cupy()
        q = self._dense(queries)
        with self._device(cp):
            on_host = not hasattr(candidates, "__cuda_array_interface__")
            cand = _here(cp, candidates)
            if cand.ndim != 2 or cand.shape[0] != len(q) or cand.dtype.kind not in "iu":
                raise ValueError(f"candidates must be an integer array of shape ({len(q)}, nc)")
            if cand.size and (int(cand.max()) >= self.ntotal or int(cand.min()) < -1):
                raise ValueError(f"candidates must be in [-1, {self.ntotal})")
            cand = cp.ascontiguousarray(cand, dtype=cp.int64)
            out = cp.empty(cand.shape, cp.float32)
            self._scores(cp, cp.asarray(q), cand, 0, cand.shape[1], out)
            return cp.asnumpy(out) if on_host else out

    def search(self, queries, k: int = 10) -> SearchResult:
        """Exhaustive top-k by inner product (every document scored on the GPU); results on
        the host."""
        cp = _cupy()
        k = _as_gpu_k(k)
        q = self._dense(queries)
        nq, n = len(q), self.ntotal
        D = np.empty((nq, k), np.float32)
        I = np.empty((nq, k), np.int64)
        with self._device(cp):
            for q0, q1 in _batches(nq, 4 * max(self.dim, 1)):
                qd = cp.asarray(q[q0:q1])
                Dc, Ic = _chunked_topk(self._mod, cp, q1 - q0, n, k,
                                       lambda c0, cols, out: self._scores(cp, qd, None, c0, cols,
                                                                          out))
                D[q0:q1], I[q0:q1] = cp.asnumpy(Dc), cp.asnumpy(Ic)
        return SearchResult(D, I)
