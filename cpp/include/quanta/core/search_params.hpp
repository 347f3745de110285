// Search settings, one struct per family derived from a common base (as cuVS's search_params
// and faiss's SearchParameters): what every search takes (k, threads, filter) lives here once.
#pragma once
#include <cstddef>
#include <cstdint>
#include <memory>
#include <vector>

#include "quanta/core/id_filter.hpp"

namespace quanta {

struct SearchParams {
  size_t k = 10;
  int threads = 0;      // 0: the default thread count
  QueryFilters filter;  // ids a query may return: none, one shared, or one per query

  virtual ~SearchParams() = default;
  virtual std::unique_ptr<SearchParams> clone() const { return std::make_unique<SearchParams>(*this); }
};

struct FlatSearchParams : SearchParams {
  bool quantize_queries = false;  // i8 storage: int8 x int8 dot products (VNNI where present)
  std::unique_ptr<SearchParams> clone() const override {
    return std::make_unique<FlatSearchParams>(*this);
  }
};

struct PQSearchParams : SearchParams {
  bool sdc = false;  // encode the query too (symmetric distances)
  std::unique_ptr<SearchParams> clone() const override {
    return std::make_unique<PQSearchParams>(*this);
  }
};

struct IVFSearchParams : SearchParams {
  size_t nprobe = 1;  // lists visited per query (more when a filter leaves fewer than k)
  // Optional: each query's nprobe lists (nq x nprobe, best first) and their coarse scores, as
  // coarse_search returns them, used instead of the coarse step (faiss's search_preassigned):
  // shards built from one trained state share their centroids, so one coarse step serves all.
  std::vector<int64_t> coarse_lists;
  std::vector<float> coarse_distances;
  std::unique_ptr<SearchParams> clone() const override {
    return std::make_unique<IVFSearchParams>(*this);
  }
};

// A family's own settings when `p` is of its type, else the common ones with the family's
// defaults: what an index reached through the Index interface searches with.
template <class Params>
Params params_as(const SearchParams& p) {
  if (const auto* own = dynamic_cast<const Params*>(&p)) return *own;
  Params out;
  static_cast<SearchParams&>(out) = p;
  return out;
}

// Range search output in faiss's layout: query i's results are [lims[i], lims[i + 1]) of
// distances / ids, best first.
struct RangeResult {
  std::vector<size_t> lims;
  std::vector<float> distances;
  std::vector<int64_t> ids;
};

}  // namespace quanta
