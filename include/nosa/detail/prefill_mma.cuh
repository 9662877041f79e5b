// nosa::detail::prefill: warp-level building blocks of the prefill kernels (cp.async, ldmatrix,
// the m16n8k16 tensor-core product with fp32 accumulation, an XOR-swizzled shared tile).
// sm_80+ only; nothing here needs sm_90a. Kept in their own namespace so they never collide
// with the decode kernel's helpers when both headers are included in one translation unit.
#pragma once

#include <nosa/config.h>
#include <nosa/detail/cuda_types.cuh>

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>
#include <type_traits>

NOSA_NAMESPACE_BEGIN
namespace detail {
namespace prefill {

NOSA_DEVICE NOSA_FORCEINLINE std::uint32_t smem_addr(const void* p) {
  return static_cast<std::uint32_t>(__cvta_generic_to_shared(p));
}

/// 16-byte global -> shared copy; src_bytes = 0 writes zeros and reads nothing (padding rows
/// must be zeros: 0 * garbage could be NaN in the P.V product).
NOSA_DEVICE NOSA_FORCEINLINE void cp_async_16(void* dst, const void* src, int src_bytes) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(smem_addr(dst)), "l"(src), "r"(src_bytes));
#endif
}
NOSA_DEVICE NOSA_FORCEINLINE void cp_async_4(void* dst, const void* src, int src_bytes) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  asm volatile("cp.async.ca.shared.global [%0], [%1], 4, %2;\n" ::"r"(smem_addr(dst)), "l"(src), "r"(src_bytes));
#endif
}
NOSA_DEVICE NOSA_FORCEINLINE void cp_async_commit() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  asm volatile("cp.async.commit_group;\n" ::);
#endif
}
template <int N>
NOSA_DEVICE NOSA_FORCEINLINE void cp_async_wait() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N));
#endif
}

NOSA_DEVICE NOSA_FORCEINLINE void ldsm_x4(std::uint32_t (&r)[4], const void* p) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(smem_addr(p)));
#endif
}
NOSA_DEVICE NOSA_FORCEINLINE void ldsm_x4_t(std::uint32_t (&r)[4], const void* p) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(smem_addr(p)));
#endif
}

/// d += a (16x16 row-major) * b (16x8 col-major), fp32 accumulators; T = __nv_bfloat16 or __half.
template <class T>
NOSA_DEVICE NOSA_FORCEINLINE void mma16816(float (&d)[4], const std::uint32_t (&a)[4], std::uint32_t b0,
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

/// 2^x with the hardware approximation (ex2.approx.ftz: ~2 ulp, 2^-inf = 0). The attention
/// softmax uses it (its P is rounded to bf16 anyway); stage-1 selection keeps exp2f.
NOSA_DEVICE NOSA_FORCEINLINE float fast_exp2(float x) {
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;\n" : "=f"(y) : "f"(x));
  return y;
}

/// Two floats -> one register holding two 2-byte elements (first in the low half).
template <class T>
NOSA_DEVICE NOSA_FORCEINLINE std::uint32_t pack2(float lo, float hi) {
  std::uint32_t r;
  if constexpr (std::is_same_v<T, __nv_bfloat16>) {
    const __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
    r = *reinterpret_cast<const std::uint32_t*>(&v);
  } else {
    const __half2 v = __floats2half2_rn(lo, hi);
    r = *reinterpret_cast<const std::uint32_t*>(&v);
  }
  return r;
}

/// Element offset of (row, col) in a [rows][D] shared tile whose 16-byte chunks are XOR-swizzled
/// by row (chunk ^ (row & 7)), so the 8 rows an ldmatrix reads hit 8 different bank groups.
template <int D>
NOSA_DEVICE NOSA_FORCEINLINE int swz(int row, int col) {
  static_assert(D % 64 == 0, "swizzle needs at least 8 chunks of 16 bytes per row");
  return row * D + ((((col >> 3) ^ (row & 7))) << 3) + (col & 7);
}

/// Copies a [64][D] tile of 2-byte elements: row r comes from src(r) (nullptr = zeros).
/// All threads of the CTA (kThreads) take part; one cp.async group is NOT committed here.
template <int D, int kThreads, class T, class RowPtr>
NOSA_DEVICE NOSA_FORCEINLINE void load_tile_64(T* dst, const T* fallback, RowPtr src) {
  constexpr int kChunks = D / 8;
  for (int idx = threadIdx.x; idx < 64 * kChunks; idx += kThreads) {
    const int r = idx / kChunks, c = idx % kChunks;
    const T* row = src(r);
    cp_async_16(dst + swz<D>(r, c * 8), row != nullptr ? row + c * 8 : fallback, row != nullptr ? 16 : 0);
  }
}

/// Loads a warp's 16 x D rows of a swizzled tile as A fragments (row-major m16k16, D/16 of them).
template <int D, class T>
NOSA_DEVICE NOSA_FORCEINLINE void load_a_frags(std::uint32_t (&a)[D / 16][4], const T* tile, int row0) {
  const int lane = threadIdx.x & 31;
#pragma unroll
  for (int kk = 0; kk < D / 16; ++kk) ldsm_x4(a[kk], tile + swz<D>(row0 + (lane & 15), kk * 16 + (lane >> 4) * 8));
}

/// s[n][4] += A (16 x D, fragments) * tile[n-rows 0..63][D]^T: 8 n-tiles of 8 columns each.
template <int D, class T>
NOSA_DEVICE NOSA_FORCEINLINE void qk_product(float (&s)[8][4], const std::uint32_t (&a)[D / 16][4], const T* tile) {
  const int lane = threadIdx.x & 31;
#pragma unroll
  for (int nt = 0; nt < 8; nt += 2) {
#pragma unroll
    for (int kk = 0; kk < D / 16; ++kk) {
      std::uint32_t b[4];
      // matrices: (n0, k0), (n0, k0+8), (n0+8, k0), (n0+8, k0+8)
      const int n = nt * 8 + (lane >> 4) * 8 + (lane & 7);
      const int k = kk * 16 + ((lane >> 3) & 1) * 8;
      ldsm_x4(b, tile + swz<D>(n, k));
      mma16816<T>(s[nt], a[kk], b[0], b[1]);
      mma16816<T>(s[nt + 1], a[kk], b[2], b[3]);
    }
  }
}

}  // namespace prefill
}  // namespace detail
NOSA_NAMESPACE_END
