// nosa::detail: the cluster path of the device selector's stage 1 (scan + softmax + pooling in
// one kernel, the fp32 logits never leave the chip).
//
// grid (C, Hkv, batch), cluster (C, 1, 1): one thread-block cluster per (entry, KV head). CTA
// rank r scans the compressed keys [r * chunk, (r + 1) * chunk) (chunk = score_chunk(nc, C)) with
// the global path's tensor-core core (MmaScan) and keeps its G x chunk logits in shared memory;
//   1. cluster.sync; every CTA reads the C per-CTA (max, sum-exp) of each query head through
//      distributed shared memory and combines them in rank order 0..C-1 (the same fixed order in
//      every CTA, so all agree bit for bit and the result does not depend on scheduling);
//   2. forms S[j] for its own keys (window_score, the pooling kernel's order and rounding);
//   3. cluster.sync; max-pools S (and bc) to the blocks it owns (cluster_block_begin), reading
//      the S of windows owned by neighbouring CTAs through DSMEM, and writes Pq/Pe exactly as
//      pool_kernel does (pool_block: forced blocks, NeedPe);
//   4. cluster.sync, so no CTA exits while another still reads its shared memory.
// An invalid or idle entry returns before the first cluster.sync in every CTA of its cluster (the
// decision depends on the entry only), exactly as pool_kernel does; select_kernel reports it.
// Compared with the global path this removes the logits write + read (G * 8 bytes per key: half
// the key bytes for G = 16, D = 128, bf16, so stage 1 moves ~1.0x instead of ~1.5x the key
// bytes) and the pooling launch. Needs 2-byte keys (MmaScan) and the whole head in C CTAs'
// shared memory; the host falls back to the global path otherwise.
#pragma once

#include <nosa/config.h>
#include <nosa/detail/selection_math.h>
#include <nosa/detail/selector_score.cuh>
#include <nosa/detail/selector_topk.cuh>

#include <cooperative_groups.h>
#include <cuda_runtime.h>

#include <cstddef>

NOSA_NAMESPACE_BEGIN
namespace detail {

/// Cluster sizes the host may choose (16 needs the non-portable cluster size attribute).
constexpr int kMinClusterSize = 2;
constexpr int kMaxPortableClusterSize = 8;
constexpr int kMaxClusterSize = 16;

/// Row stride (floats) of a cluster CTA's shared logits tile for `keys` keys per CTA: +8 floats
/// puts rows g and g + 4 of a warp's pair stores in different banks (2 wavefronts per store).
NOSA_HOST_DEVICE constexpr int cluster_logit_ld(int keys) { return keys + 8; }

/// How a cluster CTA's scan reads keys: 0 = plain loads (no staging memory), 2 = a cp.async double
/// buffer of 16-key tiles per warp (ClusterScan; +32 KiB of shared memory per CTA at D = 128).
/// DeviceSelector compiles both and picks one per cluster size from the occupancy query
/// (choose_staging): the staged scan is faster while it keeps most of the plain scan's resident
/// clusters (docs/notes/selector.md).
template <class T, int D, int G, int Stages>
using ClusterScan = MmaScan<T, D, G, Stages, (Stages > 0 ? 16 : 32)>;

/// Dynamic shared memory of a cluster CTA holding `keys` compressed keys: logits [G][ld], S [keys]
/// (padded to 16 bytes), then the scan's staging buffers.
template <class T, int D, int G, int Stages>
constexpr std::size_t cluster_smem_bytes(int keys) {
  const std::size_t floats = static_cast<std::size_t>(G) * cluster_logit_ld(keys) + static_cast<std::size_t>(keys);
  return (sizeof(float) * floats + 15) / 16 * 16 + ClusterScan<T, D, G, Stages>::kStageBytes;
}

/// First block CTA `rank` of C pools: blocks starting in its key range, so that most windows it
/// reads are its own. Non-decreasing in rank; 0 for rank 0 and nb for rank C: a partition.
NOSA_DEVICE NOSA_FORCEINLINE int cluster_block_begin(int rank, int C, int chunk, int stride, int block_size, int nb) {
  if (rank == 0) return 0;
  if (rank >= C) return nb;
  const long long first_token = static_cast<long long>(rank) * chunk * stride;
  return static_cast<int>(min(static_cast<long long>(nb), (first_token + block_size - 1) / block_size));
}

template <class T, class KS, int D, int G, bool NeedPe, int Stages>
__global__ void __launch_bounds__(kScoreThreads)
    score_pool_cluster_kernel(const __grid_constant__ SelectParams<T, KS> p) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ < 900
  // Code for targets without clusters: never launched (DeviceSelector checks the binary version
  // of this kernel for the device before it plans the cluster path).
  (void)p;
  __trap();
#else
  namespace cg = cooperative_groups;
  using Scan = ClusterScan<T, D, G, Stages>;
  static_assert(Stages == 0 || Scan::kStageBytes >= sizeof(float2) * kMaxClusterSize * G, "s_all fits in the staging");
  __shared__ typename Scan::Shared sm;
  __shared__ float2 s_stat[G];                        // this CTA's (max, sum-exp) per g: read cluster-wide
  __shared__ float2 s_all_own[Stages > 0 ? 1 : kMaxClusterSize * G];
  __shared__ float s_off[G];                          // window_offset per query head
  extern __shared__ float4 cluster_smem4[];           // float4: 16-byte aligned float2 stores
  const int ld = cluster_logit_ld(p.cluster_keys);
  float* s_logit = reinterpret_cast<float*>(cluster_smem4);  // [G][ld], keys j0.. of this CTA
  float* s_S = s_logit + static_cast<size_t>(G) * ld;        // [cluster_keys]
  uint4* s_stage = reinterpret_cast<uint4*>(cluster_smem4) + (sizeof(float) * (static_cast<size_t>(G) * ld + p.cluster_keys) + 15) / 16;
  // every CTA's s_stat, gathered in parallel after the scan: in the staging buffers when there are
  // some (idle by then), which keeps a staged CTA within a third of an SM's shared memory
  float2* s_all = Stages > 0 ? reinterpret_cast<float2*>(s_stage) : s_all_own;

  cg::cluster_group cluster = cg::this_cluster();
  const int C = static_cast<int>(cluster.num_blocks());
  const int rank = static_cast<int>(cluster.block_rank());
  const int h = blockIdx.y, i = blockIdx.z;
  const int H = p.st.num_kv_heads;
  ScanRange r;
  if (!scan_range(p, i, rank, C, &r)) return;  // same decision in every CTA of the cluster
  const size_t ih = static_cast<size_t>(i) * H + h;
  const size_t sh = static_cast<size_t>(r.slot) * H + h;
  if (r.j0 < r.j1) {
    Scan::run(sm, s_stage, p.q + ih * G * D, p.st.keys + sh * p.st.max_nc * D, r.j0, r.j1, p.scale,
              LogitRows{s_logit, ld, r.j0}, s_stat);
  } else {
    for (int g = threadIdx.x; g < G; g += blockDim.x) s_stat[g] = make_float2(-INFINITY, 0.f);
  }
  cluster.sync();  // every s_stat written

  // softmax statistics of the whole head: gather (one DSMEM load per thread), then combine
  // in rank order
  for (int e = threadIdx.x; e < C * G; e += blockDim.x) s_all[e] = cluster.map_shared_rank(s_stat, e / G)[e % G];
  __syncthreads();
  for (int g = threadIdx.x; g < G; g += blockDim.x) {
    float2 acc = make_float2(-INFINITY, 0.f);
    for (int c = 0; c < C; ++c) acc = softmax_combine(acc, s_all[c * G + g]);
    s_off[g] = window_offset(acc);
  }
  __syncthreads();
  for (int j = r.j0 + threadIdx.x; j < r.j1; j += blockDim.x) {
    const float* col = s_logit + (j - r.j0);
    s_S[j - r.j0] = window_score<G>([&](int g) { return col[static_cast<size_t>(g) * ld]; }, s_off);
  }
  cluster.sync();  // every S written

  const int nb = num_blocks(r.len, p.block_size);
  const int m0 = cluster_block_begin(rank, C, r.chunk, p.st.stride, p.block_size, nb);
  const int m1 = cluster_block_begin(rank + 1, C, r.chunk, p.st.stride, p.block_size, nb);
  const float* cb = p.st.cbias + sh * p.st.max_nc;
  const int chunk = r.chunk;
  auto window_s = [&](int j) {
    if (j >= r.j0 && j < r.j1) return s_S[j - r.j0];  // most windows are this CTA's own
    const int owner = j / chunk;  // chunk > 0 whenever a window exists
    const float* src = owner == rank ? s_S : cluster.map_shared_rank(s_S, owner);
    return src[j - owner * chunk];
  };
  for (int m = m0 + threadIdx.x; m < m1; m += blockDim.x)
    pool_block<NeedPe>(p, m, nb - 1, r.nc, cb, window_s, p.pq + ih * p.max_nb, p.pe + ih * p.max_nb);
  cluster.sync();  // keep this CTA's S alive until every CTA has pooled
#endif
}

}  // namespace detail
NOSA_NAMESPACE_END
