#include "quanta/index/pq_index.hpp"

#include <cmath>
#include <cstring>
#include <limits>
#include <stdexcept>
#include <string>

#include "quanta/core/block_scan.hpp"
#include "quanta/core/error.hpp"
#include "quanta/core/range_hits.hpp"
#include "quanta/core/rows.hpp"

namespace quanta {

namespace {
constexpr size_t kCodesPerTask = 16384;
constexpr size_t kQueriesPerBatch = 256;  // bounds the lookup tables held at once

}  // namespace

PQIndex::PQIndex(size_t dim, size_t m, size_t nbits, Metric metric)
    : pq_(dim, m, nbits), metric_(metric) {}

size_t PQIndex::memory_usage() const {
  return codes_.size() + labels_.memory_usage() + pq_.centroids().size() * sizeof(float);
}

const float* PQIndex::prepared(const float* x, size_t n, std::vector<float>& buf) const {
  if (metric_ != Metric::cosine) return x;
  buf.assign(x, x + n * dim());
  normalize_rows(buf.data(), n, dim());
  return buf.data();
}

void PQIndex::train(const float* x, size_t n, const KMeansParams& params) {
  require_finite(x, n * dim(), "train: x");
  std::vector<float> buf;
  pq_.train(prepared(x, n, buf), n, params);
}

void PQIndex::add(const float* x, size_t n, const int64_t* ids, int threads) {
  if (!is_trained()) throw std::invalid_argument("add: the index is not trained; call train first");
  if (n == 0) return;
  require_finite(x, n * dim(), "add: x");
  Labels::check(ids, n);
  std::vector<float> buf;
  std::vector<uint8_t> codes(n * pq_.code_size());
  pq_.encode(prepared(x, n, buf), n, codes.data(), resolve_threads(threads));
  std::vector<int64_t> next = labels_.with_added(ids, n, ntotal_);
  codes_.edit([&](auto& c) { c.insert(c.end(), codes.begin(), codes.end()); });
  labels_.commit(std::move(next));
  ntotal_ += n;
}

void PQIndex::reset() {
  codes_ = {};
  labels_.assign({});
  ntotal_ = 0;
}

std::vector<float> PQIndex::tables(const float* qp, size_t q0, size_t nb, bool sdc,
                                   int threads) const {
  const bool l2 = metric_ == Metric::l2;
  const size_t m = pq_.m(), ks = pq_.ksub(), cs = pq_.code_size();
  std::vector<float> out(nb * m * ks);
  if (!sdc) {
    pq_.distance_tables(qp + q0 * dim(), nb, l2, out.data());
    return out;
  }
  // SDC: rows of the centroid-to-centroid tables picked by the query's own code.
  std::vector<float> sdc_table(m * ks * ks);
  pq_.sdc_tables(l2, sdc_table.data());
  std::vector<uint8_t> qcodes(nb * cs);
  pq_.encode(qp + q0 * dim(), nb, qcodes.data(), threads);
  for (size_t i = 0; i < nb; ++i)
    for (size_t j = 0; j < m; ++j)
      std::copy_n(sdc_table.data() + (j * ks + pq_.code_at(qcodes.data() + i * cs, j)) * ks, ks,
                  out.data() + (i * m + j) * ks);
  return out;
}

void PQIndex::search(const float* q, size_t nq, const PQSearchParams& params, float* distances,
                     int64_t* labels) const {
  const size_t k = params.k;
  require(k > 0, "search: k must be >= 1; got 0");
  if (!is_trained()) throw std::invalid_argument("search: the index is not trained");
  require_finite(q, nq * dim(), "search: queries");
  const int threads = resolve_threads(params.threads);
  const bool l2 = metric_ == Metric::l2;
  const bool filtered = labels_.checks(params.filter);
  const size_t m = pq_.m(), ks = pq_.ksub(), cs = pq_.code_size();
  std::vector<float> buf;
  const float* qp = prepared(q, nq, buf);
  const float inf = std::numeric_limits<float>::infinity();
  struct Scratch {
    std::vector<float> scores = std::vector<float>(kCodesPerTask);
    GatheredRows allowed;
  };
  std::vector<Scratch> scratch(static_cast<size_t>(threads));
  for (size_t q0 = 0; q0 < nq; q0 += kQueriesPerBatch) {
    const size_t nb = std::min(kQueriesPerBatch, nq - q0);
    const std::vector<float> tabs = tables(qp, q0, nb, params.sdc, threads);
    // Scores are "higher is better": l2 distances are negated while scanning.
    TopKSet heaps = scan_blocks(
        nb, ntotal_, k, kCodesPerTask, threads,
        [&](size_t i, size_t begin, size_t count, TopKSet& top, size_t w) {
          Scratch& sc = scratch[w];
          float* s = sc.scores.data();
          const uint8_t* codes = codes_.data() + begin * cs;
          size_t n = count;
          if (filtered)  // the allowed codes gathered into one run
            codes = sc.allowed.gather(labels_, params.filter.of(q0 + i), begin, count, codes, cs, n);
          pq_.scan(tabs.data() + i * m * ks, codes, n, s);
          if (l2)
            for (size_t r = 0; r < n; ++r) s[r] = -s[r];
          push_scores(top, i, begin, s, n, filtered ? sc.allowed.positions() : nullptr);
        });
    write_results(heaps, k, labels_, l2 ? inf : -inf, distances + q0 * k, labels + q0 * k,
                  [&](size_t, float score) { return l2 ? -score : score; });
  }
}

RangeResult PQIndex::range_search(const float* q, size_t nq, float radius,
                                  const SearchParams& params) const {
  if (!is_trained()) throw std::invalid_argument("range_search: the index is not trained");
  require_finite(q, nq * dim(), "range_search: queries");
  require(std::isfinite(radius), "range_search: radius must be finite");
  const bool l2 = metric_ == Metric::l2;
  const bool filtered = labels_.checks(params.filter);
  const size_t m = pq_.m(), ks = pq_.ksub(), cs = pq_.code_size();
  std::vector<float> buf;
  const float* qp = prepared(q, nq, buf);
  const int threads = resolve_threads(params.threads);
  const std::vector<float> tabs = tables(qp, 0, nq, false, threads);
  RangeHits hits(nq);
  parallel_for(nq, threads, [&](size_t i, size_t) {
    std::vector<float> s(kCodesPerTask);
    for (size_t begin = 0; begin < ntotal_; begin += kCodesPerTask) {
      const size_t count = std::min(kCodesPerTask, ntotal_ - begin);
      pq_.scan(tabs.data() + i * m * ks, codes_.data() + begin * cs, count, s.data());
      for (size_t r = 0; r < count; ++r) {
        const float score = l2 ? -s[r] : s[r];  // higher is better
        if ((l2 ? s[r] < radius : s[r] > radius) &&
            (!filtered || labels_.allowed(begin + r, params.filter.of(i))))
          hits.add(i, score, int64_t(begin + r));
      }
    }
  });
  return hits.finish([&](size_t, float score) { return l2 ? -score : score; },
                     [&](int64_t pos) { return labels_.at(pos); });
}

void PQIndex::compact() {
  if (labels_.removed() == 0) return;
  const std::vector<size_t> keep = labels_.live_positions(ntotal_);
  codes_.edit([&](auto& c) { keep_rows(c, keep, pq_.code_size()); });
  labels_.compact(keep);
  ntotal_ = keep.size();
}

void PQIndex::reconstruct(const int64_t* ids, size_t n, float* out) const {
  for (size_t i = 0; i < n; ++i) {
    const int64_t pos = labels_.position_of(ids[i], ntotal_);
    if (pos < 0) throw std::out_of_range("reconstruct: id " + std::to_string(ids[i]) +
                                         " is not in the index");
    pq_.decode(codes_.data() + size_t(pos) * pq_.code_size(), 1, out + i * dim());
  }
}

void PQIndex::restore(Buffer<uint8_t> codes, std::vector<int64_t> ids, size_t ntotal,
                      std::vector<uint64_t> removed) {
  const size_t cs = pq_.code_size();
  if (codes.size() % cs || codes.size() / cs != ntotal)  // no product: it could wrap
    throw std::invalid_argument("corrupt index data: code array has the wrong size");
  if (!(ids.empty() || ids.size() == ntotal))
    throw std::invalid_argument("corrupt index data: ids");
  if (ntotal > 0 && !is_trained()) throw std::invalid_argument("corrupt index data: no codebook");
  if (pq_.nbits() == 4 && pq_.m() % 2)  // the unused high nibble of the last byte must be 0
    for (size_t i = 0; i < ntotal; ++i)
      if (codes[(i + 1) * pq_.code_size() - 1] >> 4)
        throw std::invalid_argument("corrupt index data: code out of range");
  codes_ = std::move(codes);
  labels_.restore(std::move(ids), std::move(removed), ntotal);
  ntotal_ = ntotal;
}

}  // namespace quanta
