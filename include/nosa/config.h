// nosa: version, namespace and portability macros shared by every header.
#pragma once

#define NOSA_VERSION_MAJOR 0
#define NOSA_VERSION_MINOR 1
#define NOSA_VERSION_PATCH 0
#define NOSA_VERSION (NOSA_VERSION_MAJOR * 10000 + NOSA_VERSION_MINOR * 100 + NOSA_VERSION_PATCH)

// Two engines may vendor different nosa versions into one binary. Every symbol lives in a
// versioned inline namespace so their definitions never collide (the idea of CUB's
// util_namespace.cuh). Users write nosa::Foo; the linker sees nosa::v0_1_0::Foo.
#define NOSA_CAT_IMPL(a, b, c) v##a##_##b##_##c
#define NOSA_CAT(a, b, c) NOSA_CAT_IMPL(a, b, c)
#define NOSA_ABI_NAMESPACE NOSA_CAT(NOSA_VERSION_MAJOR, NOSA_VERSION_MINOR, NOSA_VERSION_PATCH)

#define NOSA_NAMESPACE_BEGIN \
  namespace nosa {           \
  inline namespace NOSA_ABI_NAMESPACE {
#define NOSA_NAMESPACE_END \
  }                        \
  }

#if defined(__CUDACC__)
#define NOSA_HOST_DEVICE __host__ __device__
#define NOSA_DEVICE __device__
#else
#define NOSA_HOST_DEVICE
#define NOSA_DEVICE
#endif

#if defined(__CUDACC__) || defined(__CUDA_ARCH__)
#define NOSA_FORCEINLINE __forceinline__
#elif defined(__GNUC__)
#define NOSA_FORCEINLINE inline __attribute__((always_inline))
#else
#define NOSA_FORCEINLINE inline
#endif
