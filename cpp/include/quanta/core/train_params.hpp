// Training settings, common to every family (as cuVS's index_params and faiss's training
// knobs): what Index::train takes. A family uses the fields it needs: k-means iterations for
// PQ codebooks (niter) and IVF list centroids (coarse_niter), the seed, the subsampling of
// large training sets and the threads.
#pragma once
#include <cstddef>
#include <cstdint>

#include "quanta/codec/kmeans.hpp"

namespace quanta {

struct TrainParams {
  size_t niter = 25;         // k-means iterations of PQ codebooks
  size_t coarse_niter = 10;  // k-means iterations of an IVF index's list centroids
  uint64_t seed = 0;
  size_t max_points_per_centroid = 256;  // larger training sets are subsampled to k * this
  int threads = 0;                       // 0: the default thread count

  // k-means settings of `iterations` iterations, seeded seed + seed_offset.
  KMeansParams kmeans(size_t iterations, uint64_t seed_offset = 0) const {
    KMeansParams p;
    p.niter = iterations;
    p.seed = seed + seed_offset;
    p.max_points_per_centroid = max_points_per_centroid;
    p.threads = threads;
    return p;
  }
};

}  // namespace quanta
