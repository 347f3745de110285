// Small row helpers shared by the indexes (double accumulation: same result everywhere).
#pragma once
#include <cmath>
#include <cstddef>

namespace quanta {

inline double sq_norm(const float* v, size_t dim) {
  double s = 0;
  for (size_t p = 0; p < dim; ++p) s += double(v[p]) * v[p];
  return s;
}

// Scales each of n rows to unit L2 norm; zero rows stay zero.
inline void normalize_rows(float* x, size_t n, size_t dim) {
  for (size_t i = 0; i < n; ++i) {
    float* r = x + i * dim;
    const double s = sq_norm(r, dim);
    if (s > 0) {
      const float inv = float(1.0 / std::sqrt(s));
      for (size_t p = 0; p < dim; ++p) r[p] *= inv;
    }
  }
}

}  // namespace quanta
