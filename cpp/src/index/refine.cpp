#include "quanta/index/refine.hpp"

#include <string>
#include <vector>

#include "quanta/core/error.hpp"

namespace quanta {

RefineIndex::RefineIndex(std::shared_ptr<Index> base, std::shared_ptr<FlatIndex> refine,
                         size_t k_factor)
    : base_(std::move(base)), refine_(std::move(refine)), k_factor_(1) {
  require(base_ != nullptr && refine_ != nullptr, "RefineIndex: no base or refine index");
  require(base_->dim() == refine_->dim() && base_->metric() == refine_->metric(),
          "RefineIndex: the base and refine indexes must have the same dim and metric");
  set_k_factor(k_factor);
}

void RefineIndex::set_k_factor(size_t k_factor) {
  require(k_factor >= 1, "refine_factor must be >= 1; got " + std::to_string(k_factor));
  k_factor_ = k_factor;
}

void RefineIndex::train(const float* x, size_t n, const TrainParams& p) {
  base_->train(x, n, p);
  if (!refine_->is_trained()) refine_->train(x, n);
}

void RefineIndex::add(const float* x, size_t n, const int64_t* ids, int threads) {
  // The base first: it checks the input (and that it is trained) before changing anything,
  // and the refine store then takes the same rows.
  base_->add(x, n, ids, threads);
  refine_->add(x, n, ids, threads);
}

void RefineIndex::search(const float* q, size_t nq, const SearchParams& params,
                         float* distances, int64_t* labels) const {
  require(params.k > 0, "search: k must be >= 1; got 0");
  const RefineSearchParams own = params_as<RefineSearchParams>(params);
  const size_t factor = own.k_factor ? own.k_factor : k_factor_;
  std::unique_ptr<SearchParams> bp = own.base ? own.base->clone() : std::make_unique<SearchParams>();
  bp->k = params.k * factor;
  bp->threads = params.threads;
  bp->filter = params.filter;  // the base returns allowed candidates only
  std::vector<float> cd(nq * bp->k);
  std::vector<int64_t> ci(nq * bp->k);
  base_->search(q, nq, *bp, cd.data(), ci.data());
  refine_->search_subset(q, nq, ci.data(), bp->k, params.k, params.threads, distances, labels);
}

size_t RefineIndex::remove(const IdFilter& f) {
  refine_->remove(f);
  return base_->remove(f);
}

void RefineIndex::reset() {
  base_->reset();
  refine_->reset();
}

void RefineIndex::compact() {
  base_->compact();
  refine_->compact();
}

}  // namespace quanta
