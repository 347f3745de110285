// Small row helpers shared by the indexes (double accumulation: same result everywhere).
#pragma once
#include <cfloat>
#include <cmath>
#include <cstddef>

namespace quanta {

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
