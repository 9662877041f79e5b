// nosa::detail: TMA bulk copies (sm_90+; cp.async.bulk, no tensor map): global -> shared
// completing on an mbarrier that counts the bytes, and shared -> global in a bulk group. Used by
// the residency manager's staged copy loop and the selector's register scan. Addresses of shared
// memory are 32-bit shared-window addresses (smem_addr). The instructions exist from sm_90 on:
// below that (and in the host pass) every function here compiles to nothing, so templates that
// name them still compile there; their kernels are never launched on such devices.
#pragma once

#include <nosa/config.h>

#include <cuda_runtime.h>

#include <cstdint>

#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
#define NOSA_HAS_BULK_COPY 1
#else
#define NOSA_HAS_BULK_COPY 0
#endif

NOSA_NAMESPACE_BEGIN
namespace detail {

NOSA_DEVICE NOSA_FORCEINLINE std::uint32_t smem_addr(const void* p) {
#if defined(__CUDA_ARCH__)
  return static_cast<std::uint32_t>(__cvta_generic_to_shared(p));
#else
  (void)p;
  return 0;
#endif
}
NOSA_DEVICE NOSA_FORCEINLINE void mbar_init(std::uint32_t bar, unsigned count) {
#if NOSA_HAS_BULK_COPY
  asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;" ::"r"(bar), "r"(count) : "memory");
#else
  (void)bar, (void)count;
#endif
}
/// Makes barrier initializations visible to the async proxy (the bulk copies complete on them).
NOSA_DEVICE NOSA_FORCEINLINE void mbar_init_fence() {
#if NOSA_HAS_BULK_COPY
  asm volatile("fence.mbarrier_init.release.cluster;" ::: "memory");
#endif
}
NOSA_DEVICE NOSA_FORCEINLINE void mbar_arrive_expect_tx(std::uint32_t bar, unsigned bytes) {
#if NOSA_HAS_BULK_COPY
  asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;" ::"r"(bar), "r"(bytes) : "memory");
#else
  (void)bar, (void)bytes;
#endif
}
/// Spins until the barrier's phase with this parity has completed.
NOSA_DEVICE NOSA_FORCEINLINE void mbar_wait(std::uint32_t bar, unsigned parity) {
#if NOSA_HAS_BULK_COPY
  unsigned done = 0;
  do {
    asm volatile(
        "{\n .reg .pred p;\n mbarrier.try_wait.parity.shared::cta.b64 p, [%1], %2;\n selp.u32 %0, 1, 0, p;\n}"
        : "=r"(done)
        : "r"(bar), "r"(parity)
        : "memory");
  } while (!done);
#else
  (void)bar, (void)parity;
#endif
}
/// bytes (a multiple of 16, both addresses 16-byte aligned) from global src to shared dst; the
/// barrier's transaction count drops by bytes when they have landed.
NOSA_DEVICE NOSA_FORCEINLINE void bulk_g2s(std::uint32_t dst, const void* src, unsigned bytes, std::uint32_t bar) {
#if NOSA_HAS_BULK_COPY
  asm volatile("cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1], %2, [%3];" ::"r"(dst), "l"(src),
               "r"(bytes), "r"(bar)
               : "memory");
#else
  (void)dst, (void)src, (void)bytes, (void)bar;
#endif
}
NOSA_DEVICE NOSA_FORCEINLINE void bulk_s2g(void* dst, std::uint32_t src, unsigned bytes) {
#if NOSA_HAS_BULK_COPY
  asm volatile("cp.async.bulk.global.shared::cta.bulk_group [%0], [%1], %2;" ::"l"(dst), "r"(src), "r"(bytes) : "memory");
#else
  (void)dst, (void)src, (void)bytes;
#endif
}
NOSA_DEVICE NOSA_FORCEINLINE void bulk_commit() {
#if NOSA_HAS_BULK_COPY
  asm volatile("cp.async.bulk.commit_group;" ::: "memory");
#endif
}
/// Waits until every committed bulk store has read its shared memory (the stage may be refilled).
NOSA_DEVICE NOSA_FORCEINLINE void bulk_wait_read_all() {
#if NOSA_HAS_BULK_COPY
  asm volatile("cp.async.bulk.wait_group.read 0;" ::: "memory");
#endif
}
/// Waits until every committed bulk store has completed its writes.
NOSA_DEVICE NOSA_FORCEINLINE void bulk_wait_all() {
#if NOSA_HAS_BULK_COPY
  asm volatile("cp.async.bulk.wait_group 0;" ::: "memory");
#endif
}
/// Orders this thread's generic-proxy shared-memory accesses before later async-proxy ones (a
/// bulk copy that refills or reads a buffer the threads used).
NOSA_DEVICE NOSA_FORCEINLINE void fence_proxy_async_smem() {
#if NOSA_HAS_BULK_COPY
  asm volatile("fence.proxy.async.shared::cta;" ::: "memory");
#endif
}

}  // namespace detail
NOSA_NAMESPACE_END
