// nosa::detail: stage-1 scoring of the device selector (split-K over compressed keys).
//
// grid = (splits, Hkv, batch). CTA (s, h, i) owns the compressed keys [j0, j1) of entry i, head h
// and writes, for each of the G query heads g:
//   logits[i][h][g][j] = q_g . Kc[j] / sqrt(D)       (fp32, row stride ld)
//   stats [i][h][s][g] = (max, sum of exp(logit - max)) over its keys
// The pooling kernel combines the split statistics into the softmax of DESIGN.md section 2.
// Each key is read exactly once. Two variants:
//   - 2-byte store types (bf16/fp16): tensor-core mma.m16n8k16 with fp32 accumulation (products
//     of 2-byte values are exact in fp32; only the summation order differs from the host).
//   - fp32 store: plain FMA, one key per thread.
#pragma once

#include <nosa/config.h>
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
  float* pq;             ///< [max_batch][Hkv][max_nb]
  float* pe;             ///< [max_batch][Hkv][max_nb]
  int* block_ids;        ///< [batch][Hkv][block_stride]
  int* counts;           ///< [batch][Hkv]
  int block_stride;
  int ld;                ///< logits row stride (>= max_nc, multiple of 4)
  int splits;            ///< split-K parts of the scoring kernel (chosen per call)
  int pool_splits;       ///< block ranges of the pooling kernel (fixed by the config)
  int max_nb;
  int max_seq_len;
  int block_size;
  int sink, local, query_aware, budget;
  int pool_window_cap;   ///< shared-memory floats of the pooling kernel
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

/// Online (max, sum-exp) accumulation; m = -inf means empty.
NOSA_DEVICE NOSA_FORCEINLINE float2 softmax_combine(float2 a, float2 b) {
  const float m = fmaxf(a.x, b.x);
  if (m == -INFINITY) return make_float2(-INFINITY, 0.f);
  return make_float2(m, a.y * expf(a.x - m) + b.y * expf(b.x - m));
}

/// Splits of nc keys: chunk of a split, a multiple of 32.
NOSA_DEVICE NOSA_FORCEINLINE int score_chunk(int nc, int splits) {
  const int per = (nc + splits - 1) / splits;
  return (per + 31) / 32 * 32;
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

constexpr int kScoreThreads = 128;

/// Writes a CTA's per-g statistics: per-thread values are first combined within the warp by
/// the caller's layout, then across warps through shared memory.
template <int Rows>
NOSA_DEVICE NOSA_FORCEINLINE void write_split_stats(float2 (*warp_stats)[Rows], float2* out, int G) {
  __syncthreads();
  for (int g = threadIdx.x; g < G; g += blockDim.x) {
    float2 acc = make_float2(-INFINITY, 0.f);
    for (int w = 0; w < kScoreThreads / 32; ++w) acc = softmax_combine(acc, warp_stats[w][g]);
    out[g] = acc;
  }
}

/// Tensor-core scoring for 2-byte keys. A warp computes 8 keys x 16 query heads per mma chain;
/// a thread's 16-byte key load (8 consecutive d) feeds two k16 steps, and q uses the same d
/// permutation, so the dot product is unchanged.
template <class T, class KS, int D, int G>
__global__ void __launch_bounds__(kScoreThreads) score_mma_kernel(const __grid_constant__ SelectParams<T, KS> p) {
  using CT = cuda_type_t<T>;
  static_assert(sizeof(KS) == 2 && std::is_same_v<T, KS>, "mma scoring needs keys stored in T");
  constexpr int MT = (G + 15) / 16;  // m16 tiles of query heads
  constexpr int P = D / 32;          // 16-byte loads per thread per key row
  constexpr int KT = 512 / D;        // 8-key tiles per warp iteration (16 loads per thread)
  constexpr int W = kScoreThreads / 32;
  __shared__ uint4 sA[MT][P][32][2];
  __shared__ float2 warp_stats[W][MT * 16];

  const int split = blockIdx.x, h = blockIdx.y, i = blockIdx.z;
  const int H = p.st.num_kv_heads;
  int slot, len;
  if (!entry_length(p, i, &slot, &len)) return;
  const int nc = num_compressed(len, p.st.window, p.st.stride);
  const int chunk = score_chunk(nc, p.splits);
  const int j0 = split * chunk;
  const int j1 = min(nc, j0 + chunk);
  float2* stats_out = p.stats + ((static_cast<size_t>(i) * H + h) * p.splits + split) * G;
  if (j0 >= j1) {
    for (int g = threadIdx.x; g < G; g += blockDim.x) stats_out[g] = make_float2(-INFINITY, 0.f);
    return;
  }
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int t4 = lane & 3, r4 = lane >> 2;

  // A fragments: q rows r and r + 8 of each m tile, d = 32p + 8 t4 .. + 8.
  const CT* qh = as_cuda(p.q) + (static_cast<size_t>(i) * H + h) * G * D;
  for (int e = threadIdx.x; e < MT * P * 32; e += blockDim.x) {
    const int l = e % 32, pp = (e / 32) % P, mt = e / (32 * P);
    const int r = mt * 16 + (l >> 2), d = 32 * pp + 8 * (l & 3);
    const uint4 zero = make_uint4(0, 0, 0, 0);
    sA[mt][pp][l][0] = r < G ? *reinterpret_cast<const uint4*>(qh + static_cast<size_t>(r) * D + d) : zero;
    sA[mt][pp][l][1] = r + 8 < G ? *reinterpret_cast<const uint4*>(qh + static_cast<size_t>(r + 8) * D + d) : zero;
  }
  __syncthreads();

  const size_t sh = static_cast<size_t>(slot) * H + h;
  const CT* keys = as_cuda(p.st.keys) + sh * p.st.max_nc * D;
  float* logits = p.logits + (static_cast<size_t>(i) * H + h) * G * p.ld;
  float2 run[MT][2];
#pragma unroll
  for (int mt = 0; mt < MT; ++mt) run[mt][0] = run[mt][1] = make_float2(-INFINITY, 0.f);

  for (int base = j0 + warp * 8 * KT; base < j1; base += W * 8 * KT) {
    // all loads of the warp iteration first (P * KT = 16 x 16 B in flight per thread), then mma
    uint4 kv[P][KT];
#pragma unroll
    for (int pp = 0; pp < P; ++pp)
#pragma unroll
      for (int kt = 0; kt < KT; ++kt) {
        const int j = base + kt * 8 + r4;
        kv[pp][kt] = j < j1 ? __ldg(reinterpret_cast<const uint4*>(keys + static_cast<size_t>(j) * D + 32 * pp + 8 * t4))
                            : make_uint4(0, 0, 0, 0);
      }
    float acc[KT][MT][4];
#pragma unroll
    for (int kt = 0; kt < KT; ++kt)
#pragma unroll
      for (int mt = 0; mt < MT; ++mt)
#pragma unroll
        for (int e = 0; e < 4; ++e) acc[kt][mt][e] = 0.f;
#pragma unroll
    for (int pp = 0; pp < P; ++pp) {
#pragma unroll
      for (int mt = 0; mt < MT; ++mt) {
        const uint4 ar = sA[mt][pp][lane][0], ar8 = sA[mt][pp][lane][1];
#pragma unroll
        for (int kt = 0; kt < KT; ++kt) {
          mma_16816<CT>(acc[kt][mt], ar.x, ar8.x, ar.y, ar8.y, kv[pp][kt].x, kv[pp][kt].y);
          mma_16816<CT>(acc[kt][mt], ar.z, ar8.z, ar.w, ar8.w, kv[pp][kt].z, kv[pp][kt].w);
        }
      }
    }
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
          const float x0 = acc[kt][mt][2 * half] * p.scale;
          const float x1 = acc[kt][mt][2 * half + 1] * p.scale;
          acc[kt][mt][2 * half] = x0;
          acc[kt][mt][2 * half + 1] = x1;
          if (j < j1) vmax = fmaxf(vmax, x0);
          if (j + 1 < j1) vmax = fmaxf(vmax, x1);
          if (g < G) {
            float* row = logits + static_cast<size_t>(g) * p.ld;
            if (j + 1 < j1) *reinterpret_cast<float2*>(row + j) = make_float2(x0, x1);
            else if (j < j1) row[j] = x0;
          }
        }
        if (vmax == -INFINITY) continue;
        float2 cur = run[mt][half];
        if (vmax > cur.x) {
          cur.y = cur.x == -INFINITY ? 0.f : cur.y * expf(cur.x - vmax);
          cur.x = vmax;
        }
#pragma unroll
        for (int kt = 0; kt < KT; ++kt) {
          const int j = base + kt * 8 + 2 * t4;
          if (j < j1) cur.y += expf(acc[kt][mt][2 * half] - cur.x);
          if (j + 1 < j1) cur.y += expf(acc[kt][mt][2 * half + 1] - cur.x);
        }
        run[mt][half] = cur;
      }
    }
  }
  // combine the 4 threads of a quad (same rows), then across warps
#pragma unroll
  for (int mt = 0; mt < MT; ++mt)
#pragma unroll
    for (int half = 0; half < 2; ++half) {
      float2 v = run[mt][half];
#pragma unroll
      for (int off = 1; off < 4; off <<= 1) {
        float2 o;
        o.x = __shfl_xor_sync(0xffffffffu, v.x, off);
        o.y = __shfl_xor_sync(0xffffffffu, v.y, off);
        v = softmax_combine(v, o);
      }
      if (t4 == 0) warp_stats[warp][mt * 16 + r4 + 8 * half] = v;
    }
  write_split_stats<MT * 16>(warp_stats, stats_out, G);
}

/// Generic fp32 scoring (keys stored as float): one key per thread, q in shared memory.
template <class T, class KS, int D, int G>
__global__ void __launch_bounds__(kScoreThreads) score_simt_kernel(const __grid_constant__ SelectParams<T, KS> p) {
  using CT = cuda_type_t<T>;
  using CKS = cuda_type_t<KS>;
  constexpr int W = kScoreThreads / 32;
  __shared__ float sq[G][D];
  __shared__ float2 warp_stats[W][G];
  const int split = blockIdx.x, h = blockIdx.y, i = blockIdx.z;
  const int H = p.st.num_kv_heads;
  int slot, len;
  if (!entry_length(p, i, &slot, &len)) return;
  const int nc = num_compressed(len, p.st.window, p.st.stride);
  const int chunk = score_chunk(nc, p.splits);
  const int j0 = split * chunk;
  const int j1 = min(nc, j0 + chunk);
  float2* stats_out = p.stats + ((static_cast<size_t>(i) * H + h) * p.splits + split) * G;
  if (j0 >= j1) {
    for (int g = threadIdx.x; g < G; g += blockDim.x) stats_out[g] = make_float2(-INFINITY, 0.f);
    return;
  }
  const CT* qh = as_cuda(p.q) + (static_cast<size_t>(i) * H + h) * G * D;
  for (int e = threadIdx.x; e < G * D; e += blockDim.x) sq[e / D][e % D] = to_f32(qh[e]);
  __syncthreads();
  const size_t sh = static_cast<size_t>(slot) * H + h;
  const CKS* keys = as_cuda(p.st.keys) + sh * p.st.max_nc * D;
  float* logits = p.logits + (static_cast<size_t>(i) * H + h) * G * p.ld;
  float2 run[G];
#pragma unroll
  for (int g = 0; g < G; ++g) run[g] = make_float2(-INFINITY, 0.f);
  for (int j = j0 + threadIdx.x; j < j1; j += blockDim.x) {
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
      const float x = acc[g] * p.scale;
      logits[static_cast<size_t>(g) * p.ld + j] = x;
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
