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
#include <type_traits>

NOSA_NAMESPACE_BEGIN
namespace detail {

/// Cluster sizes the host may choose (16 needs the non-portable cluster size attribute).
constexpr int kMinClusterSize = 2;
constexpr int kMaxPortableClusterSize = 8;
constexpr int kMaxClusterSize = 16;

/// Row stride (floats) of a cluster CTA's shared logits tile for `keys` keys per CTA: +8 floats
/// puts rows g and g + 4 of a warp's pair stores in different banks (2 wavefronts per store).
NOSA_HOST_DEVICE constexpr int cluster_logit_ld(int keys) { return keys + 8; }

/// The cluster kernels (DeviceSelector picks one per cluster size): scan with plain loads or a
/// cp.async double buffer, logits in a shared tile (score_pool_cluster_kernel, Stages 0 / 2), or
/// a deep cp.async ring with the logits in registers (score_pool_cluster_registers_kernel).
constexpr int kClusterPlain = 0;
constexpr int kClusterStaged = 2;
constexpr int kClusterRegisters = 3;

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

/// Where a cluster CTA stands: cluster size C and its rank, its key range r of one (entry, KV
/// head) job, and the rows of that (entry, head) in q (ih) and in the state (sh).
struct ClusterCta {
  int C, rank;
  ScanRange r;
  size_t ih, sh;
};

/// Fills *cta for job = entry * Hkv + head; false when the entry is invalid or empty (the same
/// answer in every CTA of a cluster, so a cluster skips the job as a whole, before any barrier).
template <class T, class KS>
NOSA_DEVICE NOSA_FORCEINLINE bool cluster_job(const SelectParams<T, KS>& p, int C, int rank, int job, ClusterCta* cta) {
  const int H = p.st.num_kv_heads, i = job / H, h = job - i * H;
  cta->C = C;
  cta->rank = rank;
  if (!scan_range(p, i, rank, C, &cta->r)) return false;
  cta->ih = static_cast<size_t>(i) * H + h;
  cta->sh = static_cast<size_t>(cta->r.slot) * H + h;
  return true;
}

/// The job of a cluster of the grid (C, Hkv, batch): entry blockIdx.z, KV head blockIdx.y.
template <class T, class KS, class Cluster>
NOSA_DEVICE NOSA_FORCEINLINE bool cluster_cta(const SelectParams<T, KS>& p, const Cluster& cluster, ClusterCta* cta) {
  return cluster_job(p, static_cast<int>(cluster.num_blocks()), static_cast<int>(cluster.block_rank()),
                     static_cast<int>(blockIdx.z) * p.st.num_kv_heads + static_cast<int>(blockIdx.y), cta);
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
  ClusterCta cta;
  if (!cluster_cta(p, cluster, &cta)) return;  // same decision in every CTA of the cluster
  const int C = cta.C, rank = cta.rank;
  const ScanRange& r = cta.r;
  const size_t ih = cta.ih, sh = cta.sh;
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
    pool_block<NeedPe>(p, m, nb - 1, r.nc, window_s, [&](int j) { return cb[j]; }, p.pq + ih * p.max_nb,
                       p.pe + ih * p.max_nb);
  cluster.sync();  // keep this CTA's S alive until every CTA has pooled
#endif
}

/// Split cluster barrier (barrier.cluster): arrive publishes this CTA's shared-memory writes
/// (release), wait blocks until every CTA of the cluster has arrived (acquire). Work between them
/// overlaps the wait; every thread of every CTA must take part.
NOSA_DEVICE NOSA_FORCEINLINE void cluster_arrive() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("barrier.cluster.arrive.release.aligned;\n" ::: "memory");
#endif
}
NOSA_DEVICE NOSA_FORCEINLINE void cluster_wait() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("barrier.cluster.wait.acquire.aligned;\n" ::: "memory");
#endif
}

// Shape of the register scan, overridable for A/B runs: ring bytes per warp, CTAs per SM it is
// compiled for (launch bounds), warps per CTA and warp tiles per warp (logit registers: 8 per
// tile). Defaults 12 KiB, 4, 4 and 9: 48 KiB ring + S per CTA, <= 128 registers per thread, up to
// 576 keys per CTA (measured against 16 KiB and 3 in docs/notes/selector.md).
#ifndef NOSA_REGISTER_SCAN_RING_BYTES
#define NOSA_REGISTER_SCAN_RING_BYTES 12288
#endif
#ifndef NOSA_REGISTER_SCAN_MIN_CTAS
#define NOSA_REGISTER_SCAN_MIN_CTAS 4
#endif
#ifndef NOSA_REGISTER_SCAN_WARPS
#define NOSA_REGISTER_SCAN_WARPS 4
#endif
#ifndef NOSA_REGISTER_SCAN_MAX_TILES
#define NOSA_REGISTER_SCAN_MAX_TILES 9
#endif

/// Threads per CTA of the register-scan cluster kernel (the launch uses it; the other cluster
/// kernels run kScoreThreads).
constexpr int kRegisterScanThreads = 32 * NOSA_REGISTER_SCAN_WARPS;
static_assert(NOSA_REGISTER_SCAN_WARPS >= 1 && NOSA_REGISTER_SCAN_WARPS <= 16, "register scan: 1..16 warps per CTA");
static_assert(NOSA_REGISTER_SCAN_MAX_TILES >= 1, "register scan: at least one warp tile per warp");

/// The register-logit cluster scan (kClusterRegisters): a warp's logits stay in its registers from
/// the mma to S, so the CTA's shared memory holds only a deep cp.async ring of key tiles (and S).
/// Warp tiles of 16 keys (two 8-key mma columns), warp w takes tiles w, w + W, ... of the CTA's
/// range, at most kMaxTiles of them (kMaxKeys keys per CTA); the ring has kStages tiles per warp
/// (NOSA_REGISTER_SCAN_RING_BYTES per warp whatever D is, 2..8 tiles). Needs G <= 16 (one m16
/// tile of query heads).
template <class T, int D, int G>
struct RegisterScan {
  static constexpr int W = NOSA_REGISTER_SCAN_WARPS;
  static constexpr int kThreads = kRegisterScanThreads;
  static constexpr int P = D / 32;        // 16-byte pieces per lane per key row
  static constexpr int KT = 2;            // 8-key mma columns per warp tile
  static constexpr int kTileKeys = 8 * KT;
  static constexpr int kMaxTiles = NOSA_REGISTER_SCAN_MAX_TILES;  // 8 logit registers per lane each
  static constexpr int kMaxKeys = W * kTileKeys * kMaxTiles;
  static constexpr int kPieces = P * KT;  // 16-byte pieces per lane per tile
  static constexpr int kTileBytes = kPieces * 32 * 16;
  static constexpr int kRingBytesPerWarp = NOSA_REGISTER_SCAN_RING_BYTES;
  static constexpr int kStages = (kRingBytesPerWarp / kTileBytes) < 2 ? 2
                                 : ((kRingBytesPerWarp / kTileBytes) > 8 ? 8 : kRingBytesPerWarp / kTileBytes);
  static constexpr int kStageWords = W * kStages * kPieces * 32;  // uint4
  static constexpr std::size_t kStageBytes = sizeof(uint4) * kStageWords;
  static_assert(G <= 16, "register scan: one m16 tile of query heads");
  static_assert(D % 32 == 0, "register scan: D must be a multiple of 32");
};

/// Dynamic shared memory of the register-scan cluster kernel: the ring, then S [keys] (keys: the
/// most a CTA scans, its own keys plus the halo of register_scan_halo).
template <class T, int D, int G>
constexpr std::size_t register_cluster_smem_bytes(int keys) {
  return RegisterScan<T, D, G>::kStageBytes + (sizeof(float) * static_cast<std::size_t>(keys) + 15) / 16 * 16;
}

/// The keys [lo, hi) a register-scan CTA reads for job cta, the blocks [m0, m1) it pools (of nb).
struct RegisterScanJob {
  int nb, m0, m1, lo, hi;
};
template <class T, class KS>
NOSA_DEVICE NOSA_FORCEINLINE RegisterScanJob register_scan_job(const SelectParams<T, KS>& p, const ClusterCta& cta) {
  RegisterScanJob j;
  j.nb = num_blocks(cta.r.len, p.block_size);
  j.m0 = cluster_block_begin(cta.rank, cta.C, cta.r.chunk, p.st.stride, p.block_size, j.nb);
  j.m1 = cluster_block_begin(cta.rank + 1, cta.C, cta.r.chunk, p.st.stride, p.block_size, j.nb);
  const KeySpan span = cluster_scan_span(cta.r.j0, cta.r.j1, j.m0, j.m1, p.block_size, p.st.window, p.st.stride, cta.r.nc);
  j.lo = span.lo;
  j.hi = span.hi;
  return j;
}

/// How the CTAs of one (entry, KV head) job exchange their softmax statistics in the register
/// scan (register_scan_pool). Both give every CTA of a job the same statistics in the same rank
/// order, so S and the selection do not depend on which policy ran (up to the part sizes).
///   ClusterExchange: the job's CTAs are one thread-block cluster; statistics are read through
///     distributed shared memory between split cluster barriers. Grid (C, Hkv, batch) or
///     (C, clusters, 1) (persistent).
///   GroupExchange: the job's `parts` CTAs are any `parts` consecutive CTAs of a cooperative grid
///     (parts * groups CTAs, all resident at once); each part stores its statistics in global
///     memory (a slot per (job, rank)) and adds its share of kArriveTotal to the job's arrive
///     counter; a CTA waits until the counter has moved by kArriveTotal since the multiple of
///     kArriveTotal its own add saw. Counters start at 0 (DeviceSelector::initialize) and every
///     call adds exactly kArriveTotal per job it runs, so they stay multiples of it between
///     calls (and wrap consistently: kArriveTotal divides 2^32); no reset launch is needed. A
///     workspace whose counters were not zeroed (initialize() skipped) can make a wait spin
///     forever: initialize() is required, as for the token counts.
/// Interface: parts, rank, first_job, job_stride; token = publish(s_stat, job) after s_stat is
/// written; wait(job, token) before combine(); combine<Groups>(s_stat, job, grp, g) = the
/// statistics of query head g of ranks grp, grp + Groups, ... combined in that order;
/// read_done() after the last combine(); job_done() before the next job rewrites s_stat.
#if !defined(__CUDA_ARCH__) || __CUDA_ARCH__ >= 900  // cluster_group exists for sm_90+ only
struct ClusterExchange {
  cooperative_groups::cluster_group cluster;
  int parts, rank, first_job, job_stride;
  NOSA_DEVICE NOSA_FORCEINLINE ClusterExchange() : cluster(cooperative_groups::this_cluster()) {
    parts = static_cast<int>(cluster.num_blocks());
    rank = static_cast<int>(cluster.block_rank());
    first_job = static_cast<int>(blockIdx.y + gridDim.y * blockIdx.z);
    job_stride = static_cast<int>(gridDim.y * gridDim.z);
  }
  NOSA_DEVICE NOSA_FORCEINLINE unsigned publish(float2*, int) {
    cluster_arrive();
    return 0;
  }
  NOSA_DEVICE NOSA_FORCEINLINE void wait(int, unsigned) { cluster_wait(); }
  // ranks grp, grp + Groups, ... of query head g, combined in that order
  template <int Groups>
  NOSA_DEVICE NOSA_FORCEINLINE float2 combine(float2* s_stat, int, int grp, int g) {
    float2 acc = make_float2(-INFINITY, 0.f);
    for (int c = grp; c < parts; c += Groups) acc = softmax_combine(acc, cluster.map_shared_rank(s_stat, c)[g]);
    return acc;
  }
  NOSA_DEVICE NOSA_FORCEINLINE void read_done() { cluster_arrive(); }
  NOSA_DEVICE NOSA_FORCEINLINE void job_done() { cluster_wait(); }
};
#endif

/// Arrive counters of GroupExchange: kArriveTotal per job and call, one 128-byte line per job.
constexpr unsigned kArriveTotal = 1u << 16;
constexpr int kArriveStride = 32;

template <int G, class P>
struct GroupExchange {
  const P& p;  // the kernel's __grid_constant__ parameters: pointers stay in the constant bank
  int parts, rank, first_job, job_stride;
  NOSA_DEVICE NOSA_FORCEINLINE explicit GroupExchange(const P& params) : p(params) {
    parts = p.splits;
    rank = static_cast<int>(blockIdx.x) % parts;
    first_job = static_cast<int>(blockIdx.x) / parts;
    job_stride = static_cast<int>(gridDim.x) / parts;
  }
  NOSA_DEVICE NOSA_FORCEINLINE float2* slot(int job, int c) const {
    return p.stats + (static_cast<size_t>(job) * p.splits + c) * G;
  }
  NOSA_DEVICE NOSA_FORCEINLINE unsigned* counter(int job) const { return p.arrive + static_cast<size_t>(job) * kArriveStride; }
  // s_stat[g] was written by thread g (write_split_stats). The fence-barrier-atomic order is the
  // one of a grid barrier: every statistic is visible before the counter moves. Returns (thread 0)
  // the multiple of kArriveTotal the job's counter held before this call: wait()'s token.
  NOSA_DEVICE NOSA_FORCEINLINE unsigned publish(float2* s_stat, int job) {
    if (threadIdx.x < G) {
      __stcg(slot(job, rank) + threadIdx.x, s_stat[threadIdx.x]);
      __threadfence();
    }
    __syncthreads();
    unsigned base = 0;
    if (threadIdx.x == 0) {
      const unsigned share = kArriveTotal / static_cast<unsigned>(parts);
      const unsigned add = rank == parts - 1 ? kArriveTotal - share * static_cast<unsigned>(parts - 1) : share;
      base = atomicAdd(counter(job), add) & ~(kArriveTotal - 1u);
    }
    return base;
  }
  NOSA_DEVICE NOSA_FORCEINLINE void wait(int job, unsigned base) {
    if (threadIdx.x == 0) {
      const volatile unsigned* c = counter(job);
      while (*c - base < kArriveTotal) {
      }
      __threadfence();
    }
    __syncthreads();
  }
  // ranks grp, grp + Groups, ... of query head g, combined in that order; the loads are issued
  // four at a time (an L2 round trip each under full HBM load: one after the other they cost a
  // job about as much as its scan at 64 parts, measured in docs/notes/selector.md). An empty
  // slot (-inf, 0) leaves the combine bit for bit unchanged.
  template <int Groups>
  NOSA_DEVICE NOSA_FORCEINLINE float2 combine(float2*, int job, int grp, int g) const {
    float2 acc = make_float2(-INFINITY, 0.f);
    for (int c0 = grp; c0 < parts; c0 += 4 * Groups) {
      float2 v[4];
#pragma unroll
      for (int i = 0; i < 4; ++i) {
        const int c = c0 + i * Groups;
        v[i] = c < parts ? __ldcg(slot(job, c) + g) : make_float2(-INFINITY, 0.f);
      }
#pragma unroll
      for (int i = 0; i < 4; ++i) acc = softmax_combine(acc, v[i]);
    }
    return acc;
  }
  NOSA_DEVICE NOSA_FORCEINLINE void read_done() {}
  NOSA_DEVICE NOSA_FORCEINLINE void job_done() {}
};

/// The register-logit scan with pooling: same results contract as score_pool_cluster_kernel.
/// Each CTA also scans the few neighbouring keys whose windows its blocks overlap (their logits
/// only feed S, not its softmax statistics), so S never crosses CTAs: one exchange of statistics
/// (Exchange, above) is the only dependency between the CTAs of a job.
/// Jobs: (entry, head) pairs, job = entry * Hkv + head; a CTA takes the jobs first_job,
/// first_job + job_stride, ... as part `rank` of `parts`. Order of a CTA per job:
///   scan of [lo, hi) (statistics over its own [j0, j1)) -> publish -> q fragments and the first
///   key tiles of its next job (cp.async: they stream while this job ends) -> Pe of its blocks
///   (compressed scores only) -> wait -> every rank's statistics, combined in a fixed order ->
///   read_done -> S and Pq of its blocks from registers and its own shared memory -> job_done.
/// Without the prefetch a CTA would stream nothing from the end of its scan to the start of the
/// next job's (barrier waits, combine, S, pooling: about a quarter of its time at 128K, measured
/// in docs/notes/selector.md).
template <class T, class KS, int D, int G, bool NeedPe, class Exchange>
NOSA_DEVICE NOSA_FORCEINLINE void register_scan_pool(const SelectParams<T, KS>& p, Exchange& ex) {
  using R = RegisterScan<T, D, G>;
  using CT = cuda_type_t<T>;
  constexpr int P = R::P, KT = R::KT, W = R::W, S = R::kStages, NT = R::kMaxTiles;
  constexpr int kGroups = R::kThreads / 16;  // rank groups of the statistics combine
  static_assert(std::is_same_v<T, KS>, "mma scoring needs keys stored in T");
  __shared__ uint4 s_a[1][P][32][2];     // q fragments (the load_q_fragments layout)
  __shared__ float2 s_warp[W][16];       // per-warp (max, sum-exp) per query head
  __shared__ float2 s_comb[W][16];       // per-warp combines of every rank's statistics
  __shared__ float2 s_stat[G];           // this CTA's statistics: read cluster-wide
  __shared__ float s_off[16];            // window_offset per query head
  extern __shared__ float4 cluster_smem4[];
  uint4* s_ring = reinterpret_cast<uint4*>(cluster_smem4);         // [W][S][kPieces][32]
  float* s_S = reinterpret_cast<float*>(s_ring + R::kStageWords);  // [hi - lo]

  const int C = ex.parts, rank = ex.rank;
  const int jobs = p.batch * p.st.num_kv_heads, job_stride = ex.job_stride;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int t4 = lane & 3, r4 = lane >> 2;
  uint4* mine = s_ring + warp * S * R::kPieces * 32 + lane;  // this lane's pieces: its own column

  // the next job of this cluster from `job` on (jobs when none): the same in every CTA
  auto next_job = [&](int job, ClusterCta* cta) {
    while (job < jobs && !cluster_job(p, C, rank, job, cta)) job += job_stride;
    return job;
  };
  auto keys_of = [&](const ClusterCta& cta) { return as_cuda(p.st.keys) + cta.sh * p.st.max_nc * D; };
  // tile k of this warp of the range [lo, hi) into ring slot k % S; an empty group past the end
  auto issue_tile = [&](const CT* keys, int lo, int hi, int k) {
    const int base = lo + (warp + W * k) * R::kTileKeys;
    if (k < NT && base < hi) issue_key_tile<D, P, KT>(mine, k % S, keys, base, hi, r4, t4);
  };
  // the head of a job: q fragments (one group), then its first S - 1 key tiles (a group each).
  // s_a must be free: every warp past its mma.
  auto issue_head = [&](const ClusterCta& cta, const RegisterScanJob& js) {
    const CT* qh = as_cuda(p.q + cta.ih * G * D);
    for (int e = threadIdx.x; e < P * 32; e += blockDim.x) {
      const int l = e % 32, pp = e / 32;
      const int row = l >> 2, d = 32 * pp + 8 * (l & 3);
      cp_async_16(&s_a[0][pp][l][0], row < G ? qh + static_cast<size_t>(row) * D + d : qh, row < G ? 16 : 0);
      cp_async_16(&s_a[0][pp][l][1], row + 8 < G ? qh + static_cast<size_t>(row + 8) * D + d : qh, row + 8 < G ? 16 : 0);
    }
    cp_async_commit();
    const CT* keys = keys_of(cta);
#pragma unroll
    for (int k = 0; k < S - 1; ++k) {
      issue_tile(keys, js.lo, js.hi, k);
      cp_async_commit();
    }
  };

  const float scale2 = p.scale * kLog2e;
  using Logits = float[NT][KT][4];  // a lane's logits: tile k, column kt, rows r4 (e 0, 1) / r4 + 8 (e 2, 3)

  // one job's scan: key tiles -> lg (every scanned key), statistics of its own keys -> s_stat;
  // its compressed scores -> sS (cp.async, for Pe). The q fragments and first tiles were issued
  // by issue_head.
  auto scan_job = [&](const ClusterCta& cta, const RegisterScanJob& js, Logits& lg, float* sS) {
    const ScanRange& r = cta.r;
    const int lo = js.lo, hi = js.hi;
    const CT* keys = keys_of(cta);
    cp_async_wait<S - 1>();  // q landed (this thread's pieces)
    __syncthreads();         // everyone's; and earlier reads of sS are over
    float2 run[2] = {make_float2(-INFINITY, 0.f), make_float2(-INFINITY, 0.f)};
#pragma unroll
    for (int k = 0; k < NT; ++k) {
      issue_tile(keys, lo, hi, k + S - 1);
      if (NeedPe && k == 0) {  // the compressed scores of [lo, hi) wait in sS (free until S is
                               // formed), so the Pe pooling after the scan reads shared memory
        const float* cb = p.st.cbias + cta.sh * p.st.max_nc;
        for (int j = lo + threadIdx.x; j < hi; j += blockDim.x) cp_async_4(sS + (j - lo), cb + j, 4);
      }
      cp_async_commit();
      cp_async_wait<S - 1>();  // tile k has landed (this lane's pieces)
      const int base = lo + (warp + W * k) * R::kTileKeys;
      if (base < hi) {  // warp-uniform
        uint4 kv[P][KT];
#pragma unroll
        for (int pp = 0; pp < P; ++pp)
#pragma unroll
          for (int kt = 0; kt < KT; ++kt) kv[pp][kt] = mine[(((k % S) * P + pp) * KT + kt) * 32];
        float acc[KT][1][4] = {};
        mma_key_tile<CT>(acc, s_a, kv, lane);
#pragma unroll
        for (int half = 0; half < 2; ++half) {
          float vmax = -INFINITY;
#pragma unroll
          for (int kt = 0; kt < KT; ++kt) {
            const int j = base + kt * 8 + 2 * t4;
#pragma unroll
            for (int e = 0; e < 2; ++e) {
              const float x = acc[kt][0][2 * half + e] * scale2;
              lg[k][kt][2 * half + e] = x;
              if (j + e >= r.j0 && j + e < r.j1) vmax = fmaxf(vmax, x);  // statistics: own keys only
            }
          }
          if (vmax == -INFINITY) continue;
          float2 cur = raise_running_max(run[half], vmax);
#pragma unroll
          for (int kt = 0; kt < KT; ++kt) {
            const int j = base + kt * 8 + 2 * t4;
#pragma unroll
            for (int e = 0; e < 2; ++e)
              if (j + e >= r.j0 && j + e < r.j1) cur.y += exp2f(lg[k][kt][2 * half + e] - cur.x);
          }
          run[half] = cur;
        }
      }
    }
    cp_async_wait<0>();  // the scores in sS (only empty groups besides)
#pragma unroll
    for (int half = 0; half < 2; ++half) {
      const float2 v = quad_softmax_combine(run[half]);
      if (t4 == 0) s_warp[warp][r4 + 8 * half] = v;
    }
    write_split_stats<16, W>(s_warp, s_stat, G);  // starts with __syncthreads: s_a and the ring are free
  };

  // one job's end: Pe of its blocks (compressed scores in sS), the head's statistics (after
  // ex.wait), S of its scanned keys from lg into sS, Pq of its blocks
  auto end_job = [&](const ClusterCta& cta, const RegisterScanJob& js, int job, unsigned token, Logits& lg, float* sS) {
    const ScanRange& r = cta.r;
    const int lo = js.lo, hi = js.hi, nb = js.nb, m0 = js.m0, m1 = js.m1;
    // Pe needs only the compressed scores: pooled while the other CTAs finish their scans; the
    // barriers of the statistics combine below order these reads before S overwrites sS
    float* pq = p.pq + cta.ih * p.max_nb;
    if constexpr (NeedPe) {
      float* pe = p.pe + cta.ih * p.max_nb;
      for (int m = m0 + threadIdx.x; m < m1; m += blockDim.x)
        pe[m] = pool_pq(p, m, nb - 1, r.nc, [&](int j) { return sS[j - lo]; });
    }
    ex.wait(job, token);

    // statistics of the whole head: thread (g = t % 16, group t / 16) combines ranks group,
    // group + kGroups, ...; then the pair of groups in a warp (lanes l, l ^ 16), then the warps
    // in order. The same fixed order in every CTA.
    {
      const int g = threadIdx.x & 15, grp = threadIdx.x >> 4;
      float2 acc = g < G ? ex.template combine<kGroups>(s_stat, job, grp, g) : make_float2(-INFINITY, 0.f);
      float2 o;
      o.x = __shfl_xor_sync(0xffffffffu, acc.x, 16);
      o.y = __shfl_xor_sync(0xffffffffu, acc.y, 16);
      acc = (lane < 16) ? softmax_combine(acc, o) : softmax_combine(o, acc);  // same operands order in both lanes
      ex.read_done();  // this CTA has read every rank's statistics
      if (lane < 16) s_comb[warp][g] = acc;
      __syncthreads();
      if (threadIdx.x < G) {
        float2 a = s_comb[0][threadIdx.x];
        for (int w = 1; w < W; ++w) a = softmax_combine(a, s_comb[w][threadIdx.x]);
        s_off[threadIdx.x] = window_offset(a);
      }
      __syncthreads();
    }

    // S of the scanned keys from registers: a lane's two rows, then the 8 row pairs of the column
    // across lanes r4 = 0..7 (a fixed xor tree, so every lane holds the same sum)
    const bool row0 = r4 < G, row8 = r4 + 8 < G;
    const float off0 = row0 ? s_off[r4] : 0.f, off8 = row8 ? s_off[r4 + 8] : 0.f;
#pragma unroll
    for (int k = 0; k < NT; ++k) {
      const int base = lo + (warp + W * k) * R::kTileKeys;
      if (base >= hi) continue;  // warp-uniform
#pragma unroll
      for (int kt = 0; kt < KT; ++kt)
#pragma unroll
        for (int e = 0; e < 2; ++e) {
          float v = __fadd_rn(row0 ? exp2f(lg[k][kt][e] - off0) : 0.f, row8 ? exp2f(lg[k][kt][2 + e] - off8) : 0.f);
          v = __fadd_rn(v, __shfl_xor_sync(0xffffffffu, v, 4));
          v = __fadd_rn(v, __shfl_xor_sync(0xffffffffu, v, 8));
          v = __fadd_rn(v, __shfl_xor_sync(0xffffffffu, v, 16));
          const int j = base + kt * 8 + 2 * t4 + e;
          if (r4 == 0 && j < hi) sS[j - lo] = v;
        }
    }
    __syncthreads();
    for (int m = m0 + threadIdx.x; m < m1; m += blockDim.x)
      pq[m] = pool_pq(p, m, nb - 1, r.nc, [&](int j) { return sS[j - lo]; });
  };

  ClusterCta cta;
  int job = next_job(ex.first_job, &cta);
  if (job >= jobs) return;  // the whole cluster / group: nothing to do
  RegisterScanJob js = register_scan_job(p, cta);
  issue_head(cta, js);
  for (;;) {
    Logits lg;
    scan_job(cta, js, lg, s_S);
    const unsigned token = ex.publish(s_stat, job);
    // the next job's q and first key tiles stream while this one ends
    ClusterCta next;
    const int next_id = next_job(job + job_stride, &next);
    RegisterScanJob next_js{};
    if (next_id < jobs) {
      next_js = register_scan_job(p, next);
      issue_head(next, next_js);
    }
    end_job(cta, js, job, token, lg, s_S);
    ex.job_done();  // no CTA rewrites its s_stat (next job) or exits while another may still read it
    if (next_id >= jobs) break;
    job = next_id;
    cta = next;
    js = next_js;
  }
}

/// The register-logit cluster kernel: one cluster per job (grid (C, Hkv, batch)) or persistent
/// clusters (grid (C, clusters, 1), DeviceSelector::persistent_clusters); ClusterExchange.
template <class T, class KS, int D, int G, bool NeedPe>
__global__ void __launch_bounds__(kRegisterScanThreads, NOSA_REGISTER_SCAN_MIN_CTAS)
    score_pool_cluster_registers_kernel(const __grid_constant__ SelectParams<T, KS> p) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ < 900
  (void)p;
  __trap();
#else
  ClusterExchange ex;
  register_scan_pool<T, KS, D, G, NeedPe>(p, ex);
#endif
}

/// The split path's kernel: the register-logit scan with each job split over p.splits CTAs that
/// need not share a GPC, grid (p.splits * groups) launched cooperatively (every CTA resident at
/// once, which GroupExchange's waits need); group g takes the jobs g, g + groups, ..., so every
/// CTA of a job reaches it at the same position of its sequence and no wait can close a cycle.
template <class T, class KS, int D, int G, bool NeedPe>
__global__ void __launch_bounds__(kRegisterScanThreads, NOSA_REGISTER_SCAN_MIN_CTAS)
    score_pool_split_kernel(const __grid_constant__ SelectParams<T, KS> p) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ < 900
  (void)p;
  __trap();
#else
  GroupExchange<G, SelectParams<T, KS>> ex(p);
  register_scan_pool<T, KS, D, G, NeedPe>(p, ex);
#endif
}

}  // namespace detail
NOSA_NAMESPACE_END
