#include "quanta/index/token_store.hpp"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>
#include <optional>
#include <string>

#include "quanta/codec/kmeans.hpp"
#include "quanta/core/error.hpp"
#include "quanta/core/parallel.hpp"
#include "quanta/core/token_sets.hpp"
#include "quanta/core/topk.hpp"
#include "quanta/simd/amx.hpp"
#include "quanta/simd/gemm_panels.hpp"
#include "quanta/simd/kernels.hpp"

namespace quanta {

namespace {
constexpr size_t kGroupCols = 256;    // query tokens per batch of panels (stays in L2)
constexpr size_t kDocsPerTask = 256;  // documents per exhaustive-search task
constexpr size_t kAddRowsPerTask = 4096;
}  // namespace

// The queries q0 .. q1 with their tokens packed as panels, column c = token offsets[q0] + c.
struct TokenStore::Group {
  size_t q0, q1, ncols;
  std::vector<size_t> col;  // first column of each query, q1 - q0 + 1 entries
  std::vector<float> panels;
  // The same columns as AMX tiles, for bf16 rows (the columns rounded to bf16) or i8 rows
  // (each column rounded to int8 at its own scale; qinv: 1 / that scale).
  std::vector<uint16_t> amx;
  std::vector<int8_t> amx_i8;
  std::vector<float> qinv;
};

TokenStore::Amx TokenStore::amx_kind() const {
  if (storage_ == Storage::bf16 && dim_ % kAmxDepth == 0 && amx_bf16_active()) return Amx::bf16;
  if (storage_ == Storage::i8 && dim_ % kAmxDepthI8 == 0 && amx_int8_active()) return Amx::i8;
  return Amx::none;
}

TokenStore::TokenStore(size_t dim, Storage storage) : dim_(dim), storage_(storage) {
  require(dim > 0, "dim must be positive");
}

size_t TokenStore::memory_usage() const {
  return codes_.size() + offsets_.capacity() * sizeof(int64_t) + sizeof(*this) +
         (sketch_ ? sketch_->memory_usage() : 0);
}

void TokenStore::reset() {
  codes_ = {};
  offsets_.assign(1, 0);
  scale_ = 0.0f;
  labels_.assign({});
  sketch_.reset();
}

void TokenStore::add(const TokenSets& docs, const int64_t* ids, int threads) {
  const float* tokens = docs.tokens;
  const size_t ntokens = docs.ntokens, n = docs.n;
  const int64_t* offsets = docs.offsets;
  validate_sets(offsets, n, ntokens, "offsets");
  require_finite(tokens, ntokens * dim_, "tokens");
  if (storage_ == Storage::f16) require_f16_range(tokens, ntokens * dim_, "tokens");
  Labels::check(ids, n);
  std::vector<int64_t> next = labels_.with_added(ids, n, ndocs());
  float scale = scale_;
  if (scale == 0.0f) {
    float m = 0.0f;
    for (size_t i = 0; i < ntokens * dim_; ++i) m = std::max(m, std::fabs(tokens[i]));
    scale = 1.0f;
    if (m > 0.0f && storage_ == Storage::i8) scale = 127.0f / m;
    if (m > 0.0f && (storage_ == Storage::f8e4m3 || storage_ == Storage::f8e5m2))
      scale = std::ldexp(1.0f, int(std::floor(std::log2(storage_max(storage_) / m))));
  }
  const size_t bytes = dim_ * storage_bytes(storage_), old = codes_.size();
  const size_t before = ndocs();
  if (sketch_) sketch_->add(tokens, offsets, n, threads);
  const int64_t base = offsets_.back();
  try {
    for (size_t i = 1; i <= n; ++i) offsets_.push_back(base + offsets[i]);
    codes_.edit([&](auto& codes) { codes.resize(old + ntokens * bytes); });
  } catch (...) {  // out of memory: nothing is added
    offsets_.resize(before + 1);
    if (sketch_) sketch_->truncate(before);
    throw;
  }
  codes_.edit([&](auto& codes) {
    const size_t ntasks = (ntokens + kAddRowsPerTask - 1) / kAddRowsPerTask;
    parallel_for(ntasks, resolve_threads(threads), [&](size_t t, size_t) {
      const size_t r0 = t * kAddRowsPerTask, r1 = std::min(ntokens, r0 + kAddRowsPerTask);
      std::vector<float> buf((r1 - r0) * dim_);
      for (size_t i = 0; i < buf.size(); ++i) buf[i] = tokens[r0 * dim_ + i] * scale;
      encode_array(storage_, buf.data(), buf.size(), codes.data() + old + r0 * bytes);
    });
  });
  scale_ = scale;
  labels_.commit(std::move(next));
}

void TokenStore::build_sketch(size_t m, uint64_t seed, int threads) {
  require(m > 0 && dim_ % m == 0, "sketch: m must divide dim (" + std::to_string(dim_) + ")");
  require(ntokens() >= 16, "sketch: needs at least 16 stored tokens");
  TokenSketch s(dim_, m);
  const std::vector<size_t> rows = sample_rows(ntokens(), TokenSketch::kSampleTokens, seed);
  std::vector<float> x(rows.size() * dim_);
  for (size_t i = 0; i < rows.size(); ++i) decode(rows[i], 1, x.data() + i * dim_);
  s.train(x.data(), rows.size(), seed, threads);
  // every stored document, decoded a slice of about kAddRowsPerTask tokens at a time
  for (size_t d0 = 0; d0 < ndocs();) {
    size_t d1 = d0 + 1;
    while (d1 < ndocs() && size_t(offsets_[d1 + 1] - offsets_[d0]) <= kAddRowsPerTask) ++d1;
    const size_t t0 = size_t(offsets_[d0]), nt = size_t(offsets_[d1]) - t0;
    x.resize(nt * dim_);
    decode(t0, nt, x.data());
    std::vector<int64_t> rel;
    for (size_t d = d0; d <= d1; ++d) rel.push_back(offsets_[d] - int64_t(t0));
    s.add(x.data(), rel.data(), d1 - d0, threads);
    d0 = d1;
  }
  sketch_ = std::move(s);
}

void TokenStore::compact() {
  if (labels_.removed() == 0) return;
  const std::vector<size_t> keep = labels_.live_positions(ndocs());
  const size_t bytes = dim_ * storage_bytes(storage_);
  std::vector<int64_t> offsets{0};
  size_t at = 0;
  codes_.edit([&](auto& codes) {
    for (size_t d : keep) {  // moving down in order is safe: each kept row starts at or after at
      const size_t b = size_t(offsets_[d]), e = size_t(offsets_[d + 1]);
      std::memmove(codes.data() + at * bytes, codes.data() + b * bytes, (e - b) * bytes);
      at += e - b;
      offsets.push_back(int64_t(at));
    }
    codes.resize(at * bytes);
    codes.shrink_to_fit();
  });
  if (sketch_) sketch_->keep(keep);
  offsets_ = std::move(offsets);
  labels_.compact(keep);
}

void TokenStore::truncate(size_t n) {
  if (n > ndocs()) require(false, "truncate: only " + std::to_string(ndocs()) + " documents");
  offsets_.resize(n + 1);
  codes_.edit([&](auto& codes) {
    codes.resize(size_t(offsets_.back()) * dim_ * storage_bytes(storage_));
  });
  labels_.truncate(n);
  if (sketch_) sketch_->truncate(n);
  if (n == 0) scale_ = 0.0f;
}

TokenStore::Group TokenStore::make_group(const float* q, const int64_t* q_offsets, size_t q0,
                                         size_t q1) const {
  Group g{q0, q1, size_t(q_offsets[q1] - q_offsets[q0]), {}, {}, {}, {}, {}};
  for (size_t i = q0; i <= q1; ++i) g.col.push_back(size_t(q_offsets[i] - q_offsets[q0]));
  const float* base = q + size_t(q_offsets[q0]) * dim_;
  const Amx kind = amx_kind();
  if (kind == Amx::bf16) {
    std::vector<const float*> cols(g.ncols);
    for (size_t c = 0; c < g.ncols; ++c) cols[c] = base + c * dim_;
    g.amx = amx_pack_columns(cols.data(), g.ncols, dim_);
    return g;
  }
  if (kind == Amx::i8) {  // each query token at its own scale: max |q| -> 127
    std::vector<int8_t> q8(g.ncols * dim_);
    std::vector<const int8_t*> cols(g.ncols);
    g.qinv.resize(g.ncols);
    for (size_t c = 0; c < g.ncols; ++c) {
      const float* v = base + c * dim_;
      float m = 0.0f;
      for (size_t p = 0; p < dim_; ++p) m = std::max(m, std::fabs(v[p]));
      const float sc = m > 0.0f ? 127.0f / m : 1.0f;
      g.qinv[c] = 1.0f / sc;
      for (size_t p = 0; p < dim_; ++p)
        q8[c * dim_ + p] = int8_t(std::lrint(std::min(127.0f, std::max(-127.0f, v[p] * sc))));
      cols[c] = q8.data() + c * dim_;
    }
    g.amx_i8 = amx_pack_columns_i8(cols.data(), g.ncols, dim_);
    return g;
  }
  g.panels = pack_panels(g.ncols, dim_, size_t(kernels(active_isa()).mq),
                         [&](size_t c, size_t p) { return base[c * dim_ + p]; });
  return g;
}

void TokenStore::score_docs(const Group& g, const int64_t* docs, size_t ndocs,
                            std::vector<float>& rows, std::vector<float>& colmax,
                            float* out) const {
  const Kernels& kern = kernels(active_isa());
  const size_t mq = size_t(kern.mq), mr = size_t(kern.mr);
  const size_t npanels = (g.ncols + mq - 1) / mq, nqg = g.q1 - g.q0;
  const size_t bytes = dim_ * storage_bytes(storage_);
  const float inv = 1.0f / scale_;
  float tile[64 * 64];
  colmax.resize(std::max(npanels * mq, (g.ncols + 15) / 16 * 16));
  std::optional<AmxScope> tiles;
  if (!g.amx.empty() || !g.amx_i8.empty()) tiles.emplace();
  std::vector<int32_t> imax(g.amx_i8.empty() ? 0 : colmax.size());
  for (size_t i = 0; i < ndocs; ++i) {
    const size_t doc = size_t(docs[i]);
    const size_t t0 = size_t(offsets_[doc]), nt = size_t(offsets_[doc + 1]) - t0;
    if (i + 3 < ndocs) {  // candidates are scattered: fetch a later one's rows meanwhile
      const size_t next = size_t(docs[i + 3]);
      const uint8_t* p = codes_.data() + size_t(offsets_[next]) * bytes;
      const uint8_t* e = codes_.data() + size_t(offsets_[next + 1]) * bytes;
      for (; p < e; p += 64) __builtin_prefetch(p);
    }
    if (!g.amx.empty()) {
      const uint16_t* base = reinterpret_cast<const uint16_t*>(codes_.data());
      std::fill(colmax.begin(), colmax.end(), -std::numeric_limits<float>::infinity());
      amx_bf16_colmax(base + t0 * dim_, nt, base + ntokens() * dim_, g.amx.data(), g.ncols, dim_,
                      colmax.data());
      sum_queries(g, colmax.data(), inv, out + i * nqg);
      continue;
    }
    if (!g.amx_i8.empty()) {  // int32 maxima, then each column's own scale
      const int8_t* base = reinterpret_cast<const int8_t*>(codes_.data());
      std::fill(imax.begin(), imax.end(), std::numeric_limits<int32_t>::min());
      amx_i8_colmax(base + t0 * dim_, nt, base + ntokens() * dim_, g.amx_i8.data(), g.ncols,
                    dim_, imax.data());
      for (size_t c = 0; c < g.ncols; ++c) colmax[c] = float(imax[c]) * g.qinv[c];
      sum_queries(g, colmax.data(), inv, out + i * nqg);
      continue;
    }
    const float* r;
    if (storage_ == Storage::f32) {
      r = reinterpret_cast<const float*>(codes_.data()) + t0 * dim_;
    } else {
      rows.resize(nt * dim_);
      kern.decode_rows(storage_, codes_.data() + t0 * bytes, nt, dim_, rows.data());
      r = rows.data();
    }
    std::fill(colmax.begin(), colmax.end(), -std::numeric_limits<float>::infinity());
    for (size_t pn = 0; pn < npanels; ++pn) {
      const float* panel = g.panels.data() + pn * dim_ * mq;
      float* cm = colmax.data() + pn * mq;
      for (size_t r0 = 0; r0 < nt; r0 += mr) {
        const size_t nr = std::min(mr, nt - r0);
        gemm_tile_plain(kern, r + r0 * dim_, nr, panel, dim_, tile);
        for (size_t rr = 0; rr < nr; ++rr)
          for (size_t j = 0; j < mq; ++j) cm[j] = std::max(cm[j], tile[rr * mq + j]);
      }
    }
    sum_queries(g, colmax.data(), inv, out + i * nqg);
  }
}

void TokenStore::sum_queries(const Group& g, const float* colmax, float inv, float* out) {
  for (size_t qi = 0; qi + g.q0 < g.q1; ++qi) {
    float s = 0.0f;
    for (size_t c = g.col[qi]; c < g.col[qi + 1]; ++c) s += colmax[c];
    out[qi] = s * inv;
  }
}

void TokenStore::search(const TokenSets& queries, const SearchParams& p, float* scores,
                        int64_t* labels) const {
  const float* q = queries.tokens;
  const size_t nq_tokens = queries.ntokens, nq = queries.n;
  const int64_t* q_offsets = queries.offsets;
  const size_t k = p.k;
  const int threads = p.threads;
  const bool filtered = labels_.checks(p.filter);
  const bool per_query = p.filter.size() > 1;
  validate_sets(q_offsets, nq, nq_tokens, "query offsets");
  require_finite(q, nq_tokens * dim_, "queries");
  // Groups of whole queries, about kGroupCols tokens each.
  std::vector<Group> groups;
  for (size_t q0 = 0; q0 < nq;) {
    size_t q1 = q0 + 1;
    while (q1 < nq && size_t(q_offsets[q1 + 1] - q_offsets[q0]) <= kGroupCols) ++q1;
    groups.push_back(make_group(q, q_offsets, q0, q1));
    q0 = q1;
  }
  const size_t n = ndocs(), nblocks = (n + kDocsPerTask - 1) / kDocsPerTask;
  const size_t ntasks = nblocks * groups.size();
  const size_t nworkers = std::max<size_t>(1, std::min<size_t>(ntasks, resolve_threads(threads)));
  std::vector<TopKSet> heaps(nworkers, TopKSet(nq, k));
  std::vector<std::vector<float>> rows(nworkers), colmax(nworkers), out(nworkers);
  parallel_for(ntasks, int(nworkers), [&](size_t t, size_t w) {
    const Group& g = groups[t / nblocks];
    const size_t b0 = (t % nblocks) * kDocsPerTask, b1 = std::min(n, b0 + kDocsPerTask);
    std::vector<int64_t> docs;
    docs.reserve(b1 - b0);
    for (size_t d = b0; d < b1; ++d)  // a shared filter: only its documents are scored
      if (!filtered || per_query || labels_.allowed(d, p.filter.of(0))) docs.push_back(int64_t(d));
    const size_t nqg = g.q1 - g.q0;
    out[w].resize(docs.size() * nqg);
    score_docs(g, docs.data(), docs.size(), rows[w], colmax[w], out[w].data());
    for (size_t i = 0; i < docs.size(); ++i)
      for (size_t qi = 0; qi < nqg; ++qi) {
        if (per_query && !labels_.allowed(size_t(docs[i]), p.filter.of(g.q0 + qi))) continue;
        heaps[w].push(g.q0 + qi, out[w][i * nqg + qi], docs[i]);
      }
  });
  for (size_t w = 1; w < nworkers; ++w) heaps[0].merge(heaps[w]);
  write_results(heaps[0], k, labels_, -std::numeric_limits<float>::infinity(), scores, labels,
                [](size_t, float s) { return s; });
}

void TokenStore::rerank(const TokenSets& queries, const int64_t* cand, size_t nc,
                        size_t shortlist, const SearchParams& p, float* scores,
                        int64_t* labels) const {
  const float* q = queries.tokens;
  const size_t nq_tokens = queries.ntokens, nq = queries.n;
  const int64_t* q_offsets = queries.offsets;
  const size_t k = p.k;
  const int threads = p.threads;
  validate_sets(q_offsets, nq, nq_tokens, "query offsets");
  require_finite(q, nq_tokens * dim_, "queries");
  const size_t nworkers = std::max<size_t>(1, std::min<size_t>(nq, resolve_threads(threads)));
  std::vector<std::vector<float>> rows(nworkers), colmax(nworkers), out(nworkers);
  parallel_for(nq, int(nworkers), [&](size_t i, size_t w) {
    const Group g = make_group(q, q_offsets, i, i + 1);
    std::vector<int64_t> docs;
    const IdFilter* f = p.filter.of(i);
    for (size_t c = 0; c < nc; ++c) {
      const int64_t id = cand[i * nc + c];
      if (id < 0 || (f && !f->allows(id))) continue;
      const int64_t d = labels_.position_of(id, ndocs());  // -1: removed or unknown
      if (d >= 0) docs.push_back(d);
    }
    std::sort(docs.begin(), docs.end());  // rows in address order (ties resolve by position)
    docs.erase(std::unique(docs.begin(), docs.end()), docs.end());
    if (sketch_ && shortlist > 0 && docs.size() > shortlist)
      narrow(q, q_offsets, i, shortlist, docs);
    out[w].resize(docs.size());
    score_docs(g, docs.data(), docs.size(), rows[w], colmax[w], out[w].data());
    TopKSet heap(1, k);
    for (size_t j = 0; j < docs.size(); ++j) heap.push(0, out[w][j], docs[j]);
    heap.write_sorted(0, scores + i * k, labels + i * k, -std::numeric_limits<float>::infinity());
    for (size_t j = 0; j < k; ++j) labels[i * k + j] = labels_.at(labels[i * k + j]);
  });
}

void TokenStore::estimate(const float* q, size_t nt, const int64_t* docs, size_t n,
                          uint32_t* out) const {
  require(sketch_.has_value(), "estimate: no token sketch (build_sketch first)");
  require(nt > 0, "estimate: the query has no tokens");
  require_finite(q, nt * dim_, "queries");
  for (size_t i = 0; i < n; ++i)
    if (docs[i] < 0 || size_t(docs[i]) >= ndocs())
      require(false, "estimate: document " + std::to_string(docs[i]) + " out of range");
  sketch_->score(q, nt, offsets_.data(), docs, n, out);
}

void TokenStore::narrow(const float* q, const int64_t* q_offsets, size_t i, size_t shortlist,
                        std::vector<int64_t>& docs) const {
  const size_t t0 = size_t(q_offsets[i]), nt = size_t(q_offsets[i + 1]) - t0;
  std::vector<uint32_t> est(docs.size());
  sketch_->score(q + t0 * dim_, nt, offsets_.data(), docs.data(), docs.size(), est.data());
  std::vector<uint64_t> keys(docs.size());  // (estimate, position): ties go to the lower position
  for (size_t j = 0; j < docs.size(); ++j) keys[j] = uint64_t(est[j]) << 32 | j;
  std::nth_element(keys.begin(), keys.begin() + ptrdiff_t(shortlist), keys.end());
  keys.resize(shortlist);
  for (uint64_t& key : keys) key = uint32_t(key);  // back to slots, in position order
  std::sort(keys.begin(), keys.end());
  for (size_t j = 0; j < shortlist; ++j) docs[j] = docs[keys[j]];
  docs.resize(shortlist);
}

std::vector<float> TokenStore::tokens(size_t i) const {
  if (i >= ndocs()) require(false, "document " + std::to_string(i) + " out of range");
  const size_t t0 = size_t(offsets_[i]), nt = size_t(offsets_[i + 1]) - t0;
  std::vector<float> out(nt * dim_);
  decode(t0, nt, out.data());
  return out;
}

void TokenStore::decode(size_t t0, size_t n, float* out) const {
  decode_array(storage_, codes_.data() + t0 * dim_ * storage_bytes(storage_), n * dim_, out);
  for (size_t i = 0; i < n * dim_; ++i) out[i] /= scale_;
}

void TokenStore::restore(Buffer<uint8_t> codes, std::vector<int64_t> offsets, float scale,
                         std::vector<int64_t> ids, std::vector<uint64_t> removed,
                         size_t sketch_m, std::vector<float> sketch_centroids,
                         Buffer<uint8_t> sketch_codes) {
  require(!offsets.empty() && offsets[0] == 0, "restore: offsets must start at 0");
  for (size_t i = 1; i < offsets.size(); ++i)
    require(offsets[i] > offsets[i - 1], "restore: offsets must increase");
  const size_t row = dim_ * storage_bytes(storage_);  // no product with a stored size: it could wrap
  require(codes.size() % row == 0 && codes.size() / row == uint64_t(offsets.back()),
          "restore: codes do not match the offsets");
  require(std::isfinite(scale) && (offsets.size() == 1 ? scale >= 0 : scale > 0),
          "restore: bad scale");
  const size_t n = offsets.size() - 1;
  require(ids.empty() || ids.size() == n, "restore: one id per document");
  for (int64_t id : ids) require(id >= 0, "restore: negative id");
  std::optional<TokenSketch> sketch;
  if (sketch_m > 0) {
    require(dim_ % sketch_m == 0, "restore: the token sketch's m must divide dim");
    sketch.emplace(dim_, sketch_m);
    sketch->restore(std::move(sketch_centroids), std::move(sketch_codes), offsets);
  }
  codes_ = std::move(codes);
  offsets_ = std::move(offsets);
  scale_ = scale;
  labels_.restore(std::move(ids), std::move(removed), n);
  sketch_ = std::move(sketch);
}

}  // namespace quanta
