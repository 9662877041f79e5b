// nosa::detail: the block-sparse / dense causal prefill attention kernel.
//
// One CTA = 4 warps = 64 "packed" rows: the G query heads of kRows = 64 / G consecutive query
// rows of one KV head (packed row p -> query row p / G, head g = p % G), so the K/V tiles read
// serve every head of the group. Each warp owns 16 packed rows; S = Q K^T and O += P V run on
// mma.sync m16n8k16 with fp32 accumulation, the softmax statistics in fp32 (log2 domain).
//
// The key loop visits one 64-token key tile per iteration, double-buffered with cp.async,
// whatever the block size B (16, 32, 64 or 128): a tile holds 64/B whole blocks when B < 64 and
// half a block when B = 128.
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

#include <cuda_runtime.h>

#include <cstdint>
#include <math_constants.h>

NOSA_NAMESPACE_BEGIN
namespace detail {
namespace prefill {

inline constexpr int kAttnWarps = 4;
inline constexpr int kAttnThreads = kAttnWarps * 32;
inline constexpr int kTileRows = 16 * kAttnWarps;  // packed rows per CTA
inline constexpr int kKeyTile = 64;                // tokens per key tile (any block size)

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

template <int D>
constexpr int attn_smem_bytes_static() {
  return (kTileRows * D + 4 * kKeyTile * D) * 2 + 2 * kKeyTile * 4;
}
template <int D>
inline int attn_smem_bytes(int mask_words) {
  return attn_smem_bytes_static<D>() + mask_words * 4;
}

/// B: block size of the sparse selection (dense launches pass kKeyTile; it is not used there).
template <class T, int D, int G, int B, bool kSparse, bool kBias>
__global__ void __launch_bounds__(kAttnThreads) prefill_attention_kernel(const __grid_constant__ AttnParams p) {
  static_assert(B % 16 == 0 && (kKeyTile % B == 0 || B % kKeyTile == 0),
                "prefill attention: the block size must divide the 64-token key tile or be a multiple of it");
  // Blocks a key tile touches; an 8-column n-tile always lies inside one block (B >= 16).
  constexpr int kBlocksPerTile = B < kKeyTile ? kKeyTile / B : 1;
  constexpr int kRows = kTileRows / G;  // query rows per CTA
  constexpr int kPacked = kRows * G;    // used packed rows (<= 64)
  constexpr float kLog2e = 1.4426950408889634f;
  extern __shared__ __align__(128) unsigned char pf_smem[];
  T* sQ = reinterpret_cast<T*>(pf_smem);
  T* sK = sQ + kTileRows * D;         // [2][64][D]
  T* sV = sK + 2 * kKeyTile * D;      // [2][64][D]
  float* sB = reinterpret_cast<float*>(sV + 2 * kKeyTile * D);  // [2][64]
  std::uint32_t* sMask = reinterpret_cast<std::uint32_t*>(sB + 2 * kKeyTile);

  const int h = blockIdx.y;
  const int Hq = p.num_kv_heads * G;
  const int row0 = blockIdx.x * kRows;  // first local row of this CTA
  const int rows_here = min(kRows, p.num_rows - row0);
  const long long last_abs = p.first_row + row0 + rows_here - 1;  // last absolute row of the tile
  const long long kv_limit = p.first_row + p.num_rows;            // tokens that may be read
  const T* q = static_cast<const T*>(p.q);
  const T* kh = static_cast<const T*>(p.k) + static_cast<long long>(h) * p.kv_stride * D;
  const T* vh = static_cast<const T*>(p.v) + static_cast<long long>(h) * p.kv_stride * D;
  const float* bh = kBias ? p.bias + static_cast<long long>(h) * p.kv_stride : nullptr;

  // Q tile (packed rows beyond the tile are zeros).
  load_tile_64<D, kAttnThreads>(sQ, q, [&](int r) -> const T* {
    const int lr = row0 + r / G;
    if (r >= kPacked || lr >= p.num_rows) return nullptr;
    return q + (static_cast<long long>(lr) * Hq + h * G + r % G) * D;
  });
  cp_async_commit();

  // Union, over the CTA's rows, of the key tiles holding a visible token of a selected block.
  if constexpr (kSparse) {
    for (int w = threadIdx.x; w < p.mask_words; w += kAttnThreads) sMask[w] = 0u;
    __syncthreads();
    for (int idx = threadIdx.x; idx < rows_here * p.max_selected; idx += kAttnThreads) {
      const int r = idx / p.max_selected, e = idx % p.max_selected;
      const long long sel = static_cast<long long>(row0 + r) * p.num_kv_heads + h;
      if (e >= p.counts[sel]) continue;
      const int m = p.block_ids[sel * p.max_selected + e];
      const long long row_abs = p.first_row + row0 + r;
      const long long tok0 = static_cast<long long>(m) * B;
      if (m < 0 || tok0 > row_abs) continue;  // never visible to this row
      const long long tok1 = min(tok0 + B - 1, row_abs);
      for (long long u = tok0 / kKeyTile; u <= tok1 / kKeyTile; ++u)
        atomicOr(&sMask[u >> 5], 1u << (u & 31));
    }
    __syncthreads();
  }
  const int last_tile = static_cast<int>(last_abs / kKeyTile);
  auto next_tile = [&](int u) -> int {  // the next visited key tile after u, or -1
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
  };
  auto load_kv = [&](int u, int buf) {
    const long long t0 = static_cast<long long>(u) * kKeyTile;
    load_tile_64<D, kAttnThreads>(sK + buf * kKeyTile * D, kh, [&](int r) -> const T* {
      return t0 + r < kv_limit ? kh + (t0 + r) * D : nullptr;
    });
    load_tile_64<D, kAttnThreads>(sV + buf * kKeyTile * D, vh, [&](int r) -> const T* {
      return t0 + r < kv_limit ? vh + (t0 + r) * D : nullptr;
    });
    if constexpr (kBias) {
      if (threadIdx.x < kKeyTile) {
        const bool ok = t0 + threadIdx.x < kv_limit;
        cp_async_4(sB + buf * kKeyTile + threadIdx.x, ok ? bh + t0 + threadIdx.x : bh, ok ? 4 : 0);
      }
    }
  };

  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int quad_row = lane >> 2, quad_col = (lane & 3) * 2;
  // The two packed rows this thread accumulates (fragment rows lane/4 and lane/4 + 8).
  long long row_abs[2];
  bool row_ok[2];
  const int* sel_list[2];
  int sel_count[2], sel_pos[2];
#pragma unroll
  for (int j = 0; j < 2; ++j) {
    const int pr = warp * 16 + quad_row + j * 8;
    const int lr = row0 + pr / G;
    row_ok[j] = pr < kPacked && lr < p.num_rows;
    row_abs[j] = row_ok[j] ? p.first_row + lr : -1;
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

  float acc[D / 8][4];
#pragma unroll
  for (int i = 0; i < D / 8; ++i) acc[i][0] = acc[i][1] = acc[i][2] = acc[i][3] = 0.f;
  float row_max[2] = {-CUDART_INF_F, -CUDART_INF_F};
  float row_sum[2] = {0.f, 0.f};  // this thread's partial sums (quad-reduced at the end)

  int u = next_tile(-1);
  if (u >= 0) load_kv(u, 0);
  cp_async_commit();
  cp_async_wait<0>();
  __syncthreads();
  std::uint32_t qf[D / 16][4];
  load_a_frags<D>(qf, sQ, warp * 16);

  int buf = 0;
  while (u >= 0) {
    const int un = next_tile(u);
    if (un >= 0) load_kv(un, buf ^ 1);
    cp_async_commit();
    cp_async_wait<1>();
    __syncthreads();

    const T* tK = sK + buf * kKeyTile * D;
    const T* tV = sV + buf * kKeyTile * D;
    float s[8][4];
#pragma unroll
    for (int i = 0; i < 8; ++i) s[i][0] = s[i][1] = s[i][2] = s[i][3] = 0.f;
    qk_product<D>(s, qf, tK);

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
        float x = s[nt][e] * p.scale_log2;
        if constexpr (kBias) x += sB[buf * kKeyTile + col] * kLog2e;
        if (!((in_set[j] >> blk) & 1u) || t0 + col > row_abs[j]) x = -CUDART_INF_F;
        s[nt][e] = x;
        tile_max[j] = fmaxf(tile_max[j], x);
      }
    }
#pragma unroll
    for (int j = 0; j < 2; ++j) {
      tile_max[j] = fmaxf(tile_max[j], __shfl_xor_sync(0xffffffffu, tile_max[j], 1));
      tile_max[j] = fmaxf(tile_max[j], __shfl_xor_sync(0xffffffffu, tile_max[j], 2));
    }
    float base[2], alpha[2];
#pragma unroll
    for (int j = 0; j < 2; ++j) {
      const float mnew = fmaxf(row_max[j], tile_max[j]);
      // A row with nothing visible yet keeps max -inf; exponent base 0 keeps exp2 finite.
      base[j] = mnew == -CUDART_INF_F ? 0.f : mnew;
      alpha[j] = mnew == row_max[j] ? 1.f : fast_exp2(row_max[j] - base[j]);
      row_max[j] = mnew;
    }
    float tile_sum[2] = {0.f, 0.f};
#pragma unroll
    for (int nt = 0; nt < 8; ++nt) {
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int j = e >> 1;
        s[nt][e] = fast_exp2(s[nt][e] - base[j]);
        tile_sum[j] += s[nt][e];
      }
    }
#pragma unroll
    for (int j = 0; j < 2; ++j) row_sum[j] = row_sum[j] * alpha[j] + tile_sum[j];
#pragma unroll
    for (int i = 0; i < D / 8; ++i) {
      acc[i][0] *= alpha[0];
      acc[i][1] *= alpha[0];
      acc[i][2] *= alpha[1];
      acc[i][3] *= alpha[1];
    }
    // O += P V: the S accumulators of n-tiles (2kk, 2kk+1) are the A fragment of k-step kk.
#pragma unroll
    for (int kk = 0; kk < 4; ++kk) {
      std::uint32_t a[4];
      a[0] = pack2<T>(s[2 * kk][0], s[2 * kk][1]);
      a[1] = pack2<T>(s[2 * kk][2], s[2 * kk][3]);
      a[2] = pack2<T>(s[2 * kk + 1][0], s[2 * kk + 1][1]);
      a[3] = pack2<T>(s[2 * kk + 1][2], s[2 * kk + 1][3]);
#pragma unroll
      for (int dn = 0; dn < D / 8; dn += 2) {
        std::uint32_t b[4];
        const int mi = lane >> 3;
        const int key = kk * 16 + (mi & 1) * 8 + (lane & 7);
        const int d = dn * 8 + (mi >> 1) * 8;
        ldmatrix_x4_trans(b, tV + swz<D>(key, d));
        mma_16816<T>(acc[dn], a, b[0], b[1]);
        mma_16816<T>(acc[dn + 1], a, b[2], b[3]);
      }
    }
    __syncthreads();  // the buffer is refilled by the next iteration's prefetch
    u = un;
    buf ^= 1;
  }
  cp_async_wait<0>();

  // Epilogue: normalize, write o (T) and lse (fp32, natural log).
  T* o = static_cast<T*>(p.o);
#pragma unroll
  for (int j = 0; j < 2; ++j) {
    float l = row_sum[j];
    l += __shfl_xor_sync(0xffffffffu, l, 1);
    l += __shfl_xor_sync(0xffffffffu, l, 2);
    if (!row_ok[j]) continue;
    const int pr = warp * 16 + quad_row + j * 8;
    const long long lr = row0 + pr / G;
    const long long qrow = lr * Hq + h * G + pr % G;
    const float inv = l > 0.f ? 1.f / l : 0.f;
    T* orow = o + qrow * D;
#pragma unroll
    for (int dn = 0; dn < D / 8; ++dn) {
      const std::uint32_t packed = pack2<T>(acc[dn][2 * j] * inv, acc[dn][2 * j + 1] * inv);
      *reinterpret_cast<std::uint32_t*>(orow + dn * 8 + quad_col) = packed;
    }
    if ((lane & 3) == 0) p.lse[qrow] = l > 0.f ? (row_max[j] + log2f(l)) * 0.6931471805599453f : -CUDART_INF_F;
  }
}

}  // namespace prefill
}  // namespace detail
NOSA_NAMESPACE_END
