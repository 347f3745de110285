// Compiled with -mamx-tile -mamx-bf16 -mamx-int8 -mavx512f (CMake); only reached through
// amx_bf16_active() / amx_int8_active().
#include "quanta/simd/amx.hpp"

#include <immintrin.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>

#include "quanta/codec/storage.hpp"
#include "quanta/simd/dispatch.hpp"

namespace quanta {

namespace {

constexpr long kArchReqXcompPerm = 0x1023;  // arch_prctl: ask for an extended state
constexpr long kXfeatureXtiledata = 18;

unsigned cpuid7_edx() {
  unsigned a, b, c, d;
  __asm__ volatile("cpuid" : "=a"(a), "=b"(b), "=c"(c), "=d"(d) : "a"(7), "c"(0));
  return d;  // bit 22 AMX-BF16, 24 AMX-TILE, 25 AMX-INT8
}

bool os_grants_amx() {
  // Linux hands out the 8 KiB tile state only on request, once per process.
  return syscall(SYS_arch_prctl, kArchReqXcompPerm, kXfeatureXtiledata) == 0;
}

struct alignas(64) TileConfig {
  uint8_t palette, start_row, reserved[14];
  uint16_t colsb[16];
  uint8_t rows[16];
};

// The tile intrinsics take their register number as a literal (GCC pastes it into the asm).
void tile_zero(int t) {
  switch (t) {
    case 0: _tile_zero(0); break;
    case 1: _tile_zero(1); break;
    case 2: _tile_zero(2); break;
    default: _tile_zero(3);
  }
}
void tile_load(int t, const void* p, size_t stride) {
  switch (t) {
    case 0: _tile_loadd(0, p, stride); break;
    case 1: _tile_loadd(1, p, stride); break;
    case 2: _tile_loadd(2, p, stride); break;
    default: _tile_loadd(3, p, stride);
  }
}
void tile_store(int t, void* p, size_t stride) {
  switch (t) {
    case 0: _tile_stored(0, p, stride); break;
    case 1: _tile_stored(1, p, stride); break;
    case 2: _tile_stored(2, p, stride); break;
    default: _tile_stored(3, p, stride);
  }
}

// tmm0-3: C (2 x 2 blocks of 16 x 16), tmm4-5: A (two 16-row blocks), tmm6-7: B.
// For every 32-row block of a (rows of lda elements) and pair of 16-column blocks of b,
// C = init(tile, r0, cb) (zero or loaded), plus the products over K steps s0 .. s1, then
// done(tile, r0, cb, rows) for each C tile (tile 0..3).
// The four products of a 2 x 2 step (C tiles 0-3 += A tiles 4-5 x B tiles 6-7): bf16 inputs
// with float32 sums, or int8 inputs with int32 sums.
template <class T>
struct Dp;
template <>
struct Dp<uint16_t> {
  static void p0() { _tile_dpbf16ps(0, 4, 6); }
  static void p1() { _tile_dpbf16ps(1, 4, 7); }
  static void p2() { _tile_dpbf16ps(2, 5, 6); }
  static void p3() { _tile_dpbf16ps(3, 5, 7); }
};
template <>
struct Dp<int8_t> {
  static void p0() { _tile_dpbssd(0, 4, 6); }
  static void p1() { _tile_dpbssd(1, 4, 7); }
  static void p2() { _tile_dpbssd(2, 5, 6); }
  static void p3() { _tile_dpbssd(3, 5, 7); }
};

// A step is 64 bytes of depth (32 bf16 or 64 int8 elements); a tile 1 KiB.
template <class T, class Init, class Done>
void tile_loop(const T* a, size_t lda, size_t nrows, const T* a_end, const T* b, size_t nk,
               size_t s0, size_t s1, size_t ncols, Init&& init, Done&& done) {
  constexpr size_t depth = 64 / sizeof(T), tile = 1024 / sizeof(T);
  const size_t ncb = (ncols + 15) / 16, nsteps = s1 - s0;
  // With more than one column pair the row blocks are read again for each: copy their depth
  // slice into contiguous 1 KiB tiles first. (Rows 4 KiB-multiple apart, as 10,240-d bf16 rows
  // are, would otherwise all fall into one L1 set.)
  const bool repack = ncb > 2;
  std::vector<T> pad;
  thread_local std::vector<T> packed;  // reused: no allocation per call
  if (repack && packed.size() < 2 * nsteps * tile) packed.resize(2 * nsteps * tile);
  for (size_t r0 = 0; r0 < nrows; r0 += 32) {
    const T* blk[2];
    size_t nr[2], stride[2], step[2];
    for (int h = 0; h < 2; ++h) {
      const size_t start = std::min(nrows, r0 + 16 * h);
      nr[h] = std::min<size_t>(16, nrows - start);
      blk[h] = a + start * lda;
      if (nr[h] > 0 && blk[h] + 16 * lda > a_end) {  // a short block at the very end
        pad.assign(16 * lda, 0);
        std::memcpy(pad.data(), blk[h], nr[h] * lda * sizeof(T));
        blk[h] = pad.data();
      }
      blk[h] += s0 * depth;  // tile s - s0 at blk + (s - s0) * step, rows stride bytes apart
      stride[h] = lda * sizeof(T);
      step[h] = depth;
      if (repack && nr[h] > 0) {
        T* dst = packed.data() + h * nsteps * tile;
        for (size_t s = 0; s < nsteps; ++s)
          for (size_t r = 0; r < 16; ++r)
            std::memcpy(dst + s * tile + r * depth, blk[h] + r * lda + s * depth, 64);
        blk[h] = dst;
        stride[h] = 64;
        step[h] = tile;
      }
    }
    for (size_t cb = 0; cb < ncb; cb += 2) {
      const bool two = cb + 1 < ncb, low = nr[1] > 0;
      init(0, r0, cb);
      if (two) init(1, r0, cb + 1);
      if (low) init(2, r0 + 16, cb);
      if (two && low) init(3, r0 + 16, cb + 1);
      const T* b0 = b + cb * nk * tile;
      const T* b1 = b0 + nk * tile;
      for (size_t s = s0; s < s1; ++s) {
        _tile_loadd(4, blk[0] + (s - s0) * step[0], stride[0]);
        _tile_loadd(6, b0 + s * tile, 64);
        Dp<T>::p0();
        if (two) {
          _tile_loadd(7, b1 + s * tile, 64);
          Dp<T>::p1();
        }
        if (low) {
          _tile_loadd(5, blk[1] + (s - s0) * step[1], stride[1]);
          Dp<T>::p2();
          if (two) Dp<T>::p3();
        }
      }
      done(0, r0, cb, nr[0]);
      if (two) done(1, r0, cb + 1, nr[0]);
      if (low) done(2, r0 + 16, cb, nr[1]);
      if (two && low) done(3, r0 + 16, cb + 1, nr[1]);
    }
  }
}

// Packs ncols vectors as B tiles: element k of column c goes to step k / depth, row
// (k % depth) / g, byte offset c * 4 + (k % g) * sizeof(E), g = 4 / sizeof(E) elements.
template <class E, class Src>
std::vector<E> pack_columns(size_t ncols, size_t K, Src&& src) {
  constexpr size_t g = 4 / sizeof(E), depth = 64 / sizeof(E), tile = 1024 / sizeof(E);
  const size_t ncb = (ncols + 15) / 16, nk = K / depth;
  std::vector<E> out(ncb * nk * tile, E(0));
  for (size_t c = 0; c < ncols; ++c)
    for (size_t k = 0; k < K; ++k)
      out[((c / 16) * nk + k / depth) * tile + (k % depth) / g * 16 * g + (c % 16) * g + k % g] =
          src(c, k);
  return out;
}

}  // namespace

bool amx_bf16_active() {
  static const bool ok = (cpuid7_edx() >> 22 & 1) && (cpuid7_edx() >> 24 & 1) && os_grants_amx();
  return ok && active_isa() == Isa::avx512;
}

bool amx_int8_active() {
  static const bool ok = (cpuid7_edx() >> 25 & 1) && (cpuid7_edx() >> 24 & 1) && os_grants_amx();
  return ok && active_isa() == Isa::avx512;
}

AmxScope::AmxScope() {
  TileConfig cfg;
  std::memset(&cfg, 0, sizeof cfg);
  cfg.palette = 1;
  for (int t = 0; t < 8; ++t) {
    cfg.rows[t] = 16;
    cfg.colsb[t] = 64;
  }
  // GCC 12 does not see that ldtilecfg reads cfg and drops the stores above: a barrier.
  __asm__ volatile("" : : "r"(&cfg) : "memory");
  _tile_loadconfig(&cfg);
}

AmxScope::~AmxScope() { _tile_release(); }

std::vector<uint16_t> amx_pack_columns(const float* const* cols, size_t ncols, size_t K) {
  return pack_columns<uint16_t>(ncols, K, [&](size_t c, size_t k) { return f32_to_bf16(cols[c][k]); });
}

std::vector<int8_t> amx_pack_columns_i8(const int8_t* const* cols, size_t ncols, size_t K) {
  return pack_columns<int8_t>(ncols, K, [&](size_t c, size_t k) { return cols[c][k]; });
}

void amx_bf16_products(const uint16_t* a, size_t lda, size_t nrows, const uint16_t* a_end,
                       const uint16_t* b, size_t K, size_t k0, size_t k1, size_t ncols,
                       bool accumulate, float* out, size_t ldo) {
  auto tile = [&](size_t r0, size_t cb) { return out + r0 * ldo + cb * 16; };
  tile_loop<uint16_t>(a, lda, nrows, a_end, b, K / kAmxDepth, k0 / kAmxDepth, k1 / kAmxDepth, ncols,
            [&](int t, size_t r0, size_t cb) {
              if (accumulate)
                tile_load(t, tile(r0, cb), ldo * 4);
              else
                tile_zero(t);
            },
            [&](int t, size_t r0, size_t cb, size_t) { tile_store(t, tile(r0, cb), ldo * 4); });
}

void amx_bf16_colmax(const uint16_t* a, size_t nrows, const uint16_t* a_end,
                     const uint16_t* b, size_t ncols, size_t K, float* colmax) {
  alignas(64) float c[256];
  tile_loop<uint16_t>(a, K, nrows, a_end, b, K / kAmxDepth, 0, K / kAmxDepth, ncols,
            [&](int t, size_t, size_t) { tile_zero(t); },
            [&](int t, size_t, size_t cb, size_t nr) {
              tile_store(t, c, 64);
              __m512 m = _mm512_loadu_ps(colmax + cb * 16);
              for (size_t r = 0; r < nr; ++r) m = _mm512_max_ps(m, _mm512_load_ps(c + r * 16));
              _mm512_storeu_ps(colmax + cb * 16, m);
            });
}

void amx_i8_colmax(const int8_t* a, size_t nrows, const int8_t* a_end, const int8_t* b,
                   size_t ncols, size_t K, int32_t* colmax) {
  alignas(64) int32_t c[256];
  tile_loop<int8_t>(a, K, nrows, a_end, b, K / kAmxDepthI8, 0, K / kAmxDepthI8, ncols,
                    [&](int t, size_t, size_t) { tile_zero(t); },
                    [&](int t, size_t, size_t cb, size_t nr) {
                      tile_store(t, c, 64);
                      __m512i m = _mm512_loadu_si512(colmax + cb * 16);
                      for (size_t r = 0; r < nr; ++r)
                        m = _mm512_max_epi32(m, _mm512_load_si512(c + r * 16));
                      _mm512_storeu_si512(colmax + cb * 16, m);
                    });
}

}  // namespace quanta
