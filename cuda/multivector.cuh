// MUVERA on the GPU (fde.hpp, token_store.hpp): the bucket sums / averages / fill of FDE
// encoding over ragged batches, the final count-sketch, and exact Chamfer scores of candidate
// documents. The token x matrix products (SimHash signs and projections) are one cuBLAS GEMM
// done by the caller (CuPy). Pointers are device pointers; everything runs on `stream`.
#pragma once
#include <cstddef>
#include <cstdint>

namespace quanta {
namespace cuda {

// One block per (set, repetition), the set's tokens in order, so sums are added in the same
// order as on the CPU. y: ntokens x ystride, hyperplane products of repetition r in columns
// r * k_sim .., projected tokens in columns proj_col + r * d_proj .. (proj_col < 0: identity,
// tokens read from x, d_proj == dim). out: n x (r_reps * 2^k_sim * d_proj).
void fde_aggregate(const float* y, size_t ystride, long proj_col, const float* x, size_t dim,
                   const int64_t* offsets, size_t n, int k_sim, int d_proj, int r_reps,
                   bool gray, bool documents, bool fill_empty, float* out, uintptr_t stream);

// out[s * final_dim + o] = sum over i in ptr[o] .. ptr[o + 1] of sign[i] * fde[s * fde_dim +
// idx[i]] (idx increasing within a row: the CPU's order).
void fde_final(const float* fde, size_t n, size_t fde_dim, const int64_t* ptr,
               const int32_t* idx, const float* sign, size_t final_dim, float* out,
               uintptr_t stream);

// scores[i * nc + c] = CHAMFER(query i, document d) in float32 for d = cand[i * nc + c]
// (cand null: d = row0 + c), -inf where d is negative. Tokens float32, rows of dim (any dim).
// Query i's tokens are q[q_offsets[i] .. q_offsets[i + 1]) (offsets into q, absolute).
void chamfer_scores(const float* q, const int64_t* q_offsets, size_t nq, const float* tokens,
                    const int64_t* doc_offsets, const int64_t* cand, size_t row0, size_t nc,
                    size_t dim, float* scores, uintptr_t stream);

}  // namespace cuda
}  // namespace quanta
