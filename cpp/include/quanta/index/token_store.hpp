// Multi-vector documents (sets of token vectors) in a compact storage, scored exactly by
// Chamfer / MaxSim similarity: CHAMFER(Q, P) = sum over q in Q of max over p in P of <q, p>.
//
// Scoring is the GEMM micro-kernel: query tokens packed as panels, a document's tokens (decoded
// to float32) as rows, a running max per query token, then a sum per query in token order, so
// a score is the same whichever thread or batch computed it. i8 and float8 rows are stored
// times one global scale (set by the first add) and scores divided by it. On a CPU with AMX
// (Sapphire Rapids+), bf16 rows are scored by AMX bf16 tiles with the query tokens rounded to
// bf16, and i8 rows by AMX int8 tiles with each query token rounded to int8 at its own scale.
#pragma once
#include <cstddef>
#include <cstdint>
#include <optional>
#include <vector>

#include "quanta/codec/storage.hpp"
#include "quanta/codec/token_sketch.hpp"
#include "quanta/core/buffer.hpp"
#include "quanta/core/index.hpp"
#include "quanta/core/labels.hpp"
#include "quanta/core/search_params.hpp"
#include "quanta/core/token_sets.hpp"

namespace quanta {

// The engine contract over token sets: the multi-vector index's exact part (its first stages
// are dense indexes over FDEs or tokens, composed by the Python MultiVectorIndex).
class TokenStore : public RowsIndex<TokenSets> {
 public:
  TokenStore(size_t dim, Storage storage);

  size_t dim() const override { return dim_; }
  Metric metric() const override { return Metric::ip; }  // Chamfer over inner products
  bool is_trained() const override { return true; }
  Storage storage() const { return storage_; }
  size_t ndocs() const { return offsets_.size() - 1; }  // stored, removed ones included
  size_t ntotal() const override { return ndocs() - labels_.removed(); }  // live documents
  size_t ntokens() const { return size_t(offsets_.back()); }
  float scale() const { return scale_; }
  size_t memory_usage() const override;

  // Appends documents labelled ids (null: positions). Validates first: on an exception
  // nothing changes.
  void add(const TokenSets& docs, const int64_t* ids, int threads) override;

  // Exact top-k by Chamfer over every allowed document, batched over the queries; a filter
  // shared by every query scores only the documents it allows.
  void search(const TokenSets& queries, const SearchParams& p, float* scores,
              int64_t* labels) const override;
  // Exact top-k of each query among its nc candidate ids (cand[i * nc ..]; -1, removed and
  // unknown ids skipped), under the same filters. With a sketch and shortlist > 0, only the
  // shortlist candidates the sketch estimates best are scored exactly.
  void rerank(const TokenSets& queries, const int64_t* cand, size_t nc, size_t shortlist,
              const SearchParams& p, float* scores, int64_t* labels) const;
  // Trains a 4-bit PQ sketch of m sub-quantizers (dim % m == 0) on a sample of the stored
  // tokens and encodes them all; later adds encode theirs too.
  void build_sketch(size_t m, uint64_t seed, int threads);
  const TokenSketch* sketch() const { return sketch_ ? &*sketch_ : nullptr; }
  // The sketch's estimates (TokenSketch::score) for one query of nt tokens and n documents
  // (positions).
  void estimate(const float* q, size_t nt, const int64_t* docs, size_t n, uint32_t* out) const;
  size_t remove(const IdFilter& f) override { return labels_.remove(f, ndocs()); }
  bool contains(int64_t id) const override { return labels_.position_of(id, ndocs()) >= 0; }
  void compact() override;  // drops the removed documents' tokens
  const std::vector<int64_t>& ids() const { return labels_.raw(); }
  const std::vector<uint64_t>& removed_mask() const { return labels_.dead(); }
  // The decoded tokens of document i (times 1 / scale()).
  std::vector<float> tokens(size_t i) const;

  const Buffer<uint8_t>& codes() const { return codes_; }
  size_t mapped_bytes() const {  // tokens (and sketch codes) viewed in a file
    return codes_.viewed_bytes() + (sketch_ ? sketch_->mapped_bytes() : 0);
  }
  const std::vector<int64_t>& offsets() const { return offsets_; }
  // codes may view memory the caller keeps alive (a mapped file); writes copy them first.
  // A sketch comes back with sketch_m > 0 (its centroids and codes; the codes may view a file).
  void restore(Buffer<uint8_t> codes, std::vector<int64_t> offsets, float scale,
               std::vector<int64_t> ids = {}, std::vector<uint64_t> removed = {},
               size_t sketch_m = 0, std::vector<float> sketch_centroids = {},
               Buffer<uint8_t> sketch_codes = {});
  void reset() override;
  // Keeps the first n documents (undoes an add).
  void truncate(size_t n);

 private:
  struct Group;
  Group make_group(const float* q, const int64_t* q_offsets, size_t q0, size_t q1) const;
  // AMX tiles for bf16 rows (dim a multiple of 32) or i8 rows (of 64), when present and allowed.
  enum class Amx { none, bf16, i8 };
  Amx amx_kind() const;
  static void sum_queries(const Group& g, const float* colmax, float inv, float* out);
  // Stored tokens t0 .. t0 + n - 1, decoded (times 1 / scale()).
  void decode(size_t t0, size_t n, float* out) const;
  // Keeps the shortlist documents (positions, increasing) of query i the sketch rates best.
  void narrow(const float* q, const int64_t* q_offsets, size_t i, size_t shortlist,
              std::vector<int64_t>& docs) const;
  void score_docs(const Group& g, const int64_t* docs, size_t ndocs, std::vector<float>& rows,
                  std::vector<float>& colmax, float* out) const;

  size_t dim_;
  Storage storage_;
  float scale_ = 0.0f;  // 0 until the first add
  Buffer<uint8_t> codes_;
  std::vector<int64_t> offsets_{0};
  Labels labels_;
  std::optional<TokenSketch> sketch_;  // built by build_sketch, kept in step by every change
};

}  // namespace quanta
