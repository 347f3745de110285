#include "quanta/binary_index.hpp"

#include <cmath>
#include <limits>
#include <stdexcept>
#include <string>

#include "quanta/block_scan.hpp"
#include "quanta/dispatch.hpp"
#include "quanta/error.hpp"
#include "quanta/fast_scan_codes.hpp"
#include "quanta/kernels.hpp"

namespace quanta {

namespace {

constexpr size_t kCodesPerTask = 8192;     // a multiple of the fast-scan block (32)
constexpr size_t kQueriesPerBatch = 4096;  // bounds the encoded queries held at once
constexpr size_t kGroup = 4;               // sdc: queries per code load

// The sdc nibbles of n codes (fast-scan's plain 4-bit codes: two per byte, low first):
// nibble g holds dimensions D g .. D g + D - 1 (D = 4 / planes), `planes` bits each, the first
// dimension in the lowest bits.
std::vector<uint8_t> to_nibbles(const RecurrentBinarizer& b, size_t p, const uint64_t* codes,
                                size_t n) {
  const size_t d = 4 / p, groups = b.m() / d, cs = (groups + 1) / 2;
  std::vector<uint8_t> out(n * cs, 0), c(b.m());
  for (size_t i = 0; i < n; ++i) {
    b.unpack(codes + i * p * b.words(), p, c.data());
    for (size_t g = 0; g < groups; ++g) {
      uint32_t v = 0;
      for (size_t t = 0; t < d; ++t) v |= uint32_t(c[d * g + t]) << (p * t);
      out[i * cs + g / 2] |= uint8_t(v << (4 * (g % 2)));
    }
  }
  return out;
}

void from_nibbles(const RecurrentBinarizer& b, size_t p, const uint8_t* nib, size_t n,
                  uint64_t* codes) {
  const size_t d = 4 / p, groups = b.m() / d, cs = (groups + 1) / 2;
  const size_t words = b.words(), cw = p * words;
  std::fill(codes, codes + n * cw, uint64_t(0));
  for (size_t i = 0; i < n; ++i)
    for (size_t g = 0; g < groups; ++g) {
      const uint32_t v = (nib[i * cs + g / 2] >> (4 * (g % 2))) & 15;
      for (size_t t = 0; t < d; ++t) {
        const size_t j = d * g + t;
        const uint32_t c = (v >> (p * t)) & ((1u << p) - 1);
        for (size_t l = 0; l < p; ++l)
          codes[i * cw + l * words + j / 64] |= uint64_t((c >> (p - 1 - l)) & 1) << (j % 64);
      }
    }
}

// sdc table of one query (values cq, qp planes) for documents of p planes: entry e of nibble g
// is mx - sum over its dimensions of (2 c_q - K_q)(2 v - K_d) + K_q K_d, v the dimension's
// value in e: exact, in [0, mx], smaller is better, as the fast-scan kernel wants. Returns mx.
uint32_t sdc_table(const uint8_t* cq, size_t qp, size_t m, size_t p, uint8_t* lut) {
  const int32_t k = (1 << p) - 1, kq = (1 << qp) - 1;
  const size_t d = 4 / p, groups = m / d;
  const int32_t mx = int32_t(d) * 2 * kq * k;
  std::fill(lut, lut + fast_scan::block_bytes(groups), uint8_t(0));
  for (size_t g = 0; g < groups; ++g)
    for (int32_t e = 0; e < 16; ++e) {
      int32_t t = 0;
      for (size_t s = 0; s < d; ++s) {
        const int32_t v = (e >> (p * s)) & k;
        t += (2 * int32_t(cq[d * g + s]) - kq) * (2 * v - k) + kq * k;
      }
      lut[16 * g + size_t(e)] = uint8_t(mx - t);
    }
  return uint32_t(mx);
}

}  // namespace

BinaryScoring binary_scoring_from_name(const std::string& name) {
  if (name == "popcount") return BinaryScoring::popcount;
  if (name == "u8") return BinaryScoring::u8;
  if (name == "sdc") return BinaryScoring::sdc;
  throw std::invalid_argument("scoring must be 'auto', 'sdc', 'popcount' or 'u8'; got '" + name + "'");
}

const char* binary_scoring_name(BinaryScoring s) {
  return s == BinaryScoring::sdc ? "sdc" : s == BinaryScoring::u8 ? "u8" : "popcount";
}

BinaryIndex::BinaryIndex(size_t dim, size_t m, size_t levels, size_t query_levels,
                         Metric metric, const std::string& scoring)
    : bin_(dim, m, std::max(levels, query_levels)), levels_(levels), metric_(metric) {
  if (metric == Metric::l2)
    throw std::invalid_argument("BinaryIndex: metric must be 'ip' or 'cosine'");
  if (query_levels < levels)
    throw std::invalid_argument("BinaryIndex: query_levels must be >= levels");
  const bool u8_ok = query_levels < 7;
  if (scoring == "auto") {
    scoring_ = sdc_possible(m, levels, query_levels) ? BinaryScoring::sdc
               : !cpu_has("avx512vpopcntdq") && cpu_has("avx512vnni") && u8_ok
                   ? BinaryScoring::u8
                   : BinaryScoring::popcount;
  } else {
    scoring_ = binary_scoring_from_name(scoring);
  }
  if (scoring_ == BinaryScoring::sdc && !sdc_possible(m, levels, query_levels))
    throw std::invalid_argument("BinaryIndex: sdc scoring needs documents of 1 plane with "
                                "bits % 4 == 0 or 2 planes with bits % 2 == 0, a query of at "
                                "most 5 (1 plane) or 4 (2 planes) planes, and 2 bits K_q K_d "
                                "<= 65535");
  if (scoring_ == BinaryScoring::u8 && !u8_ok)
    throw std::invalid_argument("BinaryIndex: u8 scoring supports at most 7 planes");
}

size_t BinaryIndex::memory_usage() const {
  return codes_.size() * sizeof(uint64_t) + blocks_.size() + sums_.size() * sizeof(int32_t) +
         inv_norms_.size() * sizeof(float) + labels_.memory_usage();
}

void BinaryIndex::add(const float* x, size_t n, const int64_t* ids, int threads) {
  if (!is_trained()) throw std::invalid_argument("add: the index is not trained; call train first");
  if (n == 0) return;
  require_finite(x, n * dim(), "add: x");
  Labels::check(ids, n);
  std::vector<uint64_t> codes(n * code_words());
  bin_.encode(x, n, codes.data(), resolve_threads(threads), levels_);
  add_codes(codes.data(), n, ids);
}

void BinaryIndex::add_codes(const uint64_t* codes, size_t n, const int64_t* ids) {
  Labels::check(ids, n);
  const size_t words = bin_.words(), cw = code_words(), tail = bin_.m() % 64;
  if (tail)
    for (size_t i = 0; i < n; ++i)
      for (size_t p = 0; p <= levels_; ++p)
        require((codes[i * cw + p * words + words - 1] >> tail) == 0,
                "add_codes: code " + std::to_string(i) + " has bits set beyond m");
  std::vector<int32_t> sums(n);
  std::vector<float> inv(n);
  int64_t min_norm2 = ntotal_ ? min_norm2_ : std::numeric_limits<int64_t>::max();
  for (size_t i = 0; i < n; ++i) {
    int64_t norm2;  // >= m: K is odd, so every (2 c - K)^2 >= 1
    bin_.code_stats(codes + i * cw, levels_ + 1, &sums[i], &norm2);
    inv[i] = float(1.0 / std::sqrt(double(norm2)));
    min_norm2 = std::min(min_norm2, norm2);
  }
  std::vector<int64_t> next = labels_.with_added(ids, n, ntotal_);
  if (scoring_ == BinaryScoring::sdc) {  // may throw: nothing changed yet
    const std::vector<uint8_t> nib = to_nibbles(bin_, levels_ + 1, codes, n);
    blocks_.resize(fast_scan::bytes_for(ntotal_ + n, nibbles()), 0);
    fast_scan::pack(nib.data(), n, nibbles(), ntotal_, blocks_.data());
  } else {
    codes_.insert(codes_.end(), codes, codes + n * cw);
  }
  sums_.insert(sums_.end(), sums.begin(), sums.end());
  inv_norms_.insert(inv_norms_.end(), inv.begin(), inv.end());
  min_norm2_ = n ? min_norm2 : min_norm2_;
  labels_.commit(std::move(next));
  ntotal_ += n;
}

void BinaryIndex::reset() {
  codes_.clear();
  blocks_.clear();
  sums_.clear();
  inv_norms_.clear();
  min_norm2_ = 0;
  labels_.assign({});
  ntotal_ = 0;
}

void BinaryIndex::search(const float* q, size_t nq, size_t k, int threads, float* distances,
                         int64_t* labels) const {
  require(k > 0, "search: k must be >= 1; got 0");
  if (!is_trained()) throw std::invalid_argument("search: the index is not trained");
  require_finite(q, nq * dim(), "search: queries");
  threads = resolve_threads(threads);
  const Kernels& kern = kernels(active_isa());
  const size_t qplanes = bin_.planes(), planes = levels_ + 1, words = bin_.words();
  const size_t qcw = qplanes * words, cw = code_words();
  const size_t m = bin_.m(), nw = static_cast<size_t>(threads);
  const int64_t kd = (int64_t(1) << planes) - 1, kq = (int64_t(1) << qplanes) - 1;
  const int64_t mkk = int64_t(m) * kq * kd;
  for (size_t q0 = 0; q0 < nq; q0 += kQueriesPerBatch) {
    const size_t nb = std::min(kQueriesPerBatch, nq - q0);
    std::vector<uint64_t> qcodes(nb * qcw);
    bin_.encode(q + q0 * dim(), nb, qcodes.data(), threads);
    std::vector<int32_t> qsum(nb);
    std::vector<double> qnorm2(nb);
    std::vector<float> qinv(nb);
    for (size_t i = 0; i < nb; ++i) {
      int64_t n2;
      bin_.code_stats(qcodes.data() + i * qcw, qplanes, &qsum[i], &n2);
      qnorm2[i] = double(n2);
      qinv[i] = float(1.0 / std::sqrt(double(n2)));
    }
    // cos = num / (|2c_q - K_q| |2c_d - K_d|), num = sum_j (2c_q - K_q)(2c_d - K_d) exact: one
    // formula for all paths
    auto cosine = [&](size_t i, size_t pos, int64_t num) {
      return float(double(num) * qinv[i] * inv_norms_[pos]);
    };
    TopKSet heaps(0, k);
    if (scoring_ == BinaryScoring::sdc) {
      const size_t groups = nibbles(), np = fast_scan::npairs(groups);
      std::vector<uint8_t> luts(nb * np * 32), cq(m);
      int64_t c0 = 0;  // num = c0 - sum
      for (size_t i = 0; i < nb; ++i) {
        bin_.unpack(qcodes.data() + i * qcw, qplanes, cq.data());
        c0 = int64_t(groups) * sdc_table(cq.data(), qplanes, m, planes, luts.data() + i * np * 32) -
             mkk;
      }
      std::vector<fast_scan::Scanner> scanners(nw);
      heaps = scan_blocks(
          nb, ntotal_, k, kCodesPerTask, threads,
          [&](size_t g, size_t begin, size_t count, TopKSet& top, size_t w) {
            const size_t g0 = g * kGroup, ng = std::min(kGroup, nb - g0);
            const uint8_t* lut[kGroup];
            for (size_t e = 0; e < ng; ++e) lut[e] = luts.data() + (g0 + e) * np * 32;
            scanners[w].scan(
                kern, blocks_.data() + begin / fast_scan::kBlock * np * 32, count, groups, lut, ng,
                [&](size_t e) {
                  // cos >= thr > 0 needs num >= thr |b_q| |b_d| >= thr |b_q| min |b_d|
                  const double thr = top.threshold(g0 + e);
                  if (!(thr > 0)) return uint16_t(65535);
                  const double room = double(c0) - thr * std::sqrt(qnorm2[g0 + e] * double(min_norm2_));
                  return room >= 65534 ? uint16_t(65535) : room < 0 ? uint16_t(0) : uint16_t(room + 1);
                },
                [&](size_t e, size_t r, uint16_t sum) {
                  top.push(g0 + e, cosine(g0 + e, begin + r, c0 - int64_t(sum)), int64_t(begin + r));
                });
          },
          kGroup);
    } else {
      const auto dots_fn = scoring_ == BinaryScoring::u8 ? kern.rbe_dots_u8 : kern.rbe_dots;
      std::vector<std::vector<int32_t>> dots(nw, std::vector<int32_t>(kCodesPerTask));
      std::vector<std::vector<float>> scores(nw, std::vector<float>(kCodesPerTask));
      heaps = scan_blocks(
          nb, ntotal_, k, kCodesPerTask, threads,
          [&](size_t i, size_t begin, size_t count, TopKSet& top, size_t w) {
            int32_t* d = dots[w].data();
            float* s = scores[w].data();
            dots_fn(qcodes.data() + i * qcw, qplanes, codes_.data() + begin * cw, planes, count,
                    words, d);
            for (size_t r = 0; r < count; ++r)  // 4 S - 2 K_d sum c_q - 2 K_q sum c_d + m K_q K_d
              s[r] = cosine(i, begin + r,
                            4 * int64_t(d[r]) - 2 * kd * qsum[i] - 2 * kq * sums_[begin + r] + mkk);
            push_scores(top, i, begin, s, count);
          });
    }
    write_results(heaps, k, labels_, -std::numeric_limits<float>::infinity(), distances + q0 * k,
                  labels + q0 * k, [](size_t, float score) { return score; });
  }
}

std::vector<uint64_t> BinaryIndex::codes() const {
  if (scoring_ != BinaryScoring::sdc) return codes_;
  const size_t groups = nibbles();
  std::vector<uint8_t> nib(ntotal_ * ((groups + 1) / 2));
  fast_scan::unpack(blocks_.data(), groups, 0, ntotal_, nib.data());
  std::vector<uint64_t> out(ntotal_ * code_words());
  from_nibbles(bin_, levels_ + 1, nib.data(), ntotal_, out.data());
  return out;
}

void BinaryIndex::restore(const std::vector<uint64_t>& codes, std::vector<int64_t> ids,
                          size_t ntotal) {
  if (codes.size() != ntotal * code_words())
    throw std::invalid_argument("corrupt index data: code array has the wrong size");
  if (!(ids.empty() || ids.size() == ntotal))
    throw std::invalid_argument("corrupt index data: ids");
  BinaryIndex fresh(dim(), bin_.m(), levels_, query_levels(), metric_,
                    binary_scoring_name(scoring_));
  fresh.add_codes(codes.data(), ntotal, ids.empty() ? nullptr : ids.data());  // validates
  codes_ = std::move(fresh.codes_);
  blocks_ = std::move(fresh.blocks_);
  sums_ = std::move(fresh.sums_);
  inv_norms_ = std::move(fresh.inv_norms_);
  min_norm2_ = fresh.min_norm2_;
  labels_.assign(std::move(ids));
  ntotal_ = ntotal;
}

}  // namespace quanta
