// One-bit codes with RaBitQ's correction factor (Gao & Long, SIGMOD 2024), the estimates
// SymphonyQG keeps in its graph rows: a vector x is centred on the training mean c, rotated
// (r' = P (x - c), P orthogonal), and coded as the signs of r'; one float per vector,
// f = |r|^2 / |r'|_1, turns the sign code back into an unbiased estimate
//   <q, x>  ~  <q, c> + f * <P q, sign(r')>.
// Four signs make one 4-bit code, so the codes use the fast-scan layout and kernels of
// 4-bit PQ (m = dim / 4 sub-quantizers whose 16 "centroids" are the sign patterns). On
// 384-d MiniLM and clustered data the estimate's error std was 0.6-0.8x that of PQ<dim/4>x4
// codes of the same size (`GraphIndex`'s neighbour estimates).
// P is block-diagonal (orthogonal blocks of 64 after a random permutation and sign flip):
// a query is rotated in dim x 64 multiply-adds, and a full rotation estimated no better.
#pragma once
#include <cstddef>
#include <cstdint>
#include <vector>

namespace quanta {

class RaBitQCodes {
 public:
  static constexpr size_t kBlock = 64;  // rotation block

  explicit RaBitQCodes(size_t dim);  // dim: a multiple of 4
  size_t dim() const { return dim_; }
  size_t m() const { return dim_ / 4; }            // 4-bit codes per vector
  size_t code_size() const { return dim_ / 8; }    // bytes: two codes a byte, low nibble first
  bool is_trained() const { return !center_.empty(); }

  // The centre (the mean of x) and a rotation drawn from seed.
  void train(const float* x, size_t n, uint64_t seed);
  // n codes (code_size bytes each) and correction factors f.
  void encode(const float* x, size_t n, uint8_t* codes, float* factors, int threads) const;
  // m x 16 tables for a query: entry (j, c) = <(P q)_j, signs of c> (bit i of c set: +, else
  // -), so a code's table sum is <P q, sign(r')>; returns <q, c>.
  float tables(const float* q, float* tables) const;

  // The trained state as one array (centre, permutation, signs, rotation blocks), for files.
  std::vector<float> state() const;
  size_t state_size() const { return is_trained() ? 3 * dim_ + blocks_.size() : 0; }
  void set_state(std::vector<float> s);  // validates it

 private:
  void rotate(const float* x, float* out) const;  // out = P x

  size_t dim_;
  std::vector<float> center_;
  std::vector<uint32_t> perm_;
  std::vector<float> sign_;
  std::vector<float> blocks_;  // the diagonal blocks, row-major, one after the other
};

}  // namespace quanta
