// Small row helpers shared by the indexes (double accumulation: same result everywhere).
#pragma once
#include <cfloat>
#include <cmath>
#include <cstddef>

namespace quanta {

// Asks for `bytes` at p ahead of use, into L2 (prefetcht1). A graph expansion asks for 30-40
// lines at once; prefetcht0 of that many overran L1's miss buffers on Zen 4 and the loads
// that followed still waited (60k MiniLM graph, PQ96x4 codes, width 32: 27.5 us a query with
// prefetcht0, 20.8 us with prefetcht1).
inline void prefetch_l2(const void* p, size_t bytes) {
  const char* c = static_cast<const char*>(p);
  for (size_t o = 0; o < bytes; o += 64) __builtin_prefetch(c + o, 0, 2);
}

// Eight independent accumulators in a fixed order: the compiler vectorizes it, and the sum
// is still the same on every CPU.
inline double sq_norm(const float* v, size_t dim) {
  double acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  size_t p = 0;
  for (; p + 8 <= dim; p += 8)
    for (size_t l = 0; l < 8; ++l) acc[l] += double(v[p + l]) * v[p + l];
  double s = ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
  for (; p < dim; ++p) s += double(v[p]) * v[p];
  return s;
}

// Scales each of n rows to unit L2 norm; zero rows stay zero. Rows so small (subnormal) or
// so large that 1 / |r| leaves float's normal range are scaled in double, not by an inf or
// subnormal float factor.
inline void normalize_rows(float* x, size_t n, size_t dim) {
  for (size_t i = 0; i < n; ++i) {
    float* r = x + i * dim;
    const double s = sq_norm(r, dim);
    if (!(s > 0)) continue;
    const double inv = 1.0 / std::sqrt(s);
    if (inv <= double(FLT_MAX) && inv >= double(FLT_MIN)) {
      const float f = float(inv);
      for (size_t p = 0; p < dim; ++p) r[p] *= f;
    } else {
      for (size_t p = 0; p < dim; ++p) r[p] = float(double(r[p]) * inv);
    }
  }
}

}  // namespace quanta
