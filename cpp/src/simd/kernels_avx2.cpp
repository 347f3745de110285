// AVX2 + FMA + F16C kernels. Built with those flags; only called after dispatch has checked
// the CPU. Tails shorter than one vector go through the scalar codecs.
#include <immintrin.h>

#include <cmath>

#include "quanta/simd/kernels.hpp"

namespace quanta {

namespace {

constexpr int kMq = 16;  // two ymm of queries
constexpr int kMr = 6;   // 12 accumulators

// 8 elements starting at element `p`, widened to float32 (E4M3 scaled by 2^-8, exact).
template <Storage S>
inline __m256 load8(const uint8_t* row, size_t p) {
  if constexpr (S == Storage::f32) {
    return _mm256_loadu_ps(reinterpret_cast<const float*>(row) + p);
  } else if constexpr (S == Storage::f16) {
    return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(row + 2 * p)));
  } else if constexpr (S == Storage::bf16) {
    __m256i w = _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(row + 2 * p)));
    return _mm256_castsi256_ps(_mm256_slli_epi32(w, 16));
  } else if constexpr (S == Storage::f8e4m3) {
    // Sign-extend, << 7, clear bit 14: fp16 bits of the E4M3 value times 2^-8.
    __m128i b = _mm_cvtepi8_epi16(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(row + p)));
    return _mm256_cvtph_ps(_mm_and_si128(_mm_slli_epi16(b, 7), _mm_set1_epi16(short(0xBFFF))));
  } else if constexpr (S == Storage::f8e5m2) {
    __m128i b = _mm_cvtepu8_epi16(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(row + p)));
    return _mm256_cvtph_ps(_mm_slli_epi16(b, 8));
  } else {
    return _mm256_cvtepi32_ps(
        _mm256_cvtepi8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(row + p))));
  }
}

template <Storage S>
constexpr float post_scale() {
  return S == Storage::f8e4m3 ? 256.0f : 1.0f;
}

inline float hsum(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

template <Storage S>
float tail_dot(const float* q, const uint8_t* row, size_t from, size_t dim) {
  if (from == dim) return 0.0f;
  float buf[8];
  decode_array(S, row + from * storage_bytes(S), dim - from, buf);
  float acc = 0.0f;
  for (size_t p = from; p < dim; ++p) acc += q[p] * buf[p - from];
  return acc;
}

// <q, row> for four rows at once: one chain of FMAs per row, their loads overlapping.
template <Storage S>
void dot4(const float* q, const uint8_t* r0, const uint8_t* r1, const uint8_t* r2,
          const uint8_t* r3, size_t dim, float* out) {
  const size_t full = dim / 8 * 8;
  constexpr float ps = post_scale<S>();
  __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
  for (size_t p = 0; p < full; p += 8) {
    const __m256 qv = _mm256_loadu_ps(q + p);
    a0 = _mm256_fmadd_ps(qv, load8<S>(r0, p), a0);
    a1 = _mm256_fmadd_ps(qv, load8<S>(r1, p), a1);
    a2 = _mm256_fmadd_ps(qv, load8<S>(r2, p), a2);
    a3 = _mm256_fmadd_ps(qv, load8<S>(r3, p), a3);
  }
  out[0] = hsum(a0) * ps + tail_dot<S>(q, r0, full, dim);
  out[1] = hsum(a1) * ps + tail_dot<S>(q, r1, full, dim);
  out[2] = hsum(a2) * ps + tail_dot<S>(q, r2, full, dim);
  out[3] = hsum(a3) * ps + tail_dot<S>(q, r3, full, dim);
}

// <q, row> for one row, in four interleaved partial sums: a single chain would wait on the
// FMA latency at every step (a graph search scores one row at a time).
template <Storage S>
float dot1(const float* q, const uint8_t* r, size_t dim) {
  const size_t full = dim / 8 * 8, full4 = dim / 32 * 32;
  __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
  size_t p = 0;
  for (; p < full4; p += 32) {
    a0 = _mm256_fmadd_ps(_mm256_loadu_ps(q + p), load8<S>(r, p), a0);
    a1 = _mm256_fmadd_ps(_mm256_loadu_ps(q + p + 8), load8<S>(r, p + 8), a1);
    a2 = _mm256_fmadd_ps(_mm256_loadu_ps(q + p + 16), load8<S>(r, p + 16), a2);
    a3 = _mm256_fmadd_ps(_mm256_loadu_ps(q + p + 24), load8<S>(r, p + 24), a3);
  }
  for (; p < full; p += 8) a0 = _mm256_fmadd_ps(_mm256_loadu_ps(q + p), load8<S>(r, p), a0);
  return hsum(_mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3))) * post_scale<S>() +
         tail_dot<S>(q, r, full, dim);
}

template <Storage S>
void dot_rows_t(const float* q, const uint8_t* codes, size_t n, size_t dim, float* out) {
  const size_t bytes = dim * storage_bytes(S);
  size_t i = 0;
  for (; i + 4 <= n; i += 4) {
    const uint8_t* r = codes + i * bytes;
    dot4<S>(q, r, r + bytes, r + 2 * bytes, r + 3 * bytes, dim, out + i);
  }
  for (; i < n; ++i) out[i] = dot1<S>(q, codes + i * bytes, dim);
}

template <Storage S>
void decode_rows_t(const uint8_t* codes, size_t n, size_t dim, float* out) {
  const size_t bytes = dim * storage_bytes(S);
  const size_t full = dim / 8 * 8;
  const __m256 scale = _mm256_set1_ps(post_scale<S>());
  for (size_t i = 0; i < n; ++i) {
    const uint8_t* r = codes + i * bytes;
    float* o = out + i * dim;
    for (size_t p = 0; p < full; p += 8) _mm256_storeu_ps(o + p, _mm256_mul_ps(load8<S>(r, p), scale));
    if (full < dim) decode_array(S, r + full * storage_bytes(S), dim - full, o + full);
  }
}

void dot_rows(Storage s, const float* q, const uint8_t* codes, size_t n, size_t dim,
              float* out) {
  with_storage(s, [&](auto st) { dot_rows_t<decltype(st)::value>(q, codes, n, dim, out); });
}

void dot_gather(Storage s, const float* q, const uint8_t* base, const uint32_t* pos, size_t n,
                size_t dim, float* out) {
  with_storage(s, [&](auto st) {
    constexpr Storage S = decltype(st)::value;
    const size_t bytes = dim * storage_bytes(S);
    const auto row = [&](size_t i) { return base + size_t(pos[i]) * bytes; };
    size_t i = 0;
    for (; i + 4 <= n; i += 4) dot4<S>(q, row(i), row(i + 1), row(i + 2), row(i + 3), dim, out + i);
    for (; i < n; ++i) out[i] = dot1<S>(q, row(i), dim);
  });
}

void decode_rows(Storage s, const uint8_t* codes, size_t n, size_t dim, float* out) {
  with_storage(s, [&](auto st) { decode_rows_t<decltype(st)::value>(codes, n, dim, out); });
}

template <int R>
uint32_t gemm_tile_t(const float* rows, const float* panel, size_t dim, const float* a,
                 const float* b, const float* threshold, float* out) {
  __m256 lo[R], hi[R];
#pragma GCC unroll 8
  for (int r = 0; r < R; ++r) lo[r] = hi[r] = _mm256_setzero_ps();
  for (size_t p = 0; p < dim; ++p) {
    const __m256 c0 = _mm256_loadu_ps(panel + p * kMq);
    const __m256 c1 = _mm256_loadu_ps(panel + p * kMq + 8);
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r) {
      const __m256 x = _mm256_broadcast_ss(rows + r * dim + p);
      lo[r] = _mm256_fmadd_ps(x, c0, lo[r]);
      hi[r] = _mm256_fmadd_ps(x, c1, hi[r]);
    }
  }
  const __m256 t0 = _mm256_loadu_ps(threshold), t1 = _mm256_loadu_ps(threshold + 8);
  uint32_t mask = 0;
#pragma GCC unroll 8
  for (int r = 0; r < R; ++r) {
    const __m256 ar = _mm256_set1_ps(a[r]), br = _mm256_set1_ps(b[r]);
    const __m256 v0 = _mm256_fmadd_ps(lo[r], ar, br), v1 = _mm256_fmadd_ps(hi[r], ar, br);
    _mm256_storeu_ps(out + r * kMq, v0);
    _mm256_storeu_ps(out + r * kMq + 8, v1);
    mask |= uint32_t(_mm256_movemask_ps(_mm256_cmp_ps(v0, t0, _CMP_GE_OQ))) |
            uint32_t(_mm256_movemask_ps(_mm256_cmp_ps(v1, t1, _CMP_GE_OQ))) << 8;
  }
  return mask;
}

uint32_t gemm_tile(const float* rows, size_t nrows, const float* panel, size_t dim,
                   const float* a, const float* b, const float* threshold, float* out) {
  switch (nrows) {
    case 1: return gemm_tile_t<1>(rows, panel, dim, a, b, threshold, out);
    case 2: return gemm_tile_t<2>(rows, panel, dim, a, b, threshold, out);
    case 3: return gemm_tile_t<3>(rows, panel, dim, a, b, threshold, out);
    case 4: return gemm_tile_t<4>(rows, panel, dim, a, b, threshold, out);
    case 5: return gemm_tile_t<5>(rows, panel, dim, a, b, threshold, out);
    default: return gemm_tile_t<6>(rows, panel, dim, a, b, threshold, out);
  }
}

void dot_rows_i8(const int8_t* q, const int8_t* codes, size_t n, size_t dim, int32_t* out) {
  const size_t full = dim / 16 * 16;
  for (size_t i = 0; i < n; ++i) {
    const int8_t* r = codes + i * dim;
    __m256i acc = _mm256_setzero_si256();
    for (size_t p = 0; p < full; p += 16) {
      const __m256i qv = _mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(q + p)));
      const __m256i cv = _mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(r + p)));
      acc = _mm256_add_epi32(acc, _mm256_madd_epi16(qv, cv));
    }
    __m128i s = _mm_add_epi32(_mm256_castsi256_si128(acc), _mm256_extracti128_si256(acc, 1));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0x4e));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0xb1));
    int32_t total = _mm_cvtsi128_si32(s);
    for (size_t p = full; p < dim; ++p) total += int32_t(q[p]) * int32_t(r[p]);
    out[i] = total;
  }
}

// 64 centroids (8 ymm) per pass; a running per-lane minimum and its index.
void nearest(const float* x, size_t n, size_t dim, const float* ct, const float* cnorm,
             size_t kpad, int64_t* assign, float* best) {
  for (size_t i = 0; i < n; ++i) {
    const float* xi = x + i * dim;
    __m256 bv = _mm256_set1_ps(INFINITY);
    __m256i bi = _mm256_setzero_si256();
    for (size_t c0 = 0; c0 < kpad; c0 += 64) {
      __m256 acc[8];
      for (int j = 0; j < 8; ++j) acc[j] = _mm256_setzero_ps();
      for (size_t p = 0; p < dim; ++p) {
        const __m256 v = _mm256_broadcast_ss(xi + p);
        const float* row = ct + p * kpad + c0;
        for (int j = 0; j < 8; ++j) acc[j] = _mm256_fmadd_ps(v, _mm256_loadu_ps(row + 8 * j), acc[j]);
      }
      for (int j = 0; j < 8; ++j) {
        const __m256 d = _mm256_fnmadd_ps(_mm256_set1_ps(2.0f), acc[j], _mm256_loadu_ps(cnorm + c0 + 8 * j));
        const __m256 lt = _mm256_cmp_ps(d, bv, _CMP_LT_OQ);
        const __m256i idx = _mm256_add_epi32(_mm256_set1_epi32(int(c0 + 8 * j)),
                                             _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
        bv = _mm256_blendv_ps(bv, d, lt);
        bi = _mm256_castps_si256(_mm256_blendv_ps(_mm256_castsi256_ps(bi), _mm256_castsi256_ps(idx), lt));
      }
    }
    alignas(32) float vals[8];
    alignas(32) int32_t idxs[8];
    _mm256_store_ps(vals, bv);
    _mm256_store_si256(reinterpret_cast<__m256i*>(idxs), bi);
    float v = vals[0];
    int32_t c = idxs[0];
    for (int l = 1; l < 8; ++l)
      if (vals[l] < v || (vals[l] == v && idxs[l] < c)) {
        v = vals[l];
        c = idxs[l];
      }
    assign[i] = c;
    best[i] = v;
  }
}

// 4-bit fast-scan: per pair of sub-quantizers one 32-byte code load (low lane: 2t, high
// lane: 2t+1), two vpshufb lookups (vectors 0-15 from low nibbles, 16-31 from high ones), and
// 16-bit accumulation of byte pairs: a word sums both bytes, a second accumulator sums the high
// bytes alone, and even = all - 256 * high recovers the low bytes exactly at the end.
void pq4_accumulate_one(const uint8_t* codes, size_t nblocks, size_t npairs, const uint8_t* lut,
                        uint16_t limit, uint16_t* out, uint32_t* below) {
  const __m128i lim = _mm_set1_epi16(short(limit));
  const __m256i low4 = _mm256_set1_epi8(15);
  for (size_t b = 0; b < nblocks; ++b) {
    __m256i all_lo = _mm256_setzero_si256(), high_lo = all_lo;  // vectors 0..15
    __m256i all_hi = all_lo, high_hi = all_lo;                  // vectors 16..31
    const uint8_t* c = codes + b * npairs * 32;
    for (size_t t = 0; t < npairs; ++t) {
      const __m256i code = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(c + 32 * t));
      const __m256i table = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(lut + 32 * t));
      const __m256i r_lo = _mm256_shuffle_epi8(table, _mm256_and_si256(code, low4));
      const __m256i r_hi =
          _mm256_shuffle_epi8(table, _mm256_and_si256(_mm256_srli_epi16(code, 4), low4));
      all_lo = _mm256_add_epi16(all_lo, r_lo);
      high_lo = _mm256_add_epi16(high_lo, _mm256_srli_epi16(r_lo, 8));
      all_hi = _mm256_add_epi16(all_hi, r_hi);
      high_hi = _mm256_add_epi16(high_hi, _mm256_srli_epi16(r_hi, 8));
    }
    // Per lane: words hold (even vector, odd vector) byte pairs; the two lanes are the two
    // sub-quantizers of each pair, so they add up.
    uint16_t* o = out + 32 * b;
    // Returns the 16-bit mask of the 16 results that are <= limit (x <= l iff max(x, l) == l).
    auto finish = [&](__m256i all, __m256i high, uint16_t* dst) {
      const __m256i even = _mm256_sub_epi16(all, _mm256_slli_epi16(high, 8));
      const __m128i e = _mm_add_epi16(_mm256_castsi256_si128(even), _mm256_extracti128_si256(even, 1));
      const __m128i h = _mm_add_epi16(_mm256_castsi256_si128(high), _mm256_extracti128_si256(high, 1));
      const __m128i r0 = _mm_unpacklo_epi16(e, h), r1 = _mm_unpackhi_epi16(e, h);
      _mm_storeu_si128(reinterpret_cast<__m128i*>(dst), r0);
      _mm_storeu_si128(reinterpret_cast<__m128i*>(dst + 8), r1);
      const __m128i le0 = _mm_cmpeq_epi16(_mm_max_epu16(r0, lim), lim);
      const __m128i le1 = _mm_cmpeq_epi16(_mm_max_epu16(r1, lim), lim);
      return uint32_t(_mm_movemask_epi8(_mm_packs_epi16(le0, le1)));
    };
    below[b] = finish(all_lo, high_lo, o) | finish(all_hi, high_hi, o + 16) << 16;
  }
}

void pq4_accumulate(const uint8_t* codes, size_t nblocks, size_t npairs,
                    const uint8_t* const* luts, size_t nq, const uint16_t* limit, uint16_t* out,
                    uint32_t* below) {
  for (size_t q = 0; q < nq; ++q)
    pq4_accumulate_one(codes, nblocks, npairs, luts[q], limit[q],
                       out + q * nblocks * 32, below + q * nblocks);
}

float hmin(__m256 v) {
  __m128 m = _mm_min_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  m = _mm_min_ps(m, _mm_movehl_ps(m, m));
  return _mm_cvtss_f32(_mm_min_ss(m, _mm_shuffle_ps(m, m, 1)));
}

float hmax(__m256 v) {
  __m128 m = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  m = _mm_max_ps(m, _mm_movehl_ps(m, m));
  return _mm_cvtss_f32(_mm_max_ss(m, _mm_shuffle_ps(m, m, 1)));
}

void row16_minmax(const float* rows, size_t n, float* lo, float* hi) {
  for (size_t r = 0; r < n; ++r) {
    const __m256 a = _mm256_loadu_ps(rows + 16 * r), b = _mm256_loadu_ps(rows + 16 * r + 8);
    lo[r] = hmin(_mm256_min_ps(a, b));
    hi[r] = hmax(_mm256_max_ps(a, b));
  }
}

void pq16_tables(const float* q, const float* ct, const float* cnorm, size_t m, size_t dsub,
                 bool l2, float* out) {
  for (size_t j = 0; j < m; ++j) {
    const float* qj = q + j * dsub;
    const float* t = ct + j * dsub * 16;
    __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps();
    double qn = 0;
    for (size_t p = 0; p < dsub; ++p) {  // multiply, then add: the scalar table's roundings
      const __m256 v = _mm256_set1_ps(qj[p]);
      a0 = _mm256_add_ps(a0, _mm256_mul_ps(v, _mm256_loadu_ps(t + p * 16)));
      a1 = _mm256_add_ps(a1, _mm256_mul_ps(v, _mm256_loadu_ps(t + p * 16 + 8)));
      qn += double(qj[p]) * qj[p];
    }
    if (l2) {
      const __m256 n = _mm256_set1_ps(float(qn)), zero = _mm256_setzero_ps();
      a0 = _mm256_max_ps(_mm256_add_ps(_mm256_sub_ps(n, _mm256_add_ps(a0, a0)),
                                       _mm256_loadu_ps(cnorm + j * 16)), zero);
      a1 = _mm256_max_ps(_mm256_add_ps(_mm256_sub_ps(n, _mm256_add_ps(a1, a1)),
                                       _mm256_loadu_ps(cnorm + j * 16 + 8)), zero);
    }
    _mm256_storeu_ps(out + j * 16, a0);
    _mm256_storeu_ps(out + j * 16 + 8, a1);
  }
}

void row16_table_minmax(const float* a, const float* b, size_t n, float* rows, float* lo,
                        float* hi) {
  for (size_t r = 0; r < n; ++r) {
    const __m256 b0 = _mm256_loadu_ps(b + 16 * r), b1 = _mm256_loadu_ps(b + 16 * r + 8);
    const __m256 x = _mm256_sub_ps(_mm256_loadu_ps(a + 16 * r), _mm256_add_ps(b0, b0));
    const __m256 y = _mm256_sub_ps(_mm256_loadu_ps(a + 16 * r + 8), _mm256_add_ps(b1, b1));
    _mm256_storeu_ps(rows + 16 * r, x);
    _mm256_storeu_ps(rows + 16 * r + 8, y);
    lo[r] = hmin(_mm256_min_ps(x, y));
    hi[r] = hmax(_mm256_max_ps(x, y));
  }
}

void row16_quantize(const float* rows, size_t n, const float* lo, float a, uint8_t* out) {
  const __m256 va = _mm256_set1_ps(a);
  const __m256i cap = _mm256_set1_epi32(255);
  for (size_t r = 0; r < n; ++r) {
    const __m256 l = _mm256_set1_ps(lo[r]);
    const __m256i x = _mm256_min_epi32(
        _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_sub_ps(_mm256_loadu_ps(rows + 16 * r), l), va)), cap);
    const __m256i y = _mm256_min_epi32(
        _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_sub_ps(_mm256_loadu_ps(rows + 16 * r + 8), l), va)),
        cap);
    // packus interleaves 128-bit lanes: [x0-3 y0-3 x4-7 y4-7]; reorder to [x0-7 y0-7].
    const __m256i w = _mm256_permute4x64_epi64(_mm256_packus_epi32(x, y), 0xD8);
    _mm_storeu_si128(reinterpret_cast<__m128i*>(out + 16 * r),
                     _mm_packus_epi16(_mm256_castsi256_si128(w), _mm256_extracti128_si256(w, 1)));
  }
}

// Scalar POPCNT over 64-bit words (every AVX2 CPU has it; there is no vector popcount here).
__attribute__((target("popcnt"))) void rbe_dots(const uint64_t* q, size_t qplanes,
                                                const uint64_t* codes, size_t planes, size_t n,
                                                size_t words, int32_t* out) {
  for (size_t r = 0; r < n; ++r) {
    const uint64_t* d = codes + r * planes * words;
    uint64_t s = 0;
    for (size_t i = 0; i < qplanes; ++i)
      for (size_t k = 0; k < planes; ++k) {
        uint64_t c = 0;
        for (size_t w = 0; w < words; ++w)
          c += uint64_t(_mm_popcnt_u64(q[i * words + w] & d[k * words + w]));
        s += c << (qplanes - 1 - i + planes - 1 - k);
      }
    out[r] = int32_t(s);
  }
}

// Eight forward-index values as floats, and one (f16 or u8).
inline __m256 values8(const uint16_t* v) { return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i*)v)); }
inline __m256 values8(const uint8_t* v) {
  return _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i*)v)));
}
inline float value1(uint16_t v) { return _cvtsh_ss(v); }
inline float value1(uint8_t v) { return float(v); }

template <class V>
float sparse_dot(const uint16_t* comp, const V* val, size_t n, const float* q) {
  __m256 acc = _mm256_setzero_ps();
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m256i idx = _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i*)(comp + i)));
    acc = _mm256_fmadd_ps(_mm256_i32gather_ps(q, idx, 4), values8(val + i), acc);
  }
  float s = hsum(acc);
  for (; i < n; ++i) s += q[comp[i]] * value1(val[i]);
  return s;
}

// Four rows a pass, so acc is read and written once for them; saturating adds of
// non-negative terms give the plain formula's min(65535, sum) in any order.
void accumulate_u8(const uint8_t* const* rows, const uint16_t* w, size_t nrows, size_t n,
                   uint16_t* acc) {
  const __m256i up = _mm256_set1_epi16(63);
  for (size_t r0 = 0; r0 < nrows; r0 += 4) {
    const size_t k = nrows - r0 < 4 ? nrows - r0 : 4;
    __m256i wv[4];
    for (size_t j = 0; j < k; ++j) wv[j] = _mm256_set1_epi16(int16_t(w[r0 + j]));
    size_t i = 0;
    for (; i + 16 <= n; i += 16) {  // w * row + 63 <= 65,088: exact in 16 bits
      __m256i* a = reinterpret_cast<__m256i*>(acc + i);
      __m256i sum = _mm256_loadu_si256(a);
      for (size_t j = 0; j < k; ++j) {
        const __m256i r = _mm256_cvtepu8_epi16(
            _mm_loadu_si128(reinterpret_cast<const __m128i*>(rows[r0 + j] + i)));
        sum = _mm256_adds_epu16(
            sum, _mm256_srli_epi16(_mm256_add_epi16(_mm256_mullo_epi16(r, wv[j]), up), 6));
      }
      _mm256_storeu_si256(a, sum);
    }
    const uint8_t* rest[4];  // the last n - i of each row: the plain loop
    for (size_t j = 0; j < k; ++j) rest[j] = rows[r0 + j] + i;
    scalar_kernels().accumulate_u8(rest, w + r0, k, n - i, acc + i);
  }
}

}  // namespace

const Kernels* avx2_kernels() {
  static const Kernels k{kMq,         kMr,         dot_rows, decode_rows,
                         gemm_tile,   dot_rows_i8, nearest,  pq4_accumulate,
                         row16_minmax, row16_table_minmax, row16_quantize, rbe_dots,
                         scalar_kernels().rbe_dots_u8, sparse_dot<uint16_t>, sparse_dot<uint8_t>,
                         dot_gather,  nullptr,     pq16_tables, accumulate_u8,
                         scalar_kernels().select_u16};
  return &k;
}

}  // namespace quanta
