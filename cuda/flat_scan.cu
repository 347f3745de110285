#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <stdexcept>

#include "check.cuh"
#include "device.cuh"
#include "flat_scan.cuh"

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

}  // namespace

void flat_scores(const uint8_t* codes, size_t n, size_t dim, int storage, const float* a,
                 const float* b, const float* queries, size_t nq, float* scores, size_t ld,
                 uintptr_t stream) {
  if (n == 0 || nq == 0) return;
  if (storage < 0 || storage > 5) throw std::invalid_argument("storage code must be 0..5");
  static const size_t elem[] = {4, 2, 2, 1, 1, 1};
  const size_t row_bytes = dim * elem[storage];
  const unsigned row_tiles = unsigned((n + kTile - 1) / kTile);
  batch_y(nq, kTile, [&](size_t q0, size_t count) {
    const dim3 grid(row_tiles, unsigned((count + kTile - 1) / kTile));
    scores_kernel<<<grid, dim3(kTile, 8), 0, reinterpret_cast<cudaStream_t>(stream)>>>(
        codes, row_bytes, n, dim, storage, a, b, queries + q0 * dim, count, scores + q0 * ld,
        ld);
    check(cudaGetLastError(), "flat scan kernel");
  });
}

}  // namespace cuda
}  // namespace quanta
