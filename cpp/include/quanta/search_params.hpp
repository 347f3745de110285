// Search settings, one struct per family derived from a common base (as cuVS's search_params
// and faiss's SearchParameters): what every search takes (k, threads, filter) lives here once.
#pragma once
#include <cstddef>
#include <cstdint>
#include <vector>

#include "quanta/id_filter.hpp"

namespace quanta {

struct SearchParams {
  size_t k = 10;
  int threads = 0;      // 0: the default thread count
  QueryFilters filter;  // ids a query may return: none, one shared, or one per query
};

struct FlatSearchParams : SearchParams {
  bool quantize_queries = false;  // i8 storage: int8 x int8 dot products (VNNI where present)
};

struct PQSearchParams : SearchParams {
  bool sdc = false;  // encode the query too (symmetric distances)
};

struct IVFSearchParams : SearchParams {
  size_t nprobe = 1;  // lists visited per query (more when a filter leaves fewer than k)
};

// Range search output in faiss's layout: query i's results are [lims[i], lims[i + 1]) of
// distances / ids, best first.
struct RangeResult {
  std::vector<size_t> lims;
  std::vector<float> distances;
  std::vector<int64_t> ids;
};

}  // namespace quanta
