// Index specs in faiss's index_factory vocabulary, parsed in one place: index_factory builds
// the native chain of a spec, and quanta.index_factory (Python) builds its classes from the
// same parse.
//
//   spec  := [OPQ<m>,] body [,Refine(<storage>) | ,RFlat]
//   body  := Flat[(<storage>)]
//          | PQ<m>[x<nbits>][fs]                 nbits 4 or 8 (default 8); fs: 4-bit fast-scan
//          | IVF<nlist>[(soar)],PQ<m>[x<nbits>][fs]
//          | RBE<bits>x<planes>[q<query planes>] | IVF<nlist>,RBE<bits>x<planes>[q<...>]
//          | Graph<degree>[(<storage>)][,PQ<m>[x<nbits>]]
//
// OPQ<m>, (m equal to the PQ's) precedes a PQ or IVF-PQ body; Refine / RFlat (f32) follows a
// PQ, IVF-PQ or RBE body; a Graph body takes neither.
#pragma once
#include <cstddef>
#include <memory>
#include <string>

#include "quanta/codec/storage.hpp"
#include "quanta/core/index.hpp"

namespace quanta {

struct IndexSpec {
  enum class Family { flat, pq, ivf_pq, rbe, ivf_rbe, graph };
  Family family = Family::flat;
  Storage storage = Storage::f32;  // Flat's and Graph's vectors
  size_t m = 0, nbits = 8;         // PQ codes; Graph: its estimation codes (m 0: none)
  bool fast_scan = false;
  size_t nlist = 0;
  bool soar = false;
  size_t bits = 0, planes = 0, query_planes = 0;  // RBE; query_planes 0: the default
  size_t degree = 0;
  bool rabitq = false;  // Graph: RaBitQ estimation codes
  bool opq = false;
  bool refine = false;
  Storage refine_storage = Storage::f32;
};

// Throws std::invalid_argument naming the spec and what was expected.
IndexSpec parse_index_spec(const std::string& spec);

// The empty native index of a spec, with the defaults of quanta's Python classes (Graph:
// build width 128, alpha 1, one refinement pass; Refine: 4 candidates per result; RBE:
// automatic scoring). Train it with Index::train where it needs training. OPQ specs are
// refused: the rotation is learned with NumPy (quanta.opq.train_rotation); wrap a trained
// index in PreTransformIndex instead. An RBE index's binarizer must be fitted before train.
std::shared_ptr<Index> index_factory(size_t dim, const std::string& spec, Metric metric);

}  // namespace quanta
