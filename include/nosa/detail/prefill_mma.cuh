// nosa::detail::prefill: warp-level building blocks of the prefill kernels (an XOR-swizzled
// shared tile, tile loads, the Q.K^T fragment product), on top of the sm_80 primitives
// that decode attention uses too (detail/attention_mma.cuh). Nothing here needs sm_90a.
#pragma once

#include <nosa/config.h>
#include <nosa/detail/attention_mma.cuh>
#include <nosa/detail/cuda_types.cuh>

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>
#include <type_traits>

NOSA_NAMESPACE_BEGIN
namespace detail {
namespace prefill {

/// 2^x with the hardware approximation (ex2.approx.ftz: ~2 ulp, 2^-inf = 0). The attention
/// softmax uses it (its P is rounded to bf16 anyway); stage-1 selection keeps exp2f.
NOSA_DEVICE NOSA_FORCEINLINE float fast_exp2(float x) {
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;\n" : "=f"(y) : "f"(x));
  return y;
}

/// Element offset of (row, col) in a [rows][D] shared tile whose 16-byte chunks are XOR-swizzled
/// by row (chunk ^ (row & 7)), so the 8 rows an ldmatrix reads hit 8 different bank groups.
template <int D>
NOSA_DEVICE NOSA_FORCEINLINE int swz(int row, int col) {
  static_assert(D % 64 == 0, "swizzle needs at least 8 chunks of 16 bytes per row");
  return row * D + ((((col >> 3) ^ (row & 7))) << 3) + (col & 7);
}

/// Copies a [Rows][D] tile of 2-byte elements with 16-byte cp.async: row r from src(r)
/// (nullptr = zeros), element (r, col) to tile[offset(r, col)] (e.g. swz<D> or an SW128 layout).
/// All Threads threads take part; no cp.async group is committed here. Unroll: how far the
/// copy loop unrolls (default all; a kernel near its register limit may ask for 1).
template <int Rows, int D, int Threads, int Unroll = Rows * (D / 8) / Threads, class T, class Offset, class RowPtr>
NOSA_DEVICE NOSA_FORCEINLINE void load_tile(T* tile, const T* fallback, Offset offset, RowPtr src) {
  constexpr int kChunks = D / 8;
  static_assert(Rows * kChunks % Threads == 0, "every thread copies the same number of chunks");
#pragma unroll Unroll
  for (int i = 0; i < Rows * kChunks / Threads; ++i) {
    const int idx = static_cast<int>(threadIdx.x) + i * Threads;
    const int r = idx / kChunks, c = idx % kChunks;
    const T* row = src(r);
    cp_async_16(tile + offset(r, c * 8), row != nullptr ? row + c * 8 : fallback, row != nullptr ? 16 : 0);
  }
}

/// Loads a warp's 16 x D rows of a swizzled tile as A fragments (row-major m16k16, D/16 of them).
template <int D, class T>
NOSA_DEVICE NOSA_FORCEINLINE void load_a_frags(std::uint32_t (&a)[D / 16][4], const T* tile, int row0) {
  const int lane = threadIdx.x & 31;
#pragma unroll
  for (int kk = 0; kk < D / 16; ++kk) ldmatrix_x4(a[kk], tile + swz<D>(row0 + (lane & 15), kk * 16 + (lane >> 4) * 8));
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
      ldmatrix_x4(b, tile + swz<D>(n, k));
      mma_16816<T>(s[nt], a[kk], b[0], b[1]);
      mma_16816<T>(s[nt + 1], a[kk], b[2], b[3]);
    }
  }
}

}  // namespace prefill
}  // namespace detail
NOSA_NAMESPACE_END
