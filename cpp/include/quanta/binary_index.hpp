// Flat index of recurrent binary codes (recurrent_binary.hpp): queries are encoded by the same
// binarizer as the documents (symmetric), and the score is the cosine of the two code vectors
// b_q, b_d (BEBR's ranking; a code's norm carries no information about the input's), from an
// exact integer dot product: bit-plane popcounts (Kernels::rbe_dots). The metric (ip or cosine)
// is the one of the float vectors, for a re-ranking stage kept by the caller.
#pragma once
#include <cstdint>
#include <vector>

#include "quanta/flat.hpp"
#include "quanta/labels.hpp"
#include "quanta/recurrent_binary.hpp"

namespace quanta {

class BinaryIndex {
 public:
  BinaryIndex(size_t dim, size_t m, size_t levels, Metric metric);

  size_t dim() const { return bin_.dim(); }
  Metric metric() const { return metric_; }
  size_t ntotal() const { return ntotal_; }
  bool is_trained() const { return bin_.is_trained(); }
  size_t memory_usage() const;
  RecurrentBinarizer& binarizer() { return bin_; }
  const RecurrentBinarizer& binarizer() const { return bin_; }

  void add(const float* x, size_t n, const int64_t* ids, int threads);
  // Adds codes made by binarizer().encode (n x code_words); rejects non-zero padding bits.
  void add_codes(const uint64_t* codes, size_t n, const int64_t* ids);
  void search(const float* q, size_t nq, size_t k, int threads, float* distances,
              int64_t* labels) const;
  void reset();

  const std::vector<uint64_t>& codes() const { return codes_; }
  const std::vector<int64_t>& ids() const { return labels_.raw(); }
  void restore(std::vector<uint64_t> codes, std::vector<int64_t> ids, size_t ntotal);

 private:
  struct Stats {
    std::vector<int32_t> sums;
    std::vector<float> inv_norms;  // 1 / sqrt(4^u |b|^2)
  };
  Stats stats_of(const uint64_t* codes, size_t n) const;

  RecurrentBinarizer bin_;
  Metric metric_;
  size_t ntotal_ = 0;
  std::vector<uint64_t> codes_;
  Stats stats_;
  Labels labels_;
};

}  // namespace quanta
