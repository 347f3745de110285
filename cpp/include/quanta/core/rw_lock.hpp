// One writer or many readers: the lock the Python layer puts on every index object (see
// quanta/_rwlock.py). Native, an acquire / release pair costs 0.18 us from Python against
// 0.45 us for one written in Python, and a native call can take it itself (GraphIndex.search).
//
// A thread that holds the lock may take it again: a writer may read and write, a reader may
// read (even past a waiting writer, which would otherwise wait on it forever). Waiting
// writers hold back new readers, so a stream of searches cannot starve them. A reader that
// asks to write is refused (quanta::Error): it would wait on itself.
#pragma once
#include <condition_variable>
#include <cstddef>
#include <mutex>
#include <thread>
#include <utility>
#include <vector>

namespace quanta {

class ReadWriteLock {
 public:
  // try_* take the lock if that needs no wait and say whether they did; read() and write()
  // wait. (The binding tries with the GIL held and waits without it.)
  bool try_read();
  void read();
  void unlock_read();
  bool try_write();
  void write();
  void unlock_write();

 private:
  using Lock = std::unique_lock<std::mutex>;
  using Holds = std::vector<std::pair<std::thread::id, size_t>>;  // read holds by thread (few)
  bool may_read(std::thread::id me);
  bool take_write_now(std::thread::id me);  // re-entry, or the lock free; throws for readers
  Holds::iterator holds_of(std::thread::id me);  // holds_.end() when none
  void add_read(std::thread::id me);

  std::mutex mutex_;
  std::condition_variable changed_;
  size_t readers_ = 0;  // read holds, re-entries included
  size_t waiting_ = 0;  // writers waiting
  size_t writes_ = 0;   // the writer's holds
  std::thread::id writer_;  // default: none
  Holds holds_;
};

}  // namespace quanta
