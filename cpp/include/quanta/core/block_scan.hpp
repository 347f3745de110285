// The query-by-block scan shared by the indexes that score one query against a run of codes
// at a time (flat row scans, PQ ADC): tasks are (block, query) pairs, block-major so a block
// read from memory serves every query; each worker keeps its own top-k per query, and the
// merge is a total order, so the result never depends on the thread count.
#pragma once
#include <algorithm>
#include <cstddef>
#include <vector>

#include "quanta/core/labels.hpp"
#include "quanta/core/parallel.hpp"
#include "quanta/core/topk.hpp"

namespace quanta {

// Pushes count scores s into query i's top-k: of items begin, begin + 1, ..., or of items
// begin + pos[r] when pos is given.
inline void push_scores(TopKSet& top, size_t i, size_t begin, const float* s, size_t count,
                        const uint32_t* pos = nullptr) {
  float thr = top.threshold(i);
  for (size_t r = 0; r < count; ++r)
    if (s[r] >= thr) {
      top.push(i, s[r], int64_t(begin + (pos ? pos[r] : r)));
      thr = top.threshold(i);
    }
}

// A block's rows that a filtered search may return, gathered into one run of codes for the
// kernel (one per worker, reused).
class GatheredRows {
 public:
  // The codes to scan of rows [begin, begin + count) (`width` bytes each, from `codes`) that
  // labels allows under f; n gets their count. positions() is null when every row is allowed
  // (the codes returned are then the originals).
  const uint8_t* gather(const Labels& labels, const IdFilter* f, size_t begin, size_t count,
                        const uint8_t* codes, size_t width, size_t& n) {
    sel_.resize(count);
    n = labels.select(begin, count, f, sel_.data());
    all_ = n == count;
    if (all_) return codes;
    codes_.resize(n * width);
    for (size_t r = 0; r < n; ++r)
      std::copy_n(codes + size_t(sel_[r]) * width, width, codes_.data() + r * width);
    return codes_.data();
  }
  const uint32_t* positions() const { return all_ ? nullptr : sel_.data(); }

 private:
  std::vector<uint32_t> sel_;
  std::vector<uint8_t> codes_;
  bool all_ = true;
};

// scan(g, begin, count, top, worker) offers the queries of group g (queries g * group ..
// g * group + group - 1, group = 1 by default) the items [begin, begin + count) by pushing into
// `top` (the worker's heaps; push_scores does it for a score array). Returns the merged top-k
// of every query.
template <class ScanFn>
TopKSet scan_blocks(size_t nq, size_t n, size_t k, size_t block, int threads, ScanFn&& scan,
                    size_t group = 1) {
  const size_t nblocks = (n + block - 1) / block;
  const size_t ngroups = (nq + group - 1) / group;
  const size_t ntasks = nblocks * ngroups;
  const size_t nworkers = std::max<size_t>(1, std::min<size_t>(ntasks, size_t(threads)));
  std::vector<TopKSet> heaps(nworkers, TopKSet(nq, k));
  parallel_for(ntasks, int(nworkers), [&](size_t t, size_t w) {
    const size_t b = t / ngroups, g = t % ngroups;
    const size_t begin = b * block;
    scan(g, begin, std::min(n - begin, block), heaps[w], w);
  });
  for (size_t w = 1; w < nworkers; ++w) heaps[0].merge(heaps[w]);
  return std::move(heaps[0]);
}

}  // namespace quanta
