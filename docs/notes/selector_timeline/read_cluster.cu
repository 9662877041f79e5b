// Scratch (not part of the project): pure-read bound of the stage-1 cluster decomposition.
// read_ring: each CTA reads one chunk (chunk_bytes contiguous, = its keys), warp w reads 4 KiB tiles
// w, w+W, ... through a cp.async ring of S tiles per warp; launched as clusters of C CTAs.
#include <cuda_runtime.h>
#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <set>
#include <vector>
#define CK(x) do { cudaError_t e_ = (x); if (e_ != cudaSuccess) { std::printf("%s: %s\n", #x, cudaGetErrorString(e_)); std::exit(1); } } while (0)
__device__ unsigned g_sm[65536];
template <int W, int S>
__global__ void __launch_bounds__(32 * W) read_ring(const char* p, int chunk_bytes, unsigned* sink) {
  extern __shared__ uint4 ring[];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  uint4* mine = ring + warp * S * 256 + lane;
  unsigned x = 0;
  const int tiles = chunk_bytes / 4096;
  const int c = blockIdx.x;
  const char* base = p + size_t(c) * chunk_bytes;
  auto issue = [&](int k) {
    const int t = warp + W * k;
    if (t < tiles) {
      const char* src = base + size_t(t) * 4096;
      for (int i = 0; i < 8; ++i) {
        unsigned dst = static_cast<unsigned>(__cvta_generic_to_shared(mine + ((k % S) * 8 + i) * 32));
        asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(dst), "l"(src + (i * 32 + lane) * 16));
      }
    }
    asm volatile("cp.async.commit_group;\n" ::);
  };
  const int per_warp = (tiles + W - 1 - warp) / W;
  for (int k = 0; k < S - 1; ++k) issue(k);
  for (int k = 0; k < per_warp; ++k) {
    issue(k + S - 1);
    asm volatile("cp.async.wait_group %0;\n" ::"n"(S - 1));
    for (int i = 0; i < 8; ++i) { uint4 v = mine[((k % S) * 8 + i) * 32]; x ^= v.x ^ v.y ^ v.z ^ v.w; }
  }
  asm volatile("cp.async.wait_group 0;\n" ::);
  if (threadIdx.x == 0) { unsigned sm; asm("mov.u32 %0, %%smid;" : "=r"(sm)); g_sm[c & 65535] = sm; }
  if (x == 0x12345678u) *sink = x;
}
template <class F> float time_ms(F f, int reps = 20) {
  cudaEvent_t a, b; CK(cudaEventCreate(&a)); CK(cudaEventCreate(&b));
  f(); f(); CK(cudaDeviceSynchronize());
  std::vector<float> v;
  for (int r = 0; r < 7; ++r) {
    CK(cudaEventRecord(a)); for (int i = 0; i < reps; ++i) f(); CK(cudaEventRecord(b)); CK(cudaEventSynchronize(b));
    float ms; CK(cudaEventElapsedTime(&ms, a, b)); v.push_back(ms / reps);
  }
  std::sort(v.begin(), v.end()); return v[v.size() / 2];
}
double g_copy = 0;
template <int W, int S>
void run(const char* p, size_t bytes, int chunk_bytes, int C, unsigned* sink, const char* label) {
  const int grid = int(bytes / chunk_bytes);
  const int smem = W * S * 4096;
  CK(cudaFuncSetAttribute(read_ring<W, S>, cudaFuncAttributeMaxDynamicSharedMemorySize, smem));
  if (C > 8) CK(cudaFuncSetAttribute(read_ring<W, S>, cudaFuncAttributeNonPortableClusterSizeAllowed, 1));
  cudaLaunchConfig_t lc = {}; lc.gridDim = dim3(grid); lc.blockDim = dim3(32 * W); lc.dynamicSmemBytes = smem;
  cudaLaunchAttribute at[1]; at[0].id = cudaLaunchAttributeClusterDimension; at[0].val.clusterDim.x = C; at[0].val.clusterDim.y = 1; at[0].val.clusterDim.z = 1;
  lc.attrs = at; lc.numAttrs = 1;
  int active = 0; CK(cudaOccupancyMaxActiveClusters(&active, read_ring<W, S>, &lc));
  auto f = [&] { CK(cudaLaunchKernelEx(&lc, read_ring<W, S>, p, chunk_bytes, sink)); };
  const float ms = time_ms(f);
  std::vector<unsigned> sm(std::min(grid, 65536)); CK(cudaMemcpyFromSymbol(sm.data(), g_sm, sm.size() * 4));
  std::set<unsigned> u(sm.begin(), sm.end());
  const double gbps = bytes / (ms * 1e-3) * 1e-9;
  std::printf("%-8s W %2d S %d C %2d chunk %4d KiB bytes %4.0f MB grid %5d: resident clusters %3d (%4d CTAs, %.2f waves), SMs used %3zu: %7.1f us %5.0f GB/s %3.0f %%\n",
              label, W, S, C, chunk_bytes / 1024, bytes / 1e6, grid, active, active * C, double(grid) / (active * C), u.size(), ms * 1e3, gbps, 100 * gbps / g_copy);
}
int main() {
  cudaDeviceProp pr; CK(cudaGetDeviceProperties(&pr, 0)); std::printf("%s, %d SMs\n", pr.name, pr.multiProcessorCount);
  const size_t big = size_t(1) << 30; char *a, *b; unsigned* sink;
  CK(cudaMalloc(&a, big)); CK(cudaMalloc(&b, big)); CK(cudaMalloc(&sink, 4)); CK(cudaMemset(a, 1, big));
  const float cms = time_ms([&] { CK(cudaMemcpyAsync(b, a, big, cudaMemcpyDeviceToDevice)); }, 5);
  g_copy = 2.0 * big / (cms * 1e-3) * 1e-9; std::printf("copy ceiling %.0f GB/s (read+write)\n", g_copy);
  const size_t s16x2 = size_t(32) << 21, s16x8 = size_t(128) << 21;  // heads x 8192 keys x 256 B
  for (size_t bytes : {s16x2, s16x8}) {
    const char* lab = bytes == s16x2 ? "16x2" : "16x8";
    // the register kernel today: 4 warps, 12 KiB ring per warp (3 x 4 KiB tiles), 512 keys = 128 KiB per CTA, C 16
    for (int C : {1, 2, 4, 8, 16}) run<4, 3>(a, bytes, 128 << 10, C, sink, lab);
    // 8 warps, 1024 keys = 256 KiB per CTA, C 8 (and 1, 4)
    for (int C : {1, 4, 8}) run<8, 3>(a, bytes, 256 << 10, C, sink, lab);
    // deeper rings
    run<4, 4>(a, bytes, 128 << 10, 16, sink, lab);
    run<8, 4>(a, bytes, 256 << 10, 8, sink, lab);
    run<4, 6>(a, bytes, 128 << 10, 16, sink, lab);
    // 16 warps, 2048 keys per CTA = 512 KiB, C 4, 1 CTA/SM
    run<16, 3>(a, bytes, 512 << 10, 4, sink, lab);
    run<16, 3>(a, bytes, 512 << 10, 1, sink, lab);
    // 256 keys per CTA (64 KiB), C 16 is 4096 keys only: C 1 as a reference of small chunks
    run<4, 3>(a, bytes, 64 << 10, 1, sink, lab);
  }
  // plain big read
  run<4, 3>(a, big, 128 << 10, 1, sink, "1GiB");
  run<8, 4>(a, big, 256 << 10, 1, sink, "1GiB");
  return 0;
}
