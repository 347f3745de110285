#include "quanta/core/index_factory.hpp"

#include <regex>
#include <stdexcept>

#include "quanta/codec/binary_codes.hpp"
#include "quanta/index/binary_index.hpp"
#include "quanta/index/flat.hpp"
#include "quanta/index/graph_index.hpp"
#include "quanta/index/ivf_binary.hpp"
#include "quanta/index/ivf_pq.hpp"
#include "quanta/index/pq_fast_scan.hpp"
#include "quanta/index/pq_index.hpp"
#include "quanta/index/refine.hpp"

namespace quanta {

namespace {

constexpr size_t kRefineFactor = 4;  // candidates re-ranked per result

const char* const kStorages = "f32, f16, bf16, f8e4m3, f8e5m2, i8";

[[noreturn]] void bad(const std::string& spec, const std::string& why) {
  throw std::invalid_argument("index spec '" + spec + "': " + why);
}

Storage storage_of(const std::string& spec, const std::string& name, const char* what) {
  if (name.empty()) return Storage::f32;
  try {
    return storage_from_name(name);
  } catch (const std::invalid_argument&) {
    bad(spec, std::string("unknown ") + what + " '" + name + "'; expected one of " + kStorages);
  }
}

size_t number(const std::string& s) {
  if (s.size() > 9) throw std::invalid_argument("index spec: number " + s + " too large");
  return s.empty() ? 0 : size_t(std::stoul(s));
}

std::string trimmed(const std::string& s) {
  const size_t b = s.find_first_not_of(" \t\n"), e = s.find_last_not_of(" \t\n");
  return b == std::string::npos ? std::string() : s.substr(b, e - b + 1);
}

// PQ<m>[x<nbits>][fs] into out (nbits default 8; fs needs 4).
bool parse_pq(const std::string& spec, const std::string& s, IndexSpec& out) {
  static const std::regex pq("PQ([0-9]+)(?:x([0-9]+))?(fs)?");
  std::smatch g;
  if (!std::regex_match(s, g, pq)) return false;
  out.m = number(g[1]);
  out.nbits = g[2].matched ? number(g[2]) : 8;
  out.fast_scan = g[3].matched;
  if (out.fast_scan && out.nbits != 4)
    bad(spec, "fast-scan ('fs') needs 4-bit codes, e.g. 'PQ" + g[1].str() + "x4fs'");
  return true;
}

// RBE<bits>x<planes>[q<query planes>] into out.
bool parse_rbe(const std::string& spec, const std::string& s, IndexSpec& out) {
  static const std::regex rbe("RBE([0-9]+)x([0-9]+)(?:q([0-9]+))?");
  std::smatch g;
  if (!std::regex_match(s, g, rbe)) return false;
  out.bits = number(g[1]);
  out.planes = number(g[2]);
  out.query_planes = g[3].matched ? number(g[3]) : 0;
  if (out.planes < 1 || out.planes > 8 ||
      (out.query_planes && (out.query_planes < out.planes || out.query_planes > 8)))
    bad(spec, "RBE<bits>x<planes>[q<query planes>] needs 1 to 8 planes, and query planes >= "
              "planes");
  return true;
}

}  // namespace

IndexSpec parse_index_spec(const std::string& text) {
  static const std::regex opq("OPQ([0-9]+),(.+)");
  static const std::regex refine("(.+),(?:Refine\\(([a-z0-9]+)\\)|(RFlat))");
  static const std::regex ivf("IVF([0-9]+)(\\(soar\\))?,(.+)");
  static const std::regex flat("Flat(?:\\(([a-z0-9]+)\\))?");
  static const std::regex graph(
      "Graph([0-9]+)(?:\\(([a-z0-9]+)\\))?(?:,(?:PQ([0-9]+)(?:x([0-9]+))?|(RaBitQ)))?");
  const std::string spec = trimmed(text);
  IndexSpec out;
  std::string body = spec;
  std::smatch g;
  size_t opq_m = 0;
  if (std::regex_match(spec, g, opq)) {
    out.opq = true;
    opq_m = number(g[1]);
    body = trimmed(g[2]);
  }
  if (std::smatch r; std::regex_match(body, r, refine)) {
    out.refine = true;
    out.refine_storage = r[3].matched ? Storage::f32 : storage_of(spec, r[2], "refine storage");
    body = trimmed(r[1]);
  }
  std::smatch iv;
  const bool is_ivf = std::regex_match(body, iv, ivf);
  const std::string inner = is_ivf ? trimmed(iv[3]) : body;
  if (is_ivf) out.nlist = number(iv[1]);
  if (parse_rbe(spec, inner, out)) {
    out.family = is_ivf ? IndexSpec::Family::ivf_rbe : IndexSpec::Family::rbe;
    if (out.opq) bad(spec, "OPQ<m>, precedes a PQ or IVF-PQ spec");
    if (is_ivf && iv[2].matched) bad(spec, "(soar) is for IVF-PQ specs");
    return out;
  }
  if (out.refine && !is_ivf && body.compare(0, 2, "PQ") != 0)
    bad(spec, "Refine(...) follows a PQ, IVF-PQ or RBE spec");
  if (is_ivf) {
    if (!parse_pq(spec, inner, out))
      bad(spec, "'IVF<nlist>,' must be followed by 'PQ<m>x<nbits>' or 'PQ<m>x4fs'");
    out.family = IndexSpec::Family::ivf_pq;
    out.soar = iv[2].matched;
  } else if (std::regex_match(body, g, graph)) {
    if (out.opq) bad(spec, "a Graph spec takes no OPQ or Refine part");
    out.family = IndexSpec::Family::graph;
    out.degree = number(g[1]);
    out.storage = storage_of(spec, g[2], "storage");
    out.m = number(g[3]);
    out.nbits = g[4].matched ? number(g[4]) : 4;
    out.rabitq = g[5].matched;
    if (g[3].matched && (out.m < 1 || (out.nbits != 4 && out.nbits != 8)))
      bad(spec, "a Graph's codes are 'PQ<m>x4', 'PQ<m>x8' (m dividing dim) or 'RaBitQ'");
    return out;
  } else if (std::regex_match(body, g, flat)) {
    if (out.opq) bad(spec, "OPQ<m>, precedes a PQ or IVF-PQ spec");
    out.family = IndexSpec::Family::flat;
    out.storage = storage_of(spec, g[1], "storage");
    return out;
  } else if (parse_pq(spec, body, out)) {
    out.family = IndexSpec::Family::pq;
  } else {
    bad(spec, std::string("unknown index spec; supported: 'Flat', 'Flat(<storage>)' with storage "
                          "in ") + kStorages + ", 'PQ<m>x<nbits>', 'PQ<m>x4fs', "
              "'IVF<nlist>,PQ<m>x<nbits>[fs]', each PQ spec optionally followed by "
              "',Refine(<storage>)' and optionally preceded by 'OPQ<m>,', "
              "'RBE<bits>x<planes>', 'Graph<degree>[(<storage>)][,PQ<m>x4|,RaBitQ]'");
  }
  if (out.opq && opq_m != out.m)
    bad(spec, "OPQ" + std::to_string(opq_m) + " must match the PQ's m (PQ" +
                  std::to_string(out.m) + "); the rotation is learned for that PQ");
  return out;
}

std::shared_ptr<Index> index_factory(size_t dim, const std::string& text, Metric metric) {
  const IndexSpec s = parse_index_spec(text);
  if (s.opq)
    throw std::invalid_argument(
        "index spec '" + text + "': OPQ rotations are learned by quanta.index_factory in Python "
        "(NumPy); natively, wrap a trained index in PreTransformIndex(rotation, index)");
  using F = IndexSpec::Family;
  const auto flat = [&](Storage storage) {
    return std::make_shared<FlatIndex>(dim, metric, storage, F8Scale::global, true);
  };
  std::shared_ptr<Index> base;
  switch (s.family) {
    case F::flat:
      return flat(s.storage);
    case F::graph: {
      GraphBuildParams b;
      b.degree = s.degree;
      b.pq_m = s.m;
      b.pq_nbits = s.m ? s.nbits : 4;
      b.rabitq = s.rabitq;
      return std::make_shared<GraphIndex>(flat(s.storage), b);
    }
    case F::pq:
      base = s.fast_scan ? std::shared_ptr<Index>(std::make_shared<PQFastScanIndex>(dim, s.m, metric))
                         : std::make_shared<PQIndex>(dim, s.m, s.nbits, metric);
      break;
    case F::ivf_pq:
      base = std::make_shared<IVFPQIndex>(dim, s.nlist, s.m, s.nbits, metric, s.fast_scan,
                                          !s.fast_scan, s.soar);
      break;
    case F::rbe:
    case F::ivf_rbe: {
      const size_t levels = s.planes - 1;
      const size_t qlevels = s.query_planes ? s.query_planes - 1 : default_query_levels(s.bits, levels);
      if (s.family == F::rbe)
        base = std::make_shared<BinaryIndex>(dim, s.bits, levels, qlevels, metric, "auto");
      else
        base = std::make_shared<IVFBinaryIndex>(dim, s.nlist, s.bits, levels, qlevels, metric,
                                                "auto");
      break;
    }
  }
  if (!s.refine) return base;
  return std::make_shared<RefineIndex>(base, flat(s.refine_storage), kRefineFactor);
}

}  // namespace quanta
