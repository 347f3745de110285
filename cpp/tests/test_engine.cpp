// The engine contract from C++ alone, as a system embedding quanta uses it (no Python): a
// chain from index_factory trained, filled and searched through Index, with removal and
// filters; SparseIndex and TokenStore through RowsIndex. Each result is checked against brute
// force. Exits non-zero on any failed check, printing what differed.
#include <algorithm>
#include <cstdio>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "quanta/core/index_factory.hpp"
#include "quanta/index/graph_index.hpp"
#include "quanta/index/refine.hpp"
#include "quanta/index/seismic.hpp"
#include "quanta/index/token_store.hpp"

using namespace quanta;

namespace {

int failures = 0;
int checks = 0;

void expect(bool ok, const std::string& what) {
  ++checks;
  if (!ok) {
    ++failures;
    std::printf("FAIL %s\n", what.c_str());
  }
}

std::mt19937 rng(7);

// n points around 20 centres in dim dimensions.
std::vector<float> clustered(size_t n, size_t dim) {
  std::normal_distribution<float> g(0.0f, 1.0f);
  std::vector<float> centres(20 * dim), x(n * dim);
  for (float& c : centres) c = 4.0f * g(rng);
  for (size_t i = 0; i < n; ++i)
    for (size_t j = 0; j < dim; ++j) x[i * dim + j] = centres[(i % 20) * dim + j] + g(rng);
  return x;
}

// Ids of the k rows of x with the largest inner product with q, among those `allowed` keeps.
template <class Allowed>
std::vector<int64_t> brute_force(const std::vector<float>& x, size_t dim, const float* q,
                                 size_t k, const std::vector<int64_t>& ids, Allowed allowed) {
  std::vector<std::pair<float, int64_t>> s;
  for (size_t i = 0; i < ids.size(); ++i) {
    if (!allowed(ids[i])) continue;
    float d = 0.0f;
    for (size_t j = 0; j < dim; ++j) d += x[i * dim + j] * q[j];
    s.emplace_back(-d, ids[i]);
  }
  std::sort(s.begin(), s.end());
  std::vector<int64_t> out;
  for (size_t r = 0; r < k && r < s.size(); ++r) out.push_back(s[r].second);
  return out;
}

double overlap(const int64_t* got, const std::vector<int64_t>& truth) {
  size_t hit = 0;
  for (int64_t t : truth) hit += std::count(got, got + truth.size(), t) > 0;
  return truth.empty() ? 1.0 : double(hit) / double(truth.size());
}

void dense_chain() {
  const size_t n = 4000, dim = 32, nq = 20, k = 10;
  const std::vector<float> x = clustered(n, dim);
  std::vector<float> q(x.begin(), x.begin() + nq * dim);  // near stored points: from the clusters
  std::normal_distribution<float> g(0.0f, 0.3f);
  for (float& v : q) v += g(rng);
  std::vector<int64_t> ids(n);
  for (size_t i = 0; i < n; ++i) ids[i] = int64_t(1000 + 3 * i);
  for (const char* spec : {"Flat(f16)", "IVF32,PQ32x4fs,Refine(f32)", "Graph16(f16),PQ32x4",
                           "Graph16(f16),RaBitQ"}) {
    const std::string s(spec);
    std::shared_ptr<Index> index = index_factory(dim, spec, Metric::ip);
    TrainParams tp;
    tp.threads = 1;  // one thread: the same graph every run
    index->train(x.data(), n, tp);
    index->add(x.data(), n, ids.data(), 1);
    expect(index->ntotal() == n, s + ": ntotal after add");
    // Every list probed (IVF), a wide beam (graph): results close to exact.
    IVFSearchParams ivf;
    ivf.nprobe = 32;
    RefineSearchParams refine;
    refine.base = std::make_shared<IVFSearchParams>(ivf);
    GraphSearchParams graph;
    graph.width = 128;
    SearchParams& p = s.rfind("IVF", 0) == 0 ? static_cast<SearchParams&>(refine)
                      : s.rfind("Graph", 0) == 0 ? static_cast<SearchParams&>(graph)
                                                 : static_cast<SearchParams&>(ivf);
    p.k = k;
    std::vector<float> d(nq * k);
    std::vector<int64_t> l(nq * k);
    index->search(q.data(), nq, p, d.data(), l.data());
    double recall = 0;
    for (size_t i = 0; i < nq; ++i)
      recall += overlap(l.data() + i * k,
                        brute_force(x, dim, q.data() + i * dim, k, ids, [](int64_t) { return true; }));
    expect(recall / nq >= 0.9, s + ": recall@10 " + std::to_string(recall / nq));
    std::printf("engine: %s recall@10 %.3f\n", spec, recall / nq);
    // Remove every id below 5000, then search with a filter allowing only ids % 2 == 1.
    const size_t gone = index->remove(IdFilter::from_range(0, 5000));
    expect(gone == (5000 - 1000 + 2) / 3, s + ": removed " + std::to_string(gone));
    std::vector<int64_t> odd;
    for (int64_t id : ids)
      if (id % 2) odd.push_back(id);
    p.filter = QueryFilters({IdFilter::from_ids(odd.data(), odd.size())});
    index->search(q.data(), nq, p, d.data(), l.data());
    bool ok = true;
    for (int64_t id : l) ok = ok && id >= 5000 && id % 2 == 1;
    expect(ok, s + ": a removed or filtered-out id was returned");
    index->compact();
    expect(index->ntotal() == n - gone && !index->contains(1000) && index->contains(ids[n - 1]),
           s + ": compact keeps the live rows");
  }
  bool refused = false;
  try {
    index_factory(dim, "OPQ8,PQ8x8", Metric::ip);
  } catch (const std::invalid_argument&) {
    refused = true;
  }
  expect(refused, "OPQ specs are refused natively");
}

void sparse_rows(SparseLayout layout) {
  // 300 documents of 8 terms out of 200, added in two batches (the second goes to the delta).
  const std::string name = layout == SparseLayout::blocks ? "sparse blocks" : "sparse lists";
  const size_t n = 300, vocab = 200, nnz = 8, k = 5;
  std::uniform_real_distribution<float> w(0.1f, 1.0f);
  std::vector<float> dense(n * vocab, 0.0f);
  SparseDocs docs;
  for (size_t i = 0; i < n; ++i) {
    std::vector<int32_t> t(vocab);
    for (size_t j = 0; j < vocab; ++j) t[j] = int32_t(j);
    std::shuffle(t.begin(), t.end(), rng);
    std::sort(t.begin(), t.begin() + nnz);
    for (size_t j = 0; j < nnz; ++j) {
      docs.indices.push_back(t[j]);
      docs.values.push_back(dense[i * vocab + size_t(t[j])] = w(rng));
    }
    docs.indptr.push_back(int64_t(docs.indices.size()));
    docs.ids.push_back(int64_t(10 * i));
  }
  SparseParams params;
  params.layout = layout;
  params.block_size = 4;
  SparseIndex index(vocab, params);
  // Rows [b, e) of docs as a batch of their own.
  const auto slice = [&](size_t b, size_t e) {
    SparseDocs part;
    const SparseRows all = docs.rows();
    part.append(SparseRows{all.indptr + b, all.indices, all.values, e - b}, docs.ids.data() + b);
    return part;
  };
  const SparseDocs first = slice(0, 200), rest = slice(200, n), queries = slice(40, 60);
  index.add(first.rows(), first.ids.data(), 2);
  index.add(rest.rows(), rest.ids.data(), 2);
  expect(index.ntotal() == n && index.pending() == 100, name + ": the second add is pending");
  index.remove(IdFilter::from_ids(std::vector<int64_t>{0, 2500}.data(), 2));
  SparseSearch p;
  p.k = k;
  p.exact = true;
  std::vector<float> d(20 * k);
  std::vector<int64_t> l(20 * k);
  auto recall = [&] {
    index.search(queries.rows(), p, d.data(), l.data());  // documents 40-59
    double r = 0;
    for (size_t i = 0; i < 20; ++i)
      r += overlap(l.data() + i * k,
                   brute_force(dense, vocab, dense.data() + (40 + i) * vocab, k, docs.ids,
                               [](int64_t id) { return id != 0 && id != 2500; }));
    return r / 20;
  };
  for (int round = 0; round < 2; ++round) {
    p.exact = true;
    expect(recall() == 1.0, name + ": exact search equals brute force (round " +
                                std::to_string(round) + ")");
    if (layout == SparseLayout::blocks) {  // every query term, bounds kept: nothing lost
      p.exact = false;
      p.query_cut = vocab;
      p.heap_factor = 0.97f;
      expect(recall() == 1.0, name + ": unpruned search equals brute force");
    }
    index.compact();  // the second round searches one rebuilt index
    expect(index.pending() == 0 && index.ntotal() == n - 2, name + ": compact");
  }
}

void token_sets() {
  const size_t dim = 16, ndocs = 50, per = 4, k = 5;
  const std::vector<float> x = clustered(ndocs * per, dim);
  std::vector<int64_t> offsets;
  for (size_t i = 0; i <= ndocs; ++i) offsets.push_back(int64_t(i * per));
  TokenStore store(dim, Storage::f32);
  store.add(TokenSets{x.data(), ndocs * per, offsets.data(), ndocs}, nullptr, 1);
  SearchParams p;
  p.k = k;
  std::vector<float> d(k);
  std::vector<int64_t> l(k);
  store.search(TokenSets{x.data(), per, offsets.data(), 1}, p, d.data(), l.data());
  // Chamfer of document 0 against every document, by brute force.
  std::vector<std::pair<float, int64_t>> s;
  for (size_t doc = 0; doc < ndocs; ++doc) {
    float total = 0.0f;
    for (size_t a = 0; a < per; ++a) {
      float best = -1e30f;
      for (size_t b = 0; b < per; ++b) {
        float dot = 0.0f;
        for (size_t j = 0; j < dim; ++j) dot += x[a * dim + j] * x[(doc * per + b) * dim + j];
        best = std::max(best, dot);
      }
      total += best;
    }
    s.emplace_back(-total, int64_t(doc));
  }
  std::sort(s.begin(), s.end());
  bool ok = true;
  for (size_t r = 0; r < k; ++r) ok = ok && l[r] == s[r].second;
  expect(ok, "tokens: exact Chamfer top-k equals brute force");
}

}  // namespace

int main() {
  dense_chain();
  sparse_rows(SparseLayout::lists);
  sparse_rows(SparseLayout::blocks);
  token_sets();
  std::printf("engine: %d checks, %d failed\n", checks, failures);
  return failures ? 1 : 0;
}
