// Portable kernels: the reference every SIMD level is tested against, and the path for CPUs
// without AVX2. Built with baseline flags only.
#include <cmath>
#include <algorithm>
#include <cstring>
#include <vector>

#include "quanta/simd/kernels.hpp"

namespace quanta {

namespace {

constexpr int kMq = 8;
constexpr int kMr = 4;

void decode_rows(Storage s, const uint8_t* codes, size_t n, size_t dim, float* out) {
  decode_array(s, codes, n * dim, out);
}

void dot_rows(Storage s, const float* q, const uint8_t* codes, size_t n, size_t dim,
              float* out) {
  const size_t bytes = dim * storage_bytes(s);
  std::vector<float> row(dim);
  for (size_t i = 0; i < n; ++i) {
    const float* r = reinterpret_cast<const float*>(codes + i * bytes);
    if (s != Storage::f32) {
      decode_array(s, codes + i * bytes, dim, row.data());
      r = row.data();
    }
    float acc = 0.0f;
    for (size_t p = 0; p < dim; ++p) acc += q[p] * r[p];
    out[i] = acc;
  }
}

uint32_t gemm_tile(const float* rows, size_t nrows, const float* panel, size_t dim,
                   const float* a, const float* b, const float* threshold, float* out) {
  float acc[kMr][kMq] = {};
  for (size_t p = 0; p < dim; ++p) {
    const float* col = panel + p * kMq;
    for (size_t r = 0; r < nrows; ++r) {
      const float x = rows[r * dim + p];
      for (int j = 0; j < kMq; ++j) acc[r][j] += x * col[j];
    }
  }
  uint32_t mask = 0;
  for (size_t r = 0; r < nrows; ++r)
    for (int j = 0; j < kMq; ++j) {
      const float v = a[r] * acc[r][j] + b[r];
      out[r * kMq + j] = v;
      if (v >= threshold[j]) mask |= 1u << j;
    }
  return mask;
}

void dot_gather(Storage s, const float* q, const uint8_t* base, const uint32_t* pos, size_t n,
                size_t dim, float* out) {
  const size_t bytes = dim * storage_bytes(s);
  for (size_t i = 0; i < n; ++i) dot_rows(s, q, base + size_t(pos[i]) * bytes, 1, dim, out + i);
}

void dot_rows_i8(const int8_t* q, const int8_t* codes, size_t n, size_t dim, int32_t* out) {
  for (size_t i = 0; i < n; ++i) {
    int32_t acc = 0;
    for (size_t p = 0; p < dim; ++p) acc += int32_t(q[p]) * int32_t(codes[i * dim + p]);
    out[i] = acc;
  }
}

void nearest(const float* x, size_t n, size_t dim, const float* ct, const float* cnorm,
             size_t kpad, int64_t* assign, float* best) {
  std::vector<float> acc(kpad);
  for (size_t i = 0; i < n; ++i) {
    std::fill(acc.begin(), acc.end(), 0.0f);
    for (size_t p = 0; p < dim; ++p) {
      const float v = x[i * dim + p];
      const float* row = ct + p * kpad;
      for (size_t c = 0; c < kpad; ++c) acc[c] += v * row[c];
    }
    float bv = INFINITY;
    int64_t bc = 0;
    for (size_t c = 0; c < kpad; ++c) {
      const float d = cnorm[c] - 2 * acc[c];
      if (d < bv) {
        bv = d;
        bc = int64_t(c);
      }
    }
    assign[i] = bc;
    best[i] = bv;
  }
}

void pq4_accumulate_one(const uint8_t* codes, size_t nblocks, size_t npairs, const uint8_t* lut,
                        uint16_t limit, uint16_t* out, uint32_t* below) {
  for (size_t b = 0; b < nblocks; ++b) {
    uint16_t* o = out + 32 * b;
    std::fill(o, o + 32, uint16_t(0));
    for (size_t t = 0; t < npairs; ++t) {
      const uint8_t* c = codes + (b * npairs + t) * 32;
      const uint8_t* l = lut + t * 32;
      for (size_t half = 0; half < 2; ++half)  // sub-quantizer 2t, then 2t + 1
        for (size_t v = 0; v < 16; ++v) {
          const uint8_t byte = c[16 * half + v];
          o[v] = uint16_t(o[v] + l[16 * half + (byte & 15)]);
          o[v + 16] = uint16_t(o[v + 16] + l[16 * half + (byte >> 4)]);
        }
    }
    below[b] = 0;
    for (size_t v = 0; v < 32; ++v)
      if (o[v] <= limit) below[b] |= 1u << v;
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
    lo[r] = *std::min_element(x, x + 16);
    hi[r] = *std::max_element(x, x + 16);
  }
}

void row16_table_minmax(const float* a, const float* b, size_t n, float* rows, float* lo,
                        float* hi) {
  for (size_t e = 0; e < 16 * n; ++e) rows[e] = a[e] - (b[e] + b[e]);
  row16_minmax(rows, n, lo, hi);
}

void row16_quantize(const float* rows, size_t n, const float* lo, float a, uint8_t* out) {
  for (size_t r = 0; r < n; ++r)
    for (size_t c = 0; c < 16; ++c)
      out[16 * r + c] = uint8_t(std::min(255.0f, std::nearbyint((rows[16 * r + c] - lo[r]) * a)));
}

// Bit count without the POPCNT instruction (this file targets the baseline ISA).
inline uint64_t popcount64(uint64_t x) {
  x -= (x >> 1) & 0x5555555555555555ull;
  x = (x & 0x3333333333333333ull) + ((x >> 2) & 0x3333333333333333ull);
  x = (x + (x >> 4)) & 0x0F0F0F0F0F0F0F0Full;
  return (x * 0x0101010101010101ull) >> 56;
}

void rbe_dots(const uint64_t* q, size_t qplanes, const uint64_t* codes, size_t planes, size_t n,
              size_t words, int32_t* out) {
  for (size_t r = 0; r < n; ++r) {
    const uint64_t* d = codes + r * planes * words;
    uint64_t s = 0;
    for (size_t i = 0; i < qplanes; ++i)
      for (size_t k = 0; k < planes; ++k) {
        uint64_t c = 0;
        for (size_t w = 0; w < words; ++w) c += popcount64(q[i * words + w] & d[k * words + w]);
        s += c << (qplanes - 1 - i + planes - 1 - k);
      }
    out[r] = int32_t(s);
  }
}

// c_j of a code (planes of `words` words), for 64 * words dimensions (padding gives 0).
void rbe_values(const uint64_t* code, size_t planes, size_t words, uint8_t* c) {
  for (size_t j = 0; j < 64 * words; ++j) {
    uint32_t v = 0;
    for (size_t i = 0; i < planes; ++i) v = (v << 1) | ((code[i * words + j / 64] >> (j % 64)) & 1);
    c[j] = uint8_t(v);
  }
}

void rbe_dots_u8(const uint64_t* q, size_t qplanes, const uint64_t* codes, size_t planes,
                 size_t n, size_t words, int32_t* out) {
  std::vector<uint8_t> cq(64 * words), cd(64 * words);
  rbe_values(q, qplanes, words, cq.data());
  for (size_t r = 0; r < n; ++r) {
    rbe_values(codes + r * planes * words, planes, words, cd.data());
    int32_t s = 0;
    for (size_t j = 0; j < 64 * words; ++j) s += int32_t(cq[j]) * int32_t(cd[j]);
    out[r] = s;
  }
}

// f16 -> f32: normal numbers by a shift and a bias, the rest by the exact codec.
inline float half(uint16_t h) {
  const uint32_t e = h & 0x7c00u;
  if (e == 0 || e == 0x7c00u) return f16_to_f32(h);
  const uint32_t u = (uint32_t(h & 0x8000u) << 16) | ((uint32_t(h & 0x7fffu) << 13) + 0x38000000u);
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

template <class V>  // V: uint16_t (f16 values) or uint8_t
float sparse_dot(const uint16_t* comp, const V* val, size_t n, const float* q) {
  float s = 0.0f;
  for (size_t i = 0; i < n; ++i) s += q[comp[i]] * (sizeof(V) == 2 ? half(val[i]) : float(val[i]));
  return s;
}

void dot_panel_i8(const int8_t* rows, const int32_t* row_sums, size_t n, const uint8_t* panel,
                  size_t dim, int32_t* out) {
  for (size_t r = 0; r < n; ++r)
    for (size_t j = 0; j < kPanelI8; ++j) {
      int32_t acc = 0;
      for (size_t p = 0; p < dim; ++p)
        acc += int32_t(panel[(p / 4) * 4 * kPanelI8 + 4 * j + p % 4]) * rows[r * dim + p];
      out[r * kPanelI8 + j] = acc - 128 * row_sums[r];
    }
}

void pq16_tables(const float* q, const float* ct, const float* cnorm, size_t m, size_t dsub,
                 bool l2, float* out) {
  for (size_t j = 0; j < m; ++j) {
    const float* qj = q + j * dsub;
    const float* t = ct + j * dsub * 16;
    float acc[16] = {};
    double qn = 0;
    for (size_t p = 0; p < dsub; ++p) {
      for (size_t c = 0; c < 16; ++c) acc[c] += qj[p] * t[p * 16 + c];
      qn += double(qj[p]) * qj[p];
    }
    const float* cn = cnorm + j * 16;
    for (size_t c = 0; c < 16; ++c)
      out[j * 16 + c] = l2 ? std::max(0.0f, float(qn) - 2 * acc[c] + cn[c]) : acc[c];
  }
}

void accumulate_u8(const uint8_t* const* rows, const uint16_t* w, size_t nrows, size_t n,
                   uint16_t* acc) {
  for (size_t r = 0; r < nrows; ++r)
    for (size_t i = 0; i < n; ++i)
      acc[i] = uint16_t(std::min<uint32_t>(65535u, acc[i] + ((w[r] * rows[r][i] + 63u) >> 6)));
}

size_t select_u16(const uint16_t* v, size_t n, uint32_t lo, uint32_t hi, uint32_t* out) {
  if (hi <= lo) return 0;
  size_t m = 0;
  for (size_t i = 0; i < n; ++i) {  // branch-free: most values fail the test
    out[m] = uint32_t(i);
    m += uint32_t(v[i]) - lo < hi - lo;
  }
  return m;
}

}  // namespace

const Kernels& scalar_kernels() {
  static const Kernels k{kMq,         kMr,         dot_rows,      decode_rows,
                         gemm_tile,   dot_rows_i8, nearest,       pq4_accumulate,
                         row16_minmax, row16_table_minmax, row16_quantize, rbe_dots,
                         rbe_dots_u8, sparse_dot<uint16_t>, sparse_dot<uint8_t>, dot_gather,
                         dot_panel_i8, pq16_tables, accumulate_u8, select_u16};
  return k;
}

// Only reached with an ISA that dispatch has checked against the CPU and the build.
const Kernels& kernels(Isa isa) {
#ifdef QUANTA_HAVE_AVX512
  if (isa == Isa::avx512) return *avx512_kernels();
#endif
#ifdef QUANTA_HAVE_AVX2
  if (isa == Isa::avx2) return *avx2_kernels();
#endif
#ifdef QUANTA_HAVE_NEON
  if (isa == Isa::neon) {
    static const bool dotprod = cpu_has("dotprod");
    return *neon_kernels(dotprod);
  }
#endif
  (void)isa;
  return scalar_kernels();
}

}  // namespace quanta
