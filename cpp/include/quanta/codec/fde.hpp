// MUVERA fixed-dimensional encodings (FDEs): a set of token vectors becomes one vector whose
// inner products approximate Chamfer similarity (sum over query tokens of the best document
// token). Per repetition r: k_sim SimHash hyperplanes split the space into B = 2^k_sim
// buckets; each bucket holds the sum (queries) or average (documents) of its tokens, projected
// to d_proj dimensions; an empty document bucket may copy the token nearest it in Hamming
// distance. Output: r_reps * B * d_proj floats (layout [rep][bucket][d_proj]), optionally
// count-sketched to final_dim.
//
// The random matrices come in as plain arrays (the Python layer draws them, so a saved
// encoder re-encodes identically and FastEmbed's draws can be reproduced).
#pragma once
#include <cstddef>
#include <cstdint>
#include <vector>

namespace quanta {

enum class BucketOrder : uint8_t {
  binary = 0,  // bit i (hyperplane i) weighted 2^i: FastEmbed, Weaviate
  gray = 1,    // graph-mining's C++: bits appended MSB first, the id is the Gray decode
};

struct FdeConfig {
  size_t dim = 0;
  size_t k_sim = 5;
  size_t d_proj = 16;  // == dim with no projection matrix: identity
  size_t r_reps = 20;
  BucketOrder order = BucketOrder::binary;
  size_t final_dim = 0;  // 0: no final projection
};

class FDEEncoder {
 public:
  // simhash: r_reps x dim x k_sim. projection: r_reps x dim x d_proj (already scaled), or
  // empty for the identity (d_proj == dim). final_index / final_sign: one output coordinate
  // in [0, final_dim) and sign per FDE coordinate (count-sketch), or empty.
  FDEEncoder(const FdeConfig& config, std::vector<float> simhash, std::vector<float> projection,
             std::vector<int32_t> final_index, std::vector<float> final_sign);

  const FdeConfig& config() const { return cfg_; }
  size_t buckets() const { return size_t(1) << cfg_.k_sim; }
  size_t fde_dim() const { return cfg_.r_reps * buckets() * cfg_.d_proj; }
  size_t output_dim() const { return cfg_.final_dim ? cfg_.final_dim : fde_dim(); }

  // n sets of tokens (ntokens rows of dim), set i = rows offsets[i] .. offsets[i + 1].
  // documents: bucket averages (else sums); fill_empty: empty buckets copy the nearest token
  // (documents only). Every set needs at least one token. out: n x output_dim().
  void encode(const float* tokens, size_t ntokens, const int64_t* offsets, size_t n,
              bool documents, bool fill_empty, int threads, float* out) const;

  const std::vector<float>& simhash() const { return simhash_; }
  const std::vector<float>& projection() const { return projection_; }
  const std::vector<int32_t>& final_index() const { return final_index_; }
  const std::vector<float>& final_sign() const { return final_sign_; }

 private:
  struct Work {  // per-thread buffers
    std::vector<float> acc;
    std::vector<int32_t> count, first;
    std::vector<uint32_t> occ;
  };
  // y (n x the fused columns, padded to whole panels) = x times the fused matrix.
  void project(const float* x, size_t n, float* y) const;
  // One set from its tokens x and their products y.
  void encode_one(const float* x, size_t n, bool documents, bool fill_empty, const float* y,
                  Work& work, float* out) const;

  FdeConfig cfg_;
  std::vector<float> simhash_, projection_;
  std::vector<int32_t> final_index_;
  std::vector<float> final_sign_;
  size_t cols_ = 0;             // columns of the fused token matrix: r_reps * (k_sim + d_proj)
  std::vector<float> panels_;
  std::vector<uint8_t> popcount_;  // of every bucket pattern (no POPCNT in the portable core)   // [simhash | projection] as GEMM panels [panel][dim][mq]
};

}  // namespace quanta
