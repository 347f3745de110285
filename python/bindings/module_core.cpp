// pybind11 module _core: checks arguments, releases the GIL, calls the C++ core. No logic here.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstring>

#include "quanta/codec/kmeans.hpp"
#include "quanta/codec/pq.hpp"
#include "quanta/codec/storage.hpp"
#include "quanta/core/error.hpp"
#include "quanta/core/parallel.hpp"
#include "quanta/index/flat.hpp"
#include "quanta/index/ivf_pq.hpp"
#include "quanta/index/pq_fast_scan.hpp"
#include "quanta/index/pq_index.hpp"
#include "quanta/simd/amx.hpp"
#include "quanta/simd/dispatch.hpp"
#include "common.hpp"

void bind_binary(py::module_& m);  // binary.cpp
void bind_compose(py::module_& m);  // compose.cpp: the Index base and search settings
void bind_compose_wrappers(py::module_& m);  // compose.cpp: RefineIndex, PreTransformIndex
void bind_multivector(py::module_& m);  // multivector.cpp
void bind_sparse(py::module_& m);       // sparse.cpp
void bind_graph(py::module_& m);        // graph.cpp

namespace {

using namespace quanta_py;

template <class Class>
void bind_pq_accessor(Class& c) {
  using Index = typename Class::type;
  c.def("pq", [](Index& self) -> ProductQuantizer& { return self.pq(); },
        py::return_value_policy::reference_internal);
}

// PQIndex and PQFastScanIndex: everything but the constructor and restore (search, add,
// remove, ... come from the Index base).
template <class Index>
auto bind_pq_index(py::module_& m, const char* name) {
  py::class_<Index, quanta::Index, std::shared_ptr<Index>> c(m, name);
  bind_pq_accessor(c);
  c.def("codes", [](const Index& self) { return to_numpy(self.codes()); })
      .def("ids", [](const Index& self) { return to_numpy(self.ids()); })
      .def("removed", [](const Index& self) { return to_numpy(self.removed_mask()); })
      .def_property_readonly("rows", &Index::rows)
      .def_property_readonly("mapped_bytes", &Index::mapped_bytes);
  return c;
}

}  // namespace

PYBIND11_MODULE(_core, m) {
  m.doc() = "quanta native core";
  py::register_exception<Error>(m, "QuantaError", PyExc_RuntimeError);
  bind_id_filter(m);
  bind_compose(m);  // the Index base first: the families derive from it
  bind_binary(m);
  bind_multivector(m);
  bind_sparse(m);

  m.def("compiled_isas", &compiled_isas);
  m.def("cpu_features", &cpu_features);
  m.def("supported_isas", [] {
    std::vector<std::string> out;
    for (Isa i : supported_isas()) out.push_back(isa_name(i));
    return out;
  });
  m.def("amx_bf16_active", &amx_bf16_active, "AMX bf16 tiles in use (bf16 tokens and flat rows)");
  m.def("amx_int8_active", &amx_int8_active, "AMX int8 tiles in use (i8 tokens)");
  m.def("active_isa", [] { return std::string(isa_name(active_isa())); });
  m.def("set_simd_level", [](const std::string& name) { set_active_isa(isa_from_name(name)); },
        py::arg("name"));
  m.def("hardware_threads", &hardware_threads);
  m.def("default_threads", &default_threads);
  m.def("set_default_threads", &set_default_threads, py::arg("threads"));
  // Each index object's lock (quanta/_rwlock.py).
  py::class_<ReadWriteLock>(m, "RWLock")
      .def(py::init<>())
      .def("acquire_read", &acquire_read)
      .def("release_read", &ReadWriteLock::unlock_read)
      .def("acquire_write", &acquire_write)
      .def("release_write", &ReadWriteLock::unlock_write);
  m.def("compiler", [] {
#if defined(__clang__)
    return std::string("clang ") + __clang_version__;
#elif defined(__GNUC__)
    return std::string("gcc ") + __VERSION__;
#else
    return std::string("unknown");
#endif
  });

  m.def("storage_bytes", [](const std::string& s) { return storage_bytes(storage_from_name(s)); },
        py::arg("storage"));
  m.def("encode", [](const py::array& x, const std::string& storage) {
    const Storage s = storage_from_name(storage);
    if (!py::isinstance<F32Array>(x) || !(x.flags() & py::array::c_style))
      throw py::type_error("encode: x must be a C-contiguous float32 array");
    const size_t n = size_t(x.size());
    py::array_t<uint8_t> out{py::ssize_t(n * storage_bytes(s))};
    const float* src = static_cast<const float*>(x.data());
    uint8_t* dst = out.mutable_data();
    py::gil_scoped_release nogil;
    encode_array(s, src, n, dst);
    return out;
  }, py::arg("x"), py::arg("storage"));
  m.def("decode", [](const py::array& codes, const std::string& storage) {
    const Storage s = storage_from_name(storage);
    if (!py::isinstance<py::array_t<uint8_t, py::array::c_style>>(codes) ||
        !(codes.flags() & py::array::c_style))
      throw py::type_error("decode: codes must be a C-contiguous uint8 array");
    const size_t nbytes = size_t(codes.size());
    if (nbytes % storage_bytes(s))
      throw py::value_error("decode: byte count is not a multiple of the element size");
    const size_t n = nbytes / storage_bytes(s);
    py::array_t<float> out{py::ssize_t(n)};
    const uint8_t* src = static_cast<const uint8_t*>(codes.data());
    float* dst = out.mutable_data();
    py::gil_scoped_release nogil;
    decode_array(s, src, n, dst);
    return out;
  }, py::arg("codes"), py::arg("storage"));

  m.def("kmeans", [](const py::array& x, size_t k, size_t niter, uint64_t seed,
                     size_t max_points_per_centroid, bool spherical, int threads,
                     bool sample_init) {
    if (x.ndim() != 2) throw py::value_error("x must be 2-D");
    size_t n;
    const float* p = f32_rows(x, size_t(x.shape(1)), n, "x");
    KMeansParams params = kmeans_params(niter, seed, max_points_per_centroid, threads);
    params.spherical = spherical;
    params.init = sample_init ? KMeansInit::sample : KMeansInit::plus_plus;
    const size_t dim = size_t(x.shape(1));
    KMeansResult res;
    {
      py::gil_scoped_release nogil;
      res = kmeans(p, n, dim, k, params);
    }
    py::array_t<float> c({py::ssize_t(k), py::ssize_t(dim)});
    std::memcpy(c.mutable_data(), res.centroids.data(), res.centroids.size() * 4);
    return py::make_tuple(c, to_numpy(res.assign), to_numpy(res.objective));
  }, py::arg("x"), py::arg("k"), py::arg("niter"), py::arg("seed"),
     py::arg("max_points_per_centroid"), py::arg("spherical"), py::arg("threads"),
     py::arg("sample_init"));

  auto u8_codes = [](const py::array& codes, size_t code_size, size_t& n) {
    if (!py::isinstance<py::array_t<uint8_t, py::array::c_style>>(codes) ||
        !(codes.flags() & py::array::c_style))
      throw py::type_error("codes must be a C-contiguous uint8 array");
    if (codes.ndim() != 2 || size_t(codes.shape(1)) != code_size)
      throw py::value_error("codes must have shape (n, " + std::to_string(code_size) + ")");
    n = size_t(codes.shape(0));
    return static_cast<const uint8_t*>(codes.data());
  };

  py::class_<ProductQuantizer>(m, "PQ")
      .def(py::init<size_t, size_t, size_t>(), py::arg("dim"), py::arg("m"), py::arg("nbits"))
      .def_property_readonly("dim", &ProductQuantizer::dim)
      .def_property_readonly("m", &ProductQuantizer::m)
      .def_property_readonly("nbits", &ProductQuantizer::nbits)
      .def_property_readonly("ksub", &ProductQuantizer::ksub)
      .def_property_readonly("dsub", &ProductQuantizer::dsub)
      .def_property_readonly("code_size", &ProductQuantizer::code_size)
      .def_property_readonly("is_trained", &ProductQuantizer::is_trained)
      .def("train", [](ProductQuantizer& self, const py::array& x, size_t niter,
                                    uint64_t seed, size_t mppc, int threads, bool warm_start) {
        size_t n;
        const float* p = f32_rows(x, self.dim(), n, "x");
        py::gil_scoped_release nogil;
        self.train(p, n, kmeans_params(niter, seed, mppc, threads), warm_start);
      }, py::arg("x"), py::arg("niter"), py::arg("seed"), py::arg("mppc"), py::arg("threads"),
         py::arg("warm_start") = false)
      .def("encode", [](const ProductQuantizer& self, const py::array& x, int threads) {
        size_t n;
        const float* p = f32_rows(x, self.dim(), n, "x");
        py::array_t<uint8_t> out({py::ssize_t(n), py::ssize_t(self.code_size())});
        uint8_t* o = out.mutable_data();
        py::gil_scoped_release nogil;
        self.encode(p, n, o, threads);
        return out;
      }, py::arg("x"), py::arg("threads"))
      .def("decode", [u8_codes](const ProductQuantizer& self, const py::array& codes) {
        size_t n;
        const uint8_t* c = u8_codes(codes, self.code_size(), n);
        if (self.nbits() == 4 && self.m() % 2)
          for (size_t i = 0; i < n; ++i)
            if (c[(i + 1) * self.code_size() - 1] >> 4)
              throw py::value_error("codes: the unused high nibble of the last byte must be 0");
        py::array_t<float> out({py::ssize_t(n), py::ssize_t(self.dim())});
        float* o = out.mutable_data();
        py::gil_scoped_release nogil;
        self.decode(c, n, o);
        return out;
      }, py::arg("codes"))
      .def("distance_tables", [](const ProductQuantizer& self, const py::array& q, bool l2) {
        size_t nq;
        const float* p = f32_rows(q, self.dim(), nq, "queries");
        py::array_t<float> out({py::ssize_t(nq), py::ssize_t(self.m()), py::ssize_t(self.ksub())});
        float* o = out.mutable_data();
        py::gil_scoped_release nogil;
        self.distance_tables(p, nq, l2, o);
        return out;
      }, py::arg("queries"), py::arg("l2"))
      .def("sdc_tables", [](const ProductQuantizer& self, bool l2) {
        py::array_t<float> out({py::ssize_t(self.m()), py::ssize_t(self.ksub()), py::ssize_t(self.ksub())});
        self.sdc_tables(l2, out.mutable_data());
        return out;
      }, py::arg("l2"))
      .def("centroids", [](const ProductQuantizer& self) { return to_numpy(self.centroids()); })
      .def("set_centroids", [](ProductQuantizer& self, const py::array& c) {
        self.set_centroids(from_numpy<float>(c, "centroids"));
      }, py::arg("centroids"));

  auto pq_index = bind_pq_index<PQIndex>(m, "PQIndex");
  pq_index.def(py::init([](size_t dim, size_t m, size_t nbits, const std::string& metric) {
    return new PQIndex(dim, m, nbits, metric_from_name(metric));
  }), py::arg("dim"), py::arg("m"), py::arg("nbits"), py::arg("metric"));
  // borrow: the codes are a view of the array (a mapped file the caller keeps alive).
  pq_index.def("restore", [](PQIndex& self, const py::array& codes, const py::array& ids,
                             size_t rows, const py::array& removed, bool borrow) {
    self.restore(buffer_from_numpy<uint8_t>(codes, "codes", borrow), from_numpy<int64_t>(ids, "ids"),
                 rows, from_numpy<uint64_t>(removed, "removed"));
  }, py::arg("codes"), py::arg("ids"), py::arg("rows"), py::arg("removed"), py::arg("borrow") = false);
  auto fast_scan = bind_pq_index<PQFastScanIndex>(m, "PQFastScanIndex");
  fast_scan.def(py::init([](size_t dim, size_t m, const std::string& metric) {
    return new PQFastScanIndex(dim, m, metric_from_name(metric));
  }), py::arg("dim"), py::arg("m"), py::arg("metric"));
  fast_scan.def("restore", [](PQFastScanIndex& self, const py::array& codes, const py::array& ids,
                              size_t rows, const py::array& removed) {
    self.restore(from_numpy<uint8_t>(codes, "codes"), from_numpy<int64_t>(ids, "ids"), rows,
                 from_numpy<uint64_t>(removed, "removed"));
  }, py::arg("codes"), py::arg("ids"), py::arg("rows"), py::arg("removed"));
  fast_scan.def("blocks", [](const PQFastScanIndex& self) { return to_numpy(self.blocks()); });
  fast_scan.def("restore_blocks", [](PQFastScanIndex& self, const py::array& blocks,
                                     const py::array& ids, size_t rows, const py::array& removed,
                                     bool borrow) {
    self.restore_blocks(buffer_from_numpy<uint8_t>(blocks, "blocks", borrow),
                        from_numpy<int64_t>(ids, "ids"), rows, from_numpy<uint64_t>(removed, "removed"));
  }, py::arg("blocks"), py::arg("ids"), py::arg("rows"), py::arg("removed"), py::arg("borrow"));

  py::class_<IVFPQIndex, quanta::Index, std::shared_ptr<IVFPQIndex>> ivf(m, "IVFPQIndex");
  bind_pq_accessor(ivf);
  ivf.def(py::init([](size_t dim, size_t nlist, size_t m, size_t nbits, const std::string& metric,
                      bool fast_scan, bool by_residual, bool soar) {
       return new IVFPQIndex(dim, nlist, m, nbits, metric_from_name(metric), fast_scan,
                             by_residual, soar);
     }), py::arg("dim"), py::arg("nlist"), py::arg("m"), py::arg("nbits"), py::arg("metric"),
         py::arg("fast_scan"), py::arg("by_residual"), py::arg("soar") = false)
      .def_property_readonly("by_residual", &IVFPQIndex::by_residual)
      .def_property_readonly("soar", &IVFPQIndex::soar)
      .def_property_readonly("mapped_bytes", &IVFPQIndex::mapped_bytes)
      .def("coarse_centroids", [](const IVFPQIndex& self) { return to_numpy(self.centroids()); })
      // shards of one trained state searched as one index (no filter: see ivf_pq.hpp)
      .def("search_parts", [](const IVFPQIndex& self,
                              const std::vector<std::shared_ptr<IVFPQIndex>>& others,
                              const py::array& q, size_t k, int threads,
                              IVFSearchParams params) {
        std::vector<const IVFPQIndex*> parts;
        for (const auto& o : others) parts.push_back(o.get());
        params.k = k;
        params.threads = threads;
        return search_into(self.dim(), q, k, [&](const float* qp, size_t nq, float* D,
                                                 int64_t* I) {
          self.search(qp, nq, params, D, I, parts);
        });
      }, py::arg("others"), py::arg("queries"), py::arg("k"), py::arg("threads"),
         py::arg("params"))
      .def("coarse_search", [](const IVFPQIndex& self, const py::array& q, size_t nprobe,
                               int threads) {
        return search_into(self.dim(), q, nprobe, [&](const float* qp, size_t nq, float* D,
                                                      int64_t* I) {
          self.coarse_search(qp, nq, nprobe, threads, D, I);
        });
      }, py::arg("queries"), py::arg("nprobe"), py::arg("threads"))
      .def("coarse_rescored", [](const IVFPQIndex& self, const py::array& q, size_t nprobe) {
        size_t nq;
        const float* p = f32_rows(q, self.dim(), nq, "queries");
        py::array_t<int64_t> out{py::ssize_t(nq)};
        self.coarse_rescored(p, nq, nprobe, out.mutable_data());
        return out;
      }, py::arg("queries"), py::arg("nprobe"))
      // with_codes=False leaves out the plain codes (a save writes the stored layout).
      .def("state", [](const IVFPQIndex& self, bool with_codes) {
        py::dict d;
        d["centroids"] = to_numpy(self.centroids());
        d["sizes"] = to_numpy(self.list_sizes());
        if (with_codes) d["codes"] = to_numpy(self.all_codes());
        d["ids"] = to_numpy(self.all_ids());
        return d;
      }, py::arg("with_codes") = true)
      .def("stored_codes", [](const IVFPQIndex& self) { return to_numpy(self.stored_codes()); })
      .def("restore", [](IVFPQIndex& self, const py::array& centroids, const py::array& sizes,
                         const py::array& codes, const py::array& ids, bool stored, bool borrow) {
        self.restore(from_numpy<float>(centroids, "centroids"), from_numpy<uint64_t>(sizes, "sizes"),
                     array_data<uint8_t>(codes, "codes"), size_t(codes.size()),
                     array_data<int64_t>(ids, "ids"), size_t(ids.size()), stored, borrow);
      }, py::arg("centroids"), py::arg("sizes"), py::arg("codes"), py::arg("ids"),
         py::arg("stored") = false, py::arg("borrow") = false);

  py::class_<FlatIndex, quanta::Index, std::shared_ptr<FlatIndex>> flat(m, "FlatIndex");
  flat.def(py::init([](size_t dim, const std::string& metric, const std::string& storage,
                       const std::string& f8_scale, bool f8_anisotropic) {
             return new FlatIndex(dim, metric_from_name(metric), storage_from_name(storage),
                                  f8scale_from_name(f8_scale), f8_anisotropic);
           }),
           py::arg("dim"), py::arg("metric"), py::arg("storage"), py::arg("f8_scale"),
           py::arg("f8_anisotropic"))
      .def_property_readonly("f8_anisotropic", &FlatIndex::f8_anisotropic)
      .def_property_readonly("mapped_bytes", &FlatIndex::mapped_bytes)
      .def_property_readonly("dim", &FlatIndex::dim)
      .def_property_readonly("storage", [](const FlatIndex& s) { return storage_name(s.storage()); })
      .def_property_readonly("f8_scale", [](const FlatIndex& s) { return f8scale_name(s.f8_scale()); })
      .def_property_readonly("code_size", &FlatIndex::code_size)
      .def("search_subset", [](const FlatIndex& self, const py::array& q,
                               const py::array_t<int64_t, py::array::c_style>& cand, size_t k,
                               int threads) {
        if (cand.ndim() != 2 || cand.shape(0) != q.shape(0))
          throw py::value_error("candidates must have shape (nq, ncandidates)");
        const size_t nc = size_t(cand.shape(1));
        const int64_t* cp = cand.data();
        return search_into(self.dim(), q, k, [&](const float* p, size_t nq, float* D, int64_t* I) {
          self.search_subset(p, nq, cp, nc, k, threads, D, I);
        });
      }, py::arg("queries"), py::arg("candidates"), py::arg("k"), py::arg("threads"))
      .def_property_readonly("rows", &FlatIndex::rows)
      .def("state", [](const FlatIndex& self) {
        py::dict d;
        d["removed"] = to_numpy(self.removed_mask());
        d["codes"] = to_numpy(self.codes());
        d["vector_scale"] = to_numpy(self.vector_scale());
        d["sq_norms"] = to_numpy(self.sq_norms());
        d["dim_scale"] = to_numpy(self.dim_scale());
        d["ids"] = to_numpy(self.ids());
        d["global_scale"] = self.global_scale();
        return d;
      })
      .def("restore", [](FlatIndex& self, const py::array& codes, const py::array& vector_scale,
                         const py::array& sq_norms, const py::array& dim_scale,
                         const py::array& ids, float global_scale, size_t rows,
                         const py::array& removed, bool borrow) {
        self.restore(buffer_from_numpy<uint8_t>(codes, "codes", borrow),
                     buffer_from_numpy<float>(vector_scale, "vector_scale", borrow),
                     buffer_from_numpy<float>(sq_norms, "sq_norms", borrow),
                     from_numpy<float>(dim_scale, "dim_scale"), from_numpy<int64_t>(ids, "ids"),
                     global_scale, rows, from_numpy<uint64_t>(removed, "removed"));
      }, py::arg("codes"), py::arg("vector_scale"), py::arg("sq_norms"), py::arg("dim_scale"),
         py::arg("ids"), py::arg("global_scale"), py::arg("rows"), py::arg("removed"),
         py::arg("borrow") = false);
  // after FlatIndex: these take or return one
  bind_compose_wrappers(m);
  bind_graph(m);
}
