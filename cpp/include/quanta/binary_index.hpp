// Flat index of recurrent binary codes (recurrent_binary.hpp). Queries are encoded by the same
// binarizer as the documents (symmetric), and the score is the cosine of the two code vectors
// b_q, b_d (BEBR's ranking; a code's norm says nothing about its input's), from the exact
// integer sum_j (2 c_q - K_q)(2 c_d - K_d) (= 4^u <b_q, b_d> when both codes have u levels).
// The query may keep more levels of the same recurrence than the documents (query_levels >=
// levels: a finer query at no storage cost). Three ways to get that integer, with identical
// results:
//   popcount: bit-plane AND + popcount per plane pair (AVX-512 VPOPCNTDQ);
//   u8:       planes expanded to bytes, unsigned 8-bit dot product (AVX-512 VNNI);
//   sdc:      BEBR's symmetric distance calculation: codes in the 4-bit fast-scan layout (a
//             nibble holds 4 / planes dimensions), one exact 16-entry uint8 table per query
//             nibble, summed by the fast-scan kernel (1 or 2 planes).
// The metric (ip or cosine) is that of the float vectors, for a caller's re-ranking stage.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "quanta/flat.hpp"
#include "quanta/labels.hpp"
#include "quanta/recurrent_binary.hpp"

namespace quanta {

enum class BinaryScoring : uint8_t { popcount = 0, u8 = 1, sdc = 2 };
BinaryScoring binary_scoring_from_name(const std::string& name);  // also "auto"
const char* binary_scoring_name(BinaryScoring s);

class BinaryIndex {
 public:
  // scoring "auto": sdc when the layout allows it, else popcount (u8 on CPUs with VNNI but
  // no VPOPCNTDQ). Throws std::invalid_argument for a path the code shape cannot use.
  BinaryIndex(size_t dim, size_t m, size_t levels, size_t query_levels, Metric metric,
              const std::string& scoring);
  // sdc: documents of 1 or 2 planes tiling nibbles, table entries (<= 2 D K_q K_d) in uint8
  // and sums (<= 2 m K_q K_d) in uint16.
  static bool sdc_possible(size_t m, size_t levels, size_t query_levels) {
    if (levels > 1 || query_levels > 6) return false;
    const size_t d = 4 / (levels + 1), kd = (size_t(1) << (levels + 1)) - 1;
    const size_t kq = (size_t(1) << (query_levels + 1)) - 1;
    return m % d == 0 && 2 * d * kq * kd <= 255 && 2 * m * kq * kd <= 65535;
  }

  size_t dim() const { return bin_.dim(); }
  size_t levels() const { return levels_; }             // documents'
  size_t query_levels() const { return bin_.levels(); }
  size_t code_words() const { return (levels_ + 1) * bin_.words(); }  // per document
  Metric metric() const { return metric_; }
  BinaryScoring scoring() const { return scoring_; }
  size_t ntotal() const { return ntotal_; }
  bool is_trained() const { return bin_.is_trained(); }
  size_t memory_usage() const;
  RecurrentBinarizer& binarizer() { return bin_; }
  const RecurrentBinarizer& binarizer() const { return bin_; }

  void add(const float* x, size_t n, const int64_t* ids, int threads);
  // Adds codes of levels() levels made by binarizer().encode (n x code_words()); rejects
  // non-zero padding bits.
  void add_codes(const uint64_t* codes, size_t n, const int64_t* ids);
  void search(const float* q, size_t nq, size_t k, int threads, float* distances,
              int64_t* labels) const;
  void reset();

  std::vector<uint64_t> codes() const;  // n x code_words(), whatever the layout
  const std::vector<int64_t>& ids() const { return labels_.raw(); }
  void restore(const std::vector<uint64_t>& codes, std::vector<int64_t> ids, size_t ntotal);

 private:
  size_t nibbles() const { return bin_.m() * (levels_ + 1) / 4; }  // sdc groups per code

  RecurrentBinarizer bin_;  // query_levels levels; documents use the first levels_
  size_t levels_;
  Metric metric_;
  BinaryScoring scoring_;
  size_t ntotal_ = 0;
  std::vector<uint64_t> codes_;   // popcount / u8: n x code_words()
  std::vector<uint8_t> blocks_;   // sdc: fast-scan blocks of nibbles
  std::vector<int32_t> sums_;     // sum_j c_j per code
  std::vector<float> inv_norms_;  // 1 / sqrt(sum_j (2 c_j - K_d)^2)
  int64_t min_norm2_ = 0;         // smallest sum_j (2 c_j - K_d)^2 stored: bounds sdc's limits
  Labels labels_;
};

}  // namespace quanta
