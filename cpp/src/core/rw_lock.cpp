#include "quanta/core/rw_lock.hpp"

#include <algorithm>

#include "quanta/core/error.hpp"

namespace quanta {

size_t* ReadWriteLock::holds_of(std::thread::id me) {
  for (auto& h : holds_)
    if (h.first == me) return &h.second;
  return nullptr;
}

bool ReadWriteLock::may_read(std::thread::id me) const {
  if (writer_ == me) return true;
  const bool holds = std::any_of(holds_.begin(), holds_.end(),
                                 [&](const auto& h) { return h.first == me; });
  return holds || (writer_ == std::thread::id() && waiting_ == 0);
}

void ReadWriteLock::add_read(std::thread::id me) {
  ++readers_;
  if (size_t* n = holds_of(me))
    ++*n;
  else
    holds_.emplace_back(me, 1);
}

bool ReadWriteLock::try_read() {
  const auto me = std::this_thread::get_id();
  std::lock_guard<std::mutex> lock(mutex_);
  if (!may_read(me)) return false;
  add_read(me);
  return true;
}

void ReadWriteLock::read() {
  const auto me = std::this_thread::get_id();
  Lock lock(mutex_);
  changed_.wait(lock, [&] { return may_read(me); });
  add_read(me);
}

void ReadWriteLock::unlock_read() {
  const auto me = std::this_thread::get_id();
  std::lock_guard<std::mutex> lock(mutex_);
  size_t* n = holds_of(me);
  if (!n) throw Error("ReadWriteLock: unlock_read by a thread that holds no read");
  if (--*n == 0)
    holds_.erase(std::find_if(holds_.begin(), holds_.end(),
                              [&](const auto& h) { return h.first == me; }));
  if (--readers_ == 0 && waiting_) changed_.notify_all();
}

bool ReadWriteLock::take_write_now(std::thread::id me) {
  if (writer_ == me) {
    ++writes_;
    return true;
  }
  if (holds_of(me)) throw Error("an index was changed from inside one of its own searches");
  if (writer_ != std::thread::id() || readers_) return false;
  writer_ = me;
  writes_ = 1;
  return true;
}

bool ReadWriteLock::try_write() {
  std::lock_guard<std::mutex> lock(mutex_);
  return take_write_now(std::this_thread::get_id());
}

void ReadWriteLock::write() {
  const auto me = std::this_thread::get_id();
  Lock lock(mutex_);
  if (take_write_now(me)) return;
  ++waiting_;
  changed_.wait(lock, [&] { return writer_ == std::thread::id() && readers_ == 0; });
  --waiting_;
  writer_ = me;
  writes_ = 1;
}

void ReadWriteLock::unlock_write() {
  std::lock_guard<std::mutex> lock(mutex_);
  if (writer_ != std::this_thread::get_id())
    throw Error("ReadWriteLock: unlock_write by a thread that is not the writer");
  if (--writes_ == 0) {
    writer_ = std::thread::id();
    changed_.notify_all();
  }
}

}  // namespace quanta
