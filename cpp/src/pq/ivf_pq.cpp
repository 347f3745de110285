#include "quanta/ivf_pq.hpp"

#include <algorithm>
#include <limits>
#include <stdexcept>
#include <string>

#include "quanta/error.hpp"
#include "quanta/kmeans.hpp"
#include "quanta/parallel.hpp"
#include "quanta/rows.hpp"
#include "quanta/topk.hpp"

namespace quanta {

IVFPQIndex::IVFPQIndex(size_t dim, size_t nlist, size_t m, size_t nbits, Metric metric)
    : dim_(dim), nlist_(nlist), metric_(metric), pq_(dim, m, nbits), codes_(nlist), ids_(nlist) {
  require(nlist > 0, "nlist must be >= 1");
}

size_t IVFPQIndex::memory_usage() const {
  size_t s = (centroids_.size() + pq_.centroids().size()) * sizeof(float);
  for (size_t l = 0; l < nlist_; ++l) s += codes_[l].size() + ids_[l].size() * sizeof(int64_t);
  return s;
}

std::vector<float> IVFPQIndex::prepared(const float* x, size_t n) const {
  std::vector<float> out(x, x + n * dim_);
  if (metric_ == Metric::cosine) normalize_rows(out.data(), n, dim_);
  return out;
}

void IVFPQIndex::assign(const float* x, size_t n, int threads, int64_t* lists) const {
  assign_nearest(x, n, centroids_.data(), nlist_, dim_, metric_ != Metric::l2, threads, lists,
                 nullptr);
}

void IVFPQIndex::train(const float* x, size_t n, const KMeansParams& coarse,
                       const KMeansParams& fine) {
  require_finite(x, n * dim_, "train: x");
  if (n < std::max(nlist_, pq_.ksub()))
    throw std::invalid_argument("train: " + std::to_string(n) + " vectors; need at least " +
                                std::to_string(std::max(nlist_, pq_.ksub())) +
                                " (nlist and 2^nbits)");
  std::vector<float> xs = prepared(x, n);
  KMeansParams cp = coarse;
  cp.spherical = metric_ != Metric::l2;  // ip / cosine lists by inner product
  KMeansResult km = kmeans(xs.data(), n, dim_, nlist_, cp);
  std::vector<float> old = std::move(centroids_);
  centroids_ = std::move(km.centroids);
  try {
    for (size_t i = 0; i < n; ++i) {
      const float* c = centroids_.data() + size_t(km.assign[i]) * dim_;
      for (size_t p = 0; p < dim_; ++p) xs[i * dim_ + p] -= c[p];
    }
    pq_.train(xs.data(), n, fine);
  } catch (...) {
    centroids_ = std::move(old);
    throw;
  }
  precompute();
}

void IVFPQIndex::precompute() {
  coarse_.reset();
  if (!centroids_.empty()) {
    coarse_ = std::make_unique<FlatIndex>(dim_, metric_ == Metric::l2 ? Metric::l2 : Metric::ip,
                                          Storage::f32, F8Scale::none, false);
    coarse_->add(centroids_.data(), nlist_, nullptr, 0);
  }
  precomputed_.clear();
  const size_t m = pq_.m(), ks = pq_.ksub(), ds = pq_.dsub();
  if (metric_ != Metric::l2 || centroids_.empty() || !pq_.is_trained() ||
      nlist_ * m * ks * sizeof(float) > kMaxPrecomputedBytes)
    return;
  precomputed_.resize(nlist_ * m * ks);
  const float* cn = pq_.centroid_norms().data();
  for (size_t l = 0; l < nlist_; ++l)
    for (size_t j = 0; j < m; ++j) {
      float* t = precomputed_.data() + (l * m + j) * ks;
      pq_.sub_dots(j, centroids_.data() + l * dim_ + j * ds, t);
      for (size_t c = 0; c < ks; ++c) t[c] = cn[j * ks + c] + 2 * t[c];
    }
}

void IVFPQIndex::add(const float* x, size_t n, const int64_t* ids, int threads) {
  if (!is_trained()) throw std::invalid_argument("add: the index is not trained; call train first");
  if (n == 0) return;
  require_finite(x, n * dim_, "add: x");
  Labels::check(ids, n);
  threads = resolve_threads(threads);
  std::vector<float> xs = prepared(x, n);
  std::vector<int64_t> lists(n);
  assign(xs.data(), n, threads, lists.data());
  for (size_t i = 0; i < n; ++i) {
    const float* c = centroids_.data() + size_t(lists[i]) * dim_;
    for (size_t p = 0; p < dim_; ++p) xs[i * dim_ + p] -= c[p];
  }
  const size_t cs = pq_.code_size();
  std::vector<uint8_t> codes(n * cs);
  pq_.encode(xs.data(), n, codes.data(), threads);
  for (size_t i = 0; i < n; ++i) {
    const size_t l = size_t(lists[i]);
    codes_[l].insert(codes_[l].end(), codes.begin() + i * cs, codes.begin() + (i + 1) * cs);
    ids_[l].push_back(ids ? ids[i] : int64_t(ntotal_ + i));
  }
  ntotal_ += n;
  std::lock_guard<std::mutex> lock(map_mutex_);
  where_.clear();
}

void IVFPQIndex::reset() {
  for (size_t l = 0; l < nlist_; ++l) {
    codes_[l].clear();
    ids_[l].clear();
  }
  ntotal_ = 0;
  std::lock_guard<std::mutex> lock(map_mutex_);
  where_.clear();
}

void IVFPQIndex::search(const float* q, size_t nq, size_t k, size_t nprobe, int threads,
                        float* distances, int64_t* labels) const {
  require(k > 0, "search: k must be >= 1; got 0");
  require(nprobe >= 1 && nprobe <= nlist_, "search: nprobe must be in [1, nlist=" +
                                               std::to_string(nlist_) + "]; got " +
                                               std::to_string(nprobe));
  if (!is_trained()) throw std::invalid_argument("search: the index is not trained");
  require_finite(q, nq * dim_, "search: queries");
  threads = resolve_threads(threads);
  const bool l2 = metric_ == Metric::l2;
  std::vector<float> qs = prepared(q, nq);
  // Coarse step: the nprobe best lists of every query (exact, GEMM), best first.
  std::vector<float> cd(nq * nprobe);
  std::vector<int64_t> cl(nq * nprobe);
  SearchParams sp;
  sp.threads = threads;
  coarse_->search(qs.data(), nq, nprobe, sp, cd.data(), cl.data());
  const size_t m = pq_.m(), ks = pq_.ksub(), cs = pq_.code_size();
  // One query per task: its lists in order, so ties (equal scores) break by id the same way
  // whatever the thread count.
  parallel_for(nq, threads, [&](size_t i, size_t) {
    TopKSet top(1, k);
    std::vector<float> table(m * ks), resid(dim_), scores, qdots;
    const float* qi = qs.data() + i * dim_;
    const bool pre = !precomputed_.empty();
    if (!l2) pq_.distance_tables(qi, 1, false, table.data());
    if (pre) {  // <q_j, code c> once per query, shared by every probed list
      qdots.resize(m * ks);
      for (size_t j = 0; j < m; ++j) pq_.sub_dots(j, qi + j * pq_.dsub(), qdots.data() + j * ks);
    }
    for (size_t pr = 0; pr < nprobe; ++pr) {
      const int64_t l = cl[i * nprobe + pr];
      if (l < 0) continue;
      const size_t len = ids_[size_t(l)].size();
      if (len == 0) continue;
      float bias = 0;
      if (pre) {
        const float* t = precomputed_.data() + size_t(l) * m * ks;
        for (size_t e = 0; e < m * ks; ++e) table[e] = t[e] - 2 * qdots[e];
        bias = -cd[i * nprobe + pr];  // minus |q - centroid|^2: scores are negated distances
      } else if (l2) {
        const float* c = centroids_.data() + size_t(l) * dim_;
        for (size_t p = 0; p < dim_; ++p) resid[p] = qi[p] - c[p];
        pq_.distance_tables(resid.data(), 1, true, table.data());
      } else {
        bias = cd[i * nprobe + pr];  // <q, centroid>
      }
      scores.resize(len);
      pq_.scan(table.data(), codes_[size_t(l)].data(), len, scores.data());
      const int64_t* id = ids_[size_t(l)].data();
      float thr = top.threshold(0);
      for (size_t r = 0; r < len; ++r) {
        const float s = (l2 ? -scores[r] : scores[r]) + bias;
        if (s >= thr) {
          top.push(0, s, id[r]);
          thr = top.threshold(0);
        }
      }
    }
    top.write_sorted(0, distances + i * k, labels + i * k,
                     l2 ? std::numeric_limits<float>::infinity()
                        : -std::numeric_limits<float>::infinity());
    if (l2)
      for (size_t j = 0; j < k; ++j)
        if (labels[i * k + j] >= 0) distances[i * k + j] = -distances[i * k + j];
  });
}

void IVFPQIndex::reconstruct(const int64_t* ids, size_t n, float* out) const {
  std::lock_guard<std::mutex> lock(map_mutex_);
  if (where_.empty())
    for (size_t l = nlist_; l-- > 0;)
      for (size_t r = ids_[l].size(); r-- > 0;) where_[ids_[l][r]] = {uint32_t(l), uint32_t(r)};
  for (size_t i = 0; i < n; ++i) {
    auto it = where_.find(ids[i]);
    if (it == where_.end())
      throw std::out_of_range("reconstruct: id " + std::to_string(ids[i]) + " is not in the index");
    const size_t l = it->second.first, r = it->second.second;
    float* o = out + i * dim_;
    pq_.decode(codes_[l].data() + r * pq_.code_size(), 1, o);
    for (size_t p = 0; p < dim_; ++p) o[p] += centroids_[l * dim_ + p];
  }
}

std::vector<uint64_t> IVFPQIndex::list_sizes() const {
  std::vector<uint64_t> s(nlist_);
  for (size_t l = 0; l < nlist_; ++l) s[l] = ids_[l].size();
  return s;
}

std::vector<uint8_t> IVFPQIndex::all_codes() const {
  std::vector<uint8_t> out;
  for (const auto& c : codes_) out.insert(out.end(), c.begin(), c.end());
  return out;
}

std::vector<int64_t> IVFPQIndex::all_ids() const {
  std::vector<int64_t> out;
  for (const auto& v : ids_) out.insert(out.end(), v.begin(), v.end());
  return out;
}

void IVFPQIndex::restore(std::vector<float> centroids, const std::vector<uint64_t>& sizes,
                         const std::vector<uint8_t>& codes, const std::vector<int64_t>& ids) {
  const auto bad = [](const char* what) {
    throw std::invalid_argument(std::string("corrupt index data: ") + what);
  };
  if (!(centroids.empty() || centroids.size() == nlist_ * dim_)) bad("centroids");
  if (sizes.size() != nlist_) bad("list sizes");
  uint64_t total = 0;
  for (uint64_t s : sizes) total += s;
  if (ids.size() != total || codes.size() != total * pq_.code_size()) bad("codes or ids");
  if (total > 0 && (centroids.empty() || !pq_.is_trained())) bad("no quantizer");
  for (int64_t id : ids)
    if (id < 0) bad("negative id");
  const size_t cs = pq_.code_size();
  if (pq_.nbits() == 4 && pq_.m() % 2)
    for (size_t i = 0; i < total; ++i)
      if (codes[(i + 1) * cs - 1] >> 4) bad("code out of range");
  centroids_ = std::move(centroids);
  size_t at = 0;
  for (size_t l = 0; l < nlist_; ++l) {
    codes_[l].assign(codes.begin() + at * cs, codes.begin() + (at + sizes[l]) * cs);
    ids_[l].assign(ids.begin() + at, ids.begin() + at + sizes[l]);
    at += sizes[l];
  }
  ntotal_ = total;
  precompute();
  std::lock_guard<std::mutex> lock(map_mutex_);
  where_.clear();
}

}  // namespace quanta
