// Filtered IVF searches: a query its filter left with fewer than k results (its k-th label is
// -1) is searched again with twice the lists, up to all of them; the repeated search widens
// again in turn, so each query ends with k results or with every list visited.
#pragma once
#include <algorithm>
#include <cstdint>
#include <vector>

#include "quanta/core/search_params.hpp"

namespace quanta {

// search(queries, n, params, distances, labels) is the index's own search; skip (optional)
// marks queries that are already final.
template <class Search>
void widen_short_queries(const float* q, size_t nq, const IVFSearchParams& params,
                         float* distances, int64_t* labels, Search&& search, size_t dim,
                         size_t nlist, const uint8_t* skip = nullptr) {
  const size_t k = params.k;
  if (params.filter.empty() || params.nprobe >= nlist) return;
  std::vector<size_t> again;
  for (size_t i = 0; i < nq; ++i)
    if (!(skip && skip[i]) && labels[i * k + k - 1] < 0) again.push_back(i);
  if (again.empty()) return;
  const size_t na = again.size();
  std::vector<float> qa(na * dim), da(na * k);
  std::vector<int64_t> la(na * k);
  std::vector<IdFilter> fa;
  for (size_t a = 0; a < na; ++a) {
    std::copy_n(q + again[a] * dim, dim, &qa[a * dim]);
    if (!params.filter.shared()) fa.push_back(*params.filter.of(again[a]));
  }
  IVFSearchParams wider = params;
  wider.nprobe = std::min(nlist, 2 * params.nprobe);
  wider.coarse_lists.clear();  // the wider search makes its own coarse step
  wider.coarse_distances.clear();
  if (!params.filter.shared()) wider.filter = QueryFilters(std::move(fa));
  search(qa.data(), na, wider, da.data(), la.data());
  for (size_t a = 0; a < na; ++a) {
    std::copy_n(&da[a * k], k, distances + again[a] * k);
    std::copy_n(&la[a * k], k, labels + again[a] * k);
  }
}

}  // namespace quanta
