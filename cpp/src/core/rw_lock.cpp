#include "quanta/core/rw_lock.hpp"

#include <algorithm>

#include "quanta/core/error.hpp"

namespace quanta {

ReadWriteLock::Holds::iterator ReadWriteLock::holds_of(std::thread::id me) {
  return std::find_if(holds_.begin(), holds_.end(), [&](const auto& h) { return h.first == me; });
}

bool ReadWriteLock::may_read(std::thread::id me) {
  return writer_ == me || holds_of(me) != holds_.end() ||
         (writer_ == std::thread::id() && waiting_ == 0);
}

void ReadWriteLock::add_read(std::thread::id me) {
  ++readers_;
  const auto h = holds_of(me);
  if (h != holds_.end())
    ++h->second;
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
  const auto h = holds_of(me);
  if (h == holds_.end()) throw Error("ReadWriteLock: unlock_read by a thread that holds no read");
  if (--h->second == 0) holds_.erase(h);
  if (--readers_ == 0 && waiting_) changed_.notify_all();
}

bool ReadWriteLock::take_write_now(std::thread::id me) {
  if (writer_ == me) {
    ++writes_;
    return true;
  }
  if (holds_of(me) != holds_.end()) throw Error("an index was changed from inside one of its own searches");
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
