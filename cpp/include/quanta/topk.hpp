// Bounded top-k selection under a total order: higher score first, then lower position.
// The order is total, so splitting the work across threads and merging gives the same result.
#pragma once
#include <algorithm>
#include <cstdint>
#include <limits>
#include <vector>

namespace quanta {

class TopK {
 public:
  explicit TopK(size_t k = 0) { reset(k); }

  void reset(size_t k) {
    k_ = k;
    score_.clear();
    pos_.clear();
    score_.reserve(k);
    pos_.reserve(k);
  }

  // Scores at or below this can never enter (positions arrive in increasing order per scan).
  float threshold() const {
    return score_.size() < k_ ? -std::numeric_limits<float>::infinity() : score_[0];
  }

  void push(float score, int64_t pos) {
    if (k_ == 0) return;
    if (score_.size() < k_) {
      score_.push_back(score);
      pos_.push_back(pos);
      sift_up(score_.size() - 1);
    } else if (better(score, pos, score_[0], pos_[0])) {
      score_[0] = score;
      pos_[0] = pos;
      sift_down(0);
    }
  }

  void merge(const TopK& other) {
    for (size_t i = 0; i < other.score_.size(); ++i) push(other.score_[i], other.pos_[i]);
  }

  // Writes the kept entries best first; the rest of the k slots get (pad_score, -1).
  void write_sorted(float* scores, int64_t* pos, float pad_score) const {
    std::vector<size_t> order(score_.size());
    for (size_t i = 0; i < order.size(); ++i) order[i] = i;
    std::sort(order.begin(), order.end(), [&](size_t a, size_t b) {
      return better(score_[a], pos_[a], score_[b], pos_[b]);
    });
    for (size_t i = 0; i < order.size(); ++i) {
      scores[i] = score_[order[i]];
      pos[i] = pos_[order[i]];
    }
    for (size_t i = order.size(); i < k_; ++i) {
      scores[i] = pad_score;
      pos[i] = -1;
    }
  }

  static bool better(float sa, int64_t pa, float sb, int64_t pb) {
    return sa > sb || (sa == sb && pa < pb);
  }

 private:
  // Min-heap on the order above: the root is the worst kept entry.
  bool worse_at(size_t a, size_t b) const { return better(score_[b], pos_[b], score_[a], pos_[a]); }
  void swap_at(size_t a, size_t b) {
    std::swap(score_[a], score_[b]);
    std::swap(pos_[a], pos_[b]);
  }
  void sift_up(size_t i) {
    while (i > 0) {
      size_t p = (i - 1) / 2;
      if (!worse_at(i, p)) break;
      swap_at(i, p);
      i = p;
    }
  }
  void sift_down(size_t i) {
    const size_t n = score_.size();
    for (;;) {
      size_t l = 2 * i + 1, r = l + 1, m = i;
      if (l < n && worse_at(l, m)) m = l;
      if (r < n && worse_at(r, m)) m = r;
      if (m == i) break;
      swap_at(i, m);
      i = m;
    }
  }

  size_t k_ = 0;
  std::vector<float> score_;
  std::vector<int64_t> pos_;
};

}  // namespace quanta
