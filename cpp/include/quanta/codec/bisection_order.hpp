// Document reordering by recursive graph bisection (BP: Dhulipala et al., KDD 2016; the
// faster variant of Mackenzie et al., ECIR 2019): documents sharing terms end up next to
// each other, so the coordinate-wise maximum of a run of neighbouring documents (a block-max
// summary) stays close to each of them.
//
// The order is cut in halves; for up to `iters` rounds the documents whose move to the other
// half most lowers the log-gap cost sum_t d1 log2(n1 / (d1 + 1)) + d2 log2(n2 / (d2 + 1))
// (d1, d2: documents of each half holding term t) trade places, pair by pair while a pair's
// combined gain is positive; then each half is cut again, until parts of `leaf` documents.
// Halves are cut at multiples of `leaf`, so every leaf part but the last holds exactly `leaf`
// documents: fixed-size blocks of the result are the leaf parts.
#pragma once
#include <cstddef>
#include <cstdint>
#include <vector>

namespace quanta {

// A permutation of the n CSR rows (new position -> row), deterministic for any thread count.
std::vector<uint32_t> bisection_order(const int64_t* indptr, const int32_t* indices, size_t n,
                                      size_t dim, size_t leaf, size_t iters, int threads);

}  // namespace quanta
