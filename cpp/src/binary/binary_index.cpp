#include "quanta/binary_index.hpp"

#include <cmath>
#include <limits>
#include <stdexcept>
#include <string>

#include "quanta/block_scan.hpp"
#include "quanta/dispatch.hpp"
#include "quanta/error.hpp"
#include "quanta/kernels.hpp"

namespace quanta {

namespace {
constexpr size_t kCodesPerTask = 8192;
constexpr size_t kQueriesPerBatch = 4096;  // bounds the encoded queries held at once
}  // namespace

BinaryIndex::BinaryIndex(size_t dim, size_t m, size_t levels, Metric metric)
    : bin_(dim, m, levels), metric_(metric) {
  if (metric == Metric::l2)
    throw std::invalid_argument("BinaryIndex: metric must be 'ip' or 'cosine'");
}

size_t BinaryIndex::memory_usage() const {
  return codes_.size() * sizeof(uint64_t) + stats_.sums.size() * sizeof(int32_t) +
         stats_.inv_norms.size() * sizeof(float) + labels_.memory_usage();
}

BinaryIndex::Stats BinaryIndex::stats_of(const uint64_t* codes, size_t n) const {
  Stats s;
  s.sums.resize(n);
  s.inv_norms.resize(n);
  for (size_t i = 0; i < n; ++i) {
    int64_t norm2;
    bin_.code_stats(codes + i * bin_.code_words(), &s.sums[i], &norm2);
    s.inv_norms[i] = float(1.0 / std::sqrt(double(norm2)));  // norm2 >= m: K is odd
  }
  return s;
}

void BinaryIndex::add(const float* x, size_t n, const int64_t* ids, int threads) {
  if (!is_trained()) throw std::invalid_argument("add: the index is not trained; call train first");
  if (n == 0) return;
  require_finite(x, n * dim(), "add: x");
  Labels::check(ids, n);
  std::vector<uint64_t> codes(n * bin_.code_words());
  bin_.encode(x, n, codes.data(), resolve_threads(threads));
  add_codes(codes.data(), n, ids);
}

void BinaryIndex::add_codes(const uint64_t* codes, size_t n, const int64_t* ids) {
  Labels::check(ids, n);
  const size_t words = bin_.words(), cw = bin_.code_words(), tail = bin_.m() % 64;
  if (tail)
    for (size_t i = 0; i < n; ++i)
      for (size_t p = 0; p < bin_.planes(); ++p)
        require((codes[i * cw + p * words + words - 1] >> tail) == 0,
                "add_codes: code " + std::to_string(i) + " has bits set beyond m");
  Stats s = stats_of(codes, n);
  std::vector<int64_t> next = labels_.with_added(ids, n, ntotal_);
  codes_.insert(codes_.end(), codes, codes + n * cw);
  stats_.sums.insert(stats_.sums.end(), s.sums.begin(), s.sums.end());
  stats_.inv_norms.insert(stats_.inv_norms.end(), s.inv_norms.begin(), s.inv_norms.end());
  labels_.commit(std::move(next));
  ntotal_ += n;
}

void BinaryIndex::reset() {
  codes_.clear();
  stats_ = Stats();
  labels_.assign({});
  ntotal_ = 0;
}

void BinaryIndex::search(const float* q, size_t nq, size_t k, int threads, float* distances,
                         int64_t* labels) const {
  require(k > 0, "search: k must be >= 1; got 0");
  if (!is_trained()) throw std::invalid_argument("search: the index is not trained");
  require_finite(q, nq * dim(), "search: queries");
  threads = resolve_threads(threads);
  const Kernels& kern = kernels(active_isa());
  const size_t cw = bin_.code_words(), planes = bin_.planes(), words = bin_.words();
  const int64_t K = int64_t(bin_.max_value()), mk2 = int64_t(bin_.m()) * K * K;
  for (size_t q0 = 0; q0 < nq; q0 += kQueriesPerBatch) {
    const size_t nb = std::min(kQueriesPerBatch, nq - q0);
    std::vector<uint64_t> qcodes(nb * cw);
    bin_.encode(q + q0 * dim(), nb, qcodes.data(), threads);
    const Stats qs = stats_of(qcodes.data(), nb);
    const size_t nw = static_cast<size_t>(threads);
    std::vector<std::vector<int32_t>> dots(nw, std::vector<int32_t>(kCodesPerTask));
    std::vector<std::vector<float>> scores(nw, std::vector<float>(kCodesPerTask));
    TopKSet heaps = scan_blocks(
        nb, ntotal_, k, kCodesPerTask, threads,
        [&](size_t i, size_t begin, size_t count, TopKSet& top, size_t w) {
          int32_t* d = dots[w].data();
          float* s = scores[w].data();
          kern.rbe_dots(qcodes.data() + i * cw, codes_.data() + begin * cw, count, planes, words,
                        d);
          for (size_t r = 0; r < count; ++r) {
            // 4^u <b_q, b_d>, exact in int64, over 4^u |b_q| |b_d|
            const int64_t num = 4 * int64_t(d[r]) -
                                2 * K * (int64_t(qs.sums[i]) + stats_.sums[begin + r]) + mk2;
            s[r] = float(double(num) * qs.inv_norms[i] * stats_.inv_norms[begin + r]);
          }
          push_scores(top, i, begin, s, count);
        });
    write_results(heaps, k, labels_, -std::numeric_limits<float>::infinity(), distances + q0 * k,
                  labels + q0 * k, [](size_t, float score) { return score; });
  }
}

void BinaryIndex::restore(std::vector<uint64_t> codes, std::vector<int64_t> ids, size_t ntotal) {
  if (codes.size() != ntotal * bin_.code_words())
    throw std::invalid_argument("corrupt index data: code array has the wrong size");
  if (!(ids.empty() || ids.size() == ntotal))
    throw std::invalid_argument("corrupt index data: ids");
  BinaryIndex fresh(dim(), bin_.m(), bin_.levels(), metric_);
  fresh.add_codes(codes.data(), ntotal, ids.empty() ? nullptr : ids.data());  // validates
  codes_ = std::move(fresh.codes_);
  stats_ = std::move(fresh.stats_);
  labels_.assign(std::move(ids));
  ntotal_ = ntotal;
}

}  // namespace quanta
