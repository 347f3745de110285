// Seismic-style approximate top-k inner-product search over non-negative sparse vectors
// (learned sparse retrieval, SPLADE-like; Bruch et al., SIGIR 2024), in one of two layouts.
//
// Lists layout (the reference's). Build: a forward index of every document (term ids, f16
// or u8 values); per term a posting list pruned globally (the n_postings * dim largest
// entries of the collection, at most n_postings * max_fraction per list), split into blocks
// by one pass of k-means around sampled documents (documents and centroids compared on their
// doc_cut largest entries), each block with a summary: the coordinate-wise maximum of its
// documents (of their summary_cut largest entries when set), cut to summary_energy of its L1
// mass and quantized to 8 bits (rounded up, so it stays an upper bound of what it keeps).
// Search: the query's query_cut largest terms; the blocks of their lists are visited list by
// list (or in one decreasing order of summary score), skipping those whose summary dot
// product is below heap_factor times the current k-th score; a visited block's unseen
// documents are scored exactly against the whole query.
//
// Blocks layout (block-max pruning over clustered documents, as in BMP, Mallia et al., SIGIR
// 2024). Build: the documents are stored in bisection order (codec/bisection_order.hpp) and
// cut into blocks of block_size neighbours; each block is summarized by its exact per-term
// maxima, quantized to 8 bits of the term's largest value (rounded up), stored term-major: a
// dense row of one byte per block for terms in at least 1/kDenseShare of the blocks, else
// (block, code) pairs. No posting lists: each document sits in one block. Search: the
// summary scores of every block over the query's query_cut heaviest terms (16-bit sums of
// quantized query weights times codes, SIMD over dense rows), then the blocks in decreasing
// summary score up to the first below heap_factor * theta, their documents scored exactly.
//
// Both: an optional kNN graph (each document's knn best other results of a search with itself
// as the query; n_knn of them per result are scored last), head-first scoring and filters.
#pragma once
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <vector>

#include "quanta/core/buffer.hpp"
#include "quanta/core/index.hpp"
#include "quanta/core/labels.hpp"
#include "quanta/core/search_params.hpp"
#include "quanta/core/sparse_rows.hpp"

namespace quanta {

struct SparseScratch;
struct Kernels;
class TopKSet;

enum class SparseLayout : uint8_t { lists, blocks };

// Search settings. n_knn: graph neighbours of each result evaluated after the block loop.
// head > 0: a visited document is scored on its head largest entries first and in full only
// when that partial score is among the rerank (0: 3k) best partial scores of the query so far.
// list_order: the query_cut lists one after the other (heaviest query term first), each
// list's blocks in stored order, every block below heap_factor * theta skipped (the
// reference's loop); else all their blocks in one decreasing order of summary score, up to
// the first below heap_factor * theta.
// Filters (SearchParams::filter) are tested before a document is scored; a filter allowing at
// most 1/kExactFallback of the documents is served by scoring its documents directly.
struct SparseSearch : SearchParams {
  size_t query_cut = 20;  // the lists layout's defaults; defaults(layout) has each layout's
  float heap_factor = 0.8f;
  bool exact = false;
  size_t n_knn = 0;
  size_t head = 0, rerank = 0;
  bool list_order = true;
  std::unique_ptr<SearchParams> clone() const override {
    return std::make_unique<SparseSearch>(*this);
  }
  // A layout's default query_cut and heap_factor: recall@10 0.97 or more on the real SPLADE,
  // synthetic and BM25 sets of bench.sparse_presets.
  static SparseSearch defaults(SparseLayout layout);
};

struct SparseParams {
  SparseLayout layout = SparseLayout::lists;
  size_t block_size = 6;  // documents per block of the blocks layout
  // The lists layout's build (n_postings .. summary_cut, posting_offsets):
  size_t n_postings = 3500;
  float centroid_fraction = 0.1f;
  size_t min_cluster_size = 2;
  float summary_energy = 0.4f;
  float max_fraction = 1.5f;
  size_t doc_cut = 15;
  size_t summary_cut = 0;  // summaries from each document's summary_cut largest entries (0: all)
  size_t knn = 0;          // neighbours kept per document in a kNN graph (0: none)
  bool u8_values = false;  // forward values as u8 times a per-document scale (else f16)
  bool posting_offsets = true;  // postoff: faster prefetching, 4 bytes per posting
  uint64_t seed = 1142;
};

// The engine contract over sparse rows. The first add builds the index; documents added
// after it go to a delta part (a small SparseIndex of their own) that every search scores
// exhaustively alongside, until compact() rebuilds one index from the live documents.
class SparseIndex : public RowsIndex<SparseRows> {
 public:
  SparseIndex(size_t dim, const SparseParams& params);

  size_t dim() const override { return dim_; }
  Metric metric() const override { return Metric::ip; }
  bool is_trained() const override { return true; }
  size_t ntotal() const override;  // live documents, the delta part's included
  size_t memory_usage() const override;

  // Documents: CSR rows (indices sorted ascending per row, values finite and >= 0); ids null:
  // positions continuing after the documents held. Validates everything first: a failed call
  // stores nothing.
  void add(const SparseRows& docs, const int64_t* ids, int threads) override;
  // The main part by `params` (a SparseSearch, else the common settings with its defaults),
  // the delta part exhaustively; scores are inner products, best first.
  void search(const SparseRows& queries, const SearchParams& params, float* scores,
              int64_t* labels) const override;
  size_t remove(const IdFilter& f) override;
  bool contains(int64_t id) const override;
  void reset() override;
  void compact() override { compact(0); }
  // Rebuilds one index (blocks, summaries, graph) from the live documents of both parts.
  void compact(int threads);

  // The main part alone: its stored documents (removed ones included) and contents.
  size_t ndocs() const { return s_.doc_ptr.size() - 1; }
  size_t nnz() const { return size_t(s_.doc_ptr.back()); }
  size_t npostings() const { return s_.postings.size(); }
  bool blocks_layout() const { return !s_.bm_ptr.empty(); }
  size_t nblocks() const {
    return blocks_layout() ? blocks_for(ndocs()) : s_.block_step.size();
  }
  size_t nsummary_entries() const {  // (block, term) maxima stored, dense rows' zeros included
    return blocks_layout() ? s_.bm_entry.size() + s_.bm_dense.size() : s_.sblock.size();
  }
  // Blocks layout: terms in at least 1 / kDenseShare of the blocks get a dense row.
  static constexpr size_t kDenseShare = 8;
  size_t pending() const { return delta_ ? delta_->ndocs() : 0; }  // documents in the delta
  const SparseParams& params() const { return p_; }
  // Share of the posting lists built so far by a running first add (0 .. 1), for progress bars.
  double build_progress() const { return double(progress_->load()) / double(dim_); }
  // The live documents of the main part (terms ascending, values as stored) and of the delta.
  SparseDocs live_docs() const;
  SparseDocs pending_docs() const { return delta_ ? delta_->live_docs() : SparseDocs(); }

  // The whole index as flat arrays (term ids as u16 when dim <= 65536, else u32: one of each
  // pair is empty). Forward index: document d = entries doc_ptr[d] .. doc_ptr[d + 1], heaviest
  // first (lower id on ties).
  // List t = blocks list_ptr[t] .. list_ptr[t + 1]; block b = postings block_ptr[b] ..
  // block_ptr[b + 1]. Summaries of list t, transposed so a query touches only its own terms:
  // terms sterm[sdict_ptr[t] .. sdict_ptr[t + 1]) ascending; the j-th term's entries are
  // soff[sdict_ptr[t] + t + j] .. soff[... + 1] (relative to sent_ptr[t]) of (block within
  // the list, 8-bit code); a block's summary value is code * block_step[b].
  // Blocks layout (the list arrays empty): block b = documents b * block_size .. (stored in
  // bisection order). Term t's maximum in a block is code * bm_scale[t]; the codes of the
  // dense terms bm_dense_terms[j] (ascending) are row j of bm_dense (one byte per block), the
  // others' are bm_entry[bm_ptr[t] .. bm_ptr[t + 1]) = block << 8 | code (blocks ascending,
  // zero codes left out).
  struct State {
    Buffer<int64_t> doc_ptr{std::vector<int64_t>{0}};
    Buffer<uint16_t> comp16, val16;
    Buffer<uint32_t> comp32;
    Buffer<uint8_t> val8;
    Buffer<float> doc_scale;
    Buffer<int64_t> list_ptr;
    Buffer<uint32_t> block_ptr{std::vector<uint32_t>{0}}, postings;
    Buffer<uint32_t> postoff;  // doc_ptr of each posting (empty at 2^32 entries or more)
    Buffer<float> block_step;
    Buffer<int64_t> sdict_ptr, sent_ptr;
    Buffer<uint16_t> sterm16, sblock;
    Buffer<uint32_t> sterm32, soff;
    Buffer<uint8_t> scode;
    // knn[d * knn .. (d + 1) * knn): document d's graph neighbours, best first (padding ~0u)
    Buffer<uint32_t> knn;
    Buffer<int64_t> bm_ptr;
    Buffer<uint32_t> bm_entry, bm_dense_terms;
    Buffer<float> bm_scale;
    Buffer<uint8_t> bm_dense;

    // f(name, buffer) for every array, in the order the files store them.
    template <class S, class F>
    static void each(S& s, F&& f) {
      f("doc_ptr", s.doc_ptr), f("comp16", s.comp16), f("comp32", s.comp32);
      f("val16", s.val16), f("val8", s.val8), f("doc_scale", s.doc_scale);
      f("list_ptr", s.list_ptr), f("block_ptr", s.block_ptr), f("postings", s.postings);
      f("postoff", s.postoff);
      f("block_step", s.block_step), f("sdict_ptr", s.sdict_ptr), f("sent_ptr", s.sent_ptr);
      f("sterm16", s.sterm16), f("sterm32", s.sterm32), f("soff", s.soff);
      f("sblock", s.sblock), f("scode", s.scode), f("knn", s.knn);
      f("bm_ptr", s.bm_ptr), f("bm_entry", s.bm_entry), f("bm_scale", s.bm_scale);
      f("bm_dense_terms", s.bm_dense_terms), f("bm_dense", s.bm_dense);
    }
  };
  const State& state() const { return s_; }
  // Checks sizes and every offset array; with check_contents also every term id, posting and
  // block number (skipped for memory-mapped arrays, which the search clamps instead).
  void restore(State s, bool check_contents);

  // The main part's search (CSR queries, the same rules). exact: every document scored.
  void search_main(const int64_t* qptr, const int32_t* qidx, const float* qval, size_t nq,
                   const SparseSearch& p, float* scores, int64_t* labels) const;
  static constexpr size_t kExactFallback = 64;

  // User ids of the main part's documents (empty: their positions) and its removed documents
  // (tombstones): how a loaded index gets them back.
  void set_ids(std::vector<int64_t> ids, std::vector<uint64_t> removed = {});
  const std::vector<int64_t>& ids() const { return labels_.raw(); }
  const std::vector<uint64_t>& removed_mask() const { return labels_.dead(); }

 private:
  // Replaces the main part's content with these documents (ids null: their positions).
  void build(const SparseRows& docs, const int64_t* ids, int threads);
  template <class Comp>
  float entries_dot(const Comp* comp, size_t doc, size_t b, size_t e, const float* q,
                    const Kernels& kr) const;
  template <class Comp>
  void prefetch_doc(const Comp* comp, size_t offset, size_t bytes) const;
  template <class Comp>
  void prefetch_row(const Comp* comp, size_t doc) const;
  void prefetch_offsets(size_t doc) const;
  template <class Comp, class Score>
  void search_blocks(const Comp* comp, size_t cut, const SparseSearch& p, SparseScratch& s,
                     const Kernels& kr, TopKSet& heap, Score&& score) const;
  template <class Comp, class Term>
  void search_one(const Comp* comp, const Term* sterm, const int64_t* qptr, const int32_t* qidx,
                  const float* qval, size_t i, const SparseSearch& p, SparseScratch& s,
                  const Kernels& kr, float* scores, int64_t* labels) const;
  void prune_and_block(const float* val, int threads);
  void block_maxima(const float* val);
  void build_knn(const int64_t* indptr, const int32_t* indices, const float* values, size_t n,
                 int threads);
  // The blocks layout's block count for n documents.
  size_t blocks_for(size_t n) const { return (n + p_.block_size - 1) / p_.block_size; }
  size_t qdense_size() const { return s_.comp16.empty() ? dim_ + 1 : 65536; }

  size_t dim_;
  SparseParams p_;
  State s_;
  Labels labels_;
  std::unique_ptr<SparseIndex> delta_;  // documents added after the build
  std::shared_ptr<std::atomic<size_t>> progress_ = std::make_shared<std::atomic<size_t>>(0);
};

}  // namespace quanta
