// Bindings of the multi-vector core: MUVERA encoder and the Chamfer token store. Ragged
// batches arrive as (tokens float32 [ntokens, dim], offsets int64 [n + 1]); the Python layer
// builds them from lists of arrays.
#include "common.hpp"
#include "quanta/codec/fde.hpp"
#include "quanta/index/token_candidates.hpp"
#include "quanta/index/token_store.hpp"

using namespace quanta_py;

namespace {

using I64Array = py::array_t<int64_t, py::array::c_style>;

// The data of a C-contiguous int64 array of ndim dimensions; null for anything else.
const int64_t* i64_data(const py::array& a, py::ssize_t ndim) {
  if (!py::isinstance<I64Array>(a) || !(a.flags() & py::array::c_style) || a.ndim() != ndim)
    return nullptr;
  return static_cast<const int64_t*>(a.data());
}

// Checks dtypes and shapes; offsets are validated by the core.
TokenSets ragged(const py::array& tokens, const py::array& offsets, size_t dim,
                 const char* what) {
  TokenSets r;
  r.tokens = f32_rows(tokens, dim, r.ntokens, what);
  r.offsets = i64_data(offsets, 1);
  if (!r.offsets || offsets.shape(0) < 1)
    throw py::type_error(std::string(what) + " offsets must be a 1-D C-contiguous int64 array");
  r.n = size_t(offsets.shape(0)) - 1;
  return r;
}

}  // namespace

void bind_multivector(py::module_& m) {
  py::class_<FDEEncoder>(m, "FDEEncoder")
      .def(py::init([](size_t dim, size_t k_sim, size_t d_proj, size_t r_reps, bool gray,
                       size_t final_dim, const py::array& simhash, const py::array& projection,
                       const py::array& final_index, const py::array& final_sign) {
             FdeConfig c;
             c.dim = dim;
             c.k_sim = k_sim;
             c.d_proj = d_proj;
             c.r_reps = r_reps;
             c.order = gray ? BucketOrder::gray : BucketOrder::binary;
             c.final_dim = final_dim;
             return FDEEncoder(c, from_numpy<float>(simhash, "simhash"),
                               from_numpy<float>(projection, "projection"),
                               from_numpy<int32_t>(final_index, "final_index"),
                               from_numpy<float>(final_sign, "final_sign"));
           }),
           py::arg("dim"), py::arg("k_sim"), py::arg("d_proj"), py::arg("r_reps"),
           py::arg("gray"), py::arg("final_dim"), py::arg("simhash"), py::arg("projection"),
           py::arg("final_index"), py::arg("final_sign"))
      .def_property_readonly("output_dim", &FDEEncoder::output_dim)
      .def("encode", [](const FDEEncoder& self, const py::array& tokens, const py::array& offsets,
                        bool documents, bool fill_empty, int threads) {
        const TokenSets r = ragged(tokens, offsets, self.config().dim, "tokens");
        py::array_t<float> out({py::ssize_t(r.n), py::ssize_t(self.output_dim())});
        float* op = out.mutable_data();
        py::gil_scoped_release nogil;
        self.encode(r.tokens, r.ntokens, r.offsets, r.n, documents, fill_empty, threads, op);
        return out;
      }, py::arg("tokens"), py::arg("offsets"), py::arg("documents"), py::arg("fill_empty"),
         py::arg("threads"));

  py::class_<TokenStore, IndexBase, std::shared_ptr<TokenStore>>(m, "TokenStore")
      .def(py::init([](size_t dim, const std::string& storage) {
             return new TokenStore(dim, storage_from_name(storage));
           }),
           py::arg("dim"), py::arg("storage"))
      .def_property_readonly("ndocs", &TokenStore::ndocs)
      .def("ids", [](const TokenStore& self) { return to_numpy(self.ids()); })
      .def("removed", [](const TokenStore& self) { return to_numpy(self.removed_mask()); })
      .def_property_readonly("ntokens", &TokenStore::ntokens)
      .def_property_readonly("scale", &TokenStore::scale)
      .def("add", [](TokenStore& self, const py::array& tokens, const py::array& offsets,
                     const py::object& ids, int threads) {
        const TokenSets r = ragged(tokens, offsets, self.dim(), "tokens");
        py::array_t<int64_t, py::array::c_style> keep;
        const int64_t* idp = optional_ids(ids, r.n, keep);
        py::gil_scoped_release nogil;
        self.add(r, idp, threads);
      }, py::arg("tokens"), py::arg("offsets"), py::arg("ids"), py::arg("threads"))
      .def("search", [](const TokenStore& self, const py::array& q, const py::array& q_offsets,
                        size_t k, int threads, const py::object& filter) {
        const TokenSets r = ragged(q, q_offsets, self.dim(), "query tokens");
        const auto p = search_params<SearchParams>(k, threads, filter, r.n);
        return results_into(r.n, k, [&](float* dp, int64_t* ip) {
          self.search(r, p, dp, ip);
        });
      }, py::arg("queries"), py::arg("q_offsets"), py::arg("k"), py::arg("threads"),
         py::arg("filter"))
      .def("rerank", [](const TokenStore& self, const py::array& q, const py::array& q_offsets,
                        const py::array& cand, size_t k, int threads, const py::object& filter,
                        size_t shortlist) {
        const TokenSets r = ragged(q, q_offsets, self.dim(), "query tokens");
        const int64_t* cp = i64_data(cand, 2);
        if (!cp || size_t(cand.shape(0)) != r.n)
          throw py::type_error("candidates must be a C-contiguous int64 array of shape (nq, nc)");
        const size_t nc = size_t(cand.shape(1));
        const auto p = search_params<SearchParams>(k, threads, filter, r.n);
        return results_into(r.n, k, [&](float* dp, int64_t* ip) {
          self.rerank(r, cp, nc, shortlist, p, dp, ip);
        });
      }, py::arg("queries"), py::arg("q_offsets"), py::arg("candidates"), py::arg("k"),
         py::arg("threads"), py::arg("filter"), py::arg("shortlist") = 0)
      .def("build_sketch", [](TokenStore& self, size_t m, uint64_t seed, int threads) {
        py::gil_scoped_release nogil;
        self.build_sketch(m, seed, threads);
      }, py::arg("m"), py::arg("seed"), py::arg("threads"))
      .def("sketch_estimate", [](const TokenStore& self, const py::array& q,
                                 const py::array& docs) {
        size_t nt = 0;
        const float* qp = f32_rows(q, self.dim(), nt, "q");
        const auto d = from_numpy<int64_t>(docs, "docs");
        py::array_t<uint32_t> out(py::ssize_t(d.size()));
        uint32_t* op = out.mutable_data();
        py::gil_scoped_release nogil;
        self.estimate(qp, nt, d.data(), d.size(), op);
        return out;
      }, py::arg("q"), py::arg("docs"))
      .def_property_readonly("sketch_bytes", [](const TokenStore& self) {
        return self.sketch() ? self.sketch()->memory_usage() : size_t(0);
      })
      .def_property_readonly("sketch_m", [](const TokenStore& self) {
        return self.sketch() ? self.sketch()->m() : size_t(0);
      })
      .def("sketch_centroids", [](const TokenStore& self) {
        return to_numpy(self.sketch() ? self.sketch()->centroids() : std::vector<float>{});
      })
      .def("sketch_codes", [](const TokenStore& self) {
        return self.sketch() ? to_numpy(self.sketch()->codes()) : to_numpy(std::vector<uint8_t>{});
      })
      .def("tokens", [](const TokenStore& self, size_t i) {
        const std::vector<float> t = self.tokens(i);
        py::array_t<float> out({py::ssize_t(t.size() / self.dim()), py::ssize_t(self.dim())});
        std::copy(t.begin(), t.end(), out.mutable_data());
        return out;
      }, py::arg("doc"))
      .def("codes", [](const TokenStore& self) { return to_numpy(self.codes()); })
      .def("offsets", [](const TokenStore& self) { return to_numpy(self.offsets()); })
      // borrow: the codes are a view of the array (a mapped file the caller keeps alive).
      .def("restore", [](TokenStore& self, const py::array& codes, const py::array& offsets,
                         float scale, const py::array& ids, const py::array& removed, bool borrow,
                         size_t sketch_m, const py::array& sketch_centroids,
                         const py::array& sketch_codes) {
        self.restore(buffer_from_numpy<uint8_t>(codes, "codes", borrow),
                     from_numpy<int64_t>(offsets, "offsets"), scale, from_numpy<int64_t>(ids, "ids"),
                     from_numpy<uint64_t>(removed, "removed"), sketch_m,
                     from_numpy<float>(sketch_centroids, "sketch_centroids"),
                     buffer_from_numpy<uint8_t>(sketch_codes, "sketch_codes", borrow));
      }, py::arg("codes"), py::arg("offsets"), py::arg("scale"), py::arg("ids"),
         py::arg("removed"), py::arg("borrow") = false, py::arg("sketch_m") = 0,
         py::arg("sketch_centroids") = py::array_t<float>(0),
         py::arg("sketch_codes") = py::array_t<uint8_t>(0))
      .def_property_readonly("mapped_bytes", &TokenStore::mapped_bytes)
      .def("truncate", &TokenStore::truncate, py::arg("ndocs"));

  m.def("token_candidates", [](const py::array& scores, const py::array& labels,
                               const py::array& q_offsets, size_t candidates, int threads) {
    if (!py::isinstance<py::array_t<float, py::array::c_style>>(scores) || scores.ndim() != 2 ||
        !(scores.flags() & py::array::c_style))
      throw py::type_error("scores must be a C-contiguous float32 array (query tokens, kp)");
    const int64_t* lp = i64_data(labels, 2);
    if (!lp || labels.shape(0) != scores.shape(0) || labels.shape(1) != scores.shape(1))
      throw py::type_error("labels must be a C-contiguous int64 array shaped like scores");
    const int64_t* off = i64_data(q_offsets, 1);
    if (!off || q_offsets.shape(0) < 1)
      throw py::type_error("q_offsets must be a 1-D C-contiguous int64 array");
    const size_t nq = size_t(q_offsets.shape(0)) - 1;
    if (off[0] != 0 || off[nq] != scores.shape(0))
      throw py::value_error("q_offsets must run from 0 to the rows of scores");
    for (size_t i = 0; i < nq; ++i)
      if (off[i + 1] < off[i]) throw py::value_error("q_offsets must not decrease");
    py::array_t<int64_t> out({py::ssize_t(nq), py::ssize_t(candidates)});
    int64_t* op = out.mutable_data();
    const auto* sp = static_cast<const float*>(scores.data());
    const size_t kp = size_t(scores.shape(1));
    py::gil_scoped_release nogil;
    token_candidates(sp, lp, kp, off, nq, candidates, threads, op);
    return out;
  }, py::arg("scores"), py::arg("labels"), py::arg("q_offsets"), py::arg("candidates"),
     py::arg("threads"),
     "Document candidates (nq, candidates) from per-token hits, by XTR's estimate");
}
