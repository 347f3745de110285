// IVF over recurrent binary codes: a coarse spherical k-means splits the documents into nlist
// lists (by inner product, on normalized vectors for cosine); each list keeps the documents'
// codes (of the vectors themselves, so one prepared query serves every list) in the layout
// of the scoring path (binary_codes.hpp). A search scans the nprobe best lists of each query.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "quanta/codec/binary_codes.hpp"
#include "quanta/codec/coarse_quantizer.hpp"
#include "quanta/codec/kmeans.hpp"
#include "quanta/codec/recurrent_binary.hpp"
#include "quanta/core/index.hpp"
#include "quanta/core/list_ids.hpp"

namespace quanta {

class IVFBinaryIndex final : public Index {
 public:
  IVFBinaryIndex(size_t dim, size_t nlist, size_t m, size_t levels, size_t query_levels,
                 Metric metric, const std::string& scoring);
  IVFBinaryIndex(const IVFBinaryIndex&) = delete;
  IVFBinaryIndex& operator=(const IVFBinaryIndex&) = delete;

  size_t dim() const override { return bin_.dim(); }
  size_t nlist() const { return nlist_; }
  size_t levels() const { return levels_; }
  size_t query_levels() const { return bin_.levels(); }
  size_t code_words() const { return (levels_ + 1) * bin_.words(); }
  Metric metric() const override { return metric_; }
  BinaryScoring scoring() const { return scoring_; }
  size_t ntotal() const override { return ntotal_; }
  // The binarizer is fitted separately (binarizer().set_transforms).
  bool is_trained() const override { return coarse_ && bin_.is_trained(); }
  size_t memory_usage() const override;
  RecurrentBinarizer& binarizer() { return bin_; }
  const RecurrentBinarizer& binarizer() const { return bin_; }

  void train_coarse(const float* x, size_t n, const KMeansParams& params);
  // The list centroids (coarse_niter iterations); the binarizer must be fitted already (see
  // BinaryIndex::train).
  void train(const float* x, size_t n, const TrainParams& p) override;
  void add(const float* x, size_t n, const int64_t* ids, int threads) override;
  // Filters are tested on each candidate's id before it enters a heap; a query its filter
  // leaves with fewer than k results is searched again with twice the lists, up to all.
  void search(const float* q, size_t nq, const IVFSearchParams& params, float* distances,
              int64_t* labels) const;
  void search(const float* q, size_t nq, const SearchParams& params, float* distances,
              int64_t* labels) const override {
    search(q, nq, params_as<IVFSearchParams>(params), distances, labels);
  }
  void reset() override;
  size_t remove(const IdFilter& f) override;  // drops the entries from their lists, order kept
  bool contains(int64_t id) const override { return locator_.where(ids_).count(id) > 0; }
  void compact() override {}  // remove() already frees the entries

  std::vector<float> centroids() const {  // nlist x dim (empty before training)
    return coarse_ ? coarse_->copy_centroids() : std::vector<float>();
  }
  // Serialized form: list sizes, then all codes and all ids, list by list.
  std::vector<uint64_t> list_sizes() const;
  std::vector<uint64_t> all_codes() const;
  std::vector<int64_t> all_ids() const;
  void restore(std::vector<float> centroids, const std::vector<uint64_t>& sizes,
               const std::vector<uint64_t>& codes, const std::vector<int64_t>& ids);
  // The lists as they sit in memory, concatenated (min_norm2: one per list), and a restore
  // from them; borrow: the lists view the arrays (kept alive by the caller: a mapped file)
  // and their contents are not read, only their sizes checked.
  BinaryCodes::Stored stored(std::vector<int64_t>& min_norm2) const;
  void restore_stored(std::vector<float> centroids, const std::vector<uint64_t>& sizes,
                      const BinaryCodes::Stored& s, const std::vector<int64_t>& min_norm2,
                      Buffer<int64_t> ids, bool borrow);
  size_t mapped_bytes() const;

 private:
  std::vector<float> prepared(const float* x, size_t n) const;  // normalized for cosine
  void set_centroids(const std::vector<float>& c);
  // Installs restored lists after checking the centroids (nothing changes on a throw).
  void set_lists(std::vector<float> centroids, std::vector<BinaryCodes> lists,
                 std::vector<Buffer<int64_t>> ids, size_t total);

  RecurrentBinarizer bin_;
  size_t levels_, nlist_;
  Metric metric_;
  BinaryScoring scoring_;
  std::unique_ptr<CoarseQuantizer> coarse_;  // the centroids, inner product over them
  std::vector<BinaryCodes> lists_;     // refer to bin_
  std::vector<Buffer<int64_t>> ids_;
  size_t ntotal_ = 0;
  ListIds locator_;
};

}  // namespace quanta
