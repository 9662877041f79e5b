// nosa::detail: the block-sparse / dense causal prefill attention kernel.
//
// One CTA = 8 warps = 128 "packed" rows: the G query heads of kRows = 128 / G (rounded down)
// consecutive query rows of one KV head (packed row p -> query row p / G, head g = p % G), so the
// K/V tiles read serve every head of the group. Each warp owns 16 packed rows (a warpgroup of 4 warps owns 64).
// Two bodies share the launch shape, the tile walk, the masking and the online softmax:
//   sm_90a (NOSA_HAS_WGMMA, head dims 64 and 128): one step covers two visited 64-token key
//     tiles (128 keys; any two, so sparse steps stay dense); S = Q K^T with wgmma from shared
//     memory (SW128 tiles), O += P V with P from registers; the next step's S is computed while
//     this step's P V runs (two K stages, three V stages, cp.async).
//   every other target (and D = 256): mma.sync m16n8k16 from ldmatrix fragments, one 64-token
//     tile per step, two stages.
// Both accumulate in fp32 with the softmax statistics in fp32 (log2 domain).
//
// The key loop visits one 64-token key tile per iteration, whatever the block size B (16, 32,
// 64 or 128): a tile holds 64/B whole blocks when B < 64 and half a block when B = 128.
//   dense : tiles 0 .. (last row of the CTA) / 64, masked causally per row (B plays no part);
//   sparse: the tiles that hold a visible token of some row's selected block (a bitmask over
//           tiles in shared memory, ascending), masked per row and per block: a column counts
//           for row i only if its block is in row i's own set and its token is <= i.
// A column that is masked out for a row leaves that row's state bit-identical (p = 0; a tile
// with no column of the row has rescale factor exp2(0) = 1), so every row's result depends only
// on its own set and position: chunked prefill equals one pass bit for bit.
#pragma once

#include <nosa/config.h>
#include <nosa/detail/cuda_types.cuh>
#include <nosa/detail/prefill_mma.cuh>
#include <nosa/detail/wgmma.cuh>

#include <cuda_runtime.h>

#include <cstdint>
#include <math_constants.h>

NOSA_NAMESPACE_BEGIN
namespace detail {
namespace prefill {

inline constexpr int kAttnWarps = 8;
inline constexpr int kAttnThreads = kAttnWarps * 32;
inline constexpr int kTileRows = 16 * kAttnWarps;  // packed rows per CTA
inline constexpr int kKeyTile = 64;                // tokens per key tile (any block size)

/// Whether this head dim has the sm_90a wgmma body (D = 256 would need 128 accumulator
/// registers for O alone and keeps the mma.sync body).
template <int D>
inline constexpr bool kAttnHasWgmmaBody = D <= 128;
inline constexpr int kWgKeys = 2 * kKeyTile;  // keys per wgmma step (two 64-token tiles)
/// 64-token tiles per wgmma step: dense 2; sparse 2 only for B = 128 (whose blocks fill both
/// tiles of a step); smaller blocks are scattered, so a fixed pair of tiles would often be half
/// empty (H200, 32K NOSA^S at B = 64: 14.7 ms with pairs, 10.7 ms with single tiles).
template <bool kSparse, int B>
inline constexpr int kAttnStepTiles = !kSparse || B >= 128 ? 2 : 1;

struct AttnParams {
  const void* q;         // [num_rows][Hq][D]
  const void* k;         // [Hkv][kv_stride][D]
  const void* v;         // [Hkv][kv_stride][D]
  const float* bias;     // [Hkv][kv_stride] (kBias only)
  void* o;               // [num_rows][Hq][D]
  float* lse;            // [num_rows][Hq]
  const int* block_ids;  // [num_rows][Hkv][max_selected] (kSparse only)
  const int* counts;     // [num_rows][Hkv]             (kSparse only)
  long long kv_stride;
  long long first_row;
  int num_rows;
  int num_kv_heads;
  int max_selected;
  int mask_words;  // 32-bit words of the union bitmask over key tiles (sparse)
  float scale_log2;  // log2(e) / sqrt(D)
};

/// Shared memory after the Q tile: the mma.sync body's K/V/bias stages (2 x 64 tokens) and the
/// wgmma body's (K and bias 2 x 128 tokens, V 3 x 128 tokens).
template <int D>
inline constexpr int kAttnMmaRegion = 2 * 2 * kKeyTile * D * 2 + 2 * kKeyTile * 4;
template <int D>
inline constexpr int kAttnWgRegion = kAttnHasWgmmaBody<D> ? (2 + 3) * kWgKeys * D * 2 + 2 * kWgKeys * 4 : 0;
/// The region the body compiled for `wgmma_layout` uses (the larger of the two where the wgmma
/// body may run, so the tile bitmask that follows is at one offset for both bodies).
template <int D>
NOSA_HOST_DEVICE constexpr int attn_region_bytes(bool wgmma_layout) {
  return wgmma_layout && kAttnWgRegion<D> > kAttnMmaRegion<D> ? kAttnWgRegion<D> : kAttnMmaRegion<D>;
}
/// Dynamic shared memory of one CTA. wgmma_layout: the device is sm_90 and may run the sm_90a
/// body. 1024 bytes of slack: SW128 tiles need a 1024-byte aligned base, dynamic shared memory
/// guarantees 16.
template <int D>
NOSA_HOST_DEVICE constexpr int attn_smem_bytes(int mask_words, bool wgmma_layout) {
  return 1024 + kTileRows * D * 2 + attn_region_bytes<D>(wgmma_layout) + mask_words * 4;
}

/// The state of one CTA of the prefill attention: its shared tiles, its rows, the tile walk,
/// and per thread the two packed rows it accumulates (fragment rows lane/4 and lane/4 + 8 of
/// its warp's 16) with their online-softmax statistics.
template <class T, int D, int G, int B, bool kSparse, bool kBias>
struct AttnCta {
  static constexpr int kBlocksPerTile = B < kKeyTile ? kKeyTile / B : 1;  // blocks a key tile touches
  static constexpr int kRows = kTileRows / G;                              // query rows per CTA
  static constexpr int kPacked = kRows * G;                                // used packed rows
  static constexpr float kLog2e = 1.4426950408889634f;

  const AttnParams& p;
  T* sQ;                 // [kTileRows][D]
  unsigned char* region; // the body's K/V/bias stages (kAttnMmaRegion / kAttnWgRegion)
  std::uint32_t* sMask;  // [mask_words]
  int h, row0, rows_here, last_tile;
  long long kv_limit;  // tokens that may be read
  const T* kh;
  const T* vh;
  const float* bh;

  long long row_abs[2];
  bool row_ok[2];
  const int* sel_list[2];
  int sel_count[2], sel_pos[2];
  float row_max[2];
  float row_sum[2];  // this thread's partial sums (quad-reduced at the end)

  NOSA_DEVICE NOSA_FORCEINLINE AttnCta(const AttnParams& params, unsigned char* smem_raw) : p(params) {
    const std::uint32_t base = smem_u32(smem_raw);
    unsigned char* aligned = smem_raw + ((1024u - (base & 1023u)) & 1023u);
    sQ = reinterpret_cast<T*>(aligned);
    region = aligned + kTileRows * D * 2;
    sMask = reinterpret_cast<std::uint32_t*>(region + attn_region_bytes<D>(NOSA_HAS_WGMMA != 0));
    h = blockIdx.y;
    // The last rows see the most tiles: start them first so the causal tail stays short.
    row0 = (gridDim.x - 1 - blockIdx.x) * kRows;
    rows_here = min(kRows, p.num_rows - row0);
    last_tile = static_cast<int>((p.first_row + row0 + rows_here - 1) / kKeyTile);
    kv_limit = p.first_row + p.num_rows;
    kh = static_cast<const T*>(p.k) + static_cast<long long>(h) * p.kv_stride * D;
    vh = static_cast<const T*>(p.v) + static_cast<long long>(h) * p.kv_stride * D;
    bh = kBias ? p.bias + static_cast<long long>(h) * p.kv_stride : nullptr;

    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
#pragma unroll
    for (int j = 0; j < 2; ++j) {
      const int pr = warp * 16 + (lane >> 2) + j * 8;
      const int lr = row0 + pr / G;
      row_ok[j] = pr < kPacked && lr < p.num_rows;
      row_abs[j] = row_ok[j] ? p.first_row + lr : -1;
      row_max[j] = -CUDART_INF_F;
      row_sum[j] = 0.f;
      sel_list[j] = nullptr;
      sel_count[j] = 0;
      sel_pos[j] = 0;
      if constexpr (kSparse) {
        if (row_ok[j]) {
          const long long sel = static_cast<long long>(lr) * p.num_kv_heads + h;
          sel_list[j] = p.block_ids + sel * p.max_selected;
          sel_count[j] = p.counts[sel];
        }
      }
    }
  }

  /// Sparse: the union, over the CTA's rows, of the key tiles holding a visible token of a
  /// selected block. Ends with a barrier.
  NOSA_DEVICE NOSA_FORCEINLINE void build_mask() {
    if constexpr (kSparse) {
      for (int w = threadIdx.x; w < p.mask_words; w += kAttnThreads) sMask[w] = 0u;
      __syncthreads();
      for (int idx = threadIdx.x; idx < rows_here * p.max_selected; idx += kAttnThreads) {
        const int r = idx / p.max_selected, e = idx % p.max_selected;
        const long long sel = static_cast<long long>(row0 + r) * p.num_kv_heads + h;
        if (e >= p.counts[sel]) continue;
        const int m = p.block_ids[sel * p.max_selected + e];
        const long long row_abs_r = p.first_row + row0 + r;
        const long long tok0 = static_cast<long long>(m) * B;
        if (m < 0 || tok0 > row_abs_r) continue;  // never visible to this row
        const long long tok1 = min(tok0 + B - 1, row_abs_r);
        for (long long u = tok0 / kKeyTile; u <= tok1 / kKeyTile; ++u) atomicOr(&sMask[u >> 5], 1u << (u & 31));
      }
      __syncthreads();
    }
  }

  /// The next visited key tile after u, or -1.
  NOSA_DEVICE NOSA_FORCEINLINE int next_tile(int u) const {
    if constexpr (!kSparse) {
      return u + 1 <= last_tile ? u + 1 : -1;
    } else {
      int b = u + 1;
      while (b <= last_tile) {
        const std::uint32_t bits = sMask[b >> 5] >> (b & 31);
        if (bits != 0u) return b + __ffs(bits) - 1;
        b = (b | 31) + 1;
      }
      return -1;
    }
  }

  template <class Layout>
  NOSA_DEVICE NOSA_FORCEINLINE void load_q(Layout at) {
    const T* q = static_cast<const T*>(p.q);
    const int Hq = p.num_kv_heads * G;
    load_tile<kTileRows, D, kAttnThreads, 1>(sQ, q, at, [&](int r) -> const T* {
      const int lr = row0 + r / G;
      if (r >= kPacked || lr >= p.num_rows) return nullptr;
      return q + (static_cast<long long>(lr) * Hq + h * G + r % G) * D;
    });
  }
  /// K, V (and bias) of the 64-token key tiles ua and ub (ub < 0: none, zeros) as rows
  /// 0..63 and 64..127 of the stage tiles (kRowsOut = 64: ua only).
  template <int kRowsOut, class Layout>
  NOSA_DEVICE NOSA_FORCEINLINE void load_kv(int ua, int ub, T* k_dst, T* v_dst, float* b_dst, Layout at) {
    const long long ta = static_cast<long long>(ua) * kKeyTile;
    const long long tb = ub >= 0 ? static_cast<long long>(ub) * kKeyTile : kv_limit;
    auto token = [&](int r) { return r < kKeyTile ? ta + r : tb + (r - kKeyTile); };
    load_tile<kRowsOut, D, kAttnThreads, 1>(k_dst, kh, at, [&](int r) -> const T* {
      const long long t = token(r);
      return t < kv_limit ? kh + t * D : nullptr;
    });
    load_tile<kRowsOut, D, kAttnThreads, 1>(v_dst, vh, at, [&](int r) -> const T* {
      const long long t = token(r);
      return t < kv_limit ? vh + t * D : nullptr;
    });
    if constexpr (kBias) {
      if (threadIdx.x < kRowsOut) {
        const long long t = token(threadIdx.x);
        const bool ok = t < kv_limit;
        cp_async_4(b_dst + threadIdx.x, ok ? bh + t : bh, ok ? 4 : 0);
      }
    }
  }

  /// Online softmax of one step over kSub 64-token key tiles whose first tokens are t_sub[]
  /// (their bias at bias[64 h ..]), on this thread's S fragment s[4 nt + e] = (row j = e / 2,
  /// column 8 nt + 2 (lane % 4) + e % 2; tile nt / 8): masks, updates the row statistics,
  /// leaves the unnormalized probabilities in s and returns the rescale factors of O.
  template <int kSub>
  NOSA_DEVICE NOSA_FORCEINLINE void softmax_step(float (&s)[32 * kSub], const long long (&t_sub)[kSub],
                                                 const float* bias, float (&alpha)[2]) {
    const int quad_col = (threadIdx.x & 3) * 2;
    // lim[j][h][b]: the last column (within tile h) that row j sees in block b of the tile
    // (-1: none): the block is in the row's own set and its tokens are <= the row.
    int lim[2][kSub][kBlocksPerTile];
#pragma unroll
    for (int j = 0; j < 2; ++j) {
#pragma unroll
      for (int hs = 0; hs < kSub; ++hs) {
        std::uint32_t in_set = row_ok[j] ? ~0u : 0u;
        if constexpr (kSparse) {
          in_set = 0u;
          if (row_ok[j]) {
            // Merge walk over the ascending list; tiles come in ascending order, so the
            // position only moves forward (for B = 128 two consecutive tiles share one block).
            const int b_first = static_cast<int>(t_sub[hs] / B);
            while (sel_pos[j] < sel_count[j] && sel_list[j][sel_pos[j]] < b_first) ++sel_pos[j];
            for (int e = sel_pos[j]; e < sel_count[j]; ++e) {
              const int off = sel_list[j][e] - b_first;
              if (off >= kBlocksPerTile) break;
              if (off >= 0) in_set |= 1u << off;  // off < 0 only for an unsorted list
            }
          }
        }
        const long long rel = row_abs[j] - t_sub[hs];
        const int last = rel < 0 ? -1 : (rel >= kKeyTile ? kKeyTile - 1 : static_cast<int>(rel));
#pragma unroll
        for (int b = 0; b < kBlocksPerTile; ++b) lim[j][hs][b] = (in_set >> b) & 1u ? last : -1;
      }
    }
    float tile_max[2] = {-CUDART_INF_F, -CUDART_INF_F};
#pragma unroll
    for (int nt = 0; nt < 8 * kSub; ++nt) {
      const int hs = nt / 8;
      const int blk = B < kKeyTile ? (nt % 8) * 8 / B : 0;  // block of these columns within the tile
      const int col = (nt % 8) * 8 + quad_col;             // column of e = 0 within the tile
      float b2[2] = {0.f, 0.f};
      if constexpr (kBias) {
        const float2 bv = *reinterpret_cast<const float2*>(bias + hs * kKeyTile + col);
        b2[0] = bv.x * kLog2e;
        b2[1] = bv.y * kLog2e;
      }
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int j = e >> 1;
        float x = fmaf(s[4 * nt + e], p.scale_log2, b2[e & 1]);
        if (col + (e & 1) > lim[j][hs][blk]) x = -CUDART_INF_F;
        s[4 * nt + e] = x;
        tile_max[j] = fmaxf(tile_max[j], x);
      }
    }
    float base[2];
#pragma unroll
    for (int j = 0; j < 2; ++j) {
      tile_max[j] = fmaxf(tile_max[j], __shfl_xor_sync(0xffffffffu, tile_max[j], 1));
      tile_max[j] = fmaxf(tile_max[j], __shfl_xor_sync(0xffffffffu, tile_max[j], 2));
      const float mnew = fmaxf(row_max[j], tile_max[j]);
      // A row with nothing visible yet keeps max -inf; exponent base 0 keeps exp2 finite.
      base[j] = mnew == -CUDART_INF_F ? 0.f : mnew;
      alpha[j] = mnew == row_max[j] ? 1.f : fast_exp2(row_max[j] - base[j]);
      row_max[j] = mnew;
    }
    float tile_sum[2] = {0.f, 0.f};
#pragma unroll
    for (int i = 0; i < 32 * kSub; ++i) {
      s[i] = fast_exp2(s[i] - base[(i >> 1) & 1]);
      tile_sum[(i >> 1) & 1] += s[i];
    }
#pragma unroll
    for (int j = 0; j < 2; ++j) row_sum[j] = row_sum[j] * alpha[j] + tile_sum[j];
  }

  /// P (the exponentiated S fragment) as the A fragments of P V: the fragments of n-tiles
  /// (2kk, 2kk+1) are the A fragment of k-step kk.
  template <int kSteps>
  static NOSA_DEVICE NOSA_FORCEINLINE void pack_p(const float (&s)[8 * kSteps], std::uint32_t (&pf)[kSteps][4]) {
#pragma unroll
    for (int kk = 0; kk < kSteps; ++kk) {
      pf[kk][0] = pack2<T>(s[8 * kk + 0], s[8 * kk + 1]);
      pf[kk][1] = pack2<T>(s[8 * kk + 2], s[8 * kk + 3]);
      pf[kk][2] = pack2<T>(s[8 * kk + 4], s[8 * kk + 5]);
      pf[kk][3] = pack2<T>(s[8 * kk + 6], s[8 * kk + 7]);
    }
  }

  /// O[i] *= alpha of its row (fragment element e belongs to row e / 2).
  static NOSA_DEVICE NOSA_FORCEINLINE void rescale(float (&o)[D / 2], const float (&alpha)[2]) {
#pragma unroll
    for (int i = 0; i < D / 2; ++i) o[i] *= alpha[(i >> 1) & 1];
  }

  /// Normalize, write o (T) and lse (fp32, natural log). o[4 dn + e]: row e / 2, column
  /// 8 dn + 2 (lane % 4) + e % 2.
  NOSA_DEVICE NOSA_FORCEINLINE void epilogue(const float (&o)[D / 2]) {
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const int Hq = p.num_kv_heads * G;
    T* out = static_cast<T*>(p.o);
#pragma unroll
    for (int j = 0; j < 2; ++j) {
      float l = row_sum[j];
      l += __shfl_xor_sync(0xffffffffu, l, 1);
      l += __shfl_xor_sync(0xffffffffu, l, 2);
      if (!row_ok[j]) continue;
      const int pr = warp * 16 + (lane >> 2) + j * 8;
      const long long lr = row0 + pr / G;
      const long long qrow = lr * Hq + h * G + pr % G;
      const float inv = l > 0.f ? 1.f / l : 0.f;
      T* orow = out + qrow * D;
#pragma unroll
      for (int dn = 0; dn < D / 8; ++dn) {
        const std::uint32_t packed = pack2<T>(o[4 * dn + 2 * j] * inv, o[4 * dn + 2 * j + 1] * inv);
        *reinterpret_cast<std::uint32_t*>(orow + dn * 8 + (lane & 3) * 2) = packed;
      }
      if ((lane & 3) == 0) p.lse[qrow] = l > 0.f ? (row_max[j] + log2f(l)) * 0.6931471805599453f : -CUDART_INF_F;
    }
  }

  // ---- sm_80 body: mma.sync over ldmatrix fragments, one 64-token tile per step, two stages ---
  NOSA_DEVICE NOSA_FORCEINLINE void run_mma_sync() {
    T* sK = reinterpret_cast<T*>(region);  // [2][64][D]
    T* sV = sK + 2 * kKeyTile * D;         // [2][64][D]
    float* sB = reinterpret_cast<float*>(sV + 2 * kKeyTile * D);  // [2][64]
    auto at = [](int r, int c) { return swz<D>(r, c); };
    load_q(at);
    cp_async_commit();
    build_mask();
    const int warp = threadIdx.x >> 5;
    int u = next_tile(-1);
    if (u >= 0) load_kv<kKeyTile>(u, -1, sK, sV, sB, at);
    cp_async_commit();
    cp_async_wait<0>();
    __syncthreads();
    std::uint32_t qf[D / 16][4];
    load_a_frags<D>(qf, sQ, warp * 16);
    float o[D / 2];
#pragma unroll
    for (int i = 0; i < D / 2; ++i) o[i] = 0.f;
    int stage = 0;
    const int lane = threadIdx.x & 31;
    while (u >= 0) {
      const int un = next_tile(u);
      if (un >= 0)
        load_kv<kKeyTile>(un, -1, sK + (stage ^ 1) * kKeyTile * D, sV + (stage ^ 1) * kKeyTile * D,
                          sB + (stage ^ 1) * kKeyTile, at);
      cp_async_commit();
      cp_async_wait<1>();
      __syncthreads();
      const T* tK = sK + stage * kKeyTile * D;
      const T* tV = sV + stage * kKeyTile * D;
      float s[32];
#pragma unroll
      for (int i = 0; i < 32; ++i) s[i] = 0.f;
      qk_product<D>(reinterpret_cast<float(&)[8][4]>(s), qf, tK);
      float alpha[2];
      std::uint32_t pf[4][4];
      const long long t_sub[1] = {static_cast<long long>(u) * kKeyTile};
      softmax_step<1>(s, t_sub, sB + stage * kKeyTile, alpha);
      pack_p<4>(s, pf);
      rescale(o, alpha);
#pragma unroll
      for (int kk = 0; kk < 4; ++kk) {
#pragma unroll
        for (int dn = 0; dn < D / 8; dn += 2) {
          std::uint32_t b[4];
          const int mi = lane >> 3;
          const int key = kk * 16 + (mi & 1) * 8 + (lane & 7);
          const int d = dn * 8 + (mi >> 1) * 8;
          ldmatrix_x4_trans(b, tV + swz<D>(key, d));
          mma_16816<T>(reinterpret_cast<float(&)[4]>(o[4 * dn]), pf[kk], b[0], b[1]);
          mma_16816<T>(reinterpret_cast<float(&)[4]>(o[4 * dn + 4]), pf[kk], b[2], b[3]);
        }
      }
      __syncthreads();  // the stage is refilled by the next iteration's prefetch
      u = un;
      stage ^= 1;
    }
    cp_async_wait<0>();
    epilogue(o);
  }

#if NOSA_HAS_WGMMA
  // ---- sm_90a body: wgmma over steps of kSub 64-token tiles; S of step n+1 overlaps P V of n --
  // A step is the pair of tiles (2k, 2k+1) when kSub = 2 (visited if either is), tile k when
  // kSub = 1: fixed by token position, so a row's tiles group into steps the same way whatever
  // the other rows of its CTA select (chunked == one pass, bit for bit).
  template <int kSub>
  NOSA_DEVICE NOSA_FORCEINLINE int next_step(int k) const {
    if constexpr (kSub == 1) {
      return next_tile(k);
    } else {
      const int u = next_tile(2 * k + 1);
      return u < 0 ? -1 : u / 2;
    }
  }

  template <int kSub>
  NOSA_DEVICE NOSA_FORCEINLINE void run_wgmma() {
    constexpr int kKeys = kSub * kKeyTile;  // keys per step
    constexpr std::uint32_t kTileBytes = kWgKeys * D * 2;  // one stage (sized for 128 keys)
    T* sK = reinterpret_cast<T*>(region);                  // [2][128][D]
    T* sV = sK + 2 * kWgKeys * D;                          // [3][128][D]
    float* sB = reinterpret_cast<float*>(sV + 3 * kWgKeys * D);  // [2][128], with K
    auto at_q = [](int r, int c) { return wgmma::sw128_offset<kTileRows>(r, c); };
    auto at_kv = [](int r, int c) { return wgmma::sw128_offset<kKeys>(r, c); };
    const int wg = threadIdx.x >> 7;  // warpgroup: packed rows 64 wg .. 64 wg + 63
    const std::uint32_t q_addr = smem_u32(sQ) + wg * (64 * 128);
    const std::uint32_t k_addr = smem_u32(sK), v_addr = smem_u32(sV);
    float s[32 * kSub];
    float o[D / 2];
#pragma unroll
    for (int i = 0; i < D / 2; ++i) o[i] = 0.f;
    // S = Q K^T (K-major x K-major): k-step kk reads 16 columns of slab kk / 4.
    auto issue_qk = [&](int kst) {
      wgmma::fence();
#pragma unroll
      for (int kk = 0; kk < D / 16; ++kk) {
        const std::uint64_t da = wgmma::sw128_desc(q_addr + (kk / 4) * (kTileRows * 128) + (kk % 4) * 32, 16, 1024);
        const std::uint64_t db =
            wgmma::sw128_desc(k_addr + kst * kTileBytes + (kk / 4) * (kKeys * 128) + (kk % 4) * 32, 16, 1024);
        wgmma::Op<kKeys, T>::ss(s, da, db, kk > 0 ? 1 : 0);
      }
      wgmma::commit();
    };
    // O += P V (registers x MN-major V): k-step kk reads tokens 16 kk .. 16 kk + 15.
    auto issue_pv = [&](int vst, const std::uint32_t (&pf)[4 * kSub][4]) {
      wgmma::fence();
#pragma unroll
      for (int kk = 0; kk < 4 * kSub; ++kk)
        wgmma::Op<D, T>::rs_tb(o, pf[kk], wgmma::sw128_desc(v_addr + vst * kTileBytes + kk * (16 * 128), kKeys * 128, 1024),
                               1);
      wgmma::commit();
    };
    // Tiles of step k; a tile the CTA does not visit is zero-filled, not read (every row
    // masks it: none of its blocks is both selected and visible).
    auto tiles = [&](int step, int (&u)[2]) {
      u[0] = kSub == 1 ? step : 2 * step;
      u[1] = kSub == 1 ? -1 : 2 * step + 1;
      if constexpr (kSparse && kSub == 2) {
        if (!((sMask[u[0] >> 5] >> (u[0] & 31)) & 1u)) u[0] = -1;
        if (u[1] > last_tile || !((sMask[u[1] >> 5] >> (u[1] & 31)) & 1u)) u[1] = -1;
      }
    };
    auto load_step = [&](int step, int kst_to, int vst_to) {
      int u[2];
      tiles(step, u);
      // load_kv takes tile indices: an absent first tile is passed as one past kv_limit (zeros).
      const int ua = u[0] >= 0 ? u[0] : static_cast<int>((kv_limit + kKeyTile - 1) / kKeyTile);
      load_kv<kKeys>(ua, u[1], sK + kst_to * kWgKeys * D, sV + vst_to * kWgKeys * D, sB + kst_to * kWgKeys, at_kv);
    };
    auto sub_tokens = [&](int step, long long (&t)[kSub]) {
#pragma unroll
      for (int hs = 0; hs < kSub; ++hs) t[hs] = (static_cast<long long>(step) * kSub + hs) * kKeyTile;
    };

    load_q(at_q);
    build_mask();
    int k = next_step<kSub>(-1);
    if (k >= 0) load_step(k, 0, 0);
    cp_async_commit();  // Q and the first step
    int kn = k >= 0 ? next_step<kSub>(k) : -1;
    if (kn >= 0) load_step(kn, 1, 1);
    cp_async_commit();  // the second step
    cp_async_wait<1>();
    wgmma::fence_proxy_async();
    __syncthreads();
    std::uint32_t pf[4 * kSub][4];
    float alpha[2];
    if (k >= 0) {
      issue_qk(0);
      wgmma::wait<0>();
      wgmma::pin(s);
      long long t[kSub];
      sub_tokens(k, t);
      softmax_step<kSub>(s, t, sB, alpha);  // O is still zero: alpha is not needed
      pack_p<4 * kSub>(s, pf);
    }
    // Steady state: while a next step exists, its S runs, then this step's P V; the softmax of
    // the next step overlaps that P V. The last step's P V follows the loop.
    int kst = 0, vst = 0;  // stages of step k: K and bias (2), V (3)
    while (kn >= 0) {
      const int kst_n = kst ^ 1, vst_n = vst == 2 ? 0 : vst + 1;
      cp_async_wait<0>();  // step kn (this thread's copies)
      wgmma::fence_proxy_async();
      // Publishes step kn; every warp has finished step k - 1, so its stages can be refilled.
      __syncthreads();
      const int k2 = next_step<kSub>(kn);
      if (k2 >= 0) load_step(k2, kst, vst_n == 2 ? 0 : vst_n + 1);
      cp_async_commit();
      issue_qk(kst_n);
      issue_pv(vst, pf);
      wgmma::wait<1>();  // S of step kn is done; P V of step k may still run
      wgmma::pin(s);
      long long t[kSub];
      sub_tokens(kn, t);
      softmax_step<kSub>(s, t, sB + kst_n * kWgKeys, alpha);
      wgmma::wait<0>();
      wgmma::pin(o);
      // Only now may P V's inputs change: P of step kn replaces P of step k.
      rescale(o, alpha);
      pack_p<4 * kSub>(s, pf);
      k = kn;
      kn = k2;
      kst = kst_n;
      vst = vst_n;
    }
    if (k >= 0) {
      issue_pv(vst, pf);
      wgmma::wait<0>();
      wgmma::pin(o);
    }
    cp_async_wait<0>();
    epilogue(o);
  }
#endif
};

/// B: block size of the sparse selection (dense launches pass kKeyTile; it is not used there).
template <class T, int D, int G, int B, bool kSparse, bool kBias>
__global__ void __launch_bounds__(kAttnThreads, 1) prefill_attention_kernel(const __grid_constant__ AttnParams p) {
  static_assert(B % 16 == 0 && (kKeyTile % B == 0 || B % kKeyTile == 0),
                "prefill attention: the block size must divide the 64-token key tile or be a multiple of it");
  extern __shared__ __align__(128) unsigned char pf_smem[];
  AttnCta<T, D, G, B, kSparse, kBias> cta(p, pf_smem);
#if NOSA_HAS_WGMMA
  if constexpr (kAttnHasWgmmaBody<D>) {
    cta.template run_wgmma<kAttnStepTiles<kSparse, B>>();
  } else {
    cta.run_mma_sync();
  }
#else
  cta.run_mma_sync();
#endif
}

}  // namespace prefill
}  // namespace detail
NOSA_NAMESPACE_END
