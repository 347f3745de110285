"""Index specs in faiss style: ``quanta.index_factory(dim, "Flat(f8e4m3)", metric="ip")``."""
from __future__ import annotations

import re

from ._types import Metric
from .binary import BinaryIndex, IVFBinaryIndex
from .flat import FlatIndex
from .graph import GraphIndex
from .pq import IVFPQIndex, PQIndex
from .storage import STORAGES

_FLAT = re.compile(r"^Flat(?:\((?P<storage>[a-z0-9]+)\))?$")
_GRAPH = re.compile(r"^Graph(?P<degree>[0-9]+)(?:\((?P<storage>[a-z0-9]+)\))?"
                    r"(?:,(?P<codes>PQ[0-9]+(?:x[0-9]+)?))?$")
_PQ = re.compile(r"^PQ(?P<m>[0-9]+)(?:x(?P<nbits>[0-9]+))?(?P<fs>fs)?$")
_IVF = re.compile(r"^IVF(?P<nlist>[0-9]+)(?P<soar>\(soar\))?,(?P<rest>.+)$")
_RBE = re.compile(r"^RBE(?P<bits>[0-9]+)x(?P<planes>[0-9]+)(?:q(?P<qplanes>[0-9]+))?$")
_OPQ = re.compile(r"^OPQ(?P<m>[0-9]+),(?P<rest>.+)$")
_REFINE = re.compile(r"^(?P<base>.+),(?:Refine\((?P<storage>[a-z0-9]+)\)|(?P<rflat>RFlat))$")


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
    (:class:`quanta.GraphIndex`).
    """
    if not isinstance(spec, str):
        raise TypeError(f"spec must be a string; got {type(spec).__name__}")
    kw = {}
    o = _OPQ.match(spec.strip())
    if o:
        kw["opq"] = True
        spec = o.group("rest")
    r = _REFINE.match(spec.strip())
    if r:
        kw["refine"] = "f32" if r.group("rflat") else r.group("storage")
        if kw["refine"] not in STORAGES:
            raise ValueError(f"index spec {spec!r}: unknown refine storage {kw['refine']!r}; "
                             f"expected one of {', '.join(STORAGES)}")
        spec = r.group("base")
        if not (_IVF.match(spec.strip()) or _PQ.match(spec.strip()) or _RBE.match(spec.strip())):
            raise ValueError(f"index spec {spec!r}: Refine(...) follows a PQ, IVF-PQ or RBE spec")
    ivf = _IVF.match(spec.strip())
    rbe = _RBE.match((ivf.group("rest") if ivf else spec).strip())
    if rbe:
        if "opq" in kw:
            raise ValueError(f"index spec {spec!r}: OPQ<m>, precedes a PQ or IVF-PQ spec")
        planes = int(rbe.group("planes"))
        qplanes = int(rbe.group("qplanes")) if rbe.group("qplanes") else None
        if not 1 <= planes <= 8 or not (qplanes is None or planes <= qplanes <= 8):
            raise ValueError(f"index spec {spec!r}: RBE<bits>x<planes>[q<query planes>] needs 1 "
                             f"to 8 planes, and query planes >= planes")
        kw["query_levels"] = None if qplanes is None else qplanes - 1
        if ivf and ivf.group("soar"):
            raise ValueError(f"index spec {spec!r}: (soar) is for IVF-PQ specs")
        if ivf:
            return IVFBinaryIndex(dim, int(ivf.group("nlist")), int(rbe.group("bits")),
                                  planes - 1, metric, **kw)
        return BinaryIndex(dim, int(rbe.group("bits")), planes - 1, metric, **kw)
    g = _GRAPH.match(spec.strip())
    if g:
        if kw:
            raise ValueError(f"index spec {spec!r}: a Graph spec takes no OPQ or Refine part")
        storage = _storage(spec, g.group("storage"))
        return GraphIndex(dim, metric, int(g.group("degree")), storage, codes=g.group("codes"))
    m = _FLAT.match(spec.strip())
    if m and "opq" in kw:
        raise ValueError(f"index spec {spec!r}: OPQ<m>, precedes a PQ or IVF-PQ spec")
    if m:
        return FlatIndex(dim, metric, _storage(spec, m.group("storage")))
    ivf = _IVF.match(spec.strip())
    if ivf:
        m = _PQ.match(ivf.group("rest").strip())
        if not m:
            raise ValueError(f"index spec {spec!r}: 'IVF<nlist>,' must be followed by "
                             f"'PQ<m>x<nbits>' or 'PQ<m>x4fs'")
        nbits = _pq_bits(spec, m)
        _check_opq(o, m)
        return IVFPQIndex(dim, int(ivf.group("nlist")), int(m.group("m")), nbits, metric,
                          fast_scan=bool(m.group("fs")), soar=bool(ivf.group("soar")), **kw)
    m = _PQ.match(spec.strip())
    if m:
        nbits = _pq_bits(spec, m)
        _check_opq(o, m)
        return PQIndex(dim, int(m.group("m")), nbits, metric, fast_scan=bool(m.group("fs")), **kw)
    raise ValueError(f"unknown index spec {spec!r}; supported: 'Flat', 'Flat(<storage>)' with "
                     f"storage in {', '.join(STORAGES)}, 'PQ<m>x<nbits>', 'PQ<m>x4fs', "
                     f"'IVF<nlist>,PQ<m>x<nbits>[fs]', each PQ spec optionally followed by "
                     f"',Refine(<storage>)' and optionally preceded by 'OPQ<m>,', 'RBE<bits>x<planes>', "
                     f"'Graph<degree>[(<storage>)][,PQ<m>x4]'")


def _storage(spec, name):
    storage = name or "f32"
    if storage not in STORAGES:
        raise ValueError(f"index spec {spec!r}: unknown storage {storage!r}; expected one of "
                         f"{', '.join(STORAGES)}")
    return storage


def _pq_bits(spec, m):
    nbits = int(m.group("nbits") or 8)
    if m.group("fs") and nbits != 4:
        raise ValueError(f"index spec {spec!r}: fast-scan ('fs') needs 4-bit codes, "
                         f"e.g. 'PQ{m.group('m')}x4fs'")
    return nbits


def _check_opq(opq, pq):
    if opq and opq.group("m") != pq.group("m"):
        raise ValueError(f"index spec: OPQ{opq.group('m')} must match the PQ's m "
                         f"(PQ{pq.group('m')}); the rotation is learned for that PQ")
