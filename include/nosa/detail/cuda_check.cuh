// nosa::detail: turning CUDA runtime errors and bad device pointers into nosa::Status.
#pragma once

#include <nosa/config.h>
#include <nosa/status.h>

#include <cuda_runtime.h>

#include <cstdint>
#include <string>

/// Evaluates a cudaError_t expression; on failure returns a kCudaError Status naming the call.
#define NOSA_CUDA_TRY(expr)                                                                   \
  do {                                                                                        \
    cudaError_t nosa_cuda_err_ = (expr);                                                      \
    if (nosa_cuda_err_ != cudaSuccess)                                                        \
      return ::nosa::Status(::nosa::StatusCode::kCudaError,                                   \
                            std::string(#expr) + " failed: " + cudaGetErrorString(nosa_cuda_err_)); \
  } while (0)

/// After a kernel launch: returns a kCudaError Status if the launch itself failed.
#define NOSA_CUDA_TRY_LAUNCH(kernel_name) NOSA_CUDA_TRY(cudaPeekAtLastError())

NOSA_NAMESPACE_BEGIN
namespace detail {

/// Checks that a device-accessible pointer is non-null and aligned to `alignment` bytes.
inline Status check_pointer(const void* ptr, const char* name, std::size_t alignment) {
  if (ptr == nullptr) return invalid_argument(std::string(name) + " is null");
  if (reinterpret_cast<std::uintptr_t>(ptr) % alignment != 0)
    return misaligned(std::string(name) + " is not aligned to " + std::to_string(alignment) + " bytes");
  return {};
}

}  // namespace detail
NOSA_NAMESPACE_END
