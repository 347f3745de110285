"""Element codecs: float32 <-> f16, bf16, f8e4m3, f8e5m2 (bit-exact with ml_dtypes) and i8."""
from __future__ import annotations

import numpy as np

from . import _core
from ._types import Storage

STORAGES = ("f32", "f16", "bf16", "f8e4m3", "f8e5m2", "i8")

# The numpy dtype that holds each storage's raw bits (bf16 and fp8 have no numpy dtype).
_RAW = {"f32": np.float32, "f16": np.float16, "bf16": np.uint16, "f8e4m3": np.uint8,
        "f8e5m2": np.uint8, "i8": np.int8}


def _check_storage(storage) -> str:
    if storage not in STORAGES:
        raise ValueError(f"storage must be one of {', '.join(map(repr, STORAGES))}; got {storage!r}")
    return storage


def _i8_scale(scale, shape) -> np.ndarray:
    if scale is None:
        raise ValueError("storage 'i8' needs scale= (per-dimension array or a scalar): "
                         "x is stored as round(x / scale) clamped to [-127, 127]")
    s = np.asarray(scale, dtype=np.float32)
    if not np.isfinite(s).all() or (s <= 0).any():
        raise ValueError("scale must be finite and positive")
    try:
        np.broadcast_shapes(s.shape, shape)
    except ValueError:
        raise ValueError(f"scale of shape {s.shape} does not broadcast to {shape}") from None
    return s


def encode(x, storage: Storage, *, scale=None) -> np.ndarray:
    """Casts float values to `storage`, rounding to nearest even.

    Returns an array of x's shape holding the raw elements: float32 / float16 for 'f32' / 'f16',
    uint16 bit patterns for 'bf16', uint8 for the float8 formats, int8 for 'i8'. The float
    formats match ``x.astype(ml_dtypes.<type>)`` bit for bit, except that f8e4m3 saturates to
    +-448 where ml_dtypes gives NaN (OCP's saturating mode; E4M3 has no infinity). For 'i8',
    ``scale`` (scalar or per-dimension) is required. NaN or infinite input raises ValueError.
    """
    _check_storage(storage)
    x = np.asarray(x)
    if x.dtype.kind not in "fiu":
        raise TypeError(f"x must hold real numbers; got dtype {x.dtype}")
    x = np.ascontiguousarray(x, dtype=np.float32)
    if not np.isfinite(x).all():
        raise ValueError("x contains NaN or infinity; only finite values can be encoded")
    if storage == "i8":
        x = np.ascontiguousarray(x / _i8_scale(scale, x.shape), dtype=np.float32)
    raw = _core.encode(x.reshape(-1), storage)
    return raw.view(_RAW[storage]).reshape(x.shape)


def decode(codes, storage: Storage, *, scale=None) -> np.ndarray:
    """Inverse of :func:`encode`: raw elements of `storage` back to float32."""
    _check_storage(storage)
    codes = np.asarray(codes)
    expected = np.dtype(_RAW[storage])
    if codes.dtype != expected and not (codes.dtype == np.uint8 and storage == "i8"):
        raise TypeError(f"codes for storage {storage!r} must have dtype {expected}; "
                        f"got {codes.dtype}")
    shape = codes.shape
    out = _core.decode(np.ascontiguousarray(codes).reshape(-1).view(np.uint8), storage)
    out = out.reshape(shape)
    if storage == "i8":
        out = out * _i8_scale(scale, shape)
    return out.astype(np.float32, copy=False)


def bytes_per_element(storage: str) -> int:
    return int(_core.storage_bytes(_check_storage(storage)))
