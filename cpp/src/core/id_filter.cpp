#include "quanta/core/id_filter.hpp"

#include <algorithm>

#include "quanta/core/error.hpp"

namespace quanta {

IdFilter IdFilter::from_ids(const int64_t* ids, size_t n) {
  std::vector<int64_t> v(ids, ids + n);
  if (!std::is_sorted(v.begin(), v.end())) std::sort(v.begin(), v.end());
  v.erase(std::unique(v.begin(), v.end()), v.end());
  auto d = std::make_shared<Data>();
  d->count = v.size();
  // A bitmap tests in one load: use it while it is at most the sorted list's size (8 bytes an
  // id, so ids spanning up to 64x their count) or 16 MiB; a binary search costs far more.
  const uint64_t span = v.empty() ? 0 : uint64_t(v.back() - v.front());
  const bool dense = !v.empty() && (span / 64 < v.size() || span < (uint64_t(1) << 27));
  if (dense) {
    d->kind = Kind::bitmap;
    d->lo = v.front();
    d->nbits = uint64_t(v.back() - v.front()) + 1;
    d->words.assign((d->nbits + 63) / 64, 0);
    for (int64_t id : v) {
      const uint64_t u = uint64_t(id - d->lo);
      d->words[u >> 6] |= uint64_t(1) << (u & 63);
    }
  } else {
    d->kind = Kind::sorted;
    d->ids = std::move(v);
  }
  return of(std::move(d));
}

IdFilter IdFilter::from_range(int64_t lo, int64_t hi) {
  auto d = std::make_shared<Data>();
  d->kind = Kind::range;
  d->lo = lo;
  d->hi = std::max(lo, hi);
  d->count = size_t(d->hi - d->lo);
  return of(std::move(d));
}

IdFilter IdFilter::from_bitmap(const uint8_t* bits, size_t nbits) {
  auto d = std::make_shared<Data>();
  d->kind = Kind::bitmap;
  d->nbits = nbits;
  d->words.assign((nbits + 63) / 64, 0);
  for (size_t i = 0; i < (nbits + 7) / 8; ++i) d->words[i / 8] |= uint64_t(bits[i]) << (8 * (i % 8));
  if (nbits % 64) d->words.back() &= (uint64_t(1) << (nbits % 64)) - 1;  // bits past nbits
  for (uint64_t w : d->words) d->count += size_t(__builtin_popcountll(w));
  return of(std::move(d));
}

IdFilter IdFilter::of(std::shared_ptr<Data> d) {
  IdFilter f;
  f.kind_ = d->kind;
  f.lo_ = d->lo;
  f.hi_ = d->hi;
  f.nbits_ = d->nbits;
  f.words_ = d->words.data();
  f.data_ = std::move(d);
  return f;
}

IdFilter IdFilter::negated() const {
  IdFilter f = *this;
  f.negate_ = !negate_;
  return f;
}

size_t IdFilter::max_allowed() const {
  if (!data_ || negate_) return std::numeric_limits<size_t>::max();
  return data_->count;
}

bool IdFilter::sorted_contains(int64_t id) const {
  return std::binary_search(data_->ids.begin(), data_->ids.end(), id);
}

}  // namespace quanta
