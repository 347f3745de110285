// ADC lookup-table scans for PQ and IVF-PQ on the GPU, and the block top-k they share with the
// flat scan. Pointers are device pointers; everything runs on `stream`. No Python here.
#pragma once
#include <cstddef>
#include <cstdint>

namespace quanta {
namespace cuda {

// scores[i * ld + r] = sign * sum_j luts[i][j][code_j of row r] + bias[i] for rows [0, n) of
// the codes (m sub-quantizers of nbits 4 or 8, quanta's packing), queries [0, nq).
// luts: nq x m x 2^nbits floats; bias may be null.
void adc_scores(const uint8_t* codes, size_t n, int m, int nbits, const float* luts,
                const float* bias, float sign, size_t nq, float* scores, size_t ld,
                uintptr_t stream);

// IVF lists stored back to back (list l holds rows offsets[l] .. offsets[l + 1]). For query i
// and probe p (list probes[i * nprobe + p], < 0 for none) with table luts[i * nprobe + p]:
// scores[i * nprobe * maxlen + p * maxlen + r] for r < maxlen, -inf past the list's end.
void ivf_adc_scores(const uint8_t* codes, const int64_t* offsets, const int64_t* probes,
                    size_t nprobe, int m, int nbits, const float* luts, const float* bias,
                    float sign, size_t nq, size_t maxlen, float* scores, uintptr_t stream);

// Merges columns [0, rows) of scores (nq x ld, column j is position row0 + j) into the running
// k best (score desc, position asc) of each query, best_s / best_p (nq x k, k <= 1024). With
// reset, the running lists start empty.
void topk(const float* scores, size_t ld, size_t row0, size_t rows, size_t nq, size_t k,
          float* best_s, int64_t* best_p, bool reset, uintptr_t stream);

}  // namespace cuda
}  // namespace quanta
