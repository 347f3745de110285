// Ragged batches of token vectors (multi-vector documents and queries): one float32 matrix of
// all tokens plus int64 offsets, set i being rows offsets[i] .. offsets[i + 1].
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>

#include "quanta/core/error.hpp"

namespace quanta {

// A batch of n sets: set i is rows offsets[i] .. offsets[i + 1] of tokens (ntokens x dim).
struct TokenSets {
  const float* tokens;
  size_t ntokens;
  const int64_t* offsets;  // n + 1
  size_t n;
};

// Offsets of n sets over ntokens rows: start at 0, end at ntokens, every set non-empty.
inline void validate_sets(const int64_t* offsets, size_t n, size_t ntokens, const char* what) {
  const std::string w(what);
  require(n > 0, w + ": no sets given");
  require(offsets[0] == 0, w + " must start at 0");
  for (size_t i = 0; i < n; ++i)
    require(offsets[i + 1] > offsets[i],
            w + ": set " + std::to_string(i) +
                (offsets[i + 1] == offsets[i] ? " is empty (every set needs at least one token)"
                                              : " has decreasing offsets"));
  require(size_t(offsets[n]) == ntokens, w + " end at " + std::to_string(offsets[n]) +
                                             " but there are " + std::to_string(ntokens) +
                                             " token rows");
}

}  // namespace quanta
