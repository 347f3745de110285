// An array that either owns its elements or views memory owned elsewhere (a memory-mapped
// file kept alive by the caller), so a loaded index can answer queries without copying.
#pragma once
#include <cstddef>
#include <utility>
#include <vector>

namespace quanta {

template <class T>
class Buffer {
 public:
  Buffer() = default;
  Buffer(std::vector<T> v) : own_(std::move(v)), p_(own_.data()), n_(own_.size()) {}
  static Buffer view(const T* p, size_t n) {
    Buffer b;
    b.p_ = p;
    b.n_ = n;
    b.viewing_ = true;
    return b;
  }
  Buffer(const Buffer& o) { *this = o; }
  Buffer(Buffer&& o) noexcept { *this = std::move(o); }
  Buffer& operator=(const Buffer& o) {
    own_ = o.own_;
    viewing_ = o.viewing_;
    p_ = viewing_ ? o.p_ : own_.data();
    n_ = o.n_;
    return *this;
  }
  Buffer& operator=(Buffer&& o) noexcept {
    own_ = std::move(o.own_);
    viewing_ = o.viewing_;
    p_ = viewing_ ? o.p_ : own_.data();
    n_ = o.n_;
    o.p_ = nullptr;
    o.n_ = 0;
    return *this;
  }

  const T* data() const { return p_; }
  size_t size() const { return n_; }
  bool empty() const { return n_ == 0; }
  const T& operator[](size_t i) const { return p_[i]; }
  const T& back() const { return p_[n_ - 1]; }
  const T* begin() const { return p_; }
  const T* end() const { return p_ + n_; }
  bool viewing() const { return viewing_; }
  size_t viewed_bytes() const { return viewing_ ? n_ * sizeof(T) : 0; }

  // Changes the elements through f(std::vector<T>&): a view is copied into owned memory first
  // (copy on write), so a memory-mapped index stays usable after add / remove / compact.
  template <class F>
  void edit(F&& f) {
    if (viewing_) {
      own_.assign(p_, p_ + n_);
      viewing_ = false;
    }
    f(own_);
    p_ = own_.data();
    n_ = own_.size();
  }

 private:
  std::vector<T> own_;
  const T* p_ = nullptr;
  size_t n_ = 0;
  bool viewing_ = false;
};

}  // namespace quanta
