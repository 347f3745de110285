#include "quanta/codec/binary_codes.hpp"

#include <algorithm>
#include <stdexcept>

#include "quanta/core/error.hpp"
#include "quanta/simd/dispatch.hpp"

namespace quanta {

namespace {

// The sdc nibbles of n codes of p planes (fast-scan's plain 4-bit codes: two per byte, low
// first): nibble g holds dimensions D g .. D g + D - 1 (D = 4 / p), p bits each, the first
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
int32_t sdc_table(const uint8_t* cq, size_t qp, size_t m, size_t p, uint8_t* lut) {
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
  return mx;
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

bool sdc_possible(size_t m, size_t levels, size_t query_levels) {
  if (levels > 1 || query_levels > 6) return false;
  const size_t d = 4 / (levels + 1), kd = (size_t(1) << (levels + 1)) - 1;
  const size_t kq = (size_t(1) << (query_levels + 1)) - 1;
  return m % d == 0 && 2 * d * kq * kd <= 255 && 2 * m * kq * kd <= 65535;
}

size_t default_query_levels(size_t m, size_t levels) {
  if (levels <= 1)
    for (size_t q = 3; q >= 1; --q)
      if (q >= levels && sdc_possible(m, levels, q)) return q;
  return levels;
}

BinaryScoring choose_binary_scoring(const std::string& name, size_t m, size_t levels,
                                    size_t query_levels) {
  const bool u8_ok = query_levels < 7;
  BinaryScoring s;
  if (name == "auto")
    s = sdc_possible(m, levels, query_levels) ? BinaryScoring::sdc
        : !cpu_has("avx512vpopcntdq") && cpu_has("avx512vnni") && u8_ok ? BinaryScoring::u8
                                                                         : BinaryScoring::popcount;
  else
    s = binary_scoring_from_name(name);
  if (s == BinaryScoring::sdc && !sdc_possible(m, levels, query_levels))
    throw std::invalid_argument("sdc scoring needs documents of 1 plane with bits % 4 == 0 or "
                                "2 planes with bits % 2 == 0, a query of at most 5 (1 plane) or "
                                "4 (2 planes) planes, and 2 bits K_q K_d <= 65535");
  if (s == BinaryScoring::u8 && !u8_ok)
    throw std::invalid_argument("u8 scoring supports at most 7 planes");
  return s;
}

BinaryCodes::BinaryCodes(const RecurrentBinarizer& bin, size_t levels, BinaryScoring scoring)
    : bin_(&bin), levels_(levels), scoring_(scoring) {}

size_t BinaryCodes::memory_usage() const {
  return codes_.size() * sizeof(uint64_t) + blocks_.size() + sums_.size() * sizeof(int32_t) +
         inv_norms_.size() * sizeof(float);
}

void BinaryCodes::append(const uint64_t* codes, size_t n) {
  const size_t words = bin_->words(), cw = code_words(), tail = bin_->m() % 64;
  if (tail)
    for (size_t i = 0; i < n; ++i)
      for (size_t p = 0; p <= levels_; ++p)
        require((codes[i * cw + p * words + words - 1] >> tail) == 0,
                "add_codes: code " + std::to_string(i) + " has bits set beyond m");
  std::vector<int32_t> sums(n);
  std::vector<float> inv(n);
  int64_t min_norm2 = n_ ? min_norm2_ : std::numeric_limits<int64_t>::max();
  for (size_t i = 0; i < n; ++i) {
    int64_t norm2;  // >= m: K is odd, so every (2 c - K)^2 >= 1
    bin_->code_stats(codes + i * cw, levels_ + 1, &sums[i], &norm2);
    inv[i] = float(1.0 / std::sqrt(double(norm2)));
    min_norm2 = std::min(min_norm2, norm2);
  }
  if (scoring_ == BinaryScoring::sdc) {  // may throw: nothing changed yet
    const std::vector<uint8_t> nib = to_nibbles(*bin_, levels_ + 1, codes, n);
    blocks_.edit([&](auto& b) {
      b.resize(fast_scan::bytes_for(n_ + n, nibbles()), 0);
      fast_scan::pack(nib.data(), n, nibbles(), n_, b.data());
    });
  } else {
    codes_.edit([&](auto& c) { c.insert(c.end(), codes, codes + n * cw); });
  }
  sums_.edit([&](auto& v) { v.insert(v.end(), sums.begin(), sums.end()); });
  inv_norms_.edit([&](auto& v) { v.insert(v.end(), inv.begin(), inv.end()); });
  if (n) min_norm2_ = min_norm2;
  n_ += n;
}

std::vector<uint64_t> BinaryCodes::codes() const {
  if (scoring_ != BinaryScoring::sdc) return {codes_.begin(), codes_.end()};
  const size_t groups = nibbles();
  std::vector<uint8_t> nib(n_ * ((groups + 1) / 2));
  fast_scan::unpack(blocks_.data(), groups, 0, n_, nib.data());
  std::vector<uint64_t> out(n_ * code_words());
  from_nibbles(*bin_, levels_ + 1, nib.data(), n_, out.data());
  return out;
}

void BinaryCodes::clear() { restore({}, 0); }

void BinaryCodes::restore(Stored s, size_t n) {
  const bool sdc = scoring_ == BinaryScoring::sdc;
  const size_t cw = code_words(), bb = fast_scan::block_bytes(nibbles());
  // Sizes by division, not products of a stored count that could wrap.
  const bool codes_ok = sdc ? s.codes.empty() : s.codes.size() % cw == 0 && s.codes.size() / cw == n;
  const bool blocks_ok = !sdc ? s.blocks.empty()
                              : s.blocks.size() % bb == 0 &&
                                    s.blocks.size() / bb == (n + fast_scan::kBlock - 1) / fast_scan::kBlock;
  require(codes_ok && blocks_ok && s.sums.size() == n && s.inv_norms.size() == n,
          "corrupt index data: binary code arrays do not match the document count");
  require(n == 0 || s.min_norm2 >= 1, "corrupt index data: binary code norms");
  codes_ = std::move(s.codes);
  blocks_ = std::move(s.blocks);
  sums_ = std::move(s.sums);
  inv_norms_ = std::move(s.inv_norms);
  min_norm2_ = s.min_norm2;
  n_ = n;
}

BinaryQuery BinaryCodes::prepare(const uint64_t* qcode) const {
  BinaryQuery q;
  q.code = qcode;
  const size_t qplanes = bin_->planes();
  int64_t n2;
  bin_->code_stats(qcode, qplanes, &q.sum, &n2);
  q.norm2 = double(n2);
  q.inv = float(1.0 / std::sqrt(q.norm2));
  if (scoring_ == BinaryScoring::sdc) {
    const size_t m = bin_->m(), planes = levels_ + 1;
    std::vector<uint8_t> cq(m);
    bin_->unpack(qcode, qplanes, cq.data());
    q.lut.resize(fast_scan::block_bytes(nibbles()));
    const int64_t mx = sdc_table(cq.data(), qplanes, m, planes, q.lut.data());
    const int64_t kq = (int64_t(1) << qplanes) - 1, kd = (int64_t(1) << planes) - 1;
    q.c0 = int64_t(nibbles()) * mx - int64_t(m) * kq * kd;
  }
  return q;
}

}  // namespace quanta
