#include "quanta/index/pre_transform.hpp"

#include <cmath>
#include <string>

#include "quanta/core/error.hpp"
#include "quanta/core/parallel.hpp"
#include "quanta/core/rows.hpp"
#include "quanta/simd/dispatch.hpp"
#include "quanta/simd/gemm_panels.hpp"

namespace quanta {

PreTransformIndex::PreTransformIndex(std::vector<float> matrix, std::shared_ptr<Index> inner)
    : matrix_(std::move(matrix)), inner_(std::move(inner)) {
  require(inner_ != nullptr, "PreTransformIndex: no inner index");
  const size_t d = inner_->dim();
  require(matrix_.size() == d * d, "PreTransformIndex: matrix must be " + std::to_string(d) +
                                       " x " + std::to_string(d));
  require_finite(matrix_.data(), matrix_.size(), "PreTransformIndex: matrix");
  // Reconstructions map back with M^T, so M must be orthogonal. Checked in O(d^2) (a full
  // M M^T would cost seconds at load for d = 1024): unit rows, and M keeps the length of
  // two fixed +-1 probes.
  const auto fail = [] { throw std::invalid_argument("PreTransformIndex: matrix must be orthogonal"); };
  for (size_t i = 0; i < d; ++i) {
    double s = 0;
    for (size_t p = 0; p < d; ++p) s += double(matrix_[i * d + p]) * matrix_[i * d + p];
    if (std::fabs(s - 1.0) > 1e-3) fail();
  }
  for (uint64_t seed : {0x9e3779b97f4a7c15ull, 0xc2b2ae3d27d4eb4full}) {
    double in = 0, out = 0;
    std::vector<double> y(d, 0.0);
    for (size_t p = 0; p < d; ++p) {
      const double v = ((seed >> (p % 64)) & 1) ? 1.0 : -1.0;
      in += v * v;
      for (size_t c = 0; c < d; ++c) y[c] += v * matrix_[p * d + c];
    }
    for (double v : y) out += v * v;
    if (std::fabs(out - in) > 1e-3 * in) fail();
  }
}

void PreTransformIndex::apply(const float* x, size_t n, float* out, int threads) const {
  const size_t d = dim();
  const Kernels& kern = kernels(active_isa());
  const size_t mq = size_t(kern.mq), mr = size_t(kern.mr);
  // Column j of the product is <x, M[:, j]>: the columns of M packed as GEMM panels.
  const std::vector<float> panels =
      pack_panels(d, d, mq, [&](size_t c, size_t p) { return matrix_[p * d + c]; });
  const size_t npanels = panels.size() / (d * mq), nblocks = (n + mr - 1) / mr;
  parallel_for(nblocks, resolve_threads(threads), [&](size_t b, size_t) {
    std::vector<float> tile(mr * mq);
    const size_t r0 = b * mr, nr = std::min(mr, n - r0);
    for (size_t pn = 0; pn < npanels; ++pn) {
      gemm_tile_plain(kern, x + r0 * d, nr, panels.data() + pn * d * mq, d, tile.data());
      const size_t c0 = pn * mq, nc = std::min(mq, d - c0);
      for (size_t r = 0; r < nr; ++r)
        std::copy_n(tile.data() + r * mq, nc, out + (r0 + r) * d + c0);
    }
  });
}

void PreTransformIndex::train(const float* x, size_t n, const TrainParams& p) {
  require_finite(x, n * dim(), "train: x");
  std::vector<float> y(n * dim());
  apply(x, n, y.data(), p.threads);
  inner_->train(y.data(), n, p);
}

void PreTransformIndex::add(const float* x, size_t n, const int64_t* ids, int threads) {
  require_finite(x, n * dim(), "add: x");
  std::vector<float> y(n * dim());
  apply(x, n, y.data(), threads);
  inner_->add(y.data(), n, ids, threads);
}

void PreTransformIndex::search(const float* q, size_t nq, const SearchParams& params,
                               float* distances, int64_t* labels) const {
  require_finite(q, nq * dim(), "search: queries");
  std::vector<float> y(nq * dim());
  apply(q, nq, y.data(), params.threads);
  inner_->search(y.data(), nq, params, distances, labels);
}

RangeResult PreTransformIndex::range_search(const float* q, size_t nq, float radius,
                                            const SearchParams& params) const {
  require_finite(q, nq * dim(), "range_search: queries");
  std::vector<float> y(nq * dim());
  apply(q, nq, y.data(), params.threads);
  return inner_->range_search(y.data(), nq, radius, params);
}

void PreTransformIndex::reconstruct(const int64_t* ids, size_t n, float* out) const {
  const size_t d = dim();
  std::vector<float> y(n * d);
  inner_->reconstruct(ids, n, y.data());
  for (size_t i = 0; i < n; ++i)  // x = y M^T
    for (size_t r = 0; r < d; ++r) {
      float s = 0;
      for (size_t c = 0; c < d; ++c) s += y[i * d + c] * matrix_[r * d + c];
      out[i * d + r] = s;
    }
}

}  // namespace quanta
