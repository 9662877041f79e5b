// nosa::detail: stage-1 scoring of the device selector (split-K over compressed keys).
//
// One scanning CTA owns the compressed keys [j0, j1) of entry i, head h (ScanRange) and, for
// each of the G query heads g, produces
//   logits[g][j] = q_g . Kc[j] / sqrt(D) * log2(e)   (fp32, base 2)
//   stats[g]     = (max, sum of 2^(logit - max)) over its keys
// Base 2 makes every exponential of stage 1 one exp2f (the MUFU unit) instead of expf's range
// reduction: softmax_combine, the scan's running sums and window_score (selector_topk.cuh).
// Global path: grid (splits, Hkv, batch), logits to the [batch][Hkv][G][ld] scratch and stats
// to [batch][Hkv][splits][G]; pool_kernel (selector_topk.cuh) combines them. Cluster path
// (selector_cluster.cuh): the same scan core keeps the logits and stats in shared memory.
// Each key is read exactly once. Two scan cores:
//   - 2-byte store types (bf16/fp16): MmaScan, tensor-core mma.m16n8k16 with fp32 accumulation
//     (products of 2-byte values are exact in fp32; only the summation order differs from the
//     host).
//   - fp32 store: plain FMA, one key per thread (global path only).
#pragma once

#include <nosa/config.h>
#include <nosa/detail/attention_mma.cuh>
#include <nosa/detail/cuda_types.cuh>
#include <nosa/detail/selection_math.h>
#include <nosa/detail/selector_append.cuh>

#include <cuda_runtime.h>

#include <cstdint>
#include <type_traits>

NOSA_NAMESPACE_BEGIN
namespace detail {

template <class T, class KS>
struct SelectParams {
  SelectorStateView<T, KS> st;
  const int* seq_slots;  ///< [batch]
  const int* seq_lens;   ///< [batch]
  const T* q;            ///< [batch][Hkv*G][D]
  float* logits;         ///< [max_batch][Hkv][G][ld]
  float2* stats;         ///< [max_batch][Hkv][splits][G]
  unsigned* arrive;      ///< split path: arrive counter per job [max_batch * Hkv][kArriveStride]
  float* pq;             ///< [max_batch][Hkv][max_nb]
  float* pe;             ///< [max_batch][Hkv][max_nb]
  int* block_ids;        ///< [batch][Hkv][block_stride]
  int* counts;           ///< [batch][Hkv]
  int batch;             ///< entries of this call
  int block_stride;
  int ld;                ///< logits row stride (>= max_nc, multiple of 4)
  int splits;            ///< split-K parts of the scoring kernel, CTAs per job of the cluster / split path
  int pool_splits;       ///< block ranges of the pooling kernel (fixed by the config)
  int max_nb;
  int max_seq_len;
  int block_size;
  int sink, local, query_aware, budget;
  int pool_window_cap;   ///< windows one pooling CTA covers (length of its shared S and bc arrays)
  int cluster_keys;      ///< cluster path: compressed keys one CTA holds (>= score_chunk(nc, splits))
  int select_smem;       ///< 1: the select kernel stages Pq/Pe in dynamic shared memory
  float scale;           ///< 1 / sqrt(D), computed on the host as the reference does
};

/// Decodes entry i: slot and length; false (and nothing to do) for invalid or empty entries.
template <class P>
NOSA_DEVICE NOSA_FORCEINLINE bool entry_length(const P& p, int i, int* slot, int* T) {
  *slot = p.seq_slots[i];
  *T = p.seq_lens[i];
  if (*slot < 0 || *slot >= p.st.max_sequences) return false;
  if (*T <= 0 || *T > p.max_seq_len || *T > p.st.counts[*slot]) return false;
  return true;
}

/// log2(e): the device logits are base 2 (see the file comment).
constexpr float kLog2e = 1.4426950408889634f;

/// Online (max, sum of 2^(x - max)) accumulation of base-2 logits; m = -inf means empty.
NOSA_DEVICE NOSA_FORCEINLINE float2 softmax_combine(float2 a, float2 b) {
  const float m = fmaxf(a.x, b.x);
  if (m == -INFINITY) return make_float2(-INFINITY, 0.f);
  return make_float2(m, a.y * exp2f(a.x - m) + b.y * exp2f(b.x - m));
}

/// The statistics of the 4 lanes of a quad (lanes 4 r4 .. 4 r4 + 3: the same query-head rows of
/// an mma tile) combined in a fixed xor order; every lane of the quad gets the same value.
NOSA_DEVICE NOSA_FORCEINLINE float2 quad_softmax_combine(float2 v) {
#pragma unroll
  for (int off = 1; off < 4; off <<= 1) {
    float2 o;
    o.x = __shfl_xor_sync(0xffffffffu, v.x, off);
    o.y = __shfl_xor_sync(0xffffffffu, v.y, off);
    v = softmax_combine(v, o);
  }
  return v;
}

/// A running (max, sum of 2^(x - max)) raised to a new candidate maximum vmax: the sum is rescaled
/// when vmax is larger (the scan loops then add this tile's terms against cur.x).
NOSA_DEVICE NOSA_FORCEINLINE float2 raise_running_max(float2 cur, float vmax) {
  if (vmax > cur.x) {
    cur.y = cur.x == -INFINITY ? 0.f : cur.y * exp2f(cur.x - vmax);
    cur.x = vmax;
  }
  return cur;
}

template <class CT>
NOSA_DEVICE NOSA_FORCEINLINE void mma_16816(float (&c)[4], unsigned a0, unsigned a1, unsigned a2, unsigned a3,
                                            unsigned b0, unsigned b1) {
  if constexpr (std::is_same_v<CT, __nv_bfloat16>) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
        "{%0,%1,%2,%3};\n"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
  } else {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
        "{%0,%1,%2,%3};\n"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
  }
}

/// The mma A fragments of q (G query heads x D, row-major) in the order the scans read them:
/// a[mt][pp][lane] = rows mt*16 + lane/4 and + 8, d = 32 pp + 8 (lane % 4) .. + 8 (rows >= G are
/// zero). Every thread of the CTA takes part; the caller synchronizes before reading.
template <int D, int G, class CT, int MT, int P>
NOSA_DEVICE NOSA_FORCEINLINE void load_q_fragments(const CT* qh, uint4 (&a)[MT][P][32][2]) {
  for (int e = threadIdx.x; e < MT * P * 32; e += blockDim.x) {
    const int l = e % 32, pp = (e / 32) % P, mt = e / (32 * P);
    const int r = mt * 16 + (l >> 2), d = 32 * pp + 8 * (l & 3);
    const uint4 zero = make_uint4(0, 0, 0, 0);
    a[mt][pp][l][0] = r < G ? *reinterpret_cast<const uint4*>(qh + static_cast<size_t>(r) * D + d) : zero;
    a[mt][pp][l][1] = r + 8 < G ? *reinterpret_cast<const uint4*>(qh + static_cast<size_t>(r + 8) * D + d) : zero;
  }
}

/// acc[kt][mt] += q (A fragments a) x keys kt*8 .. + 8 of a warp tile, whose 16-byte pieces this
/// lane holds in kv[pp][kt] (key lane/4, d = 32 pp + 8 (lane % 4) .. + 8): each piece feeds two
/// k16 steps, and q was laid out with the same d permutation, so the dot products are unchanged.
template <class CT, int KT, int MT, int P>
NOSA_DEVICE NOSA_FORCEINLINE void mma_key_tile(float (&acc)[KT][MT][4], const uint4 (&a)[MT][P][32][2],
                                               const uint4 (&kv)[P][KT], int lane) {
#pragma unroll
  for (int pp = 0; pp < P; ++pp) {
#pragma unroll
    for (int mt = 0; mt < MT; ++mt) {
      const uint4 ar = a[mt][pp][lane][0], ar8 = a[mt][pp][lane][1];
#pragma unroll
      for (int kt = 0; kt < KT; ++kt) {
        mma_16816<CT>(acc[kt][mt], ar.x, ar8.x, ar.y, ar8.y, kv[pp][kt].x, kv[pp][kt].y);
        mma_16816<CT>(acc[kt][mt], ar.z, ar8.z, ar.w, ar8.w, kv[pp][kt].z, kv[pp][kt].w);
      }
    }
  }
}

constexpr int kScoreThreads = 128;

/// Combines a CTA's per-g statistics: per-thread values are first combined within the warp by
/// the caller's layout (warp_stats[w][g]), then across warps here, in warp order. `out` may be
/// global or shared memory. Warps: the CTA's warps (kScoreThreads / 32 unless the kernel has its
/// own thread count).
template <int Rows, int Warps = kScoreThreads / 32>
NOSA_DEVICE NOSA_FORCEINLINE void write_split_stats(float2 (*warp_stats)[Rows], float2* out, int G) {
  __syncthreads();
  for (int g = threadIdx.x; g < G; g += blockDim.x) {
    float2 acc = make_float2(-INFINITY, 0.f);
    for (int w = 0; w < Warps; ++w) acc = softmax_combine(acc, warp_stats[w][g]);
    out[g] = acc;
  }
}

/// Where the logits of (query head g, key j) go: base[g * ld + (j - j0)]. The global path uses
/// the [G][ld] scratch with j0 = 0; the cluster path a CTA's shared [G][ld] tile with j0 = its
/// first key. j - j0 is even for the pair stores (keys come in pairs 2 t4, 2 t4 + 1 of 32-key
/// aligned tiles), so the float2 store is aligned when ld and base are.
struct LogitRows {
  float* base;
  int ld;
  int j0;
  NOSA_DEVICE NOSA_FORCEINLINE void store(int g, int j, float x0, float x1, bool pair) const {
    float* at = base + static_cast<size_t>(g) * ld + (j - j0);
    if (pair) *reinterpret_cast<float2*>(at) = make_float2(x0, x1);
    else *at = x0;
  }
};

/// The keys [j0, j1) a scanning CTA owns: part `split` of `splits` of entry i's nc compressed
/// keys, in chunks of score_chunk(nc, splits). Shared by every scan kernel (global and cluster).
struct ScanRange {
  int slot, len, nc, chunk, j0, j1;
};

/// false: the entry is invalid or empty (nothing to do; select_kernel reports it).
template <class P>
NOSA_DEVICE NOSA_FORCEINLINE bool scan_range(const P& p, int i, int split, int splits, ScanRange* r) {
  if (!entry_length(p, i, &r->slot, &r->len)) return false;
  r->nc = num_compressed(r->len, p.st.window, p.st.stride);
  r->chunk = score_chunk(r->nc, splits);
  r->j0 = split * r->chunk;
  r->j1 = min(r->nc, r->j0 + r->chunk);
  return true;
}

/// Prologue of the global-path scan kernels (grid (splits, Hkv, batch)): the CTA's range and its
/// slot of the split statistics. false when there is nothing to scan; an empty split still
/// writes empty statistics (m = -inf) for the pooling kernel to combine.
template <int G, class P>
NOSA_DEVICE NOSA_FORCEINLINE bool global_scan_prologue(const P& p, ScanRange* r, float2** stats_out) {
  const int split = blockIdx.x, h = blockIdx.y, i = blockIdx.z;
  if (!scan_range(p, i, split, p.splits, r)) return false;
  *stats_out = p.stats + ((static_cast<size_t>(i) * p.st.num_kv_heads + h) * p.splits + split) * G;
  if (r->j0 >= r->j1) {
    for (int g = threadIdx.x; g < G; g += blockDim.x) (*stats_out)[g] = make_float2(-INFINITY, 0.f);
    return false;
  }
  return true;
}

/// Starts the cp.async copies of this lane's pieces of the warp tile of 8 KT keys at `base` (rows
/// past `end` zero-filled) into buffer `buf` of its staging: key base + 8 kt + r4, 16 bytes at
/// d = 32 pp + 8 t4, to mine[((buf * P + pp) * KT + kt) * 32] (mine: the lane's own column, so a
/// lane reads back only what it copied and no barrier is needed). The caller commits the group.
template <int D, int P, int KT, class CT>
NOSA_DEVICE NOSA_FORCEINLINE void issue_key_tile(uint4* mine, int buf, const CT* keys, int base, int end, int r4, int t4) {
#pragma unroll
  for (int pp = 0; pp < P; ++pp)
#pragma unroll
    for (int kt = 0; kt < KT; ++kt) {
      const int j = base + kt * 8 + r4;
      const bool ok = j < end;
      cp_async_16(mine + ((buf * P + pp) * KT + kt) * 32, ok ? keys + static_cast<size_t>(j) * D + 32 * pp + 8 * t4 : keys,
                  ok ? 16 : 0);
    }
}

/// The tensor-core scan of one CTA (2-byte keys): stages q of (i, h) in shared memory, reads the
/// keys [j0, j1) of (slot, h) once, stores every logit through `rows`, and writes the CTA's
/// (max, sum of 2^(x - max)) per query head to stats_out[0..G) (global or shared). A warp
/// computes 8 keys x 16 query heads per mma chain; a thread's 16-byte key piece (8 consecutive d)
/// feeds two k16 steps, and q uses the same d permutation, so the dot product is unchanged.
/// How key pieces reach registers (Stages):
///   0: plain 16-byte loads (the default; no staging memory): all 16 of a tile are issued before
///      its first product (SASS of the sm_90a build; at 128 registers), so a warp tile waits for
///      memory once, but no warp has two tiles in flight.
///   1, 2: a per-lane shared-memory staging area filled by 16-byte cp.async, 1 or 2 warp tiles
///      per warp: all pieces of a tile are in flight at once, and with 2 the next tile's copies
///      overlap this tile's products. Costs kStageBytes of shared memory per CTA, hence fewer
///      CTAs per SM (docs/notes/selector.md has the measured trade-off; NOSA_CLUSTER_SCAN_STAGES).
/// Needs j0 < j1, kScoreThreads threads and `stage` = kStageWords uint4 of shared memory (unused
/// for Stages = 0); every thread must call it (it synchronizes the CTA).
template <class T, int D, int G, int Stages = 0, int TileKeys = 32>
struct MmaScan {
  using CT = cuda_type_t<T>;
  static constexpr int MT = (G + 15) / 16;  // m16 tiles of query heads
  static constexpr int P = D / 32;          // 16-byte pieces per thread per key row
  static constexpr int KT = (TileKeys * 128 / D) / 8;  // 8-key tiles per warp tile (TileKeys at D = 128)
  static constexpr int W = kScoreThreads / 32;
  static constexpr int kPieces = P * KT;    // 16-byte pieces per lane per warp tile (16)
  static constexpr int kStageWords = Stages * W * kPieces * 32;
  static constexpr std::size_t kStageBytes = sizeof(uint4) * kStageWords;
  static_assert(D % 32 == 0 && D <= 512, "mma scan: D must be a multiple of 32, at most 512");
  static_assert(Stages >= 0 && Stages <= 2, "mma scan: 0 (plain loads), 1 or 2 staging buffers per warp");
  static_assert(KT >= 1, "mma scan: at least one 8-key tile per warp tile");
  struct Shared {
    uint4 a[MT][P][32][2];
    float2 warp_stats[W][MT * 16];
  };

  template <class KS>
  static NOSA_DEVICE NOSA_FORCEINLINE void run(Shared& sm, uint4* stage, const T* q, const KS* keys_of_head, int j0,
                                               int j1, float scale, const LogitRows& rows, float2* stats_out) {
    static_assert(std::is_same_v<T, KS>, "mma scoring needs keys stored in T");
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int t4 = lane & 3, r4 = lane >> 2;
    const CT* keys = as_cuda(keys_of_head);
    // piece (buffer b, pp, kt) of this lane at mine[((b * P + pp) * KT + kt) * 32]: consecutive
    // lanes, consecutive 16 bytes (no bank conflicts); each lane reads back only its own pieces
    uint4* mine = Stages > 0 ? stage + warp * Stages * kPieces * 32 + lane : nullptr;
    auto issue = [&](int base, int buf) {
      issue_key_tile<D, P, KT>(mine, buf, keys, base, j1, r4, t4);
      cp_async_commit();
    };
    const int step = W * 8 * KT;
    if constexpr (Stages > 0) {
      if (j0 + warp * 8 * KT < j1) issue(j0 + warp * 8 * KT, 0);  // the first tile flies while q is staged
    }

    load_q_fragments<D, G>(as_cuda(q), sm.a);
    __syncthreads();

    const float scale2 = scale * kLog2e;
    float2 run[MT][2];
#pragma unroll
    for (int mt = 0; mt < MT; ++mt) run[mt][0] = run[mt][1] = make_float2(-INFINITY, 0.f);

    // One warp tile: 8 KT keys from `base`, its pieces in buffer `buf` (staged). kFull: all of
    // them are below j1, so the bounds checks compile away.
    auto tile = [&](int base, int buf, auto full) {
      constexpr bool kFull = decltype(full)::value;
      uint4 kv[P][KT];
#pragma unroll
      for (int pp = 0; pp < P; ++pp)
#pragma unroll
        for (int kt = 0; kt < KT; ++kt) {
          if constexpr (Stages == 0) {
            const int j = base + kt * 8 + r4;
            kv[pp][kt] = (kFull || j < j1)
                             ? __ldg(reinterpret_cast<const uint4*>(keys + static_cast<size_t>(j) * D + 32 * pp + 8 * t4))
                             : make_uint4(0, 0, 0, 0);
          } else {
            kv[pp][kt] = mine[((buf * P + pp) * KT + kt) * 32];
          }
        }
      float acc[KT][MT][4];
#pragma unroll
      for (int kt = 0; kt < KT; ++kt)
#pragma unroll
        for (int mt = 0; mt < MT; ++mt)
#pragma unroll
          for (int e = 0; e < 4; ++e) acc[kt][mt][e] = 0.f;
      mma_key_tile<CT>(acc, sm.a, kv, lane);
      // acc[kt][mt]: e0,e1 -> row r4, keys 2 t4, 2 t4 + 1; e2,e3 -> row r4 + 8.
#pragma unroll
      for (int mt = 0; mt < MT; ++mt) {
#pragma unroll
        for (int half = 0; half < 2; ++half) {
          const int g = mt * 16 + r4 + 8 * half;
          float vmax = -INFINITY;
#pragma unroll
          for (int kt = 0; kt < KT; ++kt) {
            const int j = base + kt * 8 + 2 * t4;
            const float x0 = acc[kt][mt][2 * half] * scale2;
            const float x1 = acc[kt][mt][2 * half + 1] * scale2;
            acc[kt][mt][2 * half] = x0;
            acc[kt][mt][2 * half + 1] = x1;
            if (kFull || j < j1) vmax = fmaxf(vmax, x0);
            if (kFull || j + 1 < j1) vmax = fmaxf(vmax, x1);
            if (g < G && (kFull || j < j1)) rows.store(g, j, x0, x1, kFull || j + 1 < j1);
          }
          if (!kFull && vmax == -INFINITY) continue;
          float2 cur = raise_running_max(run[mt][half], vmax);
#pragma unroll
          for (int kt = 0; kt < KT; ++kt) {
            const int j = base + kt * 8 + 2 * t4;
            if (kFull || j < j1) cur.y += exp2f(acc[kt][mt][2 * half] - cur.x);
            if (kFull || j + 1 < j1) cur.y += exp2f(acc[kt][mt][2 * half + 1] - cur.x);
          }
          run[mt][half] = cur;
        }
      }
    };
    int buf = 0;
    for (int base = j0 + warp * 8 * KT; base < j1; base += step) {
      if constexpr (Stages == 2) {
        if (base + step < j1) issue(base + step, buf ^ 1);
        else cp_async_commit();  // an empty group keeps wait_group<1> meaning "this tile landed"
        cp_async_wait<1>();
      } else if constexpr (Stages == 1) {
        cp_async_wait<0>();
      }
      // Staged tiles: full ones (all keys below j1) compile without bounds checks. Plain loads keep
      // one checked body: with a second, unchecked one ptxas cut registers to 88 by spreading the
      // loads over the products in ~4 batches, 5-6 % slower at mid-size grids (notes).
      if (Stages > 0 && base + 8 * KT <= j1) tile(base, buf, std::true_type{});
      else tile(base, buf, std::false_type{});
      // Stages = 1: the tile's products consumed its pieces, so the buffer can be refilled
      if constexpr (Stages == 1) {
        if (base + step < j1) issue(base + step, 0);
      } else if constexpr (Stages == 2) {
        buf ^= 1;
      }
    }
    // combine the 4 threads of a quad (same rows), then across warps
#pragma unroll
    for (int mt = 0; mt < MT; ++mt)
#pragma unroll
      for (int half = 0; half < 2; ++half) {
        const float2 v = quad_softmax_combine(run[mt][half]);
        if (t4 == 0) sm.warp_stats[warp][mt * 16 + r4 + 8 * half] = v;
      }
    write_split_stats<MT * 16>(sm.warp_stats, stats_out, G);
  }
};

/// Global path, 2-byte keys: grid (splits, Hkv, batch); logits and split statistics to global.
template <class T, class KS, int D, int G>
__global__ void __launch_bounds__(kScoreThreads) score_mma_kernel(const __grid_constant__ SelectParams<T, KS> p) {
  using Scan = MmaScan<T, D, G>;
  __shared__ typename Scan::Shared sm;
  uint4* const stage = nullptr;  // Stages = 0: plain loads, no staging memory
  ScanRange r;
  float2* stats_out;
  if (!global_scan_prologue<G>(p, &r, &stats_out)) return;
  const int h = blockIdx.y, H = p.st.num_kv_heads;
  const size_t ih = static_cast<size_t>(blockIdx.z) * H + h;
  const size_t sh = static_cast<size_t>(r.slot) * H + h;
  const LogitRows rows{p.logits + ih * G * p.ld, p.ld, 0};
  Scan::run(sm, stage, p.q + ih * G * D, p.st.keys + sh * p.st.max_nc * D, r.j0, r.j1, p.scale, rows, stats_out);
}

/// Global path, fp32 keys (generic FMA): one key per thread, q in shared memory.
template <class T, class KS, int D, int G>
__global__ void __launch_bounds__(kScoreThreads) score_simt_kernel(const __grid_constant__ SelectParams<T, KS> p) {
  using CT = cuda_type_t<T>;
  using CKS = cuda_type_t<KS>;
  constexpr int W = kScoreThreads / 32;
  __shared__ float sq[G][D];
  __shared__ float2 warp_stats[W][G];
  ScanRange r;
  float2* stats_out;
  if (!global_scan_prologue<G>(p, &r, &stats_out)) return;
  const int h = blockIdx.y, H = p.st.num_kv_heads;
  const size_t ih = static_cast<size_t>(blockIdx.z) * H + h;
  const CT* qh = as_cuda(p.q) + ih * G * D;
  for (int e = threadIdx.x; e < G * D; e += blockDim.x) sq[e / D][e % D] = to_f32(qh[e]);
  __syncthreads();
  const size_t sh = static_cast<size_t>(r.slot) * H + h;
  const CKS* keys = as_cuda(p.st.keys) + sh * p.st.max_nc * D;
  const LogitRows rows{p.logits + ih * G * p.ld, p.ld, 0};
  float2 run[G];
#pragma unroll
  for (int g = 0; g < G; ++g) run[g] = make_float2(-INFINITY, 0.f);
  for (int j = r.j0 + threadIdx.x; j < r.j1; j += blockDim.x) {
    float acc[G];
#pragma unroll
    for (int g = 0; g < G; ++g) acc[g] = 0.f;
    const CKS* kr = keys + static_cast<size_t>(j) * D;
    for (int d = 0; d < D; ++d) {
      const float kd = to_f32(kr[d]);
#pragma unroll
      for (int g = 0; g < G; ++g) acc[g] = fmaf(sq[g][d], kd, acc[g]);
    }
#pragma unroll
    for (int g = 0; g < G; ++g) {
      const float x = acc[g] * (p.scale * kLog2e);
      rows.store(g, j, x, 0.f, false);
      run[g] = softmax_combine(run[g], make_float2(x, 1.f));
    }
  }
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
#pragma unroll
  for (int g = 0; g < G; ++g) {
    float2 v = run[g];
    for (int off = 16; off > 0; off >>= 1) {
      float2 o;
      o.x = __shfl_xor_sync(0xffffffffu, v.x, off);
      o.y = __shfl_xor_sync(0xffffffffu, v.y, off);
      v = softmax_combine(v, o);
    }
    if (lane == 0) warp_stats[warp][g] = v;
  }
  write_split_stats<G>(warp_stats, stats_out, G);
}

}  // namespace detail
NOSA_NAMESPACE_END
