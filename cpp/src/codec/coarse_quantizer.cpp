#include "quanta/codec/coarse_quantizer.hpp"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <type_traits>
#include <utility>

#include "quanta/core/parallel.hpp"
#include "quanta/core/rows.hpp"
#include "quanta/core/topk.hpp"
#include "quanta/simd/dispatch.hpp"
#include "quanta/simd/gemm_panels.hpp"
#include "quanta/simd/kernels.hpp"

namespace quanta {

namespace {

// Every centroid is scored in float32 and selected by select_top from this nprobe on
// (below, a heap of nprobe is cheaper; measured crossover on 1,024 lists), up to this many.
constexpr size_t kDenseFrom = 8;
constexpr size_t kMaxDense = 1 << 15;
constexpr float kUlp = 1.2e-7f;  // 2^-23: one float32 rounding, relative
// Four float lanes (GCC / Clang vector extension: SSE2 or NEON compares and selects, which
// the loop vectorizer does not reliably produce from per-lane ternaries).
using F4 = float __attribute__((vector_size(16)));

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
  sums_.assign(n, 0);
  for (size_t c = 0; c < n; ++c) {
    int32_t l1 = 0;
    for (size_t p = 0; p < dim; ++p) {
      const float v = std::nearbyint(centroids[c * dim + p] / scale_[p]);
      const int8_t k = int8_t(std::clamp(v, -127.0f, 127.0f));
      codes_[c * dim4_ + p] = k;
      l1 += std::abs(int32_t(k));
      sums_[c] += k;
    }
    max_l1_ = std::max(max_l1_, l1);
  }
  max_norm_ = *std::max_element(norms_.begin(), norms_.end());
  has_int8_ = true;
}

size_t CoarseQuantizer::memory_usage() const {
  return exact_.memory_usage() + codes_.size() + (scale_.size() + norms_.size()) * sizeof(float) +
         sums_.size() * sizeof(int32_t);
}

bool CoarseQuantizer::bounded(size_t nprobe) const {
  return has_int8_ && nprobe * kBoundedMaxFraction <= size() &&
         kernels(active_isa()).dot_panel_i8 != nullptr;
}

bool CoarseQuantizer::quantize(const float* q, int8_t* q8, float& t, float& usum) const {
  const size_t dim = dim_;
  const float* sc = scale_.data();
  F4 mx = {}, sm = {};  // four lanes at a time (NaN leaves mx but not sm: caught below)
  size_t p = 0;
  for (; p + 4 <= dim; p += 4) {
    F4 x, c;
    std::memcpy(&x, q + p, sizeof x);
    std::memcpy(&c, sc + p, sizeof c);
    F4 u = x * c;
    u = u < -u ? -u : u;
    mx = mx < u ? u : mx;
    sm += u;
  }
  float umax = std::max(std::max(mx[0], mx[1]), std::max(mx[2], mx[3]));
  float sum = (sm[0] + sm[1]) + (sm[2] + sm[3]);
  for (; p < dim; ++p) {
    const float u = std::fabs(q[p] * sc[p]);
    umax = std::max(umax, u);
    sum += u;
  }
  if (!(std::isfinite(umax) && std::isfinite(sum))) return false;  // float32 instead
  t = umax > 0 ? umax / 127.0f : 1.0f;
  usum = sum * (1.0f + float(dim) * kUlp);  // an upper bound despite the sum's rounding
  const float inv = 1.0f / t;
  // To nearest: adding and subtracting 1.5 * 2^23 leaves a float in [-127, 127] rounded to
  // an integer (ties to even); the conversion is then exact.
  const float magic = 12582912.0f;
  for (p = 0; p < dim; ++p) {
    const float v = std::clamp(q[p] * sc[p] * inv, -127.0f, 127.0f);
    q8[p] = int8_t(int((v + magic) - magic));
  }
  for (p = dim; p < dim4_; ++p) q8[p] = 0;
  return true;
}

// Error of the int8 score: with u_p = q_p s_p quantized as t j_p (|u_p - t j_p| <= t/2) and
// c_p = s_p k_p + e_p (|e_p| <= s_p/2),
//   <q, c> - t <j, k> = sum_p (u_p - t j_p) k_p + sum_p q_p e_p,
// at most (t/2) sum_p |k_p| + (1/2) sum_p |u_p| in size. Twice the float32 rounding of a
// float32 dot product (dim ulps of sum_p |q_p c_p| <= 127 sum_p |u_p|) is added, so that the
// float32 pass picks the same lists as one over every centroid would.
//
// A panel of L queries side by side (dots[c * L + j], the layout the panel kernel writes).
// Each query's int8 estimate s_c of centroid c's score is within E of the float32 score, E
// the largest error bound over the centroids. A centroid can then be among the nprobe best
// only if s_c + E >= the nprobe-th best lower bound >= t0 - E, t0 the nprobe-th largest s_c
// or anything below it: here the nprobe-th largest of the maxima of groups of gs consecutive
// centroids, kept for every lane at once by a network of nprobe max / min steps (no
// branches, no per-query sort). Candidates (s_c >= t0 - 2 E) sit in the few groups whose
// maximum reaches that. One error bound for all centroids rescores a few more of them than
// per-centroid bounds would (24.5 against 19.6 of 1,024 at nprobe 8 on MiniLM), for a
// selection of plain loops over contiguous lanes that vectorize.
template <size_t L>
void CoarseQuantizer::select_bounded(const float* q, size_t nq, const int32_t* dots,
                                     const float* t, const float* usum, const bool* ok,
                                     size_t nprobe, bool sorted, float* cd, int64_t* cl,
                                     size_t* got) const {
  const size_t n = size(), gs = n >= 64 * nprobe ? 16 : 8, ng = (n + gs - 1) / gs;
  thread_local std::vector<float> est, gmax, top, scores;
  thread_local std::vector<uint32_t> groups, cand;
  thread_local std::vector<std::pair<float, int64_t>> best;
  // Scores as compared: l2 2 <q, c> - |c|^2 (the same order as -|q - c|^2), ip <q, c>. The
  // error bound of centroid c: base + (f t / 2) |k_c|_1 + pad |c|^2, at most E.
  const float f = l2_ ? 2.0f : 1.0f, shift = l2_ ? 1.0f : 0.0f, pad = l2_ ? 2 * kUlp : 0.0f;
  float ft[L], emax[L];
  for (size_t j = 0; j < L; ++j) {
    const bool live = j < nq && ok[j];
    ft[j] = live ? f * t[j] : 0.0f;
    const float base = live ? f * usum[j] * (0.5f + 2.0f * float(dim_) * kUlp * 127.0f) : 0.0f;
    emax[j] = base + 0.5f * ft[j] * float(max_l1_) + pad * max_norm_;
  }
  est.resize(n * L);
  gmax.resize(ng * L);
  float* __restrict s = est.data();
  float* __restrict gm = gmax.data();
  const float* __restrict norms = norms_.data();
  for (size_t c = 0; c < n; ++c)
    for (size_t j = 0; j < L; ++j) s[c * L + j] = ft[j] * float(dots[c * L + j]) - shift * norms[c];
  // Lanes as W values of type V: a panel's 16 as four F4, one query as a float.
  using V = std::conditional_t<L == 1, float, F4>;
  constexpr size_t W = L * sizeof(float) / sizeof(V);
  V m[W], v[W], a[W];
  for (size_t g = 0; g < ng; ++g) {  // group maxima
    std::memcpy(m, s + g * gs * L, sizeof m);
    for (size_t c = g * gs + 1; c < std::min(n, (g + 1) * gs); ++c) {
      std::memcpy(v, s + c * L, sizeof v);
      for (size_t w = 0; w < W; ++w) m[w] = m[w] < v[w] ? v[w] : m[w];
    }
    std::memcpy(gm + g * L, m, sizeof m);
  }
  // The nprobe largest group maxima of each lane, descending: each group's maximum goes down
  // the list, swapping with every smaller entry (max / min, no branches).
  top.assign(nprobe * L, -std::numeric_limits<float>::infinity());
  float* __restrict tp = top.data();
  for (size_t g = 0; g < ng; ++g) {
    std::memcpy(v, gm + g * L, sizeof v);
    for (size_t i = 0; i < nprobe; ++i) {
      std::memcpy(a, tp + i * L, sizeof a);
      for (size_t w = 0; w < W; ++w) {
        const V hi = a[w] < v[w] ? v[w] : a[w];
        v[w] = a[w] < v[w] ? a[w] : v[w];
        a[w] = hi;
      }
      std::memcpy(tp + i * L, a, sizeof a);
    }
  }
  const Kernels& kern = kernels(active_isa());
  for (size_t j = 0; j < nq; ++j) {
    got[j] = 0;
    if (!ok[j]) continue;
    const float t0 = tp[(nprobe - 1) * L + j], e2 = 2 * emax[j];
    const float reach = t0 - e2 - 4 * kUlp * (std::fabs(t0) + e2);  // room for rounding
    // Candidates: the groups that reach, then their centroids that do (compactions without
    // branches: which pass is unpredictable).
    groups.resize(ng);
    size_t np = 0;
    for (size_t g = 0; g < ng; ++g) {
      groups[np] = uint32_t(g);
      np += gm[g * L + j] >= reach;
    }
    cand.resize(np * gs);
    size_t nc = 0;
    for (size_t u = 0; u < np; ++u)
      for (size_t c = groups[u] * gs; c < std::min(n, (groups[u] + 1) * gs); ++c) {
        cand[nc] = uint32_t(c);
        nc += s[c * L + j] >= reach;
      }
    cand.resize(nc);
    if (cand.size() < nprobe) continue;
    // The candidates in float32, the best nprobe of them.
    const float* qj = q + j * dim_;
    scores.resize(cand.size());
    kern.dot_gather(Storage::f32, qj, exact_.codes().data(), cand.data(), cand.size(), dim_,
                    scores.data());
    best.resize(cand.size());
    for (size_t u = 0; u < cand.size(); ++u)
      best[u] = {l2_ ? 2 * scores[u] - norms[cand[u]] : scores[u], int64_t(cand[u])};
    const auto better = [](const auto& a, const auto& b) {
      return TopKSet::better(a.first, a.second, b.first, b.second);
    };
    if (sorted)
      std::partial_sort(best.begin(), best.begin() + nprobe, best.end(), better);
    else if (nprobe < best.size())
      std::nth_element(best.begin(), best.begin() + nprobe - 1, best.end(), better);
    const float qn = l2_ ? float(sq_norm(qj, dim_)) : 0.0f;
    for (size_t u = 0; u < nprobe; ++u) {
      cl[j * nprobe + u] = best[u].second;
      cd[j * nprobe + u] = l2_ ? std::max(0.0f, qn - best[u].first) : best[u].first;
    }
    got[j] = cand.size();
  }
}

// Up to kPanelI8 queries: one pass of the int8 panel kernel over every centroid (a single
// query: the row kernel, whose 64-byte products waste nothing), then each query's selection.
void CoarseQuantizer::search_bounded(const float* q, size_t nq, size_t nprobe, bool sorted,
                                     float* cd, int64_t* cl, size_t* rescored) const {
  const size_t n = size(), groups = dim4_ / 4;
  const Kernels& kern = kernels(active_isa());
  thread_local std::vector<int8_t> q8;
  thread_local std::vector<uint8_t> panel;
  thread_local std::vector<int32_t> dots;
  float t[kPanelI8], usum[kPanelI8];
  bool ok[kPanelI8];
  size_t got[kPanelI8];
  q8.resize(kPanelI8 * dim4_);
  for (size_t j = 0; j < nq; ++j)
    ok[j] = quantize(q + j * dim_, q8.data() + j * dim4_, t[j], usum[j]);
  if (nq == 1) {
    dots.resize(n);
    if (ok[0]) kern.dot_rows_i8(q8.data(), codes_.data(), n, dim4_, dots.data());
    select_bounded<1>(q, 1, dots.data(), t, usum, ok, nprobe, sorted, cd, cl, got);
  } else {  // the panel: each query's 4-byte groups in turn, plus 128 (missing: zeros)
    panel.assign(kPanelI8 * dim4_, uint8_t(0));
    for (size_t j = 0; j < nq; ++j)
      for (size_t g = 0; g < groups; ++g)
        std::memcpy(&panel[g * 4 * kPanelI8 + 4 * j], &q8[j * dim4_ + 4 * g], 4);
    for (auto& b : panel) b ^= 0x80;  // two's complement: + 128 as unsigned
    dots.resize(n * kPanelI8);
    kern.dot_panel_i8(codes_.data(), sums_.data(), n, panel.data(), dim4_, dots.data());
    select_bounded<kPanelI8>(q, nq, dots.data(), t, usum, ok, nprobe, sorted, cd, cl, got);
  }
  for (size_t j = 0; j < nq; ++j) {
    if (!got[j]) {  // a query the bound cannot serve: every centroid in float32
      FlatSearchParams sp;
      sp.k = nprobe;
      sp.threads = 1;
      exact_.search(q + j * dim_, 1, sp, cd + j * nprobe, cl + j * nprobe);
      got[j] = n;
    }
    if (rescored) rescored[j] = got[j];
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
