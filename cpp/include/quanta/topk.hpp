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

// The same selection for large k: each query keeps up to 2k candidates unordered and, when the
// buffer fills, keeps its k best (nth_element) and raises its threshold to the k-th score. A
// push is an append instead of a heap sift of log2(k) levels; the threshold lags the heap's
// a little, so a few more candidates are pushed. Same interface and results as TopKSet.
class TopKReservoir {
 public:
  TopKReservoir(size_t nq, size_t k)
      : k_(k), cap_(2 * k), size_(nq, 0), thr_(nq, -std::numeric_limits<float>::infinity()),
        buf_(nq * cap_) {}

  size_t queries() const { return size_.size(); }
  float threshold(size_t i) const { return thr_[i]; }

  void push(size_t i, float score, int64_t pos) {
    if (k_ == 0 || score < thr_[i]) return;
    size_t& n = size_[i];
    if (n == cap_) shrink(i);
    buf_[i * cap_ + n++] = {score, pos};
  }

  void merge(const TopKReservoir& other) {
    for (size_t i = 0; i < queries(); ++i)
      for (size_t j = 0; j < other.size_[i]; ++j) {
        const Entry& e = other.buf_[i * cap_ + j];
        push(i, e.score, e.pos);
      }
  }

  // Writes query i's entries best first, the rest of the k slots as (pad, -1).
  void write_sorted(size_t i, float* scores, int64_t* pos, float pad) {
    Entry* e = &buf_[i * cap_];
    const size_t n = size_[i], kept = std::min(n, k_);
    if (kept < n) std::nth_element(e, e + kept, e + n, Order());
    std::sort(e, e + kept, Order());
    for (size_t j = 0; j < kept; ++j) {
      scores[j] = e[j].score;
      pos[j] = e[j].pos;
    }
    std::fill(scores + kept, scores + k_, pad);
    std::fill(pos + kept, pos + k_, int64_t(-1));
  }

 private:
  struct Entry {
    float score;
    int64_t pos;
  };
  struct Order {  // a functor, not a function pointer: the sorts inline it
    bool operator()(const Entry& a, const Entry& b) const {
      return TopKSet::better(a.score, a.pos, b.score, b.pos);
    }
  };
  void shrink(size_t i) {
    Entry* e = &buf_[i * cap_];
    std::nth_element(e, e + (k_ - 1), e + cap_, Order());
    thr_[i] = e[k_ - 1].score;  // k candidates score at least this: nothing below can enter
    size_[i] = k_;
  }

  size_t k_, cap_;
  std::vector<size_t> size_;
  std::vector<float> thr_;
  std::vector<Entry> buf_;
};

}  // namespace quanta
