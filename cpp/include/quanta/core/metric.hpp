// The vocabulary every index shares: the metric of its scores.
#pragma once
#include <cstdint>
#include <string>

namespace quanta {

// ip: inner product (higher is better); l2: squared Euclidean distance (lower is better);
// cosine: inner product of the normalized vectors.
enum class Metric : uint8_t { ip = 0, l2 = 1, cosine = 2 };
Metric metric_from_name(const std::string& name);
const char* metric_name(Metric m);

}  // namespace quanta
