// What the IVF indexes share about the ids of their inverted lists: where an id sits (built on
// first use under a lock, then read without one, so concurrent searches neither race nor
// serialize; add / remove / restore forget it) and in-place removal that keeps list order.
#pragma once
#include <atomic>
#include <cstdint>
#include <mutex>
#include <unordered_map>
#include <utility>
#include <vector>

#include "quanta/core/buffer.hpp"
#include "quanta/core/id_filter.hpp"

namespace quanta {

class ListIds {
 public:
  using Where = std::unordered_map<int64_t, std::pair<uint32_t, uint32_t>>;  // (list, entry)

  // id -> (list, entry) of its first entry; ids: one array of ids per list.
  template <class Lists>
  const Where& where(const Lists& ids) const {
    if (!ready_.load(std::memory_order_acquire)) {
      std::lock_guard<std::mutex> lock(mutex_);
      if (!ready_.load(std::memory_order_relaxed)) {
        size_t n = 0;
        for (const auto& v : ids) n += v.size();
        map_.reserve(n);
        for (size_t l = ids.size(); l-- > 0;)
          for (size_t r = ids[l].size(); r-- > 0;) map_[ids[l][r]] = {uint32_t(l), uint32_t(r)};
        ready_.store(true, std::memory_order_release);
      }
    }
    return map_;
  }
  void forget() {
    std::lock_guard<std::mutex> lock(mutex_);
    map_.clear();
    ready_.store(false);
  }

  // Drops the entries of one list whose ids f allows, keeping the others in order:
  // move(to, from) moves an entry's code down. Returns how many were dropped.
  template <class Move>
  static size_t remove(LargeVector<int64_t>& ids, const IdFilter& f, Move&& move) {
    size_t w = 0;
    for (size_t r = 0; r < ids.size(); ++r) {
      if (f.allows(ids[r])) continue;
      if (w != r) {
        ids[w] = ids[r];
        move(w, r);
      }
      ++w;
    }
    const size_t dropped = ids.size() - w;
    ids.resize(w);
    return dropped;
  }
  // Whether any entry of the list is allowed by f (cheap test before rewriting a list).
  template <class Ids>
  static bool any(const Ids& ids, const IdFilter& f) {
    for (int64_t id : ids)
      if (f.allows(id)) return true;
    return false;
  }

 private:
  mutable std::mutex mutex_;
  mutable Where map_;
  mutable std::atomic<bool> ready_{false};
};

}  // namespace quanta
