// The query-by-block scan shared by the indexes that score one query against a run of codes
// at a time (flat row scans, PQ ADC): tasks are (block, query) pairs, block-major so a block
// read from memory serves every query; each worker keeps its own top-k per query, and the
// merge is a total order, so the result never depends on the thread count.
#pragma once
#include <algorithm>
#include <cstddef>
#include <vector>

#include "quanta/parallel.hpp"
#include "quanta/topk.hpp"

namespace quanta {

// score(i, begin, count, out, worker): scores (higher is better) of query i against items
// [begin, begin + count) into out. Returns the merged top-k of every query.
template <class ScoreFn>
TopKSet scan_blocks(size_t nq, size_t n, size_t k, size_t block, int threads,
                              ScoreFn&& score) {
  const size_t nblocks = (n + block - 1) / block;
  const size_t ntasks = nblocks * nq;
  const size_t nworkers = std::max<size_t>(1, std::min<size_t>(ntasks, size_t(threads)));
  std::vector<TopKSet> heaps(nworkers, TopKSet(nq, k));
  std::vector<std::vector<float>> bufs(nworkers, std::vector<float>(std::min(block, n)));
  parallel_for(ntasks, int(nworkers), [&](size_t t, size_t w) {
    const size_t b = t / nq, i = t % nq;
    const size_t begin = b * block, count = std::min(n - begin, block);
    float* s = bufs[w].data();
    score(i, begin, count, s, w);
    TopKSet& top = heaps[w];
    float thr = top.threshold(i);
    for (size_t r = 0; r < count; ++r)
      if (s[r] >= thr) {
        top.push(i, s[r], int64_t(begin + r));
        thr = top.threshold(i);
      }
  });
  for (size_t w = 1; w < nworkers; ++w) heaps[0].merge(heaps[w]);
  return std::move(heaps[0]);
}

}  // namespace quanta
