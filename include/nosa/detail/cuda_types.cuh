// nosa::detail: mapping nosa's host storage types to CUDA's device types (same bits).
#pragma once

#include <nosa/config.h>
#include <nosa/types.h>

#include <cuda_bf16.h>
#include <cuda_fp16.h>

NOSA_NAMESPACE_BEGIN
namespace detail {

/// cuda_type_t<bfloat16_t> = __nv_bfloat16, cuda_type_t<float16_t> = __half, else T itself.
template <class T>
struct cuda_type {
  using type = T;
};
template <>
struct cuda_type<bfloat16_t> {
  using type = __nv_bfloat16;
};
template <>
struct cuda_type<float16_t> {
  using type = __half;
};
template <class T>
using cuda_type_t = typename cuda_type<T>::type;

static_assert(sizeof(__nv_bfloat16) == sizeof(bfloat16_t) && sizeof(__half) == sizeof(float16_t),
              "nosa storage types must match CUDA's 2-byte types");

template <class T>
NOSA_HOST_DEVICE NOSA_FORCEINLINE const cuda_type_t<T>* as_cuda(const T* p) {
  return reinterpret_cast<const cuda_type_t<T>*>(p);
}
template <class T>
NOSA_HOST_DEVICE NOSA_FORCEINLINE cuda_type_t<T>* as_cuda(T* p) {
  return reinterpret_cast<cuda_type_t<T>*>(p);
}

NOSA_DEVICE NOSA_FORCEINLINE float to_f32(float x) { return x; }
NOSA_DEVICE NOSA_FORCEINLINE float to_f32(__nv_bfloat16 x) { return __bfloat162float(x); }
NOSA_DEVICE NOSA_FORCEINLINE float to_f32(__half x) { return __half2float(x); }

template <class T>
NOSA_DEVICE NOSA_FORCEINLINE T from_f32(float x);
template <>
NOSA_DEVICE NOSA_FORCEINLINE float from_f32<float>(float x) { return x; }
template <>
NOSA_DEVICE NOSA_FORCEINLINE __nv_bfloat16 from_f32<__nv_bfloat16>(float x) { return __float2bfloat16_rn(x); }
template <>
NOSA_DEVICE NOSA_FORCEINLINE __half from_f32<__half>(float x) { return __float2half_rn(x); }

}  // namespace detail
NOSA_NAMESPACE_END
