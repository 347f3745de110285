#include "quanta/codec/fast_scan_codes.hpp"

#include "quanta/simd/dispatch.hpp"

namespace quanta {
namespace fast_scan {

namespace {
inline size_t byte_at(size_t m, size_t pos, size_t j) {
  return (pos / kBlock * npairs(m) + j / 2) * 32 + 16 * (j % 2) + pos % 16;
}
}  // namespace

void pack(const uint8_t* codes, size_t n, size_t m, size_t first, uint8_t* blocks) {
  const size_t cs = (m + 1) / 2;
  for (size_t i = 0; i < n; ++i) {
    const size_t pos = first + i;
    const bool high = pos % kBlock >= 16;
    for (size_t j = 0; j < m; ++j) {
      uint8_t& byte = blocks[byte_at(m, pos, j)];
      const uint8_t c = uint8_t((codes[i * cs + j / 2] >> (4 * (j % 2))) & 15);
      byte = uint8_t(high ? (byte & 0x0F) | (c << 4) : (byte & 0xF0) | c);
    }
  }
}

size_t code_of(const uint8_t* blocks, size_t m, size_t pos, size_t j) {
  const uint8_t byte = blocks[byte_at(m, pos, j)];
  return pos % kBlock < 16 ? byte & 15 : byte >> 4;
}

void unpack(const uint8_t* blocks, size_t m, size_t first, size_t n, uint8_t* codes) {
  const size_t cs = (m + 1) / 2;
  std::fill(codes, codes + n * cs, uint8_t(0));
  for (size_t i = 0; i < n; ++i)
    for (size_t j = 0; j < m; ++j)
      codes[i * cs + j / 2] |= uint8_t(code_of(blocks, m, first + i, j) << (4 * (j % 2)));
}

void quantize_tables(const float* tables, const float* lo, const float* hi, size_t nt, size_t m,
                     uint8_t* luts, float* scale, float* bias) {
  // Per (table, sub-quantizer) minimum, subtracted; one span over all of them sets the scale.
  const Kernels& kern = kernels(active_isa());
  const size_t rows = nt * m, lb = block_bytes(m);
  float part[8] = {};  // eight partial maxima / sums: no long chain of dependent operations
  for (size_t r = 0; r < rows; ++r) part[r % 8] = std::max(part[r % 8], hi[r] - lo[r]);
  const float span = *std::max_element(part, part + 8);
  const float a = span > 0 ? 255.0f / span : 1.0f;
  for (size_t t = 0; t < nt; ++t) {
    // Sub-quantizer j's 16 bytes sit at 16 * j of its table's lut; an odd m leaves 16 zeros.
    kern.row16_quantize(tables + t * m * 16, m, lo + t * m, a, luts + t * lb);
    if (m % 2) std::fill(luts + t * lb + 16 * m, luts + (t + 1) * lb, uint8_t(0));
    std::fill(part, part + 8, 0.0f);
    for (size_t j = 0; j < m; ++j) part[j % 8] += lo[t * m + j];
    bias[t] = ((part[0] + part[1]) + (part[2] + part[3])) + ((part[4] + part[5]) + (part[6] + part[7]));
  }
  *scale = a;
}

void quantize_tables(const float* tables, size_t nt, size_t m, uint8_t* luts, float* scale,
                     float* bias) {
  std::vector<float> lo(nt * m), hi(nt * m);
  kernels(active_isa()).row16_minmax(tables, nt * m, lo.data(), hi.data());
  quantize_tables(tables, lo.data(), hi.data(), nt, m, luts, scale, bias);
}

}  // namespace fast_scan
}  // namespace quanta
