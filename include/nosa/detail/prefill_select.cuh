// nosa::detail: per-row block selection for a chunk of prefill rows (DESIGN.md section 2 with
// T = i + 1 for row i), in three kernels:
//   compress_kernel : Kc[j] = mean(k[s*j .. s*j+c)), bc[j] = mean(b[...]) in fp32, token order,
//                     stored as Kc = hi + lo (two 2-byte arrays) so the tensor-core product sees
//                     the fp32 value to ~16 bits instead of a bf16-rounded key.
//   stage1_kernel   : S[i][j] = sum_g softmax_j(q_{i,g} . Kc[j] / sqrt(D)) over the visible j
//                     (s*j + c <= i + 1), two passes over the compressed keys (row max/sum, then
//                     probabilities), summed over the G heads in head order, max-pooled into
//                     the blocks each window overlaps: Pq[row][h][m] via atomicMax (S >= 0, so
//                     float order = int order; the buffer starts at all-ones = "-inf").
//   topk_kernel     : one warp per (row, KV head): forced blocks, query-aware top-qk then
//                     agnostic top-budget (NOSA) or top-budget by Pq (InfLLM-V2), ties to the
//                     lower index, sorted ascending.
#pragma once

#include <nosa/config.h>
#include <nosa/detail/cuda_types.cuh>
#include <nosa/detail/prefill_mma.cuh>
#include <nosa/detail/selection_math.h>
#include <nosa/detail/wgmma.cuh>

#include <cuda_runtime.h>
#include <math_constants.h>

#include <climits>
#include <cstdint>
#include <type_traits>

NOSA_NAMESPACE_BEGIN
namespace detail {
namespace prefill {

// ---------------------------------------------------------------------------------------------
// compression

struct CompressParams {
  const void* k;       // [Hkv][kv_stride][D]
  const float* bias;   // [Hkv][kv_stride] or null (then scores are not written)
  void* keys_hi;       // [Hkv][capacity][D]
  void* keys_lo;       // [Hkv][capacity][D] or null
  float* scores;       // [Hkv][capacity] or null
  long long kv_stride;
  int capacity;
  int first_window;
  int num_windows;
  int window, stride;
};

template <class T, int D>
__global__ void __launch_bounds__(D) compress_kernel(const __grid_constant__ CompressParams p) {
  const int j = p.first_window + blockIdx.x;
  const int h = blockIdx.y;
  const int d = threadIdx.x;
  const long long first = static_cast<long long>(j) * p.stride;
  const T* k = static_cast<const T*>(p.k) + (static_cast<long long>(h) * p.kv_stride + first) * D + d;
  float sum = 0.f;
  for (int t = 0; t < p.window; ++t) sum += to_f32(k[static_cast<long long>(t) * D]);
  const float x = sum / static_cast<float>(p.window);
  const long long out = (static_cast<long long>(h) * p.capacity + j) * D + d;
  const T hi = from_f32<T>(x);
  static_cast<T*>(p.keys_hi)[out] = hi;
  if (p.keys_lo != nullptr) static_cast<T*>(p.keys_lo)[out] = from_f32<T>(x - to_f32(hi));
  if (d == 0 && p.scores != nullptr && p.bias != nullptr) {
    const float* b = p.bias + static_cast<long long>(h) * p.kv_stride + first;
    float bs = 0.f;
    for (int t = 0; t < p.window; ++t) bs += b[t];
    p.scores[static_cast<long long>(h) * p.capacity + j] = bs / static_cast<float>(p.window);
  }
}

// ---------------------------------------------------------------------------------------------
// stage 1
//
// CTA = W warps = 16 W packed rows (the G heads of 16 W / G query rows of one KV head) against
// tiles of 64 compressed keys. W is a template argument: the host launches W = 8 on sm_90
// devices and W = 4 elsewhere (stage1_smem_bytes<D, G, 4> fits the 99 KB of sm_86 / sm_89 at
// D = 128). Two bodies:
//  - sm_90a (NOSA_HAS_WGMMA), D <= 128, W = 8: each warpgroup multiplies its 64 packed rows by
//    the key tile with wgmma m64n64k16, both operands K-major SW128 tiles in shared memory (no Q
//    fragments in registers). Keys are triple-buffered by cp.async; the two passes form one
//    sequence of 2 * num_tiles steps, taken two at a time: both products are issued together,
//    so step u + 1's runs on the tensor cores under step u's softmax / pooling work.
//  - everything else (sm_80/86/89, plain sm_90, the host pass, D = 256, W = 4): every warp keeps
//    its 16 rows of Q as mma.sync A fragments (ldmatrix from an XOR-swizzled tile), keys
//    double-buffered.
// Both bodies hand each tile's fp32 products to the same code (tile_work), so masking, the two
// passes, the head sums and the pooling are one implementation; only the summation order inside
// the q . Kc dot products differs between the two bodies.
//
// Pass 1 per tile: probabilities in registers; head sums for G in {1, 2, 4, 8, 16} by a
// reduce-scatter over the lanes that hold the heads of one query row (each m16 fragment holds
// 16 / G whole query rows), written once per (query row, window) to shared memory; other G
// write the probabilities and sum the heads from shared memory. Then one barrier and the
// window -> block max pooling, whose per-block window ranges are tabled once per tile (no
// division per (row, block)), one atomicMax per (row, block) per tile.


inline constexpr int kS1Keys = 64;  // compressed keys per tile
inline constexpr int kS1PStride = kS1Keys + 1;
inline constexpr int kS1TableBlocks = 128;  // blocks of one tile whose window ranges are tabled

/// The host's shape choice: W = 8 on sm_90 when it fits, else 4.
inline constexpr int kS1WarpsSm90 = 8;
inline constexpr int kS1WarpsOther = 4;

/// Group sizes whose head sums are a lane reduction (16 / G whole query rows per m16 fragment).
template <int G>
inline constexpr bool kS1LaneSums = G == 1 || G == 2 || G == 4 || G == 8 || G == 16;
/// The sm_90a wgmma body: D <= 128 (D = 256 would not fit three key buffers), two warpgroups.
template <int D, int W>
inline constexpr bool kS1WgmmaShape = D <= 128 && W == 8;
template <int D, int W>
inline constexpr int kS1KeyBufs = kS1WgmmaShape<D, W> ? 3 : 2;

struct Stage1Params {
  const void* q;        // [num_rows][Hq][D]
  const void* keys_hi;  // [Hkv][capacity][D]
  const void* keys_lo;  // [Hkv][capacity][D] or null
  int* pq;              // [num_rows][Hkv][nb_stride] float bits
  long long first_row;
  int num_rows;
  int num_kv_heads;
  int capacity;
  int nb_stride;
  int window, stride, block_size;
  float scale_log2;
};

/// Floats of stage 1's sum buffer: lane sums [16 W / G][64], else probabilities [16 W][65].
template <int G, int W>
inline constexpr int kS1SumFloats = kS1LaneSums<G> ? (16 * W / G) * kS1Keys : 16 * W * kS1PStride;

/// Dynamic shared memory of stage1_kernel<T, D, G, W>: 1024 bytes of alignment slack (the SW128
/// tiles need a 1024-byte aligned base), Q [16 W][D], hi and lo key buffers [bufs][64][D], the
/// sum buffer, the tile's block table [kS1TableBlocks] and visible windows per row [16 W] ints.
template <int D, int G, int W>
constexpr int stage1_smem_bytes() {
  return 1024 + (16 * W * D + 2 * kS1KeyBufs<D, W> * kS1Keys * D) * 2 + kS1SumFloats<G, W> * 4 +
         kS1TableBlocks * 4 + 16 * W * 4;
}

/// Reduce-scatter of v[0..N) over the lanes differing in bits 4 << Step .. 4 << (Steps - 1):
/// afterwards v[i], i < N >> (Steps - Step), is the sum over those lanes of original slot
/// slot + i (slot accumulates the kept halves' offsets).
template <int N, int Step, int Steps>
NOSA_DEVICE NOSA_FORCEINLINE void stage1_reduce_scatter(float (&v)[32], int lane, int& slot) {
  if constexpr (Step < Steps) {
    constexpr int kMask = 4 << Step;
    constexpr int kHalf = N / 2;
    const bool up = (lane & kMask) != 0;
#pragma unroll
    for (int i = 0; i < kHalf; ++i) {
      const float send = up ? v[i] : v[i + kHalf];
      const float keep = up ? v[i + kHalf] : v[i];
      v[i] = keep + __shfl_xor_sync(0xffffffffu, send, kMask);
    }
    slot += up ? kHalf : 0;
    stage1_reduce_scatter<kHalf, Step + 1, Steps>(v, lane, slot);
  }
}

/// floor(a / b), b > 0, in 32 bits.
NOSA_DEVICE NOSA_FORCEINLINE int stage1_floor_div(int a, int b) { return a >= 0 ? a / b : -((-a + b - 1) / b); }

template <class T, int D, int G, int W>
__global__ void __launch_bounds__(32 * W, D <= 64 ? 2 : 1) stage1_kernel(const __grid_constant__ Stage1Params p) {
  constexpr int kThreads = 32 * W;
  constexpr int kPackedRows = 16 * W;  // packed rows per CTA
  constexpr int kRows = kPackedRows / G;
  constexpr int kPacked = kRows * G;
  constexpr int kBufs = kS1KeyBufs<D, W>;
  constexpr int kTileElems = kS1Keys * D;
  constexpr bool kLaneSums = kS1LaneSums<G>;
  constexpr int kSumStride = kLaneSums ? kS1Keys : G * kS1PStride;  // floats between query rows' sums
  extern __shared__ __align__(128) unsigned char pf_smem[];
  unsigned char* smem = pf_smem + ((1024u - (smem_u32(pf_smem) & 1023u)) & 1023u);
  T* sQ = reinterpret_cast<T*>(smem);                             // [kPackedRows][D]
  T* sH = sQ + kPackedRows * D;                                   // [kBufs][64][D]
  T* sL = sH + kBufs * kTileElems;                                // [kBufs][64][D]
  float* sP = reinterpret_cast<float*>(sL + kBufs * kTileElems);  // sums (kS1SumFloats)
  unsigned* sTab = reinterpret_cast<unsigned*>(sP + kS1SumFloats<G, W>);  // [kS1TableBlocks]
  int* sNc = reinterpret_cast<int*>(sTab + kS1TableBlocks);       // [kRows] visible windows per row

  const int h = blockIdx.y;
  const int Hq = p.num_kv_heads * G;
  const int row0 = blockIdx.x * kRows;
  const int rows_here = min(kRows, p.num_rows - row0);
  const long long last_abs = p.first_row + row0 + rows_here - 1;
  const int nc_tile = num_compressed(last_abs + 1, p.window, p.stride);
  const int num_tiles = (nc_tile + kS1Keys - 1) / kS1Keys;
  // Token positions of this CTA's windows and blocks fit 32-bit arithmetic (a uniform choice).
  const bool small = static_cast<long long>(nc_tile) * p.stride + p.window + 2LL * p.block_size < INT_MAX;
  const bool use_lo = p.keys_lo != nullptr;
  const T* q = static_cast<const T*>(p.q);
  const T* khi = static_cast<const T*>(p.keys_hi) + static_cast<long long>(h) * p.capacity * D;
  const T* klo = use_lo ? static_cast<const T*>(p.keys_lo) + static_cast<long long>(h) * p.capacity * D : khi;
  auto q_row = [&](int r) -> const T* {
    const int lr = row0 + r / G;
    if (r >= kPacked || lr >= p.num_rows) return nullptr;
    return q + (static_cast<long long>(lr) * Hq + h * G + r % G) * D;
  };

  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int quad_row = lane >> 2, quad_col = (lane & 3) * 2;
  int nc_row[2];
  bool row_ok[2];
#pragma unroll
  for (int j = 0; j < 2; ++j) {
    const int pr = warp * 16 + quad_row + j * 8;
    const int lr = row0 + pr / G;
    row_ok[j] = pr < kPacked && lr < p.num_rows;
    nc_row[j] = row_ok[j] ? num_compressed(p.first_row + lr + 1, p.window, p.stride) : 0;
  }
  for (int r = threadIdx.x; r < rows_here; r += kThreads)
    sNc[r] = num_compressed(p.first_row + row0 + r + 1, p.window, p.stride);  // read after a barrier
  float row_max[2] = {-CUDART_INF_F, -CUDART_INF_F};
  float row_sum[2] = {0.f, 0.f};
  float inv_den[2] = {0.f, 0.f};

  // One tile's products s (this thread's m16n8 C fragments: s[4 * nt + e] = row
  // warp * 16 + quad_row + 8 * (e >> 1), key tile * 64 + nt * 8 + quad_col + (e & 1)) -> pass 0:
  // running row max / sum; pass 1: probabilities, head sums and pooling into Pq. s is clobbered.
  // Pass 1 synchronizes the CTA once (twice for G outside kS1LaneSums); the caller must
  // synchronize before sP / sTab are written again.
  auto tile_work = [&](float (&s)[32], int tile, int pass) {
    const int j0 = tile * kS1Keys;
#pragma unroll
    for (int nt = 0; nt < 8; ++nt)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int jr = e >> 1;
        const int col = j0 + nt * 8 + quad_col + (e & 1);
        s[4 * nt + e] = col < nc_row[jr] ? s[4 * nt + e] * p.scale_log2 : -CUDART_INF_F;
      }
    if (pass == 0) {
      float tmax[2] = {-CUDART_INF_F, -CUDART_INF_F};
#pragma unroll
      for (int nt = 0; nt < 8; ++nt)
#pragma unroll
        for (int e = 0; e < 4; ++e) tmax[e >> 1] = fmaxf(tmax[e >> 1], s[4 * nt + e]);
#pragma unroll
      for (int jr = 0; jr < 2; ++jr) {
        tmax[jr] = fmaxf(tmax[jr], __shfl_xor_sync(0xffffffffu, tmax[jr], 1));
        tmax[jr] = fmaxf(tmax[jr], __shfl_xor_sync(0xffffffffu, tmax[jr], 2));
        const float mnew = fmaxf(row_max[jr], tmax[jr]);
        const float base = mnew == -CUDART_INF_F ? 0.f : mnew;
        const float alpha = mnew == row_max[jr] ? 1.f : exp2f(row_max[jr] - base);
        float ts = 0.f;
#pragma unroll
        for (int nt = 0; nt < 8; ++nt) ts += exp2f(s[4 * nt + 2 * jr] - base) + exp2f(s[4 * nt + 2 * jr + 1] - base);
        row_sum[jr] = row_sum[jr] * alpha + ts;
        row_max[jr] = mnew;
      }
      return;
    }
    // The blocks this tile's windows overlap, m_lo .. m_lo + nm - 1 (nm >= 1: the windows
    // j0 .. j1 cover a contiguous token range since stride <= window), and their window ranges
    // within the tile, tabled (relative to j0: first | last << 16) for the pooling below.
    const int j1 = min(j0 + kS1Keys, nc_tile) - 1;
    int m_lo, m_hi;
    if (small) {
      m_lo = j0 * p.stride / p.block_size;
      m_hi = (j1 * p.stride + p.window - 1) / p.block_size;
    } else {
      m_lo = static_cast<int>(static_cast<long long>(j0) * p.stride / p.block_size);
      m_hi = static_cast<int>((static_cast<long long>(j1) * p.stride + p.window - 1) / p.block_size);
    }
    const int nm = m_hi - m_lo + 1;
    const bool tabled = nm <= kS1TableBlocks;
    if (tabled)
      for (int k = threadIdx.x; k < nm; k += kThreads) {
        const int m = m_lo + k;
        int first, last;
        if (small) {
          first = stage1_floor_div(m * p.block_size - p.window, p.stride) + 1;
          last = ((m + 1) * p.block_size - 1) / p.stride;
        } else {
          const WindowRange wr = windows_overlapping_block(m, p.block_size, p.window, p.stride, nc_tile);
          first = wr.first;
          last = wr.last;
        }
        first = max(first, j0) - j0;
        last = min(last, j1) - j0;
        sTab[k] = first <= last ? static_cast<unsigned>(first) | static_cast<unsigned>(last) << 16 : 1u;
      }
    // Probabilities of this tile (in place).
#pragma unroll
    for (int jr = 0; jr < 2; ++jr) {
      const float base = row_max[jr] == -CUDART_INF_F ? 0.f : row_max[jr];
#pragma unroll
      for (int nt = 0; nt < 8; ++nt)
#pragma unroll
        for (int c = 0; c < 2; ++c) s[4 * nt + 2 * jr + c] = exp2f(s[4 * nt + 2 * jr + c] - base) * inv_den[jr];
    }
    if constexpr (kLaneSums) {
      // Slots: G = 16: 2 nt + c (both fragment halves are the same query row, summed here);
      // else 16 jr + 2 nt + c. The heads of one query row sit in the lanes that differ in the
      // low log2(min(G, 8)) bits of quad_row (lane bits 2..4).
      constexpr int kSlots = G == 16 ? 16 : 32;
      constexpr int kSteps = G >= 8 ? 3 : G == 4 ? 2 : G == 2 ? 1 : 0;
      constexpr int kKeep = kSlots >> kSteps;
      float v[32];
#pragma unroll
      for (int nt = 0; nt < 8; ++nt)
#pragma unroll
        for (int c = 0; c < 2; ++c) {
          if constexpr (G == 16) {
            v[2 * nt + c] = s[4 * nt + c] + s[4 * nt + 2 + c];
          } else {
            v[2 * nt + c] = s[4 * nt + c];
            v[16 + 2 * nt + c] = s[4 * nt + 2 + c];
          }
        }
      int slot = 0;
      stage1_reduce_scatter<kSlots, 0, kSteps>(v, lane, slot);
#pragma unroll
      for (int i = 0; i < kKeep; ++i) {
        const int sl = slot + i;
        const int jr = G == 16 ? 0 : sl >> 4;
        const int qr = (warp * 16 + quad_row + 8 * jr) / G;
        sP[qr * kS1Keys + ((sl & 15) >> 1) * 8 + quad_col + (sl & 1)] = v[i];
      }
    } else {
#pragma unroll
      for (int nt = 0; nt < 8; ++nt)
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          const int pr = warp * 16 + quad_row + (e >> 1) * 8;
          sP[pr * kS1PStride + nt * 8 + quad_col + (e & 1)] = s[4 * nt + e];
        }
      __syncthreads();
      // Head sums in head order, written over the row's first head (each (row, window) belongs
      // to one thread), so the pooling below reads one value per window.
      for (int idx = threadIdx.x; idx < rows_here * kS1Keys; idx += kThreads) {
        float* w = sP + (idx / kS1Keys) * G * kS1PStride + idx % kS1Keys;
        float sum = 0.f;
#pragma unroll
        for (int g = 0; g < G; ++g) sum += w[g * kS1PStride];
        *w = sum;
      }
    }
    __syncthreads();
    // Pooling: 2^lg lanes per query row (the power of two >= nm, at most 32), lane k of a row
    // taking blocks k, k + 2^lg, ...
    const int lg = nm >= 32 ? 5 : 32 - __clz(nm - 1);
    const int lanes = 1 << lg, rows_per_warp = 32 >> lg;
    for (int r = warp * rows_per_warp + (lane >> lg); r < rows_here; r += W * rows_per_warp) {
      const int nc_rel = sNc[r] - j0;  // windows of row r visible in this tile: 0 .. nc_rel - 1
      if (nc_rel <= 0) continue;
      const float* w = sP + r * kSumStride;
      int* dst = p.pq + (static_cast<long long>(row0 + r) * p.num_kv_heads + h) * p.nb_stride + m_lo;
      for (int k = lane & (lanes - 1); k < nm; k += lanes) {
        int a, b;
        if (tabled) {
          const unsigned e = sTab[k];
          a = static_cast<int>(e & 0xffffu);
          b = min(static_cast<int>(e >> 16), nc_rel - 1);
        } else {
          const WindowRange wr = windows_overlapping_block(m_lo + k, p.block_size, p.window, p.stride, sNc[r]);
          a = max(wr.first, j0) - j0;
          b = min(wr.last, j1) - j0;
        }
        if (a > b) continue;
        float best = w[a];
        for (int jj = a + 1; jj <= b; ++jj) best = fmaxf(best, w[jj]);
        atomicMax(dst + k, __float_as_int(best));
      }
    }
  };
  // After pass 0: the softmax denominators of this thread's two rows.
  auto finish_pass0 = [&]() {
#pragma unroll
    for (int jr = 0; jr < 2; ++jr) {
      float l = row_sum[jr];
      l += __shfl_xor_sync(0xffffffffu, l, 1);
      l += __shfl_xor_sync(0xffffffffu, l, 2);
      inv_den[jr] = l > 0.f ? 1.f / l : 0.f;
    }
  };

#if NOSA_HAS_WGMMA
  if constexpr (kS1WgmmaShape<D, W>) {
    // Q as two SW128 tiles of 64 rows (one per warpgroup), keys as SW128 tiles of 64 rows.
    auto q_off = [](int r, int col) { return (r >> 6) * (64 * D) + wgmma::sw128_offset<64>(r & 63, col); };
    auto k_off = [](int r, int col) { return wgmma::sw128_offset<64>(r, col); };
    load_tile<kPackedRows, D, kThreads>(sQ, q, q_off, q_row);
    cp_async_commit();
    const int steps = 2 * num_tiles;  // pass 0 over the tiles, then pass 1 over the same tiles
    const std::uint32_t q_addr = smem_u32(sQ) + (warp >> 2) * (64 * D * 2);
    const std::uint32_t h_addr = smem_u32(sH), l_addr = smem_u32(sL);
    // The pipeline, with keys_lo present or not as a compile-time choice (no branch between the
    // wgmma of one group, which would make ptxas serialize them).
    auto pipeline = [&](auto lo_tag) {
      constexpr bool kLo = decltype(lo_tag)::value;
      // Keys of step u -> buffer u % kBufs.
      auto load_keys = [&](int u) {
        const int j0 = (u < num_tiles ? u : u - num_tiles) * kS1Keys;
        load_tile<kS1Keys, D, kThreads>(sH + (u % kBufs) * kTileElems, khi, k_off, [&](int r) -> const T* {
          return j0 + r < nc_tile ? khi + static_cast<long long>(j0 + r) * D : nullptr;
        });
        if constexpr (kLo)
          load_tile<kS1Keys, D, kThreads>(sL + (u % kBufs) * kTileElems, klo, k_off, [&](int r) -> const T* {
            return j0 + r < nc_tile ? klo + static_cast<long long>(j0 + r) * D : nullptr;
          });
      };
      // S = Q Kc^T of step u (hi, then lo, into the same fp32 accumulator), one commit group.
      // k-step kk: 16 elements = 32 bytes into the swizzled 128-byte rows of 64-column slab kk / 4.
      auto issue = [&](float (&acc)[32], int u) {
        const std::uint32_t buf = static_cast<std::uint32_t>(u % kBufs) * (kTileElems * 2);
        wgmma::fence();
#pragma unroll
        for (int kk = 0; kk < D / 16; ++kk) {
          const std::uint32_t off = (kk >> 2) * (64 * 128) + (kk & 3) * 32;
          wgmma::Op<64, T>::ss(acc, wgmma::sw128_desc(q_addr + off, 16, 1024),
                               wgmma::sw128_desc(h_addr + buf + off, 16, 1024), kk > 0 ? 1 : 0);
        }
        if constexpr (kLo) {
#pragma unroll
          for (int kk = 0; kk < D / 16; ++kk) {
            const std::uint32_t off = (kk >> 2) * (64 * 128) + (kk & 3) * 32;
            wgmma::Op<64, T>::ss(acc, wgmma::sw128_desc(q_addr + off, 16, 1024),
                                 wgmma::sw128_desc(l_addr + buf + off, 16, 1024), 1);
          }
        }
        wgmma::commit();
      };
      // The products of step u into acc, then its softmax / pooling work.
      auto work = [&](float (&acc)[32], int u) {
        const int pass = u < num_tiles ? 0 : 1;
        tile_work(acc, pass == 0 ? u : u - num_tiles, pass);
        if (u == num_tiles - 1) finish_pass0();
      };
      // Steps u and u + 1 (u even; steps is even): both products are issued at once, so step
      // u + 1's runs under step u's softmax. No wgmma stays in flight across the loop's back
      // edge: ptxas (CUDA 13.0) serializes every wgmma of a loop that keeps one in flight there
      // while the loop also reads accumulators. Buffers: u and u + 1 are read here; u + 2 goes
      // into the third (read by step u - 1, which every warpgroup waited for before the top
      // barrier); u + 3 into u's buffer after the middle barrier (everyone is past step u's wait).
      auto two_steps = [&](int u) {
        cp_async_wait<0>();
        wgmma::fence_proxy_async();
        __syncthreads();  // keys of u and u + 1 visible; the previous pair's reads of sP are over
        float acc0[32], acc1[32];
        issue(acc0, u);
        issue(acc1, u + 1);
        if (u + 2 < steps) load_keys(u + 2);
        cp_async_commit();
        wgmma::wait<1>();
        wgmma::pin(acc0);
        work(acc0, u);
        __syncthreads();  // step u's products are done in every warpgroup, its reads of sP too
        if (u + 3 < steps) load_keys(u + 3);
        cp_async_commit();
        wgmma::wait<0>();
        wgmma::pin(acc1);
        work(acc1, u + 1);
      };
      load_keys(0);
      cp_async_commit();
      load_keys(1);  // steps >= 2
      cp_async_commit();
      for (int u = 0; u < steps; u += 2) two_steps(u);
    };
    if (steps > 0) {
      if (use_lo)
        pipeline(std::true_type{});
      else
        pipeline(std::false_type{});
    }
    cp_async_wait<0>();
    return;
  }
#endif

  // mma.sync body: Q and keys in XOR-swizzled [rows][D] tiles, keys double-buffered.
  auto swz_off = [](int r, int col) { return swz<D>(r, col); };
  load_tile<kPackedRows, D, kThreads>(sQ, q, swz_off, q_row);
  cp_async_commit();
  auto load_keys = [&](int tile, int buf) {
    const int j0 = tile * kS1Keys;
    load_tile<kS1Keys, D, kThreads>(sH + buf * kTileElems, khi, swz_off, [&](int r) -> const T* {
      return j0 + r < nc_tile ? khi + static_cast<long long>(j0 + r) * D : nullptr;
    });
    if (use_lo)
      load_tile<kS1Keys, D, kThreads>(sL + buf * kTileElems, klo, swz_off, [&](int r) -> const T* {
        return j0 + r < nc_tile ? klo + static_cast<long long>(j0 + r) * D : nullptr;
      });
  };
  std::uint32_t qf[D / 16][4];

  // Both passes walk the same tiles with the same arithmetic, so pass 2 sees pass 1's logits.
  for (int pass = 0; pass < 2; ++pass) {
    if (num_tiles > 0) load_keys(0, 0);
    cp_async_commit();
    cp_async_wait<0>();
    __syncthreads();
    if (pass == 0) load_a_frags<D>(qf, sQ, warp * 16);
    for (int tile = 0; tile < num_tiles; ++tile) {
      const int buf = tile & 1;
      if (tile + 1 < num_tiles) load_keys(tile + 1, buf ^ 1);
      cp_async_commit();
      cp_async_wait<1>();
      __syncthreads();
      float s[8][4];
#pragma unroll
      for (int i = 0; i < 8; ++i) s[i][0] = s[i][1] = s[i][2] = s[i][3] = 0.f;
      qk_product<D>(s, qf, sH + buf * kTileElems);
      if (use_lo) qk_product<D>(s, qf, sL + buf * kTileElems);
      float sf[32];
#pragma unroll
      for (int i = 0; i < 32; ++i) sf[i] = s[i >> 2][i & 3];
      tile_work(sf, tile, pass);
      __syncthreads();
    }
    if (pass == 0) finish_pass0();
  }
  cp_async_wait<0>();
}

// ---------------------------------------------------------------------------------------------
// top-k selection

inline constexpr int kTopkWarps = 4;

struct TopkParams {
  const int* pq;        // [num_rows][Hkv][nb_stride] float bits; negative int = -inf
  float* pe;            // [num_rows][Hkv][nb_stride] scratch (NOSA)
  const float* scores;  // [Hkv][capacity] compressed agnostic scores (NOSA)
  int* block_ids;       // [num_rows][Hkv][out_stride]
  int* counts;          // [num_rows][Hkv]
  long long first_row;
  long long out_row0;   // row offset of this pass in block_ids/counts
  int num_rows;
  int num_kv_heads;
  int capacity;
  int nb_stride;
  int out_stride;
  int pick_cap;    // shared ints per warp for the budget picks (>= min(budget, nb) of every row)
  int qpick_cap;   // ... and for the query-aware picks
  int window, stride, block_size;
  int sink, local, query_aware, budget;
  int nosa;  // 1 = NOSA, 0 = InfLLM-V2
};

NOSA_DEVICE NOSA_FORCEINLINE bool rank_first(float sa, int a, float sb, int b) {
  return sa > sb || (sa == sb && a < b);
}

/// Top min(k, n) of score(m), m < n, in rank order, written to out[0..k) (shared); a warp.
template <class Score>
NOSA_DEVICE NOSA_FORCEINLINE int warp_topk(int n, int k, Score score, int* out) {
  const int lane = threadIdx.x & 31;
  k = min(k, n);
  // Each lane caches its best element ranking after the last pick; only the winner rescans.
  auto rescan = [&](float ps, int pi, float& bs, int& bi) {
    bs = -CUDART_INF_F;
    bi = INT_MAX;
    for (int m = lane; m < n; m += 32) {
      const float s = score(m);
      if (rank_first(ps, pi, s, m) && rank_first(s, m, bs, bi)) {
        bs = s;
        bi = m;
      }
    }
  };
  float bs;
  int bi;
  rescan(CUDART_INF_F, -1, bs, bi);
  for (int r = 0; r < k; ++r) {
    float ws = bs;
    int wi = bi;
#pragma unroll
    for (int off = 16; off > 0; off >>= 1) {
      const float os = __shfl_xor_sync(0xffffffffu, ws, off);
      const int oi = __shfl_xor_sync(0xffffffffu, wi, off);
      if (rank_first(os, oi, ws, wi)) {
        ws = os;
        wi = oi;
      }
    }
    if (lane == 0) out[r] = wi;
    if (bi == wi) rescan(ws, wi, bs, bi);
  }
  __syncwarp();
  return k;
}

template <int kWarps = kTopkWarps>  // a template so the header can be included by many .cu files
__global__ void __launch_bounds__(kWarps * 32) topk_kernel(const __grid_constant__ TopkParams p) {
  extern __shared__ __align__(128) unsigned char pf_smem[];
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const long long task = static_cast<long long>(blockIdx.x) * kWarps + warp;
  if (task >= static_cast<long long>(p.num_rows) * p.num_kv_heads) return;
  const int lr = static_cast<int>(task / p.num_kv_heads);
  const int h = static_cast<int>(task % p.num_kv_heads);
  int* picks = reinterpret_cast<int*>(pf_smem) + warp * (p.pick_cap + p.qpick_cap);  // [pick_cap]
  int* qpicks = picks + p.pick_cap;                                                   // [qpick_cap]

  const long long T = p.first_row + lr + 1;
  const int nb = num_blocks(T, p.block_size);
  const int cur = nb - 1;
  const int nc = num_compressed(T, p.window, p.stride);
  const int* pq = p.pq + task * p.nb_stride;
  auto score_q = [&](int m) -> float {
    if (is_forced_block(m, cur, p.sink, p.local)) return CUDART_INF_F;
    const int bits = pq[m];
    return bits < 0 ? -CUDART_INF_F : __int_as_float(bits);
  };
  int k;
  if (p.nosa) {
    const int kq = warp_topk(nb, p.query_aware, score_q, qpicks);
    float* pe = p.pe + task * p.nb_stride;
    const float* bc = p.scores + static_cast<long long>(h) * p.capacity;
    for (int m = lane; m < nb; m += 32) {
      float v = CUDART_INF_F;
      if (!is_forced_block(m, cur, p.sink, p.local)) {
        v = -CUDART_INF_F;
        const WindowRange wr = windows_overlapping_block(m, p.block_size, p.window, p.stride, nc);
        for (int j = wr.first; j <= wr.last; ++j) v = fmaxf(v, bc[j]);
      }
      pe[m] = v;
    }
    __syncwarp();
    for (int r = lane; r < kq; r += 32) pe[qpicks[r]] = CUDART_INF_F;  // Pe[m] = +inf for m in Q
    __syncwarp();
    k = warp_topk(nb, p.budget, [&](int m) { return pe[m]; }, picks);
  } else {
    k = warp_topk(nb, p.budget, score_q, picks);
  }
  // Ascending order: each pick's position is the number of smaller picks.
  const long long out_row = p.out_row0 + lr;
  int* out = p.block_ids + (out_row * p.num_kv_heads + h) * p.out_stride;
  for (int e = lane; e < k; e += 32) {
    const int v = picks[e];
    int pos = 0;
    for (int x = 0; x < k; ++x) pos += picks[x] < v;
    out[pos] = v;
  }
  if (lane == 0) p.counts[out_row * p.num_kv_heads + h] = k;
}

}  // namespace prefill
}  // namespace detail
NOSA_NAMESPACE_END
