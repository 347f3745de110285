#include "quanta/pq_fast_scan.hpp"

#include <algorithm>
#include <cmath>
#include <limits>
#include <stdexcept>
#include <string>

#include "quanta/block_scan.hpp"
#include "quanta/error.hpp"
#include "quanta/kernels.hpp"
#include "quanta/rows.hpp"

namespace quanta {

namespace {
constexpr size_t kBlock = 32;
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

size_t PQFastScanIndex::code_of(size_t pos, size_t j) const {
  const size_t b = pos / kBlock, v = pos % kBlock;
  const uint8_t byte = blocks_[(b * npairs() + j / 2) * 32 + 16 * (j % 2) + v % 16];
  return v < 16 ? byte & 15 : byte >> 4;
}

void PQFastScanIndex::pack(const uint8_t* codes, size_t first, size_t n) {
  const size_t cs = pq_.code_size();
  for (size_t i = 0; i < n; ++i) {
    const size_t pos = first + i, b = pos / kBlock, v = pos % kBlock;
    for (size_t j = 0; j < pq_.m(); ++j) {
      uint8_t& byte = blocks_[(b * npairs() + j / 2) * 32 + 16 * (j % 2) + v % 16];
      const uint8_t c = uint8_t(pq_.code_at(codes + i * cs, j));
      byte = uint8_t(v < 16 ? (byte & 0xF0) | c : (byte & 0x0F) | (c << 4));
    }
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
  blocks_.resize((ntotal_ + n + kBlock - 1) / kBlock * npairs() * 32, 0);  // may throw: nothing lost
  pack(codes.data(), ntotal_, n);
  labels_.commit(std::move(next));
  ntotal_ += n;
}

void PQFastScanIndex::reset() {
  blocks_.clear();
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
  double b = 0;
  float span = 0;
  std::vector<float> lo(m);
  for (size_t j = 0; j < m; ++j) {
    lo[j] = *std::min_element(t.begin() + j * 16, t.begin() + (j + 1) * 16);
    span = std::max(span, *std::max_element(t.begin() + j * 16, t.begin() + (j + 1) * 16) - lo[j]);
    b += lo[j];
  }
  const float a = span > 0 ? 255.0f / span : 1.0f;
  std::fill(lut, lut + npairs() * 32, uint8_t(0));
  for (size_t j = 0; j < m; ++j)
    for (size_t c = 0; c < 16; ++c)
      lut[(j / 2) * 32 + 16 * (j % 2) + c] =
          uint8_t(std::min(255.0f, std::nearbyint((t[j * 16 + c] - lo[j]) * a)));
  *scale = a;
  *bias = float(b);
}

void PQFastScanIndex::search(const float* q, size_t nq, size_t k, int threads, float* distances,
                             int64_t* labels) const {
  require(k > 0, "search: k must be >= 1; got 0");
  if (!is_trained()) throw std::invalid_argument("search: the index is not trained");
  require_finite(q, nq * dim(), "search: queries");
  threads = resolve_threads(threads);
  std::vector<float> qn;
  if (metric_ == Metric::cosine) {
    qn = normalized(q, nq, dim());
    q = qn.data();
  }
  const size_t np = npairs();
  std::vector<uint8_t> luts(nq * np * 32);
  std::vector<float> scale(nq), bias(nq);
  for (size_t i = 0; i < nq; ++i)
    quantized_tables(q + i * dim(), luts.data() + i * np * 32, &scale[i], &bias[i]);
  const Kernels& kern = kernels(active_isa());
  // Scores: minus the exact integer sum, so ties break on position alone. Queries go four
  // at a time through the kernel, which flags the sums at or under each query's current k-th
  // one; it runs on sub-chunks so that limit stays fresh.
  constexpr size_t kSub = 1024, kGroup = 4;
  std::vector<std::vector<uint16_t>> acc(static_cast<size_t>(threads),
                                         std::vector<uint16_t>(kGroup * kSub));
  std::vector<std::vector<uint32_t>> masks(static_cast<size_t>(threads),
                                           std::vector<uint32_t>(kGroup * kSub / kBlock));
  TopKSet heaps = scan_blocks(
      nq, ntotal_, k, kVectorsPerTask, threads,
      [&](size_t g, size_t begin, size_t count, TopKSet& top, size_t w) {
        const size_t q0 = g * kGroup, nqg = std::min(kGroup, nq - q0);
        uint16_t* a = acc[w].data();
        uint32_t* below = masks[w].data();
        uint16_t limit[kGroup];
        for (size_t s0 = 0; s0 < count; s0 += kSub) {
          const size_t sub = std::min(kSub, count - s0), nblocks = (sub + kBlock - 1) / kBlock;
          for (size_t q = 0; q < nqg; ++q) {
            const float t = top.threshold(q0 + q);
            limit[q] = t == -std::numeric_limits<float>::infinity() ? uint16_t(65535) : uint16_t(-t);
          }
          kern.pq4_accumulate(blocks_.data() + (begin + s0) / kBlock * np * 32, nblocks, np,
                              luts.data() + q0 * np * 32, nqg, limit, a, below);
          for (size_t q = 0; q < nqg; ++q)
            for (size_t b = 0; b < nblocks; ++b)
              for (uint32_t bits = below[q * nblocks + b]; bits; bits &= bits - 1) {
                const size_t r = 32 * b + size_t(__builtin_ctz(bits));
                if (r < sub)
                  top.push(q0 + q, -float(a[q * nblocks * 32 + r]), int64_t(begin + s0 + r));
              }
        }
      },
      kGroup);
  const bool l2 = metric_ == Metric::l2;
  const float inf = std::numeric_limits<float>::infinity();
  write_results(heaps, k, labels_, l2 ? inf : -inf, distances, labels, [&](size_t i, float score) {
    const float d = -score / scale[i] + bias[i];
    return l2 ? d : -d;  // ip / cosine: the estimated inner product
  });
}

void PQFastScanIndex::reconstruct(const int64_t* ids, size_t n, float* out) const {
  std::vector<uint8_t> code(pq_.code_size());
  for (size_t i = 0; i < n; ++i) {
    const int64_t pos = labels_.position_of(ids[i], ntotal_);
    if (pos < 0) throw std::out_of_range("reconstruct: id " + std::to_string(ids[i]) +
                                         " is not in the index");
    std::fill(code.begin(), code.end(), uint8_t(0));
    for (size_t j = 0; j < pq_.m(); ++j) code[j / 2] |= uint8_t(code_of(size_t(pos), j) << (4 * (j % 2)));
    pq_.decode(code.data(), 1, out + i * dim());
  }
}

std::vector<uint8_t> PQFastScanIndex::codes() const {
  std::vector<uint8_t> out(ntotal_ * pq_.code_size(), 0);
  for (size_t pos = 0; pos < ntotal_; ++pos)
    for (size_t j = 0; j < pq_.m(); ++j)
      out[pos * pq_.code_size() + j / 2] |= uint8_t(code_of(pos, j) << (4 * (j % 2)));
  return out;
}

void PQFastScanIndex::restore(const std::vector<uint8_t>& codes, std::vector<int64_t> ids,
                              size_t ntotal) {
  const size_t cs = pq_.code_size();
  if (codes.size() != ntotal * cs)
    throw std::invalid_argument("corrupt index data: code array has the wrong size");
  if (!(ids.empty() || ids.size() == ntotal)) throw std::invalid_argument("corrupt index data: ids");
  if (ntotal > 0 && !is_trained()) throw std::invalid_argument("corrupt index data: no codebook");
  if (pq_.m() % 2)
    for (size_t i = 0; i < ntotal; ++i)
      if (codes[(i + 1) * cs - 1] >> 4)
        throw std::invalid_argument("corrupt index data: code out of range");
  blocks_.assign((ntotal + kBlock - 1) / kBlock * npairs() * 32, 0);
  pack(codes.data(), 0, ntotal);
  labels_.assign(std::move(ids));
  ntotal_ = ntotal;
}

}  // namespace quanta
