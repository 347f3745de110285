#include "quanta/index/flat.hpp"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <stdexcept>

#include "quanta/core/block_scan.hpp"
#include "quanta/core/error.hpp"
#include "quanta/core/parallel.hpp"
#include "quanta/core/range_hits.hpp"
#include "quanta/core/rows.hpp"
#include "quanta/simd/amx.hpp"
#include "quanta/simd/gemm_panels.hpp"
#include "quanta/simd/kernels.hpp"

namespace quanta {

namespace {

constexpr size_t kRowsPerTask = 4096;    // one-query-at-a-time scans
constexpr size_t kBlockBytes = 256 << 10;  // decoded rows per GEMM task: stays in L2
constexpr size_t kPanelsPerChunk = 8;    // query panels per GEMM task
constexpr size_t kMinGemmQueries = 4;    // fewer queries scan row by row

float max_abs(const float* x, size_t n) {
  float m = 0.0f;
  for (size_t i = 0; i < n; ++i) m = std::max(m, std::fabs(x[i]));
  return m;
}

bool is_f8(Storage s) { return s == Storage::f8e4m3 || s == Storage::f8e5m2; }

}  // namespace

F8Scale f8scale_from_name(const std::string& name) {
  if (name == "none") return F8Scale::none;
  if (name == "global") return F8Scale::global;
  if (name == "vector") return F8Scale::vector;
  throw std::invalid_argument("f8_scale must be 'none', 'global' or 'vector'; got '" + name + "'");
}

const char* f8scale_name(F8Scale s) {
  switch (s) {
    case F8Scale::none: return "none";
    case F8Scale::global: return "global";
    case F8Scale::vector: return "vector";
  }
  return "?";
}

FlatIndex::FlatIndex(size_t dim, Metric metric, Storage storage, F8Scale f8_scale,
                     bool f8_anisotropic)
    : dim_(dim),
      metric_(metric),
      storage_(storage),
      f8_scale_(is_f8(storage) ? f8_scale : F8Scale::none),
      f8_anisotropic_(is_f8(storage) && f8_anisotropic) {
  // A row's bytes must be a size_t with room to spare (a crafted file can claim any dim).
  require(dim > 0 && dim <= kMaxDim, "dim must be in [1, " + std::to_string(kMaxDim) +
                                         "]; got " + std::to_string(dim));
}

bool FlatIndex::is_trained() const {
  if (storage_ == Storage::i8) return !dim_scale_.empty();
  if (f8_scale_ == F8Scale::global) return global_scale_ > 0.0f;
  return true;
}

size_t FlatIndex::memory_usage() const {
  return codes_.size() + 4 * (vector_scale_.size() + sq_norms_.size() + dim_scale_.size()) +
         labels_.memory_usage();
}

void FlatIndex::train(const float* x, size_t n) {
  require(n > 0, "train: got 0 training vectors; pass at least one row");
  require_finite(x, n * dim_, "train: x");
  const bool scaled = storage_ == Storage::i8 || f8_scale_ == F8Scale::global;
  // New scales would silently change what every stored code means.
  require(!scaled || ntotal_ == 0,
          "train: the index holds " + std::to_string(ntotal_) +
              " vectors coded with the current scales; call reset() first (or train a new index)");
  std::vector<float> rows(x, x + n * dim_);
  if (metric_ == Metric::cosine) normalize_rows(rows.data(), n, dim_);
  if (storage_ == Storage::i8) {
    std::vector<float> scale(dim_, 0.0f);
    for (size_t i = 0; i < n; ++i)
      for (size_t p = 0; p < dim_; ++p) scale[p] = std::max(scale[p], std::fabs(rows[i * dim_ + p]));
    for (float& s : scale) s = s > 0.0f ? s / 127.0f : 1.0f;
    dim_scale_ = std::move(scale);
  } else if (f8_scale_ == F8Scale::global) {
    const float m = max_abs(rows.data(), rows.size());
    // Keep the largest value 16x under the format's maximum: room for later, larger rows,
    // while values down to m * 2^-11 stay out of E4M3's subnormal range.
    int e = 0;
    if (m > 0.0f) e = int(std::floor(std::log2(storage_max(storage_) / 16.0f / m)));
    global_scale_ = std::ldexp(1.0f, -e);
  }
}

float FlatIndex::row_scale(size_t pos) const {
  if (f8_scale_ == F8Scale::vector) return vector_scale_[pos];
  if (f8_scale_ == F8Scale::global) return global_scale_;
  return 1.0f;
}

// Encodes n rows (already normalized for cosine); also their decode scale and |decoded|^2.
void FlatIndex::encode_rows(const float* x, size_t n, int threads, uint8_t* codes, float* vscale,
                            float* norms) const {
  const size_t cs = code_size();
  const Kernels& kern = kernels(active_isa());
  const size_t chunk = 1024;
  parallel_for((n + chunk - 1) / chunk, threads, [&](size_t t, size_t) {
    std::vector<float> row(dim_), back(dim_);
    for (size_t i = t * chunk; i < std::min(n, (t + 1) * chunk); ++i) {
      const float* src = x + i * dim_;
      float scale = 1.0f;
      if (storage_ == Storage::i8) {
        for (size_t p = 0; p < dim_; ++p) row[p] = src[p] / dim_scale_[p];
      } else if (f8_scale_ == F8Scale::vector) {
        const float m = max_abs(src, dim_);
        scale = m > 0.0f ? m / storage_max(storage_) : 1.0f;
        for (size_t p = 0; p < dim_; ++p) row[p] = src[p] / scale;
      } else if (f8_scale_ == F8Scale::global) {
        scale = global_scale_;
        for (size_t p = 0; p < dim_; ++p) row[p] = src[p] / scale;
      } else {
        std::memcpy(row.data(), src, dim_ * 4);
      }
      encode_array(storage_, row.data(), dim_, codes + i * cs);
      if (f8_anisotropic_) round_f8_anisotropic(storage_, row.data(), dim_, kF8Eta, codes + i * cs);
      if (vscale) vscale[i] = scale;
      if (norms) {
        kern.decode_rows(storage_, codes + i * cs, 1, dim_, back.data());
        double s = 0;
        for (size_t p = 0; p < dim_; ++p) {
          const double v = double(back[p]) * scale * (dim_scale_.empty() ? 1.0 : dim_scale_[p]);
          s += v * v;
        }
        norms[i] = float(s);
      }
    }
  });
}

void FlatIndex::add(const float* x, size_t n, const int64_t* ids, int threads) {
  if (n == 0) return;
  threads = resolve_threads(threads);
  require_finite(x, n * dim_, "add: x");
  Labels::check(ids, n);
  std::vector<float> rows;
  const float* src = x;
  if (metric_ == Metric::cosine) {
    rows.assign(x, x + n * dim_);
    normalize_rows(rows.data(), n, dim_);
    src = rows.data();
  }
  if (storage_ == Storage::f16) require_f16_range(src, n * dim_, "add: x");
  // Encode into new arrays and append at the end, so a failure leaves the index as it was.
  std::vector<float> saved_dim_scale = dim_scale_;
  const float saved_global = global_scale_;
  if (!is_trained()) train(x, n);
  try {
    const size_t cs = code_size();
    std::vector<uint8_t> codes(n * cs);
    std::vector<float> vscale(f8_scale_ == F8Scale::vector ? n : 0);
    std::vector<float> norms(metric_ == Metric::l2 ? n : 0);
    encode_rows(src, n, threads, codes.data(), vscale.empty() ? nullptr : vscale.data(),
                norms.empty() ? nullptr : norms.data());
    std::vector<int64_t> new_ids = labels_.with_added(ids, n, ntotal_);
    // Room first (a view of a mapped file becomes an owned copy here, same contents); then
    // nothing below throws, so a failure leaves the index as it was.
    const auto room = [](auto& buf, size_t extra) {
      buf.edit([&](auto& a) { a.reserve(a.size() + extra); });
    };
    room(codes_, codes.size());
    room(vector_scale_, vscale.size());
    room(sq_norms_, norms.size());
    const auto append = [](auto& buf, const auto& more) {
      buf.edit([&](auto& a) { a.insert(a.end(), more.begin(), more.end()); });
    };
    append(codes_, codes);
    append(vector_scale_, vscale);
    append(sq_norms_, norms);
    labels_.commit(std::move(new_ids));
    ntotal_ += n;
  } catch (...) {
    dim_scale_ = saved_dim_scale;
    global_scale_ = saved_global;
    throw;
  }
}

void FlatIndex::reset() {
  codes_ = {};
  vector_scale_ = {};
  sq_norms_ = {};
  labels_.assign({});
  ntotal_ = 0;
}

void FlatIndex::decode_row(size_t pos, float* out) const {
  kernels(active_isa()).decode_rows(storage_, codes_.data() + pos * code_size(), 1, dim_, out);
  const float s = row_scale(pos);
  for (size_t p = 0; p < dim_; ++p) out[p] *= s * (dim_scale_.empty() ? 1.0f : dim_scale_[p]);
}

const float* FlatIndex::kernel_query(const float* q, std::vector<float>& buf) const {
  if (dim_scale_.empty()) return q;
  buf.resize(dim_);
  for (size_t p = 0; p < dim_; ++p) buf[p] = q[p] * dim_scale_[p];
  return buf.data();
}

void FlatIndex::dot_positions(const float* q, const uint32_t* pos, size_t n, float* out) const {
  for (size_t i = 0; i < n; ++i) prefetch(pos[i]);  // scattered rows: ask for all at once
  kernels(active_isa()).dot_gather(storage_, q, codes_.data(), pos, n, dim_, out);
  if (f8_scale_ == F8Scale::vector)
    for (size_t i = 0; i < n; ++i) out[i] *= vector_scale_[pos[i]];
  else if (f8_scale_ == F8Scale::global)
    for (size_t i = 0; i < n; ++i) out[i] *= global_scale_;
}

void FlatIndex::reconstruct(const int64_t* ids, size_t n, float* out) const {
  std::vector<int64_t> pos(n);
  for (size_t i = 0; i < n; ++i) {
    pos[i] = labels_.position_of(ids[i], ntotal_);
    if (pos[i] < 0) throw std::out_of_range("reconstruct: id " + std::to_string(ids[i]) +
                                            " is not in the index");
  }
  for (size_t i = 0; i < n; ++i) decode_row(size_t(pos[i]), out + i * dim_);
}

// Queries as the kernels see them: normalized for cosine, times the per-dimension scale for
// i8; qnorm gets |q|^2 (l2) for turning scores back into distances.
// The queries as scanned: q itself, or a normalized / scaled copy in qs.
const float* FlatIndex::prepare_queries(const float* q, size_t nq, std::vector<float>& qs,
                                        std::vector<float>& qnorm) const {
  qnorm.assign(nq, 0.0f);
  if (metric_ == Metric::l2)
    for (size_t i = 0; i < nq; ++i) qnorm[i] = float(sq_norm(q + i * dim_, dim_));
  if (metric_ != Metric::cosine && dim_scale_.empty()) return q;
  qs.assign(q, q + nq * dim_);
  if (metric_ == Metric::cosine) normalize_rows(qs.data(), nq, dim_);
  if (!dim_scale_.empty())
    for (size_t i = 0; i < nq; ++i)
      for (size_t p = 0; p < dim_; ++p) qs[i * dim_ + p] *= dim_scale_[p];
  return qs.data();
}

void FlatIndex::search(const float* q, size_t nq, const FlatSearchParams& params,
                       float* distances, int64_t* labels) const {
  require(params.k > 0, "search: k must be >= 1; got 0");
  require_finite(q, nq * dim_, "search: queries");
  require(!params.quantize_queries || storage_ == Storage::i8,
          "search: quantize_queries needs storage 'i8'");
  if (nq == 0) return;
  std::vector<float> qs, qnorm;
  const float* qp = prepare_queries(q, nq, qs, qnorm);
  if (nq >= kMinGemmQueries && storage_ == Storage::bf16 && dim_ % kAmxDepth == 0 &&
      amx_bf16_active())
    search_amx(qp, nq, params, qnorm.data(), distances, labels);
  else if (nq >= kMinGemmQueries && !params.quantize_queries)
    search_gemm(qp, nq, params, qnorm.data(), distances, labels);
  else
    search_rows(qp, nq, params, qnorm.data(), distances, labels);
}

// Scores back to distances (l2: |q|^2 - score), positions to labels.
template <class Top>
void FlatIndex::finish(Top& heaps, size_t k, const float* qnorm, float* distances,
                       int64_t* labels) const {
  const bool l2 = metric_ == Metric::l2;
  const float inf = std::numeric_limits<float>::infinity();
  write_results(heaps, k, labels_, l2 ? inf : -inf, distances, labels,
                [&](size_t i, float score) { return l2 ? qnorm[i] - score : score; });
}

void FlatIndex::search_gemm(const float* q, size_t nq, const SearchParams& params,
                            const float* qnorm, float* distances, int64_t* labels) const {
  // A large k keeps a loose threshold for many rows: appends beat heap sifts there.
  if (params.k >= kReservoirK)
    search_gemm_into<TopKReservoir>(q, nq, params, qnorm, distances, labels);
  else
    search_gemm_into<TopKSet>(q, nq, params, qnorm, distances, labels);
}

template <class Top>
void FlatIndex::search_gemm_into(const float* q, size_t nq, const SearchParams& params,
                                 const float* qnorm, float* distances, int64_t* labels) const {
  const size_t k = params.k;
  const int threads = resolve_threads(params.threads);
  const Kernels& kern = kernels(active_isa());
  const size_t mq = size_t(kern.mq), mr = size_t(kern.mr);
  const size_t npanels = (nq + mq - 1) / mq;
  // Queries transposed into panels [panel][dim][mq], zero beyond nq.
  const std::vector<float> panels =
      pack_panels(nq, dim_, mq, [&](size_t i, size_t p) { return q[i * dim_ + p]; });

  const size_t block = std::max(mr, kBlockBytes / (4 * dim_) / mr * mr);
  const size_t nblocks = (ntotal_ + block - 1) / block;
  const size_t nchunks = (npanels + kPanelsPerChunk - 1) / kPanelsPerChunk;
  const size_t ntasks = nblocks * nchunks;
  const size_t nworkers = std::max<size_t>(1, std::min<size_t>(ntasks, size_t(threads)));
  std::vector<Top> heaps(nworkers, Top(nq, k));
  const bool in_place = storage_ == Storage::f32;
  const float a_mul = metric_ == Metric::l2 ? 2.0f : 1.0f;
  // A filter shared by every query (or removed rows alone): each block's allowed rows are
  // gathered and only they are scored. Per-query filters: every row is scored and tested.
  const bool gather = labels_.checks(params.filter) && params.filter.size() <= 1;
  const bool per_query = params.filter.size() > 1;
  const IdFilter* shared = params.filter.of(0);

  std::vector<std::vector<float>> rows_bufs(nworkers), tiles(nworkers, std::vector<float>(mr * mq));
  std::vector<std::vector<uint32_t>> sels(nworkers);
  parallel_for(ntasks, int(nworkers), [&](size_t t, size_t w) {
    std::vector<float>& rows_buf = rows_bufs[w];
    float* tile = tiles[w].data();
    const size_t b = t % nblocks, c = t / nblocks;
    const size_t r_begin = b * block, r_end = std::min(ntotal_, r_begin + block);
    size_t nrows = r_end - r_begin;
    const uint32_t* sel = nullptr;  // row r is position r_begin + sel[r] when gathered
    if (gather) {
      sels[w].resize(nrows);
      const size_t ns = labels_.select(r_begin, nrows, shared, sels[w].data());
      if (ns == 0) return;
      if (ns < nrows) {
        sel = sels[w].data();
        nrows = ns;
      }
    }
    const float* rows;
    if (in_place && !sel) {
      rows = reinterpret_cast<const float*>(codes_.data()) + r_begin * dim_;
    } else {
      rows_buf.resize(nrows * dim_);
      if (!sel)
        kern.decode_rows(storage_, codes_.data() + r_begin * code_size(), nrows, dim_,
                         rows_buf.data());
      else
        for (size_t r = 0; r < nrows; ++r)
          kern.decode_rows(storage_, codes_.data() + (r_begin + sel[r]) * code_size(), 1, dim_,
                           rows_buf.data() + r * dim_);
      rows = rows_buf.data();
    }
    const auto pos_of = [&](size_t r) { return r_begin + (sel ? sel[r] : r); };
    std::vector<float> a(nrows), bias(nrows, 0.0f);
    for (size_t r = 0; r < nrows; ++r) {
      a[r] = a_mul * row_scale(pos_of(r));
      if (metric_ == Metric::l2) bias[r] = -sq_norms_[pos_of(r)];
    }
    std::vector<float> thr(mq);
    Top& mine = heaps[w];
    const size_t p_end = std::min(npanels, (c + 1) * kPanelsPerChunk);
    for (size_t pn = c * kPanelsPerChunk; pn < p_end; ++pn) {
      const size_t q0 = pn * mq, qn = std::min(mq, nq - q0);
      for (size_t j = 0; j < mq; ++j)
        thr[j] = j < qn ? mine.threshold(q0 + j) : std::numeric_limits<float>::infinity();
      const float* panel = panels.data() + pn * dim_ * mq;
      for (size_t r0 = 0; r0 < nrows; r0 += mr) {
        const size_t nr = std::min(mr, nrows - r0);
        uint32_t cols = kern.gemm_tile(rows + r0 * dim_, nr, panel, dim_, a.data() + r0,
                                       bias.data() + r0, thr.data(), tile);
        for (; cols; cols &= cols - 1) {  // only the queries with a candidate in this tile
          const size_t j = size_t(__builtin_ctz(cols));
          for (size_t r = 0; r < nr; ++r) {
            const float s = tile[r * mq + j];
            if (s >= thr[j]) {
              const size_t pos = pos_of(r0 + r);
              if (per_query && !labels_.allowed(pos, params.filter.of(q0 + j))) continue;
              mine.push(q0 + j, s, int64_t(pos));
              thr[j] = mine.threshold(q0 + j);
            }
          }
        }
      }
    }
  });
  for (size_t w = 1; w < nworkers; ++w) heaps[0].merge(heaps[w]);
  finish(heaps[0], k, qnorm, distances, labels);
}

// bf16 rows on AMX tiles (queries rounded to bf16). Tasks: 256 rows x 256 queries, the depth
// in slices of 1024 so a slice of rows and of queries stays in L2 while the float32 sums
// accumulate in a per-task buffer.
void FlatIndex::search_amx(const float* q, size_t nq, const SearchParams& params,
                           const float* qnorm, float* distances, int64_t* labels) const {
  constexpr size_t kRows = 256, kQueries = 256, kDepth = 1024;
  const size_t k = params.k;
  const bool filtered = labels_.checks(params.filter);
  std::vector<const float*> cols(nq);
  for (size_t i = 0; i < nq; ++i) cols[i] = q + i * dim_;
  const std::vector<uint16_t> packed = amx_pack_columns(cols.data(), nq, dim_);
  const size_t nk = dim_ / kAmxDepth;
  const size_t nblocks = (ntotal_ + kRows - 1) / kRows, nchunks = (nq + kQueries - 1) / kQueries;
  const size_t ntasks = nblocks * nchunks;
  const size_t nworkers =
      std::max<size_t>(1, std::min<size_t>(ntasks, size_t(resolve_threads(params.threads))));
  std::vector<TopKSet> heaps(nworkers, TopKSet(nq, k));
  std::vector<std::vector<float>> sums(nworkers, std::vector<float>(kRows * kQueries));
  const uint16_t* rows = reinterpret_cast<const uint16_t*>(codes_.data());
  const uint16_t* rows_end = rows + ntotal_ * dim_;
  const bool l2 = metric_ == Metric::l2;
  parallel_for(ntasks, int(nworkers), [&](size_t t, size_t w) {
    const size_t b = t % nblocks, c = t / nblocks;
    const size_t r0 = b * kRows, nr = std::min(kRows, ntotal_ - r0);
    const size_t q0 = c * kQueries, qn = std::min(kQueries, nq - q0);
    float* acc = sums[w].data();
    {
      AmxScope tiles;
      for (size_t k0 = 0; k0 < dim_; k0 += kDepth)
        amx_bf16_products(rows + r0 * dim_, dim_, nr, rows_end, packed.data() + q0 / 16 * nk * 512,
                          dim_, k0, std::min(dim_, k0 + kDepth), qn, k0 > 0, acc, kQueries);
    }
    TopKSet& mine = heaps[w];
    float thr[kQueries];
    for (size_t j = 0; j < qn; ++j) thr[j] = mine.threshold(q0 + j);
    for (size_t r = 0; r < nr; ++r) {
      const float* row = acc + r * kQueries;
      const float bias = l2 ? sq_norms_[r0 + r] : 0.0f, mul = l2 ? 2.0f : 1.0f;
      for (size_t j = 0; j < qn; ++j) {
        const float s = mul * row[j] - bias;
        if (s >= thr[j]) {
          if (filtered && !labels_.allowed(r0 + r, params.filter.of(q0 + j))) continue;
          mine.push(q0 + j, s, int64_t(r0 + r));
          thr[j] = mine.threshold(q0 + j);
        }
      }
    }
  });
  for (size_t w = 1; w < nworkers; ++w) heaps[0].merge(heaps[w]);
  // l2 distances of the queries as scored: |q|^2 of the bf16-rounded query.
  std::vector<float> qn_bf16(nq, 0.0f), row(dim_);
  if (l2)
    for (size_t i = 0; i < nq; ++i) {
      for (size_t p = 0; p < dim_; ++p) row[p] = bf16_to_f32(f32_to_bf16(q[i * dim_ + p]));
      qn_bf16[i] = float(sq_norm(row.data(), dim_));
    }
  finish(heaps[0], k, l2 ? qn_bf16.data() : qnorm, distances, labels);
}

void FlatIndex::score_rows(const float* q, const uint8_t* codes, size_t count, size_t first,
                           const uint32_t* pos, float* s) const {
  // Scores: a * dot - |x|^2 (l2); the row scale is one per vector, one global, or 1.
  const float a = (metric_ == Metric::l2 ? 2.0f : 1.0f) *
                  (f8_scale_ == F8Scale::global ? global_scale_ : 1.0f);
  kernels(active_isa()).dot_rows(storage_, q, codes, count, dim_, s);
  const bool vs = !vector_scale_.empty(), l2 = metric_ == Metric::l2;
  for (size_t r = 0; r < count; ++r) {
    const size_t p = pos ? first + pos[r] : first + r;
    s[r] *= vs ? a * vector_scale_[p] : a;
    if (l2) s[r] -= sq_norms_[p];
  }
}

void FlatIndex::search_rows(const float* q, size_t nq, const FlatSearchParams& params,
                            const float* qnorm, float* distances, int64_t* labels) const {
  const Kernels& kern = kernels(active_isa());
  // int8 x int8: each query quantized symmetrically, its scale folded into the score.
  std::vector<int8_t> q8;
  std::vector<float> q8_scale;
  if (params.quantize_queries) {
    q8.resize(nq * dim_);
    q8_scale.resize(nq);
    for (size_t i = 0; i < nq; ++i) {
      const float m = max_abs(q + i * dim_, dim_);
      q8_scale[i] = m > 0.0f ? m / 127.0f : 1.0f;
      for (size_t p = 0; p < dim_; ++p)
        q8[i * dim_ + p] = int8_t(std::nearbyint(q[i * dim_ + p] / q8_scale[i]));
    }
  }
  const int threads = resolve_threads(params.threads);
  const size_t cs = code_size();
  const bool filtered = labels_.checks(params.filter);
  struct Scratch {
    std::vector<float> dots = std::vector<float>(kRowsPerTask);
    std::vector<int32_t> idots;
    GatheredRows allowed;
  };
  std::vector<Scratch> scratch(static_cast<size_t>(threads));
  const bool l2 = metric_ == Metric::l2;
  TopKSet heaps = scan_blocks(
      nq, ntotal_, params.k, kRowsPerTask, threads,
      [&](size_t i, size_t begin, size_t count, TopKSet& top, size_t w) {
        Scratch& sc = scratch[w];
        float* s = sc.dots.data();
        const uint8_t* codes = codes_.data() + begin * cs;
        const uint32_t* sel = nullptr;  // row r is position begin + sel[r] when filtered
        if (filtered) {
          codes = sc.allowed.gather(labels_, params.filter.of(i), begin, count, codes, cs, count);
          if (count == 0) return;
          sel = sc.allowed.positions();
        }
        if (params.quantize_queries) {
          sc.idots.resize(kRowsPerTask);
          int32_t* id = sc.idots.data();
          kern.dot_rows_i8(q8.data() + i * dim_, reinterpret_cast<const int8_t*>(codes), count,
                           dim_, id);
          for (size_t r = 0; r < count; ++r) {
            const size_t p = sel ? begin + sel[r] : begin + r;
            s[r] = float(id[r]) * q8_scale[i] * (l2 ? 2.0f : 1.0f);
            if (l2) s[r] -= sq_norms_[p];
          }
        } else {
          score_rows(q + i * dim_, codes, count, begin, sel, s);
        }
        push_scores(top, i, begin, s, count, sel);
      });
  finish(heaps, params.k, qnorm, distances, labels);
}

RangeResult FlatIndex::range_search(const float* q, size_t nq, float radius,
                                    const SearchParams& params) const {
  require_finite(q, nq * dim_, "range_search: queries");
  require(std::isfinite(radius), "range_search: radius must be finite");
  std::vector<float> qs, qnorm;
  const float* qp = prepare_queries(q, nq, qs, qnorm);
  const bool l2 = metric_ == Metric::l2, filtered = labels_.checks(params.filter);
  RangeHits hits(nq);
  parallel_for(nq, resolve_threads(params.threads), [&](size_t i, size_t) {
    // l2: |q|^2 - score < radius; ip / cosine: score > radius.
    const float floor = l2 ? qnorm[i] - radius : radius;
    std::vector<float> s(kRowsPerTask);
    for (size_t begin = 0; begin < ntotal_; begin += kRowsPerTask) {
      const size_t count = std::min(kRowsPerTask, ntotal_ - begin);
      score_rows(qp + i * dim_, codes_.data() + begin * code_size(), count, begin, nullptr,
                 s.data());
      for (size_t r = 0; r < count; ++r)
        if (s[r] > floor && (!filtered || labels_.allowed(begin + r, params.filter.of(i))))
          hits.add(i, s[r], int64_t(begin + r));
    }
  });
  return hits.finish([&](size_t i, float score) { return l2 ? qnorm[i] - score : score; },
                     [&](int64_t pos) { return labels_.at(pos); });
}

void FlatIndex::search_subset(const float* q, size_t nq, const int64_t* cand, size_t nc,
                              size_t k, int threads, float* distances, int64_t* labels) const {
  require(k > 0, "search: k must be >= 1; got 0");
  require_finite(q, nq * dim_, "search: queries");
  std::vector<float> qs, qnorm;
  const float* qp = prepare_queries(q, nq, qs, qnorm);
  const Kernels& kern = kernels(active_isa());
  const float a = (metric_ == Metric::l2 ? 2.0f : 1.0f) *
                  (f8_scale_ == F8Scale::global ? global_scale_ : 1.0f);
  TopKSet heaps(nq, k);
  // One query per task: its heap is touched by one thread only.
  parallel_for(nq, resolve_threads(threads), [&](size_t i, size_t) {
    // Candidates are scattered rows, each a cache miss: look them all up and prefetch their
    // first lines so the misses overlap instead of queueing one after another (the hardware
    // prefetcher streams the rest of a row; prefetching every line of 40 rows of 1.5 KB at
    // once overran the fill buffers: a 40-candidate re-rank took 19 us, 10 us like this).
    std::vector<int64_t> where(nc);
    const size_t bytes = code_size();
    for (size_t c = 0; c < nc; ++c) {
      const int64_t id = cand[i * nc + c];
      where[c] = id < 0 ? -1 : labels_.position_of(id, ntotal_);
      if (where[c] >= 0)
        for (size_t off = 0; off < std::min<size_t>(bytes, 256); off += 64)
          __builtin_prefetch(codes_.data() + size_t(where[c]) * bytes + off);
    }
    // Encoded rows are gathered into one block and scored by a single kernel call, so its
    // per-call setup (float8 tables, a permuted query) is paid once per query; f32 rows have
    // none and are scored in place.
    const bool gather = storage_ != Storage::f32;
    std::vector<uint8_t> rows(gather ? nc * bytes : 0);
    size_t nv = 0;
    for (size_t c = 0; c < nc; ++c)
      if (where[c] >= 0) {
        if (gather)
          std::memcpy(rows.data() + nv * bytes, codes_.data() + size_t(where[c]) * bytes, bytes);
        where[nv++] = where[c];
      }
    std::vector<float> scores(nv);
    if (gather)
      kern.dot_rows(storage_, qp + i * dim_, rows.data(), nv, dim_, scores.data());
    else
      for (size_t v = 0; v < nv; ++v)
        kern.dot_rows(storage_, qp + i * dim_, codes_.data() + size_t(where[v]) * bytes, 1, dim_,
                      &scores[v]);
    for (size_t v = 0; v < nv; ++v) {
      const size_t pos = size_t(where[v]);
      float s = scores[v] * (vector_scale_.empty() ? a : a * vector_scale_[pos]);
      if (metric_ == Metric::l2) s -= sq_norms_[pos];
      heaps.push(i, s, int64_t(pos));
    }
  });
  finish(heaps, k, qnorm.data(), distances, labels);
}

void FlatIndex::restore(Buffer<uint8_t> codes, Buffer<float> vector_scale,
                        Buffer<float> sq_norms, std::vector<float> dim_scale,
                        std::vector<int64_t> ids, float global_scale, size_t ntotal,
                        std::vector<uint64_t> removed) {
  const auto bad = [](const std::string& what) {
    throw std::invalid_argument("corrupt index data: " + what);
  };
  // No product of the stored count: it could wrap.
  if (codes.size() % code_size() || codes.size() / code_size() != ntotal)
    bad("code array has the wrong size");
  if (vector_scale.size() != (f8_scale_ == F8Scale::vector ? ntotal : 0)) bad("vector scales");
  if (sq_norms.size() != (metric_ == Metric::l2 ? ntotal : 0)) bad("squared norms");
  if (!(dim_scale.empty() || (storage_ == Storage::i8 && dim_scale.size() == dim_)))
    bad("per-dimension scales");
  if (!(ids.empty() || ids.size() == ntotal)) bad("ids");
  if (!std::isfinite(global_scale) || global_scale < 0.0f) bad("global scale");
  if (ntotal > 0 && !(storage_ != Storage::i8 || !dim_scale.empty())) bad("missing i8 scales");
  // Scores are built from these: checked even in a mapped file (4 bytes a row, a small part
  // of the codes), so a corrupt one cannot make every score -inf or NaN.
  const auto finite = [](const float* p, size_t n) {
    for (size_t i = 0; i < n; ++i)
      if (!std::isfinite(p[i])) return false;
    return true;
  };
  if (!finite(vector_scale.data(), vector_scale.size()) || !finite(sq_norms.data(), sq_norms.size()) ||
      !finite(dim_scale.data(), dim_scale.size()))
    bad("non-finite scales or norms");
  codes_ = std::move(codes);
  vector_scale_ = std::move(vector_scale);
  sq_norms_ = std::move(sq_norms);
  dim_scale_ = std::move(dim_scale);
  labels_.restore(std::move(ids), std::move(removed), ntotal);
  global_scale_ = global_scale;
  ntotal_ = ntotal;
}

void FlatIndex::compact() {
  if (labels_.removed() == 0) return;
  const std::vector<size_t> keep = labels_.live_positions(ntotal_);
  const size_t cs = code_size();
  codes_.edit([&](auto& c) { keep_rows(c, keep, cs); });
  for (Buffer<float>* b : {&vector_scale_, &sq_norms_})
    if (!b->empty()) b->edit([&](auto& v) { keep_rows(v, keep, 1); });
  labels_.compact(keep);
  ntotal_ = keep.size();
}

}  // namespace quanta
