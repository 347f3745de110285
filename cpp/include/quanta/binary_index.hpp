// Flat index of recurrent binary codes (recurrent_binary.hpp). Queries are encoded by the same
// binarizer as the documents (symmetric), and the score is the cosine of the two code vectors
// b_q, b_d (BEBR's ranking; a code's norm says nothing about its input's), from the exact
// integer 4^u <b_q, b_d> = sum_j (2 c_q - K)(2 c_d - K). Three ways to get that integer, with
// identical results:
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
  BinaryIndex(size_t dim, size_t m, size_t levels, Metric metric, const std::string& scoring);
  static bool sdc_possible(size_t m, size_t levels) {  // sums <= 2 m K^2 must fit in uint16
    return (levels == 0 && m % 4 == 0 && 2 * m <= 65535) ||
           (levels == 1 && m % 2 == 0 && 18 * m <= 65535);
  }

  size_t dim() const { return bin_.dim(); }
  Metric metric() const { return metric_; }
  BinaryScoring scoring() const { return scoring_; }
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

  std::vector<uint64_t> codes() const;  // n x code_words, whatever the layout
  const std::vector<int64_t>& ids() const { return labels_.raw(); }
  void restore(const std::vector<uint64_t>& codes, std::vector<int64_t> ids, size_t ntotal);

 private:
  size_t nibbles() const { return bin_.m() * bin_.planes() / 4; }  // sdc groups per code

  RecurrentBinarizer bin_;
  Metric metric_;
  BinaryScoring scoring_;
  size_t ntotal_ = 0;
  std::vector<uint64_t> codes_;   // popcount / u8: n x code_words
  std::vector<uint8_t> blocks_;   // sdc: fast-scan blocks of nibbles
  std::vector<int32_t> sums_;     // sum_j c_j per code
  std::vector<float> inv_norms_;  // 1 / sqrt(sum_j (2 c_j - K)^2)
  int64_t min_norm2_ = 0;         // smallest sum_j (2 c_j - K)^2 stored: bounds sdc's limits
  Labels labels_;
};

}  // namespace quanta
