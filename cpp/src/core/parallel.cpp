#include "quanta/core/parallel.hpp"

#include <condition_variable>
#include <cstdlib>
#include <string>
#include <thread>

#if defined(__linux__)
#include <pthread.h>
#include <sched.h>
#endif

namespace quanta {

namespace {

std::atomic<int> g_default_threads{0};
thread_local bool t_in_pool = false;  // this thread is running a pool task

int env_threads(const char* name) {
  const char* v = std::getenv(name);
  if (!v || !*v) return 0;
  char* end = nullptr;
  const long n = std::strtol(v, &end, 10);
  return (end && *end == '\0' && n > 0 && n < 1 << 20) ? int(n) : 0;
}

// Workers wait on a generation counter; a job names how many of them take part. The caller
// is worker 0 and returns once every other participant has finished.
class Pool {
 public:
  // False when another job holds the pool (the caller then runs on threads of its own).
  bool run(size_t nworkers, const std::function<void(size_t)>& work) {
    std::unique_lock<std::mutex> busy(busy_, std::try_to_lock);
    if (!busy.owns_lock()) return false;
    {
      std::lock_guard<std::mutex> lock(m_);
      while (threads_.size() + 1 < nworkers) {
        const size_t index = threads_.size() + 1;
        threads_.emplace_back([this, index] { loop(index); });
      }
      job_ = &work;
      participants_ = nworkers;
      remaining_ = nworkers - 1;
      ++generation_;
    }
    wake_.notify_all();
    t_in_pool = true;
    work(0);  // parallel_for's work never throws
    t_in_pool = false;
    std::unique_lock<std::mutex> lock(m_);
    done_.wait(lock, [&] { return remaining_ == 0; });
    job_ = nullptr;
    return true;
  }

 private:
  void loop(size_t index) {
    t_in_pool = true;
    uint64_t seen = 0;
    for (;;) {
      const std::function<void(size_t)>* job;
      {
        std::unique_lock<std::mutex> lock(m_);
        wake_.wait(lock, [&] { return generation_ != seen; });
        seen = generation_;
        if (index >= participants_) continue;
        job = job_;
      }
      (*job)(index);
      std::lock_guard<std::mutex> lock(m_);
      if (--remaining_ == 0) done_.notify_one();
    }
  }

  std::mutex busy_;  // held by the job in progress
  std::mutex m_;
  std::condition_variable wake_, done_;
  std::vector<std::thread> threads_;  // never joined: the pool lives as long as the process
  const std::function<void(size_t)>* job_ = nullptr;
  size_t participants_ = 0, remaining_ = 0;
  uint64_t generation_ = 0;
};

Pool* g_pool = nullptr;
std::mutex g_pool_mutex;

Pool& pool() {
  std::lock_guard<std::mutex> lock(g_pool_mutex);
  if (!g_pool) {
    g_pool = new Pool;  // deliberately leaked: worker threads outlive static destructors
#if defined(__linux__)
    static bool registered = false;
    if (!registered) {  // a forked child has none of the parent's pool threads: start afresh
      pthread_atfork(nullptr, nullptr, [] { g_pool = nullptr; });
      registered = true;
    }
#endif
  }
  return *g_pool;
}

}  // namespace

int hardware_threads() {
#if defined(__linux__)
  cpu_set_t set;
  if (sched_getaffinity(0, sizeof(set), &set) == 0) {
    const int n = CPU_COUNT(&set);
    if (n > 0) return n;
  }
#endif
  const unsigned n = std::thread::hardware_concurrency();
  return n ? int(n) : 1;
}

int default_threads() {
  const int n = g_default_threads.load(std::memory_order_relaxed);
  if (n > 0) return n;
  // Read once: every threads=0 call asks, and the environment plus the affinity syscall cost
  // about 0.5 us, a tenth of a one-query graph search.
  static const int from_environment = [] {
    int e = env_threads("QUANTA_NUM_THREADS");
    if (e <= 0) e = env_threads("OMP_NUM_THREADS");
    return e > 0 ? e : hardware_threads();
  }();
  return from_environment;
}

void set_default_threads(int n) { g_default_threads.store(n > 0 ? n : 0); }

void run_workers(size_t nworkers, const std::function<void(size_t)>& work) {
  if (t_in_pool) {  // a task of the pool asking for more threads: run its workers in turn
    for (size_t w = 0; w < nworkers; ++w) work(w);
    return;
  }
  if (pool().run(nworkers, work)) return;
  std::vector<std::thread> extra;  // the pool is busy with another caller's job
  extra.reserve(nworkers - 1);
  for (size_t w = 1; w < nworkers; ++w) extra.emplace_back(work, w);
  work(0);
  for (auto& th : extra) th.join();
}

}  // namespace quanta
