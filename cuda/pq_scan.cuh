// ADC lookup-table scans for PQ and IVF-PQ on the GPU. Pointers are device pointers;
// everything runs on `stream`. No Python here.
#pragma once
#include <cstddef>
#include <cstdint>

namespace quanta {
namespace cuda {

// scores[i * ld + r] = sign * sum_j luts[i][j][code_j of row r] + bias[i] for rows [0, n) of
// the codes (m sub-quantizers of nbits 4 or 8, quanta's packing), queries [0, nq).
// luts: nq x m x 2^nbits floats, staged in shared memory when the device has room for one
// table, else read from global memory; bias may be null.
void adc_scores(const uint8_t* codes, size_t n, int m, int nbits, const float* luts,
                const float* bias, float sign, size_t nq, float* scores, size_t ld,
                uintptr_t stream);

// IVF lists stored back to back (list l holds rows offsets[l] .. offsets[l + 1]). For query i
// and probe p (list probes[i * nprobe + p], < 0 for none) with table luts[i * nprobe + p]:
// row r of the list is scored into scores[i * ld + start[i * nprobe + p] + r]. Columns no
// probe covers are left as they are (the caller fills them).
void ivf_adc_scores(const uint8_t* codes, const int64_t* offsets, const int64_t* probes,
                    const int64_t* start, size_t nprobe, int m, int nbits, const float* luts,
                    const float* bias, float sign, size_t nq, float* scores, size_t ld,
                    uintptr_t stream);

}  // namespace cuda
}  // namespace quanta
