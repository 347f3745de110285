// Spilled assignment (SOAR: Sun, Guo and Kumar, NeurIPS 2023, as in ScaNN): each vector is also
// stored in a second inverted list, chosen so that its residual there is as orthogonal as
// possible to its residual r in its first list. A query whose true neighbour scores badly in
// the first list (r points away from the query) is then likely to find it in the second:
// on MiniLM embeddings (1024 lists) recall@10 0.95 needs about a quarter of the lists.
#pragma once
#include <cstddef>
#include <cstdint>

namespace quanta {

// secondary[i] = argmin over centroids c != primary[i] of
//   |x_i - c|^2 + lambda * <x_i - c, r_i>^2 / |r_i|^2,   r_i = x_i - centroid[primary[i]]
// (lowest c on ties; -1 when k = 1; always another list when k >= 2).
void soar_assign(const float* x, size_t n, const float* centroids, size_t k, size_t dim,
                 const int64_t* primary, float lambda, int threads, int64_t* secondary);

}  // namespace quanta
