// The contract every index family implements. IndexBase holds the verbs that do not depend
// on what a row is; RowsIndex<Rows> adds add / search over one kind of rows (sparse CSR rows,
// token sets), and Index over dense float rows (Flat, PQ, fast-scan PQ, IVF-PQ, RBE, IVF-RBE,
// the graph), so that dense indexes compose: RefineIndex re-scores any index's candidates, and
// PreTransformIndex maps the vectors before any index sees them (faiss's IndexRefine and
// IndexPreTransform). A family's search takes its own settings struct (derived from
// SearchParams) when given one, else the common settings with its defaults.
#pragma once
#include <cstddef>
#include <cstdint>
#include <stdexcept>

#include "quanta/core/id_filter.hpp"
#include "quanta/core/metric.hpp"
#include "quanta/core/search_params.hpp"
#include "quanta/core/train_params.hpp"

namespace quanta {

class IndexBase {
 public:
  virtual ~IndexBase() = default;

  virtual size_t dim() const = 0;  // of a dense row, or the vocabulary of sparse rows
  virtual Metric metric() const = 0;
  virtual size_t ntotal() const = 0;  // live rows (removed ones excluded)
  virtual bool is_trained() const = 0;
  virtual size_t memory_usage() const = 0;

  // Tombstones: searches never return a removed id; compact() frees its storage.
  virtual size_t remove(const IdFilter& f) = 0;  // how many live rows f allowed
  virtual bool contains(int64_t id) const = 0;
  virtual void reset() = 0;
  virtual void compact() = 0;
};

// An index over rows of one kind (a batch of them: SparseRows, TokenSets).
template <class Rows>
class RowsIndex : public IndexBase {
 public:
  // ids: one int64 per row, or nullptr for positions continuing after the rows held.
  virtual void add(const Rows& x, const int64_t* ids, int threads) = 0;
  // x.n x params.k results, best first, padded with id -1.
  virtual void search(const Rows& q, const SearchParams& params, float* distances,
                      int64_t* labels) const = 0;
};

// An index over dense float32 rows of dim() values.
class Index : public IndexBase {
 public:
  // Learns what the family needs before add (codebooks, list centroids, storage scales) from
  // n rows; a family with nothing to learn keeps what it has.
  virtual void train(const float* x, size_t n, const TrainParams& params) = 0;
  // ids: one int64 per row, or nullptr for positions.
  virtual void add(const float* x, size_t n, const int64_t* ids, int threads) = 0;
  // nq x params.k results, best first, padded with id -1.
  virtual void search(const float* q, size_t nq, const SearchParams& params, float* distances,
                      int64_t* labels) const = 0;

  // Not every family can do these (binary codes do not decode to the input space).
  virtual RangeResult range_search(const float*, size_t, float, const SearchParams&) const {
    throw std::invalid_argument("range_search: not supported by this index");
  }
  virtual void reconstruct(const int64_t*, size_t, float*) const {
    throw std::invalid_argument("reconstruct: not supported by this index");
  }
};

}  // namespace quanta
