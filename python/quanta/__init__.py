"""quanta: compressed embedding storage and fast vector search.

>>> import numpy as np, quanta
>>> index = quanta.FlatIndex(384, metric="ip", storage="f8e4m3")
>>> index.add(np.random.rand(1000, 384).astype(np.float32))
>>> D, I = index.search(np.random.rand(5, 384).astype(np.float32), k=10)
"""
from __future__ import annotations


from . import _core
from ._core import QuantaError
from ._validate import MAX_THREADS as _MAX_THREADS, as_int as _as_int
from .factory import index_factory
from .filter import Filter
from .flat import FlatIndex, RangeResult, SearchResult
from .io import FormatError, from_bytes, load, read_header, verify
from . import datasets  # noqa: F401  (quanta.datasets.clustered for users)
from .kmeans import KMeansResult, kmeans
from .pq import PQ, IVFPQIndex, PQIndex
from .binary import BinaryIndex, IVFBinaryIndex, RecurrentBinarizer
from .multivector import FDEEncoder, MultiVectorIndex, merge_query_tokens
from .sparse import SparseIndex
from .graph import GraphIndex
from . import opq  # noqa: F401  (quanta.opq.train_rotation)
from . import native  # noqa: F401  (quanta.native: the C++ contract, for embedding)
from .storage import STORAGES, decode, encode
from ._types import Metric, Storage

try:  # one source: the version in pyproject.toml, as the installed package's metadata
    from importlib.metadata import PackageNotFoundError, version as _version
    __version__ = _version("quanta")
except PackageNotFoundError:  # imported from a source tree that was never installed
    __version__ = "0+unknown"

try:  # the CUDA module exists only in builds that found nvcc
    from . import _cuda
except ImportError:
    _cuda = None

__all__ = ["FlatIndex", "GraphIndex", "PQIndex", "IVFPQIndex", "PQ", "BinaryIndex", "IVFBinaryIndex", "RecurrentBinarizer", "FDEEncoder", "MultiVectorIndex", "merge_query_tokens", "SparseIndex", "index_factory", "kmeans", "KMeansResult", "SearchResult", "RangeResult", "Filter", "encode", "decode", "load", "from_bytes", "read_header", "verify",
           "build_info", "set_simd_level", "simd_level", "set_num_threads", "get_num_threads",
           "cuda_available", "cuda_status", "Metric", "Storage", "FormatError", "QuantaError", "STORAGES"]


def cuda_available() -> bool:
    """True when the CUDA module was built and a GPU is visible; :func:`cuda_status` says
    why not."""
    return _cuda is not None and _cuda.device_count() > 0


def cuda_status() -> dict:
    """Whether ``quanta.cuda`` can run here and, when it cannot, why: ``available``,
    ``reason`` ("" when available), ``devices``, and the CUDA ``runtime`` / ``driver``
    versions (1000 * major + 10 * minor; the driver's is 0 when there is none)."""
    if _cuda is None:
        return {"available": False, "devices": 0, "runtime": 0, "driver": 0,
                "reason": "this build of quanta has no CUDA module (nvcc was not found when it "
                          "was built; rebuild with QUANTA_CUDA=ON and the CUDA toolkit)"}
    devices, runtime, driver = _cuda.device_count(), _cuda.runtime_version(), _cuda.driver_version()
    reason = ""
    if devices == 0:
        if driver == 0:  # the runtime then reports "driver version is insufficient"
            reason = "no NVIDIA driver was found (libcuda could not be loaded)"
        elif driver < runtime:
            reason = (f"the NVIDIA driver supports CUDA {driver // 1000}.{driver % 1000 // 10} but "
                      f"quanta was built with CUDA {runtime // 1000}.{runtime % 1000 // 10}: update "
                      f"the driver or rebuild quanta with an older CUDA toolkit")
        else:
            reason = _cuda.device_error() or "no CUDA device is visible"
    return {"available": devices > 0, "devices": devices, "runtime": runtime, "driver": driver,
            "reason": reason}


def set_simd_level(level: str) -> None:
    """Lowers (or restores) the SIMD level, never above the CPU's: 'scalar', 'avx2' or
    'avx512' on x86-64, 'scalar' or 'neon' on AArch64 (``build_info()["simd_supported"]``)."""
    if not isinstance(level, str):
        raise TypeError("level must be a string: 'scalar', 'avx2', 'avx512' or 'neon'")
    _core.set_simd_level(level)


def simd_level() -> str:
    """The SIMD level the kernels use now."""
    return _core.active_isa()


def set_num_threads(n: int) -> None:
    """Default thread count for calls with threads=0. 0 goes back to the environment's
    default: QUANTA_NUM_THREADS, else OMP_NUM_THREADS, else the CPUs this process may run on
    (its affinity mask, as set by taskset or a container), read once, at the first call."""
    _core.set_default_threads(_as_int(n, "n", 0, _MAX_THREADS))


def get_num_threads() -> int:
    """The thread count calls with threads=0 use."""
    return _core.default_threads()


def build_info() -> dict:
    """What was compiled and what is active; include it in bug reports."""
    info = {
        "version": __version__,
        "simd_compiled": _core.compiled_isas(),
        "simd_supported": _core.supported_isas(),
        "simd_active": _core.active_isa(),
        "cpu_features": _core.cpu_features(),
        "threads": _core.default_threads(),
        "hardware_threads": _core.hardware_threads(),
        "thread_backend": "persistent pool (std::thread)",
        "compiler": _core.compiler(),
        "cuda_built": _cuda is not None,
        "cuda": cuda_status(),
    }
    return info
