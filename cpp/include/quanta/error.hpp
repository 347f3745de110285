// Errors raised by the C++ core. The binding maps std::invalid_argument to ValueError and
// FormatError to ValueError; quanta::Error (internal failures) becomes quanta.QuantaError.
#pragma once
#include <stdexcept>
#include <string>

namespace quanta {

struct Error : std::runtime_error {
  using std::runtime_error::runtime_error;
};

inline void require(bool ok, const std::string& message) {
  if (!ok) throw std::invalid_argument(message);
}

}  // namespace quanta
