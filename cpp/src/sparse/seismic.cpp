#include "quanta/seismic.hpp"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <numeric>
#include <string>

#include "quanta/error.hpp"
#include "quanta/parallel.hpp"
#include "quanta/random.hpp"
#include "quanta/storage.hpp"
#include "quanta/topk.hpp"

namespace quanta {

namespace {

constexpr size_t kListsPerTask = 64;
constexpr size_t kDocsPerTask = 4096;

// Rows of a CSR batch: sorted, in range, finite, non-negative.
void validate_csr(const int64_t* ptr, const int32_t* idx, const float* val, size_t n, size_t dim,
                  const char* what) {
  const std::string w(what);
  require(ptr[0] == 0, w + ": indptr must start at 0");
  for (size_t i = 0; i < n; ++i) {
    require(ptr[i + 1] >= ptr[i], w + ": indptr decreases at row " + std::to_string(i));
    for (int64_t e = ptr[i]; e < ptr[i + 1]; ++e) {
      require(idx[e] >= 0 && size_t(idx[e]) < dim,
              w + ": row " + std::to_string(i) + " has term id " + std::to_string(idx[e]) +
                  " outside [0, " + std::to_string(dim) + ")");
      require(e == ptr[i] || idx[e] > idx[e - 1],
              w + ": row " + std::to_string(i) + " has unsorted or repeated term ids");
      require(std::isfinite(val[e]) && val[e] >= 0.0f,
              w + ": row " + std::to_string(i) + " has a negative or non-finite value");
    }
  }
}

// (weight, id) pairs heaviest first, lower id first on ties: a total order, so every sort and
// selection below is deterministic.
struct Heavier {
  template <class Id>
  bool operator()(const std::pair<float, Id>& a, const std::pair<float, Id>& b) const {
    return a.first > b.first || (a.first == b.first && a.second < b.second);
  }
};
constexpr Heavier heavier{};

// f16 -> f32 for the scoring loops: normal numbers by a shift and a bias (the forward values
// are non-negative and rarely subnormal), the rest by the exact codec.
inline float half(uint16_t h) {
  const uint32_t e = h & 0x7c00u;
  if (e == 0 || e == 0x7c00u) return f16_to_f32(h);
  const uint32_t u = (uint32_t(h & 0x8000u) << 16) | ((uint32_t(h & 0x7fffu) << 13) + 0x38000000u);
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

// Scratch of one search thread: the query as a dense array, and visited marks by epoch.
struct Scratch {
  std::vector<float> q;
  std::vector<uint32_t> seen;
  uint32_t epoch = 0;
};

}  // namespace

SparseIndex::SparseIndex(size_t dim, const SparseParams& params) : dim_(dim), p_(params) {
  require(dim > 0 && dim <= (size_t(1) << 31), "dim must be in [1, 2^31]");
  require(p_.n_postings > 0, "n_postings must be positive");
  require(p_.centroid_fraction > 0.0f && p_.centroid_fraction <= 1.0f,
          "centroid_fraction must be in (0, 1]");
  require(p_.summary_energy > 0.0f && p_.summary_energy <= 1.0f,
          "summary_energy must be in (0, 1]");
  require(p_.max_fraction > 0.0f, "max_fraction must be positive");
  require(p_.doc_cut > 0, "doc_cut must be positive");
  list_ptr_.assign(dim_ + 1, 0);
}

size_t SparseIndex::memory_usage() const {
  return doc_ptr_.size() * 8 + comp16_.size() * 2 + comp32_.size() * 4 + val16_.size() * 2 +
         val8_.size() + doc_scale_.size() * 4 + list_ptr_.size() * 8 + block_ptr_.size() * 8 +
         postings_.size() * 4 + sum_ptr_.size() * 8 + sum_comp_.size() * 4 + sum_code_.size() +
         block_min_.size() * 8;
}

float SparseIndex::doc_dot(size_t doc, const float* q) const {
  const int64_t b = doc_ptr_[doc], e = doc_ptr_[doc + 1];
  float s = 0.0f;
  if (p_.u8_values) {
    if (!comp16_.empty())
      for (int64_t i = b; i < e; ++i) s += q[comp16_[i]] * float(val8_[i]);
    else
      for (int64_t i = b; i < e; ++i) s += q[comp32_[i]] * float(val8_[i]);
    return s * doc_scale_[doc];
  }
  if (!comp16_.empty())
    for (int64_t i = b; i < e; ++i) s += q[comp16_[i]] * half(val16_[i]);
  else
    for (int64_t i = b; i < e; ++i) s += q[comp32_[i]] * half(val16_[i]);
  return s;
}

void SparseIndex::build(const int64_t* indptr, const int32_t* indices, const float* values,
                        size_t n, int threads) {
  validate_csr(indptr, indices, values, n, dim_, "documents");
  require(n < (size_t(1) << 32), "at most 2^32 - 1 documents");
  const size_t nnz = size_t(indptr[n]);
  doc_ptr_.assign(indptr, indptr + n + 1);
  comp16_.clear();
  comp32_.clear();
  val16_.clear();
  val8_.clear();
  doc_scale_.clear();
  if (dim_ <= 65536)
    comp16_.assign(indices, indices + nnz);
  else
    comp32_.assign(indices, indices + nnz);
  if (p_.u8_values) {
    val8_.resize(nnz);
    doc_scale_.resize(n);
    for (size_t d = 0; d < n; ++d) {
      float m = 0.0f;
      for (int64_t e = indptr[d]; e < indptr[d + 1]; ++e) m = std::max(m, values[e]);
      doc_scale_[d] = m > 0.0f ? m / 255.0f : 1.0f;
      for (int64_t e = indptr[d]; e < indptr[d + 1]; ++e)
        val8_[e] = uint8_t(std::lrint(values[e] / doc_scale_[d]));
    }
  } else {
    val16_.resize(nnz);
    for (size_t e = 0; e < nnz; ++e) val16_[e] = f32_to_f16(values[e]);
  }
  prune_and_block(threads);
}

void SparseIndex::prune_and_block(int threads) {
  const size_t n = ndocs(), nnz = this->nnz();
  auto comp = [&](size_t e) { return comp16_.empty() ? size_t(comp32_[e]) : size_t(comp16_[e]); };
  // The stored values, decoded once for the whole build.
  std::vector<float> val(nnz);
  for (size_t d = 0; d < n; ++d)
    for (int64_t e = doc_ptr_[d]; e < doc_ptr_[d + 1]; ++e)
      val[e] = p_.u8_values ? float(val8_[e]) * doc_scale_[d] : f16_to_f32(val16_[e]);
  // Global threshold: the budget T = n_postings * dim largest values of the collection.
  const size_t budget = std::min(nnz, p_.n_postings * dim_);
  float tau = 0.0f;
  if (budget > 0 && budget < nnz) {
    std::vector<float> all(val);
    std::nth_element(all.begin(), all.begin() + (budget - 1), all.end(), std::greater<float>());
    tau = all[budget - 1];
  }
  // Candidate entries by term (value >= tau), then each list's cap in decreasing value.
  std::vector<int64_t> cand_ptr(dim_ + 1, 0);
  for (size_t e = 0; e < nnz; ++e)
    if (val[e] >= tau) ++cand_ptr[comp(e) + 1];
  std::partial_sum(cand_ptr.begin(), cand_ptr.end(), cand_ptr.begin());
  std::vector<std::pair<float, uint32_t>> cand(size_t(cand_ptr[dim_]));
  {
    std::vector<int64_t> fill(cand_ptr.begin(), cand_ptr.end() - 1);
    for (size_t d = 0; d < n; ++d)
      for (int64_t e = doc_ptr_[d]; e < doc_ptr_[d + 1]; ++e)
        if (val[e] >= tau) cand[fill[comp(size_t(e))]++] = {val[e], uint32_t(d)};
  }
  const size_t cap = std::max<size_t>(1, size_t(float(p_.n_postings) * p_.max_fraction));

  // Each document's doc_cut largest entries (what k-means compares), once for all its lists.
  const size_t cut = p_.doc_cut;
  std::vector<int64_t> top_ptr(n + 1, 0);
  for (size_t d = 0; d < n; ++d)
    top_ptr[d + 1] =
        top_ptr[d] + std::min<int64_t>(int64_t(cut), doc_ptr_[d + 1] - doc_ptr_[d]);
  std::vector<std::pair<float, uint32_t>> top_all(static_cast<size_t>(top_ptr[n]));
  const size_t doc_tasks = (n + kDocsPerTask - 1) / kDocsPerTask;
  parallel_for(doc_tasks, resolve_threads(threads), [&](size_t task, size_t) {
    std::vector<std::pair<float, uint32_t>> buf;
    for (size_t d = task * kDocsPerTask; d < std::min(n, (task + 1) * kDocsPerTask); ++d) {
      buf.clear();
      for (int64_t e = doc_ptr_[d]; e < doc_ptr_[d + 1]; ++e)
        buf.emplace_back(val[e], uint32_t(comp(size_t(e))));
      const size_t c = size_t(top_ptr[d + 1] - top_ptr[d]);
      std::partial_sort(buf.begin(), buf.begin() + c, buf.end(), heavier);
      std::copy(buf.begin(), buf.begin() + c, top_all.begin() + top_ptr[d]);
    }
  });

  // Per list (in parallel): cap, cluster into blocks, summarize. Results per list, then
  // concatenated in term order.
  struct ListOut {
    std::vector<uint32_t> postings;
    std::vector<int64_t> block_len, sum_len;
    std::vector<uint32_t> sum_comp;
    std::vector<uint8_t> sum_code;
    std::vector<float> bmin, bstep;
  };
  std::vector<ListOut> lists(dim_);
  const size_t ntasks = (dim_ + kListsPerTask - 1) / kListsPerTask;
  const int nworkers = int(std::max<size_t>(1, std::min<size_t>(ntasks, resolve_threads(threads))));
  std::vector<std::vector<float>> dense(size_t(nworkers), std::vector<float>(dim_, 0.0f));
  parallel_for(ntasks, nworkers, [&](size_t task, size_t w) {
    std::vector<float>& acc = dense[w];
    const size_t t_end = std::min(dim_, (task + 1) * kListsPerTask);
    for (size_t t = task * kListsPerTask; t < t_end; ++t) {
      auto* first = cand.data() + cand_ptr[t];
      size_t len = size_t(cand_ptr[t + 1] - cand_ptr[t]);
      if (len == 0) continue;
      std::sort(first, first + len, heavier);
      len = std::min(len, cap);
      std::vector<uint32_t> docs(len);
      for (size_t i = 0; i < len; ++i) docs[i] = first[i].second;

      // Centroids: sampled documents of the list (seeded per list: any thread count builds
      // the same index).
      const size_t nc = std::max<size_t>(1, size_t(p_.centroid_fraction * float(len)));
      std::vector<uint32_t> order(len);
      std::iota(order.begin(), order.end(), 0u);
      Rng rng(p_.seed * 0x100000001B3ull + t);
      for (size_t i = 0; i < nc; ++i) std::swap(order[i], order[i + rng.below(len - i)]);
      std::vector<uint32_t> centroid(order.begin(), order.begin() + nc);
      // A mini inverted index over the centroids: (term, centroid, value) sorted by term.
      std::vector<std::tuple<uint32_t, uint32_t, float>> mini;
      for (size_t c = 0; c < nc; ++c) {
        const size_t doc = docs[centroid[c]];
        for (int64_t e = doc_ptr_[doc]; e < doc_ptr_[doc + 1]; ++e)
          mini.emplace_back(uint32_t(comp(size_t(e))), uint32_t(c), val[e]);
      }
      std::sort(mini.begin(), mini.end());
      std::vector<float> score(nc);
      std::vector<char> alive(nc, 1);
      auto best_centroid = [&](size_t doc) {  // on the doc's doc_cut largest entries
        const std::pair<float, uint32_t>* top = top_all.data() + top_ptr[doc];
        const size_t ntop = size_t(top_ptr[doc + 1] - top_ptr[doc]);
        std::fill(score.begin(), score.end(), 0.0f);
        for (size_t i = 0; i < ntop; ++i) {
          auto it = std::lower_bound(mini.begin(), mini.end(),
                                     std::make_tuple(top[i].second, 0u, -1.0f));
          for (; it != mini.end() && std::get<0>(*it) == top[i].second; ++it)
            score[std::get<1>(*it)] += top[i].first * std::get<2>(*it);
        }
        size_t best = nc;
        for (size_t c = 0; c < nc; ++c)
          if (alive[c] && (best == nc || score[c] > score[best])) best = c;
        return best;
      };
      std::vector<uint32_t> assign(len);
      std::vector<size_t> size(nc, 0);
      for (size_t i = 0; i < len; ++i) ++size[assign[i] = uint32_t(best_centroid(docs[i]))];
      // Clusters of at most min_cluster_size documents dissolve into the surviving ones.
      size_t survivors = 0;
      for (size_t c = 0; c < nc; ++c) survivors += size[c] > p_.min_cluster_size;
      if (survivors > 0 && survivors < nc) {
        for (size_t c = 0; c < nc; ++c) alive[c] = size[c] > p_.min_cluster_size;
        for (size_t i = 0; i < len; ++i)
          if (!alive[assign[i]]) assign[i] = uint32_t(best_centroid(docs[i]));
      }
      // Blocks ordered by their centroid's document id, documents in list order.
      std::vector<uint32_t> cl(nc);
      std::iota(cl.begin(), cl.end(), 0u);
      std::sort(cl.begin(), cl.end(), [&](uint32_t a, uint32_t b) {
        return docs[centroid[a]] < docs[centroid[b]];
      });
      std::vector<std::vector<uint32_t>> members(nc);
      for (size_t i = 0; i < len; ++i) members[assign[i]].push_back(docs[i]);
      ListOut& out = lists[t];
      std::vector<uint32_t> touched;
      std::vector<std::pair<float, uint32_t>> entries;
      for (uint32_t c : cl) {
        if (members[c].empty()) continue;
        out.postings.insert(out.postings.end(), members[c].begin(), members[c].end());
        out.block_len.push_back(int64_t(members[c].size()));
        // Summary: coordinate-wise max, cut to summary_energy of its L1 mass, 8 bits.
        touched.clear();
        for (uint32_t doc : members[c])
          for (int64_t e = doc_ptr_[doc]; e < doc_ptr_[doc + 1]; ++e) {
            const size_t k = comp(size_t(e));
            if (acc[k] == 0.0f) touched.push_back(uint32_t(k));
            acc[k] = std::max(acc[k], std::max(val[e], 1e-30f));
          }
        entries.clear();
        double mass = 0.0;
        for (uint32_t k : touched) {
          entries.emplace_back(acc[k], k);
          mass += acc[k];
          acc[k] = 0.0f;
        }
        std::sort(entries.begin(), entries.end(), heavier);
        size_t keep = 0;
        double run = 0.0;
        while (keep < entries.size() && run < p_.summary_energy * mass) run += entries[keep++].first;
        entries.resize(std::max<size_t>(keep, 1));
        std::sort(entries.begin(), entries.end(),
                  [](const auto& a, const auto& b) { return a.second < b.second; });
        float lo = entries[0].first, hi = entries[0].first;
        for (const auto& en : entries) {
          lo = std::min(lo, en.first);
          hi = std::max(hi, en.first);
        }
        const float step = (hi - lo) / 255.0f;
        for (const auto& en : entries) {
          out.sum_comp.push_back(en.second);
          // round up: the summary stays an upper bound of the block's maxima (up to f16)
          out.sum_code.push_back(step > 0.0f ? uint8_t(std::min(255.0f, std::ceil((en.first - lo) / step)))
                                             : uint8_t(0));
        }
        out.sum_len.push_back(int64_t(entries.size()));
        out.bmin.push_back(lo);
        out.bstep.push_back(step);
      }
    }
  });
  list_ptr_.assign(dim_ + 1, 0);
  block_ptr_.assign(1, 0);
  sum_ptr_.assign(1, 0);
  postings_.clear();
  sum_comp_.clear();
  sum_code_.clear();
  block_min_.clear();
  block_step_.clear();
  for (size_t t = 0; t < dim_; ++t) {
    ListOut& l = lists[t];
    postings_.insert(postings_.end(), l.postings.begin(), l.postings.end());
    sum_comp_.insert(sum_comp_.end(), l.sum_comp.begin(), l.sum_comp.end());
    sum_code_.insert(sum_code_.end(), l.sum_code.begin(), l.sum_code.end());
    block_min_.insert(block_min_.end(), l.bmin.begin(), l.bmin.end());
    block_step_.insert(block_step_.end(), l.bstep.begin(), l.bstep.end());
    for (size_t b = 0; b < l.block_len.size(); ++b) {
      block_ptr_.push_back(block_ptr_.back() + l.block_len[b]);
      sum_ptr_.push_back(sum_ptr_.back() + l.sum_len[b]);
    }
    list_ptr_[t + 1] = int64_t(block_min_.size());
    l = ListOut();
  }
}

SparseIndex::State SparseIndex::state() const {
  State s;
  s.doc_ptr = doc_ptr_;
  s.comp = comp16_.empty() ? comp32_ : std::vector<uint32_t>(comp16_.begin(), comp16_.end());
  s.val16 = val16_;
  s.val8 = val8_;
  s.doc_scale = doc_scale_;
  s.list_ptr = list_ptr_;
  s.block_ptr = block_ptr_;
  s.sum_ptr = sum_ptr_;
  s.postings = postings_;
  s.sum_comp = sum_comp_;
  s.sum_code = sum_code_;
  s.block_min = block_min_;
  s.block_step = block_step_;
  return s;
}

void SparseIndex::restore(State s) {
  auto offsets_ok = [](const std::vector<int64_t>& p, size_t total) {
    if (p.empty() || p[0] != 0 || size_t(p.back()) != total) return false;
    for (size_t i = 1; i < p.size(); ++i)
      if (p[i] < p[i - 1]) return false;
    return true;
  };
  const size_t n = s.doc_ptr.empty() ? 0 : s.doc_ptr.size() - 1, nnz = s.comp.size();
  const size_t nb = s.block_min.size();
  require(offsets_ok(s.doc_ptr, nnz), "restore: bad document offsets");
  require(p_.u8_values ? s.val8.size() == nnz && s.doc_scale.size() == n && s.val16.empty()
                       : s.val16.size() == nnz && s.val8.empty(),
          "restore: values do not match the offsets");
  require(s.list_ptr.size() == dim_ + 1 && offsets_ok(s.list_ptr, nb),
          "restore: bad list offsets");
  require(s.block_ptr.size() == nb + 1 && offsets_ok(s.block_ptr, s.postings.size()) &&
              s.sum_ptr.size() == nb + 1 && offsets_ok(s.sum_ptr, s.sum_comp.size()) &&
              s.sum_code.size() == s.sum_comp.size() && s.block_step.size() == nb,
          "restore: bad blocks");
  for (uint32_t c : s.comp) require(c < dim_, "restore: term id out of range");
  for (uint32_t c : s.sum_comp) require(c < dim_, "restore: summary term out of range");
  for (uint32_t d : s.postings) require(d < n, "restore: posting out of range");
  doc_ptr_ = std::move(s.doc_ptr);
  comp16_.clear();
  comp32_.clear();
  if (dim_ <= 65536)
    comp16_.assign(s.comp.begin(), s.comp.end());
  else
    comp32_ = std::move(s.comp);
  val16_ = std::move(s.val16);
  val8_ = std::move(s.val8);
  doc_scale_ = std::move(s.doc_scale);
  list_ptr_ = std::move(s.list_ptr);
  block_ptr_ = std::move(s.block_ptr);
  sum_ptr_ = std::move(s.sum_ptr);
  postings_ = std::move(s.postings);
  sum_comp_ = std::move(s.sum_comp);
  sum_code_ = std::move(s.sum_code);
  block_min_ = std::move(s.block_min);
  block_step_ = std::move(s.block_step);
}

void SparseIndex::search(const int64_t* qptr, const int32_t* qidx, const float* qval, size_t nq,
                         size_t k, size_t query_cut, float heap_factor, bool exact, int threads,
                         float* scores, int64_t* labels) const {
  require(k > 0, "k must be >= 1");
  require(query_cut > 0, "query_cut must be >= 1");
  require(std::isfinite(heap_factor) && heap_factor > 0.0f, "heap_factor must be positive");
  validate_csr(qptr, qidx, qval, nq, dim_, "queries");
  const size_t n = ndocs();
  const int nworkers = int(std::max<size_t>(1, std::min<size_t>(nq, resolve_threads(threads))));
  std::vector<Scratch> scratch(static_cast<size_t>(nworkers));
  parallel_for(nq, nworkers, [&](size_t i, size_t w) {
    Scratch& s = scratch[w];
    if (s.q.empty()) {
      s.q.assign(dim_, 0.0f);
      s.seen.assign(n, 0);
    }
    if (++s.epoch == 0) {  // wrapped: clear the marks
      std::fill(s.seen.begin(), s.seen.end(), 0u);
      s.epoch = 1;
    }
    for (int64_t e = qptr[i]; e < qptr[i + 1]; ++e) s.q[qidx[e]] = qval[e];
    TopKSet heap(1, k);
    auto visit = [&](uint32_t doc) {
      if (s.seen[doc] == s.epoch) return;
      s.seen[doc] = s.epoch;
      heap.push(0, doc_dot(doc, s.q.data()), int64_t(doc));
    };
    if (exact) {
      for (size_t d = 0; d < n; ++d) heap.push(0, doc_dot(d, s.q.data()), int64_t(d));
    } else {
      std::vector<std::pair<float, uint32_t>> terms;
      for (int64_t e = qptr[i]; e < qptr[i + 1]; ++e)
        if (qval[e] > 0.0f) terms.emplace_back(qval[e], uint32_t(qidx[e]));
      const size_t cut = std::min(terms.size(), query_cut);
      std::partial_sort(terms.begin(), terms.begin() + cut, terms.end(),
                        heavier);
      std::vector<std::pair<float, int64_t>> blocks;
      for (size_t ti = 0; ti < cut; ++ti) {
        const uint32_t t = terms[ti].second;
        blocks.clear();
        for (int64_t b = list_ptr_[t]; b < list_ptr_[t + 1]; ++b) {
          float sd = 0.0f;
          const float lo = block_min_[b], st = block_step_[b];
          for (int64_t e = sum_ptr_[b]; e < sum_ptr_[b + 1]; ++e)
            sd += s.q[sum_comp_[e]] * (lo + float(sum_code_[e]) * st);
          blocks.emplace_back(sd, b);
        }
        // The heaviest term's blocks in decreasing summary score: the threshold rises early.
        if (ti == 0)
          std::sort(blocks.begin(), blocks.end(), heavier);
        for (const auto& [sd, b] : blocks) {
          const float theta = heap.threshold(0);
          if (std::isfinite(theta) && sd < heap_factor * theta) continue;
          for (int64_t p = block_ptr_[b]; p < block_ptr_[b + 1]; ++p) visit(postings_[p]);
        }
      }
    }
    for (int64_t e = qptr[i]; e < qptr[i + 1]; ++e) s.q[qidx[e]] = 0.0f;
    heap.write_sorted(0, scores + i * k, labels + i * k, -std::numeric_limits<float>::infinity());
  });
}

}  // namespace quanta
