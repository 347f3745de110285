// Flat PQ index: every vector stored as a PQ code, searched by ADC lookup tables (the query
// stays float) or, as an option, SDC (the query is encoded too; centroid-to-centroid tables).
#pragma once
#include <cstdint>
#include <vector>

#include "quanta/codec/pq.hpp"
#include "quanta/core/buffer.hpp"
#include "quanta/core/index.hpp"
#include "quanta/core/labels.hpp"
#include "quanta/index/flat.hpp"

namespace quanta {

class PQIndex final : public Index {
 public:
  PQIndex(size_t dim, size_t m, size_t nbits, Metric metric);

  size_t dim() const override { return pq_.dim(); }
  Metric metric() const override { return metric_; }
  size_t ntotal() const override { return ntotal_ - labels_.removed(); }  // live vectors
  size_t rows() const { return ntotal_; }  // stored rows, removed ones included
  bool is_trained() const override { return pq_.is_trained(); }
  size_t memory_usage() const override;
  ProductQuantizer& pq() { return pq_; }
  const ProductQuantizer& pq() const { return pq_; }

  void train(const float* x, size_t n, const KMeansParams& params);
  void train(const float* x, size_t n, const TrainParams& p) override { train(x, n, p.kmeans(p.niter)); }
  void add(const float* x, size_t n, const int64_t* ids, int threads) override;
  // distances: l2 squared distance to the reconstruction; ip/cosine: inner product.
  // A filtered search gathers each block's allowed codes and scans only those.
  void search(const float* q, size_t nq, const PQSearchParams& params, float* distances,
              int64_t* labels) const;
  void search(const float* q, size_t nq, const SearchParams& params, float* distances,
              int64_t* labels) const override {
    search(q, nq, params_as<PQSearchParams>(params), distances, labels);
  }
  // Every code within `radius` (ADC): l2 distance < radius, ip / cosine > radius.
  RangeResult range_search(const float* q, size_t nq, float radius,
                           const SearchParams& params) const override;
  void reconstruct(const int64_t* ids, size_t n, float* out) const override;
  void reset() override;
  size_t remove(const IdFilter& f) override { return labels_.remove(f, ntotal_); }
  bool contains(int64_t id) const override { return labels_.position_of(id, ntotal_) >= 0; }
  void compact() override;

  const Buffer<uint8_t>& codes() const { return codes_; }
  size_t mapped_bytes() const { return codes_.viewed_bytes(); }  // codes viewed in a file
  const std::vector<int64_t>& ids() const { return labels_.raw(); }
  const std::vector<uint64_t>& removed_mask() const { return labels_.dead(); }
  // codes may view memory the caller keeps alive (a mapped file); writes copy them first.
  void restore(Buffer<uint8_t> codes, std::vector<int64_t> ids, size_t rows,
               std::vector<uint64_t> removed = {});

 private:
  // ADC (or SDC) tables of queries [q0, q0 + nb), prepared, one m x ksub table each.
  std::vector<float> tables(const float* qp, size_t q0, size_t nb, bool sdc, int threads) const;
  // Rows as the quantizer sees them: normalized for cosine.
  const float* prepared(const float* x, size_t n, std::vector<float>& buf) const;

  ProductQuantizer pq_;
  Metric metric_;
  size_t ntotal_ = 0;
  Buffer<uint8_t> codes_;
  Labels labels_;
};

}  // namespace quanta
