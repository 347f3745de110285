// Turns a CUDA error into a C++ exception (the bindings turn that into a Python one).
#pragma once
#include <cuda_runtime.h>

#include <stdexcept>
#include <string>

namespace quanta {
namespace cuda {

inline void check(cudaError_t err, const char* what) {
  if (err != cudaSuccess)
    throw std::runtime_error(std::string("CUDA error in ") + what + ": " + cudaGetErrorString(err));
}

}  // namespace cuda
}  // namespace quanta
