// The coarse step of the IVF indexes: each query's nprobe best of nlist centroids (l2: the
// nearest; ip: the largest inner products), exactly, as scoring every centroid in float32.
//
// Scoring every centroid in float32 is an nlist x dim product per query (1,024 x 384: about
// 8 us at one core's FMA peak), more than half of a query that probes a few lists. So with
// enough centroids each query first scores int8 copies of them (VNNI: four times the
// products per instruction) and bounds the rounding error of each int8 score. Only the
// centroids whose upper bound reaches the nprobe-th best lower bound can be among the best;
// those, and a few more (one bound for all centroids keeps the selection to branch-free
// vector loops), are scored again in float32 and the best nprobe of them taken. The bound is
// a worst case, so the lists are the exact ones, not an approximation.
#pragma once
#include <cstddef>
#include <cstdint>
#include <vector>

#include "quanta/core/metric.hpp"
#include "quanta/index/flat.hpp"

namespace quanta {

class CoarseQuantizer {
 public:
  // centroids: n x dim, copied. metric: l2, or ip (cosine callers pass normalized queries).
  CoarseQuantizer(const float* centroids, size_t n, size_t dim, Metric metric);

  size_t size() const { return exact_.rows(); }
  const float* centroids() const {  // size() x dim, as given
    return reinterpret_cast<const float*>(exact_.codes().data());
  }
  std::vector<float> copy_centroids() const {
    return std::vector<float>(centroids(), centroids() + size() * dim_);
  }
  size_t memory_usage() const;

  // Each query's nprobe best lists (cl) and their distances (cd; l2: |q - c|^2, ip: <q, c>),
  // best first (ties: the lower list) when sorted, else in any order.
  void search(const float* q, size_t nq, size_t nprobe, int threads, float* cd, int64_t* cl,
              bool sorted) const;

  // Whether search scores int8 copies first for this nprobe (else float32 throughout: few
  // centroids, many lists, or no fast int8 kernel at this SIMD level).
  bool bounded(size_t nprobe) const;
  // How many centroids each query's float32 pass scores (for tests and benchmarks): size()
  // where search is not bounded.
  void rescored(const float* q, size_t nq, size_t nprobe, int64_t* out) const;

  // From this many centroids the int8 copies are kept (measured on 1,024 x 384 MiniLM
  // centroids; with fewer the float32 pass costs a few us at most).
  static constexpr size_t kBoundedFrom = 256;
  // Up to nprobe = size() / this: beyond, the candidates' float32 pass approaches a whole
  // float32 pass (1,024 lists: 1.1x faster searches at nprobe 32, none at 64).
  static constexpr size_t kBoundedMaxFraction = 32;

 private:
  // The query's int8 copy (q8: dim4_ bytes), its step t and sum_p |q_p s_p|; false where
  // those overflow (the query is then scored in float32).
  bool quantize(const float* q, int8_t* q8, float& t, float& usum) const;
  // The nprobe best lists of nq <= L queries from their int8 scores (dots[c * L + j]) and the
  // bound; got[j]: 0 where the bound cannot serve query j (or ok[j] is false), else how many
  // centroids it scored in float32.
  template <size_t L>
  void select_bounded(const float* q, size_t nq, const int32_t* dots, const float* t,
                      const float* usum, const bool* ok, size_t nprobe, bool sorted, float* cd,
                      int64_t* cl, size_t* got) const;
  // Up to kPanelI8 queries (one int8 panel); rescored (optional) gets the float32 counts.
  void search_bounded(const float* q, size_t nq, size_t nprobe, bool sorted, float* cd,
                      int64_t* cl, size_t* rescored) const;
  // Every centroid in float32 (GEMM for batches), then select_top; unsorted.
  void search_dense(const float* q, size_t nq, size_t nprobe, int threads, float* cd,
                    int64_t* cl) const;

  size_t dim_, dim4_;  // dim4_: dim rounded up to the int8 kernels' groups of 4
  bool l2_;
  FlatIndex exact_;              // float32 rows; its heap search serves few lists
  std::vector<float> norms_;     // |c|^2
  std::vector<int8_t> codes_;    // n x dim4_: round(c_p / scale_p), zeros past dim
  std::vector<float> scale_;     // per dimension: max |c_p| / 127 (1 where all are 0)
  std::vector<int32_t> sums_;    // per centroid: sum_p codes (dot_panel_i8's correction)
  int32_t max_l1_ = 0;           // the largest sum_p |codes| of a centroid
  float max_norm_ = 0;           // the largest norms_
  bool has_int8_ = false;        // false where the centroids are too large for the bound
};

}  // namespace quanta
