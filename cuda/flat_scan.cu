#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>

#include <limits>
#include <stdexcept>
#include <string>

#include "flat_scan.cuh"
#include "check.cuh"
#include "pq_scan.cuh"

namespace quanta {
namespace cuda {

namespace {

// Exact float value of element p of a stored row.
__device__ __forceinline__ float load_elem(const uint8_t* row, size_t p, int storage) {
  switch (storage) {
    case 0: return reinterpret_cast<const float*>(row)[p];
    case 1: {
      const __half_raw h{reinterpret_cast<const unsigned short*>(row)[p]};
      return __half2float(__half(h));
    }
    case 2: return __uint_as_float(uint32_t(reinterpret_cast<const uint16_t*>(row)[p]) << 16);
    case 3: {  // E4M3 -> fp16 bits is a shift; the fp16 value is the E4M3 value times 2^-8
      const uint32_t c = row[p];
      const __half_raw h{static_cast<unsigned short>(((c & 0x80u) << 8) | ((c & 0x7fu) << 7))};
      return __half2float(__half(h)) * 256.0f;
    }
    case 4: {
      const __half_raw h{static_cast<unsigned short>(uint32_t(row[p]) << 8)};
      return __half2float(__half(h));
    }
    default: return float(reinterpret_cast<const int8_t*>(row)[p]);
  }
}

constexpr int kTile = 32;   // rows and queries per block
constexpr int kDepth = 32;  // dimensions per shared-memory step

// Tiled GEMM with the decode fused into the shared-memory load. Block (32, 8): each thread
// computes 4 queries x 1 row.
__global__ void scores_kernel(const uint8_t* codes, size_t row_bytes, size_t n, size_t dim,
                              int storage, const float* a, const float* b, const float* q,
                              size_t nq, float* scores, size_t ld) {
  __shared__ float rs[kDepth][kTile + 1];
  __shared__ float qs[kDepth][kTile + 1];
  const size_t row0 = size_t(blockIdx.x) * kTile, q0 = size_t(blockIdx.y) * kTile;
  const int tx = threadIdx.x, ty = threadIdx.y;
  float acc[4] = {0, 0, 0, 0};
  for (size_t p0 = 0; p0 < dim; p0 += kDepth) {
    for (int r = ty; r < kTile; r += blockDim.y) {
      const size_t row = row0 + r, p = p0 + tx;
      rs[tx][r] = (row < n && p < dim) ? load_elem(codes + row * row_bytes, p, storage) : 0.0f;
      const size_t qi = q0 + r;
      qs[tx][r] = (qi < nq && p < dim) ? q[qi * dim + p] : 0.0f;
    }
    __syncthreads();
    for (int d = 0; d < kDepth; ++d) {
      const float x = rs[d][tx];
      for (int j = 0; j < 4; ++j) acc[j] += x * qs[d][ty + 8 * j];
    }
    __syncthreads();
  }
  const size_t row = row0 + tx;
  if (row >= n) return;
  for (int j = 0; j < 4; ++j) {
    const size_t qi = q0 + ty + 8 * j;
    if (qi < nq) scores[qi * ld + row] = a[row] * acc[j] + b[row];
  }
}

__device__ __forceinline__ bool better(float sa, int64_t pa, float sb, int64_t pb) {
  return sa > sb || (sa == sb && pa < pb);
}

// One block per query: every thread keeps a sorted local top-K of a strided part of the
// chunk (thread 0 also starts from the running result), then k rounds of a block-wide argmax
// pop the best heads. The order is total, so the result does not depend on the chunking.
template <int K>
__global__ void topk_kernel(const float* scores, size_t ld, size_t row0, size_t rows, size_t k,
                            float* best_s, int64_t* best_p) {
  constexpr int kThreads = 128;
  float vs[K];
  int64_t ps[K];
  int count = 0;
  const size_t qi = blockIdx.x;
  const int tid = threadIdx.x;
  auto insert = [&](float s, int64_t p) {
    if (count == int(k) && !better(s, p, vs[count - 1], ps[count - 1])) return;
    int i = count < int(k) ? count++ : count - 1;
    while (i > 0 && better(s, p, vs[i - 1], ps[i - 1])) {
      vs[i] = vs[i - 1];
      ps[i] = ps[i - 1];
      --i;
    }
    vs[i] = s;
    ps[i] = p;
  };
  if (tid == 0)
    for (size_t j = 0; j < k; ++j)
      if (best_p[qi * k + j] >= 0) insert(best_s[qi * k + j], best_p[qi * k + j]);
  for (size_t j = tid; j < rows; j += kThreads) insert(scores[qi * ld + j], int64_t(row0 + j));

  __shared__ float red_s[kThreads];
  __shared__ int64_t red_p[kThreads];
  __shared__ int red_t[kThreads];
  int head = 0;
  for (size_t out = 0; out < k; ++out) {
    red_s[tid] = head < count ? vs[head] : -INFINITY;
    red_p[tid] = head < count ? ps[head] : -1;
    red_t[tid] = tid;
    __syncthreads();
    for (int s = kThreads / 2; s > 0; s >>= 1) {
      if (tid < s) {
        const bool other_valid = red_p[tid + s] >= 0;
        const bool mine_valid = red_p[tid] >= 0;
        if (other_valid && (!mine_valid || better(red_s[tid + s], red_p[tid + s], red_s[tid], red_p[tid]))) {
          red_s[tid] = red_s[tid + s];
          red_p[tid] = red_p[tid + s];
          red_t[tid] = red_t[tid + s];
        }
      }
      __syncthreads();
    }
    const int winner = red_t[0];
    const float ws = red_s[0];
    const int64_t wp = red_p[0];
    __syncthreads();
    if (tid == 0) {
      best_s[qi * k + out] = wp >= 0 ? ws : -INFINITY;
      best_p[qi * k + out] = wp;
    }
    if (tid == winner && wp >= 0) ++head;
  }
}

__global__ void fill_kernel(float* s, int64_t* p, size_t count) {
  const size_t i = size_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < count) {
    s[i] = -INFINITY;
    p[i] = -1;
  }
}

template <int K>
void run_topk(const float* scores, size_t ld, size_t row0, size_t rows, size_t nq, size_t k,
              float* best_s, int64_t* best_p, cudaStream_t st) {
  topk_kernel<K><<<unsigned(nq), 128, 0, st>>>(scores, ld, row0, rows, k, best_s, best_p);
}

}  // namespace

int device_count() {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    cudaGetLastError();  // clear the sticky "no driver" error
    return 0;
  }
  return n;
}

int runtime_version() {
  int v = 0;
  cudaRuntimeGetVersion(&v);
  return v;
}

void flat_search(const uint8_t* codes, size_t n, size_t dim, int storage, const float* a,
                 const float* b, const float* queries, size_t nq, size_t k, float* out_scores,
                 int64_t* out_pos, uintptr_t stream) {
  if (k > 1024) throw std::invalid_argument("GPU flat search supports k <= 1024");
  if (nq == 0) return;
  cudaStream_t st = reinterpret_cast<cudaStream_t>(stream);
  static const size_t elem[] = {4, 2, 2, 1, 1, 1};
  const size_t row_bytes = dim * elem[storage];
  fill_kernel<<<unsigned((nq * k + 255) / 256), 256, 0, st>>>(out_scores, out_pos, nq * k);
  check(cudaGetLastError(), "fill");
  if (n == 0) return;
  // Score the database in chunks so the score matrix stays within about 256 MB.
  size_t chunk = std::max<size_t>(kTile, (size_t(64) << 20) / nq / kTile * kTile);
  chunk = std::min(chunk, (n + kTile - 1) / kTile * kTile);
  float* scores = nullptr;
  check(cudaMallocAsync(reinterpret_cast<void**>(&scores), nq * chunk * sizeof(float), st),
        "cudaMallocAsync");
  try {
    for (size_t row0 = 0; row0 < n; row0 += chunk) {
      const size_t rows = std::min(chunk, n - row0);
      dim3 grid(unsigned((rows + kTile - 1) / kTile), unsigned((nq + kTile - 1) / kTile));
      scores_kernel<<<grid, dim3(kTile, 8), 0, st>>>(codes + row0 * row_bytes, row_bytes, rows,
                                                     dim, storage, a + row0, b + row0, queries,
                                                     nq, scores, chunk);
      check(cudaGetLastError(), "scores kernel");
      topk(scores, chunk, row0, rows, nq, k, out_scores, out_pos, false, stream);
    }
  } catch (...) {
    cudaFreeAsync(scores, st);
    throw;
  }
  check(cudaFreeAsync(scores, st), "cudaFreeAsync");
}

void topk(const float* scores, size_t ld, size_t row0, size_t rows, size_t nq, size_t k,
          float* best_s, int64_t* best_p, bool reset, uintptr_t stream) {
  if (k > 1024) throw std::invalid_argument("GPU top-k supports k <= 1024");
  if (nq == 0) return;
  cudaStream_t st = reinterpret_cast<cudaStream_t>(stream);
  if (reset) {
    fill_kernel<<<unsigned((nq * k + 255) / 256), 256, 0, st>>>(best_s, best_p, nq * k);
    check(cudaGetLastError(), "fill");
  }
  if (k <= 32)
    run_topk<32>(scores, ld, row0, rows, nq, k, best_s, best_p, st);
  else if (k <= 128)
    run_topk<128>(scores, ld, row0, rows, nq, k, best_s, best_p, st);
  else
    run_topk<1024>(scores, ld, row0, rows, nq, k, best_s, best_p, st);
  check(cudaGetLastError(), "top-k kernel");
}

}  // namespace cuda
}  // namespace quanta
