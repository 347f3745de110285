#include "quanta/codec/fde.hpp"

#include <algorithm>
#include <cstring>
#include <limits>
#include <string>

#include "quanta/core/error.hpp"
#include "quanta/core/parallel.hpp"
#include "quanta/core/token_sets.hpp"
#include "quanta/simd/gemm_panels.hpp"
#include "quanta/simd/kernels.hpp"

namespace quanta {

namespace {

constexpr size_t kSetsPerTask = 32;
constexpr size_t kGemmRows = 112;  // token rows per GEMM call (8 AVX-512 tiles)

// The SimHash bucket of one token from its k_sim hyperplane products h.
uint32_t bucket_of(const float* h, size_t k_sim, BucketOrder order) {
  uint32_t id = 0;
  for (size_t i = 0; i < k_sim; ++i) {
    const uint32_t bit = h[i] > 0.0f;
    id = order == BucketOrder::binary ? id | (bit << i) : (id << 1) + (bit ^ (id & 1u));
  }
  return id;
}

// The sign pattern a bucket id stands for (the Hamming distance of buckets is that of these).
uint32_t pattern_of(uint32_t id, BucketOrder order) {
  return order == BucketOrder::binary ? id : id ^ (id >> 1);
}

}  // namespace

FDEEncoder::FDEEncoder(const FdeConfig& config, std::vector<float> simhash,
                       std::vector<float> projection, std::vector<int32_t> final_index,
                       std::vector<float> final_sign)
    : cfg_(config),
      simhash_(std::move(simhash)),
      projection_(std::move(projection)),
      final_index_(std::move(final_index)),
      final_sign_(std::move(final_sign)) {
  const size_t d = cfg_.dim, k = cfg_.k_sim, dp = cfg_.d_proj, R = cfg_.r_reps;
  require(d > 0, "dim must be positive");
  require(k <= 20, "k_sim must be in [0, 20] (2^k_sim buckets per repetition)");
  require(dp > 0 && R > 0, "d_proj and r_reps must be positive");
  require(simhash_.size() == R * d * k, "simhash matrix has the wrong size");
  require(projection_.empty() ? dp == d : projection_.size() == R * d * dp,
          "projection matrix has the wrong size (empty means identity, d_proj == dim)");
  require(final_index_.size() == (cfg_.final_dim ? fde_dim() : 0) &&
              final_sign_.size() == final_index_.size(),
          "final projection has the wrong size");
  for (int32_t i : final_index_)
    require(i >= 0 && size_t(i) < cfg_.final_dim, "final projection index out of range");
  require_finite(simhash_.data(), simhash_.size(), "simhash");
  require_finite(projection_.data(), projection_.size(), "projection");

  // One fused matrix: the hyperplanes of every repetition, then their projections, so one
  // GEMM per token block gives both (projecting tokens before averaging is the same linear map).
  cols_ = R * k + (projection_.empty() ? 0 : R * dp);
  popcount_.resize(buckets());
  for (size_t i = 1; i < popcount_.size(); ++i) popcount_[i] = uint8_t(popcount_[i >> 1] + (i & 1));
  panels_ = pack_panels(cols_, d, size_t(kernels(active_isa()).mq), [&](size_t c, size_t p) {
    if (c < R * k) return simhash_[((c / k) * d + p) * k + c % k];
    c -= R * k;
    return projection_[((c / dp) * d + p) * dp + c % dp];
  });
}

void FDEEncoder::encode(const float* tokens, size_t ntokens, const int64_t* offsets, size_t n,
                        bool documents, bool fill_empty, int threads, float* out) const {
  require(!fill_empty || documents, "fill_empty applies to documents only");
  validate_sets(offsets, n, ntokens, "offsets");
  require_finite(tokens, ntokens * cfg_.dim, "tokens");
  const size_t ntasks = (n + kSetsPerTask - 1) / kSetsPerTask;
  const size_t nworkers = std::max<size_t>(1, std::min<size_t>(ntasks, resolve_threads(threads)));
  std::vector<std::vector<float>> ys(nworkers);
  std::vector<Work> works(nworkers);
  const size_t mq = size_t(kernels(active_isa()).mq);
  const size_t ystride = (cols_ + mq - 1) / mq * mq;
  parallel_for(ntasks, int(nworkers), [&](size_t t, size_t w) {
    const size_t end = std::min(n, (t + 1) * kSetsPerTask);
    // The products of consecutive sets' tokens in one GEMM of about kGemmRows rows: full
    // micro-kernel tiles even for short sets.
    for (size_t i0 = t * kSetsPerTask; i0 < end;) {
      size_t i1 = i0 + 1;
      while (i1 < end && size_t(offsets[i1 + 1] - offsets[i0]) <= kGemmRows) ++i1;
      const size_t r0 = size_t(offsets[i0]), nrows = size_t(offsets[i1]) - r0;
      ys[w].resize(nrows * ystride);
      project(tokens + r0 * cfg_.dim, nrows, ys[w].data());
      for (size_t i = i0; i < i1; ++i) {
        const size_t a = size_t(offsets[i]) - r0, nt = size_t(offsets[i + 1] - offsets[i]);
        encode_one(tokens + size_t(offsets[i]) * cfg_.dim, nt, documents, fill_empty,
                   ys[w].data() + a * ystride, works[w], out + i * output_dim());
      }
      i0 = i1;
    }
  });
}

void FDEEncoder::project(const float* x, size_t n, float* y) const {
  const Kernels& kern = kernels(active_isa());
  const size_t d = cfg_.dim, mq = size_t(kern.mq), mr = size_t(kern.mr);
  const size_t npanels = (cols_ + mq - 1) / mq, ystride = npanels * mq;
  float tile[64 * 64];
  for (size_t t0 = 0; t0 < n; t0 += mr) {
    const size_t nr = std::min(mr, n - t0);
    for (size_t pn = 0; pn < npanels; ++pn) {
      gemm_tile_plain(kern, x + t0 * d, nr, panels_.data() + pn * d * mq, d, tile);
      for (size_t r = 0; r < nr; ++r)
        std::memcpy(y + (t0 + r) * ystride + pn * mq, tile + r * mq, mq * sizeof(float));
    }
  }
}

void FDEEncoder::encode_one(const float* x, size_t n, bool documents, bool fill_empty,
                            const float* y,
                            Work& work, float* out) const {
  const Kernels& kern = kernels(active_isa());
  const size_t d = cfg_.dim, k = cfg_.k_sim, dp = cfg_.d_proj, R = cfg_.r_reps, B = buckets();
  const size_t mq = size_t(kern.mq);
  const size_t ystride = (cols_ + mq - 1) / mq * mq;

  // Per repetition: bucket sums (or averages) of the projected tokens, then the fill.
  const size_t fde = fde_dim();
  work.acc.resize(cfg_.final_dim ? fde : 0);
  work.count.resize(B);
  work.first.resize(B);
  work.occ.resize(B);
  float* acc_all = cfg_.final_dim ? work.acc.data() : out;
  int32_t* count = work.count.data();
  int32_t* first = work.first.data();
  uint32_t* occ = work.occ.data();  // occupied buckets
  for (size_t r = 0; r < R; ++r) {
    float* acc = acc_all + r * B * dp;
    std::fill(acc, acc + B * dp, 0.0f);
    std::fill(count, count + B, 0);
    std::fill(first, first + B, -1);
    size_t nocc = 0;
    auto token = [&](size_t t) {
      return projection_.empty() ? x + t * d : y + t * ystride + R * k + r * dp;
    };
    for (size_t t = 0; t < n; ++t) {
      const uint32_t b = bucket_of(y + t * ystride + r * k, k, cfg_.order);
      const float* v = token(t);
      float* a = acc + b * dp;
      for (size_t j = 0; j < dp; ++j) a[j] += v[j];
      if (count[b]++ == 0) {
        first[b] = int32_t(t);
        occ[nocc++] = b;  // in order of first token
      }
    }
    if (documents)
      for (size_t b = 0; b < B; ++b)
        if (count[b] > 1) {
          const float c = float(count[b]);
          for (size_t j = 0; j < dp; ++j) acc[b * dp + j] /= c;
        }
    if (!fill_empty || nocc == B) continue;
    // Each empty bucket copies the first token of the nearest occupied bucket in Hamming
    // distance. Ties: occupied buckets are tried by id (binary order: FastEmbed's lowest id)
    // or by first token (Gray order: graph-mining's lowest token index); strict < keeps the
    // first.
    if (cfg_.order == BucketOrder::binary) std::sort(occ, occ + nocc);
    for (size_t e = 0; e < B; ++e) {
      if (count[e]) continue;
      const uint32_t pe = pattern_of(uint32_t(e), cfg_.order);
      int best_dist = 1 << 30;
      uint32_t best = 0;
      for (size_t o = 0; o < nocc; ++o) {
        const int dist = popcount_[pe ^ pattern_of(occ[o], cfg_.order)];
        if (dist < best_dist) {
          best_dist = dist;
          best = occ[o];
        }
      }
      std::memcpy(acc + e * dp, token(size_t(first[best])), dp * sizeof(float));
    }
  }
  if (cfg_.final_dim) {
    std::fill(out, out + cfg_.final_dim, 0.0f);
    for (size_t i = 0; i < fde; ++i) out[final_index_[i]] += final_sign_[i] * acc_all[i];
  }
}

}  // namespace quanta
