// Batches of sparse rows in CSR form: row i is entries indptr[i] .. indptr[i + 1] of
// (indices, values). SparseRows views the caller's arrays; SparseDocs owns them, with an id
// per row (what an index hands back of its documents).
#pragma once
#include <cstddef>
#include <cstdint>
#include <vector>

namespace quanta {

struct SparseRows {
  const int64_t* indptr;  // n + 1 offsets
  const int32_t* indices;
  const float* values;
  size_t n;
};

struct SparseDocs {
  std::vector<int64_t> indptr{0};
  std::vector<int32_t> indices;
  std::vector<float> values;
  std::vector<int64_t> ids;

  size_t size() const { return indptr.size() - 1; }
  SparseRows rows() const { return {indptr.data(), indices.data(), values.data(), size()}; }
  // Appends the n rows of r with their ids.
  void append(const SparseRows& r, const int64_t* row_ids) {
    const int64_t base = indptr.back() - r.indptr[0];
    for (size_t i = 0; i < r.n; ++i) indptr.push_back(r.indptr[i + 1] + base);
    indices.insert(indices.end(), r.indices + r.indptr[0], r.indices + r.indptr[r.n]);
    values.insert(values.end(), r.values + r.indptr[0], r.values + r.indptr[r.n]);
    ids.insert(ids.end(), row_ids, row_ids + r.n);
  }
};

}  // namespace quanta
