#include "quanta/index/seismic.hpp"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <numeric>
#include <string>
#include <utility>

#include "quanta/codec/bisection_order.hpp"
#include "quanta/codec/storage.hpp"
#include "quanta/core/error.hpp"
#include "quanta/core/parallel.hpp"
#include "quanta/core/random.hpp"
#include "quanta/core/topk.hpp"
#include "quanta/simd/dispatch.hpp"
#include "quanta/simd/kernels.hpp"

namespace quanta {

namespace {

constexpr size_t kListsPerTask = 64;
constexpr size_t kDocsPerTask = 4096;

// Rows of a CSR batch: sorted, in range, finite, non-negative (messages built only on failure).
void validate_csr(const int64_t* ptr, const int32_t* idx, const float* val, size_t n, size_t dim,
                  const char* what) {
  const std::string w(what);
  require(ptr[0] == 0, w + ": indptr must start at 0");
  for (size_t i = 0; i < n; ++i) {
    if (ptr[i + 1] < ptr[i]) require(false, w + ": indptr decreases at row " + std::to_string(i));
    for (int64_t e = ptr[i]; e < ptr[i + 1]; ++e) {
      if (idx[e] < 0 || size_t(idx[e]) >= dim)
        require(false, w + ": row " + std::to_string(i) + " has term id " +
                           std::to_string(idx[e]) + " outside [0, " + std::to_string(dim) + ")");
      if (e > ptr[i] && idx[e] <= idx[e - 1])
        require(false, w + ": row " + std::to_string(i) + " has unsorted or repeated term ids");
      if (!(std::isfinite(val[e]) && val[e] >= 0.0f))
        require(false, w + ": row " + std::to_string(i) + " has a negative or non-finite value");
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

// Moves the heaviest entries to the front and returns the smallest count whose mass reaches
// `need` (all of them if none does), as a full sort would: a 256-bin histogram finds the bin
// where the running mass crosses `need`; only that bin's entries are sorted.
size_t heaviest_prefix(std::vector<std::pair<float, uint32_t>>& e, double need) {
  if (e.size() <= 64) {
    std::sort(e.begin(), e.end(), heavier);
  } else {
    float hi = 0.0f;
    for (const auto& x : e) hi = std::max(hi, x.first);
    const float scale = 255.999f / hi;
    double mass[256] = {};
    for (const auto& x : e) mass[size_t(x.first * scale)] += x.first;
    size_t cross = 0;  // entries of bins above `cross` are kept whole
    double above = 0.0;
    for (size_t bin = 255; bin > 0; --bin) {
      if (above + mass[bin] >= need) {
        cross = bin;
        break;
      }
      above += mass[bin];
    }
    const auto mid = std::partition(e.begin(), e.end(),
                                    [&](const auto& x) { return size_t(x.first * scale) > cross; });
    const auto end = std::partition(mid, e.end(),
                                    [&](const auto& x) { return size_t(x.first * scale) == cross; });
    std::sort(mid, end, heavier);
    size_t keep = size_t(mid - e.begin());
    while (keep < e.size() && above < need) above += e[keep++].first;
    return keep;
  }
  size_t keep = 0;
  double run = 0.0;
  while (keep < e.size() && run < need) run += e[keep++].first;
  return keep;
}

// GCC 12 deletes loops of __builtin_prefetch here as dead code; the asm form stays.
inline void prefetch_line(const char* p) {
#if defined(__x86_64__) || defined(__i386__)
  asm volatile("prefetcht0 %0" : : "m"(*p));
#else
  __builtin_prefetch(p);
#endif
}

// The block list of one posting list as the build produces it, summaries transposed (the
// list's slices of the State arrays, soff ending with the entry count).
struct ListOut {
  std::vector<uint32_t> postings, block_len, sterm, soff;
  std::vector<float> step;
  std::vector<uint16_t> sblock;
  std::vector<uint8_t> scode;
  size_t bytes() const {
    return 4 * (postings.size() + block_len.size() + sterm.size() + soff.size() + step.size()) +
           2 * sblock.size() + scode.size();
  }
};

// An 8-bit summary code of v >= 0 for steps of `step` (the summary's largest / 255), rounded
// up: code * step stays an upper bound of v.
inline uint32_t code_up(float v, float step) {
  uint32_t code = std::min(255u, uint32_t(std::ceil(v / step)));
  if (code < 255 && float(code) * step < v) ++code;
  return code;
}

constexpr size_t kTrimBytes = size_t(64) << 20;
constexpr size_t kMaxBlocksPerList = 65535;  // block numbers within a list are u16
constexpr size_t kPrefetchAhead = 4;           // documents whose forward entries are prefetched
constexpr size_t kRowsAhead = 3;     // blocks layout: blocks whose forward rows are prefetched
constexpr size_t kOffsetsAhead = 5;  // blocks whose first document offset is prefetched
constexpr size_t kKnnQueryCut = 10;  // the lists layout's kNN-graph build searches
constexpr float kKnnHeapFactor = 0.9f;
constexpr size_t kKnnHead = 16;
constexpr size_t kBisectionIters = 20;  // swap rounds per cut (the BP paper's)

}  // namespace

// Scratch of one search thread: the query as a dense array, visited marks by epoch, and the
// summary scores of one list.
struct SparseScratch {
  std::vector<float> q, acc;
  std::vector<uint16_t> bound;  // the blocks layout's block scores
  std::vector<const uint8_t*> rows;  // and its query terms' dense rows, with their weights
  std::vector<uint16_t> row_w;
  std::vector<uint8_t> seen;  // one byte per document: small enough to stay in cache
  uint8_t epoch = 0;          // cleared every 255 queries
  std::vector<uint32_t> docs;
  std::vector<size_t> offs;
  std::vector<std::pair<float, uint32_t>> terms;
  std::vector<std::pair<float, int64_t>> blocks;  // (summary score, block) to visit
  std::vector<uint64_t> keys;                     // the blocks layout's blocks to visit
  std::vector<float> top_s;  // the results before graph refinement
  std::vector<int64_t> top_p;
  TopKSet heap{1, 0}, partial{1, 0}, refined{1, 0};  // reset by each query
  bool dirty = false;  // a query's terms may still be in q (it did not finish)
};

// The calling thread's scratch, kept between calls: a search of one query would otherwise
// allocate and clear a dense query of up to 256 KiB and a mark per document every call (a
// third of its time on 120k real SPLADE rows). Sized for the largest index it served; q is
// all zeros between queries and the marks are epochs, so any index can use it.
SparseScratch& thread_scratch() {
  thread_local SparseScratch s;
  return s;
}

// The query's entries of positive weight into s.terms, its query_cut heaviest first; returns
// how many of them lead (the cut).
static size_t cut_terms(const int64_t* qptr, const int32_t* qidx, const float* qval, size_t i,
                 size_t query_cut, SparseScratch& s) {
  s.terms.clear();
  for (int64_t e = qptr[i]; e < qptr[i + 1]; ++e)
    if (qval[e] > 0.0f) s.terms.emplace_back(qval[e], uint32_t(qidx[e]));
  const size_t cut = std::min(s.terms.size(), query_cut);
  std::partial_sort(s.terms.begin(), s.terms.begin() + cut, s.terms.end(), heavier);
  return cut;
}

SparseSearch SparseSearch::defaults(SparseLayout layout) {
  SparseSearch p;
  if (layout == SparseLayout::blocks) {  // bench/results/sparse_presets.md
    p.query_cut = 40;
    p.heap_factor = 1.0f;
  }
  return p;
}

SparseIndex::SparseIndex(size_t dim, const SparseParams& params) : dim_(dim), p_(params) {
  require(dim > 0 && dim <= (size_t(1) << 31), "dim must be in [1, 2^31]");
  require(p_.n_postings > 0, "n_postings must be positive");
  require(p_.centroid_fraction > 0.0f && p_.centroid_fraction <= 1.0f,
          "centroid_fraction must be in (0, 1]");
  require(p_.summary_energy > 0.0f && p_.summary_energy <= 1.0f,
          "summary_energy must be in (0, 1]");
  require(p_.max_fraction > 0.0f, "max_fraction must be positive");
  require(p_.doc_cut > 0, "doc_cut must be positive");
  require(p_.block_size > 0, "block_size must be positive");
  s_.list_ptr = std::vector<int64_t>(dim_ + 1, 0);
  s_.sdict_ptr = std::vector<int64_t>(dim_ + 1, 0);
  s_.sent_ptr = std::vector<int64_t>(dim_ + 1, 0);
  s_.soff = std::vector<uint32_t>(dim_, 0);
}

size_t SparseIndex::memory_usage() const {
  size_t bytes = delta_ ? delta_->memory_usage() : 0;
  State::each(s_, [&](const char*, const auto& buf) { bytes += buf.size() * sizeof(buf[0]); });
  return bytes;
}

size_t SparseIndex::ntotal() const {
  return ndocs() - labels_.removed() + (delta_ ? delta_->ntotal() : 0);
}

void SparseIndex::add(const SparseRows& docs, const int64_t* ids, int threads) {
  require(docs.n > 0, "documents: no rows");
  Labels::check(ids, docs.n);
  if (ndocs() == 0 && !delta_) {  // the first add builds the index
    build(docs, ids, threads);
    return;
  }
  validate_csr(docs.indptr, docs.indices, docs.values, docs.n, dim_, "documents");
  // The delta is rebuilt from its live documents and the new ones (it stays small).
  SparseDocs all = pending_docs();
  std::vector<int64_t> next;
  if (!ids) {  // positions continuing after every document stored
    const int64_t held = int64_t(ndocs() + pending());
    for (size_t i = 0; i < docs.n; ++i) next.push_back(held + int64_t(i));
    ids = next.data();
  }
  all.append(docs, ids);
  SparseParams exhaustive = p_;
  exhaustive.knn = 0;  // the delta is scored exhaustively: no graph
  auto delta = std::make_unique<SparseIndex>(dim_, exhaustive);
  delta->build(all.rows(), all.ids.data(), threads);
  delta_ = std::move(delta);
}

void SparseIndex::search(const SparseRows& q, const SearchParams& params, float* scores,
                         int64_t* labels) const {
  const SparseSearch p = params_as<SparseSearch>(params);
  search_main(q.indptr, q.indices, q.values, q.n, p, scores, labels);
  if (!delta_) return;
  SparseSearch every = p;
  every.exact = true;
  every.n_knn = 0;
  const size_t k = p.k;
  std::vector<float> ds(q.n * k);
  std::vector<int64_t> dl(q.n * k);
  delta_->search_main(q.indptr, q.indices, q.values, q.n, every, ds.data(), dl.data());
  // Each query's k best of the two lists (both best first; the main part first on ties).
  std::vector<float> ms(k);
  std::vector<int64_t> ml(k);
  for (size_t i = 0; i < q.n; ++i) {
    float* s = scores + i * k;
    int64_t* l = labels + i * k;
    size_t a = 0, b = 0;
    for (size_t r = 0; r < k; ++r) {
      const bool main = dl[i * k + b] < 0 || (l[a] >= 0 && s[a] >= ds[i * k + b]);
      ms[r] = main ? s[a] : ds[i * k + b];
      ml[r] = main ? l[a++] : dl[i * k + b++];
    }
    std::copy(ms.begin(), ms.end(), s);
    std::copy(ml.begin(), ml.end(), l);
  }
}

size_t SparseIndex::remove(const IdFilter& f) {
  return labels_.remove(f, ndocs()) + (delta_ ? delta_->remove(f) : 0);
}

bool SparseIndex::contains(int64_t id) const {
  return labels_.position_of(id, ndocs()) >= 0 || (delta_ && delta_->contains(id));
}

void SparseIndex::reset() {
  SparseIndex empty(dim_, p_);
  s_ = std::move(empty.s_);
  labels_.assign({});
  delta_.reset();
}

void SparseIndex::compact(int threads) {
  if (!delta_ && labels_.removed() == 0) return;
  SparseDocs all = live_docs();
  const SparseDocs more = pending_docs();
  all.append(more.rows(), more.ids.data());
  if (all.size() == 0) {
    reset();
    return;
  }
  SparseIndex fresh(dim_, p_);  // built aside: a failure leaves this index as it was
  fresh.build(all.rows(), all.ids.data(), threads);
  s_ = std::move(fresh.s_);
  labels_.assign(std::vector<int64_t>(fresh.ids()));
  delta_.reset();
}

SparseDocs SparseIndex::live_docs() const {
  SparseDocs out;
  const bool narrow = dim_ <= 65536;
  std::vector<std::pair<int32_t, float>> row;
  for (size_t d = 0; d < ndocs(); ++d) {
    if (!labels_.live(d)) continue;
    row.clear();
    for (int64_t e = s_.doc_ptr[d]; e < s_.doc_ptr[d + 1]; ++e)
      row.emplace_back(int32_t(narrow ? s_.comp16[e] : s_.comp32[e]),
                       p_.u8_values ? float(s_.val8[e]) * s_.doc_scale[d] : f16_to_f32(s_.val16[e]));
    std::sort(row.begin(), row.end());  // stored heaviest first; CSR wants term order
    for (const auto& [t, v] : row) out.indices.push_back(t), out.values.push_back(v);
    out.indptr.push_back(int64_t(out.indices.size()));
    out.ids.push_back(labels_.at(int64_t(d)));
  }
  return out;
}

template <class Comp>
float SparseIndex::entries_dot(const Comp* comp, size_t doc, size_t b, size_t e, const float* q,
                               const Kernels& kr) const {
  if constexpr (sizeof(Comp) == 2) {  // u16 ids index a 65,536-entry query: never out of range
    if (p_.u8_values)
      return kr.sparse_dot_u8(comp + b, s_.val8.data() + b, e - b, q) * s_.doc_scale[doc];
    return kr.sparse_dot_f16(comp + b, s_.val16.data() + b, e - b, q);
  } else {  // wider ids are clamped to the query's spare last slot (a corrupt mapped file)
    float s = 0.0f;
    for (size_t i = b; i < e; ++i)
      s += q[std::min<size_t>(comp[i], dim_)] *
           (p_.u8_values ? float(s_.val8[i]) : f16_to_f32(s_.val16[i]));
    return p_.u8_values ? s * s_.doc_scale[doc] : s;
  }
}

// Pulls a document's forward entries (from `offset`, about `bytes` of term ids and as many
// values per id width) towards the cache while earlier ones are scored.
template <class Comp>
void SparseIndex::prefetch_doc(const Comp* comp, size_t offset, size_t bytes) const {
  const char* c = reinterpret_cast<const char*>(comp + offset);
  const char* v = p_.u8_values ? reinterpret_cast<const char*>(s_.val8.data() + offset)
                               : reinterpret_cast<const char*>(s_.val16.data() + offset);
  const size_t vb = bytes / sizeof(Comp) * (p_.u8_values ? 1 : 2);
  for (size_t o = 0; o < bytes; o += 64) prefetch_line(c + o);
  for (size_t o = 0; o < vb; o += 64) prefetch_line(v + o);
}

// The line holding a document's first and last entry offsets (a scattered document's first
// miss).
void SparseIndex::prefetch_offsets(size_t doc) const {
  prefetch_line(reinterpret_cast<const char*>(s_.doc_ptr.data() + doc));
}

// The same for a whole document (its offsets already loaded or on their way), up to 512
// bytes of ids.
template <class Comp>
void SparseIndex::prefetch_row(const Comp* comp, size_t doc) const {
  const size_t e0 = size_t(s_.doc_ptr[doc]), e1 = size_t(s_.doc_ptr[doc + 1]);
  prefetch_doc(comp, e0, std::min<size_t>(512, (e1 - e0) * sizeof(Comp)));
}

void SparseIndex::build(const SparseRows& given, const int64_t* given_ids, int threads) {
  validate_csr(given.indptr, given.indices, given.values, given.n, dim_, "documents");
  require(given.n < (size_t(1) << 32), "at most 2^32 - 1 documents");
  // The blocks layout stores the documents in bisection order: block b is positions
  // b * block_size .., and the ids follow the documents.
  SparseDocs sorted;
  std::vector<int64_t> ids;
  if (given_ids) ids.assign(given_ids, given_ids + given.n);
  if (p_.layout == SparseLayout::blocks) {
    require(blocks_for(given.n) < (size_t(1) << 24),
            "the blocks layout holds at most 2^24 blocks: raise block_size");
    const std::vector<uint32_t> order = bisection_order(
        given.indptr, given.indices, given.n, dim_, p_.block_size, kBisectionIters, threads);
    for (uint32_t d : order) {
      const int64_t id = given_ids ? given_ids[d] : int64_t(d);
      sorted.append({given.indptr + d, given.indices, given.values, 1}, &id);
    }
    ids = std::move(sorted.ids);
  }
  const SparseRows docs = p_.layout == SparseLayout::blocks ? sorted.rows() : given;
  const int64_t* indptr = docs.indptr;
  const int32_t* indices = docs.indices;
  const float* values = docs.values;
  const size_t n = docs.n;
  const size_t nnz = size_t(indptr[n]);
  // Each row heaviest first (lower id on ties): a document's largest entries are a prefix,
  // for k-means, the summaries and head-first scoring.
  std::vector<uint32_t> order(nnz);
  parallel_for((n + kDocsPerTask - 1) / kDocsPerTask, resolve_threads(threads),
               [&](size_t task, size_t) {
                 for (size_t d = task * kDocsPerTask; d < std::min(n, (task + 1) * kDocsPerTask);
                      ++d) {
                   uint32_t* o = order.data() + indptr[d];
                   const float* v = values + indptr[d];
                   const size_t len = size_t(indptr[d + 1] - indptr[d]);
                   std::iota(o, o + len, uint32_t(0));
                   std::sort(o, o + len, [v](uint32_t a, uint32_t b) {
                     return v[a] > v[b] || (v[a] == v[b] && a < b);
                   });
                 }
               });
  // src's entries in that order, as T.
  auto reordered = [&](const auto* src, auto tag) {
    using T = decltype(tag);
    std::vector<T> out(nnz);
    for (size_t d = 0; d < n; ++d)
      for (int64_t e = indptr[d]; e < indptr[d + 1]; ++e)
        out[size_t(e)] = T(src[indptr[d] + order[size_t(e)]]);
    return out;
  };
  std::vector<float> vals = reordered(values, 0.0f);
  State st;
  st.doc_ptr = std::vector<int64_t>(indptr, indptr + n + 1);
  if (dim_ <= 65536)
    st.comp16 = reordered(indices, uint16_t(0));
  else
    st.comp32 = reordered(indices, uint32_t(0));
  order = std::vector<uint32_t>();
  // The values as stored (decoded in place): what the blocks and summaries are built from.
  if (p_.u8_values) {
    std::vector<uint8_t> v8(nnz);
    std::vector<float> scale(n);
    for (size_t d = 0; d < n; ++d) {
      const float top = indptr[d] < indptr[d + 1] ? vals[size_t(indptr[d])] : 0.0f;  // row max
      scale[d] = top > 0.0f ? top / 255.0f : 1.0f;
      for (int64_t e = indptr[d]; e < indptr[d + 1]; ++e) {
        v8[e] = uint8_t(std::lrint(vals[e] / scale[d]));
        vals[e] = float(v8[e]) * scale[d];
      }
    }
    st.val8 = std::move(v8);
    st.doc_scale = std::move(scale);
  } else {
    std::vector<uint16_t> v16(nnz);
    for (size_t e = 0; e < nnz; ++e) vals[e] = f16_to_f32(v16[e] = f32_to_f16(vals[e]));
    st.val16 = std::move(v16);
  }
  std::swap(s_, st);
  try {
    if (p_.layout == SparseLayout::blocks)
      block_maxima(vals.data());
    else
      prune_and_block(vals.data(), threads);
    labels_.assign({});  // positions while the kNN graph searches
    s_.knn = Buffer<uint32_t>();
    if (p_.knn > 0) build_knn(indptr, indices, values, n, threads);
    set_ids(std::move(ids));
  } catch (...) {
    std::swap(s_, st);  // nothing stored is lost on a failed build
    throw;
  }
}

void SparseIndex::block_maxima(const float* val) {
  const size_t n = ndocs(), bs = p_.block_size, nb = blocks_for(n);
  const bool narrow = dim_ <= 65536;
  // Every block's maximum per term (blocks ascending), then each term's scale and layout.
  struct Max {
    uint32_t term, block;
    float v;
  };
  std::vector<Max> all;
  std::vector<std::pair<uint32_t, float>> block;
  std::vector<float> top(dim_, 0.0f);
  std::vector<size_t> count(dim_, 0);
  for (size_t b = 0; b < nb; ++b) {
    block.clear();
    for (int64_t e = s_.doc_ptr[b * bs]; e < s_.doc_ptr[std::min(n, (b + 1) * bs)]; ++e)
      block.emplace_back(narrow ? s_.comp16[e] : s_.comp32[e], val[e]);
    std::sort(block.begin(), block.end());  // by term, then value: a term's largest is last
    for (size_t i = 0; i < block.size(); ++i)
      if ((i + 1 == block.size() || block[i + 1].first != block[i].first) &&
          block[i].second > 0.0f) {
        const uint32_t t = block[i].first;
        all.push_back({t, uint32_t(b), block[i].second});
        top[t] = std::max(top[t], block[i].second);
        ++count[t];
      }
  }
  std::vector<float> scale(dim_);
  std::vector<int64_t> ptr(dim_ + 1, 0);
  std::vector<uint32_t> dense_terms;
  std::vector<int64_t> row(dim_, -1);  // a dense term's row
  for (size_t t = 0; t < dim_; ++t) {
    scale[t] = top[t] > 0.0f ? top[t] / 255.0f : 1.0f;
    if (count[t] * kDenseShare >= nb && count[t] > 0) {
      row[t] = int64_t(dense_terms.size());
      dense_terms.push_back(uint32_t(t));
    }
    ptr[t + 1] = ptr[t] + (row[t] < 0 ? int64_t(count[t]) : 0);
  }
  LargeVector<uint32_t> entry(size_t(ptr[dim_]));
  LargeVector<uint8_t> dense(dense_terms.size() * nb, 0);
  std::vector<int64_t> fill(ptr.begin(), ptr.end() - 1);
  for (const Max& m : all) {
    const uint32_t code = code_up(m.v, scale[m.term]);
    if (row[m.term] >= 0)
      dense[size_t(row[m.term]) * nb + m.block] = uint8_t(code);
    else
      entry[size_t(fill[m.term]++)] = m.block << 8 | code;
  }
  s_.bm_ptr = std::move(ptr);
  s_.bm_entry = std::move(entry);
  s_.bm_scale = std::move(scale);
  s_.bm_dense_terms = std::move(dense_terms);
  s_.bm_dense = std::move(dense);
}

// The graph: each document searched as a query on the finished index (query_cut and
// heap_factor fixed), its best results other than itself kept.
void SparseIndex::build_knn(const int64_t* indptr, const int32_t* indices, const float* values,
                            size_t n, int threads) {
  // The blocks layout's graph comes from its search defaults, every document scored whole:
  // better neighbours than the lists layout's settings give it (120k real SPLADE rows at
  // block_size 8: recall@10 0.955 against 0.927 at query_cut 25 with n_knn 10).
  SparseSearch q = SparseSearch::defaults(p_.layout);
  q.k = p_.knn + 1;
  if (p_.layout == SparseLayout::lists) {
    q.query_cut = kKnnQueryCut;
    q.heap_factor = kKnnHeapFactor;
    q.head = kKnnHead;
  }
  q.list_order = false;  // one order by summary score: fewer visits for the n searches
  std::vector<float> scores(n * q.k);
  std::vector<int64_t> labels(n * q.k);
  q.threads = threads;
  search_main(indptr, indices, values, n, q, scores.data(), labels.data());
  LargeVector<uint32_t> graph(n * p_.knn, ~0u);
  for (size_t d = 0; d < n; ++d) {
    size_t j = 0;
    for (size_t r = 0; r < q.k && j < p_.knn; ++r) {
      const int64_t x = labels[d * q.k + r];
      if (x >= 0 && size_t(x) != d) graph[d * p_.knn + j++] = uint32_t(x);
    }
  }
  s_.knn = std::move(graph);
}

void SparseIndex::prune_and_block(const float* val, int threads) {
  progress_->store(0);
  const size_t n = ndocs(), nnz = this->nnz();
  const int64_t* doc_ptr = s_.doc_ptr.data();
  const uint16_t* c16 = s_.comp16.empty() ? nullptr : s_.comp16.data();
  const uint32_t* c32 = s_.comp32.data();
  auto comp = [c16, c32](size_t e) { return c16 ? size_t(c16[e]) : size_t(c32[e]); };
  // Global threshold: the budget T = n_postings * dim largest values of the collection.
  const size_t budget = std::min(nnz, p_.n_postings * dim_);
  float tau = 0.0f;
  if (budget > 0 && budget < nnz) {
    std::vector<float> all(val, val + nnz);
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
      for (int64_t e = doc_ptr[d]; e < doc_ptr[d + 1]; ++e)
        if (val[e] >= tau) cand[fill[comp(size_t(e))]++] = {val[e], uint32_t(d)};
  }
  const size_t cap = std::max<size_t>(1, size_t(float(p_.n_postings) * p_.max_fraction));

  // Rows are stored heaviest first: a document's doc_cut first entries are what k-means
  // compares, its summary_cut first (with summary_cut) what the block summaries are built from.
  auto kmeans_end = [&](size_t doc) {
    return std::min(doc_ptr[doc + 1], doc_ptr[doc] + int64_t(p_.doc_cut));
  };
  auto summary_end = [&](size_t doc) {
    return p_.summary_cut ? std::min(doc_ptr[doc + 1], doc_ptr[doc] + int64_t(p_.summary_cut))
                          : doc_ptr[doc + 1];
  };

  // Per list (in parallel): cap, cluster into blocks, summarize; concatenated in term order.
  std::vector<ListOut> lists(dim_);
  const size_t ntasks = (dim_ + kListsPerTask - 1) / kListsPerTask;
  const int nworkers = int(std::max<size_t>(1, std::min<size_t>(ntasks, resolve_threads(threads))));
  std::vector<std::vector<float>> dense(size_t(nworkers), std::vector<float>(dim_, 0.0f));
  std::vector<std::vector<uint32_t>> heads(size_t(nworkers), std::vector<uint32_t>(dim_, 0)),
      counts = heads;
  parallel_for(ntasks, nworkers, [&](size_t task, size_t w) {
    std::vector<float>& acc = dense[w];
    const size_t t_end = std::min(dim_, (task + 1) * kListsPerTask);
    for (size_t t = task * kListsPerTask; t < t_end; ++t) {
      auto* first = cand.data() + cand_ptr[t];
      size_t len = size_t(cand_ptr[t + 1] - cand_ptr[t]);
      if (len == 0) continue;
      if (len > cap) {
        std::nth_element(first, first + cap, first + len, heavier);
        len = cap;
      }
      std::sort(first, first + len, heavier);
      std::vector<uint32_t> docs(len);
      for (size_t i = 0; i < len; ++i) docs[i] = first[i].second;

      // Centroids: sampled documents of the list (seeded per list: any thread count builds
      // the same index).
      const size_t nc = std::min(kMaxBlocksPerList,
                                 std::max<size_t>(1, size_t(p_.centroid_fraction * float(len))));
      std::vector<uint32_t> order(len);
      std::iota(order.begin(), order.end(), 0u);
      Rng rng(p_.seed * 0x100000001B3ull + t);
      for (size_t i = 0; i < nc; ++i) std::swap(order[i], order[i + rng.below(len - i)]);
      std::vector<uint32_t> centroid(order.begin(), order.begin() + nc);
      // A mini inverted index over the centroids: term k's (centroid, value) entries are
      // mini[head[k] - 1 .. head[k] - 1 + count[k]) (the worker's dense arrays, reset after).
      std::vector<uint32_t>& head = heads[w];
      std::vector<uint32_t>& count = counts[w];
      std::vector<uint32_t> terms;
      for (size_t c = 0; c < nc; ++c) {
        const size_t doc = docs[centroid[c]];
        for (int64_t e = doc_ptr[doc]; e < kmeans_end(doc); ++e) {
          const size_t k = comp(size_t(e));
          if (count[k]++ == 0) terms.push_back(uint32_t(k));
        }
      }
      uint32_t run = 1;
      for (uint32_t k : terms) {
        head[k] = run;
        run += count[k];
        count[k] = 0;
      }
      std::vector<std::pair<uint32_t, float>> mini(run - 1);
      for (size_t c = 0; c < nc; ++c) {
        const size_t doc = docs[centroid[c]];
        for (int64_t e = doc_ptr[doc]; e < kmeans_end(doc); ++e) {
          const size_t k = comp(size_t(e));
          mini[head[k] - 1 + count[k]++] = {uint32_t(c), val[e]};
        }
      }
      std::vector<float> score(nc, 0.0f);
      std::vector<char> alive(nc, 1), hit(nc, 0);
      std::vector<uint32_t> reached;
      size_t first_alive = 0;
      // The alive centroid of highest dot product with the doc's doc_cut largest entries
      // (lowest number on ties; the first alive one when none is reached).
      auto best_centroid = [&](size_t doc) {
        reached.clear();
        for (int64_t e = doc_ptr[doc]; e < kmeans_end(doc); ++e) {
          const size_t k = comp(size_t(e));
          if (head[k] == 0) continue;
          for (uint32_t x = head[k] - 1, xe = x + count[k]; x < xe; ++x) {
            const uint32_t c = mini[x].first;
            if (!hit[c]) hit[c] = 1, reached.push_back(c);
            score[c] += val[e] * mini[x].second;
          }
        }
        size_t best = first_alive;
        float best_score = 0.0f;
        for (uint32_t c : reached) {
          if (alive[c] && (score[c] > best_score || (score[c] == best_score && c < best)))
            best = c, best_score = score[c];
          score[c] = 0.0f;
          hit[c] = 0;
        }
        return best;
      };
      // A document's first entries (the k-means ones) towards the cache.
      auto prefetch_top = [&](size_t doc) {
        const int64_t at = doc_ptr[doc];
        prefetch_line(reinterpret_cast<const char*>(val + at));
        prefetch_line(c16 ? reinterpret_cast<const char*>(c16 + at)
                          : reinterpret_cast<const char*>(c32 + at));
      };
      std::vector<uint32_t> assign(len);
      std::vector<size_t> size(nc, 0);
      for (size_t i = 0; i < len; ++i) {
        if (i + 2 < len) prefetch_top(docs[i + 2]);
        ++size[assign[i] = uint32_t(best_centroid(docs[i]))];
      }
      // Clusters of at most min_cluster_size documents dissolve into the surviving ones.
      size_t survivors = 0;
      for (size_t c = 0; c < nc; ++c) survivors += size[c] > p_.min_cluster_size;
      if (survivors > 0 && survivors < nc) {
        for (size_t c = 0; c < nc; ++c) alive[c] = size[c] > p_.min_cluster_size;
        first_alive = size_t(std::find(alive.begin(), alive.end(), 1) - alive.begin());
        for (size_t i = 0; i < len; ++i)
          if (!alive[assign[i]]) assign[i] = uint32_t(best_centroid(docs[i]));
      }
      for (uint32_t k : terms) head[k] = count[k] = 0;
      // Blocks ordered by their centroid's document id, documents in list order.
      std::vector<uint32_t> cl(nc);
      std::iota(cl.begin(), cl.end(), 0u);
      std::sort(cl.begin(), cl.end(), [&](uint32_t a, uint32_t b) {
        return docs[centroid[a]] < docs[centroid[b]];
      });
      std::vector<std::vector<uint32_t>> members(nc);
      for (size_t i = 0; i < len; ++i) members[assign[i]].push_back(docs[i]);
      ListOut& out = lists[t];
      // Exact capacities: the lists together hold about the whole index until concatenated.
      out.postings.reserve(len);
      out.block_len.reserve(nc);
      out.step.reserve(nc);
      std::vector<uint32_t> touched;
      std::vector<std::pair<float, uint32_t>> entries;
      std::vector<uint64_t> sum;  // term << 24 | block << 8 | code
      for (uint32_t c : cl) {
        if (members[c].empty()) continue;
        const uint64_t block = out.block_len.size();
        out.postings.insert(out.postings.end(), members[c].begin(), members[c].end());
        out.block_len.push_back(uint32_t(members[c].size()));
        // Summary: coordinate-wise max, cut to summary_energy of its L1 mass, 8 bits. The
        // maxima gather in the dense acc (new terms noted without a branch), the next
        // document's entries prefetched.
        const std::vector<uint32_t>& mem = members[c];
        size_t total = 0;
        for (uint32_t doc : mem) total += size_t(summary_end(doc) - doc_ptr[doc]);
        touched.resize(total);
        size_t nt = 0;
        for (size_t i = 0; i < mem.size(); ++i) {
          if (i + 1 < mem.size()) prefetch_top(mem[i + 1]);
          for (int64_t e = doc_ptr[mem[i]]; e < summary_end(mem[i]); ++e) {
            const size_t k = comp(size_t(e));
            touched[nt] = uint32_t(k);
            nt += acc[k] == 0.0f;
            acc[k] = std::max(acc[k], std::max(val[e], 1e-30f));
          }
        }
        touched.resize(nt);
        entries.clear();
        double mass = 0.0;
        for (uint32_t k : touched) {
          entries.emplace_back(acc[k], k);
          mass += acc[k];
          acc[k] = 0.0f;
        }
        entries.resize(std::max<size_t>(1, heaviest_prefix(entries, p_.summary_energy * mass)));
        float hi = 0.0f;
        for (const auto& en : entries) hi = std::max(hi, en.first);
        // codes times hi / 255, rounded up: the summary stays an upper bound of the maxima
        const float step = hi / 255.0f;
        for (const auto& en : entries)
          sum.push_back(uint64_t(en.second) << 24 | block << 8 | code_up(en.first, step));
        out.step.push_back(step);
      }
      // Transpose: entries grouped by term (ascending), blocks ascending within a term (a
      // counting sort through the worker's dense arrays, which are left zeroed).
      terms.resize(sum.size());
      size_t nterms = 0;
      for (uint64_t x : sum) {
        const uint32_t k = uint32_t(x >> 24);
        terms[nterms] = k;
        nterms += count[k]++ == 0;
      }
      terms.resize(nterms);
      if (nterms * 16 > dim_) {  // many terms: a scan of the counts beats a sort
        terms.clear();
        for (size_t k = 0; k < dim_; ++k)
          if (count[k]) terms.push_back(uint32_t(k));
      } else {
        std::sort(terms.begin(), terms.end());
      }
      out.sterm = terms;
      out.soff.reserve(terms.size() + 1);
      uint32_t at = 0;
      for (uint32_t k : terms) {
        out.soff.push_back(at);
        head[k] = at;
        at += std::exchange(count[k], 0);
      }
      out.soff.push_back(at);
      out.sblock.resize(sum.size());
      out.scode.resize(sum.size());
      for (uint64_t x : sum) {
        const uint32_t pos = head[x >> 24]++;
        out.sblock[pos] = uint16_t(x >> 8);
        out.scode[pos] = uint8_t(x);
      }
      for (uint32_t k : terms) head[k] = 0;
    }
    progress_->fetch_add(t_end - task * kListsPerTask);
  });
  cand = decltype(cand)();  // freed before the concatenation doubles what is held

  // Concatenate the lists in term order.
  std::vector<int64_t> list_ptr(dim_ + 1, 0), sdict_ptr(dim_ + 1, 0), sent_ptr(dim_ + 1, 0);
  size_t nblk = 0, npost = 0, ndict = 0, nent = 0;
  for (const ListOut& l : lists) {
    nblk += l.block_len.size();
    npost += l.postings.size();
    ndict += l.sterm.size();
    nent += l.sblock.size();
  }
  require(npost < (size_t(1) << 32) && nent < (size_t(1) << 32),
          "more than 2^32 postings or summary entries: raise pruning (lower n_postings)");
  // LargeVector: moved into the state's Buffers without a copy.
  LargeVector<uint32_t> block_ptr{0}, postings, soff;
  LargeVector<float> step;
  LargeVector<uint32_t> sterm;
  LargeVector<uint16_t> sblock;
  LargeVector<uint8_t> scode;
  block_ptr.reserve(nblk + 1);
  postings.reserve(npost);
  step.reserve(nblk);
  sterm.reserve(ndict);
  soff.reserve(ndict + dim_);
  sblock.reserve(nent);
  scode.reserve(nent);
  auto append = [](auto& to, const auto& from) { to.insert(to.end(), from.begin(), from.end()); };
  size_t freed = 0;
  for (size_t t = 0; t < dim_; ++t) {
    ListOut& l = lists[t];
    append(postings, l.postings);
    append(step, l.step);
    for (uint32_t len : l.block_len) block_ptr.push_back(block_ptr.back() + len);
    append(sterm, l.sterm);
    if (l.soff.empty()) l.soff.push_back(0);  // a list without blocks
    append(soff, l.soff);
    append(sblock, l.sblock);
    append(scode, l.scode);
    list_ptr[t + 1] = int64_t(step.size());
    sdict_ptr[t + 1] = int64_t(sterm.size());
    sent_ptr[t + 1] = int64_t(sblock.size());
    freed += l.bytes();
    l = ListOut();
    // The freed lists go back to the system as the arrays fill: the peak stays near one index.
    if (freed > kTrimBytes) release_free_memory(), freed = 0;
  }
  release_free_memory();
  s_.list_ptr = std::move(list_ptr);
  s_.block_ptr = std::move(block_ptr);
  if (p_.posting_offsets && nnz < (size_t(1) << 32)) {
    LargeVector<uint32_t> off(postings.size());
    for (size_t i = 0; i < off.size(); ++i) off[i] = uint32_t(doc_ptr[postings[i]]);
    s_.postoff = std::move(off);
  } else {
    s_.postoff = Buffer<uint32_t>();
  }
  s_.postings = std::move(postings);
  s_.block_step = std::move(step);
  s_.sdict_ptr = std::move(sdict_ptr);
  s_.sent_ptr = std::move(sent_ptr);
  s_.sterm16 = Buffer<uint16_t>();
  s_.sterm32 = Buffer<uint32_t>();
  if (dim_ <= 65536)
    s_.sterm16 = LargeVector<uint16_t>(sterm.begin(), sterm.end());
  else
    s_.sterm32 = std::move(sterm);
  s_.soff = std::move(soff);
  s_.sblock = std::move(sblock);
  s_.scode = std::move(scode);
}

void SparseIndex::restore(State s, bool check_contents) {
  auto offsets_ok = [](const auto& p, size_t count, size_t total) {
    if (p.size() != count || p[0] != 0 || size_t(p.back()) != total) return false;
    for (size_t i = 1; i < p.size(); ++i)
      if (p[i] < p[i - 1]) return false;
    return true;
  };
  const size_t n = s.doc_ptr.empty() ? 0 : s.doc_ptr.size() - 1;
  const bool narrow = dim_ <= 65536;
  const size_t nnz = narrow ? s.comp16.size() : s.comp32.size();
  const size_t nb = s.block_step.size(), ndict = narrow ? s.sterm16.size() : s.sterm32.size();
  const size_t nent = s.sblock.size();
  require(n > 0 && offsets_ok(s.doc_ptr, n + 1, nnz), "restore: bad document offsets");
  require(narrow ? s.comp32.empty() && s.sterm32.empty() : s.comp16.empty() && s.sterm16.empty(),
          "restore: term ids of the wrong width");
  require(p_.u8_values ? s.val8.size() == nnz && s.doc_scale.size() == n && s.val16.empty()
                       : s.val16.size() == nnz && s.val8.empty(),
          "restore: values do not match the offsets");
  const bool blocks = p_.layout == SparseLayout::blocks;
  const size_t nbm = blocks ? blocks_for(n) : 0;  // blocks of the blocks layout
  require(blocks != s.bm_ptr.empty(), "restore: arrays of the other layout");
  if (blocks) {
    require(s.list_ptr.empty() && s.postings.empty() && s.postoff.empty() && nb == 0 &&
                s.sdict_ptr.empty() && s.sent_ptr.empty() && ndict == 0 && s.soff.empty() &&
                nent == 0 && s.scode.empty() && s.block_ptr.size() == 1,
            "restore: list arrays in the blocks layout");
    require(nbm > 0 && offsets_ok(s.bm_ptr, dim_ + 1, s.bm_entry.size()) &&
                s.bm_scale.size() == dim_ && s.bm_dense.size() == s.bm_dense_terms.size() * nbm &&
                std::adjacent_find(s.bm_dense_terms.begin(), s.bm_dense_terms.end(),
                                   std::greater_equal<uint32_t>()) == s.bm_dense_terms.end() &&
                (s.bm_dense_terms.empty() || s.bm_dense_terms.back() < dim_),
            "restore: bad block maxima");
  } else {
    require(s.bm_entry.empty() && s.bm_scale.empty() && s.bm_dense_terms.empty() &&
                s.bm_dense.empty(),
            "restore: block maxima in the lists layout");
    require(offsets_ok(s.list_ptr, dim_ + 1, nb), "restore: bad list offsets");
    require(offsets_ok(s.block_ptr, nb + 1, s.postings.size()), "restore: bad block offsets");
    require(s.postoff.empty() || s.postoff.size() == s.postings.size(),
            "restore: posting offsets do not match the postings");
    require(offsets_ok(s.sdict_ptr, dim_ + 1, ndict) && offsets_ok(s.sent_ptr, dim_ + 1, nent) &&
                s.scode.size() == nent && s.soff.size() == ndict + dim_,
            "restore: bad summary offsets");
    for (size_t t = 0; t < dim_; ++t) {
      const uint32_t* off = s.soff.data() + s.sdict_ptr[t] + t;
      const size_t m = size_t(s.sdict_ptr[t + 1] - s.sdict_ptr[t]);
      require(off[0] == 0 && off[m] == uint64_t(s.sent_ptr[t + 1] - s.sent_ptr[t]) &&
                  std::is_sorted(off, off + m + 1) &&
                  s.list_ptr[t + 1] - s.list_ptr[t] <= int64_t(kMaxBlocksPerList),
              "restore: bad summary offsets");
    }
  }
  require(s.knn.size() == (p_.knn ? n * p_.knn : 0), "restore: kNN graph of the wrong size");
  if (check_contents) {
    auto below = [](const auto& buf, size_t bound) {
      for (size_t i = 0; i < buf.size(); ++i)
        if (size_t(buf[i]) >= bound) return false;
      return true;
    };
    require(below(s.comp16, dim_) && below(s.comp32, dim_) && below(s.sterm16, dim_) &&
                below(s.sterm32, dim_),
            "restore: term id out of range");
    require(below(s.postings, n), "restore: posting out of range");
    for (uint32_t x : s.bm_entry)
      require((x >> 8) < nbm, "restore: block maximum of a block out of range");
    for (uint32_t x : s.knn) require(x < n || x == ~0u, "restore: kNN neighbour out of range");
    for (size_t i = 0; i < s.postoff.size(); ++i)
      require(s.postoff[i] == uint64_t(s.doc_ptr[s.postings[i]]), "restore: bad posting offset");
    for (size_t t = 0; !blocks && t < dim_; ++t)
      for (int64_t e = s.sent_ptr[t]; e < s.sent_ptr[t + 1]; ++e)
        require(s.sblock[size_t(e)] < s.list_ptr[t + 1] - s.list_ptr[t],
                "restore: summary block out of range");
  }
  s_ = std::move(s);
  labels_.assign({});
}

// The blocks layout's loop for one query whose cut heaviest terms lead s.terms; documents
// are scored by score(heap, document, first entry).
template <class Comp, class Score>
void SparseIndex::search_blocks(const Comp* comp, size_t cut, const SparseSearch& p,
                                SparseScratch& s, const Kernels& kr, TopKSet& heap,
                                Score&& score) const {
  const size_t n = ndocs();
  auto skip = [&](float sd) {
    const float theta = heap.threshold(0);
    return std::isfinite(theta) && sd < p.heap_factor * theta;
  };
  // The blocks' summary scores over the cut terms as 16-bit sums of each term's weight times
  // its scale, quantized to `levels` steps of the largest, times the codes. Codes and products
  // are rounded up, the weights to nearest: with every term and heap_factor 1 a block is
  // skipped only through that rounding.
  const size_t nb = nblocks(), bs = p_.block_size;
  if (s.bound.size() < nb) s.bound.resize(nb);
  uint16_t* bound = s.bound.data();
  std::fill(bound, bound + nb, uint16_t(0));
  float wmax = 0.0f;
  for (size_t ti = 0; ti < cut; ++ti)
    wmax = std::max(wmax, s.terms[ti].first * s_.bm_scale[s.terms[ti].second]);
  // a term adds at most about levels * 4 per block: sums of up to 64 terms fit in 16
  // bits at 255 levels, longer queries get fewer (and sums saturate rather than wrap)
  const float levels = float(std::clamp<size_t>(16383 / std::max<size_t>(1, cut), 1, 255));
  const uint32_t* dense_end = s_.bm_dense_terms.end();
  uint16_t add[256];  // a sparse term's increment per code
  s.rows.clear();
  s.row_w.clear();
  for (size_t ti = 0; ti < cut && wmax > 0.0f; ++ti) {
    const uint32_t t = s.terms[ti].second;
    const float weight = s.terms[ti].first * s_.bm_scale[t] / wmax * levels;
    const uint32_t w = std::min(uint32_t(levels), uint32_t(std::lrint(weight)));
    const uint32_t* d = std::lower_bound(s_.bm_dense_terms.begin(), dense_end, t);
    if (d != dense_end && *d == t) {  // summed below, all rows in one pass
      s.rows.push_back(s_.bm_dense.data() + size_t(d - s_.bm_dense_terms.begin()) * nb);
      s.row_w.push_back(uint16_t(w));
      continue;
    }
    // the next term's entries start loading now (the stream is then the prefetcher's)
    if (ti + 1 < cut)
      for (size_t l = 0; l < 8; ++l)
        prefetch_line(reinterpret_cast<const char*>(s_.bm_entry.data() +
                                                     s_.bm_ptr[s.terms[ti + 1].second]) +
                      64 * l);
    for (uint32_t c = 0; c < 256; ++c) add[c] = uint16_t((w * c + 63u) >> 6);
    // block numbers clamped: a corrupt mapped file gives wrong results, not wild writes
    for (int64_t x = s_.bm_ptr[t]; x < s_.bm_ptr[t + 1]; ++x) {
      const uint32_t en = s_.bm_entry[x];
      uint16_t& to = bound[std::min<size_t>(en >> 8, nb - 1)];
      to = uint16_t(std::min<uint32_t>(65535u, to + add[en & 255u]));
    }
  }
  kr.accumulate_u8(s.rows.data(), s.row_w.data(), s.rows.size(), nb, bound);
  const float unit = 64.0f * wmax / levels;  // the score of one unit of a sum
  uint32_t top = 0;
  for (size_t b = 0; b < nb; ++b) top = std::max<uint32_t>(top, bound[b]);
  // Prefetched ahead: a block's document offsets, then later its forward rows, one row per
  // document scored (a burst of a whole block's lines stalls on the miss queue).
  // The blocks in decreasing score up to the first below heap_factor * theta, found in
  // rounds that each sort only the blocks with sums in [lo, hi): lo halves until the heap
  // is full, then drops to that bar, so most blocks are never sorted.
  uint32_t hi = 65536, lo = std::max<uint32_t>(1, top / 2);
  while (top > 0) {
    // the round's blocks as (sum << 32 | ~block): the heaviest first, then the lowest block
    s.docs.resize(nb);
    const size_t m = kr.select_u16(bound, nb, lo, hi, s.docs.data());
    s.keys.resize(m);
    for (size_t j = 0; j < m; ++j) s.keys[j] = uint64_t(bound[s.docs[j]]) << 32 | ~s.docs[j];
    // Popped from a heap in decreasing order (a round often ends after a few blocks), a
    // few ahead of the visits for the prefetches: the r-th best lands at m - 1 - r.
    uint64_t* keys = s.keys.data();
    std::make_heap(keys, keys + m);
    size_t popped = 0;
    auto ranked = [&](size_t r) {
      for (; popped <= r; ++popped) std::pop_heap(keys, keys + m - popped);
      return keys[m - 1 - r];
    };
    auto block_of = [](uint64_t key) { return size_t(~uint32_t(key)); };
    bool below = false;
    for (size_t r = 0; r < m && !(below = skip(float(ranked(r) >> 32) * unit)); ++r) {
      if (r + kOffsetsAhead < m) prefetch_offsets(block_of(ranked(r + kOffsetsAhead)) * bs);
      const size_t ahead = r + kRowsAhead < m ? block_of(ranked(r + kRowsAhead)) * bs : n;
      const size_t b = block_of(ranked(r));
      for (size_t j = 0, doc = b * bs; doc < std::min(n, b * bs + bs); ++j, ++doc) {
        if (ahead + j < n) prefetch_row(comp, ahead + j);
        s.seen[doc] = s.epoch;
        score(heap, doc, size_t(s_.doc_ptr[doc]));
      }
    }
    const float theta = heap.threshold(0);
    const uint32_t bar = std::isfinite(theta)
                             ? uint32_t(std::min(65536.0f, p.heap_factor * theta / unit))
                             : 0;
    if (below || lo == 1 || bar >= lo) break;  // every block left is below the bar
    hi = lo;
    lo = std::max<uint32_t>({1, bar, lo / 2});
  }
}

template <class Comp, class Term>
void SparseIndex::search_one(const Comp* comp, const Term* sterm, const int64_t* qptr,
                             const int32_t* qidx, const float* qval, size_t i,
                             const SparseSearch& p, SparseScratch& s, const Kernels& kr,
                             float* scores, int64_t* labels) const {
  const size_t k = p.k;
  const size_t n = ndocs();
  if (s.q.size() < qdense_size() || s.dirty)
    s.q.assign(std::max(s.q.size(), qdense_size()), 0.0f);
  if (s.seen.size() < n) {
    s.seen.assign(n, 0);
    s.epoch = 0;
  }
  if (s.acc.empty()) s.acc.assign(kMaxBlocksPerList + 1, 0.0f);
  s.dirty = true;
  if (++s.epoch == 0) {  // wrapped: clear the marks
    std::fill(s.seen.begin(), s.seen.end(), uint8_t(0));
    s.epoch = 1;
  }
  for (int64_t e = qptr[i]; e < qptr[i + 1]; ++e) s.q[qidx[e]] = qval[e];
  TopKSet& heap = s.heap;
  TopKSet& partial = s.partial;  // the best head-only scores
  heap.reset(k);
  partial.reset(p.head > 0 ? std::max(p.rerank ? p.rerank : 3 * k, k) : 0);
  // Scores document doc (entries from b) into `into`; with a head, the rest of its entries
  // only when the head's partial score is among the rerank best so far.
  const IdFilter* f = p.filter.of(i);
  const bool filtered = labels_.checks(p.filter);
  auto score = [&](TopKSet& into, size_t doc, size_t b) {
    if (filtered && !labels_.allowed(doc, f)) return;
    // b may come from a stored posting offset, unchecked in a mapped file: clamped to the
    // document's end (validated), so a corrupt one gives wrong scores, not wild reads.
    const size_t e = size_t(s_.doc_ptr[doc + 1]);
    b = std::min(b, e);
    if (p.head == 0 || e - b <= p.head) {
      into.push(0, entries_dot(comp, doc, b, e, s.q.data(), kr), int64_t(doc));
      return;
    }
    const float part = entries_dot(comp, doc, b, b + p.head, s.q.data(), kr);
    if (!(part > partial.threshold(0))) return;
    partial.push(0, part, int64_t(doc));
    into.push(0, part + entries_dot(comp, doc, b + p.head, e, s.q.data(), kr), int64_t(doc));
  };
  const auto score_all = [&](size_t d) {
    if (filtered && !labels_.allowed(d, f)) return;
    heap.push(0, entries_dot(comp, d, size_t(s_.doc_ptr[d]), size_t(s_.doc_ptr[d + 1]),
                             s.q.data(), kr),
              int64_t(d));
  };
  const bool few = f && f->max_allowed() <= n / kExactFallback;
  if (few) {  // a selective filter: its documents scored directly
    f->for_each_allowed([&](int64_t id) {
      const int64_t d = labels_.position_of(id, n);
      if (d >= 0) score_all(size_t(d));
    });
  } else if (p.exact) {
    for (size_t d = 0; d < n; ++d) score_all(d);
  } else if (blocks_layout()) {
    search_blocks(comp, cut_terms(qptr, qidx, qval, i, p.query_cut, s), p, s, kr, heap, score);
  } else {
    const size_t cut = cut_terms(qptr, qidx, qval, i, p.query_cut, s);
    const uint32_t* postings = s_.postings.data();
    const uint32_t* postoff = s_.postoff.empty() ? nullptr : s_.postoff.data();
    // bytes of term ids to prefetch per document: the average row (at most 8 cache lines),
    // or the head when there is one
    size_t doc_bytes = std::min<size_t>(512, (nnz() / std::max<size_t>(1, n) + 1) * sizeof(Comp));
    if (p.head > 0) doc_bytes = std::min(doc_bytes, p.head * sizeof(Comp));
    const uint32_t* block_ptr = s_.block_ptr.data();
    // Appends the summary scores of list t's blocks to s.blocks: the list's summary terms
    // met by the query's (both ascending).
    auto summarize = [&](uint32_t t) {
      const int64_t b0 = s_.list_ptr[t];
      const size_t nb = size_t(s_.list_ptr[t + 1] - b0);
      if (nb == 0) return;
      float* acc = s.acc.data();
      std::fill(acc, acc + nb, 0.0f);
      const Term* dict = sterm + s_.sdict_ptr[t];
      const size_t m = size_t(s_.sdict_ptr[t + 1] - s_.sdict_ptr[t]);
      const uint32_t* off = s_.soff.data() + s_.sdict_ptr[t] + t;
      const uint16_t* blk = s_.sblock.data() + s_.sent_ptr[t];
      const uint8_t* code = s_.scode.data() + s_.sent_ptr[t];
      size_t j = 0;
      for (int64_t e = qptr[i]; e < qptr[i + 1] && j < m; ++e) {
        const uint32_t term = uint32_t(qidx[e]);
        // forward in strides of 64 terms (a prefetch-friendly walk of a large dictionary
        // instead of scattered binary-search probes), then a binary search in the stride
        while (j + 64 < m && uint32_t(dict[j + 64]) < term) j += 64;
        j = size_t(std::lower_bound(dict + j, dict + std::min(m, j + 65), term,
                                    [](Term a, uint32_t b) { return uint32_t(a) < b; }) - dict);
        if (j == m || uint32_t(dict[j]) != term) continue;
        const float qv = qval[e];
        for (uint32_t x = off[j]; x < off[j + 1]; ++x) acc[blk[x]] += qv * float(code[x]);
      }
      const float* step = s_.block_step.data() + b0;
      for (size_t b = 0; b < nb; ++b) s.blocks.emplace_back(acc[b] * step[b], b0 + int64_t(b));
    };
    // Scores a block's unseen documents (postings clamped: a corrupt mapped file gives wrong
    // results, not wild reads), their entries prefetched a few documents ahead from the
    // postings' stored offsets.
    auto visit = [&](int64_t b) {
      const uint32_t last = uint32_t(n - 1);
      s.docs.clear();
      s.offs.clear();
      for (uint32_t p = block_ptr[b]; p < block_ptr[b + 1]; ++p) {
        const uint32_t doc = std::min(postings[p], last);
        if (s.seen[doc] == s.epoch) continue;
        s.seen[doc] = s.epoch;
        s.docs.push_back(doc);
        s.offs.push_back(postoff ? postoff[p] : size_t(s_.doc_ptr[doc]));
        prefetch_offsets(doc);
      }
      const size_t nd = s.docs.size();
      for (size_t j = 0; j < std::min(nd, kPrefetchAhead); ++j)
        prefetch_doc(comp, s.offs[j], doc_bytes);
      for (size_t j = 0; j < nd; ++j) {
        if (j + kPrefetchAhead < nd) prefetch_doc(comp, s.offs[j + kPrefetchAhead], doc_bytes);
        score(heap, s.docs[j], s.offs[j]);
      }
    };
    auto skip = [&](float sd) {
      const float theta = heap.threshold(0);
      return std::isfinite(theta) && sd < p.heap_factor * theta;
    };
    s.blocks.clear();
    for (size_t ti = 0; ti < cut; ++ti) summarize(s.terms[ti].second);
    if (p.list_order) {  // the reference's loop: list by list, blocks in stored order
      for (const auto& [score, b] : s.blocks)
        if (!skip(score)) visit(b);
    } else {
      // Blocks in decreasing summary score, popped from a heap: the loop ends at the first
      // block below heap_factor * theta (theta only rises), long before most are ordered.
      auto lighter = [](const std::pair<float, int64_t>& a, const std::pair<float, int64_t>& b) {
        return heavier(b, a);
      };
      std::make_heap(s.blocks.begin(), s.blocks.end(), lighter);
      for (auto end = s.blocks.end(); end != s.blocks.begin(); --end) {
        std::pop_heap(s.blocks.begin(), end, lighter);
        if (skip((end - 1)->first)) break;
        if (end - 1 != s.blocks.begin()) {  // the next block's postings load during this visit
          const uint32_t next = block_ptr[s.blocks.front().second];
          prefetch_line(reinterpret_cast<const char*>(postings + next));
          if (postoff) prefetch_line(reinterpret_cast<const char*>(postoff + next));
        }
        visit((end - 1)->second);
      }
    }
  }
  const float pad = -std::numeric_limits<float>::infinity();
  if (!p.exact && !few && p.n_knn > 0 && !s_.knn.empty()) {
    // Graph refinement: the first n_knn unseen neighbours of each result, best result first.
    s.top_s.resize(k);
    s.top_p.resize(k);
    heap.write_sorted(0, s.top_s.data(), s.top_p.data(), pad);
    TopKSet& refined = s.refined;
    refined.reset(k);
    for (size_t r = 0; r < k && s.top_p[r] >= 0; ++r) refined.push(0, s.top_s[r], s.top_p[r]);
    const size_t K = p_.knn, nk = std::min(p.n_knn, K);
    s.docs.clear();
    for (size_t r = 0; r < k && s.top_p[r] >= 0; ++r)
      for (size_t x = 0; x < nk; ++x) {
        const uint32_t nb = s_.knn[size_t(s.top_p[r]) * K + x];
        if (nb >= n || s.seen[nb] == s.epoch) continue;  // padding (or a corrupt mapped file)
        s.seen[nb] = s.epoch;
        s.docs.push_back(nb);
      }
    // scattered documents: each one's offsets prefetched two strides ahead, its row one
    const size_t nd = s.docs.size(), A = kPrefetchAhead;
    for (size_t j = 0; j < std::min(nd, 2 * A); ++j) prefetch_offsets(s.docs[j]);
    for (size_t j = 0; j < nd; ++j) {
      if (j + 2 * A < nd) prefetch_offsets(s.docs[j + 2 * A]);
      if (j + A < nd) prefetch_row(comp, s.docs[j + A]);
      score(refined, s.docs[j], size_t(s_.doc_ptr[s.docs[j]]));
    }
    refined.write_sorted(0, scores + i * k, labels + i * k, pad);
  } else {
    heap.write_sorted(0, scores + i * k, labels + i * k, pad);
  }
  for (size_t r = 0; r < k; ++r) labels[i * k + r] = labels_.at(labels[i * k + r]);
  for (int64_t e = qptr[i]; e < qptr[i + 1]; ++e) s.q[qidx[e]] = 0.0f;
  s.dirty = false;
}

void SparseIndex::set_ids(std::vector<int64_t> ids, std::vector<uint64_t> removed) {
  require(ids.empty() || ids.size() == ndocs(), "ids: one per document");
  bool positional = true;  // ids 0 .. n-1 are the positions: no array needed
  for (size_t i = 0; i < ids.size() && positional; ++i) positional = ids[i] == int64_t(i);
  if (positional) ids.clear();
  labels_.restore(std::move(ids), std::move(removed), ndocs());
}

void SparseIndex::search_main(const int64_t* qptr, const int32_t* qidx, const float* qval,
                              size_t nq, const SparseSearch& p, float* scores,
                              int64_t* labels) const {
  const int threads = p.threads;
  require(p.k > 0, "k must be >= 1");
  require(p.query_cut > 0, "query_cut must be >= 1");
  require(std::isfinite(p.heap_factor) && p.heap_factor > 0.0f, "heap_factor must be positive");
  require(p.n_knn <= p_.knn, "n_knn must be at most the graph's knn");
  validate_csr(qptr, qidx, qval, nq, dim_, "queries");
  const int nworkers = int(std::max<size_t>(1, std::min<size_t>(nq, resolve_threads(threads))));
  const Kernels& kr = kernels(active_isa());

  parallel_for(nq, nworkers, [&](size_t i, size_t) {
    SparseScratch& s = thread_scratch();
    if (dim_ <= 65536)
      search_one(s_.comp16.data(), s_.sterm16.data(), qptr, qidx, qval, i, p, s, kr, scores,
                 labels);
    else
      search_one(s_.comp32.data(), s_.sterm32.data(), qptr, qidx, qval, i, p, s, kr, scores,
                 labels);
  });
}

}  // namespace quanta
