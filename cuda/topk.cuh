// Block top-k on the GPU, shared by every scan: merges a chunk of scores into each query's
// running k best. Pointers are device pointers; everything runs on `stream`. No Python here.
#pragma once
#include <cstddef>
#include <cstdint>

namespace quanta {
namespace cuda {

constexpr size_t kMaxTopK = 1024;

// Merges columns [0, rows) of scores (nq x ld, column j is position row0 + j) into the running
// k best of each query, best_s / best_p (nq x k, 1 <= k <= kMaxTopK), ordered by score
// descending, then position ascending; NaN scores count as -inf; empty slots are -inf / -1.
// The order is total, so the result does not depend on how the columns are chunked. With
// reset, the running lists start empty.
void topk(const float* scores, size_t ld, size_t row0, size_t rows, size_t nq, size_t k,
          float* best_s, int64_t* best_p, bool reset, uintptr_t stream);

}  // namespace cuda
}  // namespace quanta
