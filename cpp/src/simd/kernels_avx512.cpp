// AVX-512 kernels (F, BW, VL, DQ; VNNI for int8 x int8 when the CPU has it).
// Built with AVX-512 flags; only called after dispatch has checked the CPU.
#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "quanta/simd/kernels.hpp"

namespace quanta {

namespace {

constexpr int kMq = 32;  // two zmm of queries
constexpr int kMr = 14;  // 28 accumulators

// 16 elements starting at `p` (element index) of a stored row, widened to float32. `m` masks
// the tail. E4M3 comes out scaled by 2^-8 (exact); callers multiply the sum by 256.
template <Storage S>
inline __m512 load16(const uint8_t* row, size_t p, __mmask16 m) {
  if constexpr (S == Storage::f32) {
    return _mm512_maskz_loadu_ps(m, reinterpret_cast<const float*>(row) + p);
  } else if constexpr (S == Storage::f16) {
    return _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(m, row + 2 * p));
  } else if constexpr (S == Storage::bf16) {
    __m512i w = _mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(m, row + 2 * p));
    return _mm512_castsi512_ps(_mm512_slli_epi32(w, 16));
  } else if constexpr (S == Storage::f8e4m3) {
    // fp16 bits = sign << 15 | (exponent, mantissa) << 7 give the E4M3 value times 2^-8.
    // Sign-extending puts the sign in bits 8..15; after << 7 only bit 14 needs clearing.
    __m256i b = _mm256_cvtepi8_epi16(_mm_maskz_loadu_epi8(m, row + p));
    return _mm512_cvtph_ps(_mm256_and_si256(_mm256_slli_epi16(b, 7), _mm256_set1_epi16(short(0xBFFF))));
  } else if constexpr (S == Storage::f8e5m2) {
    __m256i b = _mm256_cvtepu8_epi16(_mm_maskz_loadu_epi8(m, row + p));
    return _mm512_cvtph_ps(_mm256_slli_epi16(b, 8));
  } else {
    return _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_maskz_loadu_epi8(m, row + p)));
  }
}

template <Storage S>
constexpr float post_scale() {
  return S == Storage::f8e4m3 ? 256.0f : 1.0f;
}

// i8 rows against a float query: the query is rounded to int16 with one scale (relative
// error 2^-16, far below the int8 codes' own), so each 32 elements cost one widen and one
// vpmaddwd instead of two widen + convert + FMA. Exact int32 sums while dim <= 4096.
void dot_rows_i8_q16(const float* q, const uint8_t* codes, size_t n, size_t dim, float* out) {
  float qmax = 0.0f;
  for (size_t p = 0; p < dim; ++p) qmax = std::max(qmax, std::fabs(q[p]));
  const float scale = qmax > 0.0f ? qmax / 32767.0f : 1.0f;
  std::vector<int16_t> q16(dim);
  for (size_t p = 0; p < dim; ++p) q16[p] = int16_t(std::nearbyint(q[p] / scale));
  const size_t full = dim / 32 * 32;
  const __mmask32 tail = dim - full == 0 ? 0 : __mmask32(~0u >> (32 - (dim - full)));
  const size_t ahead = 4096 + 4 * dim;
  for (size_t i = 0; i < n; ++i) {
    const int8_t* r = reinterpret_cast<const int8_t*>(codes) + i * dim;
    for (size_t off = 0; off < dim; off += 64)
      _mm_prefetch(reinterpret_cast<const char*>(r + ahead + off), _MM_HINT_T0);
    __m512i acc = _mm512_setzero_si512();
    for (size_t p = 0; p < dim; p += 32) {
      const __mmask32 m = p < full ? ~0u : tail;
      const __m512i qv = _mm512_maskz_loadu_epi16(m, q16.data() + p);
      const __m512i cv = _mm512_cvtepi8_epi16(_mm256_maskz_loadu_epi8(m, r + p));
      acc = _mm512_add_epi32(acc, _mm512_madd_epi16(qv, cv));
    }
    out[i] = float(_mm512_reduce_add_epi32(acc)) * scale;
  }
}

// Float8 rows with AVX512-VBMI: every E4M3 / E5M2 value is exactly a bfloat16, so two
// 128-entry byte tables (vpermi2b) give the two bytes of its bf16 pattern, and bf16 widens to
// float32 with one shift or mask. 64 elements cost about 13 uops instead of 24 through fp16.
// The bytes come out lane-interleaved; the query is permuted once to match (see fp8_order).
struct Fp8Tables {
  __m512i lo_a, lo_b, hi_a, hi_b;  // low / high bf16 byte, magnitudes 0..63 and 64..127
};

// The byte tables of one format, built once (a search calls this per query or per row).
struct Fp8Bytes {
  alignas(64) uint8_t lo[128];
  alignas(64) uint8_t hi[128];
  explicit Fp8Bytes(Storage s) {
    for (int m = 0; m < 128; ++m) {
      const uint8_t code = uint8_t(m);
      const float v = s == Storage::f8e4m3 ? e4m3_to_f32(code) : e5m2_to_f32(code);
      const uint16_t b = std::isfinite(v) ? f32_to_bf16(v) : 0;  // NaN/inf are never stored
      lo[m] = uint8_t(b & 0xff);
      hi[m] = uint8_t(b >> 8);
    }
  }
};

Fp8Tables fp8_tables(Storage s) {
  static const Fp8Bytes e4m3(Storage::f8e4m3), e5m2(Storage::f8e5m2);
  const Fp8Bytes& t = s == Storage::f8e4m3 ? e4m3 : e5m2;
  return {_mm512_load_si512(t.lo), _mm512_load_si512(t.lo + 64), _mm512_load_si512(t.hi),
          _mm512_load_si512(t.hi + 64)};
}

// Element (within a 64-block) that lane j of the k-th widened vector holds.
inline size_t fp8_order(size_t k, size_t j) {
  return 16 * (j / 4) + 8 * (k / 2) + 2 * (j % 4) + (k % 2);
}

// acc + <64 codes at c, 64 permuted query values at qv>.
__attribute__((target("avx512vbmi"))) inline __m512 fp8_block(const Fp8Tables& t,
                                                              const uint8_t* c, const float* qv,
                                                              __m512 acc) {
  const __m512i sign = _mm512_set1_epi8(char(0x80));
  const __m512i high = _mm512_set1_epi32(int(0xFFFF0000u));
  const __m512i v = _mm512_loadu_si512(c);
  const __m512i lo = _mm512_permutex2var_epi8(t.lo_a, v, t.lo_b);
  // high byte from the table, sign bit from the code: hi | (v & 0x80)
  const __m512i hi =
      _mm512_ternarylogic_epi32(_mm512_permutex2var_epi8(t.hi_a, v, t.hi_b), v, sign, 0xF8);
  const __m512i w0 = _mm512_unpacklo_epi8(lo, hi), w1 = _mm512_unpackhi_epi8(lo, hi);
  auto even = [](__m512i w) { return _mm512_castsi512_ps(_mm512_slli_epi32(w, 16)); };
  auto odd = [&](__m512i w) { return _mm512_castsi512_ps(_mm512_and_si512(w, high)); };
  acc = _mm512_fmadd_ps(_mm512_loadu_ps(qv), even(w0), acc);
  acc = _mm512_fmadd_ps(_mm512_loadu_ps(qv + 16), odd(w0), acc);
  acc = _mm512_fmadd_ps(_mm512_loadu_ps(qv + 32), even(w1), acc);
  return _mm512_fmadd_ps(_mm512_loadu_ps(qv + 48), odd(w1), acc);
}

__attribute__((target("avx512vbmi"))) void dot_rows_fp8_vbmi(Storage s, const float* q,
                                                             const uint8_t* codes, size_t n,
                                                             size_t dim, float* out) {
  const Fp8Tables t = fp8_tables(s);
  const size_t full = dim / 64 * 64;
  std::vector<float> qp(full);
  for (size_t b = 0; b < full; b += 64)
    for (size_t k = 0; k < 4; ++k)
      for (size_t j = 0; j < 16; ++j) qp[b + 16 * k + j] = q[b + fp8_order(k, j)];
  const size_t ahead = 4096 + 4 * dim;
  auto row_block = [&](const uint8_t* r, size_t p, __m512 acc, const float* qv) {
    return fp8_block(t, r + p, qv, acc);
  };
  // The last dim % 64 elements go through the fp16 decode, in their natural order.
  const size_t rest = dim - full;
  auto tail = [&](const uint8_t* r, __m512 acc) {
    for (size_t p = full; p < dim; p += 16) {
      const __mmask16 m = __mmask16(rest - (p - full) >= 16 ? 0xffff : (1u << ((dim - p) & 15)) - 1);
      const __m512 x = s == Storage::f8e4m3
                           ? _mm512_mul_ps(load16<Storage::f8e4m3>(r, p, m), _mm512_set1_ps(256.0f))
                           : load16<Storage::f8e5m2>(r, p, m);
      acc = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, q + p), x, acc);
    }
    return acc;
  };
  size_t i = 0;
  for (; i + 4 <= n; i += 4) {
    const uint8_t* r = codes + i * dim;
    for (size_t off = 0; off < 4 * dim; off += 64)
      _mm_prefetch(reinterpret_cast<const char*>(r + ahead + off), _MM_HINT_T0);
    __m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
    for (size_t p = 0; p < full; p += 64) {
      a0 = row_block(r, p, a0, qp.data() + p);
      a1 = row_block(r + dim, p, a1, qp.data() + p);
      a2 = row_block(r + 2 * dim, p, a2, qp.data() + p);
      a3 = row_block(r + 3 * dim, p, a3, qp.data() + p);
    }
    out[i] = _mm512_reduce_add_ps(tail(r, a0));
    out[i + 1] = _mm512_reduce_add_ps(tail(r + dim, a1));
    out[i + 2] = _mm512_reduce_add_ps(tail(r + 2 * dim, a2));
    out[i + 3] = _mm512_reduce_add_ps(tail(r + 3 * dim, a3));
  }
  for (; i < n; ++i) {
    const uint8_t* r = codes + i * dim;
    __m512 a0 = _mm512_setzero_ps();
    for (size_t p = 0; p < full; p += 64) a0 = row_block(r, p, a0, qp.data() + p);
    out[i] = _mm512_reduce_add_ps(tail(r, a0));
  }
}

const bool kHaveVbmi = __builtin_cpu_supports("avx512vbmi");
const bool kHaveVbmiVnni = kHaveVbmi && __builtin_cpu_supports("avx512vnni");

template <Storage S>
void dot_rows_t(const float* q, const uint8_t* codes, size_t n, size_t dim, float* out) {
  if constexpr (S == Storage::i8) {
    if (dim <= 4096) return dot_rows_i8_q16(q, codes, n, dim, out);
  }
  if constexpr (S == Storage::f8e4m3 || S == Storage::f8e5m2) {
    if (kHaveVbmi && dim >= 64) return dot_rows_fp8_vbmi(S, q, codes, n, dim, out);
  }
  const size_t bytes = dim * storage_bytes(S);
  const size_t full = dim / 16 * 16;
  const __mmask16 tail = __mmask16((1u << (dim - full)) - 1);
  // Decoding makes the narrow formats compute-heavy enough that the hardware prefetcher
  // falls behind: prefetching 4 KiB ahead took f16 / e4m3 / i8 from 6.8 to 9-10 GB/s out of
  // DRAM (f32 gains nothing).
  const size_t ahead = (4096 / bytes + 4) * bytes;
  size_t i = 0;
  for (; i + 4 <= n; i += 4) {
    const uint8_t* r = codes + i * bytes;
    if constexpr (S != Storage::f32)
      for (size_t off = 0; off < 4 * bytes; off += 64)
        _mm_prefetch(reinterpret_cast<const char*>(r + ahead + off), _MM_HINT_T0);
    __m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
    for (size_t p = 0; p < dim; p += 16) {
      const __mmask16 m = p < full ? __mmask16(0xffff) : tail;
      const __m512 qv = _mm512_maskz_loadu_ps(m, q + p);
      a0 = _mm512_fmadd_ps(qv, load16<S>(r, p, m), a0);
      a1 = _mm512_fmadd_ps(qv, load16<S>(r + bytes, p, m), a1);
      a2 = _mm512_fmadd_ps(qv, load16<S>(r + 2 * bytes, p, m), a2);
      a3 = _mm512_fmadd_ps(qv, load16<S>(r + 3 * bytes, p, m), a3);
    }
    out[i] = _mm512_reduce_add_ps(a0) * post_scale<S>();
    out[i + 1] = _mm512_reduce_add_ps(a1) * post_scale<S>();
    out[i + 2] = _mm512_reduce_add_ps(a2) * post_scale<S>();
    out[i + 3] = _mm512_reduce_add_ps(a3) * post_scale<S>();
  }
  for (; i < n; ++i) {
    const uint8_t* r = codes + i * bytes;
    __m512 a0 = _mm512_setzero_ps();
    for (size_t p = 0; p < dim; p += 16) {
      const __mmask16 m = p < full ? __mmask16(0xffff) : tail;
      a0 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, q + p), load16<S>(r, p, m), a0);
    }
    out[i] = _mm512_reduce_add_ps(a0) * post_scale<S>();
  }
}

template <Storage S>
void decode_rows_t(const uint8_t* codes, size_t n, size_t dim, float* out) {
  const size_t bytes = dim * storage_bytes(S);
  const size_t full = dim / 16 * 16;
  const __mmask16 tail = __mmask16((1u << (dim - full)) - 1);
  const __m512 scale = _mm512_set1_ps(post_scale<S>());
  for (size_t i = 0; i < n; ++i) {
    const uint8_t* r = codes + i * bytes;
    float* o = out + i * dim;
    for (size_t p = 0; p < dim; p += 16) {
      const __mmask16 m = p < full ? __mmask16(0xffff) : tail;
      _mm512_mask_storeu_ps(o + p, m, _mm512_mul_ps(load16<S>(r, p, m), scale));
    }
  }
}

void dot_rows(Storage s, const float* q, const uint8_t* codes, size_t n, size_t dim,
              float* out) {
  with_storage(s, [&](auto st) { dot_rows_t<decltype(st)::value>(q, codes, n, dim, out); });
}

// dot_rows_t's plain path over scattered rows, four at a time (their loads overlap).
template <Storage S>
void dot_gather_t(const float* q, const uint8_t* base, const uint32_t* pos, size_t n, size_t dim,
                  float* out) {
  const size_t bytes = dim * storage_bytes(S);
  const size_t full = dim / 16 * 16;
  const __mmask16 tail = __mmask16((1u << (dim - full)) - 1);
  const auto row = [&](size_t i) { return base + size_t(pos[i]) * bytes; };
  size_t i = 0;
  for (; i + 4 <= n; i += 4) {
    const uint8_t *r0 = row(i), *r1 = row(i + 1), *r2 = row(i + 2), *r3 = row(i + 3);
    __m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
    for (size_t p = 0; p < dim; p += 16) {
      const __mmask16 m = p < full ? __mmask16(0xffff) : tail;
      const __m512 qv = _mm512_maskz_loadu_ps(m, q + p);
      a0 = _mm512_fmadd_ps(qv, load16<S>(r0, p, m), a0);
      a1 = _mm512_fmadd_ps(qv, load16<S>(r1, p, m), a1);
      a2 = _mm512_fmadd_ps(qv, load16<S>(r2, p, m), a2);
      a3 = _mm512_fmadd_ps(qv, load16<S>(r3, p, m), a3);
    }
    out[i] = _mm512_reduce_add_ps(a0) * post_scale<S>();
    out[i + 1] = _mm512_reduce_add_ps(a1) * post_scale<S>();
    out[i + 2] = _mm512_reduce_add_ps(a2) * post_scale<S>();
    out[i + 3] = _mm512_reduce_add_ps(a3) * post_scale<S>();
  }
  for (; i < n; ++i) {
    const uint8_t* r = row(i);
    __m512 a0 = _mm512_setzero_ps();
    for (size_t p = 0; p < dim; p += 16) {
      const __mmask16 m = p < full ? __mmask16(0xffff) : tail;
      a0 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, q + p), load16<S>(r, p, m), a0);
    }
    out[i] = _mm512_reduce_add_ps(a0) * post_scale<S>();
  }
}

void dot_gather(Storage s, const float* q, const uint8_t* base, const uint32_t* pos, size_t n,
                size_t dim, float* out) {
  with_storage(s, [&](auto st) { dot_gather_t<decltype(st)::value>(q, base, pos, n, dim, out); });
}

void decode_rows(Storage s, const uint8_t* codes, size_t n, size_t dim, float* out) {
  with_storage(s, [&](auto st) { decode_rows_t<decltype(st)::value>(codes, n, dim, out); });
}

template <int R>
uint32_t gemm_tile_t(const float* rows, const float* panel, size_t dim, const float* a,
                 const float* b, const float* threshold, float* out) {
  __m512 lo[R], hi[R];
#pragma GCC unroll 8
  for (int r = 0; r < R; ++r) lo[r] = hi[r] = _mm512_setzero_ps();
  for (size_t p = 0; p < dim; ++p) {
    const __m512 c0 = _mm512_loadu_ps(panel + p * kMq);
    const __m512 c1 = _mm512_loadu_ps(panel + p * kMq + 16);
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r) {
      const __m512 x = _mm512_set1_ps(rows[r * dim + p]);
      lo[r] = _mm512_fmadd_ps(x, c0, lo[r]);
      hi[r] = _mm512_fmadd_ps(x, c1, hi[r]);
    }
  }
  const __m512 t0 = _mm512_loadu_ps(threshold), t1 = _mm512_loadu_ps(threshold + 16);
  __mmask16 m0 = 0, m1 = 0;
#pragma GCC unroll 8
  for (int r = 0; r < R; ++r) {
    const __m512 ar = _mm512_set1_ps(a[r]), br = _mm512_set1_ps(b[r]);
    const __m512 v0 = _mm512_fmadd_ps(lo[r], ar, br), v1 = _mm512_fmadd_ps(hi[r], ar, br);
    _mm512_storeu_ps(out + r * kMq, v0);
    _mm512_storeu_ps(out + r * kMq + 16, v1);
    m0 |= _mm512_cmp_ps_mask(v0, t0, _CMP_GE_OQ);
    m1 |= _mm512_cmp_ps_mask(v1, t1, _CMP_GE_OQ);
  }
  return uint32_t(m0) | uint32_t(m1) << 16;
}

template <int... R>
struct TileTable {
  using Fn = uint32_t (*)(const float*, const float*, size_t, const float*, const float*,
                          const float*, float*);
  static constexpr Fn fns[] = {nullptr, gemm_tile_t<R>...};
};

uint32_t gemm_tile(const float* rows, size_t nrows, const float* panel, size_t dim,
                   const float* a, const float* b, const float* threshold, float* out) {
  using T = TileTable<1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14>;
  return T::fns[nrows](rows, panel, dim, a, b, threshold, out);
}

// sum_p q_p c_p = dpbusd(c ^ 0x80, q) - 128 * sum_p q_p: flipping the sign bit makes the codes
// unsigned (c + 128), and the correction depends on the query only.
__attribute__((target("avx512vnni"))) void dot_rows_i8_vnni(const int8_t* q, const int8_t* codes,
                                                            size_t n, size_t dim, int32_t* out) {
  const size_t full = dim / 64 * 64;
  const __mmask64 tail = dim - full == 0 ? 0 : (~0ull >> (64 - (dim - full)));
  int32_t qsum = 0;
  for (size_t p = 0; p < dim; ++p) qsum += q[p];
  const __m512i flip = _mm512_set1_epi8(char(0x80));
  const int32_t correction = 128 * qsum;
  size_t i = 0;
  for (; i + 2 <= n; i += 2) {
    const int8_t* r = codes + i * dim;
    __m512i a0 = _mm512_setzero_si512(), a1 = a0;
    for (size_t p = 0; p < dim; p += 64) {
      const __mmask64 m = p < full ? ~0ull : tail;
      const __m512i qv = _mm512_maskz_loadu_epi8(m, q + p);
      // Masked-off lanes load 0 and flip to 128, but their query bytes are 0.
      a0 = _mm512_dpbusd_epi32(a0, _mm512_xor_si512(_mm512_maskz_loadu_epi8(m, r + p), flip), qv);
      a1 = _mm512_dpbusd_epi32(a1, _mm512_xor_si512(_mm512_maskz_loadu_epi8(m, r + dim + p), flip),
                               qv);
    }
    out[i] = _mm512_reduce_add_epi32(a0) - correction;
    out[i + 1] = _mm512_reduce_add_epi32(a1) - correction;
  }
  for (; i < n; ++i) {
    const int8_t* r = codes + i * dim;
    __m512i a0 = _mm512_setzero_si512();
    for (size_t p = 0; p < dim; p += 64) {
      const __mmask64 m = p < full ? ~0ull : tail;
      a0 = _mm512_dpbusd_epi32(a0, _mm512_xor_si512(_mm512_maskz_loadu_epi8(m, r + p), flip),
                               _mm512_maskz_loadu_epi8(m, q + p));
    }
    out[i] = _mm512_reduce_add_epi32(a0) - correction;
  }
}

// R rows at a time: each 4-byte group of a row is broadcast to every lane and multiplied with
// the same group of the 16 queries (vpdpbusd: unsigned panel bytes, signed row bytes), so
// each lane sums one query's products and nothing is reduced across lanes at the end.
template <int R>
__attribute__((target("avx512vnni"))) inline void panel_tile(const int8_t* rows,
                                                             const int32_t* sums,
                                                             const uint8_t* panel, size_t dim,
                                                             int32_t* out) {
  __m512i acc[R];
#pragma GCC unroll 16
  for (int r = 0; r < R; ++r) acc[r] = _mm512_setzero_si512();
  for (size_t g = 0; g < dim / 4; ++g) {
    const __m512i pv = _mm512_loadu_si512(panel + g * 64);
#pragma GCC unroll 16
    for (int r = 0; r < R; ++r) {
      int32_t b;
      std::memcpy(&b, rows + r * dim + 4 * g, 4);
      acc[r] = _mm512_dpbusd_epi32(acc[r], pv, _mm512_set1_epi32(b));
    }
  }
#pragma GCC unroll 16
  for (int r = 0; r < R; ++r)
    _mm512_storeu_si512(out + r * kPanelI8,
                        _mm512_sub_epi32(acc[r], _mm512_set1_epi32(128 * sums[r])));
}

__attribute__((target("avx512vnni"))) void dot_panel_i8_vnni(const int8_t* rows,
                                                             const int32_t* row_sums, size_t n,
                                                             const uint8_t* panel, size_t dim,
                                                             int32_t* out) {
  constexpr size_t R = 8;
  size_t r = 0;
  for (; r + R <= n; r += R)
    panel_tile<R>(rows + r * dim, row_sums + r, panel, dim, out + r * kPanelI8);
  for (; r < n; ++r) panel_tile<1>(rows + r * dim, row_sums + r, panel, dim, out + r * kPanelI8);
}

// Without VNNI: widen to 16 bits and multiply-add pairs (vpmaddwd).
void dot_rows_i8_bw(const int8_t* q, const int8_t* codes, size_t n, size_t dim, int32_t* out) {
  const size_t full = dim / 32 * 32;
  const __mmask32 tail = dim - full == 0 ? 0 : __mmask32(~0u >> (32 - (dim - full)));
  for (size_t i = 0; i < n; ++i) {
    const int8_t* r = codes + i * dim;
    __m512i acc = _mm512_setzero_si512();
    for (size_t p = 0; p < dim; p += 32) {
      const __mmask32 m = p < full ? ~0u : tail;
      const __m512i qv = _mm512_cvtepi8_epi16(_mm256_maskz_loadu_epi8(m, q + p));
      const __m512i cv = _mm512_cvtepi8_epi16(_mm256_maskz_loadu_epi8(m, r + p));
      acc = _mm512_add_epi32(acc, _mm512_madd_epi16(qv, cv));
    }
    out[i] = _mm512_reduce_add_epi32(acc);
  }
}

// NV x 16 centroids from c0 against P points at once (they share every centroid load):
// folds the distances into each point's running per-lane minimum bv[q] and its index bi[q].
// NV and P are constants so the accumulators stay in registers.
template <int P, int NV>
inline void nearest_pass(const float* x, size_t dim, const float* ct, const float* cnorm,
                         size_t kpad, size_t c0, __m512* bv, __m512i* bi) {
  const __m512i lane = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
  __m512 acc[P][NV];
  for (int q = 0; q < P; ++q)
    for (int j = 0; j < NV; ++j) acc[q][j] = _mm512_setzero_ps();
  for (size_t p = 0; p < dim; ++p) {
    const float* row = ct + p * kpad + c0;
    for (int j = 0; j < NV; ++j) {
      const __m512 c = _mm512_loadu_ps(row + 16 * j);
      for (int q = 0; q < P; ++q)
        acc[q][j] = _mm512_fmadd_ps(_mm512_set1_ps(x[q * dim + p]), c, acc[q][j]);
    }
  }
  for (int q = 0; q < P; ++q)
    for (int j = 0; j < NV; ++j) {
      const __m512 d =
          _mm512_fnmadd_ps(_mm512_set1_ps(2.0f), acc[q][j], _mm512_loadu_ps(cnorm + c0 + 16 * j));
      const __mmask16 lt = _mm512_cmp_ps_mask(d, bv[q], _CMP_LT_OQ);
      bv[q] = _mm512_mask_mov_ps(bv[q], lt, d);
      bi[q] = _mm512_mask_mov_epi32(bi[q], lt,
                                    _mm512_add_epi32(_mm512_set1_epi32(int(c0 + 16 * j)), lane));
    }
}

template <int P>
void nearest_points(const float* x, size_t dim, const float* ct, const float* cnorm, size_t kpad,
                    int64_t* assign, float* best) {
  __m512 bv[P];
  __m512i bi[P];
  for (int q = 0; q < P; ++q) {
    bv[q] = _mm512_set1_ps(INFINITY);
    bi[q] = _mm512_setzero_si512();
  }
  size_t c0 = 0;
  for (; c0 + 64 <= kpad; c0 += 64) nearest_pass<P, 4>(x, dim, ct, cnorm, kpad, c0, bv, bi);
  for (int q = 0; q < P; ++q) {
    const float v = _mm512_reduce_min_ps(bv[q]);
    const __mmask16 at = _mm512_cmp_ps_mask(bv[q], _mm512_set1_ps(v), _CMP_EQ_OQ);
    assign[q] = _mm512_mask_reduce_min_epi32(at, bi[q]);
    best[q] = v;
  }
}

void nearest(const float* x, size_t n, size_t dim, const float* ct, const float* cnorm,
             size_t kpad, int64_t* assign, float* best) {
  size_t i = 0;
  for (; i + 4 <= n; i += 4) nearest_points<4>(x + i * dim, dim, ct, cnorm, kpad, assign + i, best + i);
  for (; i < n; ++i) nearest_points<1>(x + i * dim, dim, ct, cnorm, kpad, assign + i, best + i);
}

// 4-bit fast-scan (see kernels_avx2.cpp for the accumulation trick): two pairs of
// sub-quantizers per 64-byte load, four 128-bit lanes, and NQ queries sharing each code load
// and nibble split; an odd last pair runs at 256 bits.
template <int NQ>
void pq4_accumulate_t(const uint8_t* codes, size_t nblocks, size_t npairs,
                      const uint8_t* const* luts, const uint16_t* limit, uint16_t* out,
                      uint32_t* below) {
  const __m512i low4 = _mm512_set1_epi8(15);
  const __m256i low4y = _mm256_set1_epi8(15);
  const size_t lstride = npairs * 32;
  for (size_t b = 0; b < nblocks; ++b) {
    __m512i all_lo[NQ], high_lo[NQ], all_hi[NQ], high_hi[NQ];
    for (int q = 0; q < NQ; ++q)
      all_lo[q] = high_lo[q] = all_hi[q] = high_hi[q] = _mm512_setzero_si512();
    const uint8_t* c = codes + b * lstride;
    size_t t = 0;
    for (; t + 2 <= npairs; t += 2) {
      const __m512i code = _mm512_loadu_si512(c + 32 * t);
      const __m512i nib_lo = _mm512_and_si512(code, low4);
      const __m512i nib_hi = _mm512_and_si512(_mm512_srli_epi16(code, 4), low4);
      for (int q = 0; q < NQ; ++q) {
        const __m512i table = _mm512_loadu_si512(luts[q] + 32 * t);
        const __m512i r_lo = _mm512_shuffle_epi8(table, nib_lo);
        const __m512i r_hi = _mm512_shuffle_epi8(table, nib_hi);
        all_lo[q] = _mm512_add_epi16(all_lo[q], r_lo);
        high_lo[q] = _mm512_add_epi16(high_lo[q], _mm512_srli_epi16(r_lo, 8));
        all_hi[q] = _mm512_add_epi16(all_hi[q], r_hi);
        high_hi[q] = _mm512_add_epi16(high_hi[q], _mm512_srli_epi16(r_hi, 8));
      }
    }
    // Fold the upper 256 bits onto the lower: lanes 2, 3 are more sub-quantizers.
    auto fold = [](__m512i v) {
      return _mm256_add_epi16(_mm512_castsi512_si256(v), _mm512_extracti64x4_epi64(v, 1));
    };
    __m256i nl = _mm256_setzero_si256(), nh = nl;
    const bool odd = t < npairs;
    if (odd) {
      const __m256i code = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(c + 32 * t));
      nl = _mm256_and_si256(code, low4y);
      nh = _mm256_and_si256(_mm256_srli_epi16(code, 4), low4y);
    }
    for (int q = 0; q < NQ; ++q) {
      __m256i a_lo = fold(all_lo[q]), h_lo = fold(high_lo[q]);
      __m256i a_hi = fold(all_hi[q]), h_hi = fold(high_hi[q]);
      if (odd) {
        const __m256i table =
            _mm256_loadu_si256(reinterpret_cast<const __m256i*>(luts[q] + 32 * t));
        const __m256i r_lo = _mm256_shuffle_epi8(table, nl);
        const __m256i r_hi = _mm256_shuffle_epi8(table, nh);
        a_lo = _mm256_add_epi16(a_lo, r_lo);
        h_lo = _mm256_add_epi16(h_lo, _mm256_srli_epi16(r_lo, 8));
        a_hi = _mm256_add_epi16(a_hi, r_hi);
        h_hi = _mm256_add_epi16(h_hi, _mm256_srli_epi16(r_hi, 8));
      }
      const __m128i lim = _mm_set1_epi16(short(limit[q]));
      uint16_t* o = out + q * nblocks * 32 + 32 * b;
      // Stores the 16 results (every one: callers such as the token sketch read them all)
      // and returns the mask of those <= limit.
      auto finish = [&](__m256i all, __m256i high, uint16_t* dst) -> uint32_t {
        const __m256i even = _mm256_sub_epi16(all, _mm256_slli_epi16(high, 8));
        const __m128i e =
            _mm_add_epi16(_mm256_castsi256_si128(even), _mm256_extracti128_si256(even, 1));
        const __m128i h =
            _mm_add_epi16(_mm256_castsi256_si128(high), _mm256_extracti128_si256(high, 1));
        const uint32_t me = _mm_cmple_epu16_mask(e, lim), mh = _mm_cmple_epu16_mask(h, lim);
        _mm_storeu_si128(reinterpret_cast<__m128i*>(dst), _mm_unpacklo_epi16(e, h));
        _mm_storeu_si128(reinterpret_cast<__m128i*>(dst + 8), _mm_unpackhi_epi16(e, h));
        return _pdep_u32(me, 0x5555u) | _pdep_u32(mh, 0xAAAAu);  // vector 2w: e, 2w + 1: h
      };
      below[q * nblocks + b] = finish(a_lo, h_lo, o) | finish(a_hi, h_hi, o + 16) << 16;
    }
  }
}

// The same sums with VBMI + VNNI (Ice Lake and later, Zen 4): a 64-byte code load holds four
// sub-quantizers (one per 128-bit lane) for 32 vectors. One byte permutation turns it into
// [vector][sub-quantizer] order, the sub-quantizer number goes into index bits 4-5, and then
// per query a single vpermb looks all four tables up at once and vpdpbusd adds each vector's
// four bytes into its own 32-bit sum: 4 uops per 128 lookups instead of 8 (shuffle, shift
// and two 16-bit adds per half). The integer sums are the same as every other path's.
struct Pq4Transpose {
  alignas(64) uint8_t idx[64];
  constexpr Pq4Transpose() : idx() {
    for (int v = 0; v < 16; ++v)
      for (int q = 0; q < 4; ++q) idx[4 * v + q] = uint8_t(16 * q + v);
  }
};
constexpr Pq4Transpose kPq4Transpose;

template <int NQ>
__attribute__((target("avx512vbmi,avx512vnni"))) void pq4_accumulate_vbmi_t(
    const uint8_t* codes, size_t nblocks, size_t npairs, const uint8_t* const* luts,
    const uint16_t* limit, uint16_t* out, uint32_t* below) {
  const __m512i perm = _mm512_load_si512(kPq4Transpose.idx);
  const __m512i low4 = _mm512_set1_epi8(15);
  const __m512i lane = _mm512_set1_epi32(0x30201000);  // byte q of a dword: q << 4
  const __m512i ones = _mm512_set1_epi8(1);
  const size_t lstride = npairs * 32, nquads = (npairs + 1) / 2;
  for (size_t b = 0; b < nblocks; ++b) {
    __m512i lo[NQ], hi[NQ];  // vectors 0-15 and 16-31 of the block
    for (int q = 0; q < NQ; ++q) lo[q] = hi[q] = _mm512_setzero_si512();
    const uint8_t* c = codes + b * lstride;
    for (size_t u = 0; u < nquads; ++u) {
      // An odd last pair fills only the low 32 bytes; its zeroed table adds nothing.
      const __mmask64 keep = 2 * u + 1 < npairs ? ~__mmask64(0) : __mmask64(0xFFFFFFFFu);
      const __m512i code = _mm512_maskz_loadu_epi8(keep, c + 64 * u);
      const __m512i il = _mm512_or_si512(
          _mm512_permutexvar_epi8(perm, _mm512_and_si512(code, low4)), lane);
      const __m512i ih = _mm512_or_si512(
          _mm512_permutexvar_epi8(perm, _mm512_and_si512(_mm512_srli_epi16(code, 4), low4)),
          lane);
      for (int q = 0; q < NQ; ++q) {
        const __m512i table = _mm512_maskz_loadu_epi8(keep, luts[q] + 64 * u);
        lo[q] = _mm512_dpbusd_epi32(lo[q], _mm512_permutexvar_epi8(il, table), ones);
        hi[q] = _mm512_dpbusd_epi32(hi[q], _mm512_permutexvar_epi8(ih, table), ones);
      }
    }
    for (int q = 0; q < NQ; ++q) {
      const __m256i lim = _mm256_set1_epi16(short(limit[q]));
      const __m256i sl = _mm512_cvtepi32_epi16(lo[q]), sh = _mm512_cvtepi32_epi16(hi[q]);
      const uint32_t mask = uint32_t(_mm256_cmple_epu16_mask(sl, lim)) |
                            uint32_t(_mm256_cmple_epu16_mask(sh, lim)) << 16;
      below[q * nblocks + b] = mask;
      uint16_t* o = out + q * nblocks * 32 + 32 * b;  // every result, as the contract says
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(o), sl);
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(o + 16), sh);
    }
  }
}

void pq4_accumulate(const uint8_t* codes, size_t nblocks, size_t npairs,
                    const uint8_t* const* luts, size_t nq, const uint16_t* limit, uint16_t* out,
                    uint32_t* below) {
  if (kHaveVbmiVnni) {
    switch (nq) {
      case 1: return pq4_accumulate_vbmi_t<1>(codes, nblocks, npairs, luts, limit, out, below);
      case 2: return pq4_accumulate_vbmi_t<2>(codes, nblocks, npairs, luts, limit, out, below);
      case 3: return pq4_accumulate_vbmi_t<3>(codes, nblocks, npairs, luts, limit, out, below);
      default: return pq4_accumulate_vbmi_t<4>(codes, nblocks, npairs, luts, limit, out, below);
    }
  }
  switch (nq) {
    case 1: return pq4_accumulate_t<1>(codes, nblocks, npairs, luts, limit, out, below);
    case 2: return pq4_accumulate_t<2>(codes, nblocks, npairs, luts, limit, out, below);
    case 3: return pq4_accumulate_t<3>(codes, nblocks, npairs, luts, limit, out, below);
    default: return pq4_accumulate_t<4>(codes, nblocks, npairs, luts, limit, out, below);
  }
}

// The minimum (or maximum: Op) of each of 16 rows of 16, as one vector: a tree of shuffles
// halves the lanes per row at each level (8 rows of 8, 4 of 4 ...), 46 operations where a
// reduction per row takes 128.
template <class Op>
inline __m512 reduce16_rows(const float* rows, Op op) {
  __m512 a[8], b[4], c[2];
  for (int i = 0; i < 8; ++i) {  // row 2i's 8 in 128-bit chunks 0-1, row 2i+1's in 2-3
    const __m512 x = _mm512_loadu_ps(rows + 32 * i), y = _mm512_loadu_ps(rows + 32 * i + 16);
    a[i] = op(_mm512_shuffle_f32x4(x, y, 0x44), _mm512_shuffle_f32x4(x, y, 0xEE));
  }
  for (int i = 0; i < 4; ++i)  // chunk k: row 4i + k's 4
    b[i] = op(_mm512_shuffle_f32x4(a[2 * i], a[2 * i + 1], 0x88),
              _mm512_shuffle_f32x4(a[2 * i], a[2 * i + 1], 0xDD));
  for (int i = 0; i < 2; ++i)  // chunk k: row 8i + k's 2, then row 8i + 4 + k's 2
    c[i] = op(_mm512_shuffle_ps(b[2 * i], b[2 * i + 1], 0x44),
              _mm512_shuffle_ps(b[2 * i], b[2 * i + 1], 0xEE));
  // lane 4k + e: row 4e + k; put back in row order
  const __m512 d = op(_mm512_shuffle_ps(c[0], c[1], 0x88), _mm512_shuffle_ps(c[0], c[1], 0xDD));
  const __m512i order = _mm512_setr_epi32(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15);
  return _mm512_permutexvar_ps(order, d);
}

void row16_minmax(const float* rows, size_t n, float* lo, float* hi) {
  size_t r = 0;
  for (; r + 16 <= n; r += 16) {
    _mm512_storeu_ps(lo + r, reduce16_rows(rows + 16 * r, [](__m512 x, __m512 y) {
      return _mm512_min_ps(x, y);
    }));
    _mm512_storeu_ps(hi + r, reduce16_rows(rows + 16 * r, [](__m512 x, __m512 y) {
      return _mm512_max_ps(x, y);
    }));
  }
  for (; r < n; ++r) {
    const __m512 v = _mm512_loadu_ps(rows + 16 * r);
    lo[r] = _mm512_reduce_min_ps(v);
    hi[r] = _mm512_reduce_max_ps(v);
  }
}

void row16_table_minmax(const float* a, const float* b, size_t n, float* rows, float* lo,
                        float* hi) {
  for (size_t r = 0; r < n; ++r) {
    const __m512 vb = _mm512_loadu_ps(b + 16 * r);
    const __m512 v = _mm512_sub_ps(_mm512_loadu_ps(a + 16 * r), _mm512_add_ps(vb, vb));
    _mm512_storeu_ps(rows + 16 * r, v);
    lo[r] = _mm512_reduce_min_ps(v);
    hi[r] = _mm512_reduce_max_ps(v);
  }
}

void row16_quantize(const float* rows, size_t n, const float* lo, float a, uint8_t* out) {
  const __m512 va = _mm512_set1_ps(a);
  const __m512i cap = _mm512_set1_epi32(255);
  for (size_t r = 0; r < n; ++r) {
    const __m512 v = _mm512_mul_ps(_mm512_sub_ps(_mm512_loadu_ps(rows + 16 * r),
                                                 _mm512_set1_ps(lo[r])), va);
    const __m512i q = _mm512_min_epi32(_mm512_cvtps_epi32(v), cap);
    _mm_storeu_si128(reinterpret_cast<__m128i*>(out + 16 * r), _mm512_cvtepi32_epi8(q));
  }
}

// Recurrent-code dot products. With VPOPCNTDQ a plane of up to 512 bits is one register, and
// every plane pair costs an and, a popcount, a shift and an add. Codes of up to 512 bits per
// plane keep the query planes in registers and reduce eight codes' accumulators at once.
__attribute__((target("avx512vpopcntdq"))) inline __m512i rbe_code_acc(
    const __m512i* qv, size_t qplanes, const uint64_t* d, size_t planes, size_t words,
    __mmask8 keep) {
  __m512i acc = _mm512_setzero_si512();
  for (size_t k = 0; k < planes; ++k) {
    const __m512i dk = _mm512_maskz_loadu_epi64(keep, d + k * words);
    __m512i t = _mm512_setzero_si512();  // sum over i of popcount(q_i & d_k) << (qplanes - 1 - i)
    for (size_t i = 0; i < qplanes; ++i)
      t = _mm512_add_epi64(t, _mm512_sll_epi64(_mm512_popcnt_epi64(_mm512_and_si512(qv[i], dk)),
                                               _mm_cvtsi64_si128(long(qplanes - 1 - i))));
    acc = _mm512_add_epi64(acc, _mm512_sll_epi64(t, _mm_cvtsi64_si128(long(planes - 1 - k))));
  }
  return acc;
}

// The eight lane sums of a[0..7], in order.
inline __m512i reduce8(const __m512i* a) {
  __m512i u[4], v[2];
  for (int p = 0; p < 4; ++p)
    u[p] = _mm512_add_epi64(_mm512_unpacklo_epi64(a[2 * p], a[2 * p + 1]),
                            _mm512_unpackhi_epi64(a[2 * p], a[2 * p + 1]));
  for (int p = 0; p < 2; ++p)
    v[p] = _mm512_add_epi64(_mm512_shuffle_i64x2(u[2 * p], u[2 * p + 1], 0x88),
                            _mm512_shuffle_i64x2(u[2 * p], u[2 * p + 1], 0xDD));
  return _mm512_add_epi64(_mm512_shuffle_i64x2(v[0], v[1], 0x88),
                          _mm512_shuffle_i64x2(v[0], v[1], 0xDD));
}

__attribute__((target("avx512vpopcntdq"))) void rbe_dots_vpopcnt(
    const uint64_t* q, size_t qplanes, const uint64_t* codes, size_t planes, size_t n,
    size_t words, int32_t* out) {
  const size_t cw = planes * words;
  if (words > 8) {  // longer planes: the portable POPCNT loop
    avx2_kernels()->rbe_dots(q, qplanes, codes, planes, n, words, out);
    return;
  }
  const __mmask8 keep = __mmask8((1u << words) - 1);
  __m512i qv[8];
  for (size_t i = 0; i < qplanes; ++i) qv[i] = _mm512_maskz_loadu_epi64(keep, q + i * words);
  size_t r = 0;
  for (; r + 8 <= n; r += 8) {
    __m512i acc[8];
    for (size_t c = 0; c < 8; ++c)
      acc[c] = rbe_code_acc(qv, qplanes, codes + (r + c) * cw, planes, words, keep);
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + r), _mm512_cvtepi64_epi32(reduce8(acc)));
  }
  for (; r < n; ++r)
    out[r] = int32_t(_mm512_reduce_add_epi64(
        rbe_code_acc(qv, qplanes, codes + r * cw, planes, words, keep)));
}

// The unsigned 8-bit route: a plane word is a 64-bit mask, so each plane adds its level's
// weight to 64 bytes with one masked add, and vpdpbusd multiplies by the query's bytes.
__attribute__((target("avx512vnni"))) void rbe_dots_vnni(const uint64_t* q, size_t qplanes,
                                                         const uint64_t* codes, size_t planes,
                                                         size_t n, size_t words, int32_t* out) {
  auto expand = [&](const uint64_t* code, size_t np, size_t w) {
    __m512i c = _mm512_setzero_si512();
    for (size_t i = 0; i < np; ++i)
      c = _mm512_mask_add_epi8(c, __mmask64(code[i * words + w]), c,
                               _mm512_set1_epi8(char(1u << (np - 1 - i))));
    return c;
  };
  std::vector<__m512i> qb(words);  // c_q < 128 for qplanes <= 7: valid signed bytes
  for (size_t w = 0; w < words; ++w) qb[w] = expand(q, qplanes, w);
  for (size_t r = 0; r < n; ++r) {
    __m512i acc = _mm512_setzero_si512();
    for (size_t w = 0; w < words; ++w)
      acc = _mm512_dpbusd_epi32(acc, expand(codes + r * planes * words, planes, w), qb[w]);
    out[r] = _mm512_reduce_add_epi32(acc);
  }
}

// The lanes of m whose term's bit is set in `bits`.
void pq16_tables(const float* q, const float* ct, const float* cnorm, size_t m, size_t dsub,
                 bool l2, float* out) {
  for (size_t j = 0; j < m; ++j) {
    const float* qj = q + j * dsub;
    const float* t = ct + j * dsub * 16;
    __m512 a = _mm512_setzero_ps();
    double qn = 0;
    for (size_t p = 0; p < dsub; ++p) {  // multiply, then add: the scalar table's roundings
      a = _mm512_add_ps(a, _mm512_mul_ps(_mm512_set1_ps(qj[p]), _mm512_loadu_ps(t + p * 16)));
      qn += double(qj[p]) * qj[p];
    }
    if (l2)
      a = _mm512_max_ps(_mm512_add_ps(_mm512_sub_ps(_mm512_set1_ps(float(qn)), _mm512_add_ps(a, a)),
                                      _mm512_loadu_ps(cnorm + j * 16)),
                        _mm512_setzero_ps());
    _mm512_storeu_ps(out + j * 16, a);
  }
}

// The forward-index values of lanes m as floats (f16 or u8), zero elsewhere.
inline __m512 values16(__mmask16 m, const uint16_t* v) {
  return _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(m, v));
}
inline __m512 values16(__mmask16 m, const uint8_t* v) {
  return _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(_mm_maskz_loadu_epi8(m, v)));
}

template <class V>
float sparse_dot(const uint16_t* comp, const V* val, size_t n, const float* q) {
  __m512 acc = _mm512_setzero_ps();
  for (size_t i = 0; i < n; i += 16) {
    const __mmask16 m = n - i >= 16 ? __mmask16(0xffff) : __mmask16((1u << (n - i)) - 1);
    const __m512i idx = _mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(m, comp + i));
    const __m512 g = _mm512_mask_i32gather_ps(_mm512_setzero_ps(), m, idx, q, 4);
    acc = _mm512_fmadd_ps(g, values16(m, val + i), acc);
  }
  return _mm512_reduce_add_ps(acc);
}

// Four rows a pass, so acc is read and written once for them; saturating adds of
// non-negative terms give the plain formula's min(65535, sum) in any order.
void accumulate_u8(const uint8_t* const* rows, const uint16_t* w, size_t nrows, size_t n,
                   uint16_t* acc) {
  const __m512i up = _mm512_set1_epi16(63);
  for (size_t r0 = 0; r0 < nrows; r0 += 4) {
    const size_t k = std::min<size_t>(4, nrows - r0);
    __m512i wv[4];
    for (size_t j = 0; j < k; ++j) wv[j] = _mm512_set1_epi16(int16_t(w[r0 + j]));
    size_t i = 0;
    for (; i + 32 <= n; i += 32) {  // w * row + 63 <= 65,088: exact in 16 bits
      __m512i sum = _mm512_loadu_si512(acc + i);
      for (size_t j = 0; j < k; ++j) {
        const __m512i r = _mm512_cvtepu8_epi16(
            _mm256_loadu_si256(reinterpret_cast<const __m256i*>(rows[r0 + j] + i)));
        sum = _mm512_adds_epu16(
            sum, _mm512_srli_epi16(_mm512_add_epi16(_mm512_mullo_epi16(r, wv[j]), up), 6));
      }
      _mm512_storeu_si512(acc + i, sum);
    }
    const uint8_t* rest[4];  // the last n - i of each row: the plain loop
    for (size_t j = 0; j < k; ++j) rest[j] = rows[r0 + j] + i;
    scalar_kernels().accumulate_u8(rest, w + r0, k, n - i, acc + i);
  }
}

// 32 values a step: two in-range masks of 16 lanes, each lane's index compressed into a
// register and stored under a mask (a compressing store is slow on Zen 4).
size_t select_u16(const uint16_t* v, size_t n, uint32_t lo, uint32_t hi, uint32_t* out) {
  if (hi <= lo || lo > 65535) return 0;
  const __m512i lov = _mm512_set1_epi16(int16_t(lo)),
                top = _mm512_set1_epi16(int16_t(std::min<uint32_t>(hi - 1, 65535))),
                step = _mm512_set1_epi32(16);
  __m512i idx = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
  size_t m = 0;
  for (size_t i = 0; i < n; i += 32) {
    const __mmask32 live = n - i >= 32 ? ~__mmask32(0) : (__mmask32(1) << (n - i)) - 1;
    const __m512i x = _mm512_maskz_loadu_epi16(live, v + i);
    const __mmask32 in =
        _mm512_mask_cmpge_epu16_mask(live, x, lov) & _mm512_cmple_epu16_mask(x, top);
    for (int h = 0; h < 2; ++h) {
      const __mmask16 k = __mmask16(in >> (16 * h));
      const int c = __builtin_popcount(k);
      _mm512_mask_storeu_epi32(out + m, __mmask16((1u << c) - 1),
                               _mm512_maskz_compress_epi32(k, idx));
      m += size_t(c);
      idx = _mm512_add_epi32(idx, step);
    }
  }
  return m;
}

}  // namespace

const Kernels* avx512_kernels() {
  static const Kernels k{kMq,
                         kMr,
                         dot_rows,
                         decode_rows,
                         gemm_tile,
                         __builtin_cpu_supports("avx512vnni") ? dot_rows_i8_vnni : dot_rows_i8_bw,
                         nearest,
                         pq4_accumulate,
                         row16_minmax,
                         row16_table_minmax,
                         row16_quantize,
                         __builtin_cpu_supports("avx512vpopcntdq") ? rbe_dots_vpopcnt
                                                                   : avx2_kernels()->rbe_dots,
                         __builtin_cpu_supports("avx512vnni") ? rbe_dots_vnni
                                                              : scalar_kernels().rbe_dots_u8,
                         sparse_dot<uint16_t>,
                         sparse_dot<uint8_t>,
                         dot_gather,
                         __builtin_cpu_supports("avx512vnni") ? dot_panel_i8_vnni : nullptr,
                         pq16_tables,
                         accumulate_u8,
                         select_u16};
  return &k;
}

}  // namespace quanta
