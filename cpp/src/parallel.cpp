#include "quanta/parallel.hpp"

#include <atomic>

namespace quanta {

namespace {
std::atomic<int> g_default_threads{0};
}

int hardware_threads() {
  unsigned n = std::thread::hardware_concurrency();
  return n ? int(n) : 1;
}

int default_threads() {
  int n = g_default_threads.load();
  return n > 0 ? n : hardware_threads();
}

void set_default_threads(int n) { g_default_threads.store(n > 0 ? n : 0); }

}  // namespace quanta
