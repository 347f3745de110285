// Errors raised by the C++ core. The binding maps std::invalid_argument to ValueError and
// FormatError to ValueError; quanta::Error (internal failures) becomes quanta.QuantaError.
#pragma once
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <stdexcept>
#include <string>

namespace quanta {

struct Error : std::runtime_error {
  using std::runtime_error::runtime_error;
};

inline void require(bool ok, const std::string& message) {
  if (!ok) throw std::invalid_argument(message);
}

// Rejects NaN and infinity in n floats; `what` names the argument in the message.
inline void require_finite(const float* x, size_t n, const char* what) {
  // A branch-free pass over blocks (it vectorizes; the check runs on every search and
  // k-means step), then the first offender's position for the message.
  constexpr size_t kBlock = 1024;
  for (size_t b = 0; b < n; b += kBlock) {
    const size_t e = b + kBlock < n ? b + kBlock : n;
    uint32_t bad = 0;
    for (size_t i = b; i < e; ++i) {
      uint32_t u;
      std::memcpy(&u, x + i, 4);
      bad |= uint32_t((u & 0x7f800000u) == 0x7f800000u);
    }
    if (!bad) continue;
    for (size_t i = b; i < e; ++i)
      if (!std::isfinite(x[i]))
        throw std::invalid_argument(std::string(what) + " contains NaN or infinity at element " +
                                    std::to_string(i) + "; only finite values are accepted");
  }
}

// Rejects values f16 cannot hold (it has no scale: they would be stored as inf). The message
// is built only on failure: formatting it per element once dominated f16 adds.
inline void require_f16_range(const float* x, size_t n, const char* what) {
  for (size_t i = 0; i < n; ++i)
    if (!(std::fabs(x[i]) <= 65504.0f))
      throw std::invalid_argument(std::string(what) + " holds " + std::to_string(x[i]) +
                                  ", beyond f16's range (65504); use f32 or bf16 storage, or "
                                  "scale them");
}

}  // namespace quanta
