// What the device allows: the driver's status, the shared memory a block may opt into, and
// host-side batching of launches over the grid's y dimension (at most 65,535 blocks).
// No Python here.
#pragma once
#include <cuda_runtime.h>

#include <algorithm>
#include <cstddef>
#include <string>

namespace quanta {
namespace cuda {

int device_count();           // 0 when there is no driver or device
std::string device_error();   // why device_count() is 0 ("" when a device is visible)
int runtime_version();
int driver_version();         // 0 when there is no driver

// The most shared memory one block of `kernel` may use on the current device, after opting
// in beyond the 48 KiB default when `bytes` needs it. False when `bytes` exceeds the device's
// limit (the caller then reads from global memory instead).
bool fit_shared(const void* kernel, size_t bytes);

constexpr size_t kMaxGridY = 65535;

// Calls launch(first, count) over [0, total) in pieces of at most kMaxGridY * per_block items,
// so that no launch has more than kMaxGridY blocks along y.
template <class Launch>
void batch_y(size_t total, size_t per_block, Launch launch) {
  const size_t step = kMaxGridY * per_block;
  for (size_t first = 0; first < total; first += step) launch(first, std::min(step, total - first));
}

}  // namespace cuda
}  // namespace quanta
