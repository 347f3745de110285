#include "quanta/coarse_quantizer.hpp"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <functional>
#include <limits>
#include <utility>

#include "quanta/dispatch.hpp"
#include "quanta/gemm_panels.hpp"
#include "quanta/kernels.hpp"
#include "quanta/parallel.hpp"
#include "quanta/rows.hpp"
#include "quanta/topk.hpp"

namespace quanta {

namespace {

// Every centroid is scored in float32 and selected by select_top from this nprobe on
// (below, a heap of nprobe is cheaper; measured crossover on 1,024 lists), up to this many.
constexpr size_t kDenseFrom = 8;
constexpr size_t kMaxDense = 1 << 15;
constexpr float kUlp = 1.2e-7f;  // 2^-23: one float32 rounding, relative
// Up to this nprobe the floor of the int8 pass comes from a heap, beyond from a histogram.
constexpr size_t kHeapFloorMax = 16;

}  // namespace

CoarseQuantizer::CoarseQuantizer(const float* centroids, size_t n, size_t dim, Metric metric)
    : dim_(dim),
      dim4_((dim + 3) / 4 * 4),
      l2_(metric == Metric::l2),
      exact_(dim, l2_ ? Metric::l2 : Metric::ip, Storage::f32, F8Scale::none, false) {
  exact_.add(centroids, n, nullptr, 0);
  // int8 copies with one scale per dimension (so a query's scale folds into it once).
  scale_.assign(dim, 0.0f);
  for (size_t c = 0; c < n; ++c)
    for (size_t p = 0; p < dim; ++p)
      scale_[p] = std::max(scale_[p], std::fabs(centroids[c * dim + p]));
  bool finite = true;
  for (float& s : scale_) {
    finite = finite && std::isfinite(s) && std::isfinite(s * float(dim));
    s = s > 0 ? s / 127.0f : 1.0f;
  }
  norms_.resize(n);
  for (size_t c = 0; c < n; ++c) {
    norms_[c] = float(sq_norm(centroids + c * dim, dim));
    finite = finite && std::isfinite(norms_[c]);
  }
  // Centroids too large for float32 bounds (a corrupt or hostile file) keep float32 only.
  if (!finite || n < kBoundedFrom) return;
  codes_.assign(n * dim4_, 0);
  l1_.assign(n, 0);
  sums_.assign(n, 0);
  for (size_t c = 0; c < n; ++c)
    for (size_t p = 0; p < dim; ++p) {
      const float v = std::nearbyint(centroids[c * dim + p] / scale_[p]);
      const int8_t k = int8_t(std::clamp(v, -127.0f, 127.0f));
      codes_[c * dim4_ + p] = k;
      l1_[c] += std::abs(int32_t(k));
      sums_[c] += k;
    }
  has_int8_ = true;
}

size_t CoarseQuantizer::memory_usage() const {
  return exact_.memory_usage() + codes_.size() + (scale_.size() + norms_.size()) * sizeof(float) +
         (l1_.size() + sums_.size()) * sizeof(int32_t);
}

bool CoarseQuantizer::bounded(size_t nprobe) const {
  return has_int8_ && nprobe * kBoundedMaxFraction <= size() &&
         kernels(active_isa()).dot_panel_i8 != nullptr;
}

bool CoarseQuantizer::quantize(const float* q, int8_t* q8, float& t, float& usum) const {
  const size_t dim = dim_;
  const float* sc = scale_.data();
  float umax[8] = {}, sum[8] = {};  // eight running lanes: no loop-carried chain
  for (size_t p = 0; p < dim; ++p) {
    const float u = std::fabs(q[p] * sc[p]);
    umax[p % 8] = std::max(umax[p % 8], u);
    sum[p % 8] += u;
  }
  for (size_t l = 1; l < 8; ++l) {
    umax[0] = std::max(umax[0], umax[l]);
    sum[0] += sum[l];
  }
  if (!(std::isfinite(umax[0]) && std::isfinite(sum[0]))) return false;  // float32 instead
  t = umax[0] > 0 ? umax[0] / 127.0f : 1.0f;
  usum = sum[0] * (1.0f + float(dim) * kUlp);  // an upper bound despite the sum's rounding
  const float inv = 1.0f / t;
  for (size_t p = 0; p < dim; ++p) {
    const float v = std::clamp(q[p] * sc[p] * inv, -127.0f, 127.0f);
    q8[p] = int8_t(int(v + std::copysign(0.5f, v)));  // to nearest (the conversion truncates)
  }
  for (size_t p = dim; p < dim4_; ++p) q8[p] = 0;
  return true;
}

// Error of the int8 score: with u_p = q_p s_p quantized as t j_p (|u_p - t j_p| <= t/2) and
// c_p = s_p k_p + e_p (|e_p| <= s_p/2),
//   <q, c> - t <j, k> = sum_p (u_p - t j_p) k_p + sum_p q_p e_p,
// at most (t/2) sum_p |k_p| + (1/2) sum_p |u_p| in size. Twice the float32 rounding of a
// float32 dot product (dim ulps of sum_p |q_p c_p| <= 127 sum_p |u_p|) is added, so that the
// float32 pass picks the same lists as one over every centroid would.
size_t CoarseQuantizer::select_bounded(const float* q, const int32_t* dots, float t,
                                       float usum, size_t nprobe, bool sorted, float* cd,
                                       int64_t* cl) const {
  const size_t n = size();
  thread_local std::vector<float> lows, errs, heap, scores;
  thread_local std::vector<uint32_t> cand;
  thread_local std::vector<std::pair<float, int64_t>> best;
  thread_local ScoreBuckets buckets;
  // Scores as compared: l2 2 <q, c> - |c|^2 (the same order as -|q - c|^2), ip <q, c>.
  const float f = l2_ ? 2.0f : 1.0f, ft = f * t, half_ft = 0.5f * ft;
  const float base = f * usum * (0.5f + 2.0f * float(dim_) * kUlp * 127.0f);
  // l2 scores subtract |c|^2 (on both sides of the bound: only its rounding adds error)
  const float shift = l2_ ? 1.0f : 0.0f, pad = l2_ ? 2 * kUlp : 0.0f;
  lows.resize(n);
  errs.resize(n);
  float* __restrict lo = lows.data();
  float* __restrict err = errs.data();
  const float* __restrict norms = norms_.data();
  const int32_t* __restrict l1 = l1_.data();
  for (size_t c = 0; c < n; ++c) {
    err[c] = base + half_ft * float(l1[c]) + pad * norms[c];
    lo[c] = ft * float(dots[c]) - shift * norms[c] - err[c];
  }
  // A floor at or below the nprobe-th best lower bound. Few lists: a min-heap of nprobe, its
  // top cached (few replacements). Many: the least lower bound in the histogram bucket that
  // holds the nprobe-th (linear in n, where the heap's replacements grow with nprobe).
  float floor = std::numeric_limits<float>::infinity();
  if (nprobe <= kHeapFloorMax) {
    heap.assign(lo, lo + nprobe);
    std::make_heap(heap.begin(), heap.end(), std::greater<float>());
    floor = heap.front();
    for (size_t c = nprobe; c < n; ++c)
      if (lo[c] > floor) {
        std::pop_heap(heap.begin(), heap.end(), std::greater<float>());
        heap.back() = lo[c];
        std::push_heap(heap.begin(), heap.end(), std::greater<float>());
        floor = heap.front();
      }
  } else {
    buckets.split(lo, n, nprobe);
    const uint8_t* bk = buckets.of.data();
    for (size_t c = 0; c < n; ++c)
      floor = bk[c] == buckets.edge && lo[c] < floor ? lo[c] : floor;
  }
  cand.clear();
  for (size_t c = 0; c < n; ++c)  // upper bound >= floor: may be among the nprobe best
    if (lo[c] + 2 * err[c] >= floor) cand.push_back(uint32_t(c));
  if (cand.size() < nprobe) return 0;  // only with non-finite bounds
  scores.resize(cand.size());
  const Kernels& kern = kernels(active_isa());
  kern.dot_gather(Storage::f32, q, exact_.codes().data(), cand.data(), cand.size(), dim_,
                  scores.data());
  best.resize(cand.size());
  for (size_t j = 0; j < cand.size(); ++j)
    best[j] = {l2_ ? 2 * scores[j] - norms_[cand[j]] : scores[j], int64_t(cand[j])};
  const auto better = [](const auto& a, const auto& b) {
    return TopKSet::better(a.first, a.second, b.first, b.second);
  };
  if (sorted)
    std::partial_sort(best.begin(), best.begin() + nprobe, best.end(), better);
  else if (nprobe < best.size())
    std::nth_element(best.begin(), best.begin() + nprobe - 1, best.end(), better);
  const float qn = l2_ ? float(sq_norm(q, dim_)) : 0.0f;
  for (size_t u = 0; u < nprobe; ++u) {
    cl[u] = best[u].second;
    cd[u] = l2_ ? std::max(0.0f, qn - best[u].first) : best[u].first;
  }
  return cand.size();
}

// Up to kPanelI8 queries: one pass of the int8 panel kernel over every centroid (a single
// query: the row kernel, whose 64-byte products waste nothing), then each query's selection.
void CoarseQuantizer::search_bounded(const float* q, size_t nq, size_t nprobe, bool sorted,
                                     float* cd, int64_t* cl, size_t* rescored) const {
  const size_t n = size(), groups = dim4_ / 4;
  const Kernels& kern = kernels(active_isa());
  thread_local std::vector<int8_t> q8;
  thread_local std::vector<uint8_t> panel;
  thread_local std::vector<int32_t> block, dots;
  float t[kPanelI8], usum[kPanelI8];
  bool ok[kPanelI8];
  q8.resize(kPanelI8 * dim4_);
  for (size_t j = 0; j < nq; ++j)
    ok[j] = quantize(q + j * dim_, q8.data() + j * dim4_, t[j], usum[j]);
  if (nq > 1) {  // the panel: each query's 4-byte groups in turn, plus 128 (missing: zeros)
    panel.assign(kPanelI8 * dim4_, uint8_t(0));
    for (size_t j = 0; j < nq; ++j)
      for (size_t g = 0; g < groups; ++g)
        std::memcpy(&panel[g * 4 * kPanelI8 + 4 * j], &q8[j * dim4_ + 4 * g], 4);
    for (auto& b : panel) b ^= 0x80;  // two's complement: + 128 as unsigned
    block.resize(n * kPanelI8);
    kern.dot_panel_i8(codes_.data(), sums_.data(), n, panel.data(), dim4_, block.data());
  }
  dots.resize(n);
  for (size_t j = 0; j < nq; ++j) {
    size_t got = 0;
    if (ok[j]) {
      if (nq == 1)
        kern.dot_rows_i8(q8.data(), codes_.data(), n, dim4_, dots.data());
      else
        for (size_t c = 0; c < n; ++c) dots[c] = block[c * kPanelI8 + j];
      got = select_bounded(q + j * dim_, dots.data(), t[j], usum[j], nprobe, sorted,
                           cd + j * nprobe, cl + j * nprobe);
    }
    if (!got) {  // a query the bound cannot serve: every centroid in float32
      FlatSearchParams sp;
      sp.k = nprobe;
      sp.threads = 1;
      exact_.search(q + j * dim_, 1, sp, cd + j * nprobe, cl + j * nprobe);
      got = n;
    }
    if (rescored) rescored[j] = got;
  }
}

void CoarseQuantizer::rescored(const float* q, size_t nq, size_t nprobe, int64_t* out) const {
  if (!bounded(nprobe)) {
    std::fill(out, out + nq, int64_t(size()));
    return;
  }
  std::vector<float> cd(kPanelI8 * nprobe);
  std::vector<int64_t> cl(kPanelI8 * nprobe);
  size_t got[kPanelI8];
  for (size_t i0 = 0; i0 < nq; i0 += kPanelI8) {
    const size_t nb = std::min(kPanelI8, nq - i0);
    search_bounded(q + i0 * dim_, nb, nprobe, false, cd.data(), cl.data(), got);
    for (size_t j = 0; j < nb; ++j) out[i0 + j] = int64_t(got[j]);
  }
}

void CoarseQuantizer::search(const float* q, size_t nq, size_t nprobe, int threads, float* cd,
                             int64_t* cl, bool sorted) const {
  const size_t n = size();
  if (bounded(nprobe)) {
    parallel_for((nq + kPanelI8 - 1) / kPanelI8, threads, [&](size_t b, size_t) {
      const size_t i0 = b * kPanelI8, nb = std::min(kPanelI8, nq - i0);
      search_bounded(q + i0 * dim_, nb, nprobe, sorted, cd + i0 * nprobe, cl + i0 * nprobe,
                     nullptr);
    });
  } else if (sorted || nprobe < kDenseFrom || n > kMaxDense) {
    FlatSearchParams sp;
    sp.k = nprobe;
    sp.threads = threads;
    exact_.search(q, nq, sp, cd, cl);
  } else {
    search_dense(q, nq, nprobe, threads, cd, cl);
  }
}

// Many lists out of few: every query's scores against every centroid, then select_top (a
// heap of nprobe would pay more in unpredictable branches than the scores cost). Batches go
// through the GEMM kernel (the centroids as rows in place, the queries packed into panels);
// fewer queries than a panel holds are scored row by row.
void CoarseQuantizer::search_dense(const float* qs, size_t nq, size_t nprobe, int threads,
                                   float* cd, int64_t* cl) const {
  const size_t n = size();
  const float* cnorm = norms_.data();
  const auto* rows = exact_.codes().data();
  const float* crows = reinterpret_cast<const float*>(rows);
  const Kernels& kern = kernels(active_isa());
  const size_t mq = size_t(kern.mq), mr = size_t(kern.mr);
  const bool gemm = nq >= mq;
  const size_t nblocks = gemm ? (nq + mq - 1) / mq : nq;  // a panel, or one query
  const std::vector<float> panels =
      gemm ? pack_panels(nq, dim_, mq, [&](size_t i, size_t p) { return qs[i * dim_ + p]; })
           : std::vector<float>();
  parallel_for(nblocks, threads, [&](size_t b, size_t) {
    thread_local std::vector<float> scores, tile;
    const size_t q0 = gemm ? b * mq : b, nb = gemm ? std::min(mq, nq - q0) : 1;
    scores.resize(nb * n);  // [query in block][list]: <q, c>
    if (gemm) {
      tile.resize(mr * mq);
      const float* panel = panels.data() + b * dim_ * mq;
      for (size_t r0 = 0; r0 < n; r0 += mr) {
        const size_t nr = std::min(mr, n - r0);
        gemm_tile_plain(kern, crows + r0 * dim_, nr, panel, dim_, tile.data());
        for (size_t j = 0; j < nb; ++j)
          for (size_t r = 0; r < nr; ++r) scores[j * n + r0 + r] = tile[r * mq + j];
      }
    } else {
      kern.dot_rows(Storage::f32, qs + q0 * dim_, rows, n, dim_, scores.data());
    }
    for (size_t j = 0; j < nb; ++j) {
      const size_t i = q0 + j;
      float* s = scores.data() + j * n;
      if (l2_)  // -|q - c|^2 up to |q|^2: the same order
        for (size_t l = 0; l < n; ++l) s[l] = 2 * s[l] - cnorm[l];
      select_top(s, n, nprobe, cl + i * nprobe);
      const float qn = l2_ ? float(sq_norm(qs + i * dim_, dim_)) : 0.0f;
      for (size_t u = 0; u < nprobe; ++u) {
        const float v = s[cl[i * nprobe + u]];
        cd[i * nprobe + u] = l2_ ? std::max(0.0f, qn - v) : v;
      }
    }
  });
}

}  // namespace quanta
