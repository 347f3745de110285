#include "quanta/index/token_candidates.hpp"

#include <algorithm>
#include <cmath>
#include <unordered_map>
#include <utility>
#include <vector>

#include "quanta/core/parallel.hpp"

namespace quanta {

void token_candidates(const float* scores, const int64_t* labels, size_t kp,
                      const int64_t* q_offsets, size_t nq, size_t nc, int threads,
                      int64_t* cand) {
  struct Credit {
    float gain = 0.0f;
    int64_t last_token = -1;  // the query token that credited it last (once per token)
  };
  parallel_for(nq, resolve_threads(threads), [&](size_t i, size_t) {
    std::unordered_map<int64_t, Credit> docs;
    docs.reserve(size_t(q_offsets[i + 1] - q_offsets[i]) * kp);
    for (int64_t t = q_offsets[i]; t < q_offsets[i + 1]; ++t) {
      const float* s = scores + size_t(t) * kp;
      const int64_t* l = labels + size_t(t) * kp;
      size_t found = 0;
      while (found < kp && l[found] >= 0 && std::isfinite(s[found])) ++found;
      if (found == 0) continue;
      const float floor = s[found - 1];
      for (size_t j = 0; j < found; ++j) {
        Credit& c = docs[l[j]];
        if (c.last_token == t) continue;  // a later hit of the same document scores lower
        c.last_token = t;
        c.gain += s[j] - floor;
      }
    }
    std::vector<std::pair<float, int64_t>> ranked;
    ranked.reserve(docs.size());
    for (const auto& [label, c] : docs) ranked.emplace_back(c.gain, label);
    const size_t keep = std::min(nc, ranked.size());
    const auto better = [](const std::pair<float, int64_t>& a, const std::pair<float, int64_t>& b) {
      return a.first > b.first || (a.first == b.first && a.second < b.second);
    };
    std::partial_sort(ranked.begin(), ranked.begin() + keep, ranked.end(), better);
    int64_t* out = cand + i * nc;
    for (size_t j = 0; j < nc; ++j) out[j] = j < keep ? ranked[j].second : -1;
  });
}

}  // namespace quanta
