// A set of recurrent-code documents (recurrent_binary.hpp) stored in the layout of one exact
// scoring path, and the scan of up to four queries against a run of them. Shared by the flat
// binary index and the lists of the IVF one.
//
// Every path computes the same integer num = sum_j (2 c_q - K_q)(2 c_d - K_d) (K = 2^planes - 1;
// the query may have more planes than the documents) and the same score, the cosine
// num / (|2 c_q - K_q| |2 c_d - K_d|), so results are identical whichever path runs:
//   popcount: bit-plane AND + popcount per plane pair (AVX-512 VPOPCNTDQ);
//   u8:       planes expanded to bytes, unsigned 8-bit dot product (AVX-512 VNNI);
//   sdc:      BEBR's symmetric distance calculation: documents in the 4-bit fast-scan layout (a
//             nibble holds 4 / planes dimensions), one exact 16-entry uint8 table per query
//             nibble, summed by the fast-scan kernel; 1 or 2 document planes.
#pragma once
#include <cmath>
#include <cstdint>
#include <limits>
#include <string>
#include <vector>

#include "quanta/codec/fast_scan_codes.hpp"
#include "quanta/codec/recurrent_binary.hpp"
#include "quanta/core/buffer.hpp"
#include "quanta/simd/dispatch.hpp"
#include "quanta/simd/kernels.hpp"

namespace quanta {

enum class BinaryScoring : uint8_t { popcount = 0, u8 = 1, sdc = 2 };
BinaryScoring binary_scoring_from_name(const std::string& name);  // not "auto"
const char* binary_scoring_name(BinaryScoring s);

// The scoring path for a code shape ("auto": sdc when possible, else popcount, or u8 on CPUs
// with VNNI but no VPOPCNTDQ); throws std::invalid_argument for a path the shape cannot use.
BinaryScoring choose_binary_scoring(const std::string& name, size_t m, size_t levels,
                                    size_t query_levels);
// sdc: documents of 1 or 2 planes tiling nibbles, table entries (<= 2 D K_q K_d) in uint8 and
// sums (<= 2 m K_q K_d) in uint16.
bool sdc_possible(size_t m, size_t levels, size_t query_levels);
// The query levels an index takes by default: up to 4-bit queries while the sdc tables stay
// exact in uint8 (documents of 1-2 planes): the query's extra levels cost no storage and, with
// sdc, no scan time. Deeper documents keep symmetric codes (popcount work grows with the
// query's planes).
size_t default_query_levels(size_t m, size_t levels);

// A query ready for every path: its code, integer stats and, for sdc, its exact table.
struct BinaryQuery {
  const uint64_t* code = nullptr;  // query planes
  int32_t sum = 0;                 // sum_j c_j
  double norm2 = 0;                // sum_j (2 c_j - K_q)^2
  float inv = 0;                   // 1 / sqrt(norm2)
  std::vector<uint8_t> lut;        // sdc
  int64_t c0 = 0;                  // sdc: num = c0 - (kernel sum)
};

class BinaryCodes {
 public:
  // bin must outlive this; documents have `levels` levels (<= bin.levels(), the queries').
  BinaryCodes(const RecurrentBinarizer& bin, size_t levels, BinaryScoring scoring);

  size_t size() const { return n_; }
  size_t code_words() const { return (levels_ + 1) * bin_->words(); }
  size_t memory_usage() const;
  int64_t min_norm2() const { return min_norm2_; }

  // Throws std::invalid_argument (nothing changed) for set padding bits.
  void append(const uint64_t* codes, size_t n);
  std::vector<uint64_t> codes() const;  // size() x code_words(), whatever the layout
  void clear();

  // The arrays as they sit in memory, which a restore can view in place (a mapped file):
  // codes (popcount / u8) or fast-scan blocks (sdc), and each document's sum and inverse norm.
  struct Stored {
    Buffer<uint64_t> codes;
    Buffer<uint8_t> blocks;
    Buffer<int32_t> sums;
    Buffer<float> inv_norms;
    int64_t min_norm2 = 0;
  };
  Stored stored() const { return {codes_, blocks_, sums_, inv_norms_, min_norm2_}; }
  // n documents from stored arrays; every size is checked against n (a scan reads within
  // them), the contents are not read.
  void restore(Stored s, size_t n);
  size_t mapped_bytes() const {
    return codes_.viewed_bytes() + blocks_.viewed_bytes() + sums_.viewed_bytes() +
           inv_norms_.viewed_bytes();
  }

  BinaryQuery prepare(const uint64_t* qcode) const;  // qcode: all of the binarizer's planes

  // Scores documents [begin, begin + count) (begin a multiple of 32) for nq <= 4 queries:
  // push(e, pos, cosine) for query e's documents that may enter its top-k, given threshold(e),
  // query e's current k-th score. scanner, dots and scores are the caller's scratch.
  template <class Threshold, class Push>
  void scan(const BinaryQuery* const* qs, size_t nq, size_t begin, size_t count,
            fast_scan::Scanner& scanner, std::vector<int32_t>& dots, std::vector<float>& scores,
            Threshold&& threshold, Push&& push) const;

 private:
  size_t nibbles() const { return bin_->m() * (levels_ + 1) / 4; }
  float cosine(const BinaryQuery& q, size_t pos, int64_t num) const {
    return float(double(num) * q.inv * inv_norms_[pos]);
  }

  const RecurrentBinarizer* bin_;
  size_t levels_;
  BinaryScoring scoring_;
  size_t n_ = 0;
  Buffer<uint64_t> codes_;   // popcount / u8: n x code_words()
  Buffer<uint8_t> blocks_;   // sdc: fast-scan blocks of nibbles
  Buffer<int32_t> sums_;     // sum_j c_j per document
  Buffer<float> inv_norms_;  // 1 / sqrt(sum_j (2 c_j - K_d)^2)
  int64_t min_norm2_ = 0;         // the smallest of those sums stored: bounds sdc's limits
};

template <class Threshold, class Push>
void BinaryCodes::scan(const BinaryQuery* const* qs, size_t nq, size_t begin, size_t count,
                       fast_scan::Scanner& scanner, std::vector<int32_t>& dots,
                       std::vector<float>& scores, Threshold&& threshold, Push&& push) const {
  const Kernels& kern = kernels(active_isa());
  if (scoring_ == BinaryScoring::sdc) {
    const size_t groups = nibbles(), np = fast_scan::npairs(groups);
    const uint8_t* luts[4];
    for (size_t e = 0; e < nq; ++e) luts[e] = qs[e]->lut.data();
    scanner.scan(
        kern, blocks_.data() + begin / fast_scan::kBlock * np * 32, count, groups, luts, nq,
        [&](size_t e) {
          // cos >= thr > 0 needs num >= thr |q| |d| >= thr |q| min |d|: a bound on the sum
          const double thr = threshold(e);
          if (!(thr > 0)) return uint16_t(65535);
          const double room = double(qs[e]->c0) - thr * std::sqrt(qs[e]->norm2 * double(min_norm2_));
          return room >= 65534 ? uint16_t(65535) : room < 0 ? uint16_t(0) : uint16_t(room + 1);
        },
        [&](size_t e, size_t r, uint16_t sum) {
          push(e, begin + r, cosine(*qs[e], begin + r, qs[e]->c0 - int64_t(sum)));
        });
    return;
  }
  const size_t qplanes = bin_->planes(), planes = levels_ + 1, words = bin_->words();
  const int64_t kd = (int64_t(1) << planes) - 1, kq = (int64_t(1) << qplanes) - 1;
  const int64_t mkk = int64_t(bin_->m()) * kq * kd;
  const auto fn = scoring_ == BinaryScoring::u8 ? kern.rbe_dots_u8 : kern.rbe_dots;
  dots.resize(count);
  scores.resize(count);
  for (size_t e = 0; e < nq; ++e) {
    const BinaryQuery& q = *qs[e];
    fn(q.code, qplanes, codes_.data() + begin * code_words(), planes, count, words, dots.data());
    for (size_t r = 0; r < count; ++r)  // 4 S - 2 K_d sum c_q - 2 K_q sum c_d + m K_q K_d
      scores[r] = cosine(q, begin + r, 4 * int64_t(dots[r]) - 2 * kd * q.sum -
                                           2 * kq * sums_[begin + r] + mkk);
    float thr = threshold(e);
    for (size_t r = 0; r < count; ++r)
      if (scores[r] >= thr) {
        push(e, begin + r, scores[r]);
        thr = threshold(e);
      }
  }
}

}  // namespace quanta
