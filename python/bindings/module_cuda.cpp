// pybind11 module _cuda: raw device pointers in (from CuPy, checked by python/quanta/cuda.py),
// the GIL released around every launch sequence.
#include <pybind11/pybind11.h>

#include "flat_scan.cuh"

namespace py = pybind11;

PYBIND11_MODULE(_cuda, m) {
  m.doc() = "quanta CUDA kernels";
  m.def("device_count", &quanta::cuda::device_count);
  m.def("runtime_version", &quanta::cuda::runtime_version);
  m.def("flat_search", [](uintptr_t codes, size_t n, size_t dim, int storage, uintptr_t a,
                          uintptr_t b, uintptr_t queries, size_t nq, size_t k, uintptr_t out_s,
                          uintptr_t out_p, uintptr_t stream) {
    if (storage < 0 || storage > 5) throw py::value_error("storage code must be 0..5");
    py::gil_scoped_release nogil;
    quanta::cuda::flat_search(reinterpret_cast<const uint8_t*>(codes), n, dim, storage,
                              reinterpret_cast<const float*>(a), reinterpret_cast<const float*>(b),
                              reinterpret_cast<const float*>(queries), nq, k,
                              reinterpret_cast<float*>(out_s), reinterpret_cast<int64_t*>(out_p),
                              stream);
  });
}
