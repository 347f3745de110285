// Intel AMX tile products (Sapphire Rapids and later): 16 x 16 tiles of float32 (bf16 inputs,
// TDPBF16PS) or int32 (int8 inputs, TDPBSSD) sums, many times the multiply rate of AVX-512.
// Used where one side is stored as bf16 or int8 anyway (bf16 tokens and flat rows, i8
// tokens); the other side (queries) is rounded to that type for it.
#pragma once
#include <cstddef>
#include <cstdint>
#include <vector>

namespace quanta {

// True when the CPU has AMX-TILE and AMX-BF16 (AMX-INT8), the OS granted the tile state to
// this process, the build has the kernels, and the active SIMD level is avx512 (lowering the
// level with set_simd_level turns AMX off too).
bool amx_bf16_active();
bool amx_int8_active();

// Depth of one tile step in elements (64 bytes): K must be a multiple of it.
constexpr size_t kAmxDepth = 32;      // bf16
constexpr size_t kAmxDepthI8 = 64;    // int8

// ncols vectors of K elements (cols[c] points at vector c) packed as AMX B tiles:
// [16-column block][K / depth step][16 rows][16 columns][4 bytes], zero beyond ncols.
std::vector<uint16_t> amx_pack_columns(const float* const* cols, size_t ncols, size_t K);
std::vector<int8_t> amx_pack_columns_i8(const int8_t* const* cols, size_t ncols, size_t K);

// The tile configuration is per thread: hold one of these around the calls below.
struct AmxScope {
  AmxScope();
  ~AmxScope();
  AmxScope(const AmxScope&) = delete;
  AmxScope& operator=(const AmxScope&) = delete;
};

// Products of nrows bf16 rows (lda elements each, from a) with packed columns b (ncols of
// them, K deep), over the depth range k0 .. k1 (multiples of 32): out[r * ldo + c] for
// c < 16 * ceil(ncols / 16), set or (accumulate) added to. Whole 16 x 16 tiles are read and
// written: out needs rows up to a multiple of 16. Rows of a may be read in whole blocks of
// 16 up to a_end; a short block at a_end is copied first.
void amx_bf16_products(const uint16_t* a, size_t lda, size_t nrows, const uint16_t* a_end,
                       const uint16_t* b, size_t K, size_t k0, size_t k1, size_t ncols,
                       bool accumulate, float* out, size_t ldo);
// Column maxima over rows (lda = K): colmax[c] = max(colmax[c], max over r of the product),
// for c < 16 * ceil(ncols / 16).
void amx_bf16_colmax(const uint16_t* a, size_t nrows, const uint16_t* a_end,
                     const uint16_t* b, size_t ncols, size_t K, float* colmax);
void amx_i8_colmax(const int8_t* a, size_t nrows, const int8_t* a_end, const int8_t* b,
                   size_t ncols, size_t K, int32_t* colmax);

}  // namespace quanta
