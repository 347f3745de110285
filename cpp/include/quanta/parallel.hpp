// A per-call parallel-for (hnswlib's pattern): an atomic work counter, the first exception
// captured and rethrown after join, nothing thrown out of a worker.
#pragma once
#include <algorithm>
#include <atomic>
#include <cstddef>
#include <exception>
#include <mutex>
#include <thread>
#include <vector>

namespace quanta {

int hardware_threads();
int default_threads();              // set_default_threads value, or all cores
void set_default_threads(int n);    // 0 = all cores
inline int resolve_threads(int threads) { return threads > 0 ? threads : default_threads(); }

// Calls fn(task, worker) for task in [0, ntasks) on up to `threads` workers.
template <class Fn>
void parallel_for(size_t ntasks, int threads, Fn&& fn) {
  size_t nworkers = std::min<size_t>(ntasks, threads > 0 ? size_t(threads) : 1);
  if (nworkers <= 1) {
    for (size_t t = 0; t < ntasks; ++t) fn(t, size_t(0));
    return;
  }
  std::atomic<size_t> next{0};
  std::exception_ptr error;
  std::mutex error_mutex;
  auto work = [&](size_t worker) {
    for (;;) {
      size_t t = next.fetch_add(1);
      if (t >= ntasks) return;
      try {
        fn(t, worker);
      } catch (...) {
        std::lock_guard<std::mutex> lock(error_mutex);
        if (!error) error = std::current_exception();
        next.store(ntasks);
      }
    }
  };
  std::vector<std::thread> pool;
  pool.reserve(nworkers - 1);
  for (size_t w = 1; w < nworkers; ++w) pool.emplace_back(work, w);
  work(0);
  for (auto& th : pool) th.join();
  if (error) std::rethrow_exception(error);
}

}  // namespace quanta
