// Flat scan on the GPU over rows kept in any quanta storage. Pointers are device pointers;
// everything runs on `stream`. No Python here.
#pragma once
#include <cstddef>
#include <cstdint>

namespace quanta {
namespace cuda {

// scores[i * ld + j] = a[j] * <q_i, decode(row j)> + b[j] for rows [0, n) and queries [0, nq).
// storage: 0 f32, 1 f16, 2 bf16, 3 f8e4m3, 4 f8e5m2, 5 i8 (quanta::Storage).
void flat_scores(const uint8_t* codes, size_t n, size_t dim, int storage, const float* a,
                 const float* b, const float* queries, size_t nq, float* scores, size_t ld,
                 uintptr_t stream);

}  // namespace cuda
}  // namespace quanta
