// The contract every dense index family implements (Flat, PQ, fast-scan PQ, IVF-PQ, RBE,
// IVF-RBE), so indexes compose: RefineIndex re-scores any index's candidates, and
// PreTransformIndex maps the vectors before any index sees them (faiss's IndexRefine and
// IndexPreTransform). A family's search takes its own settings struct (derived from
// SearchParams) when given one, else the common settings with its defaults.
#pragma once
#include <cstddef>
#include <cstdint>
#include <stdexcept>

#include "quanta/id_filter.hpp"
#include "quanta/metric.hpp"
#include "quanta/search_params.hpp"

namespace quanta {

class Index {
 public:
  virtual ~Index() = default;

  virtual size_t dim() const = 0;
  virtual Metric metric() const = 0;
  virtual size_t ntotal() const = 0;  // live vectors
  virtual bool is_trained() const = 0;
  virtual size_t memory_usage() const = 0;

  // ids: one int64 per row, or nullptr for positions.
  virtual void add(const float* x, size_t n, const int64_t* ids, int threads) = 0;
  // nq x params.k results, best first, padded with id -1.
  virtual void search(const float* q, size_t nq, const SearchParams& params, float* distances,
                      int64_t* labels) const = 0;
  virtual size_t remove(const IdFilter& f) = 0;
  virtual bool contains(int64_t id) const = 0;
  virtual void reset() = 0;
  virtual void compact() = 0;

  // Not every family can do these (binary codes do not decode to the input space).
  virtual RangeResult range_search(const float*, size_t, float, const SearchParams&) const {
    throw std::invalid_argument("range_search: not supported by this index");
  }
  virtual void reconstruct(const int64_t*, size_t, float*) const {
    throw std::invalid_argument("reconstruct: not supported by this index");
  }
};

}  // namespace quanta
