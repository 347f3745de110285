#include "quanta/index/ivf_binary.hpp"

#include <cmath>
#include <limits>
#include <stdexcept>
#include <string>

#include "quanta/core/error.hpp"
#include "quanta/core/parallel.hpp"
#include "quanta/core/rows.hpp"
#include "quanta/core/topk.hpp"
#include "quanta/core/widen.hpp"

namespace quanta {

IVFBinaryIndex::IVFBinaryIndex(size_t dim, size_t nlist, size_t m, size_t levels,
                               size_t query_levels, Metric metric, const std::string& scoring)
    : bin_(dim, m, std::max(levels, query_levels)),
      levels_(levels),
      nlist_(nlist),
      metric_(metric),
      scoring_(choose_binary_scoring(scoring, m, levels, query_levels)) {
  if (nlist == 0) throw std::invalid_argument("IVFBinaryIndex: nlist must be >= 1");
  if (metric == Metric::l2)
    throw std::invalid_argument("IVFBinaryIndex: metric must be 'ip' or 'cosine'");
  if (query_levels < levels)
    throw std::invalid_argument("IVFBinaryIndex: query_levels must be >= levels");
  for (size_t l = 0; l < nlist; ++l) lists_.emplace_back(bin_, levels, scoring_);
  ids_.resize(nlist);
}

size_t IVFBinaryIndex::memory_usage() const {
  size_t s = coarse_ ? coarse_->memory_usage() : 0;
  for (size_t l = 0; l < nlist_; ++l)
    s += lists_[l].memory_usage() + ids_[l].size() * sizeof(int64_t);
  return s;
}

std::vector<float> IVFBinaryIndex::prepared(const float* x, size_t n) const {
  std::vector<float> out(x, x + n * dim());
  if (metric_ == Metric::cosine) normalize_rows(out.data(), n, dim());
  return out;
}

void IVFBinaryIndex::set_centroids(const std::vector<float>& c) {
  coarse_ = std::make_unique<CoarseQuantizer>(c.data(), nlist_, dim(), Metric::ip);
}

void IVFBinaryIndex::train(const float* x, size_t n, const TrainParams& p) {
  require(bin_.is_trained(),
          "train: fit the binarizer first (binarizer().set_transforms; quanta's "
          "IVFBinaryIndex.train fits it)");
  train_coarse(x, n, p.kmeans(p.coarse_niter));
}

void IVFBinaryIndex::train_coarse(const float* x, size_t n, const KMeansParams& params) {
  require_finite(x, n * dim(), "train: x");
  if (n < nlist_)
    throw std::invalid_argument("train: " + std::to_string(n) + " vectors; need at least nlist (" +
                                std::to_string(nlist_) + ")");
  KMeansParams p = params;
  p.spherical = true;               // lists by inner product
  p.init = KMeansInit::sample;      // as the IVF-PQ lists
  p.assign_all = false;
  const std::vector<float> xs = prepared(x, n);
  set_centroids(kmeans(xs.data(), n, dim(), nlist_, p).centroids);
}

void IVFBinaryIndex::add(const float* x, size_t n, const int64_t* ids, int threads) {
  if (!is_trained()) throw std::invalid_argument("add: the index is not trained; call train first");
  if (n == 0) return;
  require_finite(x, n * dim(), "add: x");
  Labels::check(ids, n);
  threads = resolve_threads(threads);
  const std::vector<float> xs = prepared(x, n);
  std::vector<int64_t> lists(n);
  assign_nearest(xs.data(), n, coarse_->centroids(), nlist_, dim(), true, threads, lists.data(),
                 nullptr);
  const size_t cw = code_words();
  std::vector<uint64_t> codes(n * cw);
  bin_.encode(x, n, codes.data(), threads, levels_);
  // Grouped by list, in input order within each.
  std::vector<std::vector<size_t>> members(nlist_);
  for (size_t i = 0; i < n; ++i) members[size_t(lists[i])].push_back(i);
  std::vector<uint64_t> buf;
  for (size_t l = 0; l < nlist_; ++l) {
    if (members[l].empty()) continue;
    buf.resize(members[l].size() * cw);
    for (size_t j = 0; j < members[l].size(); ++j)
      std::copy_n(codes.data() + members[l][j] * cw, cw, buf.data() + j * cw);
    lists_[l].append(buf.data(), members[l].size());
    ids_[l].edit([&](auto& v) {
      for (size_t i : members[l]) v.push_back(ids ? ids[i] : int64_t(ntotal_ + i));
    });
  }
  ntotal_ += n;
  locator_.forget();
}

void IVFBinaryIndex::reset() {
  for (size_t l = 0; l < nlist_; ++l) {
    lists_[l].clear();
    ids_[l] = {};
  }
  ntotal_ = 0;
  locator_.forget();
}

size_t IVFBinaryIndex::remove(const IdFilter& f) {
  const size_t cw = code_words();
  size_t removed = 0;
  for (size_t l = 0; l < nlist_; ++l) {
    if (!ListIds::any(ids_[l], f)) continue;
    std::vector<uint64_t> codes = lists_[l].codes();
    ids_[l].edit([&](auto& v) {
      removed += ListIds::remove(v, f, [&](size_t to, size_t from) {
        std::copy_n(codes.data() + from * cw, cw, codes.data() + to * cw);
      });
    });
    BinaryCodes fresh(bin_, levels_, scoring_);
    fresh.append(codes.data(), ids_[l].size());
    lists_[l] = std::move(fresh);
  }
  ntotal_ -= removed;
  if (removed) locator_.forget();
  return removed;
}

void IVFBinaryIndex::search(const float* q, size_t nq, const IVFSearchParams& params,
                            float* distances, int64_t* labels) const {
  const size_t k = params.k, nprobe = params.nprobe;
  require(k > 0, "search: k must be >= 1; got 0");
  require(nprobe >= 1 && nprobe <= nlist_, "search: nprobe must be in [1, nlist=" +
                                               std::to_string(nlist_) + "]; got " +
                                               std::to_string(nprobe));
  if (!is_trained()) throw std::invalid_argument("search: the index is not trained");
  require_finite(q, nq * dim(), "search: queries");
  const int threads = resolve_threads(params.threads);
  const std::vector<float> qs = prepared(q, nq);
  std::vector<float> cd(nq * nprobe);
  std::vector<int64_t> cl(nq * nprobe);
  coarse_->search(qs.data(), nq, nprobe, threads, cd.data(), cl.data(), true);
  const size_t qcw = bin_.code_words();
  std::vector<uint64_t> qcodes(nq * qcw);
  bin_.encode(q, nq, qcodes.data(), threads);
  // One query per task, its lists in probe order: the same result for any thread count.
  parallel_for(nq, threads, [&](size_t i, size_t) {
    thread_local fast_scan::Scanner scanner;
    thread_local std::vector<int32_t> dots;
    thread_local std::vector<float> scores;
    const BinaryQuery bq = lists_[0].prepare(qcodes.data() + i * qcw);
    const BinaryQuery* qp = &bq;
    const IdFilter* f = params.filter.of(i);
    TopKSet top(1, k);
    for (size_t pr = 0; pr < nprobe; ++pr) {
      const int64_t l = cl[i * nprobe + pr];
      if (l < 0 || lists_[size_t(l)].size() == 0) continue;
      const int64_t* id = ids_[size_t(l)].data();
      const auto limit = [&](size_t) { return top.threshold(0); };
      const size_t len = lists_[size_t(l)].size();
      if (f)  // the filtered scan is its own instantiation: the plain one stays as it was
        lists_[size_t(l)].scan(&qp, 1, 0, len, scanner, dots, scores, limit,
                               [&](size_t, size_t pos, float s) {
                                 if (f->allows(id[pos])) top.push(0, s, id[pos]);
                               });
      else
        lists_[size_t(l)].scan(&qp, 1, 0, len, scanner, dots, scores, limit,
                               [&](size_t, size_t pos, float s) { top.push(0, s, id[pos]); });
    }
    top.write_sorted(0, distances + i * k, labels + i * k, -std::numeric_limits<float>::infinity());
  });
  widen_short_queries(q, nq, params, distances, labels,
                      [&](const float* qa, size_t na, const IVFSearchParams& wider, float* da,
                          int64_t* la) { search(qa, na, wider, da, la); },
                      dim(), nlist_);
}

std::vector<uint64_t> IVFBinaryIndex::list_sizes() const {
  std::vector<uint64_t> s(nlist_);
  for (size_t l = 0; l < nlist_; ++l) s[l] = ids_[l].size();
  return s;
}

std::vector<uint64_t> IVFBinaryIndex::all_codes() const {
  std::vector<uint64_t> out;
  for (const BinaryCodes& list : lists_) {
    const std::vector<uint64_t> c = list.codes();
    out.insert(out.end(), c.begin(), c.end());
  }
  return out;
}

std::vector<int64_t> IVFBinaryIndex::all_ids() const {
  std::vector<int64_t> out;
  for (const auto& v : ids_) out.insert(out.end(), v.begin(), v.end());
  return out;
}

namespace {

// Entries [at, at + n) of b: a view when borrowing, else a copy.
template <class T>
Buffer<T> part(const Buffer<T>& b, size_t at, size_t n, bool borrow) {
  if (borrow) return Buffer<T>::view(b.data() + at, n);
  return std::vector<T>(b.data() + at, b.data() + at + n);
}

// Checked list sizes: their total, which must not exceed `limit` (so nothing wraps).
size_t total_of(const std::vector<uint64_t>& sizes, size_t limit) {
  size_t total = 0;
  for (uint64_t s : sizes) {
    require(s <= limit - total, "corrupt index data: list sizes exceed the ids");
    total += size_t(s);
  }
  return total;
}

}  // namespace

void IVFBinaryIndex::restore(std::vector<float> centroids, const std::vector<uint64_t>& sizes,
                             const std::vector<uint64_t>& codes, const std::vector<int64_t>& ids) {
  require(sizes.size() == nlist_, "corrupt index data: list count");
  const size_t total = total_of(sizes, ids.size()), cw = code_words();
  require(total == ids.size() && codes.size() % cw == 0 && codes.size() / cw == total,
          "corrupt index data: codes or ids");
  for (int64_t id : ids) require(id >= 0, "corrupt index data: negative id");
  std::vector<BinaryCodes> lists;
  std::vector<Buffer<int64_t>> id_lists(nlist_);
  size_t at = 0;
  for (size_t l = 0; l < nlist_; ++l) {
    lists.emplace_back(bin_, levels_, scoring_);
    lists.back().append(codes.data() + at * cw, size_t(sizes[l]));  // validates
    id_lists[l] = std::vector<int64_t>(ids.begin() + long(at), ids.begin() + long(at + sizes[l]));
    at += size_t(sizes[l]);
  }
  set_lists(std::move(centroids), std::move(lists), std::move(id_lists), total);
}

BinaryCodes::Stored IVFBinaryIndex::stored(std::vector<int64_t>& min_norm2) const {
  std::vector<uint64_t> codes;
  std::vector<uint8_t> blocks;
  std::vector<int32_t> sums;
  std::vector<float> inv;
  min_norm2.clear();
  for (const BinaryCodes& list : lists_) {
    const BinaryCodes::Stored s = list.stored();
    codes.insert(codes.end(), s.codes.begin(), s.codes.end());
    blocks.insert(blocks.end(), s.blocks.begin(), s.blocks.end());
    sums.insert(sums.end(), s.sums.begin(), s.sums.end());
    inv.insert(inv.end(), s.inv_norms.begin(), s.inv_norms.end());
    min_norm2.push_back(s.min_norm2);
  }
  return {std::move(codes), std::move(blocks), std::move(sums), std::move(inv), 0};
}

void IVFBinaryIndex::restore_stored(std::vector<float> centroids,
                                    const std::vector<uint64_t>& sizes,
                                    const BinaryCodes::Stored& s,
                                    const std::vector<int64_t>& min_norm2, Buffer<int64_t> ids,
                                    bool borrow) {
  require(sizes.size() == nlist_ && min_norm2.size() == nlist_, "corrupt index data: list count");
  const size_t total = total_of(sizes, ids.size()), cw = code_words();
  require(total == ids.size(), "corrupt index data: ids");
  const bool sdc = scoring_ == BinaryScoring::sdc;
  const size_t bb = fast_scan::block_bytes(bin_.m() * (levels_ + 1) / 4);
  std::vector<BinaryCodes> lists;
  std::vector<Buffer<int64_t>> id_lists(nlist_);
  size_t at = 0, codes_at = 0, blocks_at = 0;
  for (size_t l = 0; l < nlist_; ++l) {
    const size_t n = size_t(sizes[l]);
    const size_t nc = sdc ? 0 : n * cw, nb = sdc ? (n + fast_scan::kBlock - 1) / fast_scan::kBlock * bb : 0;
    require(nc <= s.codes.size() - codes_at && nb <= s.blocks.size() - blocks_at &&
                n <= s.sums.size() - at && n <= s.inv_norms.size() - at,
            "corrupt index data: binary code arrays do not match the lists");
    lists.emplace_back(bin_, levels_, scoring_);
    lists.back().restore({part(s.codes, codes_at, nc, borrow), part(s.blocks, blocks_at, nb, borrow),
                          part(s.sums, at, n, borrow), part(s.inv_norms, at, n, borrow),
                          min_norm2[l]},
                         n);
    id_lists[l] = part(ids, at, n, borrow);
    at += n;
    codes_at += nc;
    blocks_at += nb;
  }
  require(codes_at == s.codes.size() && blocks_at == s.blocks.size() && at == s.sums.size() &&
              at == s.inv_norms.size(),
          "corrupt index data: binary code arrays do not match the lists");
  if (!borrow)
    for (int64_t id : ids) require(id >= 0, "corrupt index data: negative id");
  set_lists(std::move(centroids), std::move(lists), std::move(id_lists), total);
}

void IVFBinaryIndex::set_lists(std::vector<float> centroids, std::vector<BinaryCodes> lists,
                               std::vector<Buffer<int64_t>> ids, size_t total) {
  require(centroids.size() == nlist_ * dim(), "corrupt index data: list count");
  for (float v : centroids) require(std::isfinite(v), "corrupt index data: non-finite centroid");
  set_centroids(centroids);
  lists_ = std::move(lists);
  ids_ = std::move(ids);
  ntotal_ = total;
  locator_.forget();
}

size_t IVFBinaryIndex::mapped_bytes() const {
  size_t s = 0;
  for (size_t l = 0; l < nlist_; ++l) s += lists_[l].mapped_bytes() + ids_[l].viewed_bytes();
  return s;
}

}  // namespace quanta
