"""One adapter per system, all with the same interface.

    a = SomeAdapter(...)
    a.name              # e.g. "faiss SQ fp16"
    a.build(xb)         # float32 (n, d), rows L2-normalized
    D, I = a.search(xq, k, threads)   # (nq, k) similarities / int64 ids
    a.bytes_per_vector  # storage bytes per base vector

Metric is inner product everywhere (vectors are normalized, so this is also
cosine).  Every import is guarded: ``all_adapters()`` returns adapters for
the systems that import, plus ``Unavailable`` placeholders carrying the
reason for those that do not, so the harness always runs the peers even
while quanta is missing.
"""

from __future__ import annotations

import contextlib
import os

import numpy as np

try:  # one switch for every BLAS / OpenMP pool loaded in the process
    from threadpoolctl import threadpool_limits as _threadpool_limits
except ImportError:  # pragma: no cover
    _threadpool_limits = None


@contextlib.contextmanager
def limit_threads(threads: int):
    if _threadpool_limits is None:
        yield
        return
    with _threadpool_limits(limits=threads):
        yield


def openblas_coretype_fix() -> str | None:
    """Pin OPENBLAS_CORETYPE from the CPU flags, before faiss is imported.

    The faiss-cpu wheel bundles its own OpenBLAS (0.3.15 in faiss-cpu 1.15.1)
    which detects some virtualized AVX-512 Xeons as "Prescott" (plain SSE3
    kernels, ~6x slower sgemm; seen on this project's machines).  Setting
    OPENBLAS_CORETYPE to what the flags support restores its real kernels.
    Does nothing when the variable is already set or faiss is already loaded.
    Returns the value in force (or None).
    """
    import sys
    if "OPENBLAS_CORETYPE" in os.environ or "faiss" in sys.modules:
        return os.environ.get("OPENBLAS_CORETYPE")
    try:
        with open("/proc/cpuinfo") as f:
            flags = next((ln.split(":", 1)[1].split() for ln in f if ln.startswith("flags")), [])
    except OSError:
        return None
    fl = set(flags)
    if {"avx512f", "avx512bw", "avx512vl", "avx512dq", "avx512cd"} <= fl:
        os.environ["OPENBLAS_CORETYPE"] = "SkylakeX"
    elif {"avx2", "fma"} <= fl:
        os.environ["OPENBLAS_CORETYPE"] = "Haswell"
    return os.environ.get("OPENBLAS_CORETYPE")


def _as_f32(x) -> np.ndarray:
    return np.ascontiguousarray(x, dtype=np.float32)


class Adapter:
    name = "?"
    system = "?"
    storage = "?"        # f32 | f16 | bf16 | f8e4m3 | f8e5m2 | i8 | ...
    group = "?"          # 32bit | 16bit | 8bit: what it is compared with
    error: str | None = None

    def __init__(self):
        self.n = 0
        self.d = 0

    def build(self, xb: np.ndarray) -> None:
        raise NotImplementedError

    def search(self, xq: np.ndarray, k: int, threads: int = 1):
        raise NotImplementedError

    @property
    def bytes_per_vector(self) -> float:
        raise NotImplementedError

    def close(self) -> None:
        pass

    def __repr__(self):
        return f"<{type(self).__name__} {self.name}>"


class Unavailable(Adapter):
    """Placeholder for a system that cannot be imported; ``error`` says why."""

    def __init__(self, name, system, storage, group, error):
        super().__init__()
        self.name, self.system, self.storage, self.group = name, system, storage, group
        self.error = error

    def build(self, xb):
        raise RuntimeError(self.error)

    def search(self, xq, k, threads=1):
        raise RuntimeError(self.error)

    @property
    def bytes_per_vector(self):
        return float("nan")


# --------------------------------------------------------------------------
# numpy baseline
# --------------------------------------------------------------------------

class NumpyFlat(Adapter):
    """float32 ``xq @ xb.T`` (BLAS) + argpartition, chunked over queries."""
    name, system, storage, group = "numpy f32", "numpy", "f32", "32bit"

    def __init__(self, score_bytes: int = 256 << 20):
        super().__init__()
        self.score_bytes = score_bytes
        self.xb = None

    def build(self, xb):
        self.xb = _as_f32(xb)
        self.n, self.d = self.xb.shape

    def search(self, xq, k, threads=1):
        xq = np.atleast_2d(_as_f32(xq))
        nq = xq.shape[0]
        k = min(k, self.n)
        D = np.empty((nq, k), dtype=np.float32)
        I = np.empty((nq, k), dtype=np.int64)
        step = max(1, min(nq, self.score_bytes // (4 * self.n)))
        with limit_threads(threads):
            for s in range(0, nq, step):
                S = xq[s:s + step] @ self.xb.T
                part = np.argpartition(S, self.n - k, axis=1)[:, self.n - k:]
                vals = np.take_along_axis(S, part, axis=1)
                order = np.argsort(-vals, axis=1)
                I[s:s + step] = np.take_along_axis(part, order, axis=1)
                D[s:s + step] = np.take_along_axis(vals, order, axis=1)
        return D, I

    @property
    def bytes_per_vector(self):
        return 4.0 * self.d


# --------------------------------------------------------------------------
# faiss
# --------------------------------------------------------------------------

class FaissFlat(Adapter):
    """faiss IndexFlatIP or IndexScalarQuantizer (fp16, bf16, 8bit), inner product."""

    KINDS = {  # kind -> (storage label, group, ScalarQuantizer attribute or None)
        "flat": ("f32", "32bit", None),
        "fp16": ("f16", "16bit", "QT_fp16"),
        "bf16": ("bf16", "16bit", "QT_bf16"),
        "8bit": ("sq8", "8bit", "QT_8bit"),
    }

    def __init__(self, kind: str):
        super().__init__()
        import faiss  # noqa: F401  (ImportError -> Unavailable)
        self.faiss = faiss
        self.kind = kind
        self.storage, self.group, qt = self.KINDS[kind]
        self.name = "faiss IndexFlatIP" if qt is None else f"faiss SQ {kind}"
        self.system = "faiss"
        if qt is not None and not hasattr(faiss.ScalarQuantizer, qt):
            raise ImportError(f"faiss {faiss.__version__} has no ScalarQuantizer.{qt}")
        self.qt = None if qt is None else getattr(faiss.ScalarQuantizer, qt)
        self.index = None

    def build(self, xb):
        faiss = self.faiss
        xb = _as_f32(xb)
        self.n, self.d = xb.shape
        if self.qt is None:
            self.index = faiss.IndexFlatIP(self.d)
        else:
            self.index = faiss.IndexScalarQuantizer(self.d, self.qt, faiss.METRIC_INNER_PRODUCT)
        if not self.index.is_trained:
            self.index.train(xb)
        self.index.add(xb)

    def search(self, xq, k, threads=1):
        xq = np.atleast_2d(_as_f32(xq))
        self.faiss.omp_set_num_threads(threads)
        with limit_threads(threads):
            D, I = self.index.search(xq, k)
        return D, I

    @property
    def bytes_per_vector(self):
        try:
            return float(self.index.sa_code_size())
        except Exception:
            return {"flat": 4.0, "fp16": 2.0, "bf16": 2.0, "8bit": 1.0}[self.kind] * self.d

    def close(self):
        self.index = None


# --------------------------------------------------------------------------
# usearch exact search
# --------------------------------------------------------------------------

class USearchExact(Adapter):
    """``usearch.index.search(dataset, queries, k, MetricKind.IP, exact=True)``.

    Exact search takes the storage type from the dataset buffer, so the base
    is stored pre-converted:
      f32, f16: numpy float32 / float16;
      bf16, e4m3, e5m2: uint16 / uint8 buffers of the bit patterns (made with
        ml_dtypes), passed with ``dtype="bf16"|"e4m3"|"e5m2"``;
      i8: int8 = trunc(clip(x, -1, 1) * 127), the same cast that usearch's
        ``Index(dtype="i8")`` applies to float input (checked: identical codes
        and identical exact-search results), searched with usearch's i8 kernel.
    Queries are converted the same way inside ``search`` (included in timing,
    as usearch's own Index would cast them too).
    """

    def __init__(self, storage: str):
        super().__init__()
        from usearch.index import MetricKind
        from usearch.index import search as us_search
        self.us_search = us_search
        self.metric = MetricKind.IP
        self.storage = storage
        self.system = "usearch"
        self.name = f"usearch exact {storage}"
        self.group = {"f32": "32bit", "f16": "16bit", "bf16": "16bit",
                      "e4m3": "8bit", "e5m2": "8bit", "i8": "8bit"}[storage]
        self.dtype_arg = None
        if storage in ("bf16", "e4m3", "e5m2"):
            import ml_dtypes  # noqa: F401  (ImportError -> Unavailable)
            self.dtype_arg = storage
        self.data = None

    def _convert(self, x: np.ndarray) -> np.ndarray:
        s = self.storage
        if s == "f32":
            return _as_f32(x)
        if s == "f16":
            return np.ascontiguousarray(x, dtype=np.float16)
        if s == "i8":
            return np.trunc(np.clip(x, -1.0, 1.0) * 127.0).astype(np.int8)
        import ml_dtypes
        if s == "bf16":
            return np.ascontiguousarray(x.astype(ml_dtypes.bfloat16).view(np.uint16))
        if s == "e4m3":
            return np.ascontiguousarray(x.astype(ml_dtypes.float8_e4m3fn).view(np.uint8))
        if s == "e5m2":
            return np.ascontiguousarray(x.astype(ml_dtypes.float8_e5m2).view(np.uint8))
        raise ValueError(s)

    def build(self, xb):
        xb = _as_f32(xb)
        self.n, self.d = xb.shape
        self.data = self._convert(xb)

    def search(self, xq, k, threads=1):
        q = self._convert(np.atleast_2d(_as_f32(xq)))
        kw = {"dtype": self.dtype_arg} if self.dtype_arg else {}
        m = self.us_search(self.data, q, k, self.metric, exact=True, threads=threads, **kw)
        I = np.atleast_2d(np.asarray(m.keys)).astype(np.int64, copy=False)
        dist = np.atleast_2d(np.asarray(m.distances, dtype=np.float64))
        sim = 1.0 - dist          # usearch IP distance is 1 - dot
        if self.storage == "i8":
            sim = sim / (127.0 * 127.0)
        return sim.astype(np.float32), I

    @property
    def bytes_per_vector(self):
        return float(self.data.itemsize * self.d) if self.data is not None else float("nan")

    def close(self):
        self.data = None


# --------------------------------------------------------------------------
# quanta
# --------------------------------------------------------------------------

QUANTA_STORAGES = ("f32", "f16", "bf16", "f8e4m3", "f8e5m2", "i8")


class QuantaFlat(Adapter):
    """``quanta.FlatIndex(dim, metric="ip", storage=s[, f8_scale=...])``."""

    def __init__(self, storage: str, f8_scale: str | None = None):
        super().__init__()
        import quanta  # ImportError -> Unavailable
        self.quanta = quanta
        self.storage = storage
        self.f8_scale = f8_scale
        self.system = "quanta"
        self.name = f"quanta {storage}" + (f" scale={f8_scale}" if f8_scale else "")
        self.group = {"f32": "32bit", "f16": "16bit", "bf16": "16bit"}.get(storage, "8bit")
        self.index = None

    def build(self, xb):
        xb = _as_f32(xb)
        self.n, self.d = xb.shape
        kw = {}
        if self.f8_scale is not None:
            kw["f8_scale"] = self.f8_scale
        idx = self.quanta.FlatIndex(self.d, metric="ip", storage=self.storage, **kw)
        if not getattr(idx, "is_trained", True):
            idx.train(xb)
        idx.add(xb)
        self.index = idx

    def search(self, xq, k, threads=1):
        xq = np.atleast_2d(_as_f32(xq))
        r = self.index.search(xq, k, threads=threads)
        D = getattr(r, "distances", None)
        I = getattr(r, "ids", None)
        if D is None or I is None:
            D, I = r[0], r[1]
        return (np.atleast_2d(np.asarray(D)),
                np.atleast_2d(np.asarray(I)).astype(np.int64, copy=False))

    @property
    def bytes_per_vector(self):
        if self.index is None or not self.n:
            return float("nan")
        try:
            return float(self.index.memory_usage) / self.n
        except Exception:
            return float("nan")

    def close(self):
        self.index = None


# --------------------------------------------------------------------------
# registry
# --------------------------------------------------------------------------

def _make(factory, name, system, storage, group):
    try:
        return factory()
    except Exception as e:  # ImportError, missing qtype, ...
        return Unavailable(name, system, storage, group, f"{type(e).__name__}: {e}")


def all_adapters(f8_scales=(None,), fix_openblas: bool = True) -> list[Adapter]:
    """Every system/storage of the benchmark, in table order."""
    if fix_openblas:
        openblas_coretype_fix()
    out = [_make(NumpyFlat, "numpy f32", "numpy", "f32", "32bit")]
    for kind, (storage, group, _) in FaissFlat.KINDS.items():
        name = "faiss IndexFlatIP" if kind == "flat" else f"faiss SQ {kind}"
        out.append(_make(lambda kind=kind: FaissFlat(kind), name, "faiss", storage, group))
    for s in ("f16", "bf16", "e4m3", "e5m2", "i8"):
        grp = "16bit" if s in ("f16", "bf16") else "8bit"
        out.append(_make(lambda s=s: USearchExact(s), f"usearch exact {s}", "usearch", s, grp))
    for s in QUANTA_STORAGES:
        scales = f8_scales if s.startswith("f8") else (None,)
        for sc in scales:
            name = f"quanta {s}" + (f" scale={sc}" if sc else "")
            grp = {"f32": "32bit", "f16": "16bit", "bf16": "16bit"}.get(s, "8bit")
            out.append(_make(lambda s=s, sc=sc: QuantaFlat(s, sc), name, "quanta", s, grp))
    return out


# quanta storage -> names of the peers it is compared with
PEERS = {
    "f32": ["faiss IndexFlatIP", "numpy f32"],
    "f16": ["faiss SQ fp16", "usearch exact f16"],
    "bf16": ["faiss SQ bf16", "usearch exact bf16", "usearch exact f16"],
    "f8e4m3": ["faiss SQ 8bit", "usearch exact i8", "usearch exact e4m3"],
    "f8e5m2": ["faiss SQ 8bit", "usearch exact i8", "usearch exact e5m2"],
    "i8": ["faiss SQ 8bit", "usearch exact i8"],
}


def default_threads() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover
        return os.cpu_count() or 1
