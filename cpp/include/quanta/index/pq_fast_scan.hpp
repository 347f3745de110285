// Flat 4-bit PQ fast-scan index: codes in the block layout of fast_scan_codes.hpp. Distances
// are estimates acc / scale + bias from exact uint16 sums of the quantized tables, so every
// SIMD level returns the same results.
#pragma once
#include <cstdint>
#include <vector>

#include "quanta/codec/fast_scan_codes.hpp"
#include "quanta/codec/pq.hpp"
#include "quanta/core/buffer.hpp"
#include "quanta/core/index.hpp"
#include "quanta/core/labels.hpp"
#include "quanta/index/flat.hpp"

namespace quanta {

class PQFastScanIndex final : public Index {
 public:
  PQFastScanIndex(size_t dim, size_t m, Metric metric);  // 4-bit codes, m <= 256

  size_t dim() const override { return pq_.dim(); }
  Metric metric() const override { return metric_; }
  size_t ntotal() const override { return ntotal_ - labels_.removed(); }  // live vectors
  size_t rows() const { return ntotal_; }  // stored rows, removed ones included
  bool is_trained() const override { return pq_.is_trained(); }
  size_t npairs() const { return fast_scan::npairs(pq_.m()); }
  size_t memory_usage() const override;
  ProductQuantizer& pq() { return pq_; }
  const ProductQuantizer& pq() const { return pq_; }

  void train(const float* x, size_t n, const KMeansParams& params);
  void train(const float* x, size_t n, const TrainParams& p) override { train(x, n, p.kmeans(p.niter)); }
  void add(const float* x, size_t n, const int64_t* ids, int threads) override;
  // Filters and removed rows are tested on the candidates the kernel reports.
  void search(const float* q, size_t nq, const SearchParams& params, float* distances,
              int64_t* labels) const override;
  // Every vector whose estimated distance is within `radius` (l2: < radius; ip: > radius).
  RangeResult range_search(const float* q, size_t nq, float radius,
                           const SearchParams& params) const override;
  void reconstruct(const int64_t* ids, size_t n, float* out) const override;
  void reset() override;
  size_t remove(const IdFilter& f) override { return labels_.remove(f, ntotal_); }
  bool contains(int64_t id) const override { return labels_.position_of(id, ntotal_) >= 0; }
  void compact() override;

  // Plain 4-bit codes (two per byte, as ProductQuantizer writes them) of every vector, and
  // the ids: the serialized form, independent of the block layout.
  std::vector<uint8_t> codes() const;
  const std::vector<int64_t>& ids() const { return labels_.raw(); }
  const std::vector<uint64_t>& removed_mask() const { return labels_.dead(); }
  void restore(const std::vector<uint8_t>& codes, std::vector<int64_t> ids, size_t rows,
               std::vector<uint64_t> removed = {});
  // The codes in their block layout (fast_scan::bytes_for(rows, m) bytes), as saved, and a
  // restore from them that may view memory the caller keeps alive (a mapped file).
  const Buffer<uint8_t>& blocks() const { return blocks_; }
  void restore_blocks(Buffer<uint8_t> blocks, std::vector<int64_t> ids, size_t rows,
                      std::vector<uint64_t> removed = {});
  size_t mapped_bytes() const { return blocks_.viewed_bytes(); }

  // Quantized tables of one query (npairs x 32 bytes) and the map back to distances.
  void quantized_tables(const float* q, uint8_t* lut, float* scale, float* bias) const;

 private:
  // The queries' quantized tables (normalized first for cosine) and their scales and biases.
  void query_tables(const float* q, size_t nq, std::vector<uint8_t>& luts,
                    std::vector<float>& scale, std::vector<float>& bias) const;

  ProductQuantizer pq_;
  Metric metric_;
  size_t ntotal_ = 0;
  Buffer<uint8_t> blocks_;  // ceil(ntotal / 32) * npairs * 32 bytes
  Labels labels_;
};

}  // namespace quanta
