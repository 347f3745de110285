"""Index specs in faiss style: ``quanta.index_factory(dim, "Flat(f8e4m3)", metric="ip")``."""
from __future__ import annotations

from . import _core
from ._types import Metric
from .binary import BinaryIndex, IVFBinaryIndex
from .flat import FlatIndex
from .graph import GraphIndex
from .pq import IVFPQIndex, PQIndex


def index_factory(dim: int, spec: str, metric: Metric = "ip"):
    """Builds an empty index from a spec string.

    Supported now: ``"Flat"`` (float32), ``"Flat(<storage>)"`` with storage one of
    f32, f16, bf16, f8e4m3, f8e5m2, i8, ``"PQ<m>"`` / ``"PQ<m>x<nbits>"`` (nbits 4 or 8,
    default 8): a flat PQ index searched by ADC, ``"PQ<m>x4fs"``: 4-bit fast-scan, and
    ``"IVF<nlist>,PQ<m>x<nbits>"`` / ``"IVF<nlist>,PQ<m>x4fs"``: IVF-PQ (8-bit codes of the
    residuals, fast-scan codes of the vectors), ``"IVF<nlist>(soar),..."``: each vector also in
    a second list (SOAR). A PQ or IVF-PQ spec may end with
    ``",Refine(<storage>)"`` (or ``",RFlat"`` for f32): exact re-ranking of ``refine_factor``
    (default 4) times k candidates against vectors kept in that storage. A PQ or IVF-PQ spec
    may start with ``"OPQ<m>,"`` (m equal to the PQ's): an OPQ rotation learned in ``train``,
    e.g. ``"OPQ32,IVF1024,PQ32x8,Refine(f8e4m3)"``. ``"RBE<bits>x<planes>"``: recurrent binary
    codes of ``bits`` bits per plane and ``planes`` planes (bits per dimension), searched by
    exact code scores, e.g. ``"RBE384x2"`` or ``"RBE384x2,Refine(f8e4m3)"`` (metric ip or
    cosine); ``"RBE384x2q2"`` sets the query's planes (here symmetric codes, as BEBR), and
    ``"IVF1024,RBE384x2"`` keeps the codes in inverted lists. ``"Graph<degree>"`` /
    ``"Graph<degree>(<storage>)"``: a graph of ``degree`` neighbours per vector over vectors
    kept in that storage (default f32), searched by a beam that scores them exactly, e.g.
    ``"Graph32(f16)"``, optionally followed by estimation codes: ``"Graph32(f16),PQ96x4"``
    or ``"Graph32(f16),RaBitQ"`` (:class:`quanta.GraphIndex`).
    """
    if not isinstance(spec, str):
        raise TypeError(f"spec must be a string; got {type(spec).__name__}")
    s = _core.parse_index_spec(spec)  # the grammar lives in cpp/src/core/index_factory.cpp
    kw = {"opq": True} if s["opq"] else {}
    if s["refine"] is not None:
        kw["refine"] = s["refine"]
    family = s["family"]
    if family == "flat":
        return FlatIndex(dim, metric, s["storage"])
    if family == "graph":
        codes = "RaBitQ" if s["rabitq"] else f"PQ{s['m']}x{s['nbits']}" if s["m"] else None
        return GraphIndex(dim, metric, s["degree"], s["storage"], codes=codes)
    if family in ("rbe", "ivf_rbe"):
        query_levels = s["query_planes"] - 1 if s["query_planes"] else None
        if family == "ivf_rbe":
            return IVFBinaryIndex(dim, s["nlist"], s["bits"], s["planes"] - 1, metric,
                                  query_levels=query_levels, **kw)
        return BinaryIndex(dim, s["bits"], s["planes"] - 1, metric, query_levels=query_levels,
                           **kw)
    if family == "ivf_pq":
        return IVFPQIndex(dim, s["nlist"], s["m"], s["nbits"], metric, fast_scan=s["fast_scan"],
                          soar=s["soar"], **kw)
    return PQIndex(dim, s["m"], s["nbits"], metric, fast_scan=s["fast_scan"], **kw)
