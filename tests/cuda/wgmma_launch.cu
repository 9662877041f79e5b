#include "cuda/wgmma_launch.h"

#include <nosa/detail/attention_mma.cuh>
#include <nosa/detail/wgmma.cuh>

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <stdexcept>
#include <string>

namespace nosa_test {
namespace {

#define WG_CHECK(expr)                                                                               \
  do {                                                                                               \
    cudaError_t e_ = (expr);                                                                         \
    if (e_ != cudaSuccess) throw std::runtime_error(std::string(#expr) + ": " + cudaGetErrorString(e_)); \
  } while (0)

namespace wg = nosa::detail::wgmma;
constexpr int kK = 128;  // reduction length of the ss product (two 64-column slabs)
constexpr int kKeys = 64;

__global__ void wgmma_compiled_kernel(int* flag) { *flag = NOSA_HAS_WGMMA; }

template <class T, int N>
__global__ void __launch_bounds__(128) wgmma_probe_kernel(const T* a, const T* b, const T* p, const T* v, float* d_ss,
                                                          float* d_rs) {
#if NOSA_HAS_WGMMA
  extern __shared__ unsigned char smem_raw[];
  // SW128 slabs need 1024-byte alignment; dynamic shared memory only guarantees 16.
  const std::uint32_t base = nosa::detail::smem_u32(smem_raw);
  T* sA = reinterpret_cast<T*>(smem_raw + ((1024u - (base & 1023u)) & 1023u));
  T* sB = sA + 64 * kK;
  T* sV = sB + N * kK;
  const int tid = threadIdx.x;
  for (int i = tid; i < 64 * kK; i += 128) sA[wg::sw128_offset<64>(i / kK, i % kK)] = a[i];
  for (int i = tid; i < N * kK; i += 128) sB[wg::sw128_offset<N>(i / kK, i % kK)] = b[i];
  for (int i = tid; i < kKeys * N; i += 128) sV[wg::sw128_offset<kKeys>(i / N, i % N)] = v[i];
  wg::fence_proxy_async();
  __syncthreads();

  const int w = tid / 32, lane = tid % 32, g = lane / 4, t = lane % 4;
  float d[N / 2];
#pragma unroll
  for (int i = 0; i < N / 2; ++i) d[i] = -1.f;  // overwritten: scale_d = 0 on the first step
  const std::uint32_t a_addr = nosa::detail::smem_u32(sA), b_addr = nosa::detail::smem_u32(sB);
  wg::fence();
#pragma unroll
  for (int kk = 0; kk < kK / 16; ++kk) {
    const std::uint32_t off = (kk % 4) * 32u;  // 16 elements = 32 bytes within the swizzled row
    const std::uint64_t da = wg::sw128_desc(a_addr + (kk / 4) * (64 * 128) + off, 16, 1024);
    const std::uint64_t db = wg::sw128_desc(b_addr + (kk / 4) * (N * 128) + off, 16, 1024);
    wg::Op<N, T>::ss(d, da, db, kk > 0 ? 1 : 0);
  }
  wg::commit();
  wg::wait<0>();
  wg::pin(d);
  auto store = [&](float* out, const float (&acc)[N / 2]) {
#pragma unroll
    for (int i = 0; i < N / 8; ++i) {
      const int r = 16 * w + g, c = 8 * i + 2 * t;
      out[r * N + c] = acc[4 * i + 0];
      out[r * N + c + 1] = acc[4 * i + 1];
      out[(r + 8) * N + c] = acc[4 * i + 2];
      out[(r + 8) * N + c + 1] = acc[4 * i + 3];
    }
  };
  store(d_ss, d);

  // rs: A fragments straight from global memory, V MN-major.
  const std::uint32_t v_addr = nosa::detail::smem_u32(sV);
  std::uint32_t frag[kKeys / 16][4];
  const std::uint16_t* pb = reinterpret_cast<const std::uint16_t*>(p);
  auto pair = [&](int r, int c) {
    return static_cast<std::uint32_t>(pb[r * kKeys + c]) | (static_cast<std::uint32_t>(pb[r * kKeys + c + 1]) << 16);
  };
#pragma unroll
  for (int kk = 0; kk < kKeys / 16; ++kk) {
    const int r = 16 * w + g, c = 16 * kk + 2 * t;
    frag[kk][0] = pair(r, c);
    frag[kk][1] = pair(r + 8, c);
    frag[kk][2] = pair(r, c + 8);
    frag[kk][3] = pair(r + 8, c + 8);
  }
  wg::fence();
#pragma unroll
  for (int kk = 0; kk < kKeys / 16; ++kk)
    wg::Op<N, T>::rs_tb(d, frag[kk], wg::sw128_desc(v_addr + kk * 16 * 128, kKeys * 128, 1024), kk > 0 ? 1 : 0);
  wg::commit();
  wg::wait<0>();
  wg::pin(d);
  store(d_rs, d);
#endif
}

template <class T, int N>
void launch(const std::uint16_t* a, const std::uint16_t* b, const std::uint16_t* p, const std::uint16_t* v, float* ss,
            float* rs) {
  const int smem = (64 * kK + N * kK + kKeys * N) * 2 + 1024;
  auto kernel = wgmma_probe_kernel<T, N>;
  WG_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, smem));
  kernel<<<1, 128, smem>>>(reinterpret_cast<const T*>(a), reinterpret_cast<const T*>(b), reinterpret_cast<const T*>(p),
                           reinterpret_cast<const T*>(v), ss, rs);
  WG_CHECK(cudaGetLastError());
}

template <class T>
void dispatch(int n, const std::uint16_t* a, const std::uint16_t* b, const std::uint16_t* p, const std::uint16_t* v,
              float* ss, float* rs) {
  if (n == 64) return launch<T, 64>(a, b, p, v, ss, rs);
  if (n == 128) return launch<T, 128>(a, b, p, v, ss, rs);
  if (n == 256) return launch<T, 256>(a, b, p, v, ss, rs);
  throw std::invalid_argument("run_wgmma_probe: n must be 64, 128 or 256");
}

}  // namespace

WgmmaProbeResult run_wgmma_probe(int n, bool fp16, const std::vector<std::uint16_t>& a, const std::vector<std::uint16_t>& b,
                                 const std::vector<std::uint16_t>& p, const std::vector<std::uint16_t>& v) {
  WgmmaProbeResult result;
  int dev = 0, major = 0, minor = 0;
  WG_CHECK(cudaGetDevice(&dev));
  WG_CHECK(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev));
  WG_CHECK(cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, dev));
  if (major != 9 || minor != 0) return result;
  int* flag = nullptr;
  WG_CHECK(cudaMalloc(&flag, sizeof(int)));
  wgmma_compiled_kernel<<<1, 1>>>(flag);
  WG_CHECK(cudaGetLastError());
  int compiled = 0;
  WG_CHECK(cudaMemcpy(&compiled, flag, sizeof(int), cudaMemcpyDeviceToHost));
  WG_CHECK(cudaFree(flag));
  if (!compiled) return result;
  result.compiled = true;
  std::uint16_t *da, *db, *dp, *dv;
  float *dss, *drs;
  WG_CHECK(cudaMalloc(&da, a.size() * 2));
  WG_CHECK(cudaMalloc(&db, b.size() * 2));
  WG_CHECK(cudaMalloc(&dp, p.size() * 2));
  WG_CHECK(cudaMalloc(&dv, v.size() * 2));
  WG_CHECK(cudaMalloc(&dss, 64 * n * 4));
  WG_CHECK(cudaMalloc(&drs, 64 * n * 4));
  WG_CHECK(cudaMemcpy(da, a.data(), a.size() * 2, cudaMemcpyHostToDevice));
  WG_CHECK(cudaMemcpy(db, b.data(), b.size() * 2, cudaMemcpyHostToDevice));
  WG_CHECK(cudaMemcpy(dp, p.data(), p.size() * 2, cudaMemcpyHostToDevice));
  WG_CHECK(cudaMemcpy(dv, v.data(), v.size() * 2, cudaMemcpyHostToDevice));
  WG_CHECK(cudaMemset(dss, 0xff, 64 * n * 4));  // NaN: an element never written fails the check
  WG_CHECK(cudaMemset(drs, 0xff, 64 * n * 4));
  if (fp16)
    dispatch<__half>(n, da, db, dp, dv, dss, drs);
  else
    dispatch<__nv_bfloat16>(n, da, db, dp, dv, dss, drs);
  WG_CHECK(cudaDeviceSynchronize());
  result.d_ss.resize(64 * n);
  result.d_rs.resize(64 * n);
  WG_CHECK(cudaMemcpy(result.d_ss.data(), dss, 64 * n * 4, cudaMemcpyDeviceToHost));
  WG_CHECK(cudaMemcpy(result.d_rs.data(), drs, 64 * n * 4, cudaMemcpyDeviceToHost));
  for (void* ptr : {static_cast<void*>(da), static_cast<void*>(db), static_cast<void*>(dp), static_cast<void*>(dv),
                    static_cast<void*>(dss), static_cast<void*>(drs)})
    WG_CHECK(cudaFree(ptr));
  return result;
}

}  // namespace nosa_test
