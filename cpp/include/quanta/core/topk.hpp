// Bounded top-k selection for a set of queries, under a total order: higher score first,
// then lower position. The order is total, so splitting the work across threads and merging
// gives the same result. All heaps live in two flat arrays: no allocation per query. Pushes
// to different queries may come from different threads at once.
#pragma once
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <functional>
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

  // A NaN score (only from corrupt stored data) never enters: it has no place in the order.
  void push(size_t i, float score, int64_t pos) {
    if (k_ == 0 || std::isnan(score)) return;
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

// Each of n scores' bucket in a histogram over their range (256 buckets, monotone in the
// score: a higher score never lands in a lower bucket) and the bucket holding the k-th best
// (1 <= k <= n): only that bucket's scores need comparing to find the k best. Linear in n
// and branch-light.
struct ScoreBuckets {
  static constexpr size_t kBuckets = 256;
  std::vector<uint8_t> of;  // the bucket of each score
  size_t edge = 0;          // the bucket of the k-th best
  size_t above = 0;         // how many score in higher buckets (fewer than k)

  void split(const float* s, size_t n, size_t k) {
    float lo8[8], hi8[8];  // eight running extremes: vectorizes, no loop-carried chain
    for (size_t u = 0; u < 8; ++u) lo8[u] = hi8[u] = s[n - 1 - u % n];
    for (size_t i = 0; i < n; i += 8)
      for (size_t u = 0; u < 8; ++u) {
        const float v = s[std::min(i + u, n - 1)];
        lo8[u] = v < lo8[u] ? v : lo8[u];
        hi8[u] = v > hi8[u] ? v : hi8[u];
      }
    float lo = lo8[0], hi = hi8[0];
    for (size_t u = 1; u < 8; ++u) {
      lo = lo8[u] < lo ? lo8[u] : lo;
      hi = hi8[u] > hi ? hi8[u] : hi;
    }
    // an infinite range gives scale 0 (every score in bucket 0): correct, only slower
    const float scale = hi > lo ? float(kBuckets) / (hi - lo) : 0.0f;
    of.resize(n);
    uint8_t* bk = of.data();
    for (size_t i = 0; i < n; ++i) {  // int32 conversion: vectorizes, where size_t's does not
      float b = (s[i] - lo) * scale;
      b = b > 0.0f ? b : 0.0f;  // NaN (corrupt data) to bucket 0 (maxps), inf to the top (minps)
      b = b < float(kBuckets - 1) ? b : float(kBuckets - 1);
      bk[i] = uint8_t(int(b));
    }
    // Four histograms, summed after: a run of equal buckets would otherwise chain each
    // increment on the previous one's store.
    uint32_t part[4][kBuckets] = {};
    size_t i4 = 0;
    for (; i4 + 4 <= n; i4 += 4)
      for (size_t u = 0; u < 4; ++u) ++part[u][bk[i4 + u]];
    for (; i4 < n; ++i4) ++part[0][bk[i4]];
    size_t hist[kBuckets];
    for (size_t b = 0; b < kBuckets; ++b)
      hist[b] = part[0][b] + part[1][b] + part[2][b] + part[3][b];
    edge = kBuckets;
    above = 0;
    while (above + hist[edge - 1] < k) above += hist[--edge];
    --edge;
  }
};

// The positions of the k best of n scores (higher first, then lower position), in no
// particular order, written to out: only the k-th best's bucket is compared. Where a heap
// of k pays log2(k) unpredictable branches per push: meant for selecting many of a few
// thousand (an IVF query's lists).
inline void select_top(const float* s, size_t n, size_t k, int64_t* out) {
  k = std::min(k, n);
  if (k == 0) return;
  thread_local ScoreBuckets buckets;
  thread_local std::vector<std::pair<float, int64_t>> ties;
  buckets.split(s, n, k);
  const uint8_t* bk = buckets.of.data();
  const size_t edge = buckets.edge;
  ties.clear();
  size_t w = 0;
  for (size_t i = 0; i < n; ++i) {
    if (bk[i] > edge)
      out[w++] = int64_t(i);
    else if (bk[i] == edge)
      ties.emplace_back(s[i], int64_t(i));
  }
  const size_t need = k - buckets.above;
  std::partial_sort(ties.begin(), ties.begin() + need, ties.end(), [](const auto& a, const auto& b) {
    return TopKSet::better(a.first, a.second, b.first, b.second);
  });
  for (size_t j = 0; j < need; ++j) out[w++] = ties[j].second;
}

// From this k on, scans that push many candidates collect in reservoirs (below) instead of
// heaps. Measured on the IVF fast-scan scan (MiniLM, 1,024 lists): 10% faster at k 80,
// level or slower at k 20-40 (a reservoir's 2k entries per query spill out of L2 sooner).
constexpr size_t kReservoirK = 64;

// The same selection for large k: each query keeps up to 2k candidates unordered and, when the
// buffer fills, keeps its k best (ScoreBuckets) and raises its threshold to the k-th score. A
// push is an append instead of a heap sift of log2(k) levels; the threshold lags the heap's
// a little, so a few more candidates are pushed. Same interface and results as TopKSet; as
// there, pushes to different queries may come from different threads.
class TopKReservoir {
 public:
  TopKReservoir(size_t nq, size_t k)
      : k_(k), cap_(2 * k), size_(nq, 0), thr_(nq, -std::numeric_limits<float>::infinity()),
        buf_(nq * cap_) {}

  size_t queries() const { return size_.size(); }
  float threshold(size_t i) const { return thr_[i]; }

  void push(size_t i, float score, int64_t pos) {
    if (k_ == 0 || !(score >= thr_[i])) return;  // NaN too, as TopKSet
    size_t& n = size_[i];
    if (n == cap_) shrink(i, n);
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
    const Entry* e = &buf_[i * cap_];
    if (size_[i] > k_) shrink(i, size_[i]);
    const size_t kept = size_[i];
    // Sorted as 64-bit integers (the score's bits in descending order, then the slot): about
    // twice as fast as sorting the entries by score and position; runs of equal scores are
    // then put in position order.
    thread_local std::vector<uint64_t> keys;  // scratch per thread, as shrink's
    keys.resize(kept);
    for (size_t j = 0; j < kept; ++j) {
      uint32_t b;
      std::memcpy(&b, &e[j].score, 4);
      b = (b & 0x80000000u) ? b : ~b & 0x7fffffffu;  // higher score: smaller key
      keys[j] = uint64_t(b) << 32 | j;
    }
    std::sort(keys.begin(), keys.end());
    for (size_t j = 0; j < kept; ++j) {
      const Entry& x = e[keys[j] & 0xffffffffu];
      scores[j] = x.score;
      pos[j] = x.pos;
    }
    for (size_t a = 0, b; a < kept; a = b) {
      for (b = a + 1; b < kept && scores[b] == scores[a];) ++b;
      if (b - a > 1) std::sort(pos + a, pos + b);
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
  // Keeps the k best of query i's n > k entries: those above the k-th best's bucket (see
  // ScoreBuckets) and the best of that bucket's, compared in full. The threshold becomes the
  // k-th best score.
  void shrink(size_t i, size_t n) {
    // scratch per thread: queries of one collector may be pushed to from several threads
    thread_local std::vector<float> scores;
    thread_local ScoreBuckets buckets;
    thread_local std::vector<Entry> ties;
    Entry* e = &buf_[i * cap_];
    scores.resize(n);
    for (size_t j = 0; j < n; ++j) scores[j] = e[j].score;
    buckets.split(scores.data(), n, k_);
    const uint8_t* bk = buckets.of.data();
    size_t above = 0;
    ties.clear();
    for (size_t j = 0; j < n; ++j) {
      if (bk[j] > buckets.edge)
        e[above++] = e[j];  // above <= j: never overwrites an unread entry
      else if (bk[j] == buckets.edge)
        ties.push_back(e[j]);
    }
    const size_t need = k_ - above;  // >= 1: the k-th best is in the edge bucket
    std::nth_element(ties.begin(), ties.begin() + (need - 1), ties.end(), Order());
    std::copy(ties.begin(), ties.begin() + need, e + above);
    thr_[i] = ties[need - 1].score;  // k candidates score at least this: nothing below enters
    size_[i] = k_;
  }

  size_t k_, cap_;
  std::vector<size_t> size_;
  std::vector<float> thr_;
  std::vector<Entry> buf_;
};

}  // namespace quanta
