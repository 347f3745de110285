// Product quantization: dim splits into m sub-vectors of dsub = dim / m; each has its own
// codebook of 2^nbits centroids (nbits 4 or 8), learned by k-means. A code holds one centroid
// index per sub-vector: one byte each for 8 bits, two per byte (low nibble first) for 4 bits.
#pragma once
#include <cstddef>
#include <cstdint>
#include <vector>

#include "quanta/codec/kmeans.hpp"

namespace quanta {

class ProductQuantizer {
 public:
  ProductQuantizer(size_t dim, size_t m, size_t nbits);

  size_t dim() const { return dim_; }
  size_t m() const { return m_; }
  size_t nbits() const { return nbits_; }
  size_t ksub() const { return size_t(1) << nbits_; }
  size_t dsub() const { return dim_ / m_; }
  size_t code_size() const { return (m_ * nbits_ + 7) / 8; }
  bool is_trained() const { return !centroids_.empty(); }

  // k-means per sub-space (seed + j for sub-space j). Needs n >= 2^nbits. warm_start: when
  // already trained, start from the current codebook (OPQ's alternating updates).
  void train(const float* x, size_t n, const KMeansParams& params, bool warm_start = false);
  void encode(const float* x, size_t n, uint8_t* codes, int threads) const;
  void decode(const uint8_t* codes, size_t n, float* x) const;

  size_t code_at(const uint8_t* code, size_t j) const {
    return nbits_ == 8 ? code[j] : (code[j >> 1] >> ((j & 1) * 4)) & 15;
  }

  // ADC lookup tables, nq x m x ksub: <q_j, c_jk> (ip) or |q_j - c_jk|^2 (l2).
  void distance_tables(const float* q, size_t nq, bool l2, float* tables) const;
  // SDC tables, m x ksub x ksub: <c_ja, c_jb> or |c_ja - c_jb|^2.
  void sdc_tables(bool l2, float* tables) const;
  // Sum over j of table[j][code_j] for n codes: the ADC (or SDC) score of each.
  void scan(const float* table, const uint8_t* codes, size_t n, float* out) const;

  const std::vector<float>& centroids() const { return centroids_; }  // m x ksub x dsub
  void set_centroids(std::vector<float> c);  // validates the size

  // out[c] = <v, centroid c of sub-space j> for the dsub values at v (all ksub of them).
  void sub_dots(size_t j, const float* v, float* out) const;
  // |centroid c of sub-space j|^2, m x ksub.
  const std::vector<float>& centroid_norms() const { return cnorm_; }

 private:
  void derive();  // the transposed copy and the norms, after the centroids change

  size_t dim_, m_, nbits_;
  std::vector<float> centroids_;
  std::vector<float> transposed_;  // m x dsub x ksub: ksub runs along the SIMD lanes
  std::vector<float> cnorm_;       // m x ksub
};

}  // namespace quanta
