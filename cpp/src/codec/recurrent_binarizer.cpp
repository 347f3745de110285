#include <algorithm>
#include <cmath>
#include <stdexcept>
#include <string>

#include "quanta/codec/recurrent_binary.hpp"
#include "quanta/core/parallel.hpp"
#include "quanta/core/rows.hpp"
#include "quanta/simd/dispatch.hpp"
#include "quanta/simd/kernels.hpp"

namespace quanta {

namespace {

constexpr size_t kRowsPerTask = 256;

// A layer with its weights packed as the GEMM kernel's query panels ([panel][in][mq]), so
// the layer is the same micro-kernel as the flat search: inputs as rows, outputs as columns.
struct PackedLayer {
  const DenseLayer* layer;
  std::vector<float> panels;
};
using PackedTransform = std::vector<PackedLayer>;

PackedTransform pack(const Transform& t, size_t mq) {
  PackedTransform out;
  for (const DenseLayer& l : t) {
    const size_t npanels = (l.out + mq - 1) / mq;
    PackedLayer p{&l, std::vector<float>(npanels * l.in * mq, 0.0f)};
    for (size_t o = 0; o < l.out; ++o) {
      float* col = p.panels.data() + (o / mq) * l.in * mq + o % mq;
      for (size_t i = 0; i < l.in; ++i) col[i * mq] = l.w[o * l.in + i];
    }
    out.push_back(std::move(p));
  }
  return out;
}

// y (n x out) = layer(x (n x in)).
void apply(const Kernels& kern, const PackedLayer& p, const float* x, size_t n, float* y) {
  const DenseLayer& l = *p.layer;
  const size_t mq = size_t(kern.mq), mr = size_t(kern.mr);
  std::vector<float> tile(mr * mq), one(mr, 1.0f), zero(mr, 0.0f), thr(mq, INFINITY);
  for (size_t r0 = 0; r0 < n; r0 += mr) {
    const size_t nr = std::min(mr, n - r0);
    for (size_t o0 = 0; o0 < l.out; o0 += mq) {
      kern.gemm_tile(x + r0 * l.in, nr, p.panels.data() + (o0 / mq) * l.in * mq, l.in,
                     one.data(), zero.data(), thr.data(), tile.data());
      const size_t nc = std::min(mq, l.out - o0);
      for (size_t r = 0; r < nr; ++r)
        for (size_t j = 0; j < nc; ++j) {
          float v = tile[r * mq + j] + (l.b.empty() ? 0.0f : l.b[o0 + j]);
          y[(r0 + r) * l.out + o0 + j] = l.relu ? std::max(v, 0.0f) : v;
        }
    }
  }
}

// out = t(x) for n rows; tmp holds the hidden layers.
void run(const Kernels& kern, const PackedTransform& t, const float* x, size_t n,
         std::vector<float>& out, std::vector<float>& tmp) {
  const float* in = x;
  for (size_t i = 0; i < t.size(); ++i) {
    std::vector<float>& dst = (t.size() - i) % 2 ? out : tmp;  // the last layer lands in out
    dst.resize(n * t[i].layer->out);
    apply(kern, t[i], in, n, dst.data());
    in = dst.data();
  }
}

void check_transform(const Transform& t, size_t in, size_t out, const std::string& what) {
  if (t.empty()) throw std::invalid_argument(what + ": no layers");
  size_t width = in;
  for (const DenseLayer& l : t) {
    if (l.in != width || l.w.size() != l.in * l.out || !(l.b.empty() || l.b.size() == l.out))
      throw std::invalid_argument(what + ": layer shapes do not chain (" + std::to_string(width) +
                                  " inputs expected)");
    for (float v : l.w)
      if (!std::isfinite(v)) throw std::invalid_argument(what + ": non-finite weight");
    for (float v : l.b)
      if (!std::isfinite(v)) throw std::invalid_argument(what + ": non-finite bias");
    width = l.out;
  }
  if (width != out)
    throw std::invalid_argument(what + ": " + std::to_string(width) + " outputs; expected " +
                                std::to_string(out));
}

}  // namespace

RecurrentBinarizer::RecurrentBinarizer(size_t dim, size_t m, size_t levels)
    : dim_(dim), m_(m), levels_(levels) {
  if (dim == 0 || m == 0) throw std::invalid_argument("RecurrentBinarizer: dim and m must be >= 1");
  if (levels > 7) throw std::invalid_argument("RecurrentBinarizer: levels must be <= 7");
}

void RecurrentBinarizer::set_transforms(Transform first, std::vector<Transform> recon,
                                        std::vector<Transform> resid, bool normalize_recon) {
  check_transform(first, dim_, m_, "first transform");
  if (recon.size() != levels_ || resid.size() != levels_)
    throw std::invalid_argument("RecurrentBinarizer: one reconstruction and one residual "
                                "transform per level are needed");
  for (size_t i = 0; i < levels_; ++i) {
    check_transform(recon[i], m_, dim_, "reconstruction transform " + std::to_string(i + 1));
    check_transform(resid[i], dim_, m_, "residual transform " + std::to_string(i + 1));
  }
  first_ = std::move(first);
  recon_ = std::move(recon);
  resid_ = std::move(resid);
  normalize_recon_ = normalize_recon;
}

void RecurrentBinarizer::encode(const float* x, size_t n, uint64_t* codes, int threads,
                                size_t levels) const {
  if (!is_trained()) throw std::invalid_argument("encode: the binarizer has no transforms; fit it first");
  if (levels > levels_)
    throw std::invalid_argument("encode: " + std::to_string(levels) + " levels asked of a " +
                                std::to_string(levels_) + "-level binarizer");
  const Kernels& kern = kernels(active_isa());
  const size_t mq = size_t(kern.mq), words = this->words(), cw = (levels + 1) * words;
  const PackedTransform first = pack(first_, mq);
  std::vector<PackedTransform> recon, resid;
  for (size_t i = 0; i < levels; ++i) {
    recon.push_back(pack(recon_[i], mq));
    resid.push_back(pack(resid_[i], mq));
  }
  const size_t ntasks = (n + kRowsPerTask - 1) / kRowsPerTask;
  parallel_for(ntasks, resolve_threads(threads), [&](size_t t, size_t) {
    const size_t r0 = t * kRowsPerTask, nr = std::min(kRowsPerTask, n - r0);
    const float* xs = x + r0 * dim_;
    uint64_t* cs = codes + r0 * cw;
    std::fill(cs, cs + nr * cw, uint64_t(0));
    std::vector<float> z, tmp, xh, r(nr * dim_), b(nr * m_);
    // sign(0) counts as +1, as everywhere in quanta's codes.
    auto take_signs = [&](size_t level, float weight) {
      for (size_t i = 0; i < nr; ++i)
        for (size_t j = 0; j < m_; ++j) {
          const bool bit = z[i * m_ + j] >= 0.0f;
          if (bit) cs[i * cw + level * words + j / 64] |= uint64_t(1) << (j % 64);
          b[i * m_ + j] += bit ? weight : -weight;
        }
    };
    run(kern, first, xs, nr, z, tmp);
    take_signs(0, 1.0f);
    for (size_t level = 1; level <= levels; ++level) {
      run(kern, recon[level - 1], b.data(), nr, xh, tmp);
      if (normalize_recon_) normalize_rows(xh.data(), nr, dim_);
      for (size_t e = 0; e < nr * dim_; ++e) r[e] = xs[e] - xh[e];
      run(kern, resid[level - 1], r.data(), nr, z, tmp);
      take_signs(level, std::ldexp(1.0f, -int(level)));
    }
  });
}

void RecurrentBinarizer::unpack(const uint64_t* code, size_t planes, uint8_t* c) const {
  const size_t words = this->words();
  for (size_t j = 0; j < m_; ++j) {
    uint32_t v = 0;
    for (size_t i = 0; i < planes; ++i) v = (v << 1) | ((code[i * words + j / 64] >> (j % 64)) & 1);
    c[j] = uint8_t(v);
  }
}

void RecurrentBinarizer::code_stats(const uint64_t* code, size_t planes, int32_t* sum,
                                    int64_t* norm2) const {
  std::vector<uint8_t> c(m_);
  unpack(code, planes, c.data());
  const int64_t k = (int64_t(1) << planes) - 1;
  int64_t s = 0, q = 0;
  for (uint8_t v : c) {
    s += v;
    q += (2 * int64_t(v) - k) * (2 * int64_t(v) - k);
  }
  *sum = int32_t(s);
  *norm2 = q;
}

}  // namespace quanta
