// Small CUDA helpers shared by the examples' GPU paths: fail-fast checks (an example stops at the
// first error and says which call failed) and an owning device buffer.
#pragma once

#include <nosa/status.h>

#include <cuda_runtime.h>

#include <algorithm>
#include <cstddef>
#include <stdexcept>
#include <string>

/// Throws std::runtime_error naming the call when a CUDA runtime call fails.
#define NOSA_EX_CUDA(expr)                                                                             \
  do {                                                                                                 \
    cudaError_t e_ = (expr);                                                                           \
    if (e_ != cudaSuccess) throw std::runtime_error(std::string(#expr) + ": " + cudaGetErrorString(e_)); \
  } while (0)
/// Throws std::runtime_error with the Status message when a nosa call fails.
#define NOSA_EX_OK(...)                                                                                \
  do {                                                                                                 \
    nosa::Status s_ = (__VA_ARGS__);                                                                   \
    if (!s_.ok()) throw std::runtime_error(std::string(#__VA_ARGS__) + ": " + s_.to_string());         \
  } while (0)

namespace nosa_examples {

/// Owning device buffer of `n` elements.
template <class U>
struct DevBuf {
  U* p = nullptr;
  std::size_t n = 0;
  explicit DevBuf(std::size_t count) : n(count) {
    NOSA_EX_CUDA(cudaMalloc(reinterpret_cast<void**>(&p), std::max<std::size_t>(count, 1) * sizeof(U)));
  }
  DevBuf(const DevBuf&) = delete;
  DevBuf& operator=(const DevBuf&) = delete;
  ~DevBuf() { cudaFree(p); }
  void upload(const U* src, std::size_t count, cudaStream_t s) {
    NOSA_EX_CUDA(cudaMemcpyAsync(p, src, count * sizeof(U), cudaMemcpyHostToDevice, s));
  }
};

}  // namespace nosa_examples
