#include "quanta/index/graph_index.hpp"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <string>

#include "quanta/codec/fast_scan_codes.hpp"
#include "quanta/core/error.hpp"
#include "quanta/core/parallel.hpp"
#include "quanta/core/range_hits.hpp"
#include "quanta/core/rows.hpp"
#include "quanta/simd/dispatch.hpp"

namespace quanta {

// Visited marks: an epoch per vertex, so starting a search costs nothing (hnswlib's
// VisitedList).
struct VisitedMarks {
  std::vector<uint16_t> mark;
  uint16_t epoch = 0;
  void start(size_t n) {
    if (mark.size() < n) {
      mark.assign(n, 0);
      epoch = 0;
    }
    if (++epoch == 0) {  // wrapped: clear once every 65,535 searches
      std::fill(mark.begin(), mark.end(), 0);
      epoch = 1;
    }
  }
  bool first_visit(uint32_t v) {
    if (mark[v] == epoch) return false;
    mark[v] = epoch;
    return true;
  }
};

namespace {

constexpr size_t kLockStripes = 4096;  // vertex v's list is guarded by lock v % kLockStripes
constexpr size_t kMedoidChunk = 4096;

bool closer(float da, uint32_t a, float db, uint32_t b) { return da < db || (da == db && a < b); }

// -- the beam ---------------------------------------------------------------------------------

// The new neighbours of one expansion, kept sorted closest first as they are added (a few
// to a few tens), to join the beam in one merge.
struct Candidates {
  float d[GraphIndex::kMaxDegree];
  uint32_t id[GraphIndex::kMaxDegree];
  size_t n = 0;
  void add(float dd, uint32_t u) {
    size_t at = n++;
    for (; at > 0 && closer(dd, u, d[at - 1], id[at - 1]); --at) {
      d[at] = d[at - 1];
      id[at] = id[at - 1];
    }
    d[at] = dd;
    id[at] = u;
  }
};

// The beam of a search: the `width` closest vertices met so far, ascending (ties by id), each
// marked once expanded, in arrays by field. An expansion's new neighbours join in one merge
// from the back, branch-free: inserting them one at a time (a scan for the place, then a
// memmove of each field) cost 1.05-1.15x the search time at widths 48-128.
struct Beam {
  std::vector<float> d;
  std::vector<uint32_t> id;
  std::vector<uint8_t> expanded;
  size_t size = 0, width = 0;
  void start(size_t w) {
    width = w;
    size = 0;
    if (d.size() < w) {
      d.resize(w);
      id.resize(w);
      expanded.resize(w);
    }
  }
  bool full() const { return size == width; }
  // Whether (dd, u) would join the beam now (then or later: the last entry only gets closer).
  bool admits(float dd, uint32_t u) const {
    return size < width || closer(dd, u, d[size - 1], id[size - 1]);
  }
  // The entry vertex, the first in an empty beam.
  void seed(float dd, uint32_t u) {
    d[0] = dd;
    id[0] = u;
    expanded[0] = 0;
    size = 1;
  }
  // Merges candidates none of which is in the beam: the beam keeps the `width` closest of
  // both, the same as inserting them one by one, but moves each entry once. Returns the
  // position of the closest candidate kept (size when none is).
  size_t merge(const Candidates& c) {
    const float* cd = c.d;
    const uint32_t* cid = c.id;
    const size_t nc = c.n;
    const size_t total = std::min(width, size + nc);
    ptrdiff_t i = ptrdiff_t(size) - 1, j = ptrdiff_t(nc) - 1;
    // Branch-free steps (which side moves is data): the beam's entry at i moves when the
    // candidate at j is closer than it.
    const auto beam_moves = [&]() {
      const size_t ic = size_t(std::max<ptrdiff_t>(i, 0));
      return i >= 0 && (j < 0 || closer(cd[j], cid[j], d[ic], id[ic]));
    };
    for (size_t drop = size + nc - total; drop > 0; --drop) {  // the farthest of both go
      const bool b = beam_moves();
      i -= b;
      j -= !b;
    }
    size_t first = total;
    for (ptrdiff_t w = ptrdiff_t(total) - 1; j >= 0; --w) {
      const bool b = beam_moves();
      const size_t ic = size_t(std::max<ptrdiff_t>(i, 0));
      d[w] = b ? d[ic] : cd[j];
      id[w] = b ? id[ic] : cid[j];
      expanded[w] = b ? expanded[ic] : 0;
      first = b ? first : size_t(w);
      i -= b;
      j -= !b;
    }
    size = total;
    return first;
  }
  // The first unexpanded position at or after `from` (size when none).
  size_t next_unexpanded(size_t from) const {
    while (from < size && expanded[from]) ++from;
    return from;
  }
};

}  // namespace

// What a search or an insertion uses besides its locals, kept for the next one, so that a
// search of one query allocates nothing: a search takes one from the pool and gives it back.
struct SearchScratch {
  VisitedMarks marks;
  Beam beam;
  std::vector<float> query, scaled;  // the query as the beam scores it (BeamQuery)
  std::vector<float> tables;         // a query's code tables and their ranges (CodeQuery)
  std::vector<uint8_t> lut;          // their 8-bit form
  std::vector<std::pair<float, uint32_t>> results;
};

class ScratchPool {
 public:
  std::unique_ptr<SearchScratch> take() {
    std::lock_guard<std::mutex> lock(mutex_);
    if (free_.empty()) return std::make_unique<SearchScratch>();
    auto m = std::move(free_.back());
    free_.pop_back();
    return m;
  }
  void give(std::unique_ptr<SearchScratch> m) {
    std::lock_guard<std::mutex> lock(mutex_);
    free_.push_back(std::move(m));
  }

 private:
  std::mutex mutex_;
  std::vector<std::unique_ptr<SearchScratch>> free_;
};

namespace {

// A SearchScratch from the pool for one scope.
struct Borrowed {
  ScratchPool& pool;
  std::unique_ptr<SearchScratch> scratch;
  explicit Borrowed(ScratchPool& p) : pool(p), scratch(p.take()) {}
  ~Borrowed() { pool.give(std::move(scratch)); }
  SearchScratch& operator*() { return *scratch; }
  SearchScratch* operator->() { return scratch.get(); }
};

// A vertex's lock during a parallel build (no lock when the build runs on one thread).
std::unique_lock<std::mutex> lock_of(std::vector<std::mutex>* locks, uint32_t v) {
  return locks ? std::unique_lock<std::mutex>((*locks)[v % locks->size()])
               : std::unique_lock<std::mutex>();
}

// Greedy best-first search from `entry`: the closest unexpanded vertex of the beam is expanded
// next, its unvisited neighbours scored together by dist(ids, n, out) and reported to
// on(v, d). Vertex v's list is adj + v * stride. With locks (a parallel build) a list is
// copied under its vertex's lock.
template <class Dist, class On>
void run_beam(const uint32_t* adj, size_t stride, size_t degree, size_t rows, uint32_t entry,
              size_t width,
              Dist&& dist, On&& on, VisitedMarks& marks, Beam& beam,
              std::vector<std::mutex>* locks) {
  beam.start(width);
  marks.start(rows);
  marks.first_visit(entry);
  float d0;
  dist(&entry, size_t(1), &d0);
  on(entry, d0);
  beam.seed(d0, entry);
  uint32_t nb[GraphIndex::kMaxDegree];
  Candidates cand;
  float nd[GraphIndex::kMaxDegree];
  size_t cur = 0;
  while (cur < beam.size) {
    const uint32_t v = beam.id[cur];
    beam.expanded[cur] = 1;
    // The list most likely expanded next (the next unexpanded one) is asked for now.
    const size_t ahead = beam.next_unexpanded(cur + 1);
    if (ahead < beam.size) prefetch_l2(adj + size_t(beam.id[ahead]) * stride, degree * 4);
    size_t cnt = 0;
    {
      const auto lock = lock_of(locks, v);
      const uint32_t* row = adj + size_t(v) * stride;
      for (size_t j = 0; j < degree; ++j) {
        const uint32_t u = row[j];
        if (u == GraphIndex::kNone) break;
        if (u < rows && marks.first_visit(u)) nb[cnt++] = u;
      }
    }
    dist(nb, cnt, nd);
    cand.n = 0;
    for (size_t i = 0; i < cnt; ++i) {
      on(nb[i], nd[i]);
      if (beam.admits(nd[i], nb[i])) cand.add(nd[i], nb[i]);
    }
    cur = beam.next_unexpanded(std::min(cur + 1, beam.merge(cand)));
  }
}

constexpr float kInf = std::numeric_limits<float>::infinity();

// Estimated beam distances of neighbours from their PQ codes (one ADC table per query), and
// the choice of which to score exactly: those whose estimate, less a margin of `slack` times
// the mean estimation error seen so far in this search, is below the beam's limit.
class Estimator {
 public:
  Estimator(const ProductQuantizer* pq, const uint8_t* codes, const float* q, float qnorm,
            bool l2, float slack)
      : pq_(pq), codes_(codes), qnorm_(qnorm), l2_(l2), slack_(slack) {
    if (!pq_) return;
    table_.resize(pq_->m() * pq_->ksub());
    pq_->distance_tables(q, 1, l2, table_.data());
    gathered_.resize(GraphIndex::kMaxDegree * pq_->code_size());
  }
  // The ids (of n) worth scoring exactly, in order, into sel; returns how many.
  size_t select(const uint32_t* ids, size_t n, float limit, uint32_t* sel) {
    const size_t cs = pq_->code_size();
    for (size_t j = 0; j < n; ++j)
      std::copy_n(codes_ + size_t(ids[j]) * cs, cs, gathered_.data() + j * cs);
    pq_->scan(table_.data(), gathered_.data(), n, est_);
    const float margin = seen_ ? slack_ * float(err_ / double(seen_)) : kInf;
    size_t ns = 0;
    for (size_t j = 0; j < n; ++j) {
      est_[j] = l2_ ? est_[j] - qnorm_ : -est_[j];  // ADC value -> beam distance
      if (limit == kInf || est_[j] - margin < limit) {
        sel_est_[ns] = est_[j];
        sel[ns++] = ids[j];
      }
    }
    return ns;
  }
  // The exact distances of the last selection: their errors tune the margin.
  void learn(const float* exact, size_t n) {
    for (size_t j = 0; j < n; ++j) err_ += std::fabs(double(exact[j]) - sel_est_[j]);
    seen_ += n;
  }

 private:
  const ProductQuantizer* pq_;
  const uint8_t* codes_;
  float qnorm_;
  bool l2_;
  float slack_;
  std::vector<float> table_;
  std::vector<uint8_t> gathered_;
  float est_[GraphIndex::kMaxDegree];
  float sel_est_[GraphIndex::kMaxDegree];
  double err_ = 0;
  size_t seen_ = 0;
};

// One query as the beam scores it: normalized for cosine, |q|^2 kept for l2, in the row
// kernels' form; exact() gives beam distances, -score (l2: |x|^2 - 2 <q, x>; ip / cosine:
// -<q, x>).
class BeamQuery {
 public:
  // The query and its kernel form are kept in s's buffers.
  BeamQuery(const FlatIndex& vectors, const float* q, SearchScratch& s) : v_(vectors) {
    l2_ = v_.metric() == Metric::l2;
    qv_ = q;
    if (v_.metric() == Metric::cosine) {
      s.query.assign(q, q + v_.dim());
      normalize_rows(s.query.data(), 1, s.query.size());
      qv_ = s.query.data();
    }
    qnorm_ = l2_ ? float(sq_norm(qv_, v_.dim())) : 0.0f;
    kq_ = v_.kernel_query(qv_, s.scaled);
  }
  BeamQuery(const BeamQuery&) = delete;
  BeamQuery& operator=(const BeamQuery&) = delete;
  const float* values() const { return qv_; }
  float qnorm() const { return qnorm_; }
  void exact(const uint32_t* ids, size_t n, float* out) {
    v_.dot_positions(kq_, ids, n, dots_);
    const Buffer<float>& sq = v_.sq_norms();
    for (size_t j = 0; j < n; ++j) out[j] = l2_ ? sq[ids[j]] - 2.0f * dots_[j] : -dots_[j];
  }

 private:
  const FlatIndex& v_;
  const float* qv_;
  const float* kq_;
  float qnorm_;
  bool l2_;
  float dots_[GraphIndex::kMaxDegree];
};

// A query's fast-scan table for the neighbours' 4-bit codes: estimate(sum) approximates the
// beam distance (see BeamQuery::exact) of a neighbour whose table entries add up to `sum`.
// RaBitQ codes: the sum estimates <P q, sign code>, and a neighbour's beam distance is
// estimate(sum, b, a), with its row's factors a (l2: |x|^2, else 0) and b. The tables are
// built in s's buffers, and the 8-bit table kept there.
class CodeQuery {
 public:
  CodeQuery(const ProductQuantizer& pq, const float* q, bool l2, float qnorm, SearchScratch& s) {
    const size_t m = pq.m();
    s.tables.resize(m * 18 + (l2 ? 0 : pq.dim()));  // tables, their ranges (quantize), -q
    float* t = s.tables.data();
    if (!l2) {  // inner products: tables of -q, so that smaller is better
      float* neg = t + m * 18;
      for (size_t p = 0; p < pq.dim(); ++p) neg[p] = -q[p];
      q = neg;
    }
    pq.distance_tables(q, 1, l2, t);
    quantize(s, m);
    if (l2) bias_ -= qnorm;  // |q - x|^2 - |q|^2
  }
  CodeQuery(const RaBitQCodes& rq, const float* q, bool l2, SearchScratch& s) {
    s.tables.resize(rq.m() * 18);
    const float center_dot = rq.tables(q, s.tables.data());
    quantize(s, rq.m());
    offset_ = (l2 ? -2.0f : -1.0f) * center_dot;  // the centre's share of -<q, x> (x2 for l2)
  }
  const uint8_t* lut() const { return lut_; }
  float estimate(uint16_t sum) const { return float(sum) / scale_ + bias_; }
  // RaBitQ: the beam distance of a neighbour with factors b and a (l2's |x|^2, else 0).
  float estimate(uint16_t sum, float b, float a) const {
    return a + b * (float(sum) * (1.0f / scale_) + bias_) + offset_;
  }
  // The largest sum whose estimate is at most d.
  uint16_t limit(float d) const {
    const double s = std::floor((double(d) - bias_) * scale_);
    return uint16_t(std::clamp(s, 0.0, 65535.0));
  }

 private:
  // The m tables of 16 at s.tables, their ranges after them, to 8 bits in s.lut.
  void quantize(SearchScratch& s, size_t m) {
    float* t = s.tables.data();
    float *lo = t + m * 16, *hi = lo + m;
    kernels(active_isa()).row16_minmax(t, m, lo, hi);
    s.lut.resize(fast_scan::block_bytes(m));
    fast_scan::quantize_tables(t, lo, hi, 1, m, s.lut.data(), &scale_, &bias_);
    lut_ = s.lut.data();
  }
  const uint8_t* lut_ = nullptr;
  float scale_ = 1, bias_ = 0, offset_ = 0;
};

// What the search reads: each vertex's row (its list, then its neighbours' codes: see
// GraphIndex::neighbour_codes) and its vector.
struct Rows {
  const uint8_t* rows;  // row_bytes per vertex
  size_t degree, row_bytes, npairs, block_bytes, n;
  const FlatIndex& vectors;
  size_t factors = 0;  // RaBitQ codes: floats per slot after the codes (b, then l2's a)
};

// SymphonyQG's search: the beam is ordered by estimated distances. Expanding a vertex scores
// it exactly (reported to on(v, d)) and estimates all its neighbours with one fast-scan call
// over the codes in its row; those whose estimate can enter the beam join it. A code's
// estimate does not depend on the row it is read from, so a neighbour is marked visited
// once it has passed that test (failing it, it would fail again: the beam only tightens).
template <class On>
void run_code_beam(const Rows& g, uint32_t entry, size_t width, BeamQuery& query,
                   const CodeQuery& cq, On&& on, VisitedMarks& marks, Beam& beam) {
  const Kernels& kern = kernels(active_isa());
  const size_t nblocks = (g.degree + fast_scan::kBlock - 1) / fast_scan::kBlock;
  const uint8_t* lut = cq.lut();
  uint16_t sums[GraphIndex::kMaxDegree];
  float est[GraphIndex::kMaxDegree];
  Candidates cand;
  uint32_t below[GraphIndex::kMaxDegree / fast_scan::kBlock];
  beam.start(width);
  marks.start(g.n);
  marks.first_visit(entry);
  float d;
  query.exact(&entry, 1, &d);
  beam.seed(d, entry);
  // A vertex's vector, list and codes are asked for one expansion ahead: the next vertex
  // but one in the beam, which is most often expanded next but one.
  uint32_t fetched = GraphIndex::kNone;
  const auto fetch = [&](uint32_t w) {
    if (w == fetched) return;
    fetched = w;
    g.vectors.prefetch(w);
    prefetch_l2(g.rows + size_t(w) * g.row_bytes, g.row_bytes);
  };
  size_t cur = 0;
  uint32_t prev = GraphIndex::kNone;
  float prev_d = 0;
  while (cur < beam.size) {
    const uint32_t v = beam.id[cur];
    beam.expanded[cur] = 1;
    const size_t ahead = beam.next_unexpanded(cur + 1);
    if (ahead < beam.size) fetch(beam.id[ahead]);
    // The exact score is reported one expansion later: its vector may still be on the way,
    // and nothing until then waits for it (1.03-1.05x the QPS at widths 16-48).
    if (prev != GraphIndex::kNone) on(prev, prev_d);
    query.exact(&v, 1, &prev_d);
    prev = v;
    const float dlimit = beam.full() ? beam.d[beam.size - 1] : kInf;
    const uint8_t* vrow = g.rows + size_t(v) * g.row_bytes;
    const uint8_t* codes = vrow + g.degree * sizeof(uint32_t);
    if (g.factors == 0) {  // the estimate is monotone in the sum: the kernel tests the limit
      const uint16_t limit = beam.full() ? cq.limit(dlimit) : uint16_t(65535);
      kern.pq4_accumulate(codes, nblocks, g.npairs, &lut, 1, &limit, sums, below);
    } else {  // each slot's own factors: every sum, then the float estimates tested
      const uint16_t all = 65535;
      kern.pq4_accumulate(codes, nblocks, g.npairs, &lut, 1, &all, sums, below);
      // rows are whole floats and uint32s from an aligned start (see GraphIndex::lists)
      const float* fb = reinterpret_cast<const float*>(codes + nblocks * g.block_bytes);
      const float* a = g.factors == 2 ? fb + g.degree : nullptr;
      for (size_t j = 0; j < g.degree; ++j) est[j] = cq.estimate(sums[j], fb[j], a ? a[j] : 0.0f);
      std::fill_n(below, nblocks, 0u);
      for (size_t j = 0; j < g.degree; ++j)
        below[j / fast_scan::kBlock] |= uint32_t(est[j] <= dlimit) << (j % fast_scan::kBlock);
    }
    cand.n = 0;  // the new neighbours below the limit
    for (size_t b = 0; b < nblocks; ++b)
      for (uint32_t bits = below[b]; bits; bits &= bits - 1) {
        const size_t j = fast_scan::kBlock * b + size_t(__builtin_ctz(bits));
        if (j >= g.degree) break;
        uint32_t u;
        std::memcpy(&u, vrow + j * sizeof(uint32_t), sizeof u);
        if (u >= g.n || !marks.first_visit(u)) continue;  // an empty slot is kNone >= n
        cand.add(g.factors ? est[j] : cq.estimate(sums[j]), u);
      }
    // The closest newcomer, when it goes before `ahead`, is expanded next: asked for now,
    // not after the merge (1.04-1.10x the QPS on 120k MiniLM vectors).
    if (cand.n > 0 &&
        (ahead >= beam.size || closer(cand.d[0], cand.id[0], beam.d[ahead], beam.id[ahead])))
      fetch(cand.id[0]);
    cur = beam.next_unexpanded(std::min(cur + 1, beam.merge(cand)));
    if (cur < beam.size) fetch(beam.id[cur]);  // a vertex that just joined
  }
  if (prev != GraphIndex::kNone) on(prev, prev_d);
}

// The pivot whose estimate is best (the first of equal ones).
uint32_t closest_pivot(const GraphPivots& p, const CodeQuery& cq, size_t npairs,
                       size_t nfactors) {
  const size_t np = p.ids.size(), nblocks = (np + fast_scan::kBlock - 1) / fast_scan::kBlock;
  uint16_t sums[GraphIndex::kPivots];
  uint32_t below[GraphIndex::kPivots / fast_scan::kBlock];
  const uint8_t* lut = cq.lut();
  const uint16_t all = 65535;
  kernels(active_isa()).pq4_accumulate(p.blocks.data(), nblocks, npairs, &lut, 1, &all, sums,
                                       below);
  size_t best = 0;
  if (nfactors == 0) {  // the estimate grows with the sum
    for (size_t t = 1; t < np; ++t) best = sums[t] < sums[best] ? t : best;
    return p.ids[best];
  }
  const float* a = nfactors == 2 ? p.factors.data() + np : nullptr;
  float best_d = kInf;
  for (size_t t = 0; t < np; ++t) {
    const float d = cq.estimate(sums[t], p.factors[t], a ? a[t] : 0.0f);
    if (d < best_d) best_d = d, best = t;
  }
  return p.ids[best];
}

}  // namespace

GraphIndex::GraphIndex(std::shared_ptr<FlatIndex> vectors, GraphBuildParams build)
    : vectors_(std::move(vectors)), build_(build), scratch_(std::make_unique<ScratchPool>()) {
  require(vectors_ != nullptr, "GraphIndex: vectors must be a FlatIndex");
  require(build_.degree >= 2 && build_.degree <= kMaxDegree,
          "degree must be in [2, " + std::to_string(kMaxDegree) + "]; got " +
              std::to_string(build_.degree));
  require(build_.build_width >= 1, "build_width must be >= 1");
  require(std::isfinite(build_.alpha) && build_.alpha >= 1.0f,
          "alpha must be a finite number >= 1; got " + std::to_string(build_.alpha));
  if (build_.pq_m) {
    require(dim() % build_.pq_m == 0, "codes: PQ m = " + std::to_string(build_.pq_m) +
                                          " must divide dim = " + std::to_string(dim()));
    // 4-bit sums of 255 per sub-quantizer stay within uint16 up to 257 of them.
    require(build_.pq_nbits != 4 || build_.pq_m <= 256,
            "codes: PQ<m>x4 takes m <= 256; got " + std::to_string(build_.pq_m));
    require(!build_.rabitq, "codes: PQ or RaBitQ, not both");
    pq_ = std::make_unique<ProductQuantizer>(dim(), build_.pq_m, build_.pq_nbits);
  }
  if (build_.rabitq) {
    require(dim() % 4 == 0 && dim() / 4 <= 256,
            "codes: RaBitQ takes dim a multiple of 4, at most 1024; got " + std::to_string(dim()));
    rabitq_ = std::make_unique<RaBitQCodes>(dim());
  }
}

GraphIndex::~GraphIndex() = default;

size_t GraphIndex::memory_usage() const {
  return vectors_->memory_usage() + adj_.size() * sizeof(uint32_t) +
         norms_.size() * sizeof(float) + codes_.size() + nbr_codes_.size() + pivots_.bytes() +
         (pq_ ? pq_->centroids().size() : rabitq_ ? rabitq_->state_size() : 0) * sizeof(float);
}

std::vector<float> GraphIndex::codec_state() const {
  return pq_ ? pq_->centroids() : rabitq_ ? rabitq_->state() : std::vector<float>();
}

size_t GraphIndex::code_bytes() const {
  if (rabitq_) return rabitq_->code_size() + factors_per_slot() * sizeof(float);
  return pq_ ? pq_->code_size() : 0;
}

namespace {

// The rows as the codes see them: normalized for cosine (as the stored vectors are).
std::vector<float> metric_rows(const float* x, size_t n, size_t dim, Metric metric) {
  std::vector<float> rows(x, x + n * dim);
  if (metric == Metric::cosine) normalize_rows(rows.data(), n, dim);
  return rows;
}

}  // namespace

void GraphIndex::train(const float* x, size_t n, int threads) {
  require(n > 0, "train: got 0 training vectors; pass at least one row");
  require_finite(x, n * dim(), "train: x");
  require(rows() == 0, "train: the index holds " + std::to_string(rows()) +
                           " vectors; call reset() first (or train a new index)");
  if (pq_)
    require(n >= pq_->ksub(), "train: the codes' quantizer needs at least " +
                                  std::to_string(pq_->ksub()) + " vectors");
  vectors_->train(x, n);
  if (pq_) {
    KMeansParams kp;
    kp.threads = threads;
    kp.assign_all = false;
    const std::vector<float> rows = metric_rows(x, n, dim(), metric());
    pq_->train(rows.data(), n, kp);
  }
  if (rabitq_) {
    const std::vector<float> rows = metric_rows(x, n, dim(), metric());
    rabitq_->train(rows.data(), n, 0);
  }
}

// -- build --------------------------------------------------------------------------------------

std::vector<GraphIndex::Scored> GraphIndex::by_distance(uint32_t v, const uint32_t* ids,
                                                         size_t n) const {
  std::vector<float> x(dim()), scaled, dots(n);
  vectors_->decode(v, x.data());
  vectors_->dot_positions(vectors_->kernel_query(x.data(), scaled), ids, n, dots.data());
  std::vector<Scored> out(n);
  for (size_t j = 0; j < n; ++j) out[j] = {norms_[v] + norms_[ids[j]] - 2.0f * dots[j], ids[j]};
  std::sort(out.begin(), out.end(),
            [](const Scored& a, const Scored& b) { return closer(a.d, a.id, b.d, b.id); });
  return out;
}

void GraphIndex::ensure_norms() {
  const size_t n0 = norms_.size(), n = rows();
  if (n0 >= n) return;
  norms_.resize(n);
  parallel_for((n - n0 + 1023) / 1024, 0, [&](size_t t, size_t) {
    std::vector<float> row(dim());
    for (size_t v = n0 + t * 1024; v < std::min(n, n0 + (t + 1) * 1024); ++v) {
      vectors_->decode(v, row.data());
      norms_[v] = float(sq_norm(row.data(), dim()));
    }
  });
}

size_t GraphIndex::row_code_bytes() const {
  return inline_codes() ? degree() * sizeof(uint32_t) +
                              (degree() + fast_scan::kBlock - 1) / fast_scan::kBlock *
                                  fast_scan::block_bytes(code_m()) +
                              degree() * factors_per_slot() * sizeof(float)
                        : 0;
}

void GraphIndex::gather_codes(const uint32_t* ids, size_t count, uint8_t* plain,
                              float* factors) const {
  const size_t n = rows(), cs = code_bytes(), pc = rabitq_ ? rabitq_->code_size() : cs;
  const size_t nf = factors_per_slot();
  const float scale = metric() == Metric::l2 ? -2.0f : -1.0f;  // see CodeQuery
  std::fill(plain, plain + count * pc, uint8_t(0));
  std::fill(factors, factors + count * nf, 0.0f);
  for (size_t j = 0; j < count; ++j) {
    if (ids[j] >= n) continue;
    const uint8_t* c = codes_.data() + size_t(ids[j]) * cs;
    std::copy_n(c, pc, plain + j * pc);
    for (size_t f = 0; f < nf; ++f) std::memcpy(&factors[f * count + j], c + pc + 4 * f, 4);
    if (nf) factors[j] *= scale;
  }
}

void GraphIndex::pack_rows(const uint8_t* changed) {
  const size_t n = rows(), R = degree(), m = code_m(), rb = row_code_bytes();
  const size_t pc = rabitq_ ? rabitq_->code_size() : code_bytes(), nf = factors_per_slot();
  const size_t at_factors = rb - R * nf * sizeof(float);
  const uint32_t* adj = adj_.data();
  nbr_codes_.edit([&](auto& out) {
    out.resize(n * rb);
    parallel_for((n + 255) / 256, 0, [&](size_t t, size_t) {
      std::vector<uint8_t> gathered(R * pc);
      std::vector<float> factors(R * nf);
      for (size_t v = t * 256; v < std::min(n, (t + 1) * 256); ++v) {
        if (changed && !changed[v]) continue;
        const uint32_t* row = adj + v * R;
        // An empty slot (or an id past the rows) gets code 0: the search skips its slot.
        gather_codes(row, R, gathered.data(), factors.data());
        uint8_t* dst = out.data() + v * rb;
        std::fill(dst, dst + rb, uint8_t(0));
        std::memcpy(dst, row, R * sizeof(uint32_t));
        fast_scan::pack(gathered.data(), R, m, 0, dst + R * sizeof(uint32_t));
        if (nf) std::memcpy(dst + at_factors, factors.data(), factors.size() * sizeof(float));
      }
    });
  });
}

// RobustPrune: cand sorted by distance to p (ascending) -> at most `degree` neighbours.
std::vector<uint32_t> GraphIndex::prune(uint32_t p, std::vector<Scored>& cand) const {
  std::vector<uint32_t> kept;
  std::vector<float> row(dim()), scaled, dots(degree());
  for (const Scored& c : cand) {
    if (kept.size() == degree()) break;
    if (c.id == p) continue;
    bool covered = false;
    if (!kept.empty()) {
      vectors_->decode(c.id, row.data());
      const float* kq = vectors_->kernel_query(row.data(), scaled);
      // Four kept neighbours at a time: a covering one is most often among the closest.
      for (size_t j0 = 0; j0 < kept.size() && !covered; j0 += 4) {
        const size_t nj = std::min<size_t>(4, kept.size() - j0);
        vectors_->dot_positions(kq, kept.data() + j0, nj, dots.data());
        for (size_t j = 0; j < nj && !covered; ++j) {
          const float dkc = norms_[kept[j0 + j]] + norms_[c.id] - 2.0f * dots[j];
          covered = build_.alpha * dkc <= c.d;
        }
      }
    }
    if (!covered) kept.push_back(c.id);
  }
  return kept;
}

// Adds `to` to the list of `from`, pruning the list when it is full.
void GraphIndex::link(uint32_t from, uint32_t to, const Edit& e) const {
  const auto lock = lock_of(e.locks, from);
  uint32_t* row = e.adj + size_t(from) * degree();
  size_t cnt = 0;
  while (cnt < degree() && row[cnt] != kNone) {
    if (row[cnt] == to) return;
    ++cnt;
  }
  e.changed[from] = 1;
  if (cnt < degree()) {
    row[cnt] = to;
    return;
  }
  std::vector<uint32_t> ids(row, row + cnt);
  ids.push_back(to);
  std::vector<Scored> cand = by_distance(from, ids.data(), ids.size());
  const std::vector<uint32_t> kept = prune(from, cand);
  std::fill(row, row + degree(), kNone);
  std::copy(kept.begin(), kept.end(), row);
}

void GraphIndex::insert(uint32_t p, const Edit& e) const {
  std::vector<float> x(dim()), scaled;
  vectors_->decode(p, x.data());
  const float* kq = vectors_->kernel_query(x.data(), scaled);
  const float pn = norms_[p];
  Borrowed scratch(*scratch_);
  Beam& beam = scratch->beam;
  std::vector<float> dots(kMaxDegree);
  std::vector<Scored> cand;  // with max_candidates: every vertex the search scored
  const size_t maxc = build_.max_candidates;
  run_beam(
      e.adj, degree(), degree(), rows(), entry_, build_.build_width,
      [&](const uint32_t* ids, size_t n, float* out) {
        vectors_->dot_positions(kq, ids, n, dots.data());
        for (size_t i = 0; i < n; ++i) out[i] = pn + norms_[ids[i]] - 2.0f * dots[i];
      },
      [&](uint32_t v, float d) {
        if (maxc && v != p) cand.push_back({d, v});
      },
      scratch->marks, beam, e.locks);
  if (maxc) {  // the max_candidates closest, ascending
    const auto cmp = [](const Scored& a, const Scored& b) { return closer(a.d, a.id, b.d, b.id); };
    if (cand.size() > maxc) {  // selection first: the search scores thousands
      std::nth_element(cand.begin(), cand.begin() + maxc, cand.end(), cmp);
      cand.resize(maxc);
    }
    std::sort(cand.begin(), cand.end(), cmp);
  } else {  // the beam, ascending already
    cand.resize(beam.size);
    for (size_t i = 0; i < cand.size(); ++i) cand[i] = {beam.d[i], beam.id[i]};
  }
  {
    // A vertex already in the graph (a refinement pass) keeps its list as candidates too.
    std::vector<uint32_t> own;
    {
      const auto lock = lock_of(e.locks, p);
      const uint32_t* row = e.adj + size_t(p) * degree();
      for (size_t j = 0; j < degree() && row[j] != kNone; ++j) own.push_back(row[j]);
    }
    if (!own.empty()) {
      std::vector<uint32_t> fresh;
      for (uint32_t u : own)
        if (std::none_of(cand.begin(), cand.end(), [&](const Scored& c) { return c.id == u; }))
          fresh.push_back(u);
      const std::vector<Scored> more = by_distance(p, fresh.data(), fresh.size());
      cand.insert(cand.end(), more.begin(), more.end());
      std::sort(cand.begin(), cand.end(),
                [](const Scored& a, const Scored& b) { return closer(a.d, a.id, b.d, b.id); });
    }
  }
  const std::vector<uint32_t> kept = prune(p, cand);
  if (e.spare) {
    uint32_t* spare = e.spare + (p - e.spare_from) * degree();
    size_t ns = 0;
    for (size_t i = 0; i < cand.size() && ns < degree(); ++i)
      if (cand[i].id != p && std::find(kept.begin(), kept.end(), cand[i].id) == kept.end())
        spare[ns++] = cand[i].id;
  }
  {
    const auto lock = lock_of(e.locks, p);
    uint32_t* row = e.adj + size_t(p) * degree();
    std::fill(row, row + degree(), kNone);
    std::copy(kept.begin(), kept.end(), row);
    e.changed[p] = 1;
  }
  for (uint32_t u : kept) link(u, p, e);
}

void GraphIndex::fill(size_t from, size_t to, const Edit& e) const {
  parallel_for(to - from, 0, [&](size_t i, size_t) {
    const size_t v = from + i;
    uint32_t* row = e.adj + v * degree();
    size_t cnt = 0;
    while (cnt < degree() && row[cnt] != kNone) ++cnt;
    const uint32_t* spare = e.spare + (v - e.spare_from) * degree();
    for (size_t j = 0; j < degree() && cnt < degree() && spare[j] != kNone; ++j)
      if (std::find(row, row + cnt, spare[j]) == row + cnt) {
        row[cnt++] = spare[j];
        e.changed[v] = 1;
      }
  });
}

// The live vertex closest to the mean of the live vectors: where every search starts.
uint32_t GraphIndex::medoid() const {
  const size_t n = rows(), d = dim();
  const Labels& labels = vectors_->labels();
  std::vector<double> mean(d, 0.0);
  std::vector<float> row(d);
  size_t live = 0;
  for (size_t v = 0; v < n; ++v) {
    if (!labels.live(v)) continue;
    vectors_->decode(v, row.data());
    for (size_t p = 0; p < d; ++p) mean[p] += row[p];
    ++live;
  }
  if (live == 0) return kNone;
  std::vector<float> m(d), scaled;
  for (size_t p = 0; p < d; ++p) m[p] = float(mean[p] / double(live));
  const float* kq = vectors_->kernel_query(m.data(), scaled);
  uint32_t best = kNone;
  float best_d = std::numeric_limits<float>::infinity();
  std::vector<uint32_t> ids;
  std::vector<float> dots(kMedoidChunk);
  for (size_t v0 = 0; v0 < n; v0 += kMedoidChunk) {
    ids.clear();
    for (size_t v = v0; v < std::min(n, v0 + kMedoidChunk); ++v)
      if (labels.live(v)) ids.push_back(uint32_t(v));
    vectors_->dot_positions(kq, ids.data(), ids.size(), dots.data());
    for (size_t i = 0; i < ids.size(); ++i) {
      const float dv = norms_[ids[i]] - 2.0f * dots[i];
      if (dv < best_d) best_d = dv, best = ids[i];
    }
  }
  return best;
}

void GraphIndex::choose_pivots() {
  pivots_ = GraphPivots();
  const size_t n = rows();
  if (!inline_codes() || entry_ == kNone || n < 4 * kPivots) return;
  // Evenly spaced live vertices (rows are in no particular order: a spread-out sample).
  const Labels& labels = vectors_->labels();
  std::vector<uint32_t>& ids = pivots_.ids;
  ids.push_back(entry_);
  for (size_t t = 1, v = 0; t < kPivots; ++t) {
    v = std::max(v, t * n / kPivots);
    while (v < n && (!labels.live(v) || v == entry_)) ++v;
    if (v == n) break;
    ids.push_back(uint32_t(v++));
  }
  const size_t np = ids.size(), pc = rabitq_ ? rabitq_->code_size() : code_bytes();
  std::vector<uint8_t> plain(np * pc);
  pivots_.factors.resize(np * factors_per_slot());
  gather_codes(ids.data(), np, plain.data(), pivots_.factors.data());
  pivots_.blocks.assign(fast_scan::bytes_for(np, code_m()), 0);
  fast_scan::pack(plain.data(), np, code_m(), 0, pivots_.blocks.data());
}

void GraphIndex::add(const float* x, size_t n, const int64_t* ids, int threads) {
  if (n == 0) return;
  threads = resolve_threads(threads);
  const size_t n0 = rows();
  require(n0 + n < size_t(kNone), "add: a graph index holds fewer than 2^32 - 1 vectors");
  require_finite(x, n * dim(), "add: x");
  std::vector<uint8_t> codes;
  if (pq_ || rabitq_) {  // encoded before anything changes: a failure leaves the index as it was
    if (!(pq_ ? pq_->is_trained() : rabitq_->is_trained())) train(x, n, threads);
    codes.resize(n * code_bytes());
    const std::vector<float> rows = metric_rows(x, n, dim(), metric());
    if (pq_) {
      pq_->encode(rows.data(), n, codes.data(), threads);
    } else {
      const size_t pc = rabitq_->code_size(), cs = code_bytes();
      std::vector<uint8_t> plain(n * pc);
      std::vector<float> factor(n);
      rabitq_->encode(rows.data(), n, plain.data(), factor.data(), threads);
      for (size_t i = 0; i < n; ++i) {
        uint8_t* c = codes.data() + i * cs;
        std::copy_n(&plain[i * pc], pc, c);
        std::memcpy(c + pc, &factor[i], sizeof(float));
        if (factors_per_slot() == 2) {  // l2: |x|^2
          const float sq = float(sq_norm(&rows[i * dim()], dim()));
          std::memcpy(c + pc + sizeof(float), &sq, sizeof(float));
        }
      }
    }
  }
  ensure_adjacency();
  uint32_t* adj = nullptr;
  adj_.edit([&](auto& a) {  // room first: a failure below leaves it unused
    a.resize((n0 + n) * degree(), kNone);
    adj = a.data();
  });
  try {
    vectors_->add(x, n, ids, threads);
  } catch (...) {
    adj_.edit([&](auto& a) { a.resize(n0 * degree()); });
    throw;
  }
  codes_.edit([&](auto& c) { c.insert(c.end(), codes.begin(), codes.end()); });
  if (inline_codes())
    nbr_codes_.edit([&](auto& c) { c.resize((n0 + n) * row_code_bytes(), 0); });
  ensure_norms();
  std::vector<std::mutex> locks(threads > 1 ? kLockStripes : 0);
  std::vector<uint8_t> changed(n0 + n, 0);
  // With 4-bit codes a row's every slot is estimated anyway: the slots RobustPrune leaves
  // empty are filled with the closest candidates it dropped in the last pass.
  std::vector<uint32_t> spare(inline_codes() ? n * degree() : 0, kNone);  // the new rows'
  Edit edit{adj, changed.data(), threads > 1 ? &locks : nullptr,
            inline_codes() && build_.refine == 0 ? spare.data() : nullptr, n0};
  size_t first = n0;
  if (entry_ == kNone) entry_ = uint32_t(first++);  // an empty graph: the first vertex starts it
  const size_t count = n0 + n - first;
  build_done_ = 0;
  build_total_ = count + build_.refine * n;
  // Consecutive vertices in one task keep a one-thread build in input order (deterministic).
  const auto insert_all = [&](size_t from, size_t m) {
    const size_t per_task = threads == 1 ? std::max<size_t>(m, 1) : 64;
    parallel_for((m + per_task - 1) / per_task, threads, [&](size_t t, size_t) {
      const size_t end = std::min(from + m, from + (t + 1) * per_task);
      for (size_t v = from + t * per_task; v < end; ++v) {
        insert(uint32_t(v), edit);
        build_done_.fetch_add(1, std::memory_order_relaxed);
      }
    });
  };
  insert_all(first, count);
  // The medoid costs a pass over every vector: chosen again once the graph grew by half.
  if (rows() >= medoid_rows_ + medoid_rows_ / 2) {
    entry_ = medoid();
    medoid_rows_ = rows();
  }
  // Refinement (Vamana's second pass): the new vertices search the graph again, now that it
  // holds all of them, and re-prune their lists with the old ones as candidates too.
  for (size_t pass = 0; pass < build_.refine; ++pass) {
    if (pass + 1 == build_.refine) edit.spare = spare.data();
    insert_all(n0, n);
  }
  if (inline_codes()) {
    fill(n0, n0 + n, edit);
    pack_rows(changed.data());
    drop_build_state();
  }
  choose_pivots();
}

void GraphIndex::reset() {
  vectors_->reset();
  adj_ = {};
  codes_ = {};
  nbr_codes_ = {};
  entry_ = kNone;
  medoid_rows_ = 0;
  pivots_ = GraphPivots();
  norms_.clear();
}

// -- search -------------------------------------------------------------------------------------

void GraphIndex::search(const float* q, size_t nq, const GraphSearchParams& params,
                        float* distances, int64_t* labels) const {
  const size_t k = params.k;
  require(k > 0, "search: k must be >= 1; got 0");
  require_finite(q, nq * dim(), "search: queries");
  if (nq == 0) return;
  const bool l2 = metric() == Metric::l2;
  const float pad = l2 ? std::numeric_limits<float>::infinity()
                       : -std::numeric_limits<float>::infinity();
  const Labels& lab = vectors_->labels();
  const bool checks = lab.checks(params.filter);
  const size_t width = std::max(params.width, k), n = rows();
  // A filter that allows few rows: the beam would wander through disallowed vertices; an
  // exact scan of the allowed rows is both faster and complete.
  const auto selective = [&](const IdFilter* f) {
    return f && f->max_allowed() <= std::max(width, n / 20);
  };
  parallel_for(nq, resolve_threads(params.threads), [&](size_t i, size_t) {
    float* D = distances + i * k;
    int64_t* I = labels + i * k;
    const IdFilter* f = params.filter.of(i);
    const auto exact_scan = [&]() {
      FlatSearchParams fp;
      fp.k = k;
      fp.threads = 1;
      if (f) fp.filter = QueryFilters({*f});
      vectors_->search(q + i * dim(), 1, fp, D, I);
    };
    if (selective(f)) return exact_scan();
    std::fill(D, D + k, pad);
    std::fill(I, I + k, int64_t(-1));
    if (entry_ == kNone || n == 0) return;
    Borrowed scratch(*scratch_);
    SearchScratch& sc = *scratch;
    BeamQuery query(*vectors_, q + i * dim(), sc);
    Beam& beam = sc.beam;
    const bool adc = pq_ && !inline_codes();  // 8-bit codes: ADC estimates, then a choice
    Estimator est(adc ? pq_.get() : nullptr, codes_.data(), query.values(), query.qnorm(), l2,
                  params.slack);
    const auto dist = [&](const uint32_t* ids, size_t m, float* out) {
      if (!adc) return query.exact(ids, m, out);
      // Once the beam is full, a neighbour whose estimate cannot enter it (with the margin
      // of the errors seen so far) is not scored: +inf, never admitted nor returned.
      const float limit = beam.full() ? beam.d[beam.size - 1] : kInf;
      uint32_t sel[kMaxDegree];
      float exact_d[kMaxDegree];
      const size_t ns = est.select(ids, m, limit, sel);
      query.exact(sel, ns, exact_d);
      est.learn(exact_d, ns);
      for (size_t j = 0, t = 0; j < m; ++j)
        out[j] = t < ns && sel[t] == ids[j] ? exact_d[t++] : kInf;
    };
    // With 4-bit codes the beam holds estimates: the results are the vertices scored exactly.
    const bool collect = checks || inline_codes();
    auto& res = sc.results;  // allowed vertices, ascending, at most k
    res.clear();
    const auto on = [&](uint32_t v, float d) {
      if (d == kInf || !collect || (checks && !lab.allowed(v, f))) return;
      // (k >= 1: the emptiness test only tells the compiler that back() exists)
      if (res.size() == k && !res.empty() && !closer(d, v, res.back().first, res.back().second))
        return;
      const auto at = std::upper_bound(res.begin(), res.end(), std::make_pair(d, v),
                                       [](const auto& a, const auto& b) {
                                         return closer(a.first, a.second, b.first, b.second);
                                       });
      res.insert(at, {d, v});
      if (res.size() > k) res.pop_back();
    };
    if (inline_codes()) {
      const Rows g{nbr_codes_.data(), degree(), row_code_bytes(), fast_scan::npairs(code_m()),
                   fast_scan::block_bytes(code_m()), n, *vectors_, factors_per_slot()};
      const CodeQuery cq = rabitq_ ? CodeQuery(*rabitq_, query.values(), l2, sc)
                                   : CodeQuery(*pq_, query.values(), l2, query.qnorm(), sc);
      const uint32_t start = pivots_.ids.empty()
                                 ? entry_
                                 : closest_pivot(pivots_, cq, g.npairs, g.factors);
      run_code_beam(g, start, width, query, cq, on, sc.marks, beam);
    } else {
      const auto [adj, stride] = lists();
      run_beam(adj, stride, degree(), n, entry_, width, dist, on, sc.marks, beam, nullptr);
    }
    if (!collect)
      for (size_t j = 0; j < std::min(beam.size, k); ++j) res.emplace_back(beam.d[j], beam.id[j]);
    if (collect && res.size() < k && res.size() < ntotal())
      return exact_scan();  // the beam met fewer than k returnable vertices
    for (size_t j = 0; j < res.size(); ++j) {
      D[j] = l2 ? query.qnorm() + res[j].first : -res[j].first;
      I[j] = lab.at(int64_t(res[j].second));
    }
  });
}

RangeResult GraphIndex::range_search(const float* q, size_t nq, float radius,
                                     const SearchParams& params) const {
  require_finite(q, nq * dim(), "range_search: queries");
  require(std::isfinite(radius), "range_search: radius must be finite");
  const GraphSearchParams gp = params_as<GraphSearchParams>(params);
  const bool l2 = metric() == Metric::l2;
  const Labels& lab = vectors_->labels();
  std::vector<float> qnorms(nq, 0.0f);
  RangeHits hits(nq);
  const std::pair<const uint32_t*, size_t> adj = lists();  // (no structured binding: captured)
  parallel_for(nq, resolve_threads(gp.threads), [&](size_t i, size_t) {
    if (entry_ == kNone) return;
    Borrowed scratch(*scratch_);
    BeamQuery query(*vectors_, q + i * dim(), *scratch);
    qnorms[i] = query.qnorm();
    const IdFilter* f = gp.filter.of(i);
    // hits as scores (higher is better): l2 distance < radius <=> -d > |q|^2 - radius
    const float floor = l2 ? qnorms[i] - radius : radius;
    run_beam(
        adj.first, adj.second, degree(), rows(), entry_, gp.width,
        [&](const uint32_t* ids, size_t m, float* out) { query.exact(ids, m, out); },
        [&](uint32_t v, float d) {
          if (-d > floor && lab.allowed(v, f)) hits.add(i, -d, int64_t(v));
        },
        scratch->marks, scratch->beam, nullptr);
  });
  return hits.finish([&](size_t i, float s) { return l2 ? qnorms[i] - s : s; },
                     [&](int64_t pos) { return lab.at(pos); });
}

// -- removal and persistence --------------------------------------------------------------------

void GraphIndex::compact() {
  const Labels& lab = vectors_->labels();
  if (lab.removed() == 0) return;
  ensure_adjacency();
  ensure_norms();
  const size_t n = rows(), R = degree();
  const std::vector<size_t> keep = lab.live_positions(n);
  std::vector<uint32_t> new_pos(n, kNone);
  for (size_t i = 0; i < keep.size(); ++i) new_pos[keep[i]] = uint32_t(i);
  LargeVector<uint32_t> next(keep.size() * R, kNone);
  const uint32_t* adj = adj_.data();
  parallel_for(keep.size(), 0, [&](size_t i, size_t) {
    const uint32_t v = uint32_t(keep[i]);
    const uint32_t* row = adj + size_t(v) * R;
    std::vector<uint32_t> cand;
    bool lost = false;
    for (size_t j = 0; j < R && row[j] != kNone; ++j) {
      const uint32_t u = row[j];
      if (u >= n) continue;
      if (lab.live(u)) {
        cand.push_back(u);
        continue;
      }
      lost = true;  // route around u: its live neighbours become candidates
      for (size_t t = 0; t < R && adj[size_t(u) * R + t] != kNone; ++t) {
        const uint32_t w = adj[size_t(u) * R + t];
        if (w < n && w != v && lab.live(w)) cand.push_back(w);
      }
    }
    std::sort(cand.begin(), cand.end());
    cand.erase(std::unique(cand.begin(), cand.end()), cand.end());
    std::vector<uint32_t> kept = cand;
    if (lost) {
      std::vector<Scored> sc = by_distance(v, cand.data(), cand.size());
      kept = prune(v, sc);
    }
    for (size_t j = 0; j < kept.size() && j < R; ++j) next[i * R + j] = new_pos[kept[j]];
  });
  vectors_->compact();
  keep_rows(norms_, keep, 1);
  if (pq_ || rabitq_) codes_.edit([&](auto& c) { keep_rows(c, keep, code_bytes()); });
  adj_ = Buffer<uint32_t>(std::move(next));
  if (inline_codes()) pack_rows(nullptr);
  entry_ = medoid();
  medoid_rows_ = rows();
  drop_build_state();
  choose_pivots();
}

void GraphIndex::restore(Buffer<uint32_t> adjacency, uint32_t entry, Buffer<uint8_t> codes,
                         std::vector<float> codec_state, Buffer<uint8_t> neighbour_codes) {
  const size_t n = rows();
  require(pq_ || rabitq_ || codec_state.empty(),
          "corrupt index data: a codes' state without codes");
  if (!codec_state.empty()) {
    if (pq_) pq_->set_centroids(std::move(codec_state));
    else rabitq_->set_state(std::move(codec_state));
  }
  const bool coded = pq_ || rabitq_;
  require(coded ? (n == 0 || (pq_ ? pq_->is_trained() : rabitq_->is_trained())) &&
                      codes.size() == n * code_bytes()
                : codes.empty(),
          "corrupt index data: the estimation codes do not match the vectors");
  require(neighbour_codes.empty() || neighbour_codes.size() == n * row_code_bytes(),
          "corrupt index data: the neighbours' codes do not match the graph");
  require(adjacency.size() == n * degree(),
          "corrupt index data: the graph has " + std::to_string(adjacency.size()) +
              " neighbour slots, expected " + std::to_string(n) + " x " +
              std::to_string(degree()));
  require(n == 0 ? entry == kNone : entry < n, "corrupt index data: the entry vertex is out of range");
  adj_ = std::move(adjacency);
  codes_ = std::move(codes);
  nbr_codes_ = std::move(neighbour_codes);
  // Any byte is a valid code (a corrupt one only misleads the estimates): no check needed.
  if (inline_codes() && nbr_codes_.empty() && n > 0) pack_rows(nullptr);
  entry_ = entry;
  medoid_rows_ = n;
  norms_.clear();  // recomputed when a build step needs them
  drop_build_state();
  choose_pivots();
}

Buffer<uint32_t> GraphIndex::adjacency() const {
  if (!adj_.empty() || rows() == 0) return adj_;
  const auto [adj, stride] = lists();
  LargeVector<uint32_t> out(rows() * degree());
  for (size_t v = 0; v < rows(); ++v)
    std::memcpy(&out[v * degree()], adj + v * stride, degree() * sizeof(uint32_t));
  return Buffer<uint32_t>(std::move(out));
}

void GraphIndex::ensure_adjacency() {
  if (adj_.empty() && rows() > 0) adj_ = adjacency();
}

std::pair<const uint32_t*, size_t> GraphIndex::lists() const {
  if (!adj_.empty() || nbr_codes_.empty()) return {adj_.data(), degree()};
  // rows are whole uint32s (lists, 32-byte code blocks, float factors) and the array starts
  // aligned: owned, from the allocator; mapped, at a 64-byte offset of the file (quanta.io)
  return {reinterpret_cast<const uint32_t*>(nbr_codes_.data()),
          row_code_bytes() / sizeof(uint32_t)};
}

void GraphIndex::drop_build_state() {
  if (!inline_codes() || nbr_codes_.size() != rows() * row_code_bytes() || rows() == 0) return;
  adj_ = {};
  norms_ = std::vector<float>();
}

}  // namespace quanta
