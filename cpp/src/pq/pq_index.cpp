#include "quanta/pq_index.hpp"

#include <cmath>
#include <limits>
#include <stdexcept>
#include <string>

#include "quanta/block_scan.hpp"
#include "quanta/error.hpp"
#include "quanta/rows.hpp"

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
  codes_.insert(codes_.end(), codes.begin(), codes.end());
  labels_.commit(std::move(next));
  ntotal_ += n;
}

void PQIndex::reset() {
  codes_.clear();
  labels_.assign({});
  ntotal_ = 0;
}

void PQIndex::search(const float* q, size_t nq, size_t k, int threads, bool sdc,
                     float* distances, int64_t* labels) const {
  require(k > 0, "search: k must be >= 1; got 0");
  if (!is_trained()) throw std::invalid_argument("search: the index is not trained");
  require_finite(q, nq * dim(), "search: queries");
  threads = resolve_threads(threads);
  const bool l2 = metric_ == Metric::l2;
  const size_t m = pq_.m(), ks = pq_.ksub(), cs = pq_.code_size();
  std::vector<float> sdc_table;
  if (sdc) {
    sdc_table.resize(m * ks * ks);
    pq_.sdc_tables(l2, sdc_table.data());
  }
  std::vector<float> buf;
  const float* qp = prepared(q, nq, buf);
  const float inf = std::numeric_limits<float>::infinity();
  for (size_t q0 = 0; q0 < nq; q0 += kQueriesPerBatch) {
    const size_t nb = std::min(kQueriesPerBatch, nq - q0);
    // One table per query: ADC from the float query, SDC rows picked by the query's code.
    std::vector<float> tables(nb * m * ks);
    if (sdc) {
      std::vector<uint8_t> qcodes(nb * cs);
      pq_.encode(qp + q0 * dim(), nb, qcodes.data(), threads);
      for (size_t i = 0; i < nb; ++i)
        for (size_t j = 0; j < m; ++j)
          std::copy_n(sdc_table.data() + (j * ks + pq_.code_at(qcodes.data() + i * cs, j)) * ks, ks,
                      tables.data() + (i * m + j) * ks);
    } else {
      pq_.distance_tables(qp + q0 * dim(), nb, l2, tables.data());
    }
    // Scores are "higher is better": l2 distances are negated while scanning.
    std::vector<std::vector<float>> scores(static_cast<size_t>(threads),
                                           std::vector<float>(kCodesPerTask));
    TopKSet heaps = scan_blocks(
        nb, ntotal_, k, kCodesPerTask, threads,
        [&](size_t i, size_t begin, size_t count, TopKSet& top, size_t w) {
          float* s = scores[w].data();
          pq_.scan(tables.data() + i * m * ks, codes_.data() + begin * cs, count, s);
          if (l2)
            for (size_t r = 0; r < count; ++r) s[r] = -s[r];
          push_scores(top, i, begin, s, count);
        });
    write_results(heaps, k, labels_, l2 ? inf : -inf, distances + q0 * k, labels + q0 * k,
                  [&](size_t, float score) { return l2 ? -score : score; });
  }
}

void PQIndex::reconstruct(const int64_t* ids, size_t n, float* out) const {
  for (size_t i = 0; i < n; ++i) {
    const int64_t pos = labels_.position_of(ids[i], ntotal_);
    if (pos < 0) throw std::out_of_range("reconstruct: id " + std::to_string(ids[i]) +
                                         " is not in the index");
    pq_.decode(codes_.data() + size_t(pos) * pq_.code_size(), 1, out + i * dim());
  }
}

void PQIndex::restore(std::vector<uint8_t> codes, std::vector<int64_t> ids, size_t ntotal) {
  if (codes.size() != ntotal * pq_.code_size())
    throw std::invalid_argument("corrupt index data: code array has the wrong size");
  if (!(ids.empty() || ids.size() == ntotal))
    throw std::invalid_argument("corrupt index data: ids");
  if (ntotal > 0 && !is_trained()) throw std::invalid_argument("corrupt index data: no codebook");
  if (pq_.nbits() == 4 && pq_.m() % 2)  // the unused high nibble of the last byte must be 0
    for (size_t i = 0; i < ntotal; ++i)
      if (codes[(i + 1) * pq_.code_size() - 1] >> 4)
        throw std::invalid_argument("corrupt index data: code out of range");
  codes_ = std::move(codes);
  labels_.assign(std::move(ids));
  ntotal_ = ntotal;
}

}  // namespace quanta
