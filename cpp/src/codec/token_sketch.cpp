#include "quanta/codec/token_sketch.hpp"

#include <algorithm>
#include <cstring>
#include <string>

#include "quanta/codec/fast_scan_codes.hpp"
#include "quanta/codec/kmeans.hpp"
#include "quanta/core/error.hpp"
#include "quanta/simd/kernels.hpp"

namespace quanta {

namespace {
size_t blocks_for(int64_t ntokens) {
  return (size_t(ntokens) + fast_scan::kBlock - 1) / fast_scan::kBlock;
}
}  // namespace

TokenSketch::TokenSketch(size_t dim, size_t m) : pq_(dim, m, 4) {}

size_t TokenSketch::memory_usage() const {
  return codes_.size() + blocks_.size() * sizeof(int64_t) +
         pq_.centroids().size() * sizeof(float);
}

void TokenSketch::train(const float* x, size_t n, uint64_t seed, int threads) {
  KMeansParams p;
  p.seed = seed;
  p.threads = threads;
  pq_.train(x, n, p);
}

void TokenSketch::add(const float* x, const int64_t* offsets, size_t n, int threads) {
  require(trained(), "the token sketch is not trained");
  const size_t m = pq_.m(), lb = fast_scan::block_bytes(m), ntok = size_t(offsets[n]);
  std::vector<uint8_t> plain(ntok * pq_.code_size());
  pq_.encode(x, ntok, plain.data(), threads);
  std::vector<int64_t> first{blocks_.back()};  // the new documents' blocks, n + 1 entries
  for (size_t i = 0; i < n; ++i)
    first.push_back(first.back() + int64_t(blocks_for(offsets[i + 1] - offsets[i])));
  const size_t before = blocks_.size();
  blocks_.insert(blocks_.end(), first.begin() + 1, first.end());
  try {
    codes_.edit([&](auto& codes) { codes.resize(size_t(first.back()) * lb, 0); });
  } catch (...) {  // out of memory: no document added
    blocks_.resize(before);
    throw;
  }
  codes_.edit([&](auto& codes) {
    for (size_t i = 0; i < n; ++i)
      fast_scan::pack(plain.data() + size_t(offsets[i]) * pq_.code_size(),
                      size_t(offsets[i + 1] - offsets[i]), m, 0,
                      codes.data() + size_t(first[i]) * lb);
  });
}

void TokenSketch::keep(const std::vector<size_t>& docs) {
  const size_t lb = fast_scan::block_bytes(pq_.m());
  std::vector<int64_t> blocks{0};
  codes_.edit([&](auto& codes) {
    for (size_t d : docs) {  // moving down in order never overwrites a block still to move
      const size_t b = size_t(blocks_[d]), nb = size_t(blocks_[d + 1]) - b;
      std::memmove(codes.data() + size_t(blocks.back()) * lb, codes.data() + b * lb, nb * lb);
      blocks.push_back(blocks.back() + int64_t(nb));
    }
    codes.resize(size_t(blocks.back()) * lb);
    codes.shrink_to_fit();
  });
  blocks_ = std::move(blocks);
}

void TokenSketch::truncate(size_t n) {
  blocks_.resize(n + 1);
  codes_.edit([&](auto& codes) {
    codes.resize(size_t(blocks_.back()) * fast_scan::block_bytes(pq_.m()));
  });
}

void TokenSketch::score(const float* q, size_t nt, const int64_t* token_offsets,
                        const int64_t* docs, size_t n, uint32_t* out) const {
  const Kernels& kern = kernels(active_isa());
  const size_t m = pq_.m(), lb = fast_scan::block_bytes(m), np = fast_scan::npairs(m);
  // Tables of -<q, centroid> (the fast-scan tables are smaller-is-better), one scale for all
  // the query's tokens: their per-token biases are then one constant per query.
  std::vector<float> tables(nt * m * 16), bias(nt);
  pq_.distance_tables(q, nt, false, tables.data());
  for (float& v : tables) v = -v;
  std::vector<uint8_t> luts(nt * lb);
  float scale;
  fast_scan::quantize_tables(tables.data(), nt, m, luts.data(), &scale, bias.data());
  size_t most = 1;
  for (size_t i = 0; i < n; ++i)
    most = std::max(most, size_t(blocks_[docs[i] + 1] - blocks_[docs[i]]));
  std::vector<uint16_t> acc(4 * most * fast_scan::kBlock);
  std::vector<uint32_t> below(4 * most);
  const uint16_t limit[4] = {0, 0, 0, 0};  // no candidate masks needed
  for (size_t i = 0; i < n; ++i) {
    const size_t d = size_t(docs[i]), b0 = size_t(blocks_[d]), nb = size_t(blocks_[d + 1]) - b0;
    const size_t len = size_t(token_offsets[d + 1] - token_offsets[d]);
    uint32_t total = 0;
    for (size_t t0 = 0; t0 < nt; t0 += 4) {
      const size_t ng = std::min<size_t>(4, nt - t0);
      const uint8_t* lut[4];
      for (size_t e = 0; e < ng; ++e) lut[e] = luts.data() + (t0 + e) * lb;
      kern.pq4_accumulate(codes_.data() + b0 * lb, nb, np, lut, ng, limit, acc.data(),
                          below.data());
      for (size_t e = 0; e < ng; ++e) {
        const uint16_t* a = acc.data() + e * nb * fast_scan::kBlock;
        total += *std::min_element(a, a + len);
      }
    }
    out[i] = total;
  }
}

void TokenSketch::restore(std::vector<float> centroids, Buffer<uint8_t> codes,
                          const std::vector<int64_t>& token_offsets) {
  std::vector<int64_t> blocks{0};
  for (size_t i = 1; i < token_offsets.size(); ++i)
    blocks.push_back(blocks.back() + int64_t(blocks_for(token_offsets[i] - token_offsets[i - 1])));
  require(codes.size() % fast_scan::block_bytes(pq_.m()) == 0 &&
              codes.size() / fast_scan::block_bytes(pq_.m()) == uint64_t(blocks.back()),
          "restore: the token sketch does not match the offsets");
  pq_.set_centroids(std::move(centroids));
  codes_ = std::move(codes);
  blocks_ = std::move(blocks);
}

}  // namespace quanta
