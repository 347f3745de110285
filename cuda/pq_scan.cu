#include <cuda_runtime.h>

#include <stdexcept>
#include <string>

#include "check.cuh"
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

// Grid (row blocks, queries): the query's table goes to shared memory once per block.
__global__ void adc_kernel(const uint8_t* codes, size_t n, int m, int nbits, const float* luts,
                           const float* bias, float sign, float* scores, size_t ld) {
  extern __shared__ float lut[];
  const size_t qi = blockIdx.y, tsize = size_t(m) << nbits;
  for (size_t e = threadIdx.x; e < tsize; e += blockDim.x) lut[e] = luts[qi * tsize + e];
  __syncthreads();
  const size_t row = size_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (row >= n) return;
  const size_t cs = nbits == 8 ? size_t(m) : size_t(m + 1) / 2;
  scores[qi * ld + row] = sign * adc(codes + row * cs, m, nbits, lut) + (bias ? bias[qi] : 0.0f);
}

// Grid (probes, queries): block (p, i) scores list probes[i * nprobe + p] with its table.
__global__ void ivf_adc_kernel(const uint8_t* codes, const int64_t* offsets, const int64_t* probes,
                               size_t nprobe, int m, int nbits, const float* luts,
                               const float* bias, float sign, size_t maxlen, float* scores) {
  extern __shared__ float lut[];
  const size_t slot = size_t(blockIdx.y) * nprobe + blockIdx.x, tsize = size_t(m) << nbits;
  const int64_t l = probes[slot];
  const size_t begin = l >= 0 ? size_t(offsets[l]) : 0;
  const size_t len = l >= 0 ? size_t(offsets[l + 1]) - begin : 0;
  for (size_t e = threadIdx.x; e < tsize; e += blockDim.x) lut[e] = luts[slot * tsize + e];
  __syncthreads();
  const size_t cs = nbits == 8 ? size_t(m) : size_t(m + 1) / 2;
  float* out = scores + slot * maxlen;
  for (size_t r = threadIdx.x; r < maxlen; r += blockDim.x)
    out[r] = r < len ? sign * adc(codes + (begin + r) * cs, m, nbits, lut) + bias[slot] : -INFINITY;
}

size_t shared_bytes(const void* kernel, int m, int nbits) {
  const size_t bytes = (size_t(m) << nbits) * sizeof(float);
  if (bytes > 48 * 1024)  // beyond the default: opt in (up to 227 KB on sm_90)
    check(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(bytes)),
          "lookup tables do not fit in shared memory");
  return bytes;
}

}  // namespace

void adc_scores(const uint8_t* codes, size_t n, int m, int nbits, const float* luts,
                const float* bias, float sign, size_t nq, float* scores, size_t ld,
                uintptr_t stream) {
  if (n == 0 || nq == 0) return;
  const size_t smem = shared_bytes(reinterpret_cast<const void*>(adc_kernel), m, nbits);
  dim3 grid(unsigned((n + kThreads - 1) / kThreads), unsigned(nq));
  adc_kernel<<<grid, kThreads, smem, reinterpret_cast<cudaStream_t>(stream)>>>(
      codes, n, m, nbits, luts, bias, sign, scores, ld);
  check(cudaGetLastError(), "ADC kernel");
}

void ivf_adc_scores(const uint8_t* codes, const int64_t* offsets, const int64_t* probes,
                    size_t nprobe, int m, int nbits, const float* luts, const float* bias,
                    float sign, size_t nq, size_t maxlen, float* scores, uintptr_t stream) {
  if (nq == 0 || nprobe == 0 || maxlen == 0) return;
  const size_t smem = shared_bytes(reinterpret_cast<const void*>(ivf_adc_kernel), m, nbits);
  const dim3 grid(static_cast<unsigned>(nprobe), static_cast<unsigned>(nq));
  ivf_adc_kernel<<<grid, kThreads, smem, reinterpret_cast<cudaStream_t>(stream)>>>(
      codes, offsets, probes, nprobe, m, nbits, luts, bias, sign, maxlen, scores);
  check(cudaGetLastError(), "IVF ADC kernel");
}

}  // namespace cuda
}  // namespace quanta
