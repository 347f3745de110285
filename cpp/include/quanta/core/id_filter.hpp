// Which ids a search may return (faiss's IDSelector): an allow-list of ids, a half-open id
// range or a bitmap over ids, each negatable into a deny-list. Searches test it inside their
// scans, before a row enters a heap, so k results come back whenever k allowed rows exist.
// A filter is immutable and cheap to copy (shared data), so one per query costs little.
#pragma once
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <memory>
#include <vector>

namespace quanta {

class IdFilter {
 public:
  IdFilter() = default;  // allows every id

  // Sorts and de-duplicates; kept as a bitmap when that is no larger than the sorted list.
  static IdFilter from_ids(const int64_t* ids, size_t n);
  static IdFilter from_range(int64_t lo, int64_t hi);  // lo <= id < hi
  // Bit i (byte i / 8, least significant bit first: numpy's packbits(bitorder="little"))
  // allows id i, for i < nbits.
  static IdFilter from_bitmap(const uint8_t* bits, size_t nbits);
  IdFilter negated() const;

  bool allows_all() const { return kind_ == Kind::all && !negate_; }
  bool allows(int64_t id) const {
    bool in;
    switch (kind_) {
      case Kind::all: in = true; break;
      case Kind::range: in = id >= lo_ && id < hi_; break;
      case Kind::bitmap: {
        const uint64_t u = uint64_t(id) - uint64_t(lo_);
        in = u < nbits_ && (words_[u >> 6] >> (u & 63)) & 1;
        break;
      }
      default: in = sorted_contains(id);
    }
    return in != negate_;
  }
  // At most this many ids are allowed; SIZE_MAX for deny-lists and the empty filter.
  size_t max_allowed() const;
  // masks[r / 32] bit r % 32 says whether ids[r] is allowed, for r < n (the last mask's
  // unused bits are 0): the per-block masks of the fast-scan layout.
  void block_masks(const int64_t* ids, size_t n, uint32_t* masks) const {
    for (size_t b = 0; b * 32 < n; ++b) {
      uint32_t m = 0;
      for (size_t v = 0, end = std::min<size_t>(32, n - 32 * b); v < end; ++v)
        m |= uint32_t(allows(ids[32 * b + v])) << v;
      masks[b] = m;
    }
  }
  // Calls f(id) for each allowed id, ascending; only for filters with a finite max_allowed().
  template <class F>
  void for_each_allowed(F&& f) const {
    if (!data_ || negate_) return;
    switch (data_->kind) {
      case Kind::range:
        for (int64_t id = data_->lo; id < data_->hi; ++id) f(id);
        break;
      case Kind::bitmap:
        for (size_t w = 0; w < data_->words.size(); ++w)
          for (uint64_t b = data_->words[w]; b; b &= b - 1)
            f(data_->lo + int64_t(w * 64 + size_t(__builtin_ctzll(b))));
        break;
      default:
        for (int64_t id : data_->ids) f(id);
    }
  }

 private:
  enum class Kind : uint8_t { all, range, bitmap, sorted };
  struct Data {
    Kind kind = Kind::range;
    int64_t lo = 0, hi = 0;       // range; bitmap: lo is the id of bit 0
    uint64_t nbits = 0;           // bitmap
    std::vector<uint64_t> words;  // bitmap
    std::vector<int64_t> ids;     // sorted, unique
    size_t count = 0;             // allowed ids (before negation)
  };
  bool sorted_contains(int64_t id) const;
  static IdFilter of(std::shared_ptr<Data> d);

  std::shared_ptr<const Data> data_;
  // What allows() reads, copied out of data_ so a test is one load for a bitmap.
  Kind kind_ = Kind::all;
  bool negate_ = false;
  int64_t lo_ = 0, hi_ = 0;
  uint64_t nbits_ = 0;
  const uint64_t* words_ = nullptr;
};

// The filters of one search: none, one for every query, or one per query.
class QueryFilters {
 public:
  QueryFilters() = default;
  explicit QueryFilters(std::vector<IdFilter> filters) : f_(std::move(filters)) {}
  bool empty() const { return f_.empty(); }
  bool shared() const { return f_.size() == 1; }
  size_t size() const { return f_.size(); }
  // Query i's filter, or nullptr when the search has none.
  const IdFilter* of(size_t i) const {
    return f_.empty() ? nullptr : &f_[f_.size() == 1 ? 0 : i];
  }

 private:
  std::vector<IdFilter> f_;
};

}  // namespace quanta
