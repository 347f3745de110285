// The int64 labels of stored items, shared by the indexes: no memory while the labels are the
// positions 0..n-1, one int64 per item once the user gives ids; an id -> position map is
// built once on demand (reconstruct, re-ranking) under a lock, then read without one, so
// concurrent searches neither race nor serialize. Removed items are tombstones (one bit per
// position) that every scan skips until the index compacts its arrays.
#pragma once
#include <atomic>
#include <cstdint>
#include <limits>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include "quanta/core/error.hpp"
#include "quanta/core/id_filter.hpp"
#include "quanta/core/topk.hpp"

namespace quanta {

class Labels {
 public:
  // Throws std::invalid_argument for a negative id (-1 marks missing results).
  static void check(const int64_t* ids, size_t n) {
    if (!ids) return;
    for (size_t i = 0; i < n; ++i)
      require(ids[i] >= 0, "add: ids must be non-negative (-1 marks missing results); got " +
                               std::to_string(ids[i]) + " at position " + std::to_string(i));
  }
  // The label list after adding n items to `ntotal` (ids null: their positions); empty while
  // every label is still its position. Changes nothing, so a later failure loses nothing.
  std::vector<int64_t> with_added(const int64_t* ids, size_t n, size_t ntotal) const {
    std::vector<int64_t> out;
    if (!ids && ids_.empty()) return out;
    out = ids_;
    if (out.empty())
      for (size_t i = 0; i < ntotal; ++i) out.push_back(int64_t(i));
    for (size_t i = 0; i < n; ++i) out.push_back(ids ? ids[i] : int64_t(ntotal + i));
    return out;
  }
  // assign() for a loaded index of n items. The removed-item mask may be shorter than n bits
  // (items added after the last remove are live: the mask only grows when one is removed);
  // bits past n are ignored, so a corrupt mask cannot count more removals than items.
  void restore(std::vector<int64_t> ids, std::vector<uint64_t> dead, size_t n) {
    const size_t words = (n + 63) / 64;
    require(dead.size() <= words,
            "corrupt index data: the removed-item mask is longer than the item count");
    if (!dead.empty()) {
      dead.resize(words, 0);
      if (n % 64) dead.back() &= (uint64_t(1) << (n % 64)) - 1;
    }
    assign(std::move(ids), std::move(dead));
  }
  void assign(std::vector<int64_t> ids, std::vector<uint64_t> dead = {}) {
    std::lock_guard<std::mutex> lock(mutex_);
    ids_ = std::move(ids);
    dead_ = std::move(dead);
    nremoved_ = 0;
    for (uint64_t w : dead_) nremoved_ += size_t(__builtin_popcountll(w));
    map_.clear();
    map_ready_.store(false);
  }
  // Installs the result of with_added() (an empty list keeps the positional labels).
  void commit(std::vector<int64_t>&& next) {
    std::lock_guard<std::mutex> lock(mutex_);
    if (!next.empty()) ids_.swap(next);
    map_.clear();
    map_ready_.store(false);
  }
  int64_t at(int64_t pos) const { return pos < 0 || ids_.empty() ? pos : ids_[size_t(pos)]; }
  // Position of the first live item labelled `id`, or -1.
  int64_t position_of(int64_t id, size_t ntotal) const {
    if (ids_.empty()) return (id >= 0 && size_t(id) < ntotal && live(size_t(id))) ? id : -1;
    if (!map_ready_.load(std::memory_order_acquire)) {
      std::lock_guard<std::mutex> lock(mutex_);
      if (!map_ready_.load(std::memory_order_relaxed)) {
        map_.reserve(ids_.size());
        for (size_t i = ids_.size(); i-- > 0;)
          if (live(i)) map_[ids_[i]] = int64_t(i);
        map_ready_.store(true, std::memory_order_release);
      }
    }
    auto it = map_.find(id);
    return it == map_.end() ? -1 : it->second;
  }

  // -- tombstones ---------------------------------------------------------------------------
  bool live(size_t pos) const {
    return (pos >> 6) >= dead_.size() || !((dead_[pos >> 6] >> (pos & 63)) & 1);
  }
  // Whether a search may return position pos: live and, with a filter, allowed by it.
  bool allowed(size_t pos, const IdFilter* f) const {
    return live(pos) && (!f || f->allows(at(int64_t(pos))));
  }
  // Whether a search under these filters must test rows at all.
  bool checks(const QueryFilters& filters) const { return nremoved_ || !filters.empty(); }
  // The positions of [begin, begin + count) a search may return under f, as offsets from
  // begin; returns how many.
  size_t select(size_t begin, size_t count, const IdFilter* f, uint32_t* out) const {
    size_t n = 0;
    for (size_t r = 0; r < count; ++r)
      if (allowed(begin + r, f)) out[n++] = uint32_t(r);
    return n;
  }
  size_t removed() const { return nremoved_; }
  // Marks every live item whose label f allows as removed; returns how many.
  size_t remove(const IdFilter& f, size_t ntotal) {
    std::vector<uint64_t> dead = dead_;
    dead.resize((ntotal + 63) / 64, 0);
    size_t n = 0;
    const auto mark = [&](size_t pos) {
      if (!live(pos)) return;
      dead[pos >> 6] |= uint64_t(1) << (pos & 63);
      ++n;
    };
    if (ids_.empty() && f.max_allowed() < ntotal) {  // positional labels: visit the ids alone
      f.for_each_allowed([&](int64_t id) {
        if (id >= 0 && size_t(id) < ntotal) mark(size_t(id));
      });
    } else {
      for (size_t pos = 0; pos < ntotal; ++pos)
        if (f.allows(at(int64_t(pos)))) mark(pos);
    }
    if (n == 0) return 0;
    std::lock_guard<std::mutex> lock(mutex_);
    dead_.swap(dead);
    nremoved_ += n;
    map_.clear();
    map_ready_.store(false);
    return n;
  }
  // The live positions, in order: what compact() keeps.
  std::vector<size_t> live_positions(size_t ntotal) const {
    std::vector<size_t> out;
    out.reserve(ntotal - nremoved_);
    for (size_t pos = 0; pos < ntotal; ++pos)
      if (live(pos)) out.push_back(pos);
    return out;
  }
  // Keeps the labels of `keep` (live_positions) and forgets the tombstones.
  void compact(const std::vector<size_t>& keep) {
    std::vector<int64_t> ids(keep.size());
    for (size_t i = 0; i < keep.size(); ++i) ids[i] = at(int64_t(keep[i]));
    bool positional = true;
    for (size_t i = 0; i < ids.size() && positional; ++i) positional = ids[i] == int64_t(i);
    assign(positional ? std::vector<int64_t>() : std::move(ids));
  }
  const std::vector<uint64_t>& dead() const { return dead_; }
  // Keeps the first n items (undoes an add).
  void truncate(size_t n) {
    std::vector<int64_t> ids(ids_.begin(), ids_.begin() + std::min(n, ids_.size()));
    std::vector<uint64_t> dead(dead_.begin(), dead_.begin() + std::min((n + 63) / 64, dead_.size()));
    if (n % 64 && (n >> 6) < dead.size()) dead[n >> 6] &= (uint64_t(1) << (n % 64)) - 1;
    assign(std::move(ids), std::move(dead));
  }

  const std::vector<int64_t>& raw() const { return ids_; }
  size_t memory_usage() const {
    return ids_.size() * sizeof(int64_t) + dead_.size() * sizeof(uint64_t);
  }

 private:
  std::vector<int64_t> ids_;
  std::vector<uint64_t> dead_;  // bit per position: removed
  size_t nremoved_ = 0;
  mutable std::mutex mutex_;
  mutable std::unordered_map<int64_t, int64_t> map_;
  mutable std::atomic<bool> map_ready_{false};
};

// Keeps rows keep[0], keep[1], ... (ascending, as live_positions gives them) of v, each
// `width` elements, in place.
template <class Vector>
void keep_rows(Vector& v, const std::vector<size_t>& keep, size_t width) {
  for (size_t i = 0; i < keep.size(); ++i)  // keep[i] >= i: moving down in order is safe
    if (keep[i] != i) std::copy_n(v.data() + keep[i] * width, width, v.data() + i * width);
  v.resize(keep.size() * width);
  v.shrink_to_fit();
}

// Writes each query's k best (best first) as (distance, label), padding with (pad, -1).
// to_distance(i, score) turns a kept score of query i into the distance the user sees.
template <class Top, class ToDistance>
void write_results(Top& heaps, size_t k, const Labels& labels, float pad, float* distances,
                   int64_t* ids, ToDistance&& to_distance) {
  for (size_t i = 0; i < heaps.queries(); ++i) {
    heaps.write_sorted(i, distances + i * k, ids + i * k, pad);
    for (size_t j = 0; j < k; ++j) {
      int64_t& l = ids[i * k + j];
      if (l >= 0) {
        distances[i * k + j] = to_distance(i, distances[i * k + j]);
        l = labels.at(l);
      }
    }
  }
}

}  // namespace quanta
