// k-means (Lloyd) with k-means++ or sampled seeding, subsampling of large training sets, empty-cluster
// repair, and a spherical (inner product) variant. The result depends only on the inputs and
// the seed, never on the thread count: assignment runs through FlatIndex's exact search and
// the sums are accumulated in point order.
#pragma once
#include <cstddef>
#include <cstdint>
#include <vector>

namespace quanta {

enum class KMeansInit {
  plus_plus,  // k-means++: better starts, one pass over the sample per centroid
  sample,     // k distinct sample points (faiss's default): no seeding cost
};

struct KMeansParams {
  size_t niter = 25;
  KMeansInit init = KMeansInit::plus_plus;
  const float* init_centroids = nullptr;  // k x dim: start here instead (warm start)
  bool assign_all = true;  // false: skip the final assignment of every input row (PQ training)
  uint64_t seed = 0;
  size_t max_points_per_centroid = 256;  // larger training sets are subsampled to k * this
  bool spherical = false;                // unit-norm centroids, assignment by inner product
  int threads = 0;
};

struct KMeansResult {
  std::vector<float> centroids;    // k x dim
  std::vector<int64_t> assign;     // n: centroid of each input point (after the last update);
                                   // empty when params.assign_all is false
  std::vector<double> objective;   // per iteration: sum of squared distances (l2) or of
                                   // inner products (spherical) of the training points
};

// Sorted positions of a seeded uniform sample of `cap` rows out of n (all n when n <= cap).
std::vector<size_t> sample_rows(size_t n, size_t cap, uint64_t seed);

// Throws std::invalid_argument for n < k, k == 0, dim == 0.
KMeansResult kmeans(const float* x, size_t n, size_t dim, size_t k, const KMeansParams& params);

// Nearest centroid of each point (largest inner product when spherical); optional distances.
void assign_nearest(const float* x, size_t n, const float* centroids, size_t k, size_t dim,
                    bool spherical, int threads, int64_t* assign, float* distances);

}  // namespace quanta
