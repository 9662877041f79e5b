// nosa::detail: Hopper warpgroup matrix products (wgmma, sm_90a) and the shared-memory tile
// layout they read.
//
// Everything that issues a wgmma instruction is compiled only where NOSA_HAS_WGMMA is 1: in the
// device pass for the arch-specific target sm_90a (nvcc defines __CUDA_ARCH_FEAT_SM90_ALL
// there). Other targets compile the same kernels with their sm_80 mma.sync body, so a binary
// built for sm_80 or plain sm_90 stays correct, only slower on Hopper.
//
// Tile layout ("SW128"): a [rows][cols] tile of 2-byte elements is stored as cols/64 slabs of
// [rows][64]; each 128-byte row of a slab holds its eight 16-byte chunks XOR-swizzled by
// (row & 7). This is the canonical 128-byte-swizzle layout of the wgmma descriptors, both for
// K-major operands (the reduction dimension runs along a row) and MN-major ones (it runs down
// the rows). Slabs start 1024-byte aligned.
//
// Fragments (per warp w of the warpgroup, lane = 4 * g + t):
//   accumulator of m64nN: d[4*i + {0,1,2,3}] = (row 16w + g, col 8i + 2t + {0,1}) and
//                         (row 16w + g + 8, col 8i + 2t + {0,1}): the m16n8 C fragment of
//                         mma.sync, repeated over the N/8 column groups;
//   register A of m64k16: the m16n8k16 A fragment of mma.sync for the warp's 16 rows.
#pragma once

#include <nosa/config.h>

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>

#if defined(__CUDA_ARCH__) && defined(__CUDA_ARCH_FEAT_SM90_ALL)
#define NOSA_HAS_WGMMA 1
#else
#define NOSA_HAS_WGMMA 0
#endif

NOSA_NAMESPACE_BEGIN
namespace detail {
namespace wgmma {

/// Element offset of (row, col) in an SW128 tile of `Rows` rows (any number of 64-column slabs).
template <int Rows>
NOSA_HOST_DEVICE NOSA_FORCEINLINE int sw128_offset(int row, int col) {
  return (col >> 6) * (Rows * 64) + row * 64 + ((((col >> 3) & 7) ^ (row & 7)) << 3) + (col & 7);
}

/// Shared-memory matrix descriptor of an SW128 operand (byte offsets; layout type 1 = 128B swizzle).
///   K-major (reduction along a row): lbo unused (16), sbo = 1024 (next 8-row group);
///   MN-major (reduction down the rows): lbo = bytes between 64-column slabs, sbo = 1024.
NOSA_DEVICE NOSA_FORCEINLINE std::uint64_t sw128_desc(std::uint32_t smem_addr, std::uint32_t lbo, std::uint32_t sbo) {
  return static_cast<std::uint64_t>((smem_addr & 0x3FFFFu) >> 4) | (static_cast<std::uint64_t>(lbo >> 4) << 16) |
         (static_cast<std::uint64_t>(sbo >> 4) << 32) | (1ull << 62);
}

#if NOSA_HAS_WGMMA
/// Orders this thread's register writes (accumulators, A fragments) before the next wgmma.
NOSA_DEVICE NOSA_FORCEINLINE void fence() { asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory"); }
NOSA_DEVICE NOSA_FORCEINLINE void commit() { asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory"); }
/// Waits until at most N committed wgmma groups of this warpgroup are still running.
template <int N>
NOSA_DEVICE NOSA_FORCEINLINE void wait() {
  asm volatile("wgmma.wait_group.sync.aligned %0;\n" ::"n"(N) : "memory");
}
/// Makes this thread's generic-proxy shared-memory writes (cp.async, st.shared) visible to the
/// async proxy that wgmma reads through; put it before the barrier that publishes the tile.
NOSA_DEVICE NOSA_FORCEINLINE void fence_proxy_async() { asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory"); }
/// Keeps the compiler from moving an accumulator across a wgmma issue/wait pair.
template <int N>
NOSA_DEVICE NOSA_FORCEINLINE void pin(float (&d)[N]) {
#pragma unroll
  for (int i = 0; i < N; ++i) asm volatile("" : "+f"(d[i])::"memory");
}
#endif

// Operand lists of the m64nNk16 instructions: NA = N / 2 fp32 accumulators per thread, in runs
// of 16 (operand strings %0..%(NA-1), then the A operand(s), B, and the scale-d predicate input).
#define NOSA_WGMMA_R0 "%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15"
#define NOSA_WGMMA_R1 "%16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31"
#define NOSA_WGMMA_R2 "%32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47"
#define NOSA_WGMMA_R3 "%48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63"
#define NOSA_WGMMA_R4 "%64, %65, %66, %67, %68, %69, %70, %71, %72, %73, %74, %75, %76, %77, %78, %79"
#define NOSA_WGMMA_R5 "%80, %81, %82, %83, %84, %85, %86, %87, %88, %89, %90, %91, %92, %93, %94, %95"
#define NOSA_WGMMA_R6 "%96, %97, %98, %99, %100, %101, %102, %103, %104, %105, %106, %107, %108, %109, %110, %111"
#define NOSA_WGMMA_R7 "%112, %113, %114, %115, %116, %117, %118, %119, %120, %121, %122, %123, %124, %125, %126, %127"
#define NOSA_WGMMA_C16(d, o) \
  "+f"(d[o + 0]), "+f"(d[o + 1]), "+f"(d[o + 2]), "+f"(d[o + 3]), "+f"(d[o + 4]), "+f"(d[o + 5]), "+f"(d[o + 6]), "+f"(d[o + 7]), \
  "+f"(d[o + 8]), "+f"(d[o + 9]), "+f"(d[o + 10]), "+f"(d[o + 11]), "+f"(d[o + 12]), "+f"(d[o + 13]), "+f"(d[o + 14]), "+f"(d[o + 15])
#define NOSA_WGMMA_D32 "{" NOSA_WGMMA_R0 ", " NOSA_WGMMA_R1 "}"
#define NOSA_WGMMA_D64 "{" NOSA_WGMMA_R0 ", " NOSA_WGMMA_R1 ", " NOSA_WGMMA_R2 ", " NOSA_WGMMA_R3 "}"
#define NOSA_WGMMA_D128                                                                         \
  "{" NOSA_WGMMA_R0 ", " NOSA_WGMMA_R1 ", " NOSA_WGMMA_R2 ", " NOSA_WGMMA_R3 ", " NOSA_WGMMA_R4 ", " \
      NOSA_WGMMA_R5 ", " NOSA_WGMMA_R6 ", " NOSA_WGMMA_R7 "}"
#define NOSA_WGMMA_C32(d) NOSA_WGMMA_C16(d, 0), NOSA_WGMMA_C16(d, 16)
#define NOSA_WGMMA_C64(d) NOSA_WGMMA_C32(d), NOSA_WGMMA_C16(d, 32), NOSA_WGMMA_C16(d, 48)
#define NOSA_WGMMA_C128(d) \
  NOSA_WGMMA_C64(d), NOSA_WGMMA_C16(d, 64), NOSA_WGMMA_C16(d, 80), NOSA_WGMMA_C16(d, 96), NOSA_WGMMA_C16(d, 112)
#define NOSA_WGMMA_SS_SCALE32 "%34"
#define NOSA_WGMMA_SS_TAIL32 "%32, %33, p, 1, 1, 0, 0;\n"
#define NOSA_WGMMA_RS_SCALE32 "%37"
#define NOSA_WGMMA_RS_TAIL32 "{%32, %33, %34, %35}, %36, p, 1, 1, 1;\n"
#define NOSA_WGMMA_SS_SCALE64 "%66"
#define NOSA_WGMMA_SS_TAIL64 "%64, %65, p, 1, 1, 0, 0;\n"
#define NOSA_WGMMA_RS_SCALE64 "%69"
#define NOSA_WGMMA_RS_TAIL64 "{%64, %65, %66, %67}, %68, p, 1, 1, 1;\n"
#define NOSA_WGMMA_SS_SCALE128 "%130"
#define NOSA_WGMMA_SS_TAIL128 "%128, %129, p, 1, 1, 0, 0;\n"
#define NOSA_WGMMA_RS_SCALE128 "%133"
#define NOSA_WGMMA_RS_TAIL128 "{%128, %129, %130, %131}, %132, p, 1, 1, 1;\n"

/// One m64nNk16 product, fp32 accumulate: d (+)= A * B.
///   ss   : A and B from shared memory, both K-major (e.g. S = Q K^T with Q and K row-major).
///   rs_tb: A from registers, B MN-major in shared memory (e.g. O += P V with V row-major).
/// scale_d = 0 overwrites d instead of accumulating.
template <int N, class T>
struct Op;

#if NOSA_HAS_WGMMA
#define NOSA_WGMMA_OP(N, NA, TS, CT)                                                                            \
  template <>                                                                                                   \
  struct Op<N, CT> {                                                                                            \
    static NOSA_DEVICE NOSA_FORCEINLINE void ss(float (&d)[NA], std::uint64_t a, std::uint64_t b, int scale_d) { \
      asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, " NOSA_WGMMA_SS_SCALE##NA                                  \
                   ", 0;\nwgmma.mma_async.sync.aligned.m64n" #N "k16.f32." TS "." TS " " NOSA_WGMMA_D##NA        \
                   ", " NOSA_WGMMA_SS_TAIL##NA "}\n"                                                            \
                   : NOSA_WGMMA_C##NA(d)                                                                        \
                   : "l"(a), "l"(b), "r"(scale_d));                                                             \
    }                                                                                                           \
    static NOSA_DEVICE NOSA_FORCEINLINE void rs_tb(float (&d)[NA], const std::uint32_t (&a)[4], std::uint64_t b, \
                                                   int scale_d) {                                               \
      asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, " NOSA_WGMMA_RS_SCALE##NA                                  \
                   ", 0;\nwgmma.mma_async.sync.aligned.m64n" #N "k16.f32." TS "." TS " " NOSA_WGMMA_D##NA        \
                   ", " NOSA_WGMMA_RS_TAIL##NA "}\n"                                                            \
                   : NOSA_WGMMA_C##NA(d)                                                                        \
                   : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(b), "r"(scale_d));                         \
    }                                                                                                           \
  };
NOSA_WGMMA_OP(64, 32, "bf16", __nv_bfloat16)
NOSA_WGMMA_OP(64, 32, "f16", __half)
NOSA_WGMMA_OP(128, 64, "bf16", __nv_bfloat16)
NOSA_WGMMA_OP(128, 64, "f16", __half)
NOSA_WGMMA_OP(256, 128, "bf16", __nv_bfloat16)
NOSA_WGMMA_OP(256, 128, "f16", __half)
#undef NOSA_WGMMA_OP
#endif

}  // namespace wgmma
}  // namespace detail
NOSA_NAMESPACE_END
