// Scalar codecs between float32 and the compact storages. Rounding is round-to-nearest-even on
// the bit pattern, which is what IEEE casts and ml_dtypes do; callers reject NaN/inf first.
#include "quanta/codec/storage.hpp"

#include <cmath>
#include <cstring>
#include <stdexcept>
#include <utility>
#include <vector>

namespace quanta {

namespace {

inline uint32_t bits_of(float x) {
  uint32_t b;
  std::memcpy(&b, &x, 4);
  return b;
}
inline float float_of(uint32_t b) {
  float x;
  std::memcpy(&x, &b, 4);
  return x;
}

// float32 -> a small binary float with EB exponent bits and MB mantissa bits (IEEE layout).
// `max_code` is the largest finite magnitude code; `overflow_code` what larger values become.
template <int EB, int MB>
uint32_t narrow(float x, uint32_t max_code, uint32_t overflow_code) {
  constexpr int bias = (1 << (EB - 1)) - 1;
  constexpr int emin = 1 - bias;
  const uint32_t b = bits_of(x);
  const uint32_t sign = (b >> 31) << (EB + MB);
  const uint32_t a = b & 0x7fffffffu;
  if (a > 0x7f800000u) return sign | ((1u << (EB + MB)) - 1);  // NaN: all ones
  uint32_t mag;
  if (a < uint32_t(127 + emin) << 23) {
    // Subnormal in the small format: an integer multiple of 2^(emin - MB). Scaling by a power
    // of two is exact, and nearbyint rounds half to even.
    mag = uint32_t(std::nearbyint(float_of(a) * std::ldexp(1.0f, MB - emin)));
  } else {
    constexpr int shift = 23 - MB;
    uint32_t r = a + ((1u << (shift - 1)) - 1) + ((a >> shift) & 1u);
    mag = (r >> shift) - (uint32_t(127 - bias) << MB);
  }
  if (mag > max_code) mag = overflow_code;
  return sign | mag;
}

template <int EB, int MB>
float widen(uint32_t h) {
  constexpr int bias = (1 << (EB - 1)) - 1;
  const uint32_t sign = (h >> (EB + MB)) & 1u;
  const uint32_t e = (h >> MB) & ((1u << EB) - 1);
  const uint32_t m = h & ((1u << MB) - 1);
  float v;
  if (e == 0) {
    v = std::ldexp(float(m), 1 - bias - MB);
  } else {
    v = float_of(((e + 127 - bias) << 23) | (m << (23 - MB)));
  }
  return sign ? -v : v;
}

struct F8Tables {
  float e4m3[256];
  float e5m2[256];
  F8Tables() {
    for (int i = 0; i < 256; ++i) {
      e4m3[i] = ((i & 0x7f) == 0x7f) ? NAN : widen<4, 3>(uint32_t(i));
      e5m2[i] = widen<5, 2>(uint32_t(i));
      if ((i & 0x7c) == 0x7c) e5m2[i] = (i & 0x3) ? NAN : ((i & 0x80) ? -INFINITY : INFINITY);
    }
  }
};
const F8Tables& f8_tables() {
  static const F8Tables t;
  return t;
}

}  // namespace

size_t storage_bytes(Storage s) {
  switch (s) {
    case Storage::f32: return 4;
    case Storage::f16:
    case Storage::bf16: return 2;
    default: return 1;
  }
}

const char* storage_name(Storage s) {
  static const char* names[kNumStorages] = {"f32", "f16", "bf16", "f8e4m3", "f8e5m2", "i8"};
  return names[int(s)];
}

Storage storage_from_name(const std::string& name) {
  for (int i = 0; i < kNumStorages; ++i)
    if (name == storage_name(Storage(i))) return Storage(i);
  throw std::invalid_argument("storage must be one of 'f32', 'f16', 'bf16', 'f8e4m3', 'f8e5m2', "
                              "'i8'; got '" + name + "'");
}

float storage_max(Storage s) {
  switch (s) {
    case Storage::f32: return 3.4028235e38f;
    case Storage::f16: return 65504.0f;
    case Storage::bf16: return 3.3895314e38f;
    case Storage::f8e4m3: return 448.0f;
    case Storage::f8e5m2: return 57344.0f;
    case Storage::i8: return 127.0f;
  }
  return 0.0f;
}

uint16_t f32_to_f16(float x) { return uint16_t(narrow<5, 10>(x, 0x7bff, 0x7c00)); }
float f16_to_f32(uint16_t h) {
  if ((h & 0x7c00) == 0x7c00) {
    if (h & 0x3ff) return NAN;
    return (h & 0x8000) ? -INFINITY : INFINITY;
  }
  return widen<5, 10>(h);
}

uint16_t f32_to_bf16(float x) {
  const uint32_t b = bits_of(x);
  if ((b & 0x7fffffffu) > 0x7f800000u) return uint16_t((b >> 16) | 0x40);  // quiet NaN
  return uint16_t((b + 0x7fffu + ((b >> 16) & 1u)) >> 16);
}
float bf16_to_f32(uint16_t h) { return float_of(uint32_t(h) << 16); }

// E4M3 has no infinity: values past 448 saturate (OCP's saturating mode), never become NaN.
uint8_t f32_to_e4m3(float x) { return uint8_t(narrow<4, 3>(x, 0x7e, 0x7e)); }
uint8_t f32_to_e5m2(float x) { return uint8_t(narrow<5, 2>(x, 0x7b, 0x7c)); }
float e4m3_to_f32(uint8_t b) { return f8_tables().e4m3[b]; }
float e5m2_to_f32(uint8_t b) { return f8_tables().e5m2[b]; }

void encode_array(Storage s, const float* x, size_t n, uint8_t* out) {
  switch (s) {
    case Storage::f32: std::memcpy(out, x, n * 4); break;
    case Storage::f16:
      for (size_t i = 0; i < n; ++i) {
        uint16_t h = f32_to_f16(x[i]);
        std::memcpy(out + 2 * i, &h, 2);
      }
      break;
    case Storage::bf16:
      for (size_t i = 0; i < n; ++i) {
        uint16_t h = f32_to_bf16(x[i]);
        std::memcpy(out + 2 * i, &h, 2);
      }
      break;
    case Storage::f8e4m3:
      for (size_t i = 0; i < n; ++i) out[i] = f32_to_e4m3(x[i]);
      break;
    case Storage::f8e5m2:
      for (size_t i = 0; i < n; ++i) out[i] = f32_to_e5m2(x[i]);
      break;
    case Storage::i8:
      for (size_t i = 0; i < n; ++i) {
        float v = std::nearbyint(x[i]);
        v = v > 127.0f ? 127.0f : (v < -127.0f ? -127.0f : v);
        out[i] = uint8_t(int8_t(v));
      }
      break;
  }
}

void decode_array(Storage s, const uint8_t* codes, size_t n, float* out) {
  switch (s) {
    case Storage::f32: std::memcpy(out, codes, n * 4); break;
    case Storage::f16:
      for (size_t i = 0; i < n; ++i) {
        uint16_t h;
        std::memcpy(&h, codes + 2 * i, 2);
        out[i] = f16_to_f32(h);
      }
      break;
    case Storage::bf16:
      for (size_t i = 0; i < n; ++i) {
        uint16_t h;
        std::memcpy(&h, codes + 2 * i, 2);
        out[i] = bf16_to_f32(h);
      }
      break;
    case Storage::f8e4m3:
      for (size_t i = 0; i < n; ++i) out[i] = f8_tables().e4m3[codes[i]];
      break;
    case Storage::f8e5m2:
      for (size_t i = 0; i < n; ++i) out[i] = f8_tables().e5m2[codes[i]];
      break;
    case Storage::i8:
      for (size_t i = 0; i < n; ++i) out[i] = float(int8_t(codes[i]));
      break;
  }
}

void round_f8_anisotropic(Storage s, const float* x, size_t n, float eta, uint8_t* codes) {
  const float* table = s == Storage::f8e4m3 ? f8_tables().e4m3 : f8_tables().e5m2;
  const int top = s == Storage::f8e4m3 ? 0x7e : 0x7b;  // largest finite magnitude code
  double x2 = 0, dot = 0;
  std::vector<float> err(n), alt_err(n);
  std::vector<uint8_t> alt(n);
  for (size_t i = 0; i < n; ++i) {
    const int m = codes[i] & 0x7f, sign = codes[i] & 0x80;
    const float ax = std::fabs(x[i]);
    int a = table[m] > ax ? m - 1 : m + 1;
    if (a < 0 || a > top) a = m;  // no neighbour on that side
    alt[i] = uint8_t(sign | a);
    err[i] = table[codes[i]] - x[i];
    alt_err[i] = table[alt[i]] - x[i];
    x2 += double(x[i]) * x[i];
    dot += double(err[i]) * x[i];
  }
  if (x2 == 0) return;
  const double w = eta / x2;
  // Cyclic coordinate descent: each flip lowers the loss, so sweeps end when one flips
  // nothing; the cap keeps the cost linear in n (real embeddings settle in 3-10 sweeps; a
  // greedy best-flip-first search reached the same loss at n^2 cost).
  for (int sweep = 0; sweep < 16; ++sweep) {
    bool flipped = false;
    for (size_t i = 0; i < n; ++i) {
      const double d = double(alt_err[i] - err[i]) * x[i];
      const double delta = w * (d * (2 * dot + d)) + double(alt_err[i]) * alt_err[i] -
                           double(err[i]) * err[i];
      if (delta >= 0) continue;
      dot += d;
      std::swap(codes[i], alt[i]);
      std::swap(err[i], alt_err[i]);
      flipped = true;
    }
    if (!flipped) break;
  }
}

}  // namespace quanta
