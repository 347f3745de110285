// Flat PQ index: every vector stored as a PQ code, searched by ADC lookup tables (the query
// stays float) or, as an option, SDC (the query is encoded too; centroid-to-centroid tables).
#pragma once
#include <cstdint>
#include <vector>

#include "quanta/flat.hpp"
#include "quanta/labels.hpp"
#include "quanta/pq.hpp"

namespace quanta {

class PQIndex {
 public:
  PQIndex(size_t dim, size_t m, size_t nbits, Metric metric);

  size_t dim() const { return pq_.dim(); }
  Metric metric() const { return metric_; }
  size_t ntotal() const { return ntotal_; }
  bool is_trained() const { return pq_.is_trained(); }
  size_t memory_usage() const;
  ProductQuantizer& pq() { return pq_; }
  const ProductQuantizer& pq() const { return pq_; }

  void train(const float* x, size_t n, const KMeansParams& params);
  void add(const float* x, size_t n, const int64_t* ids, int threads);
  // distances: l2 squared distance to the reconstruction; ip/cosine: inner product.
  void search(const float* q, size_t nq, size_t k, int threads, bool sdc, float* distances,
              int64_t* labels) const;
  void reconstruct(const int64_t* ids, size_t n, float* out) const;
  void reset();

  const std::vector<uint8_t>& codes() const { return codes_; }
  const std::vector<int64_t>& ids() const { return labels_.raw(); }
  void restore(std::vector<uint8_t> codes, std::vector<int64_t> ids, size_t ntotal);

 private:
  // Rows as the quantizer sees them: normalized for cosine.
  const float* prepared(const float* x, size_t n, std::vector<float>& buf) const;

  ProductQuantizer pq_;
  Metric metric_;
  size_t ntotal_ = 0;
  std::vector<uint8_t> codes_;
  Labels labels_;
};

}  // namespace quanta
