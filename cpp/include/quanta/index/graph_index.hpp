// A proximity-graph index (one layer, as Vamana / NSG): each stored vector keeps up to
// `degree` neighbours chosen by RobustPrune (DiskANN): among the candidates found by a beam
// search, keep the closest c and drop every other c' with alpha * d(c, c') <= d(p, c') (with
// alpha = 1, HNSW's heuristic). Searches start from the medoid, so no upper layers. Vectors
// live in a FlatIndex (any storage) and are scored exactly as the search visits them.
//
// Build: points are inserted one at a time (many at once over threads: a lock per vertex
// stripe around its neighbour list): beam search for it from the entry point with
// `build_width` candidates, prune them to its list, then add it to each new neighbour's list,
// pruning a list that overflows; then `refine` passes in which the new points search the
// finished graph and choose their lists again. Geometry during the build is squared L2 over
// the stored vectors whatever the metric (equal to 2 - 2 cos for normalized vectors).
// Search: greedy best-first beam of `width` candidates from the entry point (the medoid),
// visited marks in a reusable epoch array, neighbours' rows prefetched together. With 4-bit
// codes (SymphonyQG's layout) the beam holds estimates read from the expanded vertex's row and
// only expanded vertices are scored exactly. Removed and
// filtered-out vertices still route but are never returned; a filter that allows few rows
// (fewer than the width, or under 5% of them) is answered by an exact scan of those rows.
#pragma once
#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <utility>
#include <vector>

#include "quanta/codec/pq.hpp"
#include "quanta/codec/rabitq_codes.hpp"
#include "quanta/core/buffer.hpp"
#include "quanta/core/index.hpp"
#include "quanta/core/search_params.hpp"
#include "quanta/index/flat.hpp"

namespace quanta {

struct GraphBuildParams {
  size_t degree = 32;        // neighbours kept per vertex
  size_t build_width = 128;  // beam of the insertion search
  // RobustPrune's slack (>= 1; on squared distances). 1 is HNSW's neighbour heuristic: on
  // clustered 128-d data (50k, degree 32, width 128) it reached recall@10 0.998 at search
  // width 64 where 1.2 reached 0.977 and 1.4 0.882 (larger alphas fill the lists with near
  // points and the reverse-edge pruning then drops the long ones).
  float alpha = 1.0f;
  // Refinement passes after the insertions: each new vertex searches the finished graph again
  // and re-prunes its list from what it finds and what it had (Vamana's second pass). On
  // clustered 384-d data (50k, degree 32) one pass raised recall@10 at search width 32 from
  // 0.947 to 0.971 (exact scoring) and from 0.882 to 0.912 (PQ96x4 codes), for 1.7-2.3x
  // the build time; a second pass gained under 0.01.
  size_t refine = 1;
  // Candidates RobustPrune chooses a list from: 0, the insertion search's final beam
  // (build_width of them); else up to this many of the closest vertices that search scored
  // (DiskANN's maxc, SymphonyQG's candidate pool), beam or not: the farther ones can become
  // long links (between clusters, we suppose). On 100k clustered 384-d vectors (PQ96x4
  // codes) 256 raised recall@10 at search width 32 from 0.872 to 0.923 (384: 0.921, 750:
  // 0.909), for 1.5-1.9x the build time; on 120k MiniLM vectors it changed nothing.
  size_t max_candidates = 0;
  // Codes that estimate neighbours before they are scored exactly: a PQ code per vertex
  // (pq_m sub-quantizers of pq_nbits, 4 or 8), 0 for none.
  // 4 bits: SymphonyQG's layout. Each vertex's row also holds its neighbours' codes in the
  // fast-scan layout, so one kernel call over that row estimates all its neighbours; the beam
  // is ordered by these estimates and only the vertex being expanded is scored exactly. The
  // build fills the slots RobustPrune leaves empty with the closest candidates it dropped (on
  // 60k MiniLM vectors: recall@10 +0.013 at search width 10, +0.005 at 32, no slower).
  // 8 bits: a neighbour is scored exactly when its ADC estimate could enter the beam.
  size_t pq_m = 0;
  size_t pq_nbits = 4;
  // RaBitQ codes instead (pq_m unused): one bit per dimension and a correction factor per
  // vector (codec/rabitq_codes.hpp), SymphonyQG's own estimates, in the same row layout as
  // 4-bit PQ with dim / 4 sub-quantizers, plus the neighbours' factors (and |x|^2 for l2).
  bool rabitq = false;
};

struct GraphSearchParams : SearchParams {
  size_t width = 64;  // beam (hnswlib's ef), raised to k when smaller
  // With 8-bit codes: a neighbour is scored exactly when its estimate is within `slack`
  // times the mean estimation error (so far in the search) of entering the beam.
  float slack = 2.0f;
  std::unique_ptr<SearchParams> clone() const override {
    return std::make_unique<GraphSearchParams>(*this);
  }
};

class ScratchPool;

// Vertices spread over a graph with 4-bit codes, their codes in fast-scan blocks: a search
// estimates them all with one kernel call and starts from the closest (see GraphIndex).
struct GraphPivots {
  std::vector<uint32_t> ids;   // the entry vertex first
  std::vector<uint8_t> blocks; // their codes, fast_scan layout
  std::vector<float> factors;  // RaBitQ: each pivot's b, then (l2) each one's a, as in the rows
  size_t bytes() const {
    return ids.size() * sizeof(uint32_t) + blocks.size() + factors.size() * sizeof(float);
  }
};

class GraphIndex final : public Index {
 public:
  static constexpr uint32_t kNone = 0xffffffffu;  // an empty neighbour slot
  static constexpr size_t kMaxDegree = 256;
  // Pivots of a graph with 4-bit codes; none below 4 x as many vertices.
  static constexpr size_t kPivots = 128;

  // vectors: the storage of the vectors (an empty FlatIndex; its metric is the index's).
  GraphIndex(std::shared_ptr<FlatIndex> vectors, GraphBuildParams build);
  ~GraphIndex() override;

  size_t dim() const override { return vectors_->dim(); }
  Metric metric() const override { return vectors_->metric(); }
  size_t ntotal() const override { return vectors_->ntotal(); }
  size_t rows() const { return vectors_->rows(); }
  bool is_trained() const override {
    return vectors_->is_trained() && (!pq_ || pq_->is_trained()) &&
           (!rabitq_ || rabitq_->is_trained());
  }
  size_t memory_usage() const override;
  size_t mapped_bytes() const {
    return vectors_->mapped_bytes() + adj_.viewed_bytes() + codes_.viewed_bytes() +
           nbr_codes_.viewed_bytes();
  }
  const GraphBuildParams& build_params() const { return build_; }
  const std::shared_ptr<FlatIndex>& vectors() const { return vectors_; }
  uint32_t entry() const { return entry_; }
  // Where a search over 4-bit codes may start: the entry and vertices spread over the graph,
  // of which it takes the one whose estimate is best, a few expansions nearer the query than
  // the entry. On 120k MiniLM vectors (Graph32(f16),PQ96x4) 256 of them gave 1.02-1.09x the
  // QPS at the same width (recall within 0.004), and 128 another 1.01-1.03x: half the
  // estimation cost for the same start.
  const std::vector<uint32_t>& pivots() const { return pivots_.ids; }
  // The share of the running (or last) add's vectors inserted so far, for progress lines.
  double build_progress() const {
    const size_t total = build_total_.load();
    return total ? double(build_done_.load()) / double(total) : 1.0;
  }

  // The storage's scales and the estimation codes' quantizer (the first add trains what is
  // not trained yet, from its own rows).
  void train(const float* x, size_t n, int threads);
  void train(const float* x, size_t n, const TrainParams& p) override { train(x, n, p.threads); }
  // Stores the vectors, then inserts them into the graph (over `threads`; one thread gives
  // the same graph every time). On an exception the index is unchanged.
  void add(const float* x, size_t n, const int64_t* ids, int threads) override;
  void search(const float* q, size_t nq, const GraphSearchParams& params, float* distances,
              int64_t* labels) const;
  void search(const float* q, size_t nq, const SearchParams& params, float* distances,
              int64_t* labels) const override {
    search(q, nq, params_as<GraphSearchParams>(params), distances, labels);
  }
  // The vertices within `radius` among those the beam visits (approximate, as every graph's).
  RangeResult range_search(const float* q, size_t nq, float radius,
                           const SearchParams& params) const override;
  size_t remove(const IdFilter& f) override { return vectors_->remove(f); }
  bool contains(int64_t id) const override { return vectors_->contains(id); }
  void reset() override;
  // Reconnects the neighbours of removed vertices (each list that lost one is pruned again
  // from its survivors and the removed vertices' own neighbours), then drops them.
  void compact() override;
  void reconstruct(const int64_t* ids, size_t n, float* out) const override {
    vectors_->reconstruct(ids, n, out);
  }

  // Raw state: rows x degree neighbour ids (kNone-padded) and the entry vertex. restore()
  // takes the vectors' state already restored; the adjacency may view a mapped file (ids at
  // or past rows are skipped by every search, so a corrupt file gives wrong results, never a
  // crash).
  // With 4-bit codes the lists live only in the neighbour rows once a build is done (the
  // separate array is rebuilt from them for the next add or compact): this is a copy.
  Buffer<uint32_t> adjacency() const;
  const ProductQuantizer* pq() const { return pq_.get(); }
  // The codes' trained state: the PQ centroids, or the RaBitQ state (empty: untrained).
  std::vector<float> codec_state() const;
  // rows x code_bytes(): a PQ code, or a RaBitQ code, its factor and (l2) |x|^2 as floats.
  const Buffer<uint8_t>& codes() const { return codes_; }
  size_t code_bytes() const;
  // 4-bit codes: rows x row_code_bytes(). Row v holds a copy of v's adjacency row (degree
  // uint32), then its neighbours' codes in the fast-scan layout (slot j is position j), then
  // with RaBitQ codes their factors (and for l2 their |x|^2) as degree floats each: all a
  // search reads to expand v but v's vector, in one place. Derived from codes() and
  // adjacency().
  const Buffer<uint8_t>& neighbour_codes() const { return nbr_codes_; }
  bool inline_codes() const { return rabitq_ || (pq_ && build_.pq_nbits == 4); }
  size_t row_code_bytes() const;
  // codec_state: as codec_state() gave it (empty: an untrained, empty index);
  // neighbour_codes: empty (derived again) or as neighbour_codes() gave it.
  void restore(Buffer<uint32_t> adjacency, uint32_t entry, Buffer<uint8_t> codes = {},
               std::vector<float> codec_state = {}, Buffer<uint8_t> neighbour_codes = {});

 private:
  struct Scored {
    float d;  // distance, lower is better
    uint32_t id;
  };
  size_t degree() const { return build_.degree; }
  // ids with their build distances to vertex v (squared L2 between the stored vectors, the
  // build's geometry whatever the metric), closest first.
  std::vector<Scored> by_distance(uint32_t v, const uint32_t* ids, size_t n) const;
  // The adjacency being built: locks, one per vertex stripe during a parallel build (null on
  // one thread); changed[v] is set (under v's lock) when v's list changes. spare (when not
  // null): degree slots for each vertex from spare_from on, where insert() leaves the
  // candidates its pruning did not keep.
  struct Edit {
    uint32_t* adj;
    uint8_t* changed;
    std::vector<std::mutex>* locks;
    uint32_t* spare = nullptr;
    size_t spare_from = 0;
  };
  // Links a new vertex p into the graph; for a vertex already in it, re-chooses its list.
  void insert(uint32_t p, const Edit& e) const;
  // Fills the empty slots of rows [from, to) from their spare candidates, closest first.
  void fill(size_t from, size_t to, const Edit& e) const;
  std::vector<uint32_t> prune(uint32_t p, std::vector<Scored>& cand) const;
  void link(uint32_t from, uint32_t to, const Edit& e) const;
  // Packs the neighbours' codes of rows v with changed[v] (all rows when changed is null).
  void pack_rows(const uint8_t* changed);
  // The plain 4-bit codes of `count` vertices (fast_scan::pack's input) and their RaBitQ
  // factors (factor f of vertex j at f * count + j, b scaled as the search reads it); an id
  // past the rows (an empty slot) gets zeros.
  void gather_codes(const uint32_t* ids, size_t count, uint8_t* plain, float* factors) const;
  // The lists for the build: adj_ again from the rows when only the rows hold them.
  void ensure_adjacency();
  // The lists as the search reads them: (first list, uint32 from one list to the next).
  std::pair<const uint32_t*, size_t> lists() const;
  // After a build or load with 4-bit codes: drops what the rows hold again (adj_) and the
  // build geometry's norms (recomputed by the next build step).
  void drop_build_state();
  size_t code_m() const { return rabitq_ ? rabitq_->m() : pq_->m(); }  // 4-bit codes a vector
  size_t factors_per_slot() const { return rabitq_ ? (metric() == Metric::l2 ? 2 : 1) : 0; }

  uint32_t medoid() const;
  // pivots_ again from the rows, the entry and the codes (after every change to them).
  void choose_pivots();
  void ensure_norms();

  std::shared_ptr<FlatIndex> vectors_;
  GraphBuildParams build_;
  Buffer<uint32_t> adj_;        // rows * degree (empty when only the rows hold the lists)
  uint32_t entry_ = kNone;
  size_t medoid_rows_ = 0;      // rows when the entry was last chosen
  GraphPivots pivots_;
  std::unique_ptr<ProductQuantizer> pq_;  // estimation codes, when configured
  std::unique_ptr<RaBitQCodes> rabitq_;   // or these
  Buffer<uint8_t> codes_;                 // rows x code_bytes()
  Buffer<uint8_t> nbr_codes_;             // rows x row_code_bytes(), with 4-bit codes
  std::vector<float> norms_;    // |x|^2 of every row, for the build geometry (not saved)
  std::unique_ptr<ScratchPool> scratch_;
  std::atomic<size_t> build_done_{0}, build_total_{0};
};

}  // namespace quanta
