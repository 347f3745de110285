// A linear map before an index (faiss's IndexPreTransform with a LinearTransform): vectors
// and queries are multiplied by a d x d matrix, y = x M, before the inner index sees them;
// reconstructions are mapped back with M^T (M orthogonal: OPQ's learned rotation).
#pragma once
#include <cstddef>
#include <cstdint>
#include <memory>
#include <vector>

#include "quanta/core/index.hpp"

namespace quanta {

class PreTransformIndex final : public Index {
 public:
  // matrix: dim x dim, row-major, orthogonal (checked to within float rounding).
  PreTransformIndex(std::vector<float> matrix, std::shared_ptr<Index> inner);

  size_t dim() const override { return inner_->dim(); }
  Metric metric() const override { return inner_->metric(); }
  size_t ntotal() const override { return inner_->ntotal(); }
  bool is_trained() const override { return inner_->is_trained(); }
  size_t memory_usage() const override {
    return inner_->memory_usage() + matrix_.size() * sizeof(float);
  }
  const std::vector<float>& matrix() const { return matrix_; }
  const std::shared_ptr<Index>& inner() const { return inner_; }
  // n rows of x mapped: out = x M (n x dim).
  void apply(const float* x, size_t n, float* out, int threads) const;

  // Trains the inner index on the mapped rows (the matrix itself is given, not learned:
  // quanta.opq.train_rotation learns OPQ's).
  void train(const float* x, size_t n, const TrainParams& p) override;
  void add(const float* x, size_t n, const int64_t* ids, int threads) override;
  void search(const float* q, size_t nq, const SearchParams& params, float* distances,
              int64_t* labels) const override;
  RangeResult range_search(const float* q, size_t nq, float radius,
                           const SearchParams& params) const override;
  size_t remove(const IdFilter& f) override { return inner_->remove(f); }
  bool contains(int64_t id) const override { return inner_->contains(id); }
  void reset() override { inner_->reset(); }
  void compact() override { inner_->compact(); }
  void reconstruct(const int64_t* ids, size_t n, float* out) const override;

 private:
  std::vector<float> matrix_;
  std::shared_ptr<Index> inner_;
};

}  // namespace quanta
