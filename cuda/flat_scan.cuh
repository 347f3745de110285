// Flat scan + top-k on the GPU over rows kept in any quanta storage. Pointers are device
// pointers; everything runs on `stream`. No Python here.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>

namespace quanta {
namespace cuda {

int device_count();        // 0 when there is no driver or device
int runtime_version();

// scores[i, j] = a[j] * <q_i, decode(row j)> + b[j]; writes the k best (score desc, position
// asc) of each query to out_scores / out_pos (nq x k), padded with -inf / -1.
// storage: 0 f32, 1 f16, 2 bf16, 3 f8e4m3, 4 f8e5m2, 5 i8 (quanta::Storage).
void flat_search(const uint8_t* codes, size_t n, size_t dim, int storage, const float* a,
                 const float* b, const float* queries, size_t nq, size_t k, float* out_scores,
                 int64_t* out_pos, uintptr_t stream);

}  // namespace cuda
}  // namespace quanta
