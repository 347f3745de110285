// Exact scan of recurrent binary codes on the GPU (recurrent_binary.hpp, binary_codes.hpp):
// bit-plane popcounts (__popcll) give sum_j c_q c_d, and the code cosine follows from the same
// integer formula and the same double arithmetic as on the CPU, so scores match it exactly.
// Pointers are device pointers; everything runs on `stream`. No Python here.
#pragma once
#include <cstddef>
#include <cstdint>

namespace quanta {
namespace cuda {

// Codes: n x planes * words uint64 (plane i = level i, most significant first); queries:
// nq x qplanes * words. qsum / dsum: sum_j c_j; qinv / dinv: 1 / sqrt(sum_j (2 c_j - K)^2).
// scores[i * ld + r] = num / (...) with num = 4 S - 2 K_d qsum - 2 K_q dsum + m K_q K_d.
void rbe_scores(const uint64_t* codes, size_t n, int planes, const int32_t* dsum,
                const float* dinv, const uint64_t* queries, size_t nq, int qplanes,
                const int32_t* qsum, const float* qinv, int words, int m, float* scores,
                size_t ld, uintptr_t stream);

}  // namespace cuda
}  // namespace quanta
