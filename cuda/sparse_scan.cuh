// Learned-sparse forward index on the GPU (seismic.hpp): exact inner products of queries with
// documents, for exhaustive search and for re-scoring large candidate batches. Pointers are
// device pointers; everything runs on `stream`.
#pragma once
#include <cstddef>
#include <cstdint>

namespace quanta {
namespace cuda {

// scores[i * nc + c] = <query i, document d> for d = cand[i * nc + c] (cand null: d = row0 + c;
// -inf where d is negative). qdense: nq rows of dim floats. Documents: entries doc_ptr[d] ..
// doc_ptr[d + 1] of term ids (comp16 or comp32, the other null) and values (val16 as f16, or
// val8 times scale[d]). One warp per score, lanes striding over the document's entries.
void sparse_scores(const float* qdense, size_t nq, size_t dim, const int64_t* doc_ptr,
                   const uint16_t* comp16, const uint32_t* comp32, const uint16_t* val16,
                   const uint8_t* val8, const float* scale, const int64_t* cand, size_t row0,
                   size_t nc, float* scores, uintptr_t stream);

}  // namespace cuda
}  // namespace quanta
