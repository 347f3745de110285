// One block per query. The running k best sit sorted at the front of a shared buffer of C
// slots; each pass, every thread tests kItems new scores against the k-th best and appends
// those that beat it (shared atomic counter). When the buffer could overflow on the next
// pass, one bitonic sort of the buffer keeps the k best. After a few passes almost nothing
// beats the k-th best, so the cost is one coalesced read of the scores. No per-thread arrays
// (nothing in local memory), and NaN cannot block a better score.
#include <cuda_runtime.h>

#include <stdexcept>

#include "check.cuh"
#include "topk.cuh"

namespace quanta {
namespace cuda {

namespace {

constexpr int kThreads = 128;
constexpr int kItems = 4;  // scores per thread per pass
constexpr int kPass = kThreads * kItems;

// Total order: valid (p >= 0) before empty, higher score first, then lower position.
__device__ __forceinline__ bool better(float sa, int64_t pa, float sb, int64_t pb) {
  if (pa < 0) return false;
  if (pb < 0) return true;
  return sa > sb || (sa == sb && pa < pb);
}

// Sorts s / p [0, C) best first (bitonic network; ends with a barrier).
template <int C>
__device__ void sort_buffer(float* s, int64_t* p) {
  for (int size = 2; size <= C; size <<= 1)
    for (int stride = size >> 1; stride > 0; stride >>= 1) {
      for (int i = threadIdx.x; i < C / 2; i += blockDim.x) {
        const int lo = 2 * stride * (i / stride) + i % stride, hi = lo + stride;
        const bool swap = (lo & size) == 0 ? better(s[hi], p[hi], s[lo], p[lo])
                                           : better(s[lo], p[lo], s[hi], p[hi]);
        if (swap) {
          const float ts = s[lo];
          s[lo] = s[hi];
          s[hi] = ts;
          const int64_t tp = p[lo];
          p[lo] = p[hi];
          p[hi] = tp;
        }
      }
      __syncthreads();
    }
}

// Keeps the k best of the `used` filled slots at the front; the rest become empty.
template <int C>
__device__ void shrink(float* s, int64_t* p, int k, int used, int* count) {
  for (int i = used + threadIdx.x; i < C; i += blockDim.x) {
    s[i] = -INFINITY;
    p[i] = -1;
  }
  __syncthreads();
  sort_buffer<C>(s, p);
  if (threadIdx.x == 0) *count = k;
  __syncthreads();
}

template <int C>
__global__ void topk_kernel(const float* scores, size_t ld, size_t row0, size_t rows, int k,
                            float* best_s, int64_t* best_p) {
  static_assert(C % kPass == 0 && (C & (C - 1)) == 0, "C: a power of two, whole passes");
  __shared__ float s[C];
  __shared__ int64_t p[C];
  __shared__ int count;
  const size_t qi = blockIdx.x;
  const float* row = scores + qi * ld;
  float* out_s = best_s + qi * size_t(k);
  int64_t* out_p = best_p + qi * size_t(k);
  for (int i = threadIdx.x; i < C; i += blockDim.x) {
    s[i] = i < k ? out_s[i] : -INFINITY;
    p[i] = i < k ? out_p[i] : -1;
  }
  if (threadIdx.x == 0) count = k;
  __syncthreads();
  int used = k;
  for (size_t base = 0; base < rows; base += kPass) {
    const float ts = s[k - 1];  // slots below k change only in shrink()
    const int64_t tp = p[k - 1];
    for (int it = 0; it < kItems; ++it) {
      const size_t j = base + size_t(it) * kThreads + threadIdx.x;
      if (j >= rows) break;
      float v = row[j];
      if (isnan(v)) v = -INFINITY;
      const int64_t pos = int64_t(row0 + j);
      if (better(v, pos, ts, tp)) {
        const int slot = atomicAdd(&count, 1);
        s[slot] = v;
        p[slot] = pos;
      }
    }
    __syncthreads();
    used = count;
    __syncthreads();  // everyone has read count before the next pass adds to it
    if (used > C - kPass) {
      shrink<C>(s, p, k, used, &count);
      used = k;
    }
  }
  if (used > k) shrink<C>(s, p, k, used, &count);
  for (int i = threadIdx.x; i < k; i += blockDim.x) {
    out_s[i] = p[i] >= 0 ? s[i] : -INFINITY;
    out_p[i] = p[i];
  }
}

__global__ void fill_kernel(float* s, int64_t* p, size_t count) {
  const size_t i = size_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < count) {
    s[i] = -INFINITY;
    p[i] = -1;
  }
}

}  // namespace

void topk(const float* scores, size_t ld, size_t row0, size_t rows, size_t nq, size_t k,
          float* best_s, int64_t* best_p, bool reset, uintptr_t stream) {
  if (k < 1 || k > kMaxTopK) throw std::invalid_argument("GPU top-k takes 1 <= k <= 1024");
  if (nq == 0) return;
  cudaStream_t st = reinterpret_cast<cudaStream_t>(stream);
  if (reset) {
    fill_kernel<<<unsigned((nq * k + 255) / 256), 256, 0, st>>>(best_s, best_p, nq * k);
    check(cudaGetLastError(), "top-k fill");
  }
  if (rows == 0) return;
  // the buffer holds the k best plus one pass of newcomers
  if (k + kPass <= 1024)
    topk_kernel<1024><<<unsigned(nq), kThreads, 0, st>>>(scores, ld, row0, rows, int(k), best_s,
                                                        best_p);
  else
    topk_kernel<2048><<<unsigned(nq), kThreads, 0, st>>>(scores, ld, row0, rows, int(k), best_s,
                                                        best_p);
  check(cudaGetLastError(), "top-k kernel");
}

}  // namespace cuda
}  // namespace quanta
