#include <algorithm>
#include <cstring>
#include <stdexcept>
#include <string>

#include "quanta/codec/pq.hpp"
#include "quanta/core/parallel.hpp"
#include "quanta/simd/dispatch.hpp"
#include "quanta/simd/kernels.hpp"

namespace quanta {

ProductQuantizer::ProductQuantizer(size_t dim, size_t m, size_t nbits)
    : dim_(dim), m_(m), nbits_(nbits) {
  if (m == 0 || dim == 0 || dim % m != 0)
    throw std::invalid_argument("PQ: dim " + std::to_string(dim) +
                                " must be a positive multiple of m " + std::to_string(m));
  if (nbits != 4 && nbits != 8)
    throw std::invalid_argument("PQ: nbits must be 4 or 8; got " + std::to_string(nbits));
}

void ProductQuantizer::set_centroids(std::vector<float> c) {
  if (c.size() != m_ * ksub() * dsub())
    throw std::invalid_argument("PQ: centroid table has the wrong size");
  centroids_ = std::move(c);
  derive();
}

void ProductQuantizer::derive() {
  const size_t ks = ksub(), ds = dsub();
  transposed_.assign(m_ * ds * ks, 0.0f);
  cnorm_.assign(m_ * ks, 0.0f);
  for (size_t j = 0; j < m_; ++j)
    for (size_t c = 0; c < ks; ++c) {
      const float* v = centroids_.data() + (j * ks + c) * ds;
      double s = 0;
      for (size_t p = 0; p < ds; ++p) {
        transposed_[(j * ds + p) * ks + c] = v[p];
        s += double(v[p]) * v[p];
      }
      cnorm_[j * ks + c] = float(s);
    }
}

void ProductQuantizer::sub_dots(size_t j, const float* v, float* out) const {
  const size_t ks = ksub(), ds = dsub();
  const float* t = transposed_.data() + j * ds * ks;
  std::fill(out, out + ks, 0.0f);
  for (size_t p = 0; p < ds; ++p) {  // vectorizes along the centroids
    const float x = v[p];
    const float* row = t + p * ks;
    for (size_t c = 0; c < ks; ++c) out[c] += x * row[c];
  }
}

// Sub-vector j of n rows (rows[i], or row i when rows is null), made contiguous (n x dsub).
static std::vector<float> sub_vectors(const float* x, size_t n, const size_t* rows, size_t dim,
                                      size_t j, size_t dsub) {
  std::vector<float> s(n * dsub);
  for (size_t i = 0; i < n; ++i)
    std::memcpy(s.data() + i * dsub, x + (rows ? rows[i] : i) * dim + j * dsub,
                dsub * sizeof(float));
  return s;
}

void ProductQuantizer::train(const float* x, size_t n, const KMeansParams& params,
                             bool warm_start) {
  if (n < ksub())
    throw std::invalid_argument("PQ.train: " + std::to_string(n) + " training vectors for " +
                                std::to_string(ksub()) + " centroids per sub-space; need at least " +
                                std::to_string(ksub()));
  // One seeded sample of rows serves every sub-space; k-means then uses all of it and skips
  // its final assignment of the whole input (PQ training only needs the codebook).
  const size_t cap = params.max_points_per_centroid ? ksub() * params.max_points_per_centroid : n;
  const std::vector<size_t> rows = sample_rows(n, cap, params.seed);
  std::vector<float> c(m_ * ksub() * dsub());
  for (size_t j = 0; j < m_; ++j) {
    KMeansParams p = params;
    p.seed = params.seed + j;
    p.spherical = false;
    p.max_points_per_centroid = 0;
    p.assign_all = false;
    if (warm_start && is_trained()) p.init_centroids = centroids_.data() + j * ksub() * dsub();
    const std::vector<float> s = sub_vectors(x, rows.size(), rows.data(), dim_, j, dsub());
    KMeansResult r = kmeans(s.data(), rows.size(), dsub(), ksub(), p);
    std::copy(r.centroids.begin(), r.centroids.end(), c.begin() + j * ksub() * dsub());
  }
  centroids_ = std::move(c);
  derive();
}

void ProductQuantizer::encode(const float* x, size_t n, uint8_t* codes, int threads) const {
  if (!is_trained()) throw std::invalid_argument("PQ.encode: the quantizer is not trained");
  std::memset(codes, 0, n * code_size());
  std::vector<int64_t> assign(n);
  for (size_t j = 0; j < m_; ++j) {
    const std::vector<float> s = sub_vectors(x, n, nullptr, dim_, j, dsub());
    assign_nearest(s.data(), n, centroids_.data() + j * ksub() * dsub(), ksub(), dsub(), false,
                   threads, assign.data(), nullptr);
    for (size_t i = 0; i < n; ++i) {
      uint8_t* code = codes + i * code_size();
      if (nbits_ == 8)
        code[j] = uint8_t(assign[i]);
      else
        code[j >> 1] |= uint8_t(assign[i] << ((j & 1) * 4));
    }
  }
}

void ProductQuantizer::decode(const uint8_t* codes, size_t n, float* x) const {
  if (!is_trained()) throw std::invalid_argument("PQ.decode: the quantizer is not trained");
  const size_t ds = dsub();
  for (size_t i = 0; i < n; ++i)
    for (size_t j = 0; j < m_; ++j) {
      const float* c = centroids_.data() + (j * ksub() + code_at(codes + i * code_size(), j)) * ds;
      std::memcpy(x + i * dim_ + j * ds, c, ds * sizeof(float));
    }
}

void ProductQuantizer::distance_tables(const float* q, size_t nq, bool l2, float* tables) const {
  if (!is_trained()) throw std::invalid_argument("PQ: the quantizer is not trained");
  const size_t ds = dsub(), ks = ksub();
  if (ks == 16) {  // 4-bit codes (every fast-scan query)
    const Kernels& kern = kernels(active_isa());
    for (size_t i = 0; i < nq; ++i)
      kern.pq16_tables(q + i * dim_, transposed_.data(), cnorm_.data(), m_, ds, l2,
                       tables + i * m_ * 16);
    return;
  }
  for (size_t i = 0; i < nq; ++i)
    for (size_t j = 0; j < m_; ++j) {
      const float* qj = q + i * dim_ + j * ds;
      float* t = tables + (i * m_ + j) * ks;
      sub_dots(j, qj, t);
      if (l2) {
        double qn = 0;
        for (size_t p = 0; p < ds; ++p) qn += double(qj[p]) * qj[p];
        const float* cn = cnorm_.data() + j * ks;
        for (size_t c = 0; c < ks; ++c) t[c] = std::max(0.0f, float(qn) - 2 * t[c] + cn[c]);
      }
    }
}

void ProductQuantizer::sdc_tables(bool l2, float* tables) const {
  const size_t ks = ksub();
  for (size_t j = 0; j < m_; ++j)
    for (size_t a = 0; a < ks; ++a) {
      const float* ca = centroids_.data() + (j * ks + a) * dsub();
      for (size_t b = 0; b < ks; ++b) {
        const float* cb = centroids_.data() + (j * ks + b) * dsub();
        double s = 0;
        for (size_t p = 0; p < dsub(); ++p)
          s += l2 ? double(ca[p] - cb[p]) * (ca[p] - cb[p]) : double(ca[p]) * cb[p];
        tables[(j * ks + a) * ks + b] = float(s);
      }
    }
}

void ProductQuantizer::scan(const float* table, const uint8_t* codes, size_t n, float* out) const {
  const size_t ks = ksub(), cs = code_size();
  if (nbits_ == 8) {
    for (size_t i = 0; i < n; ++i) {
      const uint8_t* c = codes + i * cs;
      // Four independent sums keep several table loads in flight.
      float s0 = 0, s1 = 0, s2 = 0, s3 = 0;
      size_t j = 0;
      for (; j + 4 <= m_; j += 4) {
        s0 += table[j * ks + c[j]];
        s1 += table[(j + 1) * ks + c[j + 1]];
        s2 += table[(j + 2) * ks + c[j + 2]];
        s3 += table[(j + 3) * ks + c[j + 3]];
      }
      for (; j < m_; ++j) s0 += table[j * ks + c[j]];
      out[i] = (s0 + s1) + (s2 + s3);
    }
  } else {
    for (size_t i = 0; i < n; ++i) {
      const uint8_t* c = codes + i * cs;
      float s0 = 0, s1 = 0;
      size_t j = 0;
      for (; j + 2 <= m_; j += 2) {
        s0 += table[j * ks + (c[j >> 1] & 15)];
        s1 += table[(j + 1) * ks + (c[j >> 1] >> 4)];
      }
      if (j < m_) s0 += table[j * ks + (c[j >> 1] & 15)];
      out[i] = s0 + s1;
    }
  }
}

}  // namespace quanta
