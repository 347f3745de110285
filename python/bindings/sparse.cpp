// Bindings of the Seismic-style sparse index: CSR arrays in (validated by the core).
#include "common.hpp"
#include "quanta/seismic.hpp"

using namespace quanta_py;

namespace {

using I64 = py::array_t<int64_t, py::array::c_style>;
using I32 = py::array_t<int32_t, py::array::c_style>;

struct Csr {
  const int64_t* ptr;
  const int32_t* idx;
  const float* val;
  size_t n;
};

// Types and lengths here; row contents in the core.
Csr csr(const py::array& indptr, const py::array& indices, const py::array& values,
        const char* what) {
  const std::string w(what);
  if (!py::isinstance<I64>(indptr) || indptr.ndim() != 1 || indptr.shape(0) < 1)
    throw py::type_error(w + " indptr must be a 1-D C-contiguous int64 array");
  if (!py::isinstance<I32>(indices) || indices.ndim() != 1)
    throw py::type_error(w + " indices must be a 1-D C-contiguous int32 array");
  if (!py::isinstance<F32Array>(values) || values.ndim() != 1)
    throw py::type_error(w + " values must be a 1-D C-contiguous float32 array");
  if (indices.shape(0) != values.shape(0))
    throw py::value_error(w + " indices and values differ in length");
  Csr c{static_cast<const int64_t*>(indptr.data()), static_cast<const int32_t*>(indices.data()),
        static_cast<const float*>(values.data()), size_t(indptr.shape(0)) - 1};
  if (c.ptr[c.n] != indices.shape(0))
    throw py::value_error(w + " indptr must end at the number of entries");
  return c;
}

}  // namespace

void bind_sparse(py::module_& m) {
  py::class_<SparseIndex>(m, "SparseIndex")
      .def(py::init([](size_t dim, size_t n_postings, float centroid_fraction,
                       size_t min_cluster_size, float summary_energy, float max_fraction,
                       size_t doc_cut, bool u8_values, uint64_t seed) {
             SparseParams p;
             p.n_postings = n_postings;
             p.centroid_fraction = centroid_fraction;
             p.min_cluster_size = min_cluster_size;
             p.summary_energy = summary_energy;
             p.max_fraction = max_fraction;
             p.doc_cut = doc_cut;
             p.u8_values = u8_values;
             p.seed = seed;
             return SparseIndex(dim, p);
           }),
           py::arg("dim"), py::arg("n_postings"), py::arg("centroid_fraction"),
           py::arg("min_cluster_size"), py::arg("summary_energy"), py::arg("max_fraction"),
           py::arg("doc_cut"), py::arg("u8_values"), py::arg("seed"))
      .def_property_readonly("ndocs", &SparseIndex::ndocs)
      .def_property_readonly("nnz", &SparseIndex::nnz)
      .def_property_readonly("npostings", &SparseIndex::npostings)
      .def_property_readonly("nblocks", &SparseIndex::nblocks)
      .def_property_readonly("memory_usage", &SparseIndex::memory_usage)
      .def("build", [](SparseIndex& self, const py::array& indptr, const py::array& indices,
                       const py::array& values, int threads) {
        const Csr c = csr(indptr, indices, values, "documents");
        py::gil_scoped_release nogil;
        self.build(c.ptr, c.idx, c.val, c.n, threads);
      })
      .def("state", [](const SparseIndex& self) {
        const SparseIndex::State s = self.state();
        py::dict d;
        d["doc_ptr"] = to_numpy(s.doc_ptr);
        d["comp"] = to_numpy(s.comp);
        d["val16"] = to_numpy(s.val16);
        d["val8"] = to_numpy(s.val8);
        d["doc_scale"] = to_numpy(s.doc_scale);
        d["list_ptr"] = to_numpy(s.list_ptr);
        d["block_ptr"] = to_numpy(s.block_ptr);
        d["sum_ptr"] = to_numpy(s.sum_ptr);
        d["postings"] = to_numpy(s.postings);
        d["sum_comp"] = to_numpy(s.sum_comp);
        d["sum_code"] = to_numpy(s.sum_code);
        d["block_min"] = to_numpy(s.block_min);
        d["block_step"] = to_numpy(s.block_step);
        return d;
      })
      .def("restore", [](SparseIndex& self, const py::dict& d) {
        SparseIndex::State s;
        s.doc_ptr = from_numpy<int64_t>(d["doc_ptr"], "doc_ptr");
        s.comp = from_numpy<uint32_t>(d["comp"], "comp");
        s.val16 = from_numpy<uint16_t>(d["val16"], "val16");
        s.val8 = from_numpy<uint8_t>(d["val8"], "val8");
        s.doc_scale = from_numpy<float>(d["doc_scale"], "doc_scale");
        s.list_ptr = from_numpy<int64_t>(d["list_ptr"], "list_ptr");
        s.block_ptr = from_numpy<int64_t>(d["block_ptr"], "block_ptr");
        s.sum_ptr = from_numpy<int64_t>(d["sum_ptr"], "sum_ptr");
        s.postings = from_numpy<uint32_t>(d["postings"], "postings");
        s.sum_comp = from_numpy<uint32_t>(d["sum_comp"], "sum_comp");
        s.sum_code = from_numpy<uint8_t>(d["sum_code"], "sum_code");
        s.block_min = from_numpy<float>(d["block_min"], "block_min");
        s.block_step = from_numpy<float>(d["block_step"], "block_step");
        self.restore(std::move(s));
      })
      .def("search", [](const SparseIndex& self, const py::array& indptr, const py::array& indices,
                        const py::array& values, size_t k, size_t query_cut, float heap_factor,
                        bool exact, int threads) {
        const Csr c = csr(indptr, indices, values, "queries");
        return results_into(c.n, k, [&](float* dp, int64_t* ip) {
          self.search(c.ptr, c.idx, c.val, c.n, k, query_cut, heap_factor, exact, threads, dp,
                      ip);
        });
      });
}
