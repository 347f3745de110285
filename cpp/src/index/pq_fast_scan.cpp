#include "quanta/index/pq_fast_scan.hpp"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <stdexcept>
#include <string>

#include "quanta/codec/fast_scan_codes.hpp"
#include "quanta/core/block_scan.hpp"
#include "quanta/core/error.hpp"
#include "quanta/core/range_hits.hpp"
#include "quanta/core/rows.hpp"
#include "quanta/simd/kernels.hpp"

namespace quanta {

namespace {
using fast_scan::kBlock;
constexpr size_t kVectorsPerTask = 16384;  // a multiple of kBlock


std::vector<float> normalized(const float* x, size_t n, size_t dim) {
  std::vector<float> out(x, x + n * dim);
  normalize_rows(out.data(), n, dim);
  return out;
}
}  // namespace

PQFastScanIndex::PQFastScanIndex(size_t dim, size_t m, Metric metric)
    : pq_(dim, m, 4), metric_(metric) {
  // uint16 sums of up to m entries of 255 must not overflow.
  require(m <= 256, "PQ fast-scan supports m <= 256; got " + std::to_string(m));
}

size_t PQFastScanIndex::memory_usage() const {
  return blocks_.size() + labels_.memory_usage() + pq_.centroids().size() * sizeof(float);
}

void PQFastScanIndex::train(const float* x, size_t n, const KMeansParams& params) {
  require_finite(x, n * dim(), "train: x");
  if (metric_ == Metric::cosine) {
    const std::vector<float> xn = normalized(x, n, dim());
    pq_.train(xn.data(), n, params);
  } else {
    pq_.train(x, n, params);
  }
}

void PQFastScanIndex::add(const float* x, size_t n, const int64_t* ids, int threads) {
  if (!is_trained()) throw std::invalid_argument("add: the index is not trained; call train first");
  if (n == 0) return;
  require_finite(x, n * dim(), "add: x");
  Labels::check(ids, n);
  std::vector<uint8_t> codes(n * pq_.code_size());
  if (metric_ == Metric::cosine) {
    const std::vector<float> xn = normalized(x, n, dim());
    pq_.encode(xn.data(), n, codes.data(), resolve_threads(threads));
  } else {
    pq_.encode(x, n, codes.data(), resolve_threads(threads));
  }
  std::vector<int64_t> next = labels_.with_added(ids, n, ntotal_);
  blocks_.edit([&](auto& b) {
    b.resize(fast_scan::bytes_for(ntotal_ + n, pq_.m()), 0);  // may throw: nothing lost
    fast_scan::pack(codes.data(), n, pq_.m(), ntotal_, b.data());
  });
  labels_.commit(std::move(next));
  ntotal_ += n;
}

void PQFastScanIndex::reset() {
  blocks_ = {};
  labels_.assign({});
  ntotal_ = 0;
}

void PQFastScanIndex::quantized_tables(const float* q, uint8_t* lut, float* scale,
                                       float* bias) const {
  // Plain double arithmetic (no SIMD kernel), so every SIMD level gets the same tables and
  // therefore the same integer sums and results. Smaller is better: ip is negated.
  const size_t m = pq_.m(), ds = pq_.dsub();
  const bool l2 = metric_ == Metric::l2;
  std::vector<float> t(m * 16);
  for (size_t j = 0; j < m; ++j)
    for (size_t c = 0; c < 16; ++c) {
      const float* cen = pq_.centroids().data() + (j * 16 + c) * ds;
      double v = 0;
      for (size_t p = 0; p < ds; ++p) {
        const double x = q[j * ds + p];
        v += l2 ? (x - cen[p]) * (x - cen[p]) : -x * cen[p];
      }
      t[j * 16 + c] = float(v);
    }
  fast_scan::quantize_tables(t.data(), 1, m, lut, scale, bias);
}

void PQFastScanIndex::query_tables(const float* q, size_t nq, std::vector<uint8_t>& luts,
                                   std::vector<float>& scale, std::vector<float>& bias) const {
  std::vector<float> qn;
  if (metric_ == Metric::cosine) {
    qn = normalized(q, nq, dim());
    q = qn.data();
  }
  const size_t np = npairs();
  luts.resize(nq * np * 32);
  scale.resize(nq);
  bias.resize(nq);
  for (size_t i = 0; i < nq; ++i)
    quantized_tables(q + i * dim(), luts.data() + i * np * 32, &scale[i], &bias[i]);
}

void PQFastScanIndex::search(const float* q, size_t nq, const SearchParams& params,
                             float* distances, int64_t* labels) const {
  const size_t k = params.k;
  require(k > 0, "search: k must be >= 1; got 0");
  if (!is_trained()) throw std::invalid_argument("search: the index is not trained");
  require_finite(q, nq * dim(), "search: queries");
  const int threads = resolve_threads(params.threads);
  const size_t np = npairs();
  std::vector<uint8_t> luts;
  std::vector<float> scale, bias;
  query_tables(q, nq, luts, scale, bias);
  const Kernels& kern = kernels(active_isa());
  const bool filtered = labels_.checks(params.filter);
  // Scores: minus the exact integer sum, so ties break on position alone. Queries go four
  // at a time through the kernel, which flags the sums at or under each query's current k-th.
  constexpr size_t kGroup = 4;
  std::vector<fast_scan::Scanner> scanners(static_cast<size_t>(threads));
  TopKSet heaps = scan_blocks(
      nq, ntotal_, k, kVectorsPerTask, threads,
      [&](size_t g, size_t begin, size_t count, TopKSet& top, size_t w) {
        const size_t q0 = g * kGroup, nqg = std::min(kGroup, nq - q0);
        const uint8_t* lut[kGroup];
        for (size_t q = 0; q < nqg; ++q) lut[q] = luts.data() + (q0 + q) * np * 32;
        scanners[w].scan(
            kern, blocks_.data() + begin / kBlock * np * 32, count, pq_.m(), lut, nqg,
            [&](size_t q) {
              const float t = top.threshold(q0 + q);
              return t == -std::numeric_limits<float>::infinity() ? uint16_t(65535) : uint16_t(-t);
            },
            [&](size_t q, size_t r, uint16_t sum) {
              if (filtered && !labels_.allowed(begin + r, params.filter.of(q0 + q))) return;
              top.push(q0 + q, -float(sum), int64_t(begin + r));
            });
      },
      kGroup);
  const bool l2 = metric_ == Metric::l2;
  const float inf = std::numeric_limits<float>::infinity();
  write_results(heaps, k, labels_, l2 ? inf : -inf, distances, labels, [&](size_t i, float score) {
    const float d = -score / scale[i] + bias[i];
    return l2 ? d : -d;  // ip / cosine: the estimated inner product
  });
}

RangeResult PQFastScanIndex::range_search(const float* q, size_t nq, float radius,
                                          const SearchParams& params) const {
  if (!is_trained()) throw std::invalid_argument("range_search: the index is not trained");
  require_finite(q, nq * dim(), "range_search: queries");
  require(std::isfinite(radius), "range_search: radius must be finite");
  const size_t np = npairs();
  std::vector<uint8_t> luts;
  std::vector<float> scale, bias;
  query_tables(q, nq, luts, scale, bias);
  const Kernels& kern = kernels(active_isa());
  const bool l2 = metric_ == Metric::l2;
  const bool filtered = labels_.checks(params.filter);
  const auto distance = [&](size_t i, uint16_t sum) {
    const float d = float(sum) / scale[i] + bias[i];
    return l2 ? d : -d;
  };
  RangeHits hits(nq);
  parallel_for(nq, resolve_threads(params.threads), [&](size_t i, size_t) {
    // The estimate grows with the sum: report sums up to the one at the radius, then test.
    const double at = (double(l2 ? radius : -radius) - bias[i]) * scale[i];
    const uint16_t limit = at >= 65535 ? uint16_t(65535) : at < 0 ? uint16_t(0) : uint16_t(at);
    if (at < 0) return;
    const uint8_t* lut = luts.data() + i * np * 32;
    fast_scan::Scanner scanner;
    scanner.scan(kern, blocks_.data(), ntotal_, pq_.m(), &lut, 1, [&](size_t) { return limit; },
                 [&](size_t, size_t r, uint16_t sum) {
                   const float d = distance(i, sum);
                   if ((l2 ? d < radius : d > radius) &&
                       (!filtered || labels_.allowed(r, params.filter.of(i))))
                     hits.add(i, -float(sum), int64_t(r));
                 });
  });
  return hits.finish([&](size_t i, float score) { return distance(i, uint16_t(-score)); },
                     [&](int64_t pos) { return labels_.at(pos); });
}

void PQFastScanIndex::compact() {
  if (labels_.removed() == 0) return;
  const std::vector<size_t> keep = labels_.live_positions(ntotal_);
  std::vector<uint8_t> kept = codes();
  keep_rows(kept, keep, pq_.code_size());
  std::vector<uint8_t> blocks(fast_scan::bytes_for(keep.size(), pq_.m()), 0);
  fast_scan::pack(kept.data(), keep.size(), pq_.m(), 0, blocks.data());
  blocks_ = std::move(blocks);
  labels_.compact(keep);
  ntotal_ = keep.size();
}

void PQFastScanIndex::reconstruct(const int64_t* ids, size_t n, float* out) const {
  std::vector<uint8_t> code(pq_.code_size());
  for (size_t i = 0; i < n; ++i) {
    const int64_t pos = labels_.position_of(ids[i], ntotal_);
    if (pos < 0) throw std::out_of_range("reconstruct: id " + std::to_string(ids[i]) +
                                         " is not in the index");
    fast_scan::unpack(blocks_.data(), pq_.m(), size_t(pos), 1, code.data());
    pq_.decode(code.data(), 1, out + i * dim());
  }
}

std::vector<uint8_t> PQFastScanIndex::codes() const {
  std::vector<uint8_t> out(ntotal_ * pq_.code_size());
  fast_scan::unpack(blocks_.data(), pq_.m(), 0, ntotal_, out.data());
  return out;
}

void PQFastScanIndex::restore(const std::vector<uint8_t>& codes, std::vector<int64_t> ids,
                              size_t ntotal, std::vector<uint64_t> removed) {
  const size_t cs = pq_.code_size();
  if (codes.size() % cs || codes.size() / cs != ntotal)  // no product: it could wrap
    throw std::invalid_argument("corrupt index data: code array has the wrong size");
  if (pq_.m() % 2)
    for (size_t i = 0; i < ntotal; ++i)
      if (codes[(i + 1) * cs - 1] >> 4)
        throw std::invalid_argument("corrupt index data: code out of range");
  std::vector<uint8_t> blocks(fast_scan::bytes_for(ntotal, pq_.m()), 0);
  fast_scan::pack(codes.data(), ntotal, pq_.m(), 0, blocks.data());
  restore_blocks(std::move(blocks), std::move(ids), ntotal, std::move(removed));
}

void PQFastScanIndex::restore_blocks(Buffer<uint8_t> blocks, std::vector<int64_t> ids,
                                     size_t ntotal, std::vector<uint64_t> removed) {
  const size_t nb = fast_scan::block_bytes(pq_.m());
  // Any byte is a valid pair of codes; the size is checked without a product that could wrap.
  if (blocks.size() % nb || blocks.size() / nb != (ntotal + fast_scan::kBlock - 1) / fast_scan::kBlock)
    throw std::invalid_argument("corrupt index data: code array has the wrong size");
  if (!(ids.empty() || ids.size() == ntotal)) throw std::invalid_argument("corrupt index data: ids");
  if (ntotal > 0 && !is_trained()) throw std::invalid_argument("corrupt index data: no codebook");
  labels_.restore(std::move(ids), std::move(removed), ntotal);
  blocks_ = std::move(blocks);
  ntotal_ = ntotal;
}

}  // namespace quanta
