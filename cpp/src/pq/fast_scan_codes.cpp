#include "quanta/fast_scan_codes.hpp"

#include <cmath>

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

void quantize_tables(const float* tables, size_t nt, size_t m, uint8_t* luts, float* scale,
                     float* bias) {
  // Per (table, sub-quantizer) minimum, subtracted; one span over all of them sets the scale.
  std::vector<float> lo(nt * m);
  float span = 0;
  for (size_t e = 0; e < nt * m; ++e) {
    const float* t = tables + e * 16;
    lo[e] = *std::min_element(t, t + 16);
    span = std::max(span, *std::max_element(t, t + 16) - lo[e]);
  }
  const float a = span > 0 ? 255.0f / span : 1.0f;
  const size_t lb = block_bytes(m);
  std::fill(luts, luts + nt * lb, uint8_t(0));
  for (size_t t = 0; t < nt; ++t) {
    double b = 0;
    for (size_t j = 0; j < m; ++j) {
      const float* row = tables + (t * m + j) * 16;
      const float l = lo[t * m + j];
      b += l;
      for (size_t c = 0; c < 16; ++c)
        luts[t * lb + (j / 2) * 32 + 16 * (j % 2) + c] =
            uint8_t(std::min(255.0f, std::nearbyint((row[c] - l) * a)));
    }
    bias[t] = float(b);
  }
  *scale = a;
}

}  // namespace fast_scan
}  // namespace quanta
