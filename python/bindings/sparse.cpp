// Bindings of the Seismic-style sparse index: CSR arrays in (validated by the core).
#include "common.hpp"
#include "quanta/index/seismic.hpp"

#include <cstring>
#include <type_traits>

using namespace quanta_py;

namespace {

using I64 = py::array_t<int64_t, py::array::c_style>;
using I32 = py::array_t<int32_t, py::array::c_style>;

// Types and lengths here; row contents in the core.
SparseRows csr(const py::array& indptr, const py::array& indices, const py::array& values,
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
  SparseRows c{static_cast<const int64_t*>(indptr.data()),
               static_cast<const int32_t*>(indices.data()), static_cast<const float*>(values.data()),
               size_t(indptr.shape(0)) - 1};
  if (c.indptr[c.n] != indices.shape(0))
    throw py::value_error(w + " indptr must end at the number of entries");
  return c;
}

SparseLayout as_layout(const std::string& layout) {
  if (layout != "lists" && layout != "blocks")
    throw py::value_error("layout must be 'lists' or 'blocks'; got '" + layout + "'");
  return layout == "blocks" ? SparseLayout::blocks : SparseLayout::lists;
}

}  // namespace

void bind_sparse(py::module_& m) {
  py::class_<SparseIndex, IndexBase, std::shared_ptr<SparseIndex>>(m, "SparseIndex")
      .def(py::init([](size_t dim, size_t n_postings, float centroid_fraction,
                       size_t min_cluster_size, float summary_energy, float max_fraction,
                       size_t doc_cut, size_t summary_cut, size_t knn, bool u8_values,
                       bool posting_offsets, uint64_t seed, const std::string& layout,
                       size_t block_size) {
             SparseParams p;
             p.layout = as_layout(layout);
             p.block_size = block_size;
             p.n_postings = n_postings;
             p.centroid_fraction = centroid_fraction;
             p.min_cluster_size = min_cluster_size;
             p.summary_energy = summary_energy;
             p.max_fraction = max_fraction;
             p.doc_cut = doc_cut;
             p.summary_cut = summary_cut;
             p.knn = knn;
             p.u8_values = u8_values;
             p.posting_offsets = posting_offsets;
             p.seed = seed;
             return std::make_shared<SparseIndex>(dim, p);
           }),
           py::arg("dim"), py::arg("n_postings"), py::arg("centroid_fraction"),
           py::arg("min_cluster_size"), py::arg("summary_energy"), py::arg("max_fraction"),
           py::arg("doc_cut"), py::arg("summary_cut"), py::arg("knn"),
           py::arg("u8_values"), py::arg("posting_offsets"), py::arg("seed"),
           py::arg("layout") = "lists", py::arg("block_size") = 6)
      .def_property_readonly("ndocs", &SparseIndex::ndocs)
      .def_property_readonly("nnz", &SparseIndex::nnz)
      .def_property_readonly("npostings", &SparseIndex::npostings)
      .def_property_readonly("nblocks", &SparseIndex::nblocks)
      .def_property_readonly("nsummary_entries", &SparseIndex::nsummary_entries)
      .def_property_readonly("build_progress", &SparseIndex::build_progress)
      .def_property_readonly("borrowed", [](const SparseIndex& self) {  // views of a loaded file
        return self.state().postings.viewing();
      })
      .def_property_readonly("pending", &SparseIndex::pending)
      .def("add", [](SparseIndex& self, const py::array& indptr, const py::array& indices,
                     const py::array& values, const py::object& ids, int threads) {
        const SparseRows c = csr(indptr, indices, values, "documents");
        py::array_t<int64_t, py::array::c_style> keep;
        const int64_t* idp = optional_ids(ids, c.n, keep);
        py::gil_scoped_release nogil;
        self.add(c, idp, threads);
      }, py::arg("indptr"), py::arg("indices"), py::arg("values"), py::arg("ids"),
         py::arg("threads"))
      .def("compact", [](SparseIndex& self, int threads) {
        py::gil_scoped_release nogil;
        self.compact(threads);
      }, py::arg("threads") = 0)
      // (indptr, indices, values, ids) of the live documents added after the build
      .def("pending_docs", [](const SparseIndex& self) {
        SparseDocs d = self.pending_docs();
        return py::make_tuple(to_numpy(d.indptr), to_numpy(d.indices), to_numpy(d.values),
                              to_numpy(d.ids));
      })
      // view: read-only views of the index's arrays that keep it alive (valid until it is
      // rebuilt or restored; what save writes from, so saving holds no second copy).
      .def("state", [](const py::object& owner, bool view) {
        const SparseIndex& self = owner.cast<const SparseIndex&>();
        py::dict d;
        SparseIndex::State::each(self.state(), [&](const char* name, const auto& buf) {
          using T = std::decay_t<decltype(buf[0])>;
          if (view && !buf.empty()) {
            py::array_t<T> a({py::ssize_t(buf.size())}, {py::ssize_t(sizeof(T))}, buf.data(),
                             owner);
            a.attr("setflags")(py::arg("write") = false);
            d[name] = a;
          } else {
            d[name] = to_numpy(buf);
          }
        });
        return d;
      }, py::arg("view") = false)
      // borrow: the arrays are viewed, not copied (the caller keeps them alive); contents
      // are then checked only when check_contents is set.
      .def("restore", [](SparseIndex& self, const py::dict& d, bool borrow, bool check_contents) {
        SparseIndex::State s;
        SparseIndex::State::each(s, [&](const char* name, auto& buf) {
          using T = std::decay_t<decltype(buf[0])>;
          if (!d.contains(name)) throw py::value_error(std::string("restore: no ") + name);
          const py::object a = d[name];
          if (!py::isinstance<py::array_t<T, py::array::c_style>>(a) ||
              !(py::array(a).flags() & py::array::c_style))
            throw py::type_error(std::string("restore: ") + name + " has the wrong dtype");
          const py::array arr(a);
          const T* p = static_cast<const T*>(arr.data());
          const size_t n = size_t(arr.size());
          using B = std::decay_t<decltype(buf)>;
          buf = borrow ? B::view(p, n) : B(std::vector<T>(p, p + n));
        });
        py::gil_scoped_release nogil;
        self.restore(std::move(s), check_contents);
      }, py::arg("state"), py::arg("borrow") = false, py::arg("check_contents") = true)
      .def("search", [](const SparseIndex& self, const py::array& indptr, const py::array& indices,
                        const py::array& values, size_t k, size_t query_cut, float heap_factor,
                        bool exact, size_t n_knn, size_t head, size_t rerank, bool list_order,
                        int threads, const py::object& filter) {
        const SparseRows c = csr(indptr, indices, values, "queries");
        auto p = search_params<SparseSearch>(k, threads, filter, c.n);
        p.query_cut = query_cut;
        p.heap_factor = heap_factor;
        p.exact = exact;
        p.n_knn = n_knn;
        p.head = head;
        p.rerank = rerank;
        p.list_order = list_order;
        return results_into(c.n, k, [&](float* dp, int64_t* ip) {
          self.search(c, p, dp, ip);
        });
      }, py::arg("indptr"), py::arg("indices"), py::arg("values"), py::arg("k"),
         py::arg("query_cut"), py::arg("heap_factor"), py::arg("exact"), py::arg("n_knn"),
         py::arg("head"), py::arg("rerank"), py::arg("list_order"), py::arg("threads"),
         py::arg("filter"))
      .def_static("search_defaults", [](const std::string& layout) {
        const SparseSearch p = SparseSearch::defaults(as_layout(layout));
        return py::make_tuple(p.query_cut, p.heap_factor);
      }, py::arg("layout"))
      .def("set_ids", [](SparseIndex& self, const py::array& ids, const py::array& removed) {
        self.set_ids(from_numpy<int64_t>(ids, "ids"), from_numpy<uint64_t>(removed, "removed"));
      }, py::arg("ids"), py::arg("removed"))
      .def("ids", [](const SparseIndex& self) { return to_numpy(self.ids()); })
      .def("removed", [](const SparseIndex& self) { return to_numpy(self.removed_mask()); });
}
