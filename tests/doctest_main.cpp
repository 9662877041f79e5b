// The one doctest main of nosa's test executables (compiled once per flavour by tests/CMakeLists.txt).
//
// Host tests: the plain doctest main.
// GPU tests (NOSA_TEST_GPU_MAIN=1): first checks that a CUDA device is usable. Without one the
// executable prints why and exits with 77, which CTest reports as "skipped" (SKIP_RETURN_CODE):
// CI compiles the CUDA tests but has no GPU. With NOSA_REQUIRE_GPU=1 in the environment a missing
// device is a failure instead.
#define DOCTEST_CONFIG_IMPLEMENT
#include <doctest/doctest.h>

#if defined(NOSA_TEST_GPU_MAIN)
#include <cuda_runtime.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#endif

int main(int argc, char** argv) {
#if defined(NOSA_TEST_GPU_MAIN)
  int devices = 0;
  const cudaError_t error = cudaGetDeviceCount(&devices);
  if (error != cudaSuccess || devices == 0) {
    const char* require = std::getenv("NOSA_REQUIRE_GPU");
    const bool required = require != nullptr && std::strcmp(require, "0") != 0 && require[0] != '\0';
    std::fprintf(stderr, "nosa: no usable CUDA device (%s): %s\n",
                 error != cudaSuccess ? cudaGetErrorString(error) : "device count is 0",
                 required ? "failing (NOSA_REQUIRE_GPU is set)" : "skipping the GPU tests");
    return required ? 1 : 77;
  }
#endif
  doctest::Context context(argc, argv);
  return context.run();
}
