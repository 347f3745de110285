// Errors raised by the C++ core. The binding maps std::invalid_argument to ValueError and
// FormatError to ValueError; quanta::Error (internal failures) becomes quanta.QuantaError.
#pragma once
#include <cmath>
#include <cstddef>
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
  for (size_t i = 0; i < n; ++i)
    if (!std::isfinite(x[i]))
      throw std::invalid_argument(std::string(what) + " contains NaN or infinity at element " +
                                  std::to_string(i) + "; only finite values are accepted");
}

}  // namespace quanta
