// Bindings of the engine contract: IndexBase (the verbs of every family), Index (dense rows:
// what a chain of indexes is searched through), the search-settings structs, and the two
// wrappers that compose dense indexes, RefineIndex and PreTransformIndex.
#include "common.hpp"
#include "quanta/core/index.hpp"
#include "quanta/core/index_factory.hpp"
#include "quanta/index/pre_transform.hpp"
#include "quanta/index/refine.hpp"

using namespace quanta_py;

namespace {

// A call's settings: a copy of the caller's struct (or the common one) with k, threads and
// the filter from the binding's arguments.
std::unique_ptr<SearchParams> call_params(const std::shared_ptr<SearchParams>& params, size_t k,
                                          int threads, const py::object& filter, size_t nq) {
  std::unique_ptr<SearchParams> p = params ? params->clone() : std::make_unique<SearchParams>();
  set_common(*p, k, threads, filter, nq);
  return p;
}

}  // namespace

void bind_compose(py::module_& m) {
  py::class_<SearchParams, std::shared_ptr<SearchParams>>(m, "SearchParams")
      .def(py::init<>());
  py::class_<FlatSearchParams, SearchParams, std::shared_ptr<FlatSearchParams>>(m, "FlatSearchParams")
      .def(py::init<>())
      .def_readwrite("quantize_queries", &FlatSearchParams::quantize_queries);
  py::class_<PQSearchParams, SearchParams, std::shared_ptr<PQSearchParams>>(m, "PQSearchParams")
      .def(py::init<>())
      .def_readwrite("sdc", &PQSearchParams::sdc);
  py::class_<IVFSearchParams, SearchParams, std::shared_ptr<IVFSearchParams>>(m, "IVFSearchParams")
      .def(py::init<>())
      .def_readwrite("nprobe", &IVFSearchParams::nprobe)
      // the coarse step done elsewhere: IVFPQIndex.coarse_search's (distances, lists)
      .def("set_coarse", [](IVFSearchParams& self, const py::array& distances,
                            const py::array& lists) {
        if (distances.size() != lists.size())
          throw py::value_error("coarse: distances and lists must have the same shape");
        self.coarse_distances = from_numpy<float>(distances, "coarse distances");
        self.coarse_lists = from_numpy<int64_t>(lists, "coarse lists");
      }, py::arg("distances"), py::arg("lists"));
  py::class_<RefineSearchParams, SearchParams, std::shared_ptr<RefineSearchParams>>(
      m, "RefineSearchParams")
      .def(py::init<>())
      .def_readwrite("k_factor", &RefineSearchParams::k_factor)
      .def_readwrite("base", &RefineSearchParams::base);

  // The verbs of every index, whatever its rows; a family's own class adds add / search over
  // its rows and its settings on top.
  py::class_<IndexBase, std::shared_ptr<IndexBase>>(m, "IndexBase")
      .def_property_readonly("dim", &IndexBase::dim)
      .def_property_readonly("metric", [](const IndexBase& s) { return metric_name(s.metric()); })
      .def_property_readonly("ntotal", &IndexBase::ntotal)
      .def_property_readonly("is_trained", &IndexBase::is_trained)
      .def_property_readonly("memory_usage", &IndexBase::memory_usage)
      .def("remove", [](IndexBase& self, const IdFilter& f) {
        py::gil_scoped_release nogil;
        return self.remove(f);
      }, py::arg("filter"))
      .def("contains", [](const IndexBase& self, const py::array_t<int64_t, py::array::c_style>& ids) {
        py::array_t<bool> out{ids.size()};
        const int64_t* ip = ids.data();
        bool* op = out.mutable_data();
        py::gil_scoped_release nogil;
        for (py::ssize_t i = 0; i < ids.size(); ++i) op[i] = self.contains(ip[i]);
        return out;
      }, py::arg("ids"))
      .def("reset", [](IndexBase& self) {
        py::gil_scoped_release nogil;
        self.reset();
      })
      .def("compact", [](IndexBase& self) {
        py::gil_scoped_release nogil;
        self.compact();
      });

  py::class_<TrainParams>(m, "TrainParams")
      .def(py::init([](size_t niter, size_t coarse_niter, uint64_t seed,
                       size_t max_points_per_centroid, int threads) {
             return TrainParams{niter, coarse_niter, seed, max_points_per_centroid, threads};
           }),
           py::arg("niter") = TrainParams{}.niter, py::arg("coarse_niter") = TrainParams{}.coarse_niter,
           py::arg("seed") = TrainParams{}.seed,
           py::arg("max_points_per_centroid") = TrainParams{}.max_points_per_centroid,
           py::arg("threads") = TrainParams{}.threads)
      .def_readwrite("niter", &TrainParams::niter)
      .def_readwrite("coarse_niter", &TrainParams::coarse_niter)
      .def_readwrite("seed", &TrainParams::seed)
      .def_readwrite("max_points_per_centroid", &TrainParams::max_points_per_centroid)
      .def_readwrite("threads", &TrainParams::threads);

  py::class_<Index, IndexBase, std::shared_ptr<Index>>(m, "Index")
      .def("train", [](Index& self, const py::array& x, const TrainParams& params) {
        size_t n;
        const float* p = f32_rows(x, self.dim(), n, "x");
        py::gil_scoped_release nogil;
        self.train(p, n, params);
      }, py::arg("x"), py::arg("params") = TrainParams{})
      .def("add", [](Index& self, const py::array& x, const py::object& ids, int threads) {
        size_t n;
        const float* p = f32_rows(x, self.dim(), n, "x");
        py::array_t<int64_t, py::array::c_style> keep;
        const int64_t* idp = optional_ids(ids, n, keep);
        py::gil_scoped_release nogil;
        self.add(p, n, idp, threads);
      }, py::arg("x"), py::arg("ids"), py::arg("threads"))
      .def("reconstruct", [](const Index& self, const py::array_t<int64_t, py::array::c_style>& ids) {
        const size_t n = size_t(ids.size());
        py::array_t<float> out({py::ssize_t(n), py::ssize_t(self.dim())});
        const int64_t* ip = ids.data();
        float* op = out.mutable_data();
        py::gil_scoped_release nogil;
        self.reconstruct(ip, n, op);
        return out;
      }, py::arg("ids"))
      // With `lock` (the Python index's), the call holds it for reading and asks for at most
      // ntotal results (at least 1) per query, so a huge k does not allocate a huge result.
      .def("search", [](const Index& self, const py::array& q, size_t k, int threads,
                        const py::object& filter, const std::shared_ptr<SearchParams>& params,
                        ReadWriteLock* lock) {
        const ReadHold hold(lock);
        if (lock) k = std::min(k, std::max<size_t>(self.ntotal(), 1));
        const auto p = call_params(params, k, threads, filter, size_t(q.shape(0)));
        return search_into(self.dim(), q, k, [&](const float* qp, size_t nq, float* D, int64_t* I) {
          self.search(qp, nq, *p, D, I);
        });
      }, py::arg("queries"), py::arg("k"), py::arg("threads"), py::arg("filter"),
         py::arg("params") = nullptr, py::arg("lock") = nullptr)
      .def("range_search", [](const Index& self, const py::array& q, float radius, int threads,
                              const py::object& filter, const std::shared_ptr<SearchParams>& params) {
        const auto p = call_params(params, 1, threads, filter, size_t(q.shape(0)));
        return range_into(self.dim(), q, [&](const float* qp, size_t nq) {
          return self.range_search(qp, nq, radius, *p);
        });
      }, py::arg("queries"), py::arg("radius"), py::arg("threads"), py::arg("filter"),
         py::arg("params") = nullptr);


  // The spec grammar (one parse for the native factory and quanta.index_factory).
  m.def("parse_index_spec", [](const std::string& spec) {
    const IndexSpec s = parse_index_spec(spec);
    static const char* const families[] = {"flat", "pq", "ivf_pq", "rbe", "ivf_rbe", "graph"};
    py::dict d;
    d["family"] = families[int(s.family)];
    d["storage"] = storage_name(s.storage);
    d["m"] = s.m, d["nbits"] = s.nbits, d["fast_scan"] = s.fast_scan;
    d["nlist"] = s.nlist, d["soar"] = s.soar;
    d["bits"] = s.bits, d["planes"] = s.planes, d["query_planes"] = s.query_planes;
    d["degree"] = s.degree, d["rabitq"] = s.rabitq, d["opq"] = s.opq;
    d["refine"] = s.refine ? py::object(py::str(storage_name(s.refine_storage))) : py::none();
    return d;
  }, py::arg("spec"));
}

// The wrappers take and return FlatIndex objects: bound after it, so that their signatures
// name the Python class.
void bind_compose_wrappers(py::module_& m) {
  py::class_<RefineIndex, Index, std::shared_ptr<RefineIndex>>(m, "RefineIndex")
      .def(py::init<std::shared_ptr<Index>, std::shared_ptr<FlatIndex>, size_t>(),
           py::arg("base"), py::arg("refine"), py::arg("k_factor"))
      .def_property("k_factor", &RefineIndex::k_factor, &RefineIndex::set_k_factor)
      .def_property_readonly("base", &RefineIndex::base)
      .def_property_readonly("refine", &RefineIndex::refine);

  py::class_<PreTransformIndex, Index, std::shared_ptr<PreTransformIndex>>(m, "PreTransformIndex")
      .def(py::init([](const py::array& matrix, std::shared_ptr<Index> inner) {
             return std::make_shared<PreTransformIndex>(from_numpy<float>(matrix, "matrix"),
                                                        std::move(inner));
           }),
           py::arg("matrix"), py::arg("inner"))
      .def("apply", [](const PreTransformIndex& self, const py::array& x, int threads) {
        size_t n;
        const float* p = f32_rows(x, self.dim(), n, "x");
        py::array_t<float> out({py::ssize_t(n), py::ssize_t(self.dim())});
        float* o = out.mutable_data();
        py::gil_scoped_release nogil;
        self.apply(p, n, o, threads);
        return out;
      }, py::arg("x"), py::arg("threads"))
      .def_property_readonly("inner", &PreTransformIndex::inner)
      .def_property_readonly("matrix", [](const PreTransformIndex& self) {
        py::array_t<float> out({py::ssize_t(self.dim()), py::ssize_t(self.dim())});
        std::copy(self.matrix().begin(), self.matrix().end(), out.mutable_data());
        return out;
      });
  // Bound after every family, so that the chain it returns shows as its own class.
  m.def("index_factory", [](size_t dim, const std::string& spec, const std::string& metric) {
    return index_factory(dim, spec, metric_from_name(metric));
  }, py::arg("dim"), py::arg("spec"), py::arg("metric") = "ip",
     "The empty native index of a spec (cpp/include/quanta/core/index_factory.hpp)");
}
