// AArch64 Advanced SIMD (NEON) kernels. Every AArch64 CPU has NEON; the int8 dot product
// (SDOT, the Armv8.2 dotprod extension) is compiled per function and used only where dispatch
// found it. Tails shorter than one vector go through the scalar codecs.
#include <arm_neon.h>

#include <cmath>

#include "quanta/simd/kernels.hpp"

#if defined(__clang__)
#define QUANTA_TARGET_DOTPROD __attribute__((target("dotprod")))
#else
#define QUANTA_TARGET_DOTPROD __attribute__((target("arch=armv8.2-a+dotprod")))
#endif

namespace quanta {

namespace {

constexpr int kMq = 16;  // four q registers of queries
constexpr int kMr = 6;   // 24 accumulators of the 32 registers

struct F8 {  // eight floats
  float32x4_t lo, hi;
};

inline float32x4_t f16x4(uint16x4_t h) { return vcvt_f32_f16(vreinterpret_f16_u16(h)); }

inline F8 f16x8(uint16x8_t h) {
  return {f16x4(vget_low_u16(h)), f16x4(vget_high_u16(h))};
}

// 8 elements starting at element `p`, widened to float32 (E4M3 scaled by 2^-8, exact).
template <Storage S>
inline F8 load8(const uint8_t* row, size_t p) {
  if constexpr (S == Storage::f32) {
    const float* f = reinterpret_cast<const float*>(row) + p;
    return {vld1q_f32(f), vld1q_f32(f + 4)};
  } else if constexpr (S == Storage::f16) {
    return f16x8(vld1q_u16(reinterpret_cast<const uint16_t*>(row + 2 * p)));
  } else if constexpr (S == Storage::bf16) {
    const uint16x8_t w = vld1q_u16(reinterpret_cast<const uint16_t*>(row + 2 * p));
    return {vreinterpretq_f32_u32(vshll_n_u16(vget_low_u16(w), 16)),
            vreinterpretq_f32_u32(vshll_high_n_u16(w, 16))};
  } else if constexpr (S == Storage::f8e4m3) {
    // Sign-extend, << 7, clear bit 14: fp16 bits of the E4M3 value times 2^-8.
    const uint16x8_t b = vreinterpretq_u16_s16(vmovl_s8(vld1_s8(reinterpret_cast<const int8_t*>(row + p))));
    return f16x8(vandq_u16(vshlq_n_u16(b, 7), vdupq_n_u16(0xBFFF)));
  } else if constexpr (S == Storage::f8e5m2) {
    return f16x8(vshlq_n_u16(vmovl_u8(vld1_u8(row + p)), 8));
  } else {
    const int16x8_t w = vmovl_s8(vld1_s8(reinterpret_cast<const int8_t*>(row + p)));
    return {vcvtq_f32_s32(vmovl_s16(vget_low_s16(w))), vcvtq_f32_s32(vmovl_high_s16(w))};
  }
}

template <Storage S>
constexpr float post_scale() {
  return S == Storage::f8e4m3 ? 256.0f : 1.0f;
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

// acc += q[p..p+8) * x, as two independent chains (lo, hi).
inline void fma8(float32x4_t& lo, float32x4_t& hi, const float* q, F8 x) {
  lo = vfmaq_f32(lo, vld1q_f32(q), x.lo);
  hi = vfmaq_f32(hi, vld1q_f32(q + 4), x.hi);
}

// <q, row> for four rows at once: two chains of FMAs per row, their loads overlapping.
template <Storage S>
void dot4(const float* q, const uint8_t* r0, const uint8_t* r1, const uint8_t* r2,
          const uint8_t* r3, size_t dim, float* out) {
  const size_t full = dim / 8 * 8;
  constexpr float ps = post_scale<S>();
  const float32x4_t z = vdupq_n_f32(0.0f);
  float32x4_t a0 = z, b0 = z, a1 = z, b1 = z, a2 = z, b2 = z, a3 = z, b3 = z;
  for (size_t p = 0; p < full; p += 8) {
    fma8(a0, b0, q + p, load8<S>(r0, p));
    fma8(a1, b1, q + p, load8<S>(r1, p));
    fma8(a2, b2, q + p, load8<S>(r2, p));
    fma8(a3, b3, q + p, load8<S>(r3, p));
  }
  out[0] = vaddvq_f32(vaddq_f32(a0, b0)) * ps + tail_dot<S>(q, r0, full, dim);
  out[1] = vaddvq_f32(vaddq_f32(a1, b1)) * ps + tail_dot<S>(q, r1, full, dim);
  out[2] = vaddvq_f32(vaddq_f32(a2, b2)) * ps + tail_dot<S>(q, r2, full, dim);
  out[3] = vaddvq_f32(vaddq_f32(a3, b3)) * ps + tail_dot<S>(q, r3, full, dim);
}

// <q, row> for one row in four partial sums, so the FMA latency overlaps (a graph search
// scores one row at a time).
template <Storage S>
float dot1(const float* q, const uint8_t* r, size_t dim) {
  const size_t full = dim / 8 * 8, full2 = dim / 16 * 16;
  const float32x4_t z = vdupq_n_f32(0.0f);
  float32x4_t a0 = z, a1 = z, a2 = z, a3 = z;
  size_t p = 0;
  for (; p < full2; p += 16) {
    fma8(a0, a1, q + p, load8<S>(r, p));
    fma8(a2, a3, q + p + 8, load8<S>(r, p + 8));
  }
  for (; p < full; p += 8) fma8(a0, a1, q + p, load8<S>(r, p));
  const float32x4_t s = vaddq_f32(vaddq_f32(a0, a1), vaddq_f32(a2, a3));
  return vaddvq_f32(s) * post_scale<S>() + tail_dot<S>(q, r, full, dim);
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
  for (size_t i = 0; i < n; ++i) {
    const uint8_t* r = codes + i * bytes;
    float* o = out + i * dim;
    for (size_t p = 0; p < full; p += 8) {
      const F8 x = load8<S>(r, p);
      vst1q_f32(o + p, vmulq_n_f32(x.lo, post_scale<S>()));
      vst1q_f32(o + p + 4, vmulq_n_f32(x.hi, post_scale<S>()));
    }
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

// Bit j of the result: lane j of a comparison mask (all ones or zero per lane).
inline uint32_t lane_bits(uint32x4_t m) {
  static const uint32_t kBit[4] = {1, 2, 4, 8};
  return vaddvq_u32(vandq_u32(m, vld1q_u32(kBit)));
}

inline uint32_t lane_bits(uint16x8_t m) {
  static const uint16_t kBit[8] = {1, 2, 4, 8, 16, 32, 64, 128};
  return vaddvq_u16(vandq_u16(m, vld1q_u16(kBit)));
}

template <int R>
uint32_t gemm_tile_t(const float* rows, const float* panel, size_t dim, const float* a,
                     const float* b, const float* threshold, float* out) {
  float32x4_t acc[R][4];
#pragma GCC unroll 8
  for (int r = 0; r < R; ++r) acc[r][0] = acc[r][1] = acc[r][2] = acc[r][3] = vdupq_n_f32(0.0f);
  for (size_t p = 0; p < dim; ++p) {
    const float* col = panel + p * kMq;
    const float32x4_t c0 = vld1q_f32(col), c1 = vld1q_f32(col + 4), c2 = vld1q_f32(col + 8),
                      c3 = vld1q_f32(col + 12);
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r) {
      const float x = rows[r * dim + p];
      acc[r][0] = vfmaq_n_f32(acc[r][0], c0, x);
      acc[r][1] = vfmaq_n_f32(acc[r][1], c1, x);
      acc[r][2] = vfmaq_n_f32(acc[r][2], c2, x);
      acc[r][3] = vfmaq_n_f32(acc[r][3], c3, x);
    }
  }
  uint32_t mask = 0;
#pragma GCC unroll 8
  for (int r = 0; r < R; ++r) {
    const float32x4_t br = vdupq_n_f32(b[r]);
    for (int j = 0; j < 4; ++j) {
      const float32x4_t v = vfmaq_n_f32(br, acc[r][j], a[r]);
      vst1q_f32(out + r * kMq + 4 * j, v);
      mask |= lane_bits(vcgeq_f32(v, vld1q_f32(threshold + 4 * j))) << (4 * j);
    }
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

inline int32_t dot_tail_i8(const int8_t* q, const int8_t* r, size_t from, size_t dim) {
  int32_t s = 0;
  for (size_t p = from; p < dim; ++p) s += int32_t(q[p]) * int32_t(r[p]);
  return s;
}

// Armv8.0: widening multiplies to int16 (|product| <= 127 * 127 fits), pairwise-added to int32.
void dot_rows_i8(const int8_t* q, const int8_t* codes, size_t n, size_t dim, int32_t* out) {
  const size_t full = dim / 16 * 16;
  for (size_t i = 0; i < n; ++i) {
    const int8_t* r = codes + i * dim;
    int32x4_t acc = vdupq_n_s32(0);
    for (size_t p = 0; p < full; p += 16) {
      const int8x16_t qv = vld1q_s8(q + p), cv = vld1q_s8(r + p);
      acc = vpadalq_s16(acc, vmull_s8(vget_low_s8(qv), vget_low_s8(cv)));
      acc = vpadalq_s16(acc, vmull_high_s8(qv, cv));
    }
    out[i] = vaddvq_s32(acc) + dot_tail_i8(q, r, full, dim);
  }
}

// SDOT: four 4-byte dot products per instruction, accumulated in int32 lanes.
QUANTA_TARGET_DOTPROD void dot_rows_i8_sdot(const int8_t* q, const int8_t* codes, size_t n,
                                            size_t dim, int32_t* out) {
  const size_t full = dim / 16 * 16;
  for (size_t i = 0; i < n; ++i) {
    const int8_t* r = codes + i * dim;
    int32x4_t acc = vdupq_n_s32(0);
    for (size_t p = 0; p < full; p += 16) acc = vdotq_s32(acc, vld1q_s8(q + p), vld1q_s8(r + p));
    out[i] = vaddvq_s32(acc) + dot_tail_i8(q, r, full, dim);
  }
}

// 64 centroids (16 registers) per pass; a running per-lane minimum and its index.
void nearest(const float* x, size_t n, size_t dim, const float* ct, const float* cnorm,
             size_t kpad, int64_t* assign, float* best) {
  static const uint32_t kLane[4] = {0, 1, 2, 3};
  const uint32x4_t lane = vld1q_u32(kLane);
  for (size_t i = 0; i < n; ++i) {
    const float* xi = x + i * dim;
    float32x4_t bv = vdupq_n_f32(INFINITY);
    uint32x4_t bi = vdupq_n_u32(0);
    for (size_t c0 = 0; c0 < kpad; c0 += 64) {
      float32x4_t acc[16];
      for (int j = 0; j < 16; ++j) acc[j] = vdupq_n_f32(0.0f);
      for (size_t p = 0; p < dim; ++p) {
        const float v = xi[p];
        const float* row = ct + p * kpad + c0;
        for (int j = 0; j < 16; ++j) acc[j] = vfmaq_n_f32(acc[j], vld1q_f32(row + 4 * j), v);
      }
      for (int j = 0; j < 16; ++j) {
        const float32x4_t d = vfmsq_n_f32(vld1q_f32(cnorm + c0 + 4 * j), acc[j], 2.0f);
        const uint32x4_t lt = vcltq_f32(d, bv);
        bv = vbslq_f32(lt, d, bv);
        bi = vbslq_u32(lt, vaddq_u32(vdupq_n_u32(uint32_t(c0 + 4 * j)), lane), bi);
      }
    }
    float vals[4];
    uint32_t idxs[4];
    vst1q_f32(vals, bv);
    vst1q_u32(idxs, bi);
    float v = vals[0];
    uint32_t c = idxs[0];
    for (int l = 1; l < 4; ++l)
      if (vals[l] < v || (vals[l] == v && idxs[l] < c)) {
        v = vals[l];
        c = idxs[l];
      }
    assign[i] = int64_t(c);
    best[i] = v;
  }
}

// 4-bit fast-scan: per sub-quantizer one 16-byte code load and two TBL lookups (vectors 0-15
// from the low nibbles, 16-31 from the high ones), widened into four uint16 accumulators.
void pq4_accumulate_one(const uint8_t* codes, size_t nblocks, size_t npairs, const uint8_t* lut,
                        uint16_t limit, uint16_t* out, uint32_t* below) {
  const uint8x16_t low4 = vdupq_n_u8(15);
  const uint16x8_t lim = vdupq_n_u16(limit);
  for (size_t b = 0; b < nblocks; ++b) {
    uint16x8_t s0 = vdupq_n_u16(0), s1 = s0, s2 = s0, s3 = s0;  // vectors 0-7 .. 24-31
    const uint8_t* c = codes + b * npairs * 32;
    for (size_t h = 0; h < 2 * npairs; ++h) {  // sub-quantizer h: code bytes and table at 16h
      const uint8x16_t code = vld1q_u8(c + 16 * h), table = vld1q_u8(lut + 16 * h);
      const uint8x16_t lo = vqtbl1q_u8(table, vandq_u8(code, low4));
      const uint8x16_t hi = vqtbl1q_u8(table, vshrq_n_u8(code, 4));
      s0 = vaddw_u8(s0, vget_low_u8(lo));
      s1 = vaddw_high_u8(s1, lo);
      s2 = vaddw_u8(s2, vget_low_u8(hi));
      s3 = vaddw_high_u8(s3, hi);
    }
    uint16_t* o = out + 32 * b;
    vst1q_u16(o, s0);
    vst1q_u16(o + 8, s1);
    vst1q_u16(o + 16, s2);
    vst1q_u16(o + 24, s3);
    below[b] = lane_bits(vcleq_u16(s0, lim)) | lane_bits(vcleq_u16(s1, lim)) << 8 |
               lane_bits(vcleq_u16(s2, lim)) << 16 | lane_bits(vcleq_u16(s3, lim)) << 24;
  }
}

void pq4_accumulate(const uint8_t* codes, size_t nblocks, size_t npairs,
                    const uint8_t* const* luts, size_t nq, const uint16_t* limit, uint16_t* out,
                    uint32_t* below) {
  for (size_t q = 0; q < nq; ++q)
    pq4_accumulate_one(codes, nblocks, npairs, luts[q], limit[q],
                       out + q * nblocks * 32, below + q * nblocks);
}

void row16_minmax(const float* rows, size_t n, float* lo, float* hi) {
  for (size_t r = 0; r < n; ++r) {
    const float* x = rows + 16 * r;
    const float32x4_t a = vld1q_f32(x), b = vld1q_f32(x + 4), c = vld1q_f32(x + 8),
                      d = vld1q_f32(x + 12);
    lo[r] = vminvq_f32(vminq_f32(vminq_f32(a, b), vminq_f32(c, d)));
    hi[r] = vmaxvq_f32(vmaxq_f32(vmaxq_f32(a, b), vmaxq_f32(c, d)));
  }
}

void row16_table_minmax(const float* a, const float* b, size_t n, float* rows, float* lo,
                        float* hi) {
  for (size_t e = 0; e < 16 * n; e += 4) {
    const float32x4_t bv = vld1q_f32(b + e);
    vst1q_f32(rows + e, vsubq_f32(vld1q_f32(a + e), vaddq_f32(bv, bv)));
  }
  row16_minmax(rows, n, lo, hi);
}

// Round to nearest even (FCVTNS), then saturate to [0, 255] as the scalar min(255, .) does
// for the non-negative values quantization produces.
void row16_quantize(const float* rows, size_t n, const float* lo, float a, uint8_t* out) {
  for (size_t r = 0; r < n; ++r) {
    const float* x = rows + 16 * r;
    const float32x4_t l = vdupq_n_f32(lo[r]);
    int32x4_t v[4];
    for (int j = 0; j < 4; ++j) v[j] = vcvtnq_s32_f32(vmulq_n_f32(vsubq_f32(vld1q_f32(x + 4 * j), l), a));
    const uint16x8_t w0 = vcombine_u16(vqmovun_s32(v[0]), vqmovun_s32(v[1]));
    const uint16x8_t w1 = vcombine_u16(vqmovun_s32(v[2]), vqmovun_s32(v[3]));
    vst1q_u8(out + 16 * r, vcombine_u8(vqmovn_u16(w0), vqmovn_u16(w1)));
  }
}

// Popcounts with CNT on 16 bytes at a time, pairwise-added into uint16 lanes (each step adds
// at most 16 per lane, so flushing every 2048 steps cannot overflow).
inline uint64_t popcount_and(const uint64_t* a, const uint64_t* b, size_t words) {
  uint64_t total = 0;
  size_t w = 0;
  while (w + 2 <= words) {
    uint16x8_t acc = vdupq_n_u16(0);
    for (size_t steps = 0; steps < 2048 && w + 2 <= words; ++steps, w += 2)
      acc = vpadalq_u8(acc, vcntq_u8(vreinterpretq_u8_u64(vandq_u64(vld1q_u64(a + w), vld1q_u64(b + w)))));
    total += vaddlvq_u16(acc);
  }
  if (w < words) total += vaddv_u8(vcnt_u8(vcreate_u8(a[w] & b[w])));
  return total;
}

void rbe_dots(const uint64_t* q, size_t qplanes, const uint64_t* codes, size_t planes, size_t n,
              size_t words, int32_t* out) {
  for (size_t r = 0; r < n; ++r) {
    const uint64_t* d = codes + r * planes * words;
    uint64_t s = 0;
    for (size_t i = 0; i < qplanes; ++i)
      for (size_t k = 0; k < planes; ++k)
        s += popcount_and(q + i * words, d + k * words, words) << (qplanes - 1 - i + planes - 1 - k);
    out[r] = int32_t(s);
  }
}

// Eight forward-index values as floats (f16 or u8), and one.
inline F8 values8(const uint16_t* v) { return f16x8(vld1q_u16(v)); }
inline F8 values8(const uint8_t* v) {
  const uint16x8_t w = vmovl_u8(vld1_u8(v));
  return {vcvtq_f32_u32(vmovl_u16(vget_low_u16(w))), vcvtq_f32_u32(vmovl_high_u16(w))};
}
inline float value1(uint16_t v) { return f16_to_f32(v); }
inline float value1(uint8_t v) { return float(v); }

// NEON has no gather: the eight query entries are read one by one into a vector.
template <class V>
float sparse_dot(const uint16_t* comp, const V* val, size_t n, const float* q) {
  float32x4_t a0 = vdupq_n_f32(0.0f), a1 = a0;
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    float g[8];
    for (int j = 0; j < 8; ++j) g[j] = q[comp[i + j]];
    fma8(a0, a1, g, values8(val + i));
  }
  float s = vaddvq_f32(vaddq_f32(a0, a1));
  for (; i < n; ++i) s += q[comp[i]] * value1(val[i]);
  return s;
}

}  // namespace

const Kernels* neon_kernels(bool dotprod) {
  static const Kernels plain{kMq,         kMr,         dot_rows, decode_rows,
                             gemm_tile,   dot_rows_i8, nearest,  pq4_accumulate,
                             row16_minmax, row16_table_minmax, row16_quantize, rbe_dots,
                             scalar_kernels().rbe_dots_u8, sparse_dot<uint16_t>,
                             sparse_dot<uint8_t>, dot_gather,  nullptr,
                             scalar_kernels().pq16_tables,
                             scalar_kernels().accumulate_u8,  // auto-vectorized: NEON is baseline
                             scalar_kernels().select_u16};
  static const Kernels sdot = [] {
    Kernels k = plain;
    k.dot_rows_i8 = dot_rows_i8_sdot;
    return k;
  }();
  return dotprod ? &sdot : &plain;
}

}  // namespace quanta
