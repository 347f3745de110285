#include <cuda_runtime.h>

#include "check.cuh"
#include "device.cuh"
#include "pq_scan.cuh"

namespace quanta {
namespace cuda {

namespace {

constexpr int kThreads = 256;

__device__ __forceinline__ float adc(const uint8_t* code, int m, int nbits, const float* lut) {
  const int ksub = 1 << nbits;
  float s = 0.0f;
  for (int j = 0; j < m; ++j) {
    const int c = nbits == 8 ? code[j] : (code[j >> 1] >> ((j & 1) * 4)) & 15;
    s += lut[j * ksub + c];
  }
  return s;
}

// The table a block scores with: copied to shared memory when it fits, else read in place.
__device__ __forceinline__ const float* stage_table(const float* table, size_t tsize,
                                                    bool shared, float* smem) {
  if (!shared) return table;
  for (size_t e = threadIdx.x; e < tsize; e += blockDim.x) smem[e] = table[e];
  __syncthreads();
  return smem;
}

// Grid (row blocks, queries).
__global__ void adc_kernel(const uint8_t* codes, size_t n, int m, int nbits, const float* luts,
                           const float* bias, float sign, bool shared, float* scores,
                           size_t ld) {
  extern __shared__ float smem[];
  const size_t qi = blockIdx.y, tsize = size_t(m) << nbits;
  const float* lut = stage_table(luts + qi * tsize, tsize, shared, smem);
  const size_t row = size_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (row >= n) return;
  const size_t cs = nbits == 8 ? size_t(m) : size_t(m + 1) / 2;
  scores[qi * ld + row] = sign * adc(codes + row * cs, m, nbits, lut) + (bias ? bias[qi] : 0.0f);
}

// Grid (probes, queries): block (p, i) scores list probes[i * nprobe + p] with its table.
__global__ void ivf_adc_kernel(const uint8_t* codes, const int64_t* offsets, const int64_t* probes,
                               const int64_t* start, size_t nprobe, int m, int nbits,
                               const float* luts, const float* bias, float sign, bool shared,
                               float* scores, size_t ld) {
  extern __shared__ float smem[];
  const size_t slot = size_t(blockIdx.y) * nprobe + blockIdx.x, tsize = size_t(m) << nbits;
  const int64_t l = probes[slot];
  if (l < 0) return;  // uniform across the block
  const size_t begin = size_t(offsets[l]), len = size_t(offsets[l + 1]) - begin;
  const float* lut = stage_table(luts + slot * tsize, tsize, shared, smem);
  const size_t cs = nbits == 8 ? size_t(m) : size_t(m + 1) / 2;
  float* out = scores + size_t(blockIdx.y) * ld + size_t(start[slot]);
  for (size_t r = threadIdx.x; r < len; r += blockDim.x)
    out[r] = sign * adc(codes + (begin + r) * cs, m, nbits, lut) + bias[slot];
}

// Shared-memory bytes for one table, 0 when it does not fit (global reads then).
size_t table_bytes(const void* kernel, int m, int nbits) {
  const size_t bytes = (size_t(m) << nbits) * sizeof(float);
  return fit_shared(kernel, bytes) ? bytes : 0;
}

}  // namespace

void adc_scores(const uint8_t* codes, size_t n, int m, int nbits, const float* luts,
                const float* bias, float sign, size_t nq, float* scores, size_t ld,
                uintptr_t stream) {
  if (n == 0 || nq == 0) return;
  const size_t smem = table_bytes(reinterpret_cast<const void*>(adc_kernel), m, nbits);
  const size_t tsize = size_t(m) << nbits;
  batch_y(nq, 1, [&](size_t q0, size_t count) {
    const dim3 grid{unsigned((n + kThreads - 1) / kThreads), unsigned(count)};
    adc_kernel<<<grid, kThreads, smem, reinterpret_cast<cudaStream_t>(stream)>>>(
        codes, n, m, nbits, luts + q0 * tsize, bias ? bias + q0 : nullptr, sign, smem > 0,
        scores + q0 * ld, ld);
    check(cudaGetLastError(), "ADC kernel");
  });
}

void ivf_adc_scores(const uint8_t* codes, const int64_t* offsets, const int64_t* probes,
                    const int64_t* start, size_t nprobe, int m, int nbits, const float* luts,
                    const float* bias, float sign, size_t nq, float* scores, size_t ld,
                    uintptr_t stream) {
  if (nq == 0 || nprobe == 0) return;
  const size_t smem = table_bytes(reinterpret_cast<const void*>(ivf_adc_kernel), m, nbits);
  const size_t tsize = size_t(m) << nbits;
  batch_y(nq, 1, [&](size_t q0, size_t count) {
    const size_t s0 = q0 * nprobe;
    const dim3 grid{unsigned(nprobe), unsigned(count)};
    ivf_adc_kernel<<<grid, kThreads, smem, reinterpret_cast<cudaStream_t>(stream)>>>(
        codes, offsets, probes + s0, start + s0, nprobe, m, nbits, luts + s0 * tsize, bias + s0,
        sign, smem > 0, scores + q0 * ld, ld);
    check(cudaGetLastError(), "IVF ADC kernel");
  });
}

}  // namespace cuda
}  // namespace quanta
