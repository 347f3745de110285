// An index whose candidates are re-scored exactly (faiss's IndexRefine): the base index
// returns k * k_factor candidates per query, and a FlatIndex holding the same vectors under
// the same ids scores them again. add / remove / reset / compact go to both, so the two
// always hold the same rows.
#pragma once
#include <cstddef>
#include <cstdint>
#include <memory>

#include "quanta/core/index.hpp"
#include "quanta/core/search_params.hpp"
#include "quanta/index/flat.hpp"

namespace quanta {

struct RefineSearchParams : SearchParams {
  size_t k_factor = 0;                 // candidates per result; 0: the index's
  std::shared_ptr<SearchParams> base;  // the base's own settings (k, threads and filter are
                                       // set from these), or null for its defaults
  std::unique_ptr<SearchParams> clone() const override {
    return std::make_unique<RefineSearchParams>(*this);
  }
};

class RefineIndex final : public Index {
 public:
  // Both must have the same dim and metric; refine must hold the same rows as base.
  RefineIndex(std::shared_ptr<Index> base, std::shared_ptr<FlatIndex> refine, size_t k_factor);

  size_t dim() const override { return base_->dim(); }
  Metric metric() const override { return base_->metric(); }
  size_t ntotal() const override { return base_->ntotal(); }
  bool is_trained() const override { return base_->is_trained() && refine_->is_trained(); }
  size_t memory_usage() const override { return base_->memory_usage() + refine_->memory_usage(); }
  size_t k_factor() const { return k_factor_; }
  void set_k_factor(size_t k_factor);
  const std::shared_ptr<Index>& base() const { return base_; }
  const std::shared_ptr<FlatIndex>& refine() const { return refine_; }

  // Trains the base, and the re-ranking vectors' storage when it is not trained yet.
  void train(const float* x, size_t n, const TrainParams& p) override;
  void add(const float* x, size_t n, const int64_t* ids, int threads) override;
  // distances: the refine index's (exact for f32 vectors).
  void search(const float* q, size_t nq, const SearchParams& params, float* distances,
              int64_t* labels) const override;
  size_t remove(const IdFilter& f) override;
  bool contains(int64_t id) const override { return base_->contains(id); }
  void reset() override;
  void compact() override;
  void reconstruct(const int64_t* ids, size_t n, float* out) const override {
    refine_->reconstruct(ids, n, out);
  }

 private:
  std::shared_ptr<Index> base_;
  std::shared_ptr<FlatIndex> refine_;
  size_t k_factor_;
};

}  // namespace quanta
