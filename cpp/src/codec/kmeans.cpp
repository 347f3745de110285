#include "quanta/codec/kmeans.hpp"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <stdexcept>
#include <string>

#include "quanta/core/parallel.hpp"
#include "quanta/core/random.hpp"
#include "quanta/core/rows.hpp"
#include "quanta/simd/gemm_panels.hpp"
#include "quanta/simd/kernels.hpp"

namespace quanta {

namespace {

constexpr size_t kChunk = 4096;
constexpr size_t kDirectMaxDim = 64;  // up to here the per-point kernel beats the GEMM path

// k-means++ seeding: each next centroid is drawn with probability proportional to the squared
// distance to the nearest one chosen so far (for spherical, to 1 - cosine).
std::vector<float> seed_plus_plus(const float* x, size_t n, size_t dim, size_t k, bool spherical,
                                  Rng& rng, int threads) {
  const Kernels& kern = kernels(active_isa());
  std::vector<float> c(k * dim);
  std::vector<double> xnorm(n);
  for (size_t i = 0; i < n; ++i) xnorm[i] = sq_norm(x + i * dim, dim);
  std::vector<double> best(n, INFINITY);
  size_t pick = rng.below(n);
  const size_t nchunks = (n + kChunk - 1) / kChunk;
  std::vector<std::vector<float>> dots(nchunks);
  for (size_t j = 0; j < k; ++j) {
    std::copy(x + pick * dim, x + (pick + 1) * dim, c.begin() + j * dim);
    if (j + 1 == k) break;
    const float* cj = c.data() + j * dim;
    const double cnorm = sq_norm(cj, dim);
    parallel_for(nchunks, threads, [&](size_t t, size_t) {
      const size_t b = t * kChunk, e = std::min(n, b + kChunk);
      dots[t].resize(e - b);
      kern.dot_rows(Storage::f32, cj, reinterpret_cast<const uint8_t*>(x + b * dim), e - b, dim,
                    dots[t].data());
      for (size_t i = b; i < e; ++i) {
        const double ip = dots[t][i - b];
        const double d = spherical ? 1.0 - ip : std::max(0.0, xnorm[i] - 2 * ip + cnorm);
        best[i] = std::min(best[i], d);
      }
    });
    double total = 0;
    for (double d : best) total += std::max(d, 0.0);
    if (total <= 0) {  // every point coincides with a centroid: take any point
      pick = rng.below(n);
      continue;
    }
    double r = rng.uniform() * total;
    pick = n - 1;
    for (size_t i = 0; i < n; ++i) {
      r -= std::max(best[i], 0.0);
      if (r < 0) {
        pick = i;
        break;
      }
    }
  }
  return c;
}

// k distinct points of the sample, drawn uniformly (a partial Fisher-Yates shuffle).
std::vector<float> seed_sample(const float* x, size_t n, size_t dim, size_t k, Rng& rng) {
  std::vector<size_t> perm(n);
  std::iota(perm.begin(), perm.end(), size_t(0));
  std::vector<float> c(k * dim);
  for (size_t j = 0; j < k; ++j) {
    std::swap(perm[j], perm[j + rng.below(n - j)]);
    std::copy(x + perm[j] * dim, x + (perm[j] + 1) * dim, c.begin() + j * dim);
  }
  return c;
}

}  // namespace

std::vector<size_t> sample_rows(size_t n, size_t cap, uint64_t seed) {
  std::vector<size_t> perm(n);
  std::iota(perm.begin(), perm.end(), size_t(0));
  if (n <= cap) return perm;
  Rng rng(seed);  // a partial Fisher-Yates shuffle
  for (size_t i = 0; i < cap; ++i) std::swap(perm[i], perm[i + rng.below(n - i)]);
  perm.resize(cap);
  std::sort(perm.begin(), perm.end());
  return perm;
}

void assign_nearest(const float* x, size_t n, const float* centroids, size_t k, size_t dim,
                    bool spherical, int threads, int64_t* assign, float* distances) {
  const Kernels& kern = kernels(active_isa());
  if (dim > kDirectMaxDim) {
    // Large dim: a GEMM with the points as rows (read in place) and the centroids packed as
    // the column panels; each point's best centroid is reduced straight from the tiles.
    const size_t mq = size_t(kern.mq), mr = size_t(kern.mr);
    const size_t npanels = (k + mq - 1) / mq;
    const std::vector<float> panels =
        pack_panels(k, dim, mq, [&](size_t c, size_t p) { return centroids[c * dim + p]; });
    std::vector<float> cterm(npanels * mq, -INFINITY);  // -|c|^2 (0 when spherical); pads -inf
    for (size_t c = 0; c < k; ++c)
      cterm[c] = spherical ? 0.0f : -float(sq_norm(centroids + c * dim, dim));
    const float a = spherical ? 1.0f : 2.0f;
    const size_t nchunks = (n + kChunk - 1) / kChunk;
    parallel_for(nchunks, threads, [&](size_t t, size_t) {
      std::vector<float> tile(mr * mq), scale(mr, a), zero(mr, 0.0f), thr(mq, INFINITY);
      float best[64];
      int64_t arg[64];
      const size_t e = std::min(n, (t + 1) * kChunk);
      for (size_t r0 = t * kChunk; r0 < e; r0 += mr) {
        const size_t nr = std::min(mr, e - r0);
        std::fill(best, best + nr, -INFINITY);
        std::fill(arg, arg + nr, int64_t(0));
        for (size_t pn = 0; pn < npanels; ++pn) {
          kern.gemm_tile(x + r0 * dim, nr, panels.data() + pn * dim * mq, dim, scale.data(),
                         zero.data(), thr.data(), tile.data());
          const float* ct = cterm.data() + pn * mq;
          for (size_t r = 0; r < nr; ++r)
            for (size_t j = 0; j < mq; ++j) {  // strict >: the lowest centroid wins ties
              const float v = tile[r * mq + j] + ct[j];
              if (v > best[r]) {
                best[r] = v;
                arg[r] = int64_t(pn * mq + j);
              }
            }
        }
        for (size_t r = 0; r < nr; ++r) {
          assign[r0 + r] = arg[r];
          if (distances)
            distances[r0 + r] = spherical ? best[r]
                                          : std::max(0.0f, float(sq_norm(x + (r0 + r) * dim, dim)) - best[r]);
        }
      }
    });
    return;
  }
  // Small dim (PQ sub-spaces): all centroids against one point at a time, transposed so the
  // centroid index runs along the SIMD lanes.
  const size_t kpad = (k + 63) / 64 * 64;
  std::vector<float> ct(dim * kpad, 0.0f), cnorm(kpad, INFINITY);
  for (size_t c = 0; c < k; ++c) {
    cnorm[c] = spherical ? 0.0f : float(sq_norm(centroids + c * dim, dim));
    for (size_t p = 0; p < dim; ++p) ct[p * kpad + c] = centroids[c * dim + p];
  }
  const size_t nchunks = (n + kChunk - 1) / kChunk;
  parallel_for(nchunks, threads, [&](size_t t, size_t) {
    const size_t b = t * kChunk, e = std::min(n, b + kChunk);
    std::vector<float> best(e - b);
    kern.nearest(x + b * dim, e - b, dim, ct.data(), cnorm.data(), kpad, assign + b, best.data());
    if (distances)  // best = |c|^2 - 2<x, c>, or -2<x, c> when spherical
      for (size_t i = b; i < e; ++i)
        distances[i] = spherical ? -0.5f * best[i - b]
                                 : std::max(0.0f, best[i - b] + float(sq_norm(x + i * dim, dim)));
  });
}

KMeansResult kmeans(const float* x, size_t n, size_t dim, size_t k, const KMeansParams& params) {
  if (k == 0) throw std::invalid_argument("kmeans: k must be >= 1");
  if (dim == 0) throw std::invalid_argument("kmeans: dim must be >= 1");
  if (n < k)
    throw std::invalid_argument("kmeans: " + std::to_string(n) + " training points for k=" +
                                std::to_string(k) + " clusters; need at least k points");
  const int threads = resolve_threads(params.threads);
  Rng rng(params.seed);

  // Subsample (seeded, kept in input order).
  std::vector<float> sample;
  const float* xs = x;
  size_t ns = n;
  const size_t cap = params.max_points_per_centroid ? k * params.max_points_per_centroid : n;
  if (n > cap) {
    const std::vector<size_t> rows = sample_rows(n, cap, rng.next());
    sample.resize(cap * dim);
    for (size_t i = 0; i < cap; ++i)
      std::copy(x + rows[i] * dim, x + (rows[i] + 1) * dim, sample.begin() + i * dim);
    xs = sample.data();
    ns = cap;
  }

  KMeansResult res;
  if (params.init_centroids) {
    res.centroids.assign(params.init_centroids, params.init_centroids + k * dim);
  } else if (params.init == KMeansInit::sample) {
    res.centroids = seed_sample(xs, ns, dim, k, rng);
  } else {
    res.centroids = seed_plus_plus(xs, ns, dim, k, params.spherical, rng, threads);
  }
  if (params.spherical) normalize_rows(res.centroids.data(), k, dim);
  std::vector<int64_t> assign(ns);
  std::vector<float> dist(ns);
  std::vector<double> sums(k * dim);
  std::vector<size_t> counts(k);
  for (size_t it = 0; it < params.niter; ++it) {
    assign_nearest(xs, ns, res.centroids.data(), k, dim, params.spherical, threads,
                   assign.data(), dist.data());
    double obj = 0;
    for (float d : dist) obj += d;
    res.objective.push_back(obj);
    // Update, in point order so the sums never depend on the thread count.
    std::fill(sums.begin(), sums.end(), 0.0);
    std::fill(counts.begin(), counts.end(), size_t(0));
    for (size_t i = 0; i < ns; ++i) {
      const size_t c = size_t(assign[i]);
      ++counts[c];
      const float* v = xs + i * dim;
      double* s = sums.data() + c * dim;
      for (size_t p = 0; p < dim; ++p) s[p] += v[p];
    }
    for (size_t c = 0; c < k; ++c)
      if (counts[c])
        for (size_t p = 0; p < dim; ++p)
          res.centroids[c * dim + p] = float(sums[c * dim + p] / double(counts[c]));
    // Empty clusters (faiss's repair): split a donor drawn with probability ~ (size - 1);
    // the two copies move apart by a relative 1/1024 with alternating signs.
    for (size_t c = 0; c < k; ++c) {
      if (counts[c]) continue;
      size_t donor = 0;
      for (;;) {
        donor = rng.below(k);
        const double p = double(counts[donor] > 1 ? counts[donor] - 1 : 0) / double(ns - k);
        if (rng.uniform() < p) break;
      }
      float* a = res.centroids.data() + donor * dim;
      float* b = res.centroids.data() + c * dim;
      for (size_t p = 0; p < dim; ++p) {
        const float eps = (p % 2 ? 1.0f : -1.0f) / 1024.0f;
        b[p] = a[p] * (1 - eps);
        a[p] = a[p] * (1 + eps);
      }
      counts[c] = counts[donor] / 2;
      counts[donor] -= counts[c];
    }
    if (params.spherical) normalize_rows(res.centroids.data(), k, dim);
  }
  if (!params.assign_all) return res;
  // Final assignment of the full input to the final centroids.
  res.assign.resize(n);
  assign_nearest(x, n, res.centroids.data(), k, dim, params.spherical, threads,
                 res.assign.data(), nullptr);
  return res;
}

}  // namespace quanta
