// Shared by the GPU tests (host .cpp files): skip cleanly, with a message, when no GPU exists,
// and small RAII helpers for device and pinned memory.
#pragma once

#include <cuda_runtime.h>
#include <doctest/doctest.h>

#include <cstdio>
#include <stdexcept>
#include <string>

namespace nosa_test {

/// True when a CUDA device is usable. Prints the skip reason once per process otherwise.
inline bool gpu_available() {
  static const bool available = [] {
    int count = 0;
    cudaError_t err = cudaGetDeviceCount(&count);
    if (err != cudaSuccess || count == 0) {
      std::printf("[nosa] no CUDA GPU available (%s): GPU test cases are skipped\n",
                  err != cudaSuccess ? cudaGetErrorString(err) : "0 devices");
      cudaGetLastError();
      return false;
    }
    return true;
  }();
  return available;
}

#define NOSA_CUDA_CHECK(expr)                                                                         \
  do {                                                                                               \
    cudaError_t e_ = (expr);                                                                         \
    if (e_ != cudaSuccess) throw std::runtime_error(std::string(#expr) + ": " + cudaGetErrorString(e_)); \
  } while (0)

/// Owning device allocation.
template <class T>
struct DeviceArray {
  T* ptr = nullptr;
  size_t count = 0;
  DeviceArray() = default;
  explicit DeviceArray(size_t n) : count(n) { if (n) NOSA_CUDA_CHECK(cudaMalloc(&ptr, n * sizeof(T))); }
  DeviceArray(const DeviceArray&) = delete;
  DeviceArray& operator=(const DeviceArray&) = delete;
  DeviceArray(DeviceArray&& o) noexcept : ptr(o.ptr), count(o.count) { o.ptr = nullptr; o.count = 0; }
  ~DeviceArray() { if (ptr) cudaFree(ptr); }
  size_t bytes() const { return count * sizeof(T); }
};

}  // namespace nosa_test

/// First statement of a GPU TEST_CASE: returns (the case passes vacuously, with a message)
/// when no GPU is present, so CI without a GPU stays green and says why.
#define NOSA_REQUIRE_GPU()                                   \
  do {                                                       \
    if (!::nosa_test::gpu_available()) {                     \
      MESSAGE("skipped: no CUDA GPU on this machine");       \
      return;                                                \
    }                                                        \
  } while (0)
