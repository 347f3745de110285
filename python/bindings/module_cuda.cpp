// pybind11 module _cuda: raw device pointers in (from CuPy, checked by python/quanta/cuda.py),
// the GIL released around every launch sequence.
#include <pybind11/pybind11.h>

#include "binary_scan.cuh"
#include "device.cuh"
#include "flat_scan.cuh"
#include "multivector.cuh"
#include "pq_scan.cuh"
#include "sparse_scan.cuh"
#include "topk.cuh"

namespace py = pybind11;

PYBIND11_MODULE(_cuda, m) {
  m.doc() = "quanta CUDA kernels";
  m.def("device_count", &quanta::cuda::device_count);
  m.def("device_error", &quanta::cuda::device_error);
  m.def("runtime_version", &quanta::cuda::runtime_version);
  m.def("driver_version", &quanta::cuda::driver_version);
  m.def("flat_scores", [](uintptr_t codes, size_t n, size_t dim, int storage, uintptr_t a,
                          uintptr_t b, uintptr_t queries, size_t nq, uintptr_t scores, size_t ld,
                          uintptr_t stream) {
    if (storage < 0 || storage > 5) throw py::value_error("storage code must be 0..5");
    py::gil_scoped_release nogil;
    quanta::cuda::flat_scores(reinterpret_cast<const uint8_t*>(codes), n, dim, storage,
                              reinterpret_cast<const float*>(a), reinterpret_cast<const float*>(b),
                              reinterpret_cast<const float*>(queries), nq,
                              reinterpret_cast<float*>(scores), ld, stream);
  }, py::arg("codes"), py::arg("n"), py::arg("dim"), py::arg("storage"), py::arg("a"), py::arg("b"),
     py::arg("queries"), py::arg("nq"), py::arg("scores"), py::arg("ld"), py::arg("stream"));
  m.def("adc_scores", [](uintptr_t codes, size_t n, int pq_m, int nbits, uintptr_t luts,
                         uintptr_t bias, float sign, size_t nq, uintptr_t scores, size_t ld,
                         uintptr_t stream) {
    if (nbits != 4 && nbits != 8) throw py::value_error("nbits must be 4 or 8");
    py::gil_scoped_release nogil;
    quanta::cuda::adc_scores(reinterpret_cast<const uint8_t*>(codes), n, pq_m, nbits,
                             reinterpret_cast<const float*>(luts),
                             reinterpret_cast<const float*>(bias), sign, nq,
                             reinterpret_cast<float*>(scores), ld, stream);
  }, py::arg("codes"), py::arg("n"), py::arg("pq_m"), py::arg("nbits"), py::arg("luts"),
     py::arg("bias"), py::arg("sign"), py::arg("nq"), py::arg("scores"), py::arg("ld"),
     py::arg("stream"));
  m.def("ivf_adc_scores", [](uintptr_t codes, uintptr_t offsets, uintptr_t probes, uintptr_t start,
                             size_t nprobe, int pq_m, int nbits, uintptr_t luts, uintptr_t bias,
                             float sign, size_t nq, uintptr_t scores, size_t ld, uintptr_t stream) {
    if (nbits != 4 && nbits != 8) throw py::value_error("nbits must be 4 or 8");
    py::gil_scoped_release nogil;
    quanta::cuda::ivf_adc_scores(reinterpret_cast<const uint8_t*>(codes),
                                 reinterpret_cast<const int64_t*>(offsets),
                                 reinterpret_cast<const int64_t*>(probes),
                                 reinterpret_cast<const int64_t*>(start), nprobe, pq_m, nbits,
                                 reinterpret_cast<const float*>(luts),
                                 reinterpret_cast<const float*>(bias), sign, nq,
                                 reinterpret_cast<float*>(scores), ld, stream);
  }, py::arg("codes"), py::arg("offsets"), py::arg("probes"), py::arg("start"), py::arg("nprobe"),
     py::arg("pq_m"), py::arg("nbits"), py::arg("luts"), py::arg("bias"), py::arg("sign"),
     py::arg("nq"), py::arg("scores"), py::arg("ld"), py::arg("stream"));
  m.def("topk", [](uintptr_t scores, size_t ld, size_t row0, size_t rows, size_t nq, size_t k,
                   uintptr_t best_s, uintptr_t best_p, bool reset, uintptr_t stream) {
    py::gil_scoped_release nogil;
    quanta::cuda::topk(reinterpret_cast<const float*>(scores), ld, row0, rows, nq, k,
                       reinterpret_cast<float*>(best_s), reinterpret_cast<int64_t*>(best_p), reset,
                       stream);
  }, py::arg("scores"), py::arg("ld"), py::arg("row0"), py::arg("rows"), py::arg("nq"),
     py::arg("k"), py::arg("best_s"), py::arg("best_p"), py::arg("reset"), py::arg("stream"));
  m.def("rbe_scores", [](uintptr_t codes, size_t n, int planes, uintptr_t dsum, uintptr_t dinv,
                         uintptr_t queries, size_t nq, int qplanes, uintptr_t qsum, uintptr_t qinv,
                         int words, int bits, uintptr_t scores, size_t ld, uintptr_t stream) {
    if (planes < 1 || qplanes < planes || qplanes > 8)
      throw py::value_error("planes must be in [1, qplanes] and qplanes <= 8");
    py::gil_scoped_release nogil;
    quanta::cuda::rbe_scores(reinterpret_cast<const uint64_t*>(codes), n, planes,
                             reinterpret_cast<const int32_t*>(dsum),
                             reinterpret_cast<const float*>(dinv),
                             reinterpret_cast<const uint64_t*>(queries), nq, qplanes,
                             reinterpret_cast<const int32_t*>(qsum),
                             reinterpret_cast<const float*>(qinv), words, bits,
                             reinterpret_cast<float*>(scores), ld, stream);
  }, py::arg("codes"), py::arg("n"), py::arg("planes"), py::arg("dsum"), py::arg("dinv"),
     py::arg("queries"), py::arg("nq"), py::arg("qplanes"), py::arg("qsum"), py::arg("qinv"),
     py::arg("words"), py::arg("bits"), py::arg("scores"), py::arg("ld"), py::arg("stream"));
  m.def("fde_aggregate", [](uintptr_t y, size_t ystride, long proj_col, uintptr_t x,
                            size_t dim, uintptr_t offsets, size_t n, int k_sim, int d_proj,
                            int r_reps, bool gray, bool documents, bool fill_empty, uintptr_t out,
                            uintptr_t stream) {
    if (k_sim < 0 || k_sim > 10) throw py::value_error("the GPU encoder takes k_sim <= 10");
    py::gil_scoped_release nogil;
    quanta::cuda::fde_aggregate(reinterpret_cast<const float*>(y), ystride, proj_col,
                                reinterpret_cast<const float*>(x), dim,
                                reinterpret_cast<const int64_t*>(offsets), n, k_sim, d_proj,
                                r_reps, gray, documents, fill_empty,
                                reinterpret_cast<float*>(out), stream);
  }, py::arg("y"), py::arg("ystride"), py::arg("proj_col"), py::arg("x"), py::arg("dim"),
     py::arg("offsets"), py::arg("n"), py::arg("k_sim"), py::arg("d_proj"), py::arg("r_reps"),
     py::arg("gray"), py::arg("documents"), py::arg("fill_empty"), py::arg("out"),
     py::arg("stream"));
  m.def("fde_final", [](uintptr_t fde, size_t n, size_t fde_dim, uintptr_t ptr, uintptr_t idx,
                        uintptr_t sign, size_t final_dim, uintptr_t out, uintptr_t stream) {
    py::gil_scoped_release nogil;
    quanta::cuda::fde_final(reinterpret_cast<const float*>(fde), n, fde_dim,
                            reinterpret_cast<const int64_t*>(ptr),
                            reinterpret_cast<const int32_t*>(idx),
                            reinterpret_cast<const float*>(sign), final_dim,
                            reinterpret_cast<float*>(out), stream);
  }, py::arg("fde"), py::arg("n"), py::arg("fde_dim"), py::arg("ptr"), py::arg("idx"),
     py::arg("sign"), py::arg("final_dim"), py::arg("out"), py::arg("stream"));
  m.def("chamfer_scores", [](uintptr_t q, uintptr_t q_offsets, size_t nq, uintptr_t tokens,
                             uintptr_t doc_offsets, uintptr_t cand, size_t row0, size_t nc,
                             size_t dim, uintptr_t scores, uintptr_t stream) {
    py::gil_scoped_release nogil;
    quanta::cuda::chamfer_scores(reinterpret_cast<const float*>(q),
                                 reinterpret_cast<const int64_t*>(q_offsets), nq,
                                 reinterpret_cast<const float*>(tokens),
                                 reinterpret_cast<const int64_t*>(doc_offsets),
                                 reinterpret_cast<const int64_t*>(cand), row0, nc, dim,
                                 reinterpret_cast<float*>(scores), stream);
  }, py::arg("q"), py::arg("q_offsets"), py::arg("nq"), py::arg("tokens"), py::arg("doc_offsets"),
     py::arg("cand"), py::arg("row0"), py::arg("nc"), py::arg("dim"), py::arg("scores"),
     py::arg("stream"));
  m.def("sparse_scores", [](uintptr_t qdense, size_t nq, size_t dim, uintptr_t doc_ptr,
                            uintptr_t comp16, uintptr_t comp32, uintptr_t val16, uintptr_t val8,
                            uintptr_t scale, uintptr_t cand, size_t row0, size_t nc,
                            uintptr_t scores, uintptr_t stream) {
    py::gil_scoped_release nogil;
    quanta::cuda::sparse_scores(
        reinterpret_cast<const float*>(qdense), nq, dim, reinterpret_cast<const int64_t*>(doc_ptr),
        reinterpret_cast<const uint16_t*>(comp16), reinterpret_cast<const uint32_t*>(comp32),
        reinterpret_cast<const uint16_t*>(val16), reinterpret_cast<const uint8_t*>(val8),
        reinterpret_cast<const float*>(scale), reinterpret_cast<const int64_t*>(cand), row0, nc,
        reinterpret_cast<float*>(scores), stream);
  }, py::arg("qdense"), py::arg("nq"), py::arg("dim"), py::arg("doc_ptr"), py::arg("comp16"),
     py::arg("comp32"), py::arg("val16"), py::arg("val8"), py::arg("scale"), py::arg("cand"),
     py::arg("row0"), py::arg("nc"), py::arg("scores"), py::arg("stream"));
}
