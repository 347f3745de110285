// Every SIMD kernel table against the scalar reference, on random input with lengths that
// leave vector tails: integer kernels (int8 dots, 4-bit fast-scan, popcounts) and the
// fast-scan table quantization must match exactly, float kernels within a rounding tolerance.
// Exits non-zero on the first mismatch of each check, printing what differed.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include "quanta/codec/fast_scan_codes.hpp"
#include "quanta/simd/dispatch.hpp"
#include "quanta/simd/kernels.hpp"

using namespace quanta;

namespace {

int failures = 0;
int checks = 0;

bool expect(bool ok, const std::string& what) {
  ++checks;
  if (!ok) {
    ++failures;
    std::printf("FAIL %s\n", what.c_str());
  }
  return ok;
}

std::mt19937 rng(12345);

float normal(float scale = 1.0f) { return std::normal_distribution<float>(0.0f, scale)(rng); }
int uniform(int lo, int hi) { return std::uniform_int_distribution<int>(lo, hi)(rng); }

std::vector<float> normals(size_t n, float scale = 1.0f) {
  std::vector<float> v(n);
  for (float& x : v) x = normal(scale);
  return v;
}

// |a - b| within float rounding of a sum whose terms have absolute sum `mag`.
bool close(double a, double b, double mag) { return std::fabs(a - b) <= 2e-5 * mag + 1e-30; }

const size_t kDims[] = {1, 3, 7, 8, 9, 15, 16, 17, 31, 32, 33, 64, 100, 257};

void check_float_rows(const char* name, const Kernels& k) {
  const Kernels& ref = scalar_kernels();
  for (int si = 0; si < kNumStorages; ++si) {
    const Storage s = Storage(si);
    for (size_t dim : kDims) {
      const size_t n = size_t(uniform(1, 9));
      // Rows of mixed magnitude: tiny values reach f16/f8 subnormals, large ones saturate.
      std::vector<float> x(n * dim);
      const float scales[4] = {1e-6f, 0.01f, 1.0f, 300.0f};
      for (size_t i = 0; i < n; ++i)
        for (size_t p = 0; p < dim; ++p) x[i * dim + p] = normal(scales[i % 4]);
      std::vector<uint8_t> codes(n * dim * storage_bytes(s));
      encode_array(s, x.data(), n * dim, codes.data());
      const std::vector<float> q = normals(dim);
      const std::string at = std::string(name) + " " + storage_name(s) + " dim " + std::to_string(dim);

      std::vector<float> dec(n * dim), dec_ref(n * dim);
      k.decode_rows(s, codes.data(), n, dim, dec.data());
      ref.decode_rows(s, codes.data(), n, dim, dec_ref.data());
      expect(std::memcmp(dec.data(), dec_ref.data(), dec.size() * 4) == 0, "decode_rows " + at);

      std::vector<float> out(n), out_ref(n);
      k.dot_rows(s, q.data(), codes.data(), n, dim, out.data());
      ref.dot_rows(s, q.data(), codes.data(), n, dim, out_ref.data());
      std::vector<uint32_t> pos(n);
      for (auto& p : pos) p = uint32_t(uniform(0, int(n) - 1));
      std::vector<float> gathered(n);
      k.dot_gather(s, q.data(), codes.data(), pos.data(), n, dim, gathered.data());
      // AVX-512 scores i8 rows with the query rounded to int16 (steps of max |q| / 32767):
      // up to half a step times sum |row| more error than float rounding.
      double qmax = 0;
      for (float v : q) qmax = std::max(qmax, std::fabs(double(v)));
      const double step = s == Storage::i8 ? qmax / 32767 : 0.0;
      for (size_t i = 0; i < n; ++i) {
        double mag = 0, l1 = 0;
        for (size_t p = 0; p < dim; ++p) {
          mag += std::fabs(double(q[p]) * dec_ref[i * dim + p]);
          l1 += std::fabs(double(dec_ref[i * dim + p]));
        }
        if (!expect(std::fabs(out[i] - out_ref[i]) <= 2e-5 * mag + 0.5 * step * l1 + 1e-30,
                    "dot_rows " + at))
          break;
        double mag_g = 0;
        for (size_t p = 0; p < dim; ++p) mag_g += std::fabs(double(q[p]) * dec_ref[pos[i] * dim + p]);
        if (!expect(close(gathered[i], out_ref[pos[i]], mag_g), "dot_gather " + at)) break;
      }
    }
  }
}

void check_gemm(const char* name, const Kernels& k) {
  const size_t mq = size_t(k.mq);
  for (size_t dim : kDims)
    for (int nrows = 1; nrows <= k.mr; ++nrows) {
      const std::vector<float> rows = normals(size_t(nrows) * dim), panel = normals(dim * mq);
      const std::vector<float> a = normals(size_t(nrows)), b = normals(size_t(nrows));
      std::vector<float> threshold = normals(mq, 2.0f), out(size_t(k.mr) * mq);
      const uint32_t mask = k.gemm_tile(rows.data(), size_t(nrows), panel.data(), dim, a.data(),
                                        b.data(), threshold.data(), out.data());
      uint32_t want_mask = 0;
      bool ok = true;
      for (int r = 0; r < nrows; ++r)
        for (size_t j = 0; j < mq; ++j) {
          double dot = 0, mag = 0;
          for (size_t p = 0; p < dim; ++p) {
            dot += double(rows[r * dim + p]) * panel[p * mq + j];
            mag += std::fabs(double(rows[r * dim + p]) * panel[p * mq + j]);
          }
          const float v = out[r * mq + j];
          ok = ok && close(v, a[r] * dot + b[r], std::fabs(a[r]) * mag + std::fabs(b[r]));
          if (v >= threshold[j]) want_mask |= 1u << j;  // the mask follows the kernel's values
        }
      expect(ok, std::string(name) + " gemm_tile values, dim " + std::to_string(dim) + " rows " +
                     std::to_string(nrows));
      expect(mask == want_mask, std::string(name) + " gemm_tile mask, dim " + std::to_string(dim));
    }
}

void check_i8(const char* name, const Kernels& k) {
  for (size_t dim : kDims) {
    const size_t n = size_t(uniform(1, 7));
    std::vector<int8_t> q(dim), codes(n * dim);
    for (auto& v : q) v = int8_t(uniform(-127, 127));
    for (auto& v : codes) v = int8_t(uniform(-127, 127));
    if (dim >= 16) std::fill(q.begin(), q.begin() + 16, int8_t(127));  // the largest products
    if (dim >= 16) std::fill(codes.begin(), codes.begin() + 16, int8_t(-127));
    std::vector<int32_t> out(n), want(n);
    k.dot_rows_i8(q.data(), codes.data(), n, dim, out.data());
    scalar_kernels().dot_rows_i8(q.data(), codes.data(), n, dim, want.data());
    expect(out == want, std::string(name) + " dot_rows_i8 dim " + std::to_string(dim));
  }
}

// The int8 panel kernel against plain integer sums of the unshifted queries (so the scalar
// version is checked too), with the extreme products and a partial last tile of rows.
void check_panel_i8(const char* name, const Kernels& k) {
  if (!k.dot_panel_i8) return;
  for (size_t dim : {4, 8, 64, 100, 384}) {
    for (size_t n : {1, 7, 8, 9, 17}) {
      std::vector<int8_t> q(kPanelI8 * dim), rows(n * dim);
      for (auto& v : q) v = int8_t(uniform(-127, 127));
      for (auto& v : rows) v = int8_t(uniform(-127, 127));
      std::fill(q.begin(), q.begin() + dim, int8_t(-127));  // query 0 x row 0: the extremes
      std::fill(rows.begin(), rows.begin() + dim, int8_t(127));
      std::vector<uint8_t> panel(dim * kPanelI8);
      for (size_t j = 0; j < kPanelI8; ++j)
        for (size_t p = 0; p < dim; ++p)
          panel[(p / 4) * 4 * kPanelI8 + 4 * j + p % 4] = uint8_t(q[j * dim + p] + 128);
      std::vector<int32_t> sums(n, 0), out(n * kPanelI8);
      for (size_t r = 0; r < n; ++r)
        for (size_t p = 0; p < dim; ++p) sums[r] += rows[r * dim + p];
      k.dot_panel_i8(rows.data(), sums.data(), n, panel.data(), dim, out.data());
      bool ok = true;
      for (size_t r = 0; r < n; ++r)
        for (size_t j = 0; j < kPanelI8; ++j) {
          int32_t want = 0;
          for (size_t p = 0; p < dim; ++p) want += int32_t(rows[r * dim + p]) * q[j * dim + p];
          ok = ok && out[r * kPanelI8 + j] == want;
        }
      expect(ok, std::string(name) + " dot_panel_i8 dim " + std::to_string(dim) + " rows " +
                     std::to_string(n));
    }
  }
}

void check_nearest(const char* name, const Kernels& k) {
  for (size_t dim : {1, 5, 16, 33}) {
    for (size_t kc : {1, 10, 64, 70, 200}) {
      const size_t kpad = (kc + 63) / 64 * 64, n = 13;
      const std::vector<float> x = normals(n * dim), c = normals(kc * dim);
      std::vector<float> ct(dim * kpad, 0.0f), cnorm(kpad, INFINITY);
      for (size_t j = 0; j < kc; ++j) {
        double s = 0;
        for (size_t p = 0; p < dim; ++p) {
          ct[p * kpad + j] = c[j * dim + p];
          s += double(c[j * dim + p]) * c[j * dim + p];
        }
        cnorm[j] = float(s);
      }
      std::vector<int64_t> assign(n);
      std::vector<float> best(n);
      k.nearest(x.data(), n, dim, ct.data(), cnorm.data(), kpad, assign.data(), best.data());
      bool ok = true;
      for (size_t i = 0; i < n; ++i) {
        // The true minimum in double; the kernel's choice must score within rounding of it.
        double lo = INFINITY, chosen = INFINITY, mag = 0;
        for (size_t j = 0; j < kc; ++j) {
          double dot = 0, m = 0;
          for (size_t p = 0; p < dim; ++p) {
            dot += double(x[i * dim + p]) * c[j * dim + p];
            m += std::fabs(double(x[i * dim + p]) * c[j * dim + p]);
          }
          const double d = cnorm[j] - 2 * dot;
          lo = std::min(lo, d);
          if (int64_t(j) == assign[i]) chosen = d;
          mag = std::max(mag, cnorm[j] + 2 * m);
        }
        ok = ok && assign[i] >= 0 && assign[i] < int64_t(kc) && close(chosen, lo, mag) &&
             close(best[i], chosen, mag);
      }
      expect(ok, std::string(name) + " nearest dim " + std::to_string(dim) + " k " + std::to_string(kc));
    }
  }
}

void check_fast_scan(const char* name, const Kernels& k) {
  for (size_t npairs : {1, 2, 3, 8, 48, 128}) {
    const size_t nblocks = size_t(uniform(1, 5));
    for (size_t nq = 1; nq <= 4; ++nq) {
      std::vector<uint8_t> codes(nblocks * npairs * 32);
      for (auto& v : codes) v = uint8_t(uniform(0, 255));
      std::vector<std::vector<uint8_t>> tables(nq, std::vector<uint8_t>(npairs * 32));
      std::vector<const uint8_t*> luts(nq);
      std::vector<uint16_t> limit(nq);
      for (size_t q = 0; q < nq; ++q) {
        for (auto& v : tables[q]) v = uint8_t(q == 1 ? 255 : uniform(0, 255));  // q 1: largest sums
        luts[q] = tables[q].data();
        limit[q] = uint16_t(uniform(0, int(255 * 2 * npairs)));
      }
      std::vector<uint16_t> out(nq * nblocks * 32), want(out.size());
      std::vector<uint32_t> below(nq * nblocks), want_below(below.size());
      k.pq4_accumulate(codes.data(), nblocks, npairs, luts.data(), nq, limit.data(), out.data(),
                       below.data());
      scalar_kernels().pq4_accumulate(codes.data(), nblocks, npairs, luts.data(), nq,
                                      limit.data(), want.data(), want_below.data());
      expect(out == want && below == want_below,
             std::string(name) + " pq4_accumulate npairs " + std::to_string(npairs) + " nq " +
                 std::to_string(nq));
    }
  }
}

void check_row16(const char* name, const Kernels& k) {
  const Kernels& ref = scalar_kernels();
  for (size_t n : {1, 2, 7, 33}) {
    const std::vector<float> a = normals(16 * n, 10.0f), b = normals(16 * n, 3.0f);
    std::vector<float> rows(16 * n), rows_ref(16 * n), lo(n), hi(n), lo_ref(n), hi_ref(n);
    k.row16_table_minmax(a.data(), b.data(), n, rows.data(), lo.data(), hi.data());
    ref.row16_table_minmax(a.data(), b.data(), n, rows_ref.data(), lo_ref.data(), hi_ref.data());
    expect(rows == rows_ref && lo == lo_ref && hi == hi_ref,
           std::string(name) + " row16_table_minmax n " + std::to_string(n));
    k.row16_minmax(a.data(), n, lo.data(), hi.data());
    ref.row16_minmax(a.data(), n, lo_ref.data(), hi_ref.data());
    expect(lo == lo_ref && hi == hi_ref, std::string(name) + " row16_minmax n " + std::to_string(n));
    // One scale for all rows (as fast-scan uses), so some rows reach the 255 cap; .5 cases tie.
    float span = 0;
    for (size_t r = 0; r < n; ++r) span = std::max(span, hi_ref[r] - lo_ref[r]);
    for (float a_scale : {255.0f / span, 2.0f * 255.0f / span, 2.0f}) {
      std::vector<uint8_t> q(16 * n), q_ref(16 * n);
      std::vector<float> halves(16 * n);
      for (size_t e = 0; e < halves.size(); ++e) halves[e] = lo_ref[e / 16] + float(e % 7) * 0.25f;
      for (const std::vector<float>* src : {&a, static_cast<const std::vector<float>*>(&halves)}) {
        k.row16_quantize(src->data(), n, lo_ref.data(), a_scale, q.data());
        ref.row16_quantize(src->data(), n, lo_ref.data(), a_scale, q_ref.data());
        expect(q == q_ref, std::string(name) + " row16_quantize n " + std::to_string(n));
      }
    }
  }
}

// 4-bit PQ tables: the same floats as the scalar table (bit for bit), which is itself checked
// against double sums; m and dsub cover the fast-scan shapes (dsub 1-8) and odd ones.
void check_pq16_tables(const char* name, const Kernels& k) {
  const Kernels& ref = scalar_kernels();
  for (size_t m : {1, 3, 96}) {
    for (size_t dsub : {1, 2, 3, 4, 8}) {
      const std::vector<float> q = normals(m * dsub, 2.0f), ct = normals(m * dsub * 16);
      std::vector<float> cnorm(m * 16, 0.0f);
      for (size_t j = 0; j < m; ++j)
        for (size_t p = 0; p < dsub; ++p)
          for (size_t c = 0; c < 16; ++c) {
            const float v = ct[(j * dsub + p) * 16 + c];
            cnorm[j * 16 + c] += v * v;
          }
      for (bool l2 : {false, true}) {
        std::vector<float> out(m * 16), out_ref(m * 16);
        k.pq16_tables(q.data(), ct.data(), cnorm.data(), m, dsub, l2, out.data());
        ref.pq16_tables(q.data(), ct.data(), cnorm.data(), m, dsub, l2, out_ref.data());
        const std::string at = std::string(name) + " pq16_tables m " + std::to_string(m) +
                               " dsub " + std::to_string(dsub) + (l2 ? " l2" : " ip");
        if (!expect(std::memcmp(out.data(), out_ref.data(), out.size() * sizeof(float)) == 0, at))
          continue;
        for (size_t j = 0; j < m; ++j)
          for (size_t c = 0; c < 16; ++c) {
            double d = 0, mag = 0;
            for (size_t p = 0; p < dsub; ++p) {
              const double x = q[j * dsub + p], y = ct[(j * dsub + p) * 16 + c];
              d += l2 ? (x - y) * (x - y) : x * y;
              mag += l2 ? x * x + 2 * std::fabs(x * y) + y * y : std::fabs(x * y);
            }
            if (!expect(close(out_ref[j * 16 + c], d, mag), at + " vs double")) break;
          }
      }
    }
  }
}

void check_binary(const char* name, const Kernels& k) {
  for (size_t words : {1, 2, 3, 5, 8, 9}) {
    for (size_t planes : {1, 2, 4, 7}) {
      const size_t qplanes = size_t(uniform(1, 7)), n = 5;
      std::vector<uint64_t> q(qplanes * words), codes(n * planes * words);
      std::uniform_int_distribution<uint64_t> bits;
      for (auto& w : q) w = bits(rng);
      for (auto& w : codes) w = bits(rng);
      codes[0] = ~uint64_t(0);
      std::vector<int32_t> out(n), want(n);
      k.rbe_dots(q.data(), qplanes, codes.data(), planes, n, words, out.data());
      scalar_kernels().rbe_dots(q.data(), qplanes, codes.data(), planes, n, words, want.data());
      expect(out == want, std::string(name) + " rbe_dots words " + std::to_string(words));
      k.rbe_dots_u8(q.data(), qplanes, codes.data(), planes, n, words, out.data());
      expect(out == want, std::string(name) + " rbe_dots_u8 words " + std::to_string(words));
    }
  }
}

void check_sparse(const char* name, const Kernels& k) {
  const size_t dim = 1000;
  const std::vector<float> q = normals(dim);
  for (size_t n : {0, 1, 7, 8, 9, 16, 40, 101}) {
    std::vector<uint16_t> comp(n), vf(n);
    std::vector<uint8_t> vu(n);
    std::vector<float> decoded(n);
    for (size_t i = 0; i < n; ++i) {
      comp[i] = uint16_t(uniform(0, int(dim) - 1));
      vf[i] = f32_to_f16(std::fabs(normal()));
      vu[i] = uint8_t(uniform(0, 255));
    }
    double mf = 0, mu = 0;
    for (size_t i = 0; i < n; ++i) {
      mf += std::fabs(q[comp[i]] * double(f16_to_f32(vf[i])));
      mu += std::fabs(q[comp[i]] * double(vu[i]));
    }
    expect(close(k.sparse_dot_f16(comp.data(), vf.data(), n, q.data()),
                 scalar_kernels().sparse_dot_f16(comp.data(), vf.data(), n, q.data()), mf),
           std::string(name) + " sparse_dot_f16 n " + std::to_string(n));
    expect(close(k.sparse_dot_u8(comp.data(), vu.data(), n, q.data()),
                 scalar_kernels().sparse_dot_u8(comp.data(), vu.data(), n, q.data()), mu),
           std::string(name) + " sparse_dot_u8 n " + std::to_string(n));
  }
}

// Block-max accumulation: every ISA's integers equal the plain formula's, saturation included.
void check_accumulate_u8(const char* name, const Kernels& k) {
  for (size_t n : {0, 1, 15, 16, 17, 31, 32, 33, 100, 1000})
    for (size_t nrows : {0, 1, 3, 4, 5, 9}) {
      std::vector<std::vector<uint8_t>> rows(nrows, std::vector<uint8_t>(n));
      std::vector<const uint8_t*> ptrs;
      std::vector<uint16_t> w, acc(n), ref(n);
      for (auto& row : rows) {
        for (auto& x : row) x = uint8_t(uniform(0, 255));
        ptrs.push_back(row.data());
        w.push_back(uint16_t(std::vector<int>{0, 1, 128, 255}[ptrs.size() % 4]));
      }
      for (size_t i = 0; i < n; ++i)  // small and near-saturated sums alike
        acc[i] = ref[i] = uint16_t(i % 2 ? uniform(0, 65535) : uniform(0, 100));
      k.accumulate_u8(ptrs.data(), w.data(), nrows, n, acc.data());
      for (size_t r = 0; r < nrows; ++r)
        for (size_t i = 0; i < n; ++i)
          ref[i] = uint16_t(std::min<uint32_t>(65535, ref[i] + (uint32_t(w[r]) * rows[r][i] + 63) / 64));
      expect(acc == ref, std::string(name) + " accumulate_u8 n " + std::to_string(n) + " rows " +
                             std::to_string(nrows));
    }
}

// Band selection: the indices of the values in [lo, hi), in order, as a plain loop finds them.
void check_select_u16(const char* name, const Kernels& k) {
  for (size_t n : {0, 1, 15, 16, 17, 31, 32, 33, 100, 1000}) {
    std::vector<uint16_t> v(n);
    for (size_t i = 0; i < n; ++i)  // many repeats of the bounds themselves
      v[i] = uint16_t(i % 3 ? uniform(0, 65535) : uniform(0, 4) * 16383);
    for (auto [lo, hi] : std::vector<std::pair<uint32_t, uint32_t>>{
             {0, 65536}, {1, 65536}, {16383, 32766}, {100, 40000}, {0, 1}, {65535, 65536},
             {500, 500}, {9, 3}}) {
      std::vector<uint32_t> out(n), ref;
      for (size_t i = 0; i < n; ++i)
        if (v[i] >= lo && v[i] < hi) ref.push_back(uint32_t(i));
      out.resize(k.select_u16(v.data(), n, lo, hi, out.data()));
      expect(out == ref, std::string(name) + " select_u16 n " + std::to_string(n) + " [" +
                             std::to_string(lo) + ", " + std::to_string(hi) + ")");
    }
  }
}

void check_table(const char* name, const Kernels& k) {
  std::printf("kernels: %s (mq %d, mr %d)\n", name, k.mq, k.mr);
  check_float_rows(name, k);
  check_gemm(name, k);
  check_i8(name, k);
  check_panel_i8(name, k);
  check_nearest(name, k);
  check_fast_scan(name, k);
  check_accumulate_u8(name, k);
  check_select_u16(name, k);
  check_row16(name, k);
  check_pq16_tables(name, k);
  check_binary(name, k);
  check_sparse(name, k);
}

// fast_scan::sum_limit against every sum: no sum whose float score reaches thr lies past the
// limit (the scan would miss it), and with ordinary magnitudes the limit is the last such sum.
void check_sum_limit() {
  for (int trial = 0; trial < 300; ++trial) {
    const float off = normal(trial % 3 == 0 ? 1e4f : 10.0f), scale = std::exp(normal(2.0f));
    const float thr = off - float(uniform(-5, 70000)) / scale + normal(1e-3f);
    const uint16_t lim = fast_scan::sum_limit(off, scale, thr);
    long last = -1;
    for (long v = 0; v <= 65535; ++v)
      if (off - float(v) / scale >= thr) last = v;
    const std::string at = "sum_limit off " + std::to_string(off) + " scale " +
                           std::to_string(scale) + " thr " + std::to_string(thr);
    expect(last <= long(lim), at + ": misses sums");
    if (trial % 3 != 0) expect(last == long(lim) || (last < 0 && lim == 0), at + ": loose");
  }
}

void check_dispatch() {
  const std::vector<Isa> levels = supported_isas();
  expect(!levels.empty() && levels.front() == Isa::scalar, "supported levels start at scalar");
  expect(levels.back() == best_supported_isa(), "supported levels end at the best");
  expect(active_isa() == best_supported_isa() || std::getenv("QUANTA_SIMD"), "best is active");
  for (const char* n : {"scalar", "avx2", "avx512", "neon"})
    expect(std::string(isa_name(isa_from_name(n))) == n, std::string("level name ") + n);
  bool threw = false;
  try {
    set_active_isa(levels.back() == Isa::neon ? Isa::avx2 : Isa::neon);  // never both here
  } catch (const std::invalid_argument&) {
    threw = true;
  }
  expect(threw, "a level of another architecture is refused");
#if defined(__aarch64__)
  expect(cpu_has("asimd") && best_supported_isa() == Isa::neon, "AArch64 runs the NEON kernels");
#endif
}

}  // namespace

int main() {
  check_dispatch();
  check_sum_limit();
  std::vector<std::string> features = cpu_features();
  std::string joined;
  for (const auto& f : features) joined += " " + f;
  std::printf("cpu features:%s\n", joined.c_str());
  // The scalar table itself, against the double-precision references inside each check.
  check_table("scalar", scalar_kernels());
  for (Isa isa : supported_isas()) {
    if (isa == Isa::scalar) continue;
#ifdef QUANTA_HAVE_NEON
    if (isa == Isa::neon) {  // both int8 paths, whichever this CPU dispatches to
      check_table("neon", *neon_kernels(false));
      if (cpu_has("dotprod")) check_table("neon+dotprod", *neon_kernels(true));
      continue;
    }
#endif
    check_table(isa_name(isa), kernels(isa));
  }
  std::printf("%d checks, %d failed\n", checks, failures);
  return failures == 0 ? 0 : 1;
}
