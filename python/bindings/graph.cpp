// Bindings of the graph index: construction from a FlatIndex holding the vectors, its build
// settings, the search settings struct, and the raw state for persistence.
#include "common.hpp"
#include "quanta/index/graph_index.hpp"

using namespace quanta_py;

void bind_graph(py::module_& m) {
  py::class_<GraphSearchParams, SearchParams, std::shared_ptr<GraphSearchParams>>(
      m, "GraphSearchParams")
      .def(py::init<>())
      .def_readwrite("width", &GraphSearchParams::width)
      .def_readwrite("slack", &GraphSearchParams::slack);

  py::class_<GraphIndex, quanta::Index, std::shared_ptr<GraphIndex>> g(m, "GraphIndex");
  g.def(py::init([](std::shared_ptr<FlatIndex> vectors, size_t degree, size_t build_width,
                    float alpha, size_t pq_m, size_t pq_nbits, size_t refine, bool rabitq,
                    size_t max_candidates) {
         if (pq_m && pq_nbits != 4 && pq_nbits != 8)
           throw py::value_error("codes: PQ nbits must be 4 or 8");
         GraphBuildParams b;
         b.degree = degree;
         b.build_width = build_width;
         b.alpha = alpha;
         b.pq_m = pq_m;
         b.pq_nbits = pq_nbits;
         b.refine = refine;
         b.rabitq = rabitq;
         b.max_candidates = max_candidates;
         return std::make_shared<GraphIndex>(std::move(vectors), b);
       }),
       py::arg("vectors"), py::arg("degree"), py::arg("build_width"), py::arg("alpha"),
       py::arg("pq_m") = 0, py::arg("pq_nbits") = 4, py::arg("refine") = 1,
       py::arg("rabitq") = false, py::arg("max_candidates") = 0)
      .def_property_readonly("degree", [](const GraphIndex& s) { return s.build_params().degree; })
      .def_property_readonly("build_width",
                             [](const GraphIndex& s) { return s.build_params().build_width; })
      .def_property_readonly("alpha", [](const GraphIndex& s) { return s.build_params().alpha; })
      .def_property_readonly("refine",
                             [](const GraphIndex& s) { return s.build_params().refine; })
      .def_property_readonly("max_candidates",
                             [](const GraphIndex& s) { return s.build_params().max_candidates; })
      .def_property_readonly("vectors", &GraphIndex::vectors)
      .def_property_readonly("rows", &GraphIndex::rows)
      .def_property_readonly("entry", &GraphIndex::entry)
      .def("pivots", [](const GraphIndex& self) {
        return py::array_t<uint32_t>(py::ssize_t(self.pivots().size()), self.pivots().data());
      })
      .def_property_readonly("build_progress", &GraphIndex::build_progress)
      .def_property_readonly("mapped_bytes", &GraphIndex::mapped_bytes)
      .def("adjacency", [](const GraphIndex& self) { return to_numpy(self.adjacency()); })
      .def("codes", [](const GraphIndex& self) { return to_numpy(self.codes()); })
      .def("neighbour_codes",
           [](const GraphIndex& self) { return to_numpy(self.neighbour_codes()); })
      .def("codec_state", [](const GraphIndex& self) { return to_numpy(self.codec_state()); })
      .def("restore", [](GraphIndex& self, const py::array& adjacency, uint32_t entry,
                         const py::array& codes, const py::array& codec_state,
                         const py::array& neighbour_codes, bool borrow) {
        self.restore(buffer_from_numpy<uint32_t>(adjacency, "adjacency", borrow), entry,
                     buffer_from_numpy<uint8_t>(codes, "codes", borrow),
                     from_numpy<float>(codec_state, "codec_state"),
                     buffer_from_numpy<uint8_t>(neighbour_codes, "neighbour_codes", borrow));
      }, py::arg("adjacency"), py::arg("entry"), py::arg("codes"), py::arg("codec_state"),
         py::arg("neighbour_codes"), py::arg("borrow") = false);
}
