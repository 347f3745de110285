// The per-ISA kernel table. Each ISA file fills one; callers pick it once per call with
// kernels(active_isa()) and never branch per vector pair.
//
// Batched search is a GEMM whose "B" side is a panel of queries, transposed once per call to
// [dim][mq], and whose "A" side is database rows decoded to float32 (f32 rows are used in place).
// A micro-kernel multiplies up to `mr` rows by one panel, so every score is a plain sequential
// sum over the dimensions: the same value whichever tile, block or thread computed it.
#pragma once
#include <cstddef>
#include <cstdint>

#include "quanta/codec/storage.hpp"
#include "quanta/simd/dispatch.hpp"

namespace quanta {

struct Kernels {
  int mq;  // queries per transposed panel
  int mr;  // database rows per micro-kernel call
  // Inner products of one float32 query with n stored rows of `dim` elements.
  void (*dot_rows)(Storage s, const float* q, const uint8_t* codes, size_t n, size_t dim,
                   float* out);
  // Decodes n stored rows into float32 rows (exact values; i8 as plain integers).
  void (*decode_rows)(Storage s, const uint8_t* codes, size_t n, size_t dim, float* out);
  // For r < nrows (<= mr), j < mq: out[r * mq + j] = a[r] * <row r, panel column j> + b[r].
  // Returns the mask of columns j with some out value >= threshold[j] (top-k candidates).
  uint32_t (*gemm_tile)(const float* rows, size_t nrows, const float* panel, size_t dim,
                        const float* a, const float* b, const float* threshold, float* out);
  // Integer inner products of one int8 query (values in [-127, 127]) with n int8 rows.
  void (*dot_rows_i8)(const int8_t* q, const int8_t* codes, size_t n, size_t dim, int32_t* out);
  // For each of n points x_i (rows of dim): the c < kpad minimizing cnorm[c] - 2 <x_i, c>
  // (lowest c on ties), with centroids transposed as ct[p * kpad + c]; kpad is a multiple of
  // 64 and padding centroids have cnorm = +inf. best[i] gets that minimum.
  void (*nearest)(const float* x, size_t n, size_t dim, const float* ct, const float* cnorm,
                  size_t kpad, int64_t* assign, float* best);
  // 4-bit PQ fast-scan. codes: nblocks blocks of 32 vectors, each npairs x 32 bytes (see
  // fast_scan_codes.hpp); luts[q]: npairs x 32 bytes (16 entries of sub-quantizer 2t, then 2t+1).
  // out[32 * b + v] = sum over sub-quantizers of lut[code of vector v of block b]: exact
  // uint16 sums (255 * 2 * npairs <= 65535), the same at every SIMD level. Bit v of
  // below[b] is set when out[32 * b + v] <= limit (a top-k candidate). For nq <= 4 queries at
  // once (they share each code load): luts has nq pointers; limit, out and below hold nq
  // consecutive entries (1, nblocks * 32 and nblocks each).
  void (*pq4_accumulate)(const uint8_t* codes, size_t nblocks, size_t npairs,
                         const uint8_t* const* luts, size_t nq, const uint16_t* limit,
                         uint16_t* out, uint32_t* below);
  // Fast-scan table quantization over n rows of 16 floats: the minimum and maximum of each
  // row, and out[16 * r + c] = min(255, round-to-nearest-even((row[c] - lo[r]) * a)). No
  // fused multiply-add, so every ISA gives the same bytes.
  void (*row16_minmax)(const float* rows, size_t n, float* lo, float* hi);
  // rows = a - (b + b) (an IVF list's precomputed l2 table minus twice the query's sub-dots;
  // no multiply, so nothing to fuse), with row16_minmax of the result.
  void (*row16_table_minmax)(const float* a, const float* b, size_t n, float* rows, float* lo,
                             float* hi);
  void (*row16_quantize)(const float* rows, size_t n, const float* lo, float a, uint8_t* out);
  // Recurrent binary codes (recurrent_binary.hpp): bit planes of `words` uint64, most
  // significant level first; the query has qplanes planes, each of the n codes `planes`.
  // out[r] = sum over dimensions of c_q * c_r, the product of the two codes' integer values,
  // as sum over plane pairs (i, k) of 2^(qplanes - 1 - i + planes - 1 - k) * popcount(q_i & r_k).
  // Exact integers: the same everywhere.
  void (*rbe_dots)(const uint64_t* q, size_t qplanes, const uint64_t* codes, size_t planes,
                   size_t n, size_t words, int32_t* out);
  // The same sums as an unsigned 8-bit dot product: the planes expanded to one byte per
  // dimension (AVX-512: masked byte adds, then VNNI vpdpbusd). qplanes, planes <= 7.
  void (*rbe_dots_u8)(const uint64_t* q, size_t qplanes, const uint64_t* codes, size_t planes,
                      size_t n, size_t words, int32_t* out);
  // A sparse row against a dense query: sum over i < n of q[comp[i]] * value i, values as f16
  // or u8 (the caller applies the row's scale). SIMD levels gather 8 or 16 entries at once
  // (sums in another order than the scalar loop's).
  float (*sparse_dot_f16)(const uint16_t* comp, const uint16_t* val, size_t n, const float* q);
  float (*sparse_dot_u8)(const uint16_t* comp, const uint8_t* val, size_t n, const float* q);
  // Inner products of one float32 query with n stored rows at scattered positions: row i
  // starts at base + pos[i] * dim * storage_bytes(s) (a graph's neighbours). Exact float
  // products for every storage (no query quantization); the caller prefetches the rows.
  void (*dot_gather)(Storage s, const float* q, const uint8_t* base, const uint32_t* pos,
                     size_t n, size_t dim, float* out);
  // Integer inner products of n int8 rows (values in [-127, 127], dim a multiple of 4) with a
  // panel of kPanelI8 int8 queries: out[r * kPanelI8 + j] = sum_p rows[r][p] q_j[p]. The
  // panel holds the queries plus 128 as bytes, 4 dimensions of each query in turn:
  // panel[(p / 4) * 4 * kPanelI8 + 4 * j + p % 4] = q_j[p] + 128; row_sums[r] = sum_p
  // rows[r][p] (for the correction of the +128). nullptr where it would not beat the float32
  // GEMM (no VNNI): the coarse step then scores in float32.
  void (*dot_panel_i8)(const int8_t* rows, const int32_t* row_sums, size_t n,
                       const uint8_t* panel, size_t dim, int32_t* out);
  // ADC tables of one query for PQ codebooks of 16 centroids (4-bit codes), centroids
  // transposed (ct[(j * dsub + p) * 16 + c]): d = sum over p < dsub, in order, of
  // q[j * dsub + p] * ct[...] (a multiply, then an add: no fused multiply-add), and
  // out[j * 16 + c] = d (ip) or max(0, float(|q_j|^2) - 2 d + cnorm[j * 16 + c]) (l2, |q_j|^2
  // summed in double). The same floats at every SIMD level.
  void (*pq16_tables)(const float* q, const float* ct, const float* cnorm, size_t m,
                      size_t dsub, bool l2, float* out);
  // acc[i] = min(65535, acc[i] + sum over r < nrows of ((w[r] * rows[r][i] + 63) >> 6)) for
  // i < n (w[r] <= 255): query terms' shares of n block-max bounds, each rounded up so they
  // stay bounds. Exact integers, the same at every SIMD level.
  void (*accumulate_u8)(const uint8_t* const* rows, const uint16_t* w, size_t nrows, size_t n,
                        uint16_t* acc);
  // Writes the i < n with lo <= v[i] < hi to out in increasing order and returns how many:
  // the blocks whose bounds fall in one band. out has room for n.
  size_t (*select_u16)(const uint16_t* v, size_t n, uint32_t lo, uint32_t hi, uint32_t* out);
};

constexpr size_t kPanelI8 = 16;  // queries per dot_panel_i8 panel: one 512-bit register

const Kernels& kernels(Isa isa);
const Kernels& scalar_kernels();
const Kernels* avx2_kernels();    // defined only with QUANTA_HAVE_AVX2
const Kernels* avx512_kernels();  // defined only with QUANTA_HAVE_AVX512
// Defined only with QUANTA_HAVE_NEON; dotprod: dot_rows_i8 uses SDOT (Armv8.2).
const Kernels* neon_kernels(bool dotprod);

}  // namespace quanta
