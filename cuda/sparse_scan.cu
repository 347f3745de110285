#include "sparse_scan.cuh"

#include <cuda_fp16.h>

#include "check.cuh"
#include "device.cuh"

namespace quanta {
namespace cuda {
namespace {

constexpr int kWarpsPerBlock = 8;

__global__ void sparse_scores_kernel(const float* qdense, size_t dim, const int64_t* doc_ptr,
                                     const uint16_t* comp16, const uint32_t* comp32,
                                     const uint16_t* val16, const uint8_t* val8,
                                     const float* scale, const int64_t* cand, size_t row0,
                                     size_t nc, float* scores) {
  const size_t c = size_t(blockIdx.x) * kWarpsPerBlock + threadIdx.x / 32;
  const size_t i = blockIdx.y;
  const int lane = threadIdx.x % 32;
  if (c >= nc) return;
  const int64_t doc = cand ? cand[i * nc + c] : int64_t(row0 + c);
  if (doc < 0) {
    if (lane == 0) scores[i * nc + c] = -INFINITY;
    return;
  }
  const float* q = qdense + i * dim;
  float s = 0.0f;
  for (int64_t e = doc_ptr[doc] + lane; e < doc_ptr[doc + 1]; e += 32) {
    const size_t t = comp16 ? comp16[e] : comp32[e];
    if (t >= dim) continue;  // a corrupt mapped index: skip, as the CPU search clamps
    const float v = val16 ? __half2float(__ushort_as_half(val16[e])) : float(val8[e]);
    s += q[t] * v;
  }
  for (int off = 16; off > 0; off /= 2) s += __shfl_xor_sync(~0u, s, off);
  if (lane == 0) scores[i * nc + c] = val16 ? s : s * scale[doc];
}

}  // namespace

void sparse_scores(const float* qdense, size_t nq, size_t dim, const int64_t* doc_ptr,
                   const uint16_t* comp16, const uint32_t* comp32, const uint16_t* val16,
                   const uint8_t* val8, const float* scale, const int64_t* cand, size_t row0,
                   size_t nc, float* scores, uintptr_t stream) {
  if (nq == 0 || nc == 0) return;
  batch_y(nq, 1, [&](size_t q0, size_t count) {
    const dim3 grid{unsigned((nc + kWarpsPerBlock - 1) / kWarpsPerBlock), unsigned(count)};
    sparse_scores_kernel<<<grid, 32 * kWarpsPerBlock, 0, reinterpret_cast<cudaStream_t>(stream)>>>(
        qdense + q0 * dim, dim, doc_ptr, comp16, comp32, val16, val8, scale,
        cand ? cand + q0 * nc : nullptr, row0, nc, scores + q0 * nc);
    check(cudaGetLastError(), "sparse scoring kernel");
  });
}

}  // namespace cuda
}  // namespace quanta
