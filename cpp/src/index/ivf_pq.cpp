#include "quanta/index/ivf_pq.hpp"

#include <algorithm>
#include <cstring>
#include <limits>
#include <stdexcept>
#include <string>
#include <unordered_set>

#include "quanta/codec/kmeans.hpp"
#include "quanta/codec/soar.hpp"
#include "quanta/core/error.hpp"
#include "quanta/core/parallel.hpp"
#include "quanta/core/range_hits.hpp"
#include "quanta/core/rows.hpp"
#include "quanta/core/topk.hpp"
#include "quanta/core/widen.hpp"
#include "quanta/simd/dispatch.hpp"
#include "quanta/simd/kernels.hpp"

namespace quanta {

namespace {

// The first (best) entry of each id among n entries sorted best first, up to k; the rest of
// the k slots padded as (pad, -1).
void first_of_each_id(const float* s, const int64_t* ids, size_t n, size_t k, float pad,
                      float* out_s, int64_t* out_ids) {
  std::unordered_set<int64_t> seen;
  size_t w = 0;
  for (size_t j = 0; j < n && w < k && ids[j] >= 0; ++j) {
    const bool dup = k <= 64 ? std::find(out_ids, out_ids + w, ids[j]) != out_ids + w
                             : !seen.insert(ids[j]).second;
    if (dup) continue;
    out_s[w] = s[j];
    out_ids[w++] = ids[j];
  }
  std::fill(out_s + w, out_s + k, pad);
  std::fill(out_ids + w, out_ids + k, int64_t(-1));
}

}  // namespace

IVFPQIndex::IVFPQIndex(size_t dim, size_t nlist, size_t m, size_t nbits, Metric metric,
                       bool fast_scan, bool by_residual, bool soar)
    : dim_(dim), nlist_(nlist), metric_(metric), fast_scan_(fast_scan), by_residual_(by_residual),
      soar_(soar),
      pq_(dim, m, nbits),
      codes_(nlist), ids_(nlist) {
  require(nlist > 0, "nlist must be >= 1");
  // uint16 sums of up to m entries of 255 must not overflow.
  require(!fast_scan || (nbits == 4 && m <= 256), "fast_scan needs nbits=4 and m <= 256");
}

size_t IVFPQIndex::memory_usage() const {
  size_t s = pq_.centroids().size() * sizeof(float) + (coarse_ ? coarse_->memory_usage() : 0);
  for (size_t l = 0; l < nlist_; ++l) s += codes_[l].size() + ids_[l].size() * sizeof(int64_t);
  return s;
}

std::vector<float> IVFPQIndex::prepared(const float* x, size_t n) const {
  std::vector<float> out(x, x + n * dim_);
  if (metric_ == Metric::cosine) normalize_rows(out.data(), n, dim_);
  return out;
}

void IVFPQIndex::assign(const float* x, size_t n, int threads, int64_t* lists) const {
  assign_nearest(x, n, coarse_->centroids(), nlist_, dim_, metric_ != Metric::l2, threads, lists,
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
  cp.init = KMeansInit::sample;  // as faiss: with nlist clusters, k-means++ costs more than
                                 // it gains in list quality
  KMeansResult km = kmeans(xs.data(), n, dim_, nlist_, cp);
  for (size_t i = 0; i < n; ++i) {
    const float* c = km.centroids.data() + size_t(km.assign[i]) * dim_;
    for (size_t p = 0; p < dim_ && by_residual_; ++p) xs[i * dim_ + p] -= c[p];
  }
  pq_.train(xs.data(), n, fine);  // the lists change only once this has succeeded
  coarse_ = std::make_unique<CoarseQuantizer>(km.centroids.data(), nlist_, dim_,
                                              metric_ == Metric::l2 ? Metric::l2 : Metric::ip);
  precompute();
}

void IVFPQIndex::precompute() {
  std::lock_guard<std::mutex> lock(precomputed_mutex_);
  precomputed_.clear();
  precomputed_ready_.store(false);
}

const float* IVFPQIndex::precomputed() const {
  const size_t m = pq_.m(), ks = pq_.ksub(), ds = pq_.dsub();
  if (metric_ != Metric::l2 || !by_residual_ || !coarse_ || !pq_.is_trained() ||
      nlist_ * m * ks * sizeof(float) > kMaxPrecomputedBytes)
    return nullptr;
  // Built by the first search, not at load: a mapped index stays small until it is used.
  if (!precomputed_ready_.load(std::memory_order_acquire)) {
    std::lock_guard<std::mutex> lock(precomputed_mutex_);
    if (!precomputed_ready_.load(std::memory_order_relaxed)) {
      precomputed_.resize(nlist_ * m * ks);
      const float* cn = pq_.centroid_norms().data();
      for (size_t l = 0; l < nlist_; ++l)
        for (size_t j = 0; j < m; ++j) {
          float* t = precomputed_.data() + (l * m + j) * ks;
          pq_.sub_dots(j, centroid(l) + j * ds, t);
          for (size_t c = 0; c < ks; ++c) t[c] = cn[j * ks + c] + 2 * t[c];
        }
      precomputed_ready_.store(true, std::memory_order_release);
    }
  }
  return precomputed_.data();
}

void IVFPQIndex::add(const float* x, size_t n, const int64_t* ids, int threads) {
  if (!is_trained()) throw std::invalid_argument("add: the index is not trained; call train first");
  if (n == 0) return;
  require_finite(x, n * dim_, "add: x");
  Labels::check(ids, n);
  threads = resolve_threads(threads);
  std::vector<float> xs = prepared(x, n);
  // Entry e of vector i = e % n goes to lists[e]: its nearest list, then (SOAR) its second.
  const size_t copies = this->copies();
  std::vector<int64_t> lists(copies * n);
  assign(xs.data(), n, threads, lists.data());
  if (copies > 1)
    soar_assign(xs.data(), n, coarse_->centroids(), nlist_, dim_, lists.data(), kSoarLambda,
                threads, lists.data() + n);
  // The codes of each entry: residuals differ per list, plain codes are shared.
  const size_t cs = pq_.code_size(), coded = by_residual_ ? copies * n : n;
  std::vector<float> rows(coded * dim_);
  for (size_t e = 0; e < coded; ++e) {
    const float* v = xs.data() + (e % n) * dim_;
    const float* c = centroid(size_t(lists[e]));
    for (size_t p = 0; p < dim_; ++p) rows[e * dim_ + p] = by_residual_ ? v[p] - c[p] : v[p];
  }
  std::vector<uint8_t> codes(coded * cs);
  pq_.encode(rows.data(), coded, codes.data(), threads);
  for (size_t e = 0; e < copies * n; ++e) {
    const size_t l = size_t(lists[e]), len = ids_[l].size();
    const uint8_t* code = codes.data() + (e % coded) * cs;
    codes_[l].edit([&](auto& c) {
      if (fast_scan_) {
        c.resize(fast_scan::bytes_for(len + 1, pq_.m()), 0);
        fast_scan::pack(code, 1, pq_.m(), len, c.data());
      } else {
        c.insert(c.end(), code, code + cs);
      }
    });
    const size_t i = e % n;
    ids_[l].edit([&](auto& v) { v.push_back(ids ? ids[i] : int64_t(ntotal_ + i)); });
  }
  ntotal_ += n;
  locator_.forget();
}

void IVFPQIndex::reset() {
  for (size_t l = 0; l < nlist_; ++l) {
    codes_[l] = {};
    ids_[l] = {};
  }
  ntotal_ = 0;
  locator_.forget();
}

size_t IVFPQIndex::remove(const IdFilter& f) {
  const size_t m = pq_.m(), cs = pq_.code_size();
  size_t removed = 0;
  std::vector<uint8_t> plain;
  for (size_t l = 0; l < nlist_; ++l) {
    if (!ListIds::any(ids_[l], f)) continue;
    // Fast-scan lists are rewritten through their plain codes, then packed again.
    const size_t len = ids_[l].size();
    codes_[l].edit([&](auto& c) {
      uint8_t* codes = c.data();
      if (fast_scan_) {
        plain.resize(len * cs);
        fast_scan::unpack(codes, m, 0, len, plain.data());
        codes = plain.data();
      }
      ids_[l].edit([&](auto& v) {
        removed += ListIds::remove(v, f, [&](size_t to, size_t from) {
          std::memmove(codes + to * cs, codes + from * cs, cs);
        });
      });
      const size_t w = ids_[l].size();
      if (fast_scan_) {
        c.assign(fast_scan::bytes_for(w, m), 0);
        fast_scan::pack(plain.data(), w, m, 0, c.data());
      } else {
        c.resize(w * cs);
      }
    });
  }
  removed /= copies();  // entries -> vectors
  ntotal_ -= removed;
  if (removed) locator_.forget();
  return removed;
}

void IVFPQIndex::compact() {
  for (size_t l = 0; l < nlist_; ++l) {
    if (!codes_[l].viewing()) codes_[l].edit([](auto& c) { c.shrink_to_fit(); });
    if (!ids_[l].viewing()) ids_[l].edit([](auto& v) { v.shrink_to_fit(); });
  }
}

std::vector<float> IVFPQIndex::coarse_queries(const char* what, const float* q, size_t nq,
                                              size_t nprobe) const {
  require(nprobe >= 1 && nprobe <= nlist_, std::string(what) + ": nprobe must be in [1, nlist=" +
                                               std::to_string(nlist_) + "]; got " +
                                               std::to_string(nprobe));
  if (!is_trained()) throw std::invalid_argument(std::string(what) + ": the index is not trained");
  require_finite(q, nq * dim_, (std::string(what) + ": queries").c_str());
  return prepared(q, nq);
}

void IVFPQIndex::coarse_search(const float* q, size_t nq, size_t nprobe, int threads,
                               float* distances, int64_t* lists) const {
  const std::vector<float> qs = coarse_queries("coarse_search", q, nq, nprobe);
  coarse_->search(qs.data(), nq, nprobe, resolve_threads(threads), distances, lists, true);
}

void IVFPQIndex::coarse_rescored(const float* q, size_t nq, size_t nprobe, int64_t* out) const {
  const std::vector<float> qs = coarse_queries("coarse_rescored", q, nq, nprobe);
  coarse_->rescored(qs.data(), nq, nprobe, out);
}

bool IVFPQIndex::same_state(const IVFPQIndex& o) const {
  if (!(o.dim_ == dim_ && o.nlist_ == nlist_ && o.metric_ == metric_ &&
        o.fast_scan_ == fast_scan_ && o.by_residual_ == by_residual_ && o.soar_ == soar_ &&
        o.pq_.m() == pq_.m() && o.pq_.nbits() == pq_.nbits() &&
        bool(o.coarse_) == bool(coarse_) && o.pq_.centroids() == pq_.centroids()))
    return false;
  // The codebooks are compared whole (dim x 2^nbits floats); the coarse centroids on 8 rows
  // spread over the lists: comparing them all costs more than searching one query, and two
  // k-means runs that differ anywhere differ on those rows too.
  for (size_t s = 0; s < 8 && coarse_; ++s) {
    const size_t row = s * (nlist_ - 1) / 7;
    if (!std::equal(centroid(row), centroid(row) + dim_, o.centroid(row)))
      return false;
  }
  return true;
}

void IVFPQIndex::search(const float* q, size_t nq, const IVFSearchParams& params,
                        float* distances, int64_t* labels,
                        const std::vector<const IVFPQIndex*>& others) const {
  std::vector<const IVFPQIndex*> parts{this};
  for (const IVFPQIndex* o : others) {
    require(o && same_state(*o), "search: the parts were not trained from the same state "
                                 "(centroids and codebooks differ)");
    parts.push_back(o);
  }
  require(others.empty() || (fast_scan_ && params.filter.empty()),
          "search: parts are searched together with fast-scan codes and no filter only");
  const size_t k = params.k, nprobe = params.nprobe;
  require(k > 0, "search: k must be >= 1; got 0");
  require(nprobe >= 1 && nprobe <= nlist_, "search: nprobe must be in [1, nlist=" +
                                               std::to_string(nlist_) + "]; got " +
                                               std::to_string(nprobe));
  if (!is_trained()) throw std::invalid_argument("search: the index is not trained");
  require_finite(q, nq * dim_, "search: queries");
  const int threads = resolve_threads(params.threads);
  const bool l2 = metric_ == Metric::l2;
  std::vector<float> qs = prepared(q, nq);
  const float pad = l2 ? std::numeric_limits<float>::infinity()
                      : -std::numeric_limits<float>::infinity();
  // With SOAR a vector has two entries: the kk = 2k best entries hold the k best vectors.
  const size_t kk = k * copies();
  const auto finish = [&](size_t i, auto& top, size_t slot) {
    if (kk == k) {
      top.write_sorted(slot, distances + i * k, labels + i * k, pad);
    } else {
      thread_local std::vector<float> ds;
      thread_local std::vector<int64_t> ls;
      ds.resize(kk);
      ls.resize(kk);
      top.write_sorted(slot, ds.data(), ls.data(), pad);
      first_of_each_id(ds.data(), ls.data(), kk, k, pad, distances + i * k, labels + i * k);
    }
    if (l2)
      for (size_t j = 0; j < k; ++j)
        if (labels[i * k + j] >= 0) distances[i * k + j] = -distances[i * k + j];
  };
  // Queries whose filter allows so few ids that scoring them directly beats the lists.
  const size_t scanned = std::max<size_t>(1, ntotal_ * copies() / nlist_ * nprobe);
  std::vector<uint8_t> exact(nq, 0);
  size_t nexact = 0;
  for (size_t i = 0; i < params.filter.size() && nexact < nq; ++i) {
    const size_t allowed = params.filter.of(i)->max_allowed();
    if (allowed <= scanned / kExactFallback) {
      if (params.filter.shared()) {
        std::fill(exact.begin(), exact.end(), uint8_t(1));
        nexact = nq;
      } else {
        exact[i] = 1;
        ++nexact;
      }
    }
  }
  if (nexact) {
    // a filter shared by every query: its rows looked up once
    const AllowedRows shared =
        params.filter.shared() ? allowed_rows(*params.filter.of(0)) : AllowedRows();
    parallel_for(nq, threads, [&](size_t i, size_t) {
      if (!exact[i]) return;
      TopKSet top(1, kk);
      const float* qi = qs.data() + i * dim_;
      if (params.filter.shared())
        score_allowed(qi, shared, top, 0);
      else
        score_allowed(qi, allowed_rows(*params.filter.of(i)), top, 0);
      finish(i, top, 0);
    });
  }
  if (nexact == nq) return;
  // Coarse step: the nprobe best lists of every query (exact, GEMM), unless given.
  std::vector<float> cd(nq * nprobe);
  std::vector<int64_t> cl(nq * nprobe);
  if (!params.coarse_lists.empty()) {
    require(params.coarse_lists.size() == nq * nprobe &&
                params.coarse_distances.size() == nq * nprobe,
            "search: coarse lists and distances must be nq x nprobe = " +
                std::to_string(nq) + " x " + std::to_string(nprobe));
    for (int64_t l : params.coarse_lists)
      require(l >= 0 && size_t(l) < nlist_, "search: coarse list " + std::to_string(l) +
                                                " is not in [0, nlist=" +
                                                std::to_string(nlist_) + ")");
    cl = params.coarse_lists;
    cd = params.coarse_distances;
  } else {
    // best first only for the query-by-query scan, whose heap fills with good codes first
    coarse_->search(qs.data(), nq, nprobe, threads, cd.data(), cl.data(), !fast_scan_);
    if (fast_scan_)  // unsorted, but the best list first (the fast-scan's first pass)
      for (size_t i = 0; i < nq; ++i) {
        float* d = &cd[i * nprobe];
        const size_t b = size_t((metric_ == Metric::l2 ? std::min_element(d, d + nprobe)
                                                       : std::max_element(d, d + nprobe)) - d);
        std::swap(d[0], d[b]);
        std::swap(cl[i * nprobe], cl[i * nprobe + b]);
      }
  }
  if (fast_scan_) {
    for (size_t i = 0; i < nq; ++i)  // queries served exactly probe nothing
      if (exact[i]) std::fill(&cl[i * nprobe], &cl[(i + 1) * nprobe], int64_t(-1));
    const auto scan = [&](auto top) {
      search_fast_scan(qs.data(), nq, cl.data(), nprobe, threads, params.filter, top, parts);
      for (size_t i = 0; i < nq; ++i)
        if (!exact[i]) finish(i, top, i);
    };
    if (kk >= kReservoirK)
      scan(TopKReservoir(nq, kk));
    else
      scan(TopKSet(nq, kk));
  } else {
    // One query per task: its lists in order, so ties (equal scores) break by id the same way
    // whatever the thread count.
    parallel_for(nq, threads, [&](size_t i, size_t) {
      if (exact[i]) return;
      TopKSet top(1, kk);
      const IdFilter* f = params.filter.of(i);
      scan_lists(qs.data() + i * dim_, cd.data() + i * nprobe, cl.data() + i * nprobe, nprobe,
                 [&] { return top.threshold(0); }, [&](float s, int64_t id) {
                   if (f && !f->allows(id)) return false;
                   top.push(0, s, id);
                   return true;
                 });
      finish(i, top, 0);
    });
  }
  widen_short_queries(q, nq, params, distances, labels,
                      [&](const float* qa, size_t na, const IVFSearchParams& wider, float* da,
                          int64_t* la) { search(qa, na, wider, da, la); },
                      dim_, nlist_, exact.data());
}

void IVFPQIndex::code_of(size_t l, size_t r, uint8_t* code) const {
  if (fast_scan_)
    fast_scan::unpack(codes_[l].data(), pq_.m(), r, 1, code);
  else
    std::memcpy(code, codes_[l].data() + r * pq_.code_size(), pq_.code_size());
}

void IVFPQIndex::decode_entry(size_t l, size_t r, float* out) const {
  std::vector<uint8_t> code(pq_.code_size());
  code_of(l, r, code.data());
  pq_.decode(code.data(), 1, out);
  const float* c = centroid(l);
  for (size_t p = 0; p < dim_ && by_residual_; ++p) out[p] += c[p];
}

IVFPQIndex::AllowedRows IVFPQIndex::allowed_rows(const IdFilter& f) const {
  const ListIds::Where& map = locator_.where(ids_);
  const size_t cs = pq_.code_size();
  AllowedRows rows;
  f.for_each_allowed([&](int64_t id) {
    auto it = map.find(id);
    if (it == map.end()) return;
    rows.ids.push_back(id);
    rows.lists.push_back(uint32_t(it->second.first));
    rows.codes.resize(rows.codes.size() + cs);
    code_of(it->second.first, it->second.second, rows.codes.data() + rows.codes.size() - cs);
  });
  return rows;
}

void IVFPQIndex::score_allowed(const float* q, const AllowedRows& rows, TopKSet& top,
                               size_t slot) const {
  // The exact ADC distance (float tables, as the plain scan) of each allowed vector: one table
  // for every list, plus <q, centroid> for ip residuals; l2 residuals need a table per list,
  // so they are scored by their reconstructions instead (the same distance).
  const bool l2 = metric_ == Metric::l2, per_list = l2 && by_residual_;
  const size_t n = rows.ids.size(), cs = pq_.code_size();
  thread_local std::vector<float> table, x, s;
  s.resize(n);
  if (per_list) {
    x.resize(dim_);
    for (size_t u = 0; u < n; ++u) {
      pq_.decode(&rows.codes[u * cs], 1, x.data());
      const float* c = centroid(rows.lists[u]);
      double d = 0;
      for (size_t p = 0; p < dim_; ++p) {
        const float v = x[p] + c[p];
        d += double(q[p] - v) * (q[p] - v);
      }
      s[u] = -float(d);
    }
  } else {
    table.resize(pq_.m() * pq_.ksub());
    pq_.distance_tables(q, 1, l2, table.data());
    pq_.scan(table.data(), rows.codes.data(), n, s.data());
    for (size_t u = 0; u < n; ++u)
      if (l2) {
        s[u] = -s[u];
      } else if (by_residual_) {
        const float* c = centroid(rows.lists[u]);
        for (size_t p = 0; p < dim_; ++p) s[u] += q[p] * c[p];
      }
  }
  for (size_t u = 0; u < n; ++u) top.push(slot, s[u], rows.ids[u]);  // higher is better
}

RangeResult IVFPQIndex::range_search(const float* q, size_t nq, float radius,
                                     const IVFSearchParams& params) const {
  const size_t nprobe = params.nprobe;
  require(nprobe >= 1 && nprobe <= nlist_, "range_search: nprobe must be in [1, nlist=" +
                                               std::to_string(nlist_) + "]; got " +
                                               std::to_string(nprobe));
  if (!is_trained()) throw std::invalid_argument("range_search: the index is not trained");
  require_finite(q, nq * dim_, "range_search: queries");
  require(std::isfinite(radius), "range_search: radius must be finite");
  const int threads = resolve_threads(params.threads);
  const bool l2 = metric_ == Metric::l2;
  const float floor = l2 ? -radius : radius;  // scores (higher is better) must exceed it
  std::vector<float> qs = prepared(q, nq);
  std::vector<float> cd(nq * nprobe);
  std::vector<int64_t> cl(nq * nprobe);
  coarse_->search(qs.data(), nq, nprobe, threads, cd.data(), cl.data(), false);
  RangeHits hits(nq);
  const size_t m = pq_.m(), lb = fast_scan::block_bytes(m);
  parallel_for(nq, threads, [&](size_t i, size_t) {
    const IdFilter* f = params.filter.of(i);
    const float* qi = qs.data() + i * dim_;
    if (fast_scan_) {
      std::vector<uint8_t> luts(nprobe * lb);
      std::vector<float> off(nprobe);
      std::vector<int64_t> lists(nprobe);
      float scale;
      const size_t nt = fast_scan_tables(qi, cl.data() + i * nprobe, nprobe, luts.data(),
                                         off.data(), lists.data(), &scale, {this});
      fast_scan::Scanner scanner;
      const Kernels& kern = kernels(active_isa());
      for (size_t t = 0; t < nt; ++t) {
        const size_t l = size_t(lists[t]);
        const double room = (double(off[t]) - floor) * scale;  // score = off - sum / scale
        if (room < 0) continue;
        const uint16_t limit = room >= 65535 ? uint16_t(65535) : uint16_t(room);
        const uint8_t* lut = luts.data() + (tables_per_list() ? t : 0) * lb;
        scanner.scan(kern, codes_[l].data(), ids_[l].size(), m, &lut, 1,
                     [&](size_t) { return limit; }, [&](size_t, size_t r, uint16_t sum) {
                       const float s = off[t] - float(sum) / scale;
                       const int64_t id = ids_[l][r];
                       if (s > floor && (!f || f->allows(id))) hits.add(i, s, id);
                     });
      }
    } else {
      scan_lists(qi, cd.data() + i * nprobe, cl.data() + i * nprobe, nprobe,
                 [&] { return floor; }, [&](float s, int64_t id) {
                   if (s > floor && (!f || f->allows(id))) hits.add(i, s, id);
                   return false;
                 });
    }
  });
  return hits.finish([&](size_t, float s) { return l2 ? -s : s; },
                     [](int64_t id) { return id; }, copies() > 1);
}

// Scores are negated distances for l2 (higher is better everywhere).
void IVFPQIndex::l2_table(const float* q, const float* qdots, size_t l, float* table) const {
  const size_t n = pq_.m() * pq_.ksub();
  if (const float* pre = precomputed()) {  // |r|^2 + 2 <c, r> - 2 <q, r>, without |q - c|^2
    const float* t = pre + l * n;
    for (size_t e = 0; e < n; ++e) table[e] = t[e] - 2 * qdots[e];
  } else {  // from the residual query: the full |q - c - r|^2
    std::vector<float> resid(dim_);
    const float* c = centroid(l);
    for (size_t p = 0; p < dim_; ++p) resid[p] = q[p] - c[p];
    pq_.distance_tables(resid.data(), 1, true, table);
  }
}

template <class Floor, class Emit>
void IVFPQIndex::scan_lists(const float* q, const float* cd, const int64_t* cl, size_t nprobe,
                            Floor&& floor, Emit&& emit) const {
  const bool l2 = metric_ == Metric::l2, pre = precomputed() != nullptr;
  const size_t m = pq_.m(), ks = pq_.ksub();
  std::vector<float> table(m * ks), qdots(pre ? m * ks : 0), scores;
  const bool per_list = l2 && by_residual_;  // else one table serves every list
  if (!per_list) pq_.distance_tables(q, 1, l2, table.data());
  if (pre)  // <q_j, code c> once per query, shared by every probed list
    for (size_t j = 0; j < m; ++j) pq_.sub_dots(j, q + j * pq_.dsub(), qdots.data() + j * ks);
  for (size_t pr = 0; pr < nprobe; ++pr) {
    const int64_t l = cl[pr];
    if (l < 0 || ids_[size_t(l)].empty()) continue;
    const size_t len = ids_[size_t(l)].size();
    float bias = 0;
    if (per_list) {
      l2_table(q, qdots.data(), size_t(l), table.data());
      bias = pre ? -cd[pr] : 0;  // minus |q - centroid|^2
    } else if (!l2 && by_residual_) {
      bias = cd[pr];  // <q, centroid>
    }
    scores.resize(len);
    pq_.scan(table.data(), codes_[size_t(l)].data(), len, scores.data());
    const int64_t* id = ids_[size_t(l)].data();
    float thr = floor();
    for (size_t r = 0; r < len; ++r) {
      const float s = (l2 ? -scores[r] : scores[r]) + bias;
      if (s >= thr && emit(s, id[r])) thr = floor();
    }
  }
}

size_t IVFPQIndex::fast_scan_tables(const float* q, const int64_t* cl, size_t nprobe,
                                    uint8_t* luts, float* off, int64_t* lists, float* scale,
                                    const std::vector<const IVFPQIndex*>& parts) const {
  const bool l2 = metric_ == Metric::l2;
  const float* pre = precomputed();
  const size_t m = pq_.m(), n16 = m * 16;
  size_t nt = 0;  // the probed lists some part holds codes in, best first
  for (size_t pr = 0; pr < nprobe; ++pr)
    if (cl[pr] >= 0 && std::any_of(parts.begin(), parts.end(), [&](const IVFPQIndex* p) {
          return !p->ids_[size_t(cl[pr])].empty();
        }))
      lists[nt++] = cl[pr];
  if (nt == 0) return 0;
  // Float tables (smaller is better): one per probed list for l2 residuals, else one shared.
  const bool per_list = tables_per_list();
  const size_t ntab = per_list ? nt : 1;
  thread_local std::vector<float> tables, qdots, bias, lo, hi;  // scratch, reused per query
  tables.resize(ntab * n16);
  qdots.resize(pre ? n16 : 0);
  bias.resize(ntab);
  lo.resize(ntab * m);
  hi.resize(ntab * m);
  const Kernels& kern = kernels(active_isa());
  if (pre) {  // l2 residuals
    for (size_t j = 0; j < m; ++j) pq_.sub_dots(j, q + j * pq_.dsub(), qdots.data() + j * 16);
    for (size_t t = 0; t < nt; ++t)
      kern.row16_table_minmax(pre + size_t(lists[t]) * n16, qdots.data(), m,
                              &tables[t * n16], &lo[t * m], &hi[t * m]);
  } else {
    if (per_list) {  // no precomputed tables: full tables from q - centroid
      for (size_t t = 0; t < nt; ++t) l2_table(q, nullptr, size_t(lists[t]), &tables[t * n16]);
    } else {
      pq_.distance_tables(q, 1, l2, tables.data());
      if (!l2)
        for (float& v : tables) v = -v;
    }
    kern.row16_minmax(tables.data(), ntab * m, lo.data(), hi.data());
  }
  fast_scan::quantize_tables(tables.data(), lo.data(), hi.data(), ntab, m, luts, scale,
                             bias.data());
  for (size_t t = 0; t < nt; ++t) {
    // score = off - sum / scale: minus the estimated distance (l2), the estimated ip (ip).
    // The coarse term is recomputed here in portable code (the coarse search's SIMD GEMM
    // rounds differently per SIMD level), so results are the same at every level.
    const float* c = centroid(size_t(lists[t]));
    float coarse = 0;
    if (pre)
      for (size_t p = 0; p < dim_; ++p) coarse += (q[p] - c[p]) * (q[p] - c[p]);
    else if (!l2 && by_residual_)
      for (size_t p = 0; p < dim_; ++p) coarse += q[p] * c[p];
    off[t] = l2 ? -(coarse + bias[per_list ? t : 0]) : coarse - bias[0];
  }
  return nt;
}

template <class Top>
void IVFPQIndex::search_fast_scan(const float* qs, size_t nq, const int64_t* cl, size_t nprobe,
                                  int threads, const QueryFilters& filter, Top& result,
                                  const std::vector<const IVFPQIndex*>& parts) const {
  // Queries in blocks, a block per task: its (query, list) tables, then its probed lists
  // list-major, as faiss's IVF fast-scan, so codes loaded once serve up to 4 queries. A
  // query lives in one block, so only one worker pushes to its heap in `result`: no heaps per
  // worker (each would hold part of a query's lists, and report more codes) and no merge.
  // One thread: one block (up to 8 MiB of tables). More: about 4 blocks per thread, for
  // balance, of at least 16 queries (a single query stays on the calling thread). Smaller
  // blocks share fewer lists: blocks of 250 / 64 queries cost 2% / 6% more per query than
  // one of 1,000 (MiniLM, 1,024 lists, nprobe 8).
  const size_t m = pq_.m(), lb = fast_scan::block_bytes(m);
  const bool per_list = tables_per_list();
  const size_t qstride = (per_list ? nprobe : 1) * lb;  // table bytes per query
  const size_t nw = std::max(1, threads);
  size_t block = std::max<size_t>(1, std::min(nq, (size_t(8) << 20) / qstride));
  if (nw > 1) block = std::min(block, std::max<size_t>(16, (nq + 4 * nw - 1) / (4 * nw)));
  const size_t nblocks = (nq + block - 1) / block;
  // A selective filter shared by every query becomes a mask per block of each scanned list:
  // blocks with no allowed code are skipped and the others report allowed codes only. (A
  // broad one is cheaper to test on the few codes that pass the heap's threshold.)
  const IdFilter* shared =
      filter.shared() && filter.of(0)->max_allowed() <= ntotal_ / 4 ? filter.of(0) : nullptr;
  struct Scratch {
    std::vector<uint8_t> luts;
    std::vector<float> off, scale;
    std::vector<int64_t> lists;
    std::vector<size_t> count, pairs, sorted, start;
    std::vector<uint32_t> mask;
    fast_scan::Scanner scanner;
  };
  std::vector<Scratch> scratch(std::min(nw, nblocks));
  const Kernels& kern = kernels(active_isa());
  parallel_for(nblocks, threads, [&](size_t b, size_t w) {
    Scratch& x = scratch[w];
    const size_t q0 = b * block, nc = std::min(block, nq - q0);
    x.luts.resize(nc * qstride);
    x.off.resize(nc * nprobe);
    x.scale.resize(nc);
    x.lists.resize(nc * nprobe);
    x.count.resize(nc);
    for (size_t c = 0; c < nc; ++c)
      x.count[c] = fast_scan_tables(qs + (q0 + c) * dim_, cl + (q0 + c) * nprobe, nprobe,
                                    &x.luts[c * qstride], &x.off[c * nprobe],
                                    &x.lists[c * nprobe], &x.scale[c], parts);
    const auto list_of = [&](size_t pair) { return size_t(x.lists[pair]); };
    // One list for the pairs (c * nprobe + slot) in pr[0, np): every part's codes of it.
    const auto scan_list = [&](size_t l, const size_t* pr, size_t np) {
      for (const IVFPQIndex* part : parts) {
        const size_t len = part->ids_[l].size();
        if (len == 0) continue;
        const int64_t* id = part->ids_[l].data();
        const uint32_t* allowed = nullptr;
        if (shared) {
          x.mask.resize((len + fast_scan::kBlock - 1) / fast_scan::kBlock);
          shared->block_masks(id, len, x.mask.data());
          allowed = x.mask.data();
        }
        for (size_t g = 0; g < np; g += 4) {
          const size_t ng = std::min<size_t>(4, np - g);
          size_t qi[4];
          const uint8_t* lut[4];
          for (size_t e = 0; e < ng; ++e) {
            qi[e] = pr[g + e] / nprobe;
            lut[e] = &x.luts[qi[e] * qstride + (per_list ? pr[g + e] % nprobe * lb : 0)];
          }
          x.scanner.scan(
              kern, part->codes_[l].data(), len, m, lut, ng,
              [&](size_t e) {
                return fast_scan::sum_limit(x.off[pr[g + e]], x.scale[qi[e]],
                                            result.threshold(q0 + qi[e]));
              },
              [&](size_t e, size_t r, uint16_t sum) {
                const IdFilter* f = allowed ? nullptr : filter.of(q0 + qi[e]);
                if (f && !f->allows(id[r])) return;
                result.push(q0 + qi[e], x.off[pr[g + e]] - float(sum) / x.scale[qi[e]], id[r]);
              },
              allowed);
        }
      }
    };
    // Two passes: each query's first list (its best, see search), then the others, so its
    // heap fills with good codes and its limit tightens early.
    for (size_t pass = 0; pass < 2; ++pass) {
      x.pairs.clear();
      for (size_t c = 0; c < nc; ++c) {
        const size_t one = std::min<size_t>(1, x.count[c]);
        for (size_t u = pass == 0 ? 0 : one; u < (pass == 0 ? one : x.count[c]); ++u)
          x.pairs.push_back(c * nprobe + u);
      }
      // The pairs grouped by list, in list order: sorted when few, else a counting sort.
      x.sorted.resize(x.pairs.size());
      if (x.pairs.size() * 8 < nlist_) {
        std::copy(x.pairs.begin(), x.pairs.end(), x.sorted.begin());
        std::sort(x.sorted.begin(), x.sorted.end(), [&](size_t a, size_t c) {
          return list_of(a) != list_of(c) ? list_of(a) < list_of(c) : a < c;
        });
      } else {
        x.start.assign(nlist_ + 1, 0);
        for (size_t pr : x.pairs) ++x.start[list_of(pr) + 1];
        for (size_t l = 0; l < nlist_; ++l) x.start[l + 1] += x.start[l];
        for (size_t pr : x.pairs) x.sorted[x.start[list_of(pr)]++] = pr;
      }
      for (size_t g0 = 0, g1; g0 < x.sorted.size(); g0 = g1) {
        const size_t l = list_of(x.sorted[g0]);
        for (g1 = g0 + 1; g1 < x.sorted.size() && list_of(x.sorted[g1]) == l;) ++g1;
        scan_list(l, &x.sorted[g0], g1 - g0);
      }
    }
  });
}

void IVFPQIndex::reconstruct(const int64_t* ids, size_t n, float* out) const {
  const ListIds::Where& map = locator_.where(ids_);
  for (size_t i = 0; i < n; ++i) {
    auto it = map.find(ids[i]);
    if (it == map.end())
      throw std::out_of_range("reconstruct: id " + std::to_string(ids[i]) + " is not in the index");
    decode_entry(it->second.first, it->second.second, out + i * dim_);
  }
}

std::vector<uint64_t> IVFPQIndex::list_sizes() const {
  std::vector<uint64_t> s(nlist_);
  for (size_t l = 0; l < nlist_; ++l) s[l] = ids_[l].size();
  return s;
}

std::vector<uint8_t> IVFPQIndex::all_codes() const {
  std::vector<uint8_t> out;
  for (size_t l = 0; l < nlist_; ++l) {
    if (!fast_scan_) {
      out.insert(out.end(), codes_[l].begin(), codes_[l].end());
      continue;
    }
    const size_t at = out.size(), len = ids_[l].size();
    out.resize(at + len * pq_.code_size());
    fast_scan::unpack(codes_[l].data(), pq_.m(), 0, len, out.data() + at);
  }
  return out;
}

size_t IVFPQIndex::mapped_bytes() const {
  size_t s = 0;
  for (size_t l = 0; l < nlist_; ++l) s += codes_[l].viewed_bytes() + ids_[l].viewed_bytes();
  return s;
}

std::vector<uint8_t> IVFPQIndex::stored_codes() const {
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
                         const uint8_t* codes, size_t ncodes, const int64_t* ids, size_t nids,
                         bool stored, bool borrow) {
  const auto bad = [](const char* what) {
    throw std::invalid_argument(std::string("corrupt index data: ") + what);
  };
  if (!(centroids.empty() || centroids.size() == nlist_ * dim_)) bad("centroids");
  if (sizes.size() != nlist_) bad("list sizes");
  const size_t m = pq_.m(), cs = pq_.code_size();
  // Each list's bytes in the given layout; sums are checked against the real array sizes
  // before anything is read, so crafted sizes cannot overflow.
  const auto list_bytes = [&](uint64_t len) {
    return stored && fast_scan_ ? fast_scan::bytes_for(len, m) : len * cs;
  };
  uint64_t total = 0, bytes = 0;
  for (uint64_t s : sizes) {
    if (s > nids - total) bad("list sizes exceed the ids");
    total += s;
    if (list_bytes(s) > ncodes - bytes) bad("list sizes exceed the codes");
    bytes += list_bytes(s);
  }
  if (total != nids || bytes != ncodes) bad("codes or ids");
  if (total % copies()) bad("list sizes (each vector is in two lists)");
  if (total > 0 && (centroids.empty() || !pq_.is_trained())) bad("no quantizer");
  // Plain 4-bit codes of odd m leave a nibble that a scan would read as a sub-quantizer.
  const bool check_codes = pq_.nbits() == 4 && m % 2 && !(stored && fast_scan_);
  if (!borrow || check_codes) {
    for (size_t i = 0; i < nids; ++i)
      if (ids[i] < 0) bad("negative id");
    for (size_t i = 0; check_codes && i < total; ++i)
      if (codes[(i + 1) * cs - 1] >> 4) bad("code out of range");
  }
  coarse_.reset();
  if (!centroids.empty())
    coarse_ = std::make_unique<CoarseQuantizer>(centroids.data(), nlist_, dim_,
                                                metric_ == Metric::l2 ? Metric::l2 : Metric::ip);
  size_t at = 0, off = 0;
  for (size_t l = 0; l < nlist_; ++l) {
    const size_t len = sizes[l], nb = list_bytes(len);
    if (borrow && (stored || !fast_scan_)) {
      codes_[l] = Buffer<uint8_t>::view(codes + off, nb);
      ids_[l] = Buffer<int64_t>::view(ids + at, len);
    } else {
      std::vector<uint8_t> c;
      if (fast_scan_ && !stored) {
        c.assign(fast_scan::bytes_for(len, m), 0);
        fast_scan::pack(codes + off, len, m, 0, c.data());
      } else {
        c.assign(codes + off, codes + off + nb);
      }
      codes_[l] = std::move(c);
      ids_[l] = std::vector<int64_t>(ids + at, ids + at + len);
    }
    at += len;
    off += nb;
  }
  ntotal_ = total / copies();
  precompute();
  locator_.forget();
}

}  // namespace quanta
