"""The native contract, for systems that embed quanta. Every index is an ``IndexBase``
(dim, metric, ntotal, is_trained, memory_usage, remove, contains, reset, compact); dense ones
are an ``Index`` (``index.native`` gives the one an index searches) that adds train (with
``TrainParams``), add, search, range_search and reconstruct, searched with a settings struct
derived from ``SearchParams`` (k, threads and filter are arguments of ``search``);
``RefineIndex`` and ``PreTransformIndex`` compose any of them (faiss's IndexRefine and
IndexPreTransform). ``SparseIndex`` (sparse rows) and ``TokenStore`` (token sets, the exact
part of ``quanta.MultiVectorIndex``) are ``IndexBase`` with add / search over their own rows.
``index_factory(dim, spec, metric)`` builds the native chain of a spec (``parse_index_spec``
is the grammar quanta.index_factory uses too).

>>> chain = quanta.native.RefineIndex(ivf.native, flat.native, 4)
>>> params = quanta.native.IVFSearchParams(); params.nprobe = 16
>>> outer = quanta.native.RefineSearchParams(); outer.base = params
>>> D, I = chain.search(queries, 10, 0, None, outer)   # queries, k, threads, filter, params
>>> index = quanta.native.index_factory(64, "IVF256,PQ16x4fs,Refine(f16)", "ip")
>>> index.train(x, quanta.native.TrainParams(niter=25, seed=0))
"""
from ._core import (FlatSearchParams, GraphSearchParams, Index, IndexBase, IVFSearchParams,
                    PQSearchParams, PreTransformIndex, RefineIndex, RefineSearchParams,
                    SearchParams, SparseIndex, TokenStore, TrainParams, index_factory,
                    parse_index_spec)

__all__ = ["IndexBase", "Index", "SearchParams", "FlatSearchParams", "PQSearchParams",
           "IVFSearchParams", "RefineSearchParams", "GraphSearchParams", "TrainParams",
           "RefineIndex", "PreTransformIndex", "SparseIndex", "TokenStore", "index_factory",
           "parse_index_spec"]
