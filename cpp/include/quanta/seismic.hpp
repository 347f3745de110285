// Seismic-style approximate top-k inner-product search over non-negative sparse vectors
// (learned sparse retrieval, SPLADE-like; Bruch et al., SIGIR 2024).
//
// Build: a forward index of every document (term ids, f16 or u8 values); per term a posting
// list pruned globally (the n_postings * dim largest entries of the collection, at most
// n_postings * max_fraction per list), split into blocks by one pass of k-means around
// sampled documents (each document scored on its doc_cut largest entries), each block with a
// summary: the coordinate-wise maximum of its documents, cut to summary_energy of its L1 mass
// and quantized to 8 bits.
// Search: the query's query_cut largest terms in decreasing weight; a block is skipped when
// the heap is full and its summary's dot product with the query is below heap_factor times
// the current k-th score; otherwise its unseen documents are scored exactly.
#pragma once
#include <cstddef>
#include <cstdint>
#include <vector>

namespace quanta {

struct SparseParams {
  size_t n_postings = 3500;
  float centroid_fraction = 0.1f;
  size_t min_cluster_size = 2;
  float summary_energy = 0.4f;
  float max_fraction = 1.5f;
  size_t doc_cut = 15;
  bool u8_values = false;  // forward values as u8 times a per-document scale (else f16)
  uint64_t seed = 1142;
};

class SparseIndex {
 public:
  SparseIndex(size_t dim, const SparseParams& params);

  size_t dim() const { return dim_; }
  size_t ndocs() const { return doc_ptr_.size() - 1; }
  size_t nnz() const { return size_t(doc_ptr_.back()); }
  size_t npostings() const { return postings_.size(); }
  size_t nblocks() const { return block_min_.size(); }
  const SparseParams& params() const { return p_; }
  size_t memory_usage() const;

  // CSR documents (indptr n + 1, indices sorted ascending per row, values finite and >= 0).
  // Replaces any previous content; validates everything first.
  void build(const int64_t* indptr, const int32_t* indices, const float* values, size_t n,
             int threads);

  // Raw state, for serialization; restore() checks sizes and offsets.
  struct State {
    std::vector<int64_t> doc_ptr;
    std::vector<uint32_t> comp;  // term ids (as u32 whatever the stored width)
    std::vector<uint16_t> val16;
    std::vector<uint8_t> val8;
    std::vector<float> doc_scale;
    std::vector<int64_t> list_ptr, block_ptr, sum_ptr;
    std::vector<uint32_t> postings, sum_comp;
    std::vector<uint8_t> sum_code;
    std::vector<float> block_min, block_step;
  };
  State state() const;
  void restore(State s);

  // CSR queries (the same rules). exact: every document scored (ground truth).
  void search(const int64_t* qptr, const int32_t* qidx, const float* qval, size_t nq, size_t k,
              size_t query_cut, float heap_factor, bool exact, int threads, float* scores,
              int64_t* labels) const;

 private:
  float doc_dot(size_t doc, const float* qdense) const;
  void prune_and_block(int threads);

  size_t dim_;
  SparseParams p_;
  // forward index
  std::vector<int64_t> doc_ptr_{0};
  std::vector<uint16_t> comp16_;  // term ids when dim <= 65536
  std::vector<uint32_t> comp32_;  // otherwise
  std::vector<uint16_t> val16_;   // f16 values
  std::vector<uint8_t> val8_;     // u8 values ...
  std::vector<float> doc_scale_;  // ... times max / 255 of their document
  // inverted index: list t = blocks list_ptr_[t] .. list_ptr_[t + 1]; block b = postings
  // block_ptr_[b] .. block_ptr_[b + 1] and summary entries sum_ptr_[b] .. sum_ptr_[b + 1]
  std::vector<int64_t> list_ptr_;
  std::vector<int64_t> block_ptr_{0};
  std::vector<uint32_t> postings_;
  std::vector<int64_t> sum_ptr_{0};
  std::vector<uint32_t> sum_comp_;
  std::vector<uint8_t> sum_code_;
  std::vector<float> block_min_, block_step_;
};

}  // namespace quanta
