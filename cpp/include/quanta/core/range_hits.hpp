// The hits of a range search, gathered per query by any scan (one thread per query), then
// sorted best first (the same total order as TopKSet) into a RangeResult.
#pragma once
#include <algorithm>
#include <cstdint>
#include <unordered_set>
#include <utility>
#include <vector>

#include "quanta/core/search_params.hpp"
#include "quanta/core/topk.hpp"

namespace quanta {

class RangeHits {
 public:
  explicit RangeHits(size_t nq) : hits_(nq) {}

  void add(size_t i, float score, int64_t pos) { hits_[i].emplace_back(score, pos); }

  // to_distance(i, score): the distance the user sees; to_label(pos): the stored label.
  // unique: a query's hits of one label after its best are dropped (an index storing a
  // vector more than once).
  template <class ToDistance, class ToLabel>
  RangeResult finish(ToDistance&& to_distance, ToLabel&& to_label, bool unique = false) {
    RangeResult out;
    size_t total = 0;
    for (const auto& h : hits_) total += h.size();
    out.lims.assign(hits_.size() + 1, 0);
    out.distances.reserve(total);
    out.ids.reserve(total);
    for (size_t i = 0; i < hits_.size(); ++i) {
      auto& h = hits_[i];
      std::sort(h.begin(), h.end(), [](const auto& a, const auto& b) {
        return TopKSet::better(a.first, a.second, b.first, b.second);
      });
      if (unique) {
        std::unordered_set<int64_t> seen;
        h.erase(std::remove_if(h.begin(), h.end(),
                               [&](const auto& e) { return !seen.insert(e.second).second; }),
                h.end());
      }
      for (const auto& [score, pos] : h) {
        out.distances.push_back(to_distance(i, score));
        out.ids.push_back(to_label(pos));
      }
      out.lims[i + 1] = out.ids.size();
      std::vector<std::pair<float, int64_t>>().swap(h);
    }
    return out;
  }

 private:
  std::vector<std::vector<std::pair<float, int64_t>>> hits_;
};

}  // namespace quanta
