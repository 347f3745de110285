// Document candidates from token-level retrieval (XTR's scoring, Lee et al. 2023): each query
// token retrieved its kp best document tokens (labelled by their document); a document's
// estimate is the sum over query tokens of its best retrieved similarity, a token that did not
// retrieve it counting that token's smallest retrieved similarity instead (an upper bound of
// what the document could hold there, when the retrieval was exact). Ranking by the estimate
// is ranking by the sum of gains (similarity - that smallest one) of the retrieved tokens.
#pragma once
#include <cstddef>
#include <cstdint>

namespace quanta {

// scores / labels: one row of kp per query token, best first (label -1: no hit), the tokens of
// query i in rows q_offsets[i] .. q_offsets[i + 1]. cand: nq x nc document labels by estimate,
// best first, ties by smaller label, -1 past the documents found.
void token_candidates(const float* scores, const int64_t* labels, size_t kp,
                      const int64_t* q_offsets, size_t nq, size_t nc, int threads,
                      int64_t* cand);

}  // namespace quanta
