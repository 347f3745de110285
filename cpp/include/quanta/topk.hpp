// Bounded top-k selection for a set of queries, under a total order: higher score first,
// then lower position. The order is total, so splitting the work across threads and merging
// gives the same result. All heaps live in two flat arrays: no allocation per query.
#pragma once
#include <algorithm>
#include <cstdint>
#include <limits>
#include <vector>

namespace quanta {

class TopKSet {
 public:
  TopKSet(size_t nq, size_t k) : k_(k), size_(nq, 0), score_(nq * k), pos_(nq * k) {}

  size_t queries() const { return size_.size(); }

  // Empties every heap and sets k, keeping the storage (no allocation when k does not grow).
  void reset(size_t k) {
    k_ = k;
    std::fill(size_.begin(), size_.end(), size_t(0));
    score_.resize(size_.size() * k);
    pos_.resize(size_.size() * k);
  }

  // Scores below this can never enter the top-k of query i (equal ones may, on position).
  float threshold(size_t i) const {
    return size_[i] < k_ ? -std::numeric_limits<float>::infinity() : score_[i * k_];
  }

  void push(size_t i, float score, int64_t pos) {
    if (k_ == 0) return;
    float* s = score_.data() + i * k_;
    int64_t* p = pos_.data() + i * k_;
    size_t& n = size_[i];
    if (n < k_) {
      s[n] = score;
      p[n] = pos;
      sift_up(s, p, n++);
    } else if (better(score, pos, s[0], p[0])) {
      s[0] = score;
      p[0] = pos;
      sift_down(s, p, n, 0);
    }
  }

  void merge(const TopKSet& other) {
    for (size_t i = 0; i < queries(); ++i)
      for (size_t j = 0; j < other.size_[i]; ++j)
        push(i, other.score_[i * k_ + j], other.pos_[i * k_ + j]);
  }

  // Writes query i's entries best first, the rest of the k slots as (pad, -1). Sorts the
  // heap in place (heapsort), so heap i is spent afterwards.
  void write_sorted(size_t i, float* scores, int64_t* pos, float pad) {
    float* s = score_.data() + i * k_;
    int64_t* p = pos_.data() + i * k_;
    const size_t n = size_[i];
    for (size_t end = n; end > 1; --end) {  // move the worst to the back, repeatedly
      std::swap(s[0], s[end - 1]);
      std::swap(p[0], p[end - 1]);
      sift_down(s, p, end - 1, 0);
    }
    std::copy(s, s + n, scores);
    std::copy(p, p + n, pos);
    std::fill(scores + n, scores + k_, pad);
    std::fill(pos + n, pos + k_, int64_t(-1));
  }

  static bool better(float sa, int64_t pa, float sb, int64_t pb) {
    return sa > sb || (sa == sb && pa < pb);
  }

 private:
  // Min-heap on the order above: the root is the worst kept entry.
  static bool worse(const float* s, const int64_t* p, size_t a, size_t b) {
    return better(s[b], p[b], s[a], p[a]);
  }
  static void swap_at(float* s, int64_t* p, size_t a, size_t b) {
    std::swap(s[a], s[b]);
    std::swap(p[a], p[b]);
  }
  static void sift_up(float* s, int64_t* p, size_t i) {
    while (i > 0) {
      const size_t parent = (i - 1) / 2;
      if (!worse(s, p, i, parent)) break;
      swap_at(s, p, i, parent);
      i = parent;
    }
  }
  static void sift_down(float* s, int64_t* p, size_t n, size_t i) {
    for (;;) {
      size_t l = 2 * i + 1, r = l + 1, m = i;
      if (l < n && worse(s, p, l, m)) m = l;
      if (r < n && worse(s, p, r, m)) m = r;
      if (m == i) break;
      swap_at(s, p, i, m);
      i = m;
    }
  }

  size_t k_;
  std::vector<size_t> size_;
  std::vector<float> score_;
  std::vector<int64_t> pos_;
};

}  // namespace quanta
