// Flat index of recurrent binary codes (recurrent_binary.hpp). Queries go through the same
// binarizer as the documents and may keep more of its levels (query_levels >= levels: a finer
// query at no storage cost); documents are scored exactly by the cosine of the two codes, on
// one of three paths with identical results (binary_codes.hpp). The metric (ip or cosine) is
// that of the float vectors, for a caller's re-ranking stage.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "quanta/codec/binary_codes.hpp"
#include "quanta/codec/recurrent_binary.hpp"
#include "quanta/core/index.hpp"
#include "quanta/core/labels.hpp"
#include "quanta/index/flat.hpp"

namespace quanta {

class BinaryIndex final : public Index {
 public:
  // scoring: "auto", "sdc", "popcount" or "u8" (see choose_binary_scoring).
  BinaryIndex(size_t dim, size_t m, size_t levels, size_t query_levels, Metric metric,
              const std::string& scoring);
  BinaryIndex(const BinaryIndex&) = delete;
  BinaryIndex& operator=(const BinaryIndex&) = delete;

  size_t dim() const override { return bin_.dim(); }
  size_t levels() const { return levels_; }             // documents'
  size_t query_levels() const { return bin_.levels(); }
  size_t code_words() const { return codes_.code_words(); }  // per document
  Metric metric() const override { return metric_; }
  BinaryScoring scoring() const { return scoring_; }
  size_t ntotal() const override { return codes_.size() - labels_.removed(); }  // live documents
  size_t rows() const { return codes_.size(); }  // stored rows, removed ones included
  bool is_trained() const override { return bin_.is_trained(); }
  size_t memory_usage() const override { return codes_.memory_usage() + labels_.memory_usage(); }
  RecurrentBinarizer& binarizer() { return bin_; }
  const RecurrentBinarizer& binarizer() const { return bin_; }

  // Nothing to learn here: the binarizer is fitted separately (binarizer().set_transforms;
  // quanta's Python layer fits it with NumPy). Refuses while it is not.
  void train(const float* x, size_t n, const TrainParams& p) override;
  void add(const float* x, size_t n, const int64_t* ids, int threads) override;
  // Adds codes of levels() levels made by binarizer().encode (n x code_words()); rejects
  // non-zero padding bits.
  void add_codes(const uint64_t* codes, size_t n, const int64_t* ids);
  // Filters and removed rows are tested on the candidates the kernels report.
  void search(const float* q, size_t nq, const SearchParams& params, float* distances,
              int64_t* labels) const override;
  void reset() override;
  size_t remove(const IdFilter& f) override { return labels_.remove(f, rows()); }
  bool contains(int64_t id) const override { return labels_.position_of(id, rows()) >= 0; }
  void compact() override;

  std::vector<uint64_t> codes() const { return codes_.codes(); }  // n x code_words()
  const std::vector<int64_t>& ids() const { return labels_.raw(); }
  const std::vector<uint64_t>& removed_mask() const { return labels_.dead(); }
  void restore(const std::vector<uint64_t>& codes, std::vector<int64_t> ids, size_t rows,
               std::vector<uint64_t> removed = {});
  // The codes as they sit in memory, and a restore from them that may view memory the caller
  // keeps alive (a mapped file).
  BinaryCodes::Stored stored() const { return codes_.stored(); }
  void restore_stored(BinaryCodes::Stored s, std::vector<int64_t> ids, size_t rows,
                      std::vector<uint64_t> removed = {});
  size_t mapped_bytes() const { return codes_.mapped_bytes(); }

 private:
  RecurrentBinarizer bin_;  // query_levels levels; documents use the first levels_
  size_t levels_;
  Metric metric_;
  BinaryScoring scoring_;
  BinaryCodes codes_;  // refers to bin_
  Labels labels_;
};

}  // namespace quanta
