"""Input checks shared by every index: clear TypeError/ValueError before anything native runs."""
from __future__ import annotations

import numpy as np


_F32 = np.dtype(np.float32)
_ML_FLOATS = ("bfloat16", "float8_e4m3fn", "float8_e5m2", "float8_e4m3", "float8_e4m3fnuz",
               "float8_e5m2fnuz", "float8_e4m3b11fnuz")


def _host_array(x, name: str) -> np.ndarray:
    """A NumPy view (or copy) of array-like input: CPU torch tensors of any float type
    (bfloat16 included), anything with DLPack, anything np.asarray takes."""
    if hasattr(x, "__cuda_array_interface__"):
        raise TypeError(f"{name} is a GPU array; use quanta.cuda for device arrays or copy it "
                        f"to the host with .get()")
    if type(x).__module__.split(".")[0] == "torch":
        if x.device.type != "cpu":
            raise TypeError(f"{name} is a torch tensor on {x.device}; move it to the CPU "
                            f"(.cpu()) or use quanta.cuda")
        x = x.detach()
        return (x.float() if x.is_floating_point() else x).numpy()
    if hasattr(x, "__dlpack__") and not hasattr(x, "__array__"):
        return np.from_dlpack(x)
    return np.asarray(x)


def as_f32_matrix(x, dim: int | None, name: str, check_finite: bool = True) -> np.ndarray:
    """Returns `x` as a C-contiguous float32 (n, dim) array (a 1-D array is one row).

    Real numeric input of another dtype is converted (this may copy); anything else raises.
    check_finite=False leaves the NaN / infinity check to the native call that follows.
    """
    # A C-contiguous float32 matrix of the right width (a search's usual query) is taken as
    # it is, after a few attribute reads.
    if not (type(x) is np.ndarray and x.dtype is _F32 and x.ndim == 2 and x.shape[1] == dim
            and x.flags.c_contiguous):
        x = _converted(x, dim, name)
    # One reduction first (a NaN or infinity makes the sum non-finite; so may an overflow,
    # which the exact test then clears): a single query costs one numpy call, not two.
    if check_finite and not np.isfinite(np.add.reduce(x, axis=None)) and not np.isfinite(x).all():
        bad = int(np.argwhere(~np.isfinite(x))[0][0])
        raise ValueError(f"{name} contains NaN or infinity (first at row {bad}); only finite "
                         f"values are accepted")
    return x


def _converted(x, dim: int | None, name: str) -> np.ndarray:
    if not isinstance(x, np.ndarray):
        x = _host_array(x, name)
    if x.dtype.kind == "V" and x.dtype.name in _ML_FLOATS:  # ml_dtypes bfloat16 / float8
        x = x.astype(np.float32)
    if x.dtype.kind not in "fiu":
        raise TypeError(f"{name} must hold real numbers (float32 preferred); got dtype {x.dtype}")
    if x.ndim == 1:
        x = x[None, :]
    if x.ndim != 2:
        raise ValueError(f"{name} must be 2-D (n, dim) or 1-D (dim,); got shape {x.shape}")
    if dim is not None and x.shape[1] != dim:
        raise ValueError(f"{name} has dim {x.shape[1]} but the index has dim {dim}")
    return np.ascontiguousarray(x, dtype=np.float32)


def as_int64s(ids, name: str) -> np.ndarray:
    """`ids` (any shape) as a C-contiguous int64 array; integer dtypes whose values fit only."""
    ids = np.asarray(ids)
    if ids.dtype.kind not in "iu":
        raise TypeError(f"{name} must be integers (int64); got dtype {ids.dtype}")
    if ids.dtype == np.uint64 and ids.size and ids.max() > INT64_MAX:
        raise ValueError(f"{name} must fit in int64")
    return np.ascontiguousarray(ids, dtype=np.int64)


def as_ids(ids, n: int, name: str = "ids") -> np.ndarray:
    """Returns `ids` as a C-contiguous int64 vector of length n; integer dtypes only."""
    ids = as_int64s(ids, name)
    if ids.ndim != 1 or ids.shape[0] != n:
        raise ValueError(f"{name} must be a 1-D array of length {n}; got shape {ids.shape}")
    if n and ids.min() < 0:
        raise ValueError(f"{name} must be non-negative (-1 marks missing results); "
                         f"got {int(ids.min())}")
    return ids


INT32_MAX = 2 ** 31 - 1
INT64_MIN, INT64_MAX = -2 ** 63, 2 ** 63 - 1
MAX_THREADS = 4096


def as_int(value, name: str, lo: int = 0, hi: int = INT32_MAX) -> int:
    """An integer argument in [lo, hi] (the native side takes 32-bit counts), checked here so
    that the error names it, not pybind's "incompatible function arguments"."""
    if type(value) is int and lo <= value <= hi:  # the common case first: one type test
        return value
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an integer; got {type(value).__name__}")
    if value < lo:
        raise ValueError(f"{name} must be >= {lo}; got {value}")
    if value > hi:
        raise ValueError(f"{name} must be <= {hi}; got {value}")
    return int(value)


def as_seed(seed) -> int:
    """A random seed: any uint64."""
    return as_int(seed, "seed", 0, 2 ** 64 - 1)


def as_k(k) -> int:
    return as_int(k, "k", 1)


def native_k(k: int, ntotal: int) -> int:
    """The k a native search is asked for: no search finds more than the index's ntotal
    vectors, so its heaps stay that small however large k is (``SearchResult.padded`` fills
    the rest)."""
    return k if k <= ntotal else max(int(ntotal), 1)


def as_nprobe(nprobe, nlist: int) -> int:
    """An IVF search's nprobe, an integer in [1, nlist]."""
    if isinstance(nprobe, bool) or not isinstance(nprobe, (int, np.integer)):
        raise TypeError(f"nprobe must be an integer; got {type(nprobe).__name__}")
    if not 1 <= nprobe <= nlist:
        raise ValueError(f"nprobe must be in [1, nlist={nlist}]; got {nprobe}")
    return int(nprobe)


def as_threads(threads) -> int:
    if type(threads) is int and 0 <= threads <= MAX_THREADS:
        return threads
    if isinstance(threads, (bool, np.bool_)) or not isinstance(threads, (int, np.integer)):
        raise TypeError(f"threads must be an integer (0 = all cores); got {type(threads).__name__}")
    if not 0 <= threads <= MAX_THREADS:
        raise ValueError(f"threads must be in [0, {MAX_THREADS}] (0 = all cores); got {threads}")
    return int(threads)


def reconstruct_ids(native, ids) -> np.ndarray:
    """native.reconstruct over checked ids; one vector for a scalar id; KeyError if unknown."""
    scalar = np.ndim(ids) == 0
    ids = np.atleast_1d(ids)
    ids = as_ids(ids, ids.shape[0]) if ids.size else np.zeros(0, np.int64)
    try:
        out = native.reconstruct(ids)
    except IndexError as e:
        raise KeyError(str(e)) from None
    return out[0] if scalar else out


def as_radius(radius) -> float:
    """A range search's radius: a finite real number."""
    if isinstance(radius, (bool, np.bool_)) or not isinstance(radius, (int, float, np.integer,
                                                                     np.floating)):
        raise TypeError(f"radius must be a real number; got {type(radius).__name__}")
    radius = float(radius)  # a Python int past float's range raises OverflowError here
    if not np.isfinite(radius):
        raise ValueError(f"radius must be finite; got {radius}")
    return radius
