// nosa::detail: the warp-level building blocks of the decode attention kernel: cp.async copies
// (16-byte, zero-filling), ldmatrix and the m16n8k16 tensor-core product (bf16/fp16 in, fp32
// accumulate). All of them exist on sm_80 and later; nothing here needs sm_90a.
#pragma once

#include <nosa/config.h>
#include <nosa/detail/cuda_types.cuh>

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cstdint>
#include <cstring>
#include <type_traits>

NOSA_NAMESPACE_BEGIN
namespace detail {

NOSA_DEVICE NOSA_FORCEINLINE std::uint32_t smem_u32(const void* p) {
  return static_cast<std::uint32_t>(__cvta_generic_to_shared(p));
}

/// 16-byte global -> shared copy that bypasses L1 (.cg: K/V are read once). src_bytes = 0
/// fills the destination with zeros without reading `src` (invalid tokens must be zeros, not
/// stale data: 0 * NaN would poison the P.V product).
NOSA_DEVICE NOSA_FORCEINLINE void cp_async_16(void* dst, const void* src, int src_bytes) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(smem_u32(dst)), "l"(src), "r"(src_bytes));
#endif
}
/// 4-byte variant (bias values; NHD bias is strided per token).
NOSA_DEVICE NOSA_FORCEINLINE void cp_async_4(void* dst, const void* src, int src_bytes) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  asm volatile("cp.async.ca.shared.global [%0], [%1], 4, %2;\n" ::"r"(smem_u32(dst)), "l"(src), "r"(src_bytes));
#endif
}
NOSA_DEVICE NOSA_FORCEINLINE void cp_async_commit() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  asm volatile("cp.async.commit_group;\n" ::);
#endif
}
/// Waits until at most N of this thread's cp.async groups are pending. Also a compiler barrier
/// for memory: the copied data may be read with ordinary loads right after it (no __syncthreads
/// when each thread reads only what it copied), which must not be moved above the wait.
template <int N>
NOSA_DEVICE NOSA_FORCEINLINE void cp_async_wait() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory");
#endif
}

/// Programmatic dependent launch (sm_90; no-ops before): a primary grid lets its dependent be
/// scheduled early, and the dependent waits until the primary grid has completed and its memory
/// is visible. Without a programmatic launch both are no-ops.
NOSA_DEVICE NOSA_FORCEINLINE void grid_dependents_launch() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.launch_dependents;\n" ::: "memory");
#endif
}
NOSA_DEVICE NOSA_FORCEINLINE void grid_dependency_wait() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.wait;\n" ::: "memory");
#endif
}

NOSA_DEVICE NOSA_FORCEINLINE void ldmatrix_x4(std::uint32_t (&r)[4], const void* p) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(smem_u32(p)));
#endif
}
NOSA_DEVICE NOSA_FORCEINLINE void ldmatrix_x4_trans(std::uint32_t (&r)[4], const void* p) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(smem_u32(p)));
#endif
}

/// d[4] += a[4] (16x16, row) * b[2] (16x8, col); fp32 accumulators.
template <class T>
NOSA_DEVICE NOSA_FORCEINLINE void mma_16816(float (&d)[4], const std::uint32_t (&a)[4], std::uint32_t b0,
                                            std::uint32_t b1) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  if constexpr (std::is_same_v<T, __nv_bfloat16>) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
        "{%0,%1,%2,%3};\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
  } else {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
        "{%0,%1,%2,%3};\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
  }
#endif
}

/// Two floats -> one register of two 2-byte elements (low half = first).
template <class T>
NOSA_DEVICE NOSA_FORCEINLINE std::uint32_t pack2(float lo, float hi) {
  if constexpr (std::is_same_v<T, __nv_bfloat16>) {
    const __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
    std::uint32_t r;
    memcpy(&r, &v, 4);
    return r;
  } else {
    const __half2 v = __floats2half2_rn(lo, hi);
    std::uint32_t r;
    memcpy(&r, &v, 4);
    return r;
  }
}

}  // namespace detail
NOSA_NAMESPACE_END
