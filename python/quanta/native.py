"""The native contract, for systems that embed quanta: every dense index is an ``Index``
(``index.native`` gives the one an index searches) with add / search / remove / contains /
range_search / reconstruct / reset / compact, searched with a settings struct derived from
``SearchParams`` (k, threads and filter are arguments of ``search``); ``RefineIndex`` and
``PreTransformIndex`` compose any of them (faiss's IndexRefine and IndexPreTransform).

>>> chain = quanta.native.RefineIndex(ivf.native, flat.native, 4)
>>> params = quanta.native.IVFSearchParams(); params.nprobe = 16
>>> outer = quanta.native.RefineSearchParams(); outer.base = params
>>> D, I = chain.search(queries, 10, 0, None, outer)   # queries, k, threads, filter, params
"""
from ._core import (FlatSearchParams, GraphSearchParams, Index, IVFSearchParams, PQSearchParams,
                    PreTransformIndex, RefineIndex, RefineSearchParams, SearchParams)

__all__ = ["Index", "SearchParams", "FlatSearchParams", "PQSearchParams", "IVFSearchParams",
           "RefineSearchParams", "GraphSearchParams", "RefineIndex", "PreTransformIndex"]
