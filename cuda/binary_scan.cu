#include <cuda_runtime.h>

#include "binary_scan.cuh"
#include "check.cuh"

namespace quanta {
namespace cuda {

namespace {

constexpr int kThreads = 256;

// Grid (row blocks, queries): the query's planes go to shared memory once per block; each
// thread scores one code.
__global__ void rbe_kernel(const uint64_t* codes, size_t n, int planes, const int32_t* dsum,
                           const float* dinv, const uint64_t* queries, int qplanes,
                           const int32_t* qsum, const float* qinv, int words, int m,
                           float* scores, size_t ld) {
  extern __shared__ uint64_t q[];
  const size_t qi = blockIdx.y, qw = size_t(qplanes) * words;
  for (size_t e = threadIdx.x; e < qw; e += blockDim.x) q[e] = queries[qi * qw + e];
  __syncthreads();
  const size_t row = size_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (row >= n) return;
  const uint64_t* d = codes + row * size_t(planes) * words;
  long long s = 0;
  for (int k = 0; k < planes; ++k)
    for (int i = 0; i < qplanes; ++i) {
      long long c = 0;
      for (int w = 0; w < words; ++w) c += __popcll(q[i * words + w] & d[k * words + w]);
      s += c << (qplanes - 1 - i + planes - 1 - k);
    }
  const long long kd = (1LL << planes) - 1, kq = (1LL << qplanes) - 1;
  const long long num = 4 * s - 2 * kd * qsum[qi] - 2 * kq * dsum[row] + (long long)m * kq * kd;
  // the CPU's expression: double(num) * qinv, then * dinv, then rounded to float
  scores[qi * ld + row] = float(__dmul_rn(__dmul_rn(double(num), double(qinv[qi])),
                                          double(dinv[row])));
}

}  // namespace

void rbe_scores(const uint64_t* codes, size_t n, int planes, const int32_t* dsum,
                const float* dinv, const uint64_t* queries, size_t nq, int qplanes,
                const int32_t* qsum, const float* qinv, int words, int m, float* scores,
                size_t ld, uintptr_t stream) {
  if (n == 0 || nq == 0) return;
  const size_t smem = size_t(qplanes) * words * sizeof(uint64_t);
  if (smem > 48 * 1024)
    check(cudaFuncSetAttribute(reinterpret_cast<const void*>(rbe_kernel),
                               cudaFuncAttributeMaxDynamicSharedMemorySize, int(smem)),
          "query codes do not fit in shared memory");
  dim3 grid(static_cast<unsigned>((n + kThreads - 1) / kThreads), static_cast<unsigned>(nq));
  rbe_kernel<<<grid, kThreads, smem, reinterpret_cast<cudaStream_t>(stream)>>>(
      codes, n, planes, dsum, dinv, queries, qplanes, qsum, qinv, words, m, scores, ld);
  check(cudaGetLastError(), "binary scan kernel");
}

}  // namespace cuda
}  // namespace quanta
