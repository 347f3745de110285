import ml_dtypes
import numpy as np
import pytest

import quanta

ML = {"f16": np.float16, "bf16": ml_dtypes.bfloat16, "f8e4m3": ml_dtypes.float8_e4m3fn,
      "f8e5m2": ml_dtypes.float8_e5m2}
MAXV = {"f16": 65504.0, "bf16": 3.0e38, "f8e4m3": 448.0, "f8e5m2": 57344.0}


def bits(a):
    return a.view(np.uint16 if a.dtype.itemsize == 2 else np.uint8)


def sample_values(rng, maxv):
    """Values over the whole range: tiny (subnormal), normal, near the top, exact halfway ties."""
    parts = [
        rng.standard_normal(20000) * 10.0 ** rng.uniform(-12, 4, 20000),
        rng.uniform(-maxv, maxv, 5000),
        np.array([0.0, -0.0, 1.0, -1.0, maxv, -maxv, 1e-45, 2.0 ** -9, 2.0 ** -10, 2.0 ** -17,
                  2.0 ** -25, 1.0 + 2.0 ** -4, 1.0 + 3 * 2.0 ** -4, 1.0 + 2.0 ** -11,
                  1.0 + 2.0 ** -8, 0.0625 * (1 + 2.0 ** -4)]),
    ]
    x = np.concatenate(parts).astype(np.float32)
    return x[np.abs(x) <= maxv]


@pytest.mark.parametrize("storage", sorted(ML))
def test_encode_matches_ml_dtypes_bit_for_bit(storage, rng):
    x = sample_values(rng, MAXV[storage])
    # Also every float32 halfway point between two neighbouring codes of the target format.
    codes = np.arange(1 << (16 if ML[storage] in (np.float16, ml_dtypes.bfloat16) else 8))
    codes = codes.astype(np.uint16 if len(codes) > 256 else np.uint8)
    vals = codes.view(ML[storage]).astype(np.float32)
    ok = np.isfinite(vals) & (np.abs(vals) <= MAXV[storage])
    v = np.sort(vals[ok])
    mids = ((v[:-1].astype(np.float64) + v[1:]) / 2).astype(np.float32)
    x = np.concatenate([x, mids, v])
    ours = quanta.encode(x, storage)
    ref = x.astype(ML[storage])
    np.testing.assert_array_equal(bits(ours), bits(ref))


@pytest.mark.parametrize("storage", sorted(ML))
def test_decode_every_code_matches_ml_dtypes(storage):
    n = 1 << (16 if storage in ("f16", "bf16") else 8)
    codes = np.arange(n).astype(np.uint16 if n > 256 else np.uint8)
    raw = codes.view(np.float16) if storage == "f16" else codes
    ref = codes.view(ML[storage]).astype(np.float32)
    ours = quanta.decode(raw, storage)
    fin = np.isfinite(ref)
    np.testing.assert_array_equal(ours[fin], ref[fin])
    assert np.array_equal(np.isnan(ours), np.isnan(ref))


def test_e4m3_saturates_instead_of_nan():
    x = np.array([448.0, 460.0, 500.0, 1e6, -1e6], np.float32)
    out = quanta.decode(quanta.encode(x, "f8e4m3"), "f8e4m3")
    np.testing.assert_array_equal(out, [448, 448, 448, 448, -448])
    inf = quanta.decode(quanta.encode(np.array([1e6], np.float32), "f8e5m2"), "f8e5m2")
    assert np.isinf(inf[0])


@pytest.mark.parametrize("storage,rel", [("f16", 2.0 ** -11), ("bf16", 2.0 ** -8),
                                         ("f8e4m3", 2.0 ** -4), ("f8e5m2", 2.0 ** -3)])
def test_round_trip_error_within_half_ulp(storage, rel, rng):
    x = (rng.uniform(1, 2, 10000) * 2.0 ** rng.integers(-4, 6, 10000)).astype(np.float32)
    y = quanta.decode(quanta.encode(x, storage), storage)
    assert np.all(np.abs(y - x) <= rel * np.abs(x) * (1 + 1e-6))


def test_i8_round_trip(rng):
    x = rng.standard_normal((100, 16)).astype(np.float32)
    scale = np.abs(x).max(0) / 127
    codes = quanta.encode(x, "i8", scale=scale)
    assert codes.dtype == np.int8 and codes.shape == x.shape
    assert np.abs(codes.astype(int)).max() <= 127
    y = quanta.decode(codes, "i8", scale=scale)
    assert np.all(np.abs(y - x) <= scale / 2 * (1 + 1e-5))


def test_codec_errors():
    x = np.ones(4, np.float32)
    with pytest.raises(ValueError, match="NaN"):
        quanta.encode(np.array([1.0, np.nan], np.float32), "f16")
    with pytest.raises(ValueError, match="NaN"):
        quanta.encode(np.array([np.inf], np.float32), "f8e4m3")
    with pytest.raises(ValueError, match="storage"):
        quanta.encode(x, "f4")
    with pytest.raises(TypeError):
        quanta.encode(np.array(["a"]), "f16")
    with pytest.raises(ValueError, match="scale"):
        quanta.encode(x, "i8")
    with pytest.raises(TypeError, match="dtype"):
        quanta.decode(np.zeros(4, np.float32), "bf16")
