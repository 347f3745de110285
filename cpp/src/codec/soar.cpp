#include "quanta/codec/soar.hpp"

#include <algorithm>
#include <limits>
#include <vector>

#include "quanta/core/parallel.hpp"
#include "quanta/core/rows.hpp"
#include "quanta/simd/dispatch.hpp"
#include "quanta/simd/gemm_panels.hpp"
#include "quanta/simd/kernels.hpp"

namespace quanta {

void soar_assign(const float* x, size_t n, const float* centroids, size_t k, size_t dim,
                 const int64_t* primary, float lambda, int threads, int64_t* secondary) {
  if (k < 2) {
    std::fill(secondary, secondary + n, int64_t(-1));
    return;
  }
  // Two GEMMs against the centroids, <x, c> and <r, c>, tile by tile: the loss of c is
  // |c|^2 - 2 <x, c> + lambda * (<x, r> - <c, r>)^2 / |r|^2 (|x|^2 is the same for every c).
  const Kernels& kern = kernels(active_isa());
  const size_t mq = size_t(kern.mq), mr = size_t(kern.mr), npanels = (k + mq - 1) / mq;
  const std::vector<float> panels =
      pack_panels(k, dim, mq, [&](size_t c, size_t p) { return centroids[c * dim + p]; });
  std::vector<float> cnorm(k);
  for (size_t c = 0; c < k; ++c) cnorm[c] = float(sq_norm(centroids + c * dim, dim));
  constexpr size_t kRows = 256;  // rows per task
  parallel_for((n + kRows - 1) / kRows, threads, [&](size_t t, size_t) {
    std::vector<float> resid(mr * dim), tx(mr * mq), tr(mr * mq), xr(mr), rinv(mr), best(mr);
    const size_t end = std::min(n, (t + 1) * kRows);
    for (size_t r0 = t * kRows; r0 < end; r0 += mr) {
      const size_t nr = std::min(mr, end - r0);
      for (size_t r = 0; r < nr; ++r) {
        const float* xi = x + (r0 + r) * dim;
        const float* c = centroids + size_t(primary[r0 + r]) * dim;
        double rn = 0, d = 0;
        for (size_t p = 0; p < dim; ++p) {
          const float v = xi[p] - c[p];
          resid[r * dim + p] = v;
          rn += double(v) * v;
          d += double(xi[p]) * v;
        }
        xr[r] = float(d);
        rinv[r] = rn > 0 ? float(lambda / rn) : 0.0f;  // x on its centroid: plain distance
        best[r] = std::numeric_limits<float>::infinity();
        // Some other list, should every loss overflow (finite but huge inputs): never -1.
        secondary[r0 + r] = primary[r0 + r] == 0 ? 1 : 0;
      }
      for (size_t pn = 0; pn < npanels; ++pn) {
        const float* panel = panels.data() + pn * dim * mq;
        gemm_tile_plain(kern, x + r0 * dim, nr, panel, dim, tx.data());
        gemm_tile_plain(kern, resid.data(), nr, panel, dim, tr.data());
        for (size_t r = 0; r < nr; ++r)
          for (size_t j = 0; j < mq && pn * mq + j < k; ++j) {
            const size_t c = pn * mq + j;
            if (int64_t(c) == primary[r0 + r]) continue;
            const float along = xr[r] - tr[r * mq + j];
            const float loss = cnorm[c] - 2 * tx[r * mq + j] + along * along * rinv[r];
            if (loss < best[r]) {
              best[r] = loss;
              secondary[r0 + r] = int64_t(c);
            }
          }
      }
    }
  });
}

}  // namespace quanta
