// nosa: the optional eviction-head helper on the GPU. For engines without their own fused
// kernel, it computes the agnostic score of each new token and KV head:
//   b[t][h] = A[h] * softplus( W[h] . concat_{h'} v[t][h'][:] )          (fp32 accumulation)
// Shapes (device memory, row-major):
//   v  T  [n][Hkv][D]      values of the new tokens, token-major (NHD); T = bfloat16_t/float16_t
//   W  WT [Hkv][Hkv*D]     WT = float or T
//   A  fp32 [Hkv]
//   b  fp32 [n][Hkv]       output (what DeviceSelector::append_* and the KV cache take as bias)
// One CTA per (token, head); reads v once per head (the rows of one token are L1/L2 hits).
// host::eviction_head (nosa/host/eviction_head.h) is the reference.
#pragma once

#include <nosa/config.h>
#include <nosa/detail/cuda_check.cuh>
#include <nosa/detail/cuda_types.cuh>
#include <nosa/status.h>
#include <nosa/types.h>

#include <cuda_runtime.h>

#include <string>
#include <type_traits>

NOSA_NAMESPACE_BEGIN
namespace detail {

constexpr int kEvictionThreads = 128;

template <class T, class WT>
__global__ void __launch_bounds__(kEvictionThreads)
    eviction_head_kernel(int num_kv_heads, int head_dim, const T* __restrict__ v, const WT* __restrict__ W,
                         const float* __restrict__ A, float* __restrict__ b) {
  const long long t = blockIdx.x;
  const int h = blockIdx.y;
  const long long row = static_cast<long long>(num_kv_heads) * head_dim;
  const cuda_type_t<T>* vt = as_cuda(v) + t * row;
  const cuda_type_t<WT>* w = as_cuda(W) + h * row;
  float acc = 0.f;
  for (long long e = threadIdx.x; e < row; e += blockDim.x) acc = fmaf(to_f32(w[e]), to_f32(vt[e]), acc);
  __shared__ float partial[kEvictionThreads / 32];
#pragma unroll
  for (int off = 16; off > 0; off >>= 1) acc += __shfl_xor_sync(0xffffffffu, acc, off);
  if ((threadIdx.x & 31) == 0) partial[threadIdx.x >> 5] = acc;
  __syncthreads();
  if (threadIdx.x == 0) {
    float dot = 0.f;
    for (int w2 = 0; w2 < kEvictionThreads / 32; ++w2) dot += partial[w2];
    const float sp = fmaxf(dot, 0.f) + log1pf(expf(-fabsf(dot)));
    b[t * num_kv_heads + h] = A[h] * sp;
  }
}

}  // namespace detail

/// Computes b [n][Hkv] fp32 on `stream`; see the file comment for shapes. Validates before
/// launching: n >= 0 (0 launches nothing), Hkv >= 1, head_dim in {64, 128, 256}, pointers
/// non-null and aligned to their element size.
template <class T, class WT>
Status eviction_head(long long n, int num_kv_heads, int head_dim, const T* v, const WT* W, const float* A, float* b,
                     cudaStream_t stream) {
  static_assert(std::is_same_v<T, bfloat16_t> || std::is_same_v<T, float16_t>,
                "nosa::eviction_head: v must be bfloat16_t or float16_t");
  static_assert(std::is_same_v<WT, float> || std::is_same_v<WT, T>, "nosa::eviction_head: W must be float or T");
  if (n < 0) return invalid_argument("eviction_head: n = " + std::to_string(n) + " is negative");
  if (n > 0x7fffffffLL) return invalid_argument("eviction_head: n = " + std::to_string(n) + " exceeds 2^31 - 1");
  if (num_kv_heads <= 0 || num_kv_heads > 65535)
    return invalid_argument("eviction_head: num_kv_heads = " + std::to_string(num_kv_heads) + " must be in [1, 65535]");
  if (head_dim != 64 && head_dim != 128 && head_dim != 256)
    return not_supported("eviction_head: head_dim = " + std::to_string(head_dim) + " (supported: 64, 128, 256)");
  if (n == 0) return {};
  NOSA_RETURN_IF_ERROR(detail::check_pointer(v, "eviction_head: v", sizeof(T)));
  NOSA_RETURN_IF_ERROR(detail::check_pointer(W, "eviction_head: W", sizeof(WT)));
  NOSA_RETURN_IF_ERROR(detail::check_pointer(A, "eviction_head: A", alignof(float)));
  NOSA_RETURN_IF_ERROR(detail::check_pointer(b, "eviction_head: b", alignof(float)));
  const dim3 grid(static_cast<unsigned>(n), num_kv_heads);
  detail::eviction_head_kernel<T, WT><<<grid, detail::kEvictionThreads, 0, stream>>>(num_kv_heads, head_dim, v, W, A, b);
  NOSA_CUDA_TRY_LAUNCH("eviction_head_kernel");
  return {};
}

NOSA_NAMESPACE_END
