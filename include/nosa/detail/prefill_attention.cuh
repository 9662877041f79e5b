// nosa::detail: the block-sparse / dense causal prefill attention kernel.
//
// One CTA = 8 warps = 128 "packed" rows: the G query heads of kRows = 128 / G (rounded down)
// consecutive query rows of one KV head (packed row p -> query row p / G, head g = p % G), so the
// K/V tiles read serve every head of the group. Each warp owns 16 packed rows (a warpgroup of 4 warps owns 64).
// Two bodies share the launch shape, the tile walk, the masking and the online softmax:
//   sm_90a (NOSA_HAS_WGMMA, head dims 64 and 128): S = Q K^T with wgmma from shared memory
//     (SW128 tiles), O += P V with P from registers; the next tile's S is computed while the
//     current tile's P V runs (three K/V stages, cp.async).
//   every other target (and D = 256): mma.sync m16n8k16 from ldmatrix fragments, two stages.
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

/// K/V tile stages in shared memory: three where the wgmma body may run (it keeps a tile's V
/// in use while the next tile's K is read and the one after is loading), two for D = 256.
template <int D>
inline constexpr int kAttnKvStages = D <= 128 ? 3 : 2;
/// Whether this head dim has the sm_90a wgmma body (D = 256 would need 128 accumulator
/// registers for O alone and keeps the mma.sync body).
template <int D>
inline constexpr bool kAttnHasWgmmaBody = D <= 128;

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

/// 1024 bytes of slack: the SW128 tiles need a 1024-byte aligned base, dynamic shared memory
/// guarantees 16.
template <int D>
constexpr int attn_smem_bytes_static() {
  return 1024 + (kTileRows * D + 2 * kAttnKvStages<D> * kKeyTile * D) * 2 + kAttnKvStages<D> * kKeyTile * 4;
}
template <int D>
inline int attn_smem_bytes(int mask_words) {
  return attn_smem_bytes_static<D>() + mask_words * 4;
}

/// The state of one CTA of the prefill attention: its shared tiles, its rows, the tile walk,
/// and per thread the two packed rows it accumulates (fragment rows lane/4 and lane/4 + 8 of
/// its warp's 16) with their online-softmax statistics.
template <class T, int D, int G, int B, bool kSparse, bool kBias>
struct AttnCta {
  static constexpr int kBlocksPerTile = B < kKeyTile ? kKeyTile / B : 1;  // blocks a key tile touches
  static constexpr int kRows = kTileRows / G;                              // query rows per CTA
  static constexpr int kPacked = kRows * G;                                // used packed rows
  static constexpr int kStages = kAttnKvStages<D>;
  static constexpr float kLog2e = 1.4426950408889634f;

  const AttnParams& p;
  T* sQ;                 // [kTileRows][D]
  T* sK;                 // [kStages][64][D]
  T* sV;                 // [kStages][64][D]
  float* sB;             // [kStages][64]
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
    sK = sQ + kTileRows * D;
    sV = sK + kStages * kKeyTile * D;
    sB = reinterpret_cast<float*>(sV + kStages * kKeyTile * D);
    sMask = reinterpret_cast<std::uint32_t*>(sB + kStages * kKeyTile);
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

  /// cp.async of `rows` rows of D elements into a tile laid out by `at(row, col)`; row r comes
  /// from src(r) (nullptr = zeros). No group is committed here.
  template <class Layout, class RowPtr>
  static NOSA_DEVICE NOSA_FORCEINLINE void load_rows(T* dst, int rows, const T* fallback, Layout at, RowPtr src) {
    constexpr int kChunks = D / 8;
    for (int idx = threadIdx.x; idx < rows * kChunks; idx += kAttnThreads) {
      const int r = idx / kChunks, c = idx % kChunks;
      const T* row = src(r);
      cp_async_16(dst + at(r, c * 8), row != nullptr ? row + c * 8 : fallback, row != nullptr ? 16 : 0);
    }
  }
  template <class Layout>
  NOSA_DEVICE NOSA_FORCEINLINE void load_q(Layout at) {
    const T* q = static_cast<const T*>(p.q);
    const int Hq = p.num_kv_heads * G;
    load_rows(sQ, kTileRows, q, at, [&](int r) -> const T* {
      const int lr = row0 + r / G;
      if (r >= kPacked || lr >= p.num_rows) return nullptr;
      return q + (static_cast<long long>(lr) * Hq + h * G + r % G) * D;
    });
  }
  template <class Layout>
  NOSA_DEVICE NOSA_FORCEINLINE void load_kv(int u, int stage, Layout at) {
    const long long t0 = static_cast<long long>(u) * kKeyTile;
    load_rows(sK + stage * kKeyTile * D, kKeyTile, kh, at,
              [&](int r) -> const T* { return t0 + r < kv_limit ? kh + (t0 + r) * D : nullptr; });
    load_rows(sV + stage * kKeyTile * D, kKeyTile, vh, at,
              [&](int r) -> const T* { return t0 + r < kv_limit ? vh + (t0 + r) * D : nullptr; });
    if constexpr (kBias) {
      if (threadIdx.x < kKeyTile) {
        const bool ok = t0 + threadIdx.x < kv_limit;
        cp_async_4(sB + stage * kKeyTile + threadIdx.x, ok ? bh + t0 + threadIdx.x : bh, ok ? 4 : 0);
      }
    }
  }

  /// Online softmax of key tile u (its bias in stage `stage`) over this thread's S fragment
  /// s[4 * nt + e] = (row j = e / 2, column 8 nt + 2 (lane % 4) + e % 2): masks, updates the
  /// row statistics, leaves the unnormalized probabilities in s and returns the rescale
  /// factors of O.
  NOSA_DEVICE NOSA_FORCEINLINE void softmax_tile(float (&s)[32], int u, int stage, float (&alpha)[2]) {
    const int quad_col = (threadIdx.x & 3) * 2;
    const long long t0 = static_cast<long long>(u) * kKeyTile;
    // Bit b of in_set[j]: block (first block of the tile + b) is in row j's own set.
    std::uint32_t in_set[2];
#pragma unroll
    for (int j = 0; j < 2; ++j) {
      in_set[j] = row_ok[j] ? 1u : 0u;
      if constexpr (kSparse) {
        in_set[j] = 0u;
        if (row_ok[j]) {
          // Merge walk over the ascending list; tiles come in ascending order, so the position
          // only moves forward (for B = 128 two consecutive tiles share one block).
          const int b_first = static_cast<int>(t0 / B);
          while (sel_pos[j] < sel_count[j] && sel_list[j][sel_pos[j]] < b_first) ++sel_pos[j];
          for (int e = sel_pos[j]; e < sel_count[j]; ++e) {
            const int off = sel_list[j][e] - b_first;
            if (off >= kBlocksPerTile) break;
            if (off >= 0) in_set[j] |= 1u << off;  // off < 0 only for an unsorted list
          }
        }
      }
    }
    float tile_max[2] = {-CUDART_INF_F, -CUDART_INF_F};
#pragma unroll
    for (int nt = 0; nt < 8; ++nt) {
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int j = e >> 1;
        const int col = nt * 8 + quad_col + (e & 1);
        const int blk = B < kKeyTile ? nt * 8 / B : 0;  // block of this column within the tile
        float x = s[4 * nt + e] * p.scale_log2;
        if constexpr (kBias) x += sB[stage * kKeyTile + col] * kLog2e;
        if (!((in_set[j] >> blk) & 1u) || t0 + col > row_abs[j]) x = -CUDART_INF_F;
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
    for (int i = 0; i < 32; ++i) {
      s[i] = fast_exp2(s[i] - base[(i >> 1) & 1]);
      tile_sum[(i >> 1) & 1] += s[i];
    }
#pragma unroll
    for (int j = 0; j < 2; ++j) row_sum[j] = row_sum[j] * alpha[j] + tile_sum[j];
  }

  /// P (the exponentiated S fragment) as the A fragments of P V: the fragments of n-tiles
  /// (2kk, 2kk+1) are the A fragment of k-step kk.
  static NOSA_DEVICE NOSA_FORCEINLINE void pack_p(const float (&s)[32], std::uint32_t (&pf)[4][4]) {
#pragma unroll
    for (int kk = 0; kk < 4; ++kk) {
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

  // ---- sm_80 body: mma.sync over ldmatrix fragments, two stages --------------------------------
  NOSA_DEVICE NOSA_FORCEINLINE void run_mma_sync() {
    auto at = [](int r, int c) { return swz<D>(r, c); };
    load_q(at);
    cp_async_commit();
    build_mask();
    const int warp = threadIdx.x >> 5;
    int u = next_tile(-1);
    if (u >= 0) load_kv(u, 0, at);
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
      if (un >= 0) load_kv(un, stage ^ 1, at);
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
      softmax_tile(s, u, stage, alpha);
      pack_p(s, pf);
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
  // ---- sm_90a body: wgmma, three stages, S of tile n+1 overlaps P V of tile n -----------------
  NOSA_DEVICE NOSA_FORCEINLINE void run_wgmma() {
    auto at_q = [](int r, int c) { return wgmma::sw128_offset<kTileRows>(r, c); };
    auto at_kv = [](int r, int c) { return wgmma::sw128_offset<kKeyTile>(r, c); };
    const int wg = threadIdx.x >> 7;  // warpgroup: packed rows 64 wg .. 64 wg + 63
    const std::uint32_t q_addr = smem_u32(sQ) + wg * (64 * 128);
    const std::uint32_t k_addr = smem_u32(sK), v_addr = smem_u32(sV);
    constexpr std::uint32_t kStageBytes = kKeyTile * D * 2;
    float s[32];
    float o[D / 2];
#pragma unroll
    for (int i = 0; i < D / 2; ++i) o[i] = 0.f;
    // S = Q K^T (K-major x K-major): k-step kk reads 16 columns of slab kk / 4.
    auto issue_qk = [&](int stage) {
      wgmma::fence();
#pragma unroll
      for (int kk = 0; kk < D / 16; ++kk) {
        const std::uint64_t da = wgmma::sw128_desc(q_addr + (kk / 4) * (kTileRows * 128) + (kk % 4) * 32, 16, 1024);
        const std::uint64_t db =
            wgmma::sw128_desc(k_addr + stage * kStageBytes + (kk / 4) * (kKeyTile * 128) + (kk % 4) * 32, 16, 1024);
        wgmma::Op<64, T>::ss(s, da, db, kk > 0 ? 1 : 0);
      }
      wgmma::commit();
    };
    // O += P V (registers x MN-major V): k-step kk reads tokens 16 kk .. 16 kk + 15.
    auto issue_pv = [&](int stage, const std::uint32_t (&pf)[4][4]) {
      wgmma::fence();
#pragma unroll
      for (int kk = 0; kk < 4; ++kk)
        wgmma::Op<D, T>::rs_tb(o, pf[kk], wgmma::sw128_desc(v_addr + stage * kStageBytes + kk * (16 * 128), kKeyTile * 128, 1024), 1);
      wgmma::commit();
    };

    load_q(at_q);
    build_mask();
    int u = next_tile(-1);
    if (u >= 0) load_kv(u, 0, at_kv);
    cp_async_commit();  // Q and the first tile
    int un = u >= 0 ? next_tile(u) : -1;
    if (un >= 0) load_kv(un, 1, at_kv);
    cp_async_commit();  // the second tile
    cp_async_wait<1>();
    wgmma::fence_proxy_async();
    __syncthreads();
    std::uint32_t pf[4][4];
    float alpha[2];
    if (u >= 0) {
      issue_qk(0);
      wgmma::wait<0>();
      wgmma::pin(s);
      softmax_tile(s, u, 0, alpha);  // O is still zero: alpha is not needed
      pack_p(s, pf);
    }
    // Steady state: while a next tile exists, its S runs, then this tile's P V; the softmax of
    // the next tile overlaps that P V. The last tile's P V follows the loop.
    int stage = 0;
    while (un >= 0) {
      const int nstage = stage + 1 == kStages ? 0 : stage + 1;
      cp_async_wait<0>();  // tile un (this thread's copies)
      wgmma::fence_proxy_async();
      // Publishes tile un; every warp has finished tile u - 1, so its stage can be refilled.
      __syncthreads();
      const int u2 = next_tile(un);
      if (u2 >= 0) load_kv(u2, nstage + 1 == kStages ? 0 : nstage + 1, at_kv);
      cp_async_commit();
      issue_qk(nstage);
      issue_pv(stage, pf);
      wgmma::wait<1>();  // S of tile un is done; P V of tile u may still run
      wgmma::pin(s);
      softmax_tile(s, un, nstage, alpha);
      wgmma::wait<0>();
      wgmma::pin(o);
      // Only now may P V's inputs change: P of tile un replaces P of tile u.
      rescale(o, alpha);
      pack_p(s, pf);
      u = un;
      un = u2;
      stage = nstage;
    }
    if (u >= 0) {
      issue_pv(stage, pf);
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
    cta.run_wgmma();
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
