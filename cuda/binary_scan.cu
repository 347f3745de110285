#include <cuda_runtime.h>

#include "binary_scan.cuh"
#include "check.cuh"
#include "device.cuh"

namespace quanta {
namespace cuda {

namespace {

constexpr int kThreads = 256;

// Grid (row blocks, queries): the query's planes go to shared memory once per block (when the
// device has room); each thread scores one code.
__global__ void rbe_kernel(const uint64_t* codes, size_t n, int planes, const int32_t* dsum,
                           const float* dinv, const uint64_t* queries, int qplanes,
                           const int32_t* qsum, const float* qinv, int words, int m,
                           bool shared, float* scores, size_t ld) {
  extern __shared__ uint64_t smem[];
  const size_t qi = blockIdx.y, qw = size_t(qplanes) * words;
  const uint64_t* q = queries + qi * qw;  // in place when the planes do not fit
  if (shared) {
    for (size_t e = threadIdx.x; e < qw; e += blockDim.x) smem[e] = q[e];
    __syncthreads();
    q = smem;
  }
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
  const size_t qw = size_t(qplanes) * words;
  const size_t smem = fit_shared(reinterpret_cast<const void*>(rbe_kernel), qw * 8) ? qw * 8 : 0;
  batch_y(nq, 1, [&](size_t q0, size_t count) {
    const dim3 grid{unsigned((n + kThreads - 1) / kThreads), unsigned(count)};
    rbe_kernel<<<grid, kThreads, smem, reinterpret_cast<cudaStream_t>(stream)>>>(
        codes, n, planes, dsum, dinv, queries + q0 * qw, qplanes, qsum + q0, qinv + q0, words,
        m, smem > 0, scores + q0 * ld, ld);
    check(cudaGetLastError(), "binary scan kernel");
  });
}

}  // namespace cuda
}  // namespace quanta
