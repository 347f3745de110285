// The 4-bit fast-scan code layout (after faiss's IndexPQFastScan and Quick ADC), shared by the
// flat fast-scan index and the IVF lists: codes sit in blocks of 32 vectors so that one 32-byte
// load holds two sub-quantizers' codes for the whole block, and the per-query lookup tables,
// quantized to uint8, live in SIMD registers (vpshufb).
//
// Block b, pair t (sub-quantizers 2t, 2t+1): 32 bytes; byte 16 * h + v holds, for
// sub-quantizer 2t + h, vector v's code in its low nibble and vector v + 16's in its high
// nibble. Sums of the quantized tables are exact uint16 integers, so every SIMD level gives
// the same results.
#pragma once
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <vector>

#include "quanta/simd/kernels.hpp"

namespace quanta {
namespace fast_scan {

constexpr size_t kBlock = 32;
inline size_t npairs(size_t m) { return (m + 1) / 2; }
inline size_t block_bytes(size_t m) { return npairs(m) * 32; }
inline size_t bytes_for(size_t n, size_t m) { return (n + kBlock - 1) / kBlock * block_bytes(m); }

// Writes n plain 4-bit codes (two per byte, low nibble first) at positions first.. of blocks,
// which must already hold bytes_for(first + n, m) bytes.
void pack(const uint8_t* codes, size_t n, size_t m, size_t first, uint8_t* blocks);
// The plain codes of positions first .. first + n - 1.
void unpack(const uint8_t* blocks, size_t m, size_t first, size_t n, uint8_t* codes);
size_t code_of(const uint8_t* blocks, size_t m, size_t pos, size_t j);

// Quantizes nt float tables (m x 16 each, smaller is better; lo / hi: each row's minimum and
// maximum, from Kernels::row16_minmax) to uint8 luts (npairs * 32 bytes each) with one scale
// for all: table t's sum over sub-quantizers is estimated by acc / scale + bias[t]. One scale
// lets the sums of several tables (an IVF query's probed lists) be compared with each other.
void quantize_tables(const float* tables, const float* lo, const float* hi, size_t nt, size_t m,
                     uint8_t* luts, float* scale, float* bias);
// The same, taking each row's minimum and maximum itself.
void quantize_tables(const float* tables, size_t nt, size_t m, uint8_t* luts, float* scale,
                     float* bias);

// The largest uint16 sum whose score off - float(sum) / scale (computed so, in float) is
// still >= thr: a scan's limit for a query whose k-th best score is thr (an equal score may
// still enter on position). Tighter than rounding (off - thr) * scale up, which reports a
// whole step of sums that cannot enter (about half of what a top-10 IVF scan reported).
inline uint16_t sum_limit(float off, float scale, float thr) {
  const double est = (double(off) - thr) * scale;
  if (!(est < 65534)) return 65535;  // everything (also: thr -inf, NaN)
  if (est < 0) return 0;             // nothing: off < thr
  const auto ok = [&](uint32_t s) { return off - float(s) / scale >= thr; };
  // The float score is monotone in the sum, and est is within a step of where it crosses
  // thr (unless a large off flattens the float scores: then every sum is reported).
  uint32_t s = uint32_t(est);
  if (ok(s + 1)) return ok(s + 2) ? uint16_t(65535) : uint16_t(s + 1);
  if (s > 0 && !ok(s)) --s;  // further down would only leave out more sums that cannot enter
  return uint16_t(s);
}

// Scans positions [0, n) of `blocks` for nq <= 4 queries (tables luts[q]). Every sub-chunk
// re-reads limit(q) (the largest uint16 sum still worth reporting) and calls emit(q, pos, sum)
// for each position whose sum is at or under it. With `allowed` (one 32-bit mask per block,
// bit v for position 32 b + v) only allowed positions are reported, and blocks without one
// are not scanned.
class Scanner {
 public:
  static constexpr size_t kSub = 1024;   // vectors per kernel call: keeps the limits fresh
  static constexpr size_t kFirst = 32;   // the first calls are short: while a query's heap is
                                         // still filling, its limit is loose and every position
                                         // is reported, so it must tighten early
  Scanner() : acc_(4 * kSub), below_(4 * kSub / kBlock) {}

  template <class Limit, class Emit>
  void scan(const Kernels& kern, const uint8_t* blocks, size_t n, size_t m,
            const uint8_t* const* luts, size_t nq, Limit&& limit, Emit&& emit,
            const uint32_t* allowed = nullptr) {
    const size_t np = npairs(m);
    uint16_t lim[4];
    size_t len = kFirst;
    for (size_t s0 = 0; s0 < n; s0 += len, len = std::min(kSub, 2 * len)) {
      bool tight = true;
      for (size_t q = 0; q < nq; ++q) tight &= (lim[q] = limit(q)) < 65535;
      // heaps already full (a later list of the queries): no short first calls
      if (s0 == 0 && tight) len = kSub;
      const size_t sub = std::min(len, n - s0), nblocks = (sub + kBlock - 1) / kBlock;
      const uint32_t* mask = allowed ? allowed + s0 / kBlock : nullptr;
      // Mostly empty sub-chunks are scanned run by run of blocks with an allowed position;
      // denser ones in one call (a call costs about as much as a block).
      size_t live = nblocks;
      if (mask) live = size_t(std::count_if(mask, mask + nblocks, [](uint32_t b) { return b; }));
      if (live == 0) continue;
      const bool runs = 2 * live < nblocks;
      for (size_t b0 = 0; b0 < nblocks;) {
        size_t b1 = nblocks;
        if (runs) {
          while (!mask[b0]) ++b0;  // live > 0: a run remains
          for (b1 = b0 + 1; b1 < nblocks && mask[b1];) ++b1;
        }
        const size_t nb = b1 - b0;
        kern.pq4_accumulate(blocks + (s0 / kBlock + b0) * np * 32, nb, np, luts, nq, lim,
                            acc_.data(), below_.data());
        for (size_t q = 0; q < nq; ++q)
          for (size_t b = 0; b < nb; ++b) {
            uint32_t bits = below_[q * nb + b];
            if (mask) bits &= mask[b0 + b];
            for (; bits; bits &= bits - 1) {
              const size_t v = size_t(__builtin_ctz(bits)), r = 32 * (b0 + b) + v;
              if (r < sub) emit(q, s0 + r, acc_[(q * nb + b) * 32 + v]);
            }
          }
        if (runs && (live -= nb) == 0) break;
        b0 = b1;
      }
    }
  }

 private:
  std::vector<uint16_t> acc_;
  std::vector<uint32_t> below_;
};

}  // namespace fast_scan
}  // namespace quanta
