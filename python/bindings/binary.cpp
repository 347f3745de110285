// Bindings of the recurrent binary codes: RecurrentBinarizer and BinaryIndex.
#include <pybind11/stl.h>

#include "common.hpp"
#include "quanta/codec/recurrent_binary.hpp"
#include "quanta/index/binary_index.hpp"
#include "quanta/index/ivf_binary.hpp"
#include "quanta/simd/dispatch.hpp"
#include "quanta/simd/kernels.hpp"

using namespace quanta_py;

namespace {

using LayerSpec = std::tuple<py::array, py::array, bool>;  // (w (out, in), b (out,), relu)

Transform to_transform(const std::vector<LayerSpec>& layers) {
  Transform t;
  for (const auto& [w, b, relu] : layers) {
    if (w.ndim() != 2) throw py::value_error("a layer's weights must be 2-D (out, in)");
    DenseLayer l;
    l.out = size_t(w.shape(0));
    l.in = size_t(w.shape(1));
    l.w = from_numpy<float>(w, "weights");
    l.b = from_numpy<float>(b, "bias");
    l.relu = relu;
    t.push_back(std::move(l));
  }
  return t;
}

py::list from_transform(const Transform& t) {
  py::list out;
  for (const DenseLayer& l : t) {
    py::array_t<float> w({py::ssize_t(l.out), py::ssize_t(l.in)});
    std::memcpy(w.mutable_data(), l.w.data(), l.w.size() * sizeof(float));
    out.append(py::make_tuple(w, to_numpy(l.b), l.relu));
  }
  return out;
}

const uint64_t* code_rows(const py::array& a, size_t cw, size_t& n, const char* what) {
  if (!py::isinstance<py::array_t<uint64_t, py::array::c_style>>(a) || !(a.flags() & py::array::c_style))
    throw py::type_error(std::string(what) + " must be a C-contiguous uint64 array");
  if (a.ndim() != 2 || size_t(a.shape(1)) != cw)
    throw py::value_error(std::string(what) + " must have shape (n, " + std::to_string(cw) + ")");
  n = size_t(a.shape(0));
  return static_cast<const uint64_t*>(a.data());
}

// Codes of any level count the binarizer can make: returns their plane count.
size_t code_planes(const RecurrentBinarizer& b, const py::array& a, const char* what) {
  const size_t w = b.words();
  if (a.ndim() != 2 || size_t(a.shape(1)) % w || size_t(a.shape(1)) / w == 0 ||
      size_t(a.shape(1)) / w > b.planes())
    throw py::value_error(std::string(what) + " must have shape (n, planes * " + std::to_string(w) +
                          ") with 1 <= planes <= " + std::to_string(b.planes()));
  return size_t(a.shape(1)) / w;
}

// The stored arrays of binary codes as a dict (copies), and back (views of the dict's arrays,
// which the caller keeps alive while they are used, or copies).
py::dict stored_dict(const BinaryCodes::Stored& s) {
  py::dict d;
  d["codes"] = to_numpy(s.codes);
  d["blocks"] = to_numpy(s.blocks);
  d["sums"] = to_numpy(s.sums);
  d["inv_norms"] = to_numpy(s.inv_norms);
  return d;
}

BinaryCodes::Stored stored_from(const py::dict& d, bool borrow) {
  const auto get = [&](const char* name) -> py::array {
    if (!d.contains(name)) throw py::value_error(std::string("restore: no ") + name);
    return d[name];
  };
  BinaryCodes::Stored s;
  s.codes = buffer_from_numpy<uint64_t>(get("codes"), "codes", borrow);
  s.blocks = buffer_from_numpy<uint8_t>(get("blocks"), "blocks", borrow);
  s.sums = buffer_from_numpy<int32_t>(get("sums"), "sums", borrow);
  s.inv_norms = buffer_from_numpy<float>(get("inv_norms"), "inv_norms", borrow);
  return s;
}

}  // namespace

void bind_binary(py::module_& m) {
  py::class_<RecurrentBinarizer>(m, "RecurrentBinarizer")
      .def(py::init<size_t, size_t, size_t>(), py::arg("dim"), py::arg("m"), py::arg("levels"))
      .def_property_readonly("dim", &RecurrentBinarizer::dim)
      .def_property_readonly("m", &RecurrentBinarizer::m)
      .def_property_readonly("levels", &RecurrentBinarizer::levels)
      .def_property_readonly("code_words", &RecurrentBinarizer::code_words)
      .def_property_readonly("is_trained", &RecurrentBinarizer::is_trained)
      .def("set_transforms",
           [](RecurrentBinarizer& self, const std::vector<LayerSpec>& first,
              const std::vector<std::vector<LayerSpec>>& recon,
              const std::vector<std::vector<LayerSpec>>& resid, bool normalize) {
             std::vector<Transform> rc, rs;
             for (const auto& t : recon) rc.push_back(to_transform(t));
             for (const auto& t : resid) rs.push_back(to_transform(t));
             self.set_transforms(to_transform(first), std::move(rc), std::move(rs), normalize);
           }, py::arg("first"), py::arg("recon"), py::arg("resid"), py::arg("normalize"))
      .def("transforms", [](const RecurrentBinarizer& self) {
        py::list rc, rs;
        for (const auto& t : self.recon()) rc.append(from_transform(t));
        for (const auto& t : self.resid()) rs.append(from_transform(t));
        return py::make_tuple(from_transform(self.first()), rc, rs, self.normalize_recon());
      })
      .def("encode", [](const RecurrentBinarizer& self, const py::array& x, int threads,
                        size_t levels) {
        size_t n;
        const float* p = f32_rows(x, self.dim(), n, "x");
        if (levels > self.levels())
          throw py::value_error("levels must be <= " + std::to_string(self.levels()));
        py::array_t<uint64_t> out({py::ssize_t(n), py::ssize_t((levels + 1) * self.words())});
        uint64_t* o = out.mutable_data();
        py::gil_scoped_release nogil;
        self.encode(p, n, o, threads, levels);
        return out;
      }, py::arg("x"), py::arg("threads"), py::arg("levels"))
      .def("unpack", [](const RecurrentBinarizer& self, const py::array& codes) {
        const size_t planes = code_planes(self, codes, "codes");
        size_t n;
        const uint64_t* c = code_rows(codes, planes * self.words(), n, "codes");
        py::array_t<uint8_t> out({py::ssize_t(n), py::ssize_t(self.m())});
        for (size_t i = 0; i < n; ++i)
          self.unpack(c + i * planes * self.words(), planes, out.mutable_data() + i * self.m());
        return out;
      }, py::arg("codes"))
      // sum_j c_q c_d for every (query, code) pair, with the active SIMD level's kernel
      // (path "popcount" or "u8").
      .def("dots", [](const RecurrentBinarizer& self, const py::array& q, const py::array& codes,
                      const std::string& path) {
        const size_t qplanes = code_planes(self, q, "q_codes"), planes = code_planes(self, codes, "codes");
        size_t nq, n;
        const uint64_t* qp = code_rows(q, qplanes * self.words(), nq, "q_codes");
        const uint64_t* cp = code_rows(codes, planes * self.words(), n, "codes");
        const Kernels& kern = kernels(active_isa());
        if (path != "popcount" && path != "u8") throw py::value_error("path must be 'popcount' or 'u8'");
        if (path == "u8" && (qplanes > 7 || planes > 7))
          throw py::value_error("the u8 path supports at most 7 planes");
        const auto fn = path == "u8" ? kern.rbe_dots_u8 : kern.rbe_dots;
        py::array_t<int32_t> out({py::ssize_t(nq), py::ssize_t(n)});
        int32_t* o = out.mutable_data();
        py::gil_scoped_release nogil;
        for (size_t i = 0; i < nq; ++i)
          fn(qp + i * qplanes * self.words(), qplanes, cp, planes, n, self.words(), o + i * n);
        return out;
      }, py::arg("q_codes"), py::arg("codes"), py::arg("path"));

  py::class_<BinaryIndex, quanta::Index, std::shared_ptr<BinaryIndex>> c(m, "BinaryIndex");
  c.def(py::init([](size_t dim, size_t bits, size_t levels, size_t query_levels,
                    const std::string& metric, const std::string& scoring) {
     return new BinaryIndex(dim, bits, levels, query_levels, metric_from_name(metric), scoring);
   }), py::arg("dim"), py::arg("bits"), py::arg("levels"), py::arg("query_levels"),
      py::arg("metric"), py::arg("scoring"))
      .def_static("default_query_levels", &default_query_levels, py::arg("m"), py::arg("levels"))
      .def_property_readonly("levels", &BinaryIndex::levels)
      .def_property_readonly("query_levels", &BinaryIndex::query_levels)
      .def_property_readonly("scoring", [](const BinaryIndex& self) {
        return std::string(binary_scoring_name(self.scoring()));
      })
      .def("binarizer", [](BinaryIndex& self) -> RecurrentBinarizer& { return self.binarizer(); },
           py::return_value_policy::reference_internal)
      .def("add_codes", [](BinaryIndex& self, const py::array& codes) {
        size_t n;
        const uint64_t* p = code_rows(codes, self.code_words(), n, "codes");
        self.add_codes(p, n, nullptr);
      }, py::arg("codes"))
      .def_property_readonly("rows", &BinaryIndex::rows)
      .def("removed", [](const BinaryIndex& self) { return to_numpy(self.removed_mask()); })
      .def("codes", [](const BinaryIndex& self) {
        const std::vector<uint64_t> codes = self.codes();
        py::array_t<uint64_t> out({py::ssize_t(self.rows()), py::ssize_t(self.code_words())});
        if (!codes.empty()) std::memcpy(out.mutable_data(), codes.data(), codes.size() * 8);
        return out;
      })
      .def("ids", [](const BinaryIndex& self) { return to_numpy(self.ids()); })
      .def("stored", [](const BinaryIndex& self) {
        const BinaryCodes::Stored s = self.stored();
        py::dict d = stored_dict(s);
        d["min_norm2"] = s.min_norm2;
        return d;
      })
      // borrow: the codes are views of the arrays (a mapped file the caller keeps alive).
      .def("restore_stored", [](BinaryIndex& self, const py::dict& stored, const py::array& ids,
                                size_t rows, const py::array& removed, bool borrow) {
        BinaryCodes::Stored s = stored_from(stored, borrow);
        s.min_norm2 = stored["min_norm2"].cast<int64_t>();
        self.restore_stored(std::move(s), from_numpy<int64_t>(ids, "ids"), rows,
                            from_numpy<uint64_t>(removed, "removed"));
      }, py::arg("stored"), py::arg("ids"), py::arg("rows"), py::arg("removed"), py::arg("borrow"))
      .def_property_readonly("mapped_bytes", &BinaryIndex::mapped_bytes)
      .def("restore", [](BinaryIndex& self, const py::array& codes, const py::array& ids,
                         size_t rows, const py::array& removed) {
        self.restore(from_numpy<uint64_t>(codes, "codes"), from_numpy<int64_t>(ids, "ids"), rows,
                     from_numpy<uint64_t>(removed, "removed"));
      }, py::arg("codes"), py::arg("ids"), py::arg("rows"), py::arg("removed"));

  py::class_<IVFBinaryIndex, quanta::Index, std::shared_ptr<IVFBinaryIndex>> ivf(m, "IVFBinaryIndex");
  ivf.def(py::init([](size_t dim, size_t nlist, size_t bits, size_t levels, size_t query_levels,
                      const std::string& metric, const std::string& scoring) {
       return new IVFBinaryIndex(dim, nlist, bits, levels, query_levels, metric_from_name(metric),
                                 scoring);
     }), py::arg("dim"), py::arg("nlist"), py::arg("bits"), py::arg("levels"),
         py::arg("query_levels"), py::arg("metric"), py::arg("scoring"))
      .def_property_readonly("levels", &IVFBinaryIndex::levels)
      .def_property_readonly("query_levels", &IVFBinaryIndex::query_levels)
      .def_property_readonly("nlist", &IVFBinaryIndex::nlist)
      .def_property_readonly("scoring", [](const IVFBinaryIndex& self) {
        return std::string(binary_scoring_name(self.scoring()));
      })
      .def("binarizer", [](IVFBinaryIndex& self) -> RecurrentBinarizer& { return self.binarizer(); },
           py::return_value_policy::reference_internal)
      .def("train_coarse", [](IVFBinaryIndex& self, const py::array& x, size_t niter, uint64_t seed,
                              size_t mppc, int threads) {
        size_t n;
        const float* p = f32_rows(x, self.dim(), n, "x");
        const KMeansParams params = kmeans_params(niter, seed, mppc, threads);
        py::gil_scoped_release nogil;
        self.train_coarse(p, n, params);
      }, py::arg("x"), py::arg("niter"), py::arg("seed"), py::arg("mppc"), py::arg("threads"))
      .def("coarse_centroids", [](const IVFBinaryIndex& self) { return to_numpy(self.centroids()); })
      .def("stored", [](const IVFBinaryIndex& self) {
        std::vector<int64_t> min_norm2;
        py::dict d = stored_dict(self.stored(min_norm2));
        d["min_norm2"] = to_numpy(min_norm2);
        return d;
      })
      .def("restore_stored", [](IVFBinaryIndex& self, const py::array& centroids,
                                const py::array& sizes, const py::dict& stored,
                                const py::array& ids, bool borrow) {
        if (!stored.contains("min_norm2")) throw py::value_error("restore: no min_norm2");
        self.restore_stored(from_numpy<float>(centroids, "centroids"),
                            from_numpy<uint64_t>(sizes, "sizes"), stored_from(stored, true),
                            from_numpy<int64_t>(py::array(stored["min_norm2"]), "min_norm2"),
                            Buffer<int64_t>::view(array_data<int64_t>(ids, "ids"), size_t(ids.size())),
                            borrow);
      }, py::arg("centroids"), py::arg("sizes"), py::arg("stored"), py::arg("ids"),
         py::arg("borrow"))
      .def_property_readonly("mapped_bytes", &IVFBinaryIndex::mapped_bytes)
      // with_codes=False leaves out the plain codes (a save writes the stored layout).
      .def("state", [](const IVFBinaryIndex& self, bool with_codes) {
        py::dict d;
        d["centroids"] = to_numpy(self.centroids());
        d["sizes"] = to_numpy(self.list_sizes());
        if (with_codes) d["codes"] = to_numpy(self.all_codes());
        d["ids"] = to_numpy(self.all_ids());
        return d;
      }, py::arg("with_codes") = true)
      .def("restore", [](IVFBinaryIndex& self, const py::array& centroids, const py::array& sizes,
                         const py::array& codes, const py::array& ids) {
        self.restore(from_numpy<float>(centroids, "centroids"), from_numpy<uint64_t>(sizes, "sizes"),
                     from_numpy<uint64_t>(codes, "codes"), from_numpy<int64_t>(ids, "ids"));
      }, py::arg("centroids"), py::arg("sizes"), py::arg("codes"), py::arg("ids"));
}
