#include "quanta/core/metric.hpp"

#include <stdexcept>

namespace quanta {

Metric metric_from_name(const std::string& name) {
  if (name == "ip") return Metric::ip;
  if (name == "l2") return Metric::l2;
  if (name == "cosine") return Metric::cosine;
  throw std::invalid_argument("metric must be 'ip', 'l2' or 'cosine'; got '" + name + "'");
}

const char* metric_name(Metric m) {
  switch (m) {
    case Metric::ip: return "ip";
    case Metric::l2: return "l2";
    case Metric::cosine: return "cosine";
  }
  return "?";
}

}  // namespace quanta
