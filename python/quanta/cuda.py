"""GPU flat search over the same storages as :class:`quanta.FlatIndex` (CuPy in, CuPy out).

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


class FlatIndex:
    """A device copy of a CPU :class:`quanta.FlatIndex`, searched with CUDA kernels.

    Scores are computed in float32 from the same stored elements as on the CPU, so results
    match the CPU index up to float rounding. Supports k <= 1024.
    """

    def __init__(self, index: _CpuFlatIndex):
        if not isinstance(index, _CpuFlatIndex):
            raise TypeError("index must be a quanta.FlatIndex")
        self._mod = _module()
        cp = _cupy()
        st = index._index.state()
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
        on_host = not hasattr(q, "__cuda_array_interface__")
        q = cp.asarray(q)
        if q.dtype.kind not in "fiu":
            raise TypeError(f"queries must hold real numbers; got dtype {q.dtype}")
        if q.ndim == 1:
            q = q[None, :]
        if q.ndim != 2 or q.shape[1] != self.dim:
            raise ValueError(f"queries must have shape (nq, {self.dim}); got {q.shape}")
        q = cp.ascontiguousarray(q, dtype=cp.float32)
        if not bool(cp.isfinite(q).all()):
            raise ValueError("queries contain NaN or infinity")
        if self.metric == "cosine":
            norms = cp.linalg.norm(q, axis=1, keepdims=True)
            q = q / cp.where(norms > 0, norms, 1)
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
