// parallel_for on one persistent worker pool (hnswlib's pattern for the work itself: an
// atomic work counter, the first exception captured and rethrown after every worker is done,
// nothing thrown out of a worker). The pool's threads start on first use and are reused by
// every later call; a call made while the pool serves another (searches from several Python
// threads at once) runs on threads of its own instead, and a call made from inside a pool
// task runs inline, so nothing waits on itself.
#pragma once
#include <algorithm>
#include <atomic>
#include <cstddef>
#include <exception>
#include <functional>
#include <mutex>
#include <vector>

namespace quanta {

// CPUs this process may run on (its affinity mask: taskset, containers), at least 1.
int hardware_threads();
// The thread count for threads=0: set_default_threads, else QUANTA_NUM_THREADS, else
// OMP_NUM_THREADS, else hardware_threads() (the last three read once, at the first call).
int default_threads();
void set_default_threads(int n);  // 0: back to the environment / hardware default
inline int resolve_threads(int threads) { return threads > 0 ? threads : default_threads(); }

// Runs work(worker) for worker in [0, nworkers) at once: worker 0 on the calling thread.
void run_workers(size_t nworkers, const std::function<void(size_t)>& work);

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
  run_workers(nworkers, [&](size_t worker) {
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
  });
  if (error) std::rethrow_exception(error);
}

}  // namespace quanta
