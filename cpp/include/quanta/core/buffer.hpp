// An array that either owns its elements or views memory owned elsewhere (a memory-mapped
// file kept alive by the caller), so a loaded index can answer queries without copying.
#pragma once
#include <cstddef>
#include <cstdlib>
#include <new>
#include <utility>
#include <vector>
#if defined(__linux__)
#include <sys/mman.h>
#endif
#if defined(__GLIBC__)
#include <malloc.h>
#endif

namespace quanta {

// Allocates arrays of 16 MiB or more on 2 MiB boundaries and, on Linux, asks for transparent
// huge pages (madvise; most systems give them only on request). A graph search reads rows
// scattered over hundreds of MiB: with 4 KiB pages nearly every row read also misses the
// TLB. Measured on a graph of 50k x 384 with 4-bit neighbour codes: 1.1-1.6x the QPS. The
// threshold bounds what the last, partly used huge page can waste to 1/8 of an array.
template <class T>
struct LargeAllocator {
  using value_type = T;
  static constexpr size_t kHuge = size_t(2) << 20, kLarge = size_t(16) << 20;
  LargeAllocator() = default;
  template <class U>
  LargeAllocator(const LargeAllocator<U>&) {}
  static bool large(size_t n) { return n >= kLarge / sizeof(T); }
  T* allocate(size_t n) {
    if (n > (size_t(-1) - kHuge) / sizeof(T)) throw std::bad_alloc();
#if defined(__linux__)
    if (large(n)) {
      const size_t bytes = (n * sizeof(T) + kHuge - 1) / kHuge * kHuge;
      void* p = std::aligned_alloc(kHuge, bytes);
      if (!p) throw std::bad_alloc();
      madvise(p, bytes, MADV_HUGEPAGE);  // a hint: refused, the pages are ordinary ones
      return static_cast<T*>(p);
    }
#endif
    return static_cast<T*>(::operator new(n * sizeof(T)));
  }
  void deallocate(T* p, size_t n) {
#if defined(__linux__)
    if (large(n)) return std::free(p);
#endif
    ::operator delete(p);
  }
  template <class U>
  bool operator==(const LargeAllocator<U>&) const { return true; }
  template <class U>
  bool operator!=(const LargeAllocator<U>&) const { return false; }
};

// Hands the allocator's free pages back to the system. glibc keeps memory freed in many small
// blocks (a build's per-list pieces) mapped: without this a build's transient peak stays
// resident afterwards.
inline void release_free_memory() {
#if defined(__GLIBC__)
  malloc_trim(0);
#endif
}

template <class T>
using LargeVector = std::vector<T, LargeAllocator<T>>;

template <class T>
class Buffer {
 public:
  Buffer() = default;
  Buffer(LargeVector<T> v) : own_(std::move(v)), p_(own_.data()), n_(own_.size()) {}
  Buffer(const std::vector<T>& v) : Buffer(LargeVector<T>(v.begin(), v.end())) {}
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

  // Changes the elements through f(LargeVector<T>&): a view is copied into owned memory first
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
  LargeVector<T> own_;
  const T* p_ = nullptr;
  size_t n_ = 0;
  bool viewing_ = false;
};

}  // namespace quanta
