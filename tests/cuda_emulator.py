"""Runs quanta.cuda's host code on the CPU: a stand-in for CuPy (NumPy arrays that carry a
``.data.ptr`` and a ``__cuda_array_interface__``) and for the compiled ``_cuda`` module (each
kernel's contract, written in NumPy over the same raw pointers, from the headers in cuda/).

What it checks is everything quanta.cuda does around the kernels: chunking, strides and
pointer offsets, query batches, id mapping, padding, validation. What it cannot check is the
kernels themselves; tests/test_cuda.py runs the same tests on a real GPU when there is one.
"""
from __future__ import annotations

import ctypes
import types

import numpy as np

import quanta
from quanta.storage import _RAW


# -- CuPy stand-in ----------------------------------------------------------------------------

class _Mem:
    def __init__(self, ptr):
        self.ptr = ptr


class DeviceArray(np.ndarray):
    """A NumPy array that quanta.cuda takes for a device array."""

    @property
    def data(self):
        return _Mem(self.ctypes.data)

    @property
    def __cuda_array_interface__(self):
        return {"shape": self.shape, "typestr": self.dtype.str,
                "data": (self.ctypes.data, False), "version": 3}

    device = types.SimpleNamespace(id=0)


def _dev(x):
    if isinstance(x, np.ndarray) and not isinstance(x, DeviceArray):
        return x.view(DeviceArray)
    if isinstance(x, tuple):
        return tuple(_dev(v) for v in x)
    return x


class _Device:
    def __init__(self, id=0):
        self.id = 0 if id is None else id

    def synchronize(self):
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def _wrap(fn):
    def call(*args, **kwargs):
        return _dev(fn(*args, **kwargs))
    return call


class FakeCupy(types.ModuleType):
    """``cupy`` for quanta.cuda: every NumPy function, with device arrays out."""

    def __init__(self):
        super().__init__("cupy")
        self.ndarray = DeviceArray
        self.cuda = types.SimpleNamespace(
            Device=_Device,
            get_current_stream=lambda: types.SimpleNamespace(ptr=0),
            runtime=types.SimpleNamespace(getDeviceProperties=lambda i: {
                "name": b"emulated", "memoryClockRate": 1_000_000, "memoryBusWidth": 64}))
        self.linalg = types.SimpleNamespace(norm=_wrap(np.linalg.norm))

    def __getattr__(self, name):
        attr = getattr(np, name)
        return _wrap(attr) if callable(attr) and not isinstance(attr, type) else attr

    @staticmethod
    def asarray(x, dtype=None):
        return np.array(x, dtype=dtype, copy=None).view(DeviceArray)

    @staticmethod
    def asnumpy(x):
        return np.array(x).view(np.ndarray)


fake_cupyx = types.SimpleNamespace(scatter_add=lambda a, idx, v: np.add.at(a, idx, v))


# -- _cuda stand-in: the kernels' contracts over raw pointers -----------------------------------

def _view(ptr, dtype, count):
    """count elements of dtype at address ptr (writable)."""
    dtype = np.dtype(dtype)
    if count == 0:
        return np.zeros(0, dtype)
    buf = (ctypes.c_char * (count * dtype.itemsize)).from_address(ptr)
    return np.frombuffer(buf, dtype)


def _rows(ptr, dtype, nrows, ncols, ld):
    """An nrows x ncols block with row stride ld (elements) at ptr."""
    if nrows == 0:
        return np.zeros((0, ncols), dtype)
    flat = _view(ptr, dtype, (nrows - 1) * ld + ncols)
    return np.lib.stride_tricks.as_strided(flat, (nrows, ncols),
                                           (ld * flat.itemsize, flat.itemsize))


_STORAGES = ["f32", "f16", "bf16", "f8e4m3", "f8e5m2", "i8"]  # quanta::Storage codes


class FakeCuda(types.ModuleType):
    """``quanta._cuda`` for quanta.cuda, one NumPy function per kernel entry point."""

    def __init__(self):
        super().__init__("_cuda")

    # device
    def device_count(self):
        return 1

    def device_error(self):
        return ""

    def runtime_version(self):
        return 13000

    def driver_version(self):
        return 13000

    # flat_scan.cuh
    def flat_scores(self, codes, n, dim, storage, a, b, queries, nq, scores, ld, stream):
        if n == 0 or nq == 0:
            return
        name = _STORAGES[storage]
        rows = _view(codes, _RAW[name], n * dim)
        x = rows.astype(np.float32) if name == "i8" else quanta.decode(rows, name)
        q = _view(queries, np.float32, nq * dim).reshape(nq, dim)
        s = (q @ x.reshape(n, dim).T) * _view(a, np.float32, n) + _view(b, np.float32, n)
        _rows(scores, np.float32, nq, n, ld)[:] = s

    # topk.cuh
    def topk(self, scores, ld, row0, rows, nq, k, best_s, best_p, reset, stream):
        if not 1 <= k <= 1024:
            raise ValueError("GPU top-k takes 1 <= k <= 1024")
        if nq == 0:
            return
        bs = _view(best_s, np.float32, nq * k).reshape(nq, k)
        bp = _view(best_p, np.int64, nq * k).reshape(nq, k)
        if reset:
            bs[:], bp[:] = -np.inf, -1
        if rows == 0:
            return
        s = np.array(_rows(scores, np.float32, nq, rows, ld))
        s[np.isnan(s)] = -np.inf
        pos = np.broadcast_to(np.arange(row0, row0 + rows, dtype=np.int64), (nq, rows))
        S, P = np.hstack([bs, s]), np.hstack([bp, pos])
        key = np.where(P < 0, np.nan, -S.astype(np.float64))  # NaN (empty) sorts last
        if k == 1:  # k-means assignment: the lowest key, ties to the lowest position
            best = np.nanmin(np.where(np.isnan(key).all(1, keepdims=True), np.inf, key), axis=1)
            order = np.argmin(np.where(key == best[:, None], P, np.iinfo(np.int64).max), axis=1)
            order = order[:, None]
        else:  # position ascending, then (stable) key ascending
            by_pos = np.argsort(P, axis=1, kind="stable")
            order = np.take_along_axis(by_pos, np.argsort(np.take_along_axis(key, by_pos, 1),
                                                          axis=1, kind="stable"), 1)[:, :k]
        bs[:], bp[:] = np.take_along_axis(S, order, 1), np.take_along_axis(P, order, 1)
        bs[bp < 0] = -np.inf

    # pq_scan.cuh
    @staticmethod
    def _unpack(codes, nrows, m, nbits):
        cs = (m * nbits + 7) // 8
        c = _view(codes, np.uint8, nrows * cs).reshape(nrows, cs)
        if nbits == 8:
            return c.astype(np.int64)
        out = np.empty((nrows, m), np.int64)
        out[:, 0::2] = c[:, :(m + 1) // 2] & 15
        out[:, 1::2] = c[:, :m // 2] >> 4
        return out

    @staticmethod
    def _adc(lut, codes, sign, bias):
        """sign * sum_j lut[j, code_j] + bias, summed over j in order (float32)."""
        s = np.zeros(len(codes), np.float32)
        for j in range(lut.shape[0]):
            s += lut[j, codes[:, j]]
        return sign * s + bias

    def adc_scores(self, codes, n, pq_m, nbits, luts, bias, sign, nq, scores, ld, stream):
        m = pq_m
        if n == 0 or nq == 0:
            return
        c = self._unpack(codes, n, m, nbits)
        t = _view(luts, np.float32, nq * m << nbits).reshape(nq, m, 1 << nbits)
        bv = _view(bias, np.float32, nq) if bias else np.zeros(nq, np.float32)
        out = _rows(scores, np.float32, nq, n, ld)
        for i in range(nq):
            out[i] = self._adc(t[i], c, np.float32(sign), bv[i])

    def ivf_adc_scores(self, codes, offsets, probes, start, nprobe, pq_m, nbits, luts, bias,
                       sign, nq, scores, ld, stream):
        m = pq_m
        if nq == 0 or nprobe == 0:
            return
        cs = (m * nbits + 7) // 8
        pr = _view(probes, np.int64, nq * nprobe)
        st = _view(start, np.int64, nq * nprobe)
        t = _view(luts, np.float32, nq * nprobe * m << nbits).reshape(nq * nprobe, m, 1 << nbits)
        bv = _view(bias, np.float32, nq * nprobe)
        out = _view(scores, np.float32, nq * ld).reshape(nq, ld)
        for slot in range(nq * nprobe):
            lst = int(pr[slot])
            if lst < 0:
                continue
            b, e = _view(offsets + 8 * lst, np.int64, 2)
            c = self._unpack(codes + int(b) * cs, int(e - b), m, nbits)
            i, s0 = slot // nprobe, int(st[slot])
            out[i, s0:s0 + len(c)] = self._adc(t[slot], c, np.float32(sign), bv[slot])

    # binary_scan.cuh
    def rbe_scores(self, codes, n, planes, dsum, dinv, queries, nq, qplanes, qsum, qinv, words,
                   bits, scores, ld, stream):
        if n == 0 or nq == 0:
            return
        d = _view(codes, np.uint64, n * planes * words).reshape(n, planes, words)
        q = _view(queries, np.uint64, nq * qplanes * words).reshape(nq, qplanes, words)
        ds, dv = _view(dsum, np.int32, n).astype(np.int64), _view(dinv, np.float32, n)
        qs, qv = _view(qsum, np.int32, nq).astype(np.int64), _view(qinv, np.float32, nq)
        kd, kq = (1 << planes) - 1, (1 << qplanes) - 1
        out = _rows(scores, np.float32, nq, n, ld)
        for i in range(nq):
            s = np.zeros(n, np.int64)
            for kk in range(planes):
                for j in range(qplanes):
                    c = np.bitwise_count(q[i, j][None, :] & d[:, kk]).sum(1).astype(np.int64)
                    s += c << (qplanes - 1 - j + planes - 1 - kk)
            num = 4 * s - 2 * kd * qs[i] - 2 * kq * ds + bits * kq * kd
            out[i] = (num.astype(np.float64) * np.float64(qv[i]) * dv.astype(np.float64)
                      ).astype(np.float32)

    # multivector.cuh
    def fde_aggregate(self, y, ystride, proj_col, x, dim, offsets, n, k_sim, d_proj, r_reps, gray,
                       documents, fill_empty, out, stream):
        """multivector.cuh fde_aggregate: bucket sums (averages for documents) per repetition and
        the Hamming-nearest fill of empty buckets."""
        if n == 0:
            return
        off = _view(offsets, np.int64, n + 1)
        ntok = int(off[-1])
        yy = _rows(y, np.float32, ntok, ystride, ystride)
        xx = _view(x, np.float32, ntok * dim).reshape(ntok, dim)
        B = 1 << k_sim
        res = _view(out, np.float32, n * r_reps * B * d_proj).reshape(n, r_reps, B, d_proj)

        def bucket(h):
            idx = 0
            for i in range(k_sim):
                bit = int(h[i] > 0)
                idx = (idx << 1) + (bit ^ (idx & 1)) if gray else idx | (bit << i)
            return idx

        def pattern(b):
            return b ^ (b >> 1) if gray else b

        for s in range(n):
            t0, t1 = int(off[s]), int(off[s + 1])
            for r in range(r_reps):
                acc = np.zeros((B, d_proj), np.float32)
                count = np.zeros(B, np.int64)
                first = np.full(B, -1)
                for t in range(t0, t1):
                    b = bucket(yy[t, r * k_sim:(r + 1) * k_sim])
                    v = xx[t] if proj_col < 0 else yy[t, proj_col + r * d_proj:proj_col + (r + 1) * d_proj]
                    acc[b] += v
                    if count[b] == 0:
                        first[b] = t - t0
                    count[b] += 1
                if documents:
                    acc[count > 1] /= count[count > 1, None].astype(np.float32)
                if fill_empty:
                    for e in np.flatnonzero(count == 0):
                        cands = [(bin(pattern(e) ^ pattern(b)).count("1"), first[b] if gray else b, b)
                                 for b in np.flatnonzero(count)]
                        best = min(cands)[2]
                        t = t0 + first[best]
                        acc[e] = xx[t] if proj_col < 0 else yy[t, proj_col + r * d_proj:proj_col + (r + 1) * d_proj]
                res[s, r] = acc


    def fde_final(self, fde, n, fde_dim, ptr, idx, sign, final_dim, out, stream):
        if n * final_dim == 0:
            return
        p = _view(ptr, np.int64, final_dim + 1)
        ix = _view(idx, np.int32, int(p[-1]))
        sg = _view(sign, np.float32, int(p[-1]))
        f = _view(fde, np.float32, n * fde_dim).reshape(n, fde_dim)
        o = _view(out, np.float32, n * final_dim).reshape(n, final_dim)
        for j in range(final_dim):
            acc = np.zeros(n, np.float32)
            for e in range(int(p[j]), int(p[j + 1])):
                acc += sg[e] * f[:, ix[e]]
            o[:, j] = acc

    def chamfer_scores(self, q, q_offsets, nq, tokens, doc_offsets, cand, row0, nc, dim,
                       scores, stream):
        if nq == 0 or nc == 0:
            return
        qo = _view(q_offsets, np.int64, nq + 1)
        qt = _view(q, np.float32, int(qo[-1]) * dim).reshape(-1, dim)
        docs = (_view(cand, np.int64, nq * nc).reshape(nq, nc) if cand else
                np.broadcast_to(np.arange(row0, row0 + nc, dtype=np.int64), (nq, nc)))
        out = _view(scores, np.float32, nq * nc).reshape(nq, nc)
        for i in range(nq):
            qi = qt[qo[i]:qo[i + 1]]
            for c in range(nc):
                doc = int(docs[i, c])
                if doc < 0:
                    out[i, c] = -np.inf
                    continue
                b, e = _view(doc_offsets + 8 * doc, np.int64, 2)
                dt = _view(tokens + int(b) * dim * 4, np.float32, int(e - b) * dim).reshape(-1, dim)
                out[i, c] = np.float32((qi @ dt.T).max(1).sum(dtype=np.float32))

    # sparse_scan.cuh
    def sparse_scores(self, qdense, nq, dim, doc_ptr, comp16, comp32, val16, val8, scale, cand,
                      row0, nc, scores, stream):
        if nq == 0 or nc == 0:
            return
        q = _view(qdense, np.float32, nq * dim).reshape(nq, dim)
        docs = (_view(cand, np.int64, nq * nc).reshape(nq, nc) if cand else
                np.broadcast_to(np.arange(row0, row0 + nc, dtype=np.int64), (nq, nc)))
        out = _view(scores, np.float32, nq * nc).reshape(nq, nc)
        for i in range(nq):
            for c in range(nc):
                doc = int(docs[i, c])
                if doc < 0:
                    out[i, c] = -np.inf
                    continue
                b, e = (int(v) for v in _view(doc_ptr + 8 * doc, np.int64, 2))
                t = (_view(comp16 + 2 * b, np.uint16, e - b) if comp16 else
                     _view(comp32 + 4 * b, np.uint32, e - b)).astype(np.int64)
                v = (_view(val16 + 2 * b, np.float16, e - b).astype(np.float32) if val16 else
                     _view(val8 + b, np.uint8, e - b).astype(np.float32))
                ok = t < dim
                s = np.float32((q[i, t[ok]] * v[ok]).sum())
                out[i, c] = s if val16 else s * _view(scale + 4 * doc, np.float32, 1)[0]


def install_globally():
    """The stand-ins for a whole process (the README's GPU block): ``import cupy`` included."""
    import sys
    import quanta.cuda as qc
    cp, mod = FakeCupy(), FakeCuda()
    sys.modules["cupy"] = cp
    qc._cupy, qc._module, qc._cupyx = (lambda: cp), (lambda: mod), (lambda: fake_cupyx)


def install(monkeypatch):
    """Points quanta.cuda at the stand-ins for one test; returns (fake cupy, fake _cuda)."""
    import quanta.cuda as qc
    cp, mod = FakeCupy(), FakeCuda()
    monkeypatch.setattr(qc, "_cupy", lambda: cp)
    monkeypatch.setattr(qc, "_module", lambda: mod)
    monkeypatch.setattr(qc, "_cupyx", lambda: fake_cupyx)
    return cp, mod
