// Recurrent binary codes (BEBR: Gan et al., "Binary Embedding-based Retrieval at Tencent",
// KDD 2023). A float vector x becomes p = levels + 1 sign vectors s_0 .. s_u of m bits:
//   s_0 = sign(W(x)),  b = s_0
//   for i = 1 .. u:  x_i = B_i(b) (optionally scaled to unit norm),  s_i = sign(R_i(x - x_i)),
//                    b += 2^-i s_i
// W, B_i and R_i are small MLPs ("transforms"); each output dimension of b takes one of 2^p
// evenly spaced values. With bit = (s > 0) and level 0 as the most significant bit, the
// integer c = sum_i bit_i 2^(u - i) in [0, K], K = 2^p - 1, gives b = (2c - K) / 2^u, so
//   <b_q, b_d> = (4 sum_j c_q c_d - 2K (sum c_q + sum c_d) + m K^2) / 4^u:
// one exact integer dot product plus two per-code sums.
//
// Code layout: plane i (level i) is `words` = ceil(m / 64) uint64, bit j of the plane in word
// j / 64, bit j % 64; the p planes follow each other (p * words uint64 per code). Padding
// bits are zero.
#pragma once
#include <cstddef>
#include <cstdint>
#include <vector>

namespace quanta {

// y = w x + b (w: out x in, row-major), then ReLU when relu is set.
struct DenseLayer {
  size_t in = 0, out = 0;
  std::vector<float> w, b;
  bool relu = false;
};
using Transform = std::vector<DenseLayer>;  // layers applied in turn

class RecurrentBinarizer {
 public:
  RecurrentBinarizer(size_t dim, size_t m, size_t levels);

  size_t dim() const { return dim_; }
  size_t m() const { return m_; }
  size_t levels() const { return levels_; }
  size_t planes() const { return levels_ + 1; }
  size_t words() const { return (m_ + 63) / 64; }
  size_t code_words() const { return planes() * words(); }
  bool is_trained() const { return !first_.empty(); }

  // first: dim -> m; recon[i]: m -> dim and resid[i]: dim -> m for levels i = 1 .. u.
  // Throws std::invalid_argument when the shapes do not chain.
  void set_transforms(Transform first, std::vector<Transform> recon,
                      std::vector<Transform> resid, bool normalize_recon);
  const Transform& first() const { return first_; }
  const std::vector<Transform>& recon() const { return recon_; }
  const std::vector<Transform>& resid() const { return resid_; }
  bool normalize_recon() const { return normalize_recon_; }

  // n codes of levels + 1 planes (<= levels() + 1: the recurrence stops early, so a shorter
  // code is a prefix of the longer one), (levels + 1) * words uint64 each; the same for any
  // thread count.
  void encode(const float* x, size_t n, uint64_t* codes, int threads, size_t levels) const;
  void encode(const float* x, size_t n, uint64_t* codes, int threads) const {
    encode(x, n, codes, threads, levels_);
  }

  // Integers of a code of `planes` planes: sum_j c_j, and sum_j (2 c_j - K)^2 (= |b|^2 4^u).
  void code_stats(const uint64_t* code, size_t planes, int32_t* sum, int64_t* norm2) const;
  // The values c_j (m bytes) of one code of `planes` planes.
  void unpack(const uint64_t* code, size_t planes, uint8_t* c) const;

 private:
  size_t dim_, m_, levels_;
  Transform first_;
  std::vector<Transform> recon_, resid_;
  bool normalize_recon_ = false;
};

}  // namespace quanta
