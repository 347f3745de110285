#include "quanta/codec/rabitq_codes.hpp"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "quanta/core/error.hpp"
#include "quanta/core/parallel.hpp"
#include "quanta/simd/dispatch.hpp"
#include "quanta/simd/kernels.hpp"

namespace quanta {

namespace {

// splitmix64: the same rotation from a seed on every platform (the standard library's
// distributions differ between implementations).
struct Random {
  uint64_t s;
  uint64_t next() {
    uint64_t z = (s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
  }
  double uniform() { return (double(next() >> 11) + 0.5) / 9007199254740992.0; }  // (0, 1)
  double normal() {  // Box-Muller, its two draws in a fixed order
    const double u = uniform(), v = uniform();
    return std::sqrt(-2.0 * std::log(u)) * std::cos(6.283185307179586 * v);
  }
};

// A random b x b orthogonal matrix (row-major): Gram-Schmidt on Gaussian rows.
void orthogonal(size_t b, Random& rng, float* out) {
  std::vector<double> a(b * b);
  for (double& x : a) x = rng.normal();
  for (size_t i = 0; i < b; ++i) {
    double* ri = &a[i * b];
    for (int pass = 0; pass < 2; ++pass)  // twice: orthogonal to working precision
      for (size_t j = 0; j < i; ++j) {
        const double* rj = &a[j * b];
        double d = 0;
        for (size_t t = 0; t < b; ++t) d += ri[t] * rj[t];
        for (size_t t = 0; t < b; ++t) ri[t] -= d * rj[t];
      }
    double nn = 0;
    for (size_t t = 0; t < b; ++t) nn += ri[t] * ri[t];
    nn = 1.0 / std::sqrt(nn);
    for (size_t t = 0; t < b; ++t) ri[t] *= nn;
  }
  for (size_t i = 0; i < b * b; ++i) out[i] = float(a[i]);
}

size_t blocks_size(size_t dim) {
  size_t total = 0;
  for (size_t s = 0; s < dim; s += RaBitQCodes::kBlock) {
    const size_t b = std::min(RaBitQCodes::kBlock, dim - s);
    total += b * b;
  }
  return total;
}

}  // namespace

RaBitQCodes::RaBitQCodes(size_t dim) : dim_(dim) {
  require(dim > 0 && dim % 4 == 0,
          "RaBitQ codes need dim to be a multiple of 4; got " + std::to_string(dim));
}

void RaBitQCodes::train(const float* x, size_t n, uint64_t seed) {
  require(n > 0, "RaBitQ codes: train needs at least one vector");
  std::vector<double> mean(dim_, 0.0);
  for (size_t i = 0; i < n; ++i)
    for (size_t j = 0; j < dim_; ++j) mean[j] += x[i * dim_ + j];
  std::vector<float> center(dim_);
  for (size_t j = 0; j < dim_; ++j) center[j] = float(mean[j] / double(n));
  Random rng{seed};
  std::vector<uint32_t> perm(dim_);
  std::iota(perm.begin(), perm.end(), 0u);
  for (size_t i = dim_ - 1; i > 0; --i) std::swap(perm[i], perm[rng.next() % (i + 1)]);
  std::vector<float> sign(dim_);
  for (float& s : sign) s = (rng.next() & 1) ? 1.0f : -1.0f;
  std::vector<float> blocks(blocks_size(dim_));
  size_t at = 0;
  for (size_t s = 0; s < dim_; s += kBlock) {
    const size_t b = std::min(kBlock, dim_ - s);
    orthogonal(b, rng, &blocks[at]);
    at += b * b;
  }
  center_ = std::move(center);
  perm_ = std::move(perm);
  sign_ = std::move(sign);
  blocks_ = std::move(blocks);
}

void RaBitQCodes::rotate(const float* x, float* out) const {
  const Kernels& kern = kernels(active_isa());
  float y[kBlock];
  const float* q = blocks_.data();
  for (size_t s = 0; s < dim_; s += kBlock) {
    const size_t b = std::min(kBlock, dim_ - s);
    for (size_t t = 0; t < b; ++t) y[t] = sign_[s + t] * x[perm_[s + t]];
    kern.dot_rows(Storage::f32, y, reinterpret_cast<const uint8_t*>(q), b, b, out + s);
    q += b * b;
  }
}

void RaBitQCodes::encode(const float* x, size_t n, uint8_t* codes, float* factors,
                         int threads) const {
  require(is_trained(), "RaBitQ codes: not trained");
  parallel_for((n + 255) / 256, resolve_threads(threads), [&](size_t t, size_t) {
    std::vector<float> r(dim_), rr(dim_);
    for (size_t i = t * 256; i < std::min(n, (t + 1) * 256); ++i) {
      for (size_t j = 0; j < dim_; ++j) r[j] = x[i * dim_ + j] - center_[j];
      rotate(r.data(), rr.data());
      uint8_t* code = codes + i * code_size();
      std::fill(code, code + code_size(), uint8_t(0));
      double sq = 0, l1 = 0;
      for (size_t j = 0; j < dim_; ++j) {
        sq += double(rr[j]) * rr[j];
        l1 += std::fabs(double(rr[j]));
        if (rr[j] > 0.0f) code[j / 8] |= uint8_t(1u << (j % 8));  // code j/4, bit j%4
      }
      factors[i] = l1 > 0 ? float(sq / l1) : 0.0f;
    }
  });
}

float RaBitQCodes::tables(const float* q, float* t) const {
  std::vector<float> qr(dim_);
  rotate(q, qr.data());
  for (size_t j = 0; j < m(); ++j) {
    const float* v = &qr[4 * j];
    // entry c = (+-v0 +- v1) + (+-v2 +- v3): the low and the high two bits of c
    const float lo[4] = {-v[0] - v[1], v[0] - v[1], -v[0] + v[1], v[0] + v[1]};
    const float hi[4] = {-v[2] - v[3], v[2] - v[3], -v[2] + v[3], v[2] + v[3]};
    for (unsigned c = 0; c < 16; ++c) t[j * 16 + c] = lo[c & 3] + hi[c >> 2];
  }
  float dot;
  kernels(active_isa()).dot_rows(Storage::f32, q, reinterpret_cast<const uint8_t*>(center_.data()),
                                 1, dim_, &dot);
  return dot;
}

std::vector<float> RaBitQCodes::state() const {
  if (!is_trained()) return {};
  std::vector<float> s(center_);
  for (uint32_t p : perm_) s.push_back(float(p));
  s.insert(s.end(), sign_.begin(), sign_.end());
  s.insert(s.end(), blocks_.begin(), blocks_.end());
  return s;
}

void RaBitQCodes::set_state(std::vector<float> s) {
  const size_t d = dim_;
  require(s.size() == 3 * d + blocks_size(d), "corrupt index data: RaBitQ state of " +
                                                  std::to_string(s.size()) + " values");
  std::vector<uint32_t> perm(d);
  std::vector<bool> seen(d, false);
  for (size_t j = 0; j < d; ++j) {
    const float p = s[d + j];
    require(p >= 0 && p < float(d) && p == std::floor(p) && !seen[size_t(p)],
            "corrupt index data: RaBitQ permutation");
    perm[j] = uint32_t(p);
    seen[perm[j]] = true;
  }
  for (float x : s) require(std::isfinite(x), "corrupt index data: RaBitQ state not finite");
  center_.assign(s.begin(), s.begin() + d);
  perm_ = std::move(perm);
  sign_.assign(s.begin() + 2 * d, s.begin() + 3 * d);
  blocks_.assign(s.begin() + 3 * d, s.end());
}

}  // namespace quanta
