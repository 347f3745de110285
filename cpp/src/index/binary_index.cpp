#include "quanta/index/binary_index.hpp"

#include <algorithm>
#include <limits>
#include <stdexcept>

#include "quanta/core/block_scan.hpp"
#include "quanta/core/error.hpp"

namespace quanta {

namespace {
constexpr size_t kCodesPerTask = 8192;     // a multiple of the fast-scan block (32)
constexpr size_t kQueriesPerBatch = 4096;  // bounds the encoded queries held at once
constexpr size_t kGroup = 4;               // queries per pass over a run of codes
}  // namespace

BinaryIndex::BinaryIndex(size_t dim, size_t m, size_t levels, size_t query_levels,
                         Metric metric, const std::string& scoring)
    : bin_(dim, m, std::max(levels, query_levels)),
      levels_(levels),
      metric_(metric),
      scoring_(choose_binary_scoring(scoring, m, levels, query_levels)),
      codes_(bin_, levels, scoring_) {
  if (metric == Metric::l2)
    throw std::invalid_argument("BinaryIndex: metric must be 'ip' or 'cosine'");
  if (query_levels < levels)
    throw std::invalid_argument("BinaryIndex: query_levels must be >= levels");
}

void BinaryIndex::train(const float*, size_t, const TrainParams&) {
  require(bin_.is_trained(),
          "train: fit the binarizer first (binarizer().set_transforms; quanta's "
          "BinaryIndex.train fits it)");
}

void BinaryIndex::add(const float* x, size_t n, const int64_t* ids, int threads) {
  if (!is_trained()) throw std::invalid_argument("add: the index is not trained; call train first");
  if (n == 0) return;
  require_finite(x, n * dim(), "add: x");
  Labels::check(ids, n);
  std::vector<uint64_t> codes(n * code_words());
  bin_.encode(x, n, codes.data(), resolve_threads(threads), levels_);
  add_codes(codes.data(), n, ids);
}

void BinaryIndex::add_codes(const uint64_t* codes, size_t n, const int64_t* ids) {
  Labels::check(ids, n);
  std::vector<int64_t> next = labels_.with_added(ids, n, rows());
  codes_.append(codes, n);  // validates first: a failure changes nothing
  labels_.commit(std::move(next));
}

void BinaryIndex::reset() {
  codes_.clear();
  labels_.assign({});
}

void BinaryIndex::search(const float* q, size_t nq, const SearchParams& params,
                         float* distances, int64_t* labels) const {
  const size_t k = params.k;
  require(k > 0, "search: k must be >= 1; got 0");
  if (!is_trained()) throw std::invalid_argument("search: the index is not trained");
  require_finite(q, nq * dim(), "search: queries");
  const int threads = resolve_threads(params.threads);
  const bool filtered = labels_.checks(params.filter);
  const size_t qcw = bin_.code_words(), nw = static_cast<size_t>(threads);
  std::vector<fast_scan::Scanner> scanners(nw);
  std::vector<std::vector<int32_t>> dots(nw);
  std::vector<std::vector<float>> scores(nw);
  for (size_t q0 = 0; q0 < nq; q0 += kQueriesPerBatch) {
    const size_t nb = std::min(kQueriesPerBatch, nq - q0);
    std::vector<uint64_t> qcodes(nb * qcw);
    bin_.encode(q + q0 * dim(), nb, qcodes.data(), threads);
    std::vector<BinaryQuery> prepared(nb);
    for (size_t i = 0; i < nb; ++i) prepared[i] = codes_.prepare(qcodes.data() + i * qcw);
    TopKSet heaps = scan_blocks(
        nb, rows(), k, kCodesPerTask, threads,
        [&](size_t g, size_t begin, size_t count, TopKSet& top, size_t w) {
          const size_t g0 = g * kGroup, ng = std::min(kGroup, nb - g0);
          const BinaryQuery* qs[kGroup];
          for (size_t e = 0; e < ng; ++e) qs[e] = &prepared[g0 + e];
          codes_.scan(
              qs, ng, begin, count, scanners[w], dots[w], scores[w],
              [&](size_t e) { return top.threshold(g0 + e); },
              [&](size_t e, size_t pos, float s) {
                if (filtered && !labels_.allowed(pos, params.filter.of(q0 + g0 + e))) return;
                top.push(g0 + e, s, int64_t(pos));
              });
        },
        kGroup);
    write_results(heaps, k, labels_, -std::numeric_limits<float>::infinity(), distances + q0 * k,
                  labels + q0 * k, [](size_t, float score) { return score; });
  }
}

void BinaryIndex::compact() {
  if (labels_.removed() == 0) return;
  const std::vector<size_t> keep = labels_.live_positions(rows());
  std::vector<uint64_t> kept = codes_.codes();
  keep_rows(kept, keep, code_words());
  BinaryCodes fresh(bin_, levels_, scoring_);
  fresh.append(kept.data(), keep.size());
  codes_ = std::move(fresh);
  labels_.compact(keep);
}

void BinaryIndex::restore(const std::vector<uint64_t>& codes, std::vector<int64_t> ids,
                          size_t ntotal, std::vector<uint64_t> removed) {
  if (codes.size() % code_words() || codes.size() / code_words() != ntotal)
    throw std::invalid_argument("corrupt index data: code array has the wrong size");
  if (!(ids.empty() || ids.size() == ntotal))
    throw std::invalid_argument("corrupt index data: ids");
  BinaryCodes fresh(bin_, levels_, scoring_);
  fresh.append(codes.data(), ntotal);  // validates
  codes_ = std::move(fresh);
  labels_.restore(std::move(ids), std::move(removed), ntotal);
}

void BinaryIndex::restore_stored(BinaryCodes::Stored s, std::vector<int64_t> ids, size_t ntotal,
                                 std::vector<uint64_t> removed) {
  if (!(ids.empty() || ids.size() == ntotal))
    throw std::invalid_argument("corrupt index data: ids");
  BinaryCodes fresh(bin_, levels_, scoring_);
  fresh.restore(std::move(s), ntotal);  // checks the sizes
  labels_.restore(std::move(ids), std::move(removed), ntotal);
  codes_ = std::move(fresh);
}

}  // namespace quanta
