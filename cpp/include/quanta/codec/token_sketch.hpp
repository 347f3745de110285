// A 4-bit product-quantization sketch of every stored token, in document order, for narrowing a
// multi-vector re-rank: Chamfer estimated from the sketch ranks documents almost as exact
// Chamfer does at a fraction of its cost, so only the best few candidates are scored exactly.
//
// Each document's codes start a fresh fast-scan block of 32 codes (fast_scan_codes.hpp), so a
// document of up to 32 tokens is one kernel call per 4 query tokens. A document's estimate is
// the sum over query tokens of the smallest quantized table sum among its tokens (the ADC
// estimate of the best inner product); with one table scale per query these integer sums rank
// documents as the estimated Chamfer similarities do (smaller sum: more similar). The codes are
// those of the vectors as added (of the stored, decoded ones for documents held before the
// sketch was built).
#pragma once
#include <cstddef>
#include <cstdint>
#include <vector>

#include "quanta/codec/pq.hpp"
#include "quanta/core/buffer.hpp"

namespace quanta {

class TokenSketch {
 public:
  static constexpr size_t kSampleTokens = 1 << 16;  // tokens decoded to train on

  TokenSketch(size_t dim, size_t m);

  size_t m() const { return pq_.m(); }
  size_t ndocs() const { return blocks_.size() - 1; }
  size_t memory_usage() const;
  bool trained() const { return pq_.is_trained(); }

  void train(const float* x, size_t n, uint64_t seed, int threads);
  // Appends n documents: the token rows x, document i being rows offsets[i] .. offsets[i + 1]
  // (offsets has n + 1 entries, from 0).
  void add(const float* x, const int64_t* offsets, size_t n, int threads);
  // Keeps the listed documents (increasing positions), in that order.
  void keep(const std::vector<size_t>& docs);
  void truncate(size_t n);

  // For one query of nt tokens: the estimate of each of the n documents at positions docs
  // (token_offsets: the token store's document offsets); smaller is more similar.
  void score(const float* q, size_t nt, const int64_t* token_offsets, const int64_t* docs,
             size_t n, uint32_t* out) const;

  const std::vector<float>& centroids() const { return pq_.centroids(); }
  const Buffer<uint8_t>& codes() const { return codes_; }
  size_t mapped_bytes() const { return codes_.viewed_bytes(); }
  // token_offsets: the token store's (ndocs + 1 entries); codes may view a mapped file.
  void restore(std::vector<float> centroids, Buffer<uint8_t> codes,
               const std::vector<int64_t>& token_offsets);

 private:
  ProductQuantizer pq_;
  Buffer<uint8_t> codes_;          // fast-scan blocks
  std::vector<int64_t> blocks_{0};  // first block of each document, ndocs + 1 entries
};

}  // namespace quanta
