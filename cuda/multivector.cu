#include <cuda_runtime.h>

#include <cmath>
#include <stdexcept>

#include "check.cuh"
#include "device.cuh"
#include "multivector.cuh"

namespace quanta {
namespace cuda {

namespace {

constexpr int kChunk = 32;    // query and document tokens per shared-memory chunk
constexpr int kDimTile = 64;  // dimensions per shared-memory chunk
constexpr int kWarps = 4;     // per Chamfer block

__device__ unsigned bucket_of(const float* h, int k_sim, bool gray) {
  unsigned id = 0;
  for (int i = 0; i < k_sim; ++i) {
    const unsigned bit = h[i] > 0.0f;
    id = gray ? (id << 1) + (bit ^ (id & 1u)) : id | (bit << i);
  }
  return id;
}

__device__ unsigned pattern_of(unsigned id, bool gray) { return gray ? id ^ (id >> 1) : id; }

// One warp per (set, repetition); lane j handles output elements j, j + 32, ...
__global__ void fde_aggregate_kernel(const float* y, size_t ystride, long proj_col,
                                     const float* x, size_t dim, const int64_t* offsets,
                                     int k_sim, int d_proj, int r_reps, bool gray,
                                     bool documents, bool fill_empty, float* out) {
  extern __shared__ int shared[];
  const int B = 1 << k_sim, lane = threadIdx.x;
  int* count = shared;
  int* first = shared + B;
  const size_t set = blockIdx.x, r = blockIdx.y;
  const int64_t t0 = offsets[set], t1 = offsets[set + 1];
  float* acc = out + set * size_t(r_reps) * B * d_proj + r * size_t(B) * d_proj;
  for (int b = lane; b < B; b += 32) {
    count[b] = 0;
    first[b] = -1;
  }
  for (int e = lane; e < B * d_proj; e += 32) acc[e] = 0.0f;
  __syncwarp();
  auto token = [&](int64_t t) {
    return proj_col < 0 ? x + t * dim : y + t * ystride + proj_col + r * d_proj;
  };
  for (int64_t t = t0; t < t1; ++t) {
    const unsigned b = bucket_of(y + t * ystride + r * k_sim, k_sim, gray);
    const float* v = token(t);
    for (int j = lane; j < d_proj; j += 32) acc[b * d_proj + j] += v[j];
    if (lane == 0 && count[b]++ == 0) first[b] = int(t - t0);
    __syncwarp();
  }
  __syncwarp();
  if (documents)
    for (int b = 0; b < B; ++b)
      if (count[b] > 1) {
        const float c = float(count[b]);
        for (int j = lane; j < d_proj; j += 32) acc[b * d_proj + j] /= c;
      }
  if (!fill_empty) return;
  for (int e = lane; e < B; e += 32) {
    if (count[e]) continue;
    // the CPU's rule: nearest occupied bucket; ties to the lowest id (binary) or the lowest
    // first token (gray)
    const unsigned pe = pattern_of(unsigned(e), gray);
    int best_dist = 1 << 30, best_key = 1 << 30, best = 0;
    for (int b = 0; b < B; ++b) {
      if (!count[b]) continue;
      const int dist = __popc(pe ^ pattern_of(unsigned(b), gray));
      const int key = gray ? first[b] : b;
      if (dist < best_dist || (dist == best_dist && key < best_key)) {
        best_dist = dist;
        best_key = key;
        best = b;
      }
    }
    const float* v = token(t0 + first[best]);
    for (int j = 0; j < d_proj; ++j) acc[e * d_proj + j] = v[j];
  }
}

__global__ void fde_final_kernel(const float* fde, size_t n, size_t fde_dim, const int64_t* ptr,
                                 const int32_t* idx, const float* sign, size_t final_dim,
                                 float* out) {
  const size_t e = size_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (e >= n * final_dim) return;
  const size_t s = e / final_dim, o = e % final_dim;
  float v = 0.0f;
  for (int64_t i = ptr[o]; i < ptr[o + 1]; ++i) v += sign[i] * fde[s * fde_dim + idx[i]];
  out[e] = v;
}

// One block (4 warps) per (candidate, query). Query and document tokens pass through shared
// memory in chunks of 32 tokens x 64 dimensions (rows padded by one float against bank
// conflicts), so any dim fits in 17 KB on every GPU; warp w takes query tokens w, w + 4, ...,
// lane l document token l, each thread adding its dot products over the dimension tiles in
// order. The best of each query token is kept in shared memory and summed in token order.
__global__ void chamfer_kernel(const float* q, const int64_t* q_offsets, const float* tokens,
                               const int64_t* doc_offsets, const int64_t* cand, size_t row0,
                               size_t nc, size_t dim, float* scores) {
  __shared__ float qs[kChunk][kDimTile + 1];
  __shared__ float ds[kChunk][kDimTile + 1];
  __shared__ float best[kChunk];
  const size_t c = blockIdx.x, i = blockIdx.y;
  const int64_t doc = cand ? cand[i * nc + c] : int64_t(row0 + c);
  if (doc < 0) {  // uniform across the block
    if (threadIdx.x == 0) scores[i * nc + c] = -INFINITY;
    return;
  }
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int64_t q0 = q_offsets[i], q1 = q_offsets[i + 1];
  const int64_t d0 = doc_offsets[doc], d1 = doc_offsets[doc + 1];
  float total = 0.0f;
  for (int64_t qc = q0; qc < q1; qc += kChunk) {
    const int nqc = q1 - qc < kChunk ? int(q1 - qc) : kChunk;
    if (threadIdx.x < kChunk) best[threadIdx.x] = -INFINITY;
    for (int64_t dc = d0; dc < d1; dc += kChunk) {
      const int ndc = d1 - dc < kChunk ? int(d1 - dc) : kChunk;
      float acc[kChunk / kWarps] = {};
      for (size_t p0 = 0; p0 < dim; p0 += kDimTile) {
        const int w = dim - p0 < kDimTile ? int(dim - p0) : kDimTile;
        __syncthreads();
        for (int e = threadIdx.x; e < kChunk * w; e += blockDim.x) {
          const int t = e / w, p = e % w;
          if (t < nqc) qs[t][p] = q[(qc + t) * dim + p0 + p];
          if (t < ndc) ds[t][p] = tokens[(dc + t) * dim + p0 + p];
        }
        __syncthreads();
        if (lane < ndc)
          for (int j = 0; j < kChunk / kWarps; ++j) {
            const int qt = warp + kWarps * j;
            if (qt < nqc)
              for (int p = 0; p < w; ++p) acc[j] += qs[qt][p] * ds[lane][p];
          }
      }
      for (int j = 0; j < kChunk / kWarps; ++j) {
        const int qt = warp + kWarps * j;
        if (qt >= nqc) break;  // uniform across the warp
        float dot = lane < ndc ? acc[j] : -INFINITY;
        for (int off = 16; off > 0; off /= 2) dot = fmaxf(dot, __shfl_xor_sync(~0u, dot, off));
        if (lane == 0) best[qt] = fmaxf(best[qt], dot);
      }
    }
    __syncthreads();
    if (threadIdx.x == 0)
      for (int qt = 0; qt < nqc; ++qt) total += best[qt];
    __syncthreads();
  }
  if (threadIdx.x == 0) scores[i * nc + c] = total;
}

}  // namespace

void fde_aggregate(const float* y, size_t ystride, long proj_col, const float* x, size_t dim,
                   const int64_t* offsets, size_t n, int k_sim, int d_proj, int r_reps,
                   bool gray, bool documents, bool fill_empty, float* out, uintptr_t stream) {
  if (n == 0) return;
  if (size_t(r_reps) > kMaxGridY) throw std::invalid_argument("the GPU encoder takes r_reps <= 65535");
  const size_t smem = 2 * (size_t(1) << k_sim) * sizeof(int);
  dim3 grid(static_cast<unsigned>(n), static_cast<unsigned>(r_reps));
  fde_aggregate_kernel<<<grid, 32, smem, reinterpret_cast<cudaStream_t>(stream)>>>(
      y, ystride, proj_col, x, dim, offsets, k_sim, d_proj, r_reps, gray, documents, fill_empty,
      out);
  check(cudaGetLastError(), "FDE aggregation kernel");
}

void fde_final(const float* fde, size_t n, size_t fde_dim, const int64_t* ptr,
               const int32_t* idx, const float* sign, size_t final_dim, float* out,
               uintptr_t stream) {
  const size_t total = n * final_dim;
  if (total == 0) return;
  fde_final_kernel<<<static_cast<unsigned>((total + 255) / 256), 256, 0,
                     reinterpret_cast<cudaStream_t>(stream)>>>(fde, n, fde_dim, ptr, idx, sign,
                                                                final_dim, out);
  check(cudaGetLastError(), "FDE final projection kernel");
}

void chamfer_scores(const float* q, const int64_t* q_offsets, size_t nq, const float* tokens,
                    const int64_t* doc_offsets, const int64_t* cand, size_t row0, size_t nc,
                    size_t dim, float* scores, uintptr_t stream) {
  if (nq == 0 || nc == 0) return;
  batch_y(nq, 1, [&](size_t i0, size_t count) {
    const dim3 grid{unsigned(nc), unsigned(count)};
    chamfer_kernel<<<grid, 32 * kWarps, 0, reinterpret_cast<cudaStream_t>(stream)>>>(
        q, q_offsets + i0, tokens, doc_offsets, cand ? cand + i0 * nc : nullptr, row0, nc, dim,
        scores + i0 * nc);
    check(cudaGetLastError(), "Chamfer kernel");
  });
}

}  // namespace cuda
}  // namespace quanta
