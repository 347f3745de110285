// AVX-512 kernels (F, BW, VL, DQ; VNNI for int8 x int8 when the CPU has it).
// Built with AVX-512 flags; only called after dispatch has checked the CPU.
#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "quanta/kernels.hpp"

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

template <Storage S>
void dot_rows_t(const float* q, const uint8_t* codes, size_t n, size_t dim, float* out) {
  if constexpr (S == Storage::i8) {
    if (dim <= 4096) return dot_rows_i8_q16(q, codes, n, dim, out);
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

void decode_rows(Storage s, const uint8_t* codes, size_t n, size_t dim, float* out) {
  with_storage(s, [&](auto st) { decode_rows_t<decltype(st)::value>(codes, n, dim, out); });
}

template <int R>
bool gemm_tile_t(const float* rows, const float* panel, size_t dim, const float* a,
                 const float* b, const float* threshold, float* out) {
  __m512 lo[R], hi[R];
  for (int r = 0; r < R; ++r) lo[r] = hi[r] = _mm512_setzero_ps();
  for (size_t p = 0; p < dim; ++p) {
    const __m512 c0 = _mm512_loadu_ps(panel + p * kMq);
    const __m512 c1 = _mm512_loadu_ps(panel + p * kMq + 16);
    for (int r = 0; r < R; ++r) {
      const __m512 x = _mm512_set1_ps(rows[r * dim + p]);
      lo[r] = _mm512_fmadd_ps(x, c0, lo[r]);
      hi[r] = _mm512_fmadd_ps(x, c1, hi[r]);
    }
  }
  const __m512 t0 = _mm512_loadu_ps(threshold), t1 = _mm512_loadu_ps(threshold + 16);
  __mmask16 any = 0;
  for (int r = 0; r < R; ++r) {
    const __m512 ar = _mm512_set1_ps(a[r]), br = _mm512_set1_ps(b[r]);
    const __m512 v0 = _mm512_fmadd_ps(lo[r], ar, br), v1 = _mm512_fmadd_ps(hi[r], ar, br);
    _mm512_storeu_ps(out + r * kMq, v0);
    _mm512_storeu_ps(out + r * kMq + 16, v1);
    any |= _mm512_cmp_ps_mask(v0, t0, _CMP_GE_OQ) | _mm512_cmp_ps_mask(v1, t1, _CMP_GE_OQ);
  }
  return any != 0;
}

template <int... R>
struct TileTable {
  using Fn = bool (*)(const float*, const float*, size_t, const float*, const float*,
                      const float*, float*);
  static constexpr Fn fns[] = {nullptr, gemm_tile_t<R>...};
};

bool gemm_tile(const float* rows, size_t nrows, const float* panel, size_t dim, const float* a,
               const float* b, const float* threshold, float* out) {
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

}  // namespace

const Kernels* avx512_kernels() {
  static const Kernels k{kMq,        kMr, dot_rows, decode_rows, gemm_tile,
                         __builtin_cpu_supports("avx512vnni") ? dot_rows_i8_vnni
                                                               : dot_rows_i8_bw};
  return &k;
}

}  // namespace quanta
