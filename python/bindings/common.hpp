// Argument checks and conversions shared by the binding files of module _core.
#pragma once
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstring>
#include <limits>
#include <string>
#include <vector>

#include "quanta/codec/kmeans.hpp"
#include "quanta/core/buffer.hpp"
#include "quanta/core/id_filter.hpp"
#include "quanta/core/rw_lock.hpp"
#include "quanta/core/search_params.hpp"
#include "quanta/index/flat.hpp"

namespace py = pybind11;
using namespace quanta;

namespace quanta_py {

using F32Array = py::array_t<float, py::array::c_style>;

// A C-contiguous float32 matrix with `cols` columns (any leading shape is flattened).
// The k-means settings every train() binding takes.
inline KMeansParams kmeans_params(size_t niter, uint64_t seed, size_t mppc, int threads) {
  KMeansParams p;
  p.niter = niter;
  p.seed = seed;
  p.max_points_per_centroid = mppc;
  p.threads = threads;
  return p;
}

inline const float* f32_rows(const py::array& a, size_t cols, size_t& rows, const char* what) {
  if (!py::isinstance<F32Array>(a) || !(a.flags() & py::array::c_style))
    throw py::type_error(std::string(what) + " must be a C-contiguous float32 array");
  if (a.ndim() != 2 || size_t(a.shape(1)) != cols)
    throw py::value_error(std::string(what) + " must have shape (n, " + std::to_string(cols) +
                          ")");
  rows = size_t(a.shape(0));
  return static_cast<const float*>(a.data());
}

template <class T>
py::array_t<T> to_numpy(const std::vector<T>& v) {
  py::array_t<T> out{py::ssize_t(v.size())};
  if (!v.empty()) std::memcpy(out.mutable_data(), v.data(), v.size() * sizeof(T));
  return out;
}

template <class T>
py::array_t<T> to_numpy(const Buffer<T>& v) {
  py::array_t<T> out{py::ssize_t(v.size())};
  if (!v.empty()) std::memcpy(out.mutable_data(), v.data(), v.size() * sizeof(T));
  return out;
}

// A restore argument's elements, in place: it must be a C-contiguous array of T.
template <class T>
const T* array_data(const py::array& a, const char* what) {
  if (!py::isinstance<py::array_t<T, py::array::c_style>>(a) || !(a.flags() & py::array::c_style))
    throw py::type_error(std::string("restore: ") + what + " has the wrong dtype");
  return static_cast<const T*>(a.data());
}

template <class T>
std::vector<T> from_numpy(const py::array& a, const char* what) {
  const T* p = array_data<T>(a, what);
  return std::vector<T>(p, p + a.size());
}

// A restore argument as a Buffer: a view of the array when borrow is set (the caller keeps
// the array alive: a memory-mapped file), else a copy.
template <class T>
Buffer<T> buffer_from_numpy(const py::array& a, const char* what, bool borrow) {
  const T* p = array_data<T>(a, what);
  if (!borrow) return Buffer<T>(LargeVector<T>(p, p + a.size()));
  return Buffer<T>::view(p, size_t(a.size()));
}

// Allocates (D, I) of nq x k, releases the GIL around run(D, I).
template <class Run>
py::tuple results_into(size_t nq, size_t k, Run&& run) {
  py::array_t<float> D({py::ssize_t(nq), py::ssize_t(k)});
  py::array_t<int64_t> I({py::ssize_t(nq), py::ssize_t(k)});
  float* dp = D.mutable_data();
  int64_t* ip = I.mutable_data();
  {
    py::gil_scoped_release nogil;
    run(dp, ip);
  }
  return py::make_tuple(D, I);
}

// Validates queries, then results_into with run(queries, nq, D, I).
template <class Run>
py::tuple search_into(size_t dim, const py::array& q, size_t k, Run&& run) {
  size_t nq;
  const float* p = f32_rows(q, dim, nq, "queries");
  return results_into(nq, k, [&](float* dp, int64_t* ip) { run(p, nq, dp, ip); });
}

// The optional `ids` argument of an add: null for None, else the data of a 1-D int64 array
// of n ids (kept alive by `keep`).
inline const int64_t* optional_ids(const py::object& ids, size_t n,
                                   py::array_t<int64_t, py::array::c_style>& keep) {
  if (ids.is_none()) return nullptr;
  keep = ids.cast<py::array_t<int64_t, py::array::c_style>>();
  if (keep.ndim() != 1 || size_t(keep.shape(0)) != n)
    throw py::value_error("ids must be a 1-D int64 array with one id per row");
  return keep.data();
}

// A search's `filter` argument as the Python layer passes it: None, or a list of IdFilter
// (one shared by every query, or one per query).
inline QueryFilters query_filters(const py::object& filter, size_t nq) {
  if (filter.is_none()) return {};
  auto list = filter.cast<std::vector<IdFilter>>();
  if (list.size() != 1 && list.size() != nq)
    throw py::value_error("filter: pass one filter, or one per query (" + std::to_string(nq) +
                          "); got " + std::to_string(list.size()));
  return QueryFilters(std::move(list));
}

// Sets the common search settings of p from the binding's arguments.
inline void set_common(SearchParams& p, size_t k, int threads, const py::object& filter,
                       size_t nq) {
  p.k = k;
  p.threads = threads;
  p.filter = query_filters(filter, nq);
}

// A family's settings struct with the common ones from the binding's arguments.
template <class Params>
Params search_params(size_t k, int threads, const py::object& filter, size_t nq) {
  Params p;
  set_common(p, k, threads, filter, nq);
  return p;
}

// (lims, distances, ids) of a range search, run with the GIL released.
template <class Run>
py::tuple range_into(size_t dim, const py::array& q, Run&& run) {
  size_t nq;
  const float* p = f32_rows(q, dim, nq, "queries");
  RangeResult r;
  {
    py::gil_scoped_release nogil;
    r = run(p, nq);
  }
  return py::make_tuple(to_numpy(std::vector<uint64_t>(r.lims.begin(), r.lims.end())),
                        to_numpy(r.distances), to_numpy(r.ids));
}

// An index's lock (quanta/_rwlock.py) taken with the GIL held when that needs no wait, and
// waited for without the GIL otherwise (a writer holding it may need the GIL to finish).
inline void acquire_read(ReadWriteLock& lock) {
  if (lock.try_read()) return;
  py::gil_scoped_release nogil;
  lock.read();
}
inline void acquire_write(ReadWriteLock& lock) {
  if (lock.try_write()) return;
  py::gil_scoped_release nogil;
  lock.write();
}

// Holds a lock (none when null) for reading over a scope.
class ReadHold {
 public:
  explicit ReadHold(ReadWriteLock* lock) : lock_(lock) {
    if (lock_) acquire_read(*lock_);
  }
  ~ReadHold() {
    if (lock_) lock_->unlock_read();
  }
  ReadHold(const ReadHold&) = delete;
  ReadHold& operator=(const ReadHold&) = delete;

 private:
  ReadWriteLock* lock_;
};

// The filter type the Python layer builds quanta.Filter on.
inline void bind_id_filter(py::module_& m) {
  py::class_<IdFilter>(m, "IdFilter")
      .def(py::init<>())
      .def_static("from_ids", [](const py::array_t<int64_t, py::array::c_style>& ids) {
        return IdFilter::from_ids(ids.data(), size_t(ids.size()));
      }, py::arg("ids"))
      .def_static("from_range", &IdFilter::from_range, py::arg("lo"), py::arg("hi"))
      .def_static("from_bitmap", [](const py::array_t<uint8_t, py::array::c_style>& bits,
                                    size_t nbits) {
        if (size_t(bits.size()) * 8 < nbits)
          throw py::value_error("from_bitmap: fewer bytes than nbits / 8");
        return IdFilter::from_bitmap(bits.data(), nbits);
      }, py::arg("bits"), py::arg("nbits"))
      .def("negated", &IdFilter::negated)
      .def("allows", [](const IdFilter& f, const py::array_t<int64_t, py::array::c_style>& ids) {
        py::array_t<bool> out{ids.size()};
        for (py::ssize_t i = 0; i < ids.size(); ++i) out.mutable_data()[i] = f.allows(ids.data()[i]);
        return out;
      }, py::arg("ids"))
      .def_property_readonly("max_allowed", [](const IdFilter& f) -> py::object {
        const size_t n = f.max_allowed();
        if (n == std::numeric_limits<size_t>::max()) return py::none();
        return py::int_(n);
      });
}

}  // namespace quanta_py
