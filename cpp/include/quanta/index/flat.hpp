// Exact (brute-force) search over vectors kept in a compact storage.
//
// Scores are kept as "higher is better" similarities inside the scan:
//   ip / cosine: sim_j = scale_j * <q, c_j>
//   l2:          sim_j = 2 * scale_j * <q, c_j> - |x_j|^2,   distance = |q|^2 - sim_j
// where c_j is the stored (decoded) row and scale_j its float8 scale (1 otherwise). For i8
// the per-dimension scale is folded into the query once per call.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "quanta/codec/storage.hpp"
#include "quanta/core/buffer.hpp"
#include "quanta/core/index.hpp"
#include "quanta/core/labels.hpp"
#include "quanta/core/metric.hpp"
#include "quanta/core/rows.hpp"
#include "quanta/core/search_params.hpp"
#include "quanta/core/topk.hpp"

namespace quanta {

// How float8 rows are scaled before the cast: none, one power of two for the whole index
// (chosen on the first add), or one float per vector (max |x| maps to the format's max).
enum class F8Scale : uint8_t { none = 0, global = 1, vector = 2 };
F8Scale f8scale_from_name(const std::string& name);
const char* f8scale_name(F8Scale s);

class FlatIndex final : public Index {
 public:
  static constexpr size_t kMaxDim = size_t(1) << 24;
  // f8_anisotropic: float8 codes by round_f8_anisotropic (kF8Eta) instead of nearest.
  FlatIndex(size_t dim, Metric metric, Storage storage, F8Scale f8_scale, bool f8_anisotropic);
  static constexpr float kF8Eta = 8.0f;  // best of 3..128 for recall@10 on MiniLM embeddings

  size_t dim() const override { return dim_; }
  Metric metric() const override { return metric_; }
  Storage storage() const { return storage_; }
  F8Scale f8_scale() const { return f8_scale_; }
  bool f8_anisotropic() const { return f8_anisotropic_; }
  size_t ntotal() const override { return ntotal_ - labels_.removed(); }  // live vectors
  size_t rows() const { return ntotal_; }  // stored rows, removed ones included
  size_t code_size() const { return dim_ * storage_bytes(storage_); }
  // i8 needs its per-dimension scales and f8 with a global scale its power of two; train()
  // sets them, or the first add() does from its own rows.
  bool is_trained() const override;
  size_t memory_usage() const override;
  // Bytes served from memory the index views (a mapped file), not owns.
  size_t mapped_bytes() const {
    return codes_.viewed_bytes() + vector_scale_.viewed_bytes() + sq_norms_.viewed_bytes();
  }

  // i8: per-dimension symmetric scale max|x_k| / 127. f8 with F8Scale::global: the power of
  // two 2^e that keeps max|x| * 2^e within 1/16 of the format's largest value. Others: no-op.
  void train(const float* x, size_t n);
  void train(const float* x, size_t n, const TrainParams&) override { train(x, n); }
  // Validates everything before changing anything: on an exception the index is unchanged.
  void add(const float* x, size_t n, const int64_t* ids, int threads) override;
  // Filtered searches score only the allowed rows when the filter is shared by every query
  // (gathered block by block), and test each query's own filter before a row enters a heap.
  void search(const float* q, size_t nq, const FlatSearchParams& params, float* distances,
              int64_t* labels) const;
  void search(const float* q, size_t nq, const SearchParams& params, float* distances,
              int64_t* labels) const override {
    search(q, nq, params_as<FlatSearchParams>(params), distances, labels);
  }
  // Every row within `radius`: l2 distance < radius, ip / cosine similarity > radius.
  RangeResult range_search(const float* q, size_t nq, float radius,
                           const SearchParams& params) const override;
  // Exact re-ranking: the k best of each query among its nc candidate ids (cand[i * nc ..];
  // -1 and unknown ids are skipped), scored against the stored vectors.
  void search_subset(const float* q, size_t nq, const int64_t* cand, size_t nc, size_t k,
                     int threads, float* distances, int64_t* labels) const;
  // Decoded rows (cosine: the normalized vectors); throws std::out_of_range for unknown ids.
  void reconstruct(const int64_t* ids, size_t n, float* out) const override;
  void reset() override;
  // Tombstones the rows whose ids f allows (skipped by every search); returns how many.
  size_t remove(const IdFilter& f) override { return labels_.remove(f, ntotal_); }
  bool contains(int64_t id) const override { return labels_.position_of(id, ntotal_) >= 0; }
  void compact() override;  // drops the removed rows from the arrays

  // For an index that routes over these rows (the graph index): q as the row kernels take it
  // (times the i8 per-dimension scales: a copy in buf, else q itself), then the inner
  // products <q, x_pos> of n stored rows, their scales applied, reading the rows in place
  // (prefetched together first).
  const float* kernel_query(const float* q, std::vector<float>& buf) const;
  void dot_positions(const float* q, const uint32_t* pos, size_t n, float* out) const;
  void decode(size_t pos, float* out) const { decode_row(pos, out); }  // cosine: normalized
  // Asks for row pos's bytes ahead of a dot_positions that will read it.
  void prefetch(size_t pos) const { prefetch_l2(codes_.data() + pos * code_size(), code_size()); }
  const Labels& labels() const { return labels_; }

  // Raw state, for serialization. restore() validates sizes and throws on mismatch.
  const Buffer<uint8_t>& codes() const { return codes_; }
  const Buffer<float>& vector_scale() const { return vector_scale_; }
  const Buffer<float>& sq_norms() const { return sq_norms_; }
  const std::vector<float>& dim_scale() const { return dim_scale_; }
  const std::vector<int64_t>& ids() const { return labels_.raw(); }
  const std::vector<uint64_t>& removed_mask() const { return labels_.dead(); }
  float global_scale() const { return global_scale_; }
  // The large arrays may be views of memory the caller keeps alive (a memory-mapped file):
  // searches read them in place; add / compact copy them first.
  void restore(Buffer<uint8_t> codes, Buffer<float> vector_scale, Buffer<float> sq_norms,
               std::vector<float> dim_scale, std::vector<int64_t> ids, float global_scale,
               size_t rows, std::vector<uint64_t> removed = {});

 private:
  void encode_rows(const float* x, size_t n, int threads, uint8_t* codes, float* vscale,
                   float* norms) const;
  void decode_row(size_t pos, float* out) const;
  float row_scale(size_t pos) const;
  const float* prepare_queries(const float* q, size_t nq, std::vector<float>& qs,
                              std::vector<float>& qnorm) const;
  void search_gemm(const float* q, size_t nq, const SearchParams& params, const float* qnorm,
                   float* distances, int64_t* labels) const;
  // search_gemm collecting in Top (TopKSet, or TopKReservoir for large k).
  template <class Top>
  void search_gemm_into(const float* q, size_t nq, const SearchParams& params,
                        const float* qnorm, float* distances, int64_t* labels) const;
  void search_rows(const float* q, size_t nq, const FlatSearchParams& params,
                   const float* qnorm, float* distances, int64_t* labels) const;
  void search_amx(const float* q, size_t nq, const SearchParams& params, const float* qnorm,
                  float* distances, int64_t* labels) const;
  // Scores (higher is better) of `count` rows of codes for query q (prepared): row r is
  // position pos[r], or first + r when pos is null.
  void score_rows(const float* q, const uint8_t* codes, size_t count, size_t first,
                  const uint32_t* pos, float* s) const;

  template <class Top>
  void finish(Top& heaps, size_t k, const float* qnorm, float* distances,
              int64_t* labels) const;
  int64_t position_of(int64_t id) const;

  size_t dim_;
  Metric metric_;
  Storage storage_;
  F8Scale f8_scale_;
  bool f8_anisotropic_;
  size_t ntotal_ = 0;
  Buffer<uint8_t> codes_;       // ntotal * code_size
  Buffer<float> vector_scale_;  // f8 with F8Scale::vector
  Buffer<float> sq_norms_;      // l2: |decoded row|^2
  std::vector<float> dim_scale_;     // i8: per-dimension scale
  Labels labels_;
  float global_scale_ = 0.0f;        // f8 with F8Scale::global: decoded value times this
};

}  // namespace quanta
