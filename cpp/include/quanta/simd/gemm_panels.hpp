// Helpers around the kernel table's GEMM micro-kernel for callers that want plain products
// (no per-row scale, no top-k threshold): column vectors packed into panels, and full tiles.
#pragma once
#include <algorithm>
#include <cstddef>
#include <limits>
#include <vector>

#include "quanta/simd/kernels.hpp"

namespace quanta {

// Column c of the result is the c-th of ncols vectors `col(c)` (each `dim` floats, read
// through col(c)[p]); panels are [panel][dim][mq], zero beyond ncols.
template <class Col>
std::vector<float> pack_panels(size_t ncols, size_t dim, size_t mq, Col&& col) {
  const size_t npanels = std::max<size_t>(1, (ncols + mq - 1) / mq);
  std::vector<float> panels(npanels * dim * mq, 0.0f);
  for (size_t c = 0; c < ncols; ++c) {
    float* dst = panels.data() + (c / mq) * dim * mq + c % mq;
    for (size_t p = 0; p < dim; ++p) dst[p * mq] = col(c, p);
  }
  return panels;
}

// tile[r * mq + j] = <rows[r], panel column j> for r < nrows (<= kern.mr).
inline void gemm_tile_plain(const Kernels& kern, const float* rows, size_t nrows,
                            const float* panel, size_t dim, float* tile) {
  constexpr size_t kMaxRows = 64;
  static const std::vector<float> ones(kMaxRows, 1.0f), zeros(kMaxRows, 0.0f),
      never(kMaxRows, std::numeric_limits<float>::infinity());
  kern.gemm_tile(rows, nrows, panel, dim, ones.data(), zeros.data(), never.data(), tile);
}

}  // namespace quanta
