// IVF-PQ: a coarse k-means quantizer splits the vectors into nlist inverted lists; each vector
// is stored as the PQ code of its residual (vector minus its list's centroid). A query visits
// its nprobe closest lists and scores their codes with ADC tables: for l2 one table per probed
// list (built from q - centroid), for ip one table for all lists plus <q, centroid>.
// With fast_scan (4-bit codes), each list keeps its codes in the block layout of
// fast_scan_codes.hpp and a query's tables for all its probed lists are quantized to uint8
// with one shared scale, so the sums of different lists compare directly.
#pragma once
#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <utility>
#include <vector>

#include "quanta/codec/coarse_quantizer.hpp"
#include "quanta/codec/fast_scan_codes.hpp"
#include "quanta/codec/pq.hpp"
#include "quanta/core/buffer.hpp"
#include "quanta/core/index.hpp"
#include "quanta/core/labels.hpp"
#include "quanta/core/list_ids.hpp"
#include "quanta/core/topk.hpp"
#include "quanta/index/flat.hpp"

namespace quanta {

class IVFPQIndex final : public Index {
 public:
  IVFPQIndex(size_t dim, size_t nlist, size_t m, size_t nbits, Metric metric,
             bool fast_scan = false, bool by_residual = true, bool soar = false);

  size_t dim() const override { return dim_; }
  size_t nlist() const { return nlist_; }
  Metric metric() const override { return metric_; }
  bool fast_scan() const { return fast_scan_; }
  // false: the PQ codes the vectors themselves (faiss's IndexIVFPQFastScan default): one
  // table per query serves every list; true: residuals to the list centroid.
  bool by_residual() const { return by_residual_; }
  // true: each vector is also stored in a second list (soar.hpp), so searches probing fewer
  // lists find it; entries per vector: copies().
  bool soar() const { return soar_; }
  size_t copies() const { return soar_ && nlist_ > 1 ? 2 : 1; }
  static constexpr float kSoarLambda = 1.0f;  // measured flat between 1 and 2 on MiniLM
  size_t ntotal() const override { return ntotal_; }
  bool is_trained() const override { return coarse_ && pq_.is_trained(); }
  size_t memory_usage() const override;
  size_t mapped_bytes() const;  // bytes of lists viewed in a mapped file, not owned
  ProductQuantizer& pq() { return pq_; }
  const ProductQuantizer& pq() const { return pq_; }

  // Coarse k-means (10 iterations by default, as faiss), then PQ on the residuals.
  void train(const float* x, size_t n, const KMeansParams& coarse, const KMeansParams& fine);
  // The codebooks seeded seed + 1 (the lists take seed).
  void train(const float* x, size_t n, const TrainParams& p) override {
    train(x, n, p.kmeans(p.coarse_niter), p.kmeans(p.niter, 1));
  }
  void add(const float* x, size_t n, const int64_t* ids, int threads) override;
  // Filters are tested on each candidate's id before it enters a heap. A query left with
  // fewer than k results by its filter is searched again with twice the lists, up to all of
  // them; a filter that allows at most kExactFallback-th of the codes nprobe lists hold is
  // served by scoring the allowed vectors directly (their reconstructions), every list alike.
  void search(const float* q, size_t nq, const IVFSearchParams& params, float* distances,
              int64_t* labels) const {
    search(q, nq, params, distances, labels, {});
  }
  // This index and `others`, trained from the same state (equal centroids and codebooks: the
  // shards of one build), searched as one index holding all their vectors: each probed list
  // is scanned in every part under one heap per query. Fast-scan codes, no filter.
  void search(const float* q, size_t nq, const IVFSearchParams& params, float* distances,
              int64_t* labels, const std::vector<const IVFPQIndex*>& others) const;
  void search(const float* q, size_t nq, const SearchParams& params, float* distances,
              int64_t* labels) const override {
    search(q, nq, params_as<IVFSearchParams>(params), distances, labels);
  }
  // crossover measured by bench/filtered.py: about 350 allowed of 6,250 scanned codes
  static constexpr size_t kExactFallback = 16;
  // The coarse step alone: each query's nprobe best lists (lists) and their coarse scores
  // (distances: squared L2 for l2, inner products otherwise), best first; what
  // IVFSearchParams::coarse_lists / coarse_distances take.
  void coarse_search(const float* q, size_t nq, size_t nprobe, int threads, float* distances,
                     int64_t* lists) const;
  // How many centroids the coarse step scores in float32 for each query (coarse_quantizer.hpp;
  // nlist where it scores them all).
  void coarse_rescored(const float* q, size_t nq, size_t nprobe, int64_t* out) const;
  // The codes of the nprobe lists within `radius` (l2: < radius; ip / cosine: > radius).
  RangeResult range_search(const float* q, size_t nq, float radius,
                           const IVFSearchParams& params) const;
  RangeResult range_search(const float* q, size_t nq, float radius,
                           const SearchParams& params) const override {
    return range_search(q, nq, radius, params_as<IVFSearchParams>(params));
  }
  void reconstruct(const int64_t* ids, size_t n, float* out) const override;
  void reset() override;
  // Removes the entries whose ids f allows from their lists (in place, order kept).
  size_t remove(const IdFilter& f) override;
  bool contains(int64_t id) const override { return locator_.where(ids_).count(id) > 0; }
  void compact() override;  // returns the lists' spare capacity

  std::vector<float> centroids() const {  // nlist x dim (empty before training)
    return coarse_ ? coarse_->copy_centroids() : std::vector<float>();
  }
  // Serialized form: list sizes, all codes and all ids, list by list. all_codes() holds
  // plain codes (code_size bytes per entry); stored_codes() the lists as they sit in memory
  // (fast-scan: each list's blocks, fast_scan::bytes_for(size, m) bytes), which a restore
  // can view in place.
  std::vector<uint64_t> list_sizes() const;
  std::vector<uint8_t> all_codes() const;
  std::vector<uint8_t> stored_codes() const;
  std::vector<int64_t> all_ids() const;
  // The lists from serialized arrays: codes plain, or (stored) in the in-memory layout.
  // borrow: the lists view codes and ids (the caller keeps them alive; add / remove copy a
  // list first) and their contents are not scanned, only their sizes checked.
  void restore(std::vector<float> centroids, const std::vector<uint64_t>& sizes,
               const uint8_t* codes, size_t ncodes, const int64_t* ids, size_t nids,
               bool stored, bool borrow);

 private:
  std::vector<float> prepared(const float* x, size_t n) const;  // normalized for cosine
  const float* centroid(size_t l) const { return coarse_->centroids() + l * dim_; }
  // coarse_search's and coarse_rescored's checks (what: the caller's name), then prepared().
  std::vector<float> coarse_queries(const char* what, const float* q, size_t nq,
                                    size_t nprobe) const;
  // l2: |q - c - r|^2 = |q - c|^2 + (|r|^2 + 2 <c, r>) - 2 <q, r>. The middle term depends on
  // (list, sub-space, code) only: precomputed here (faiss's precomputed tables), so a probed
  // list's table costs m * ksub adds instead of a table from the residual query.
  void precompute();  // forgets the tables below (the centroids changed)
  // nlist x m x ksub tables (l2 residuals, when within the cap; else nullptr), built on
  // first use under a lock, then read without one.
  const float* precomputed() const;
  static constexpr size_t kMaxPrecomputedBytes = size_t(512) << 20;
  void assign(const float* x, size_t n, int threads, int64_t* lists) const;
  // One query's scan of its probed lists (coarse distances cd, lists cl, best first): calls
  // emit(score, id) for the codes scoring at least floor() (higher is better), re-reading
  // floor() whenever emit returns true (a heap took the code).
  template <class Floor, class Emit>
  void scan_lists(const float* q, const float* cd, const int64_t* cl, size_t nprobe,
                  Floor&& floor, Emit&& emit) const;
  // The stored vectors a filter allows (f.max_allowed() must be finite): ids, lists and plain
  // codes, looked up once (a filter shared by every query serves them all).
  struct AllowedRows {
    std::vector<int64_t> ids;
    std::vector<uint32_t> lists;
    std::vector<uint8_t> codes;  // code_size() bytes each
  };
  AllowedRows allowed_rows(const IdFilter& f) const;
  // One query's exact scores of those vectors.
  void score_allowed(const float* q, const AllowedRows& rows, TopKSet& top, size_t slot) const;
  void code_of(size_t l, size_t r, uint8_t* code) const;  // entry r of list l, plain
  void decode_entry(size_t l, size_t r, float* out) const;
  // One query's quantized fast-scan tables for its non-empty probed lists (written to lists,
  // best first; returns how many): luts (npairs * 32 bytes each; one per list when
  // tables_per_list(), else one for all at the front), off (score = off - sum / scale) and
  // the query's scale.
  // parts: the indexes searched together (this one first); a list empty in all is skipped.
  size_t fast_scan_tables(const float* q, const int64_t* cl, size_t nprobe, uint8_t* luts,
                          float* off, int64_t* lists, float* scale,
                          const std::vector<const IVFPQIndex*>& parts) const;
  // Collects into result (empty TopKSet or TopKReservoir of nq queries).
  template <class Top>
  void search_fast_scan(const float* qs, size_t nq, const int64_t* cl, size_t nprobe,
                        int threads, const QueryFilters& filter, Top& result,
                        const std::vector<const IVFPQIndex*>& parts) const;
  // Whether `other` holds lists and codes of the same trained state.
  bool same_state(const IVFPQIndex& other) const;
  // l2 residual codes need a table per probed list; otherwise one table serves every list.
  bool tables_per_list() const { return metric_ == Metric::l2 && by_residual_; }
  // The l2 ADC table of list l for a query with sub-dots qdots (precomputed or from q - c_l).
  void l2_table(const float* q, const float* qdots, size_t l, float* table) const;

  size_t dim_, nlist_;
  Metric metric_;
  bool fast_scan_;
  bool by_residual_;
  bool soar_;
  ProductQuantizer pq_;
  mutable std::vector<float> precomputed_;
  mutable std::mutex precomputed_mutex_;
  mutable std::atomic<bool> precomputed_ready_{false};
  std::unique_ptr<CoarseQuantizer> coarse_;  // the centroids and the coarse step over them
  std::vector<Buffer<uint8_t>> codes_;  // per list: plain codes, or fast-scan blocks
  std::vector<Buffer<int64_t>> ids_;
  size_t ntotal_ = 0;
  ListIds locator_;  // reconstruct, contains, the exact fallback
};

}  // namespace quanta
