// nosa::detail: the split-KV decode attention kernel and its merge kernel.
//
// One CTA = (split, KV head, batch entry). Its 4 warps hold the G query heads of the KV head as
// the rows of a 16-row tensor-core tile (MT = 1 tile for G <= 16, 2 for G <= 32; padded rows are
// zero and never written), so K and V of a token are read from HBM once per KV head. The CTA
// walks its share of the selected tokens in tiles of 64 "positions" (position p = entry
// p / B of the selection, token p % B of that block), gathered with 16-byte cp.async into a 2-3
// stage shared-memory ring (block_ids/slot_ids are resolved once into a shared-memory block
// table, so no tile's copies wait on a dependent global load), then S = Q K^T and O += P V run on
// mma.sync m16n8k16 with an fp32 online softmax. Warps split the tokens of a tile; their
// (m, l, O) are combined through shared memory at the end. With one split the CTA writes o/lse;
// otherwise it writes an fp32 partial that merge_splits_kernel combines by lse.
//
// Only D, MT, layout and the element type are compile-time: the block size is a run-time power
// of two (shifts) and G a run-time row count, so the full matrix of the public API maps onto
// 3 x 2 x 2 x 2 kernels.
#pragma once

#include <nosa/config.h>
#include <nosa/detail/attention_mma.cuh>
#include <nosa/detail/cuda_types.cuh>
#include <nosa/types.h>

#include <cuda_runtime.h>

#include <cmath>
#include <cstddef>
#include <cstdint>

// Blocks resolved into the kernel's shared-memory block table per fill (a refill every this many
// blocks of a CTA's range). Overridable only to exercise the refill path in tests with small
// selections (e.g. -DNOSA_ATTENTION_TABLE_BLOCKS=16); must be >= 8.
#ifndef NOSA_ATTENTION_TABLE_BLOCKS
#define NOSA_ATTENTION_TABLE_BLOCKS 128
#endif

NOSA_NAMESPACE_BEGIN
namespace detail {

/// Everything the kernels need, passed as one __grid_constant__ struct. Element pointers are
/// untyped here; the kernel template casts them to its element type.
struct AttentionKernelParams {
  const void* q;           // [batch][Hkv*G][D]
  void* o;                 // [batch][Hkv*G][D]
  float* lse;              // [batch][Hkv*G]
  const void* k_cache;     // slot cache, layout per template
  const void* v_cache;
  const float* bias_cache;  // nullable
  const std::int32_t* block_ids;  // [batch][Hkv][max_blocks] (unused in dense mode)
  const std::int32_t* slot_ids;   // [batch][Hkv][max_blocks]; nullable in dense mode
  const std::int32_t* counts;     // [batch][Hkv] (unused in dense mode)
  const std::int32_t* seq_lens;   // [batch]
  const std::int32_t* seq_slots;  // [batch] nullable (identity tables only)
  float* part_o;    // [splits][batch*Hq][D] fp32 (splits > 1)
  float* part_lse;  // [splits][batch*Hq]
  int batch;
  int num_kv_heads;
  int group_size;
  int max_blocks;
  long long num_slots;
  int log2_block;
  int num_splits;
  int dense;            // 1: block i of a sequence is block i (all blocks), count from seq_lens
  float scale_log2;     // log2(e) / sqrt(D)
};

template <class T, int D, int MT, HeadLayout Layout>
struct AttentionTraits {
  static constexpr int kWarps = 4;
  static constexpr int kThreads = kWarps * 32;
  static constexpr int kTileN = 64;                  // token positions per pipeline stage
  static constexpr int kStages = D >= 256 ? 2 : 3;   // smem ring depth
  static constexpr int kTW = kWarps / MT;            // warps sharing one 16-row tile
  static constexpr int kChunksPerWarp = kTileN / 16 / kTW;
  static constexpr int kRowChunks = D / 8;           // 16-byte chunks per K/V row
  static constexpr int kRows = 16 * MT;              // padded query rows
  static_assert(MT == 1 || MT == 2, "MT is 1 or 2 (G <= 32)");
  static_assert(kRowChunks >= 8 && kThreads % kRowChunks == 0, "swizzle needs >= 8 chunks per row");

  static constexpr std::size_t kQBytes = std::size_t(kRows) * D * 2;
  static constexpr std::size_t kKVTileBytes = std::size_t(kTileN) * D * 2;
  static constexpr std::size_t kKOffset = kQBytes;
  static constexpr std::size_t kVOffset = kKOffset + kStages * kKVTileBytes;
  static constexpr std::size_t kBiasOffset = kVOffset + kStages * kKVTileBytes;
  static constexpr std::size_t kMaskOffset = kBiasOffset + kStages * kTileN * sizeof(float);
  // Block table of the CTA's range, resolved once per kTabCap blocks (see decode_attention_kernel):
  // per block the K/V row index of its token 0 (int64) and its count of valid tokens (int32).
  static constexpr int kTabCap = NOSA_ATTENTION_TABLE_BLOCKS;
  static constexpr std::size_t kTabRowOffset = kMaskOffset + kStages * kTileN * sizeof(float);
  static constexpr std::size_t kTabValidOffset = kTabRowOffset + kTabCap * sizeof(long long);
  static constexpr std::size_t kSmemBytes = kTabValidOffset + kTabCap * sizeof(int);
  // The end-of-CTA combine reuses the K/V ring: per warp 16 x D accumulators + m + l.
  static constexpr std::size_t kCombineBytes = std::size_t(kWarps) * (16 * D + 32) * sizeof(float);
  static_assert(kCombineBytes <= 2 * kStages * kKVTileBytes, "combine buffer must fit the K/V ring");
};

/// Byte offset of 16-byte chunk `chunk` of row `row` in a swizzled [rows][D] 2-byte tile:
/// XOR with row % 8 spreads the 8 rows an ldmatrix reads over all 32 banks.
template <int D>
NOSA_DEVICE NOSA_FORCEINLINE int swz(int row, int chunk) {
  return (row * (D / 8) + (chunk ^ (row & 7))) * 16;
}

NOSA_DEVICE NOSA_FORCEINLINE float fast_exp2(float x) { return exp2f(x); }

template <class T, int D, int MT, HeadLayout Layout>
__global__ void __launch_bounds__(128) decode_attention_kernel(const __grid_constant__ AttentionKernelParams p) {
  using Tr = AttentionTraits<T, D, MT, Layout>;
  constexpr int kTileN = Tr::kTileN, kStages = Tr::kStages, kRowChunks = Tr::kRowChunks;
  extern __shared__ __align__(128) unsigned char smem[];
  unsigned char* sQ = smem;
  unsigned char* sK = smem + Tr::kKOffset;
  unsigned char* sV = smem + Tr::kVOffset;
  float* sBias = reinterpret_cast<float*>(smem + Tr::kBiasOffset);
  float* sMask = reinterpret_cast<float*>(smem + Tr::kMaskOffset);
  long long* sTabRow = reinterpret_cast<long long*>(smem + Tr::kTabRowOffset);
  int* sTabValid = reinterpret_cast<int*>(smem + Tr::kTabValidOffset);

  const int split = blockIdx.x, h = blockIdx.y, b = blockIdx.z;
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int G = p.group_size, Hkv = p.num_kv_heads;
  const int log2B = p.log2_block, B = 1 << log2B;
  const T* __restrict__ q = static_cast<const T*>(p.q);
  const T* __restrict__ kc = static_cast<const T*>(p.k_cache);
  const T* __restrict__ vc = static_cast<const T*>(p.v_cache);
  // A merge launched as a programmatic dependent (sm_90) may be scheduled now; it still waits
  // for this grid to finish (griddepcontrol.wait) before it reads the partials.
  grid_dependents_launch();

  // ---- Q first (no dependency on any table): G rows of this KV head, zero-padded to 16*MT
  // rows; the copies join the first tile's cp.async group ----
  const std::size_t q_row0 = (std::size_t(b) * Hkv + h) * G;
  for (int c = tid; c < Tr::kRows * kRowChunks; c += Tr::kThreads) {
    const int row = c / kRowChunks, ch = c % kRowChunks;
    const bool ok = row < G;
    cp_async_16(sQ + swz<D>(row, ch), ok ? q + (q_row0 + row) * D + ch * 8 : q, ok ? 16 : 0);
  }

  // ---- this CTA's range of token positions ----
  const int seq_len = p.seq_lens[b];
  const std::size_t entry_base = (std::size_t(b) * Hkv + h) * p.max_blocks;
  int count;
  if (p.dense) count = seq_len > 0 ? min((seq_len + B - 1) >> log2B, p.max_blocks) : 0;
  else count = seq_len > 0 ? max(0, min(p.counts[std::size_t(b) * Hkv + h], p.max_blocks)) : 0;
  const int npos = count << log2B;  // host checks max_blocks * B < 2^31
  const int per_split = ((npos + p.num_splits - 1) / p.num_splits + kTileN - 1) / kTileN * kTileN;
  const int start = split * per_split;
  const int end = min(npos, start + per_split);
  const int ntiles = start < end ? (end - start + kTileN - 1) / kTileN : 0;
  const long long seq_slot = p.seq_slots != nullptr ? p.seq_slots[b] : b;

  // ---- block table: the blocks [tab_lo, tab_lo + kTabCap) of the range, resolved into shared
  // memory in one round of independent loads (block id and slot id together), so that issuing a
  // tile's cp.asyncs never waits on a dependent global load. Per block: the K/V row index of its
  // token 0 (row r holds K/V at element r * D and bias at r) and its count of valid tokens (0
  // for a negative id, a block past T, or a slot outside the cache). Refilled, rarely, when a
  // tile runs past the table (every kTabCap blocks). ----
  const long long row_step = Layout == HeadLayout::kHND ? 1 : Hkv;
  const int blk_end = (end + B - 1) >> log2B;
  int tab_lo = start >> log2B;
  auto fill_table = [&](int lo) {
    for (int j = tid; j < Tr::kTabCap; j += Tr::kThreads) {
      const int i = lo + j;
      long long row = -1;
      int valid = 0;
      if (i < blk_end) {
        const int blk = p.dense ? i : __ldg(p.block_ids + entry_base + i);
        long long slot;
        if (p.slot_ids != nullptr) slot = __ldg(p.slot_ids + entry_base + i);
        else if (Layout == HeadLayout::kHND) slot = (seq_slot * Hkv + h) * p.max_blocks + i;
        else slot = seq_slot * p.max_blocks + i;
        const long long first = static_cast<long long>(blk) << log2B;
        if (blk >= 0 && first < seq_len && slot >= 0 && slot < p.num_slots) {
          valid = static_cast<int>(min(static_cast<long long>(B), seq_len - first));
          const long long tok = slot << log2B;
          row = Layout == HeadLayout::kHND ? tok : tok * Hkv + h;
        }
      }
      sTabRow[j] = row;
      sTabValid[j] = valid;
    }
  };
  // B >= 16: the prologue's kStages - 1 tiles span at most (kStages - 1) * kTileN / 16 blocks.
  static_assert(Tr::kTabCap * 16 >= (Tr::kStages - 1) * Tr::kTileN, "the first table must cover the prologue tiles");
  if (ntiles > 0) fill_table(tab_lo);
  __syncthreads();

  // K/V row index of position `pos` (-1 when it holds no valid token: past the range, or an
  // invalid entry of the table).
  auto locate = [&](int pos) -> long long {
    if (pos >= end) return -1;
    const int j = (pos >> log2B) - tab_lo, tib = pos & (B - 1);
    if (tib >= sTabValid[j]) return -1;
    return sTabRow[j] + tib * row_step;
  };

  auto load_tile = [&](int tile, int stage) {
    const int base = start + tile * kTileN;
    unsigned char* dk = sK + stage * Tr::kKVTileBytes;
    unsigned char* dv = sV + stage * Tr::kKVTileBytes;
    const int ch = tid % kRowChunks;
#pragma unroll 4
    for (int row = tid / kRowChunks; row < kTileN; row += Tr::kThreads / kRowChunks) {
      const long long r = locate(base + row);
      const bool ok = r >= 0;
      const T* ks = ok ? kc + r * D + ch * 8 : kc;
      const T* vs = ok ? vc + r * D + ch * 8 : vc;
      cp_async_16(dk + swz<D>(row, ch), ks, ok ? 16 : 0);
      cp_async_16(dv + swz<D>(row, ch), vs, ok ? 16 : 0);
    }
    if (tid < kTileN) {
      const long long r = locate(base + tid);
      const bool ok = r >= 0;
      sMask[stage * kTileN + tid] = ok ? 0.f : -INFINITY;
      if (p.bias_cache != nullptr) {
        cp_async_4(sBias + stage * kTileN + tid, ok ? p.bias_cache + r : p.bias_cache, ok ? 4 : 0);
      } else {
        sBias[stage * kTileN + tid] = 0.f;
      }
    }
  };

  // ---- per-warp online softmax state ----
  const int mt = warp / Tr::kTW, tw = warp % Tr::kTW;
  float acc[D / 8][4];
#pragma unroll
  for (int j = 0; j < D / 8; ++j) acc[j][0] = acc[j][1] = acc[j][2] = acc[j][3] = 0.f;
  float m_run[2] = {-INFINITY, -INFINITY};  // rows lane/4 and lane/4 + 8, base-2 units
  float l_run[2] = {0.f, 0.f};              // this thread's columns only (quad-reduced at the end)
  constexpr float kLog2e = 1.4426950408889634f;

#pragma unroll
  for (int s = 0; s < kStages - 1; ++s) {
    if (s < ntiles) load_tile(s, s);
    cp_async_commit();
  }

  for (int tile = 0; tile < ntiles; ++tile) {
    cp_async_wait<kStages - 2>();
    __syncthreads();
    {
      const int next = tile + kStages - 1;
      if (next < ntiles) {
        // Uniform over the CTA: refill the table when this tile's last block is past it. Every
        // thread is past the barrier above, so none still reads the old entries.
        const int nbase = start + next * kTileN;
        if (((min(nbase + kTileN, end) - 1) >> log2B) - tab_lo >= Tr::kTabCap) {
          tab_lo = nbase >> log2B;
          fill_table(tab_lo);
          __syncthreads();
        }
        load_tile(next, next % kStages);
      }
      cp_async_commit();
    }
    const int stage = tile % kStages;
    const unsigned char* tk = sK + stage * Tr::kKVTileBytes;
    const unsigned char* tv = sV + stage * Tr::kKVTileBytes;
    const float* tb = sBias + stage * kTileN;
    const float* tm = sMask + stage * kTileN;

#pragma unroll
    for (int c = 0; c < Tr::kChunksPerWarp; ++c) {
      const int tok0 = (tw * Tr::kChunksPerWarp + c) * 16;
      // S[16 rows][16 tokens] = Q K^T
      float s[2][4] = {{0.f, 0.f, 0.f, 0.f}, {0.f, 0.f, 0.f, 0.f}};
#pragma unroll
      for (int kk = 0; kk < D / 16; ++kk) {
        std::uint32_t a[4], bk[4];
        ldmatrix_x4(a, sQ + swz<D>(mt * 16 + (lane & 7) + 8 * ((lane >> 3) & 1), kk * 2 + (lane >> 4)));
        ldmatrix_x4(bk, tk + swz<D>(tok0 + (lane & 7) + 8 * (lane >> 4), kk * 2 + ((lane >> 3) & 1)));
        mma_16816<T>(s[0], a, bk[0], bk[1]);
        mma_16816<T>(s[1], a, bk[2], bk[3]);
      }
      // logits in base-2 units: (q.k / sqrt(D) + bias) * log2(e); invalid tokens -inf
      float mx[2] = {-INFINITY, -INFINITY};
#pragma unroll
      for (int nt = 0; nt < 2; ++nt) {
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          const int col = tok0 + nt * 8 + 2 * (lane & 3) + (e & 1);
          const float add = (tb[col] + tm[col]) * kLog2e;
          s[nt][e] = fmaf(s[nt][e], p.scale_log2, add);
          mx[e >> 1] = fmaxf(mx[e >> 1], s[nt][e]);
        }
      }
      float alpha[2];
#pragma unroll
      for (int r = 0; r < 2; ++r) {
        mx[r] = fmaxf(mx[r], __shfl_xor_sync(0xffffffffu, mx[r], 1));
        mx[r] = fmaxf(mx[r], __shfl_xor_sync(0xffffffffu, mx[r], 2));
        const float m_new = fmaxf(m_run[r], mx[r]);
        // All -inf so far: subtract 0 instead, so exp2(-inf - -inf) never makes a NaN.
        const float m_use = m_new == -INFINITY ? 0.f : m_new;
        alpha[r] = fast_exp2(m_run[r] - m_use);
        m_run[r] = m_new;
        mx[r] = m_use;
      }
      float rs[2] = {0.f, 0.f};
#pragma unroll
      for (int nt = 0; nt < 2; ++nt) {
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          s[nt][e] = fast_exp2(s[nt][e] - mx[e >> 1]);
          rs[e >> 1] += s[nt][e];
        }
      }
      l_run[0] = l_run[0] * alpha[0] + rs[0];
      l_run[1] = l_run[1] * alpha[1] + rs[1];
#pragma unroll
      for (int j = 0; j < D / 8; ++j) {
        acc[j][0] *= alpha[0];
        acc[j][1] *= alpha[0];
        acc[j][2] *= alpha[1];
        acc[j][3] *= alpha[1];
      }
      // P as the A operand: the C layout of two n8 tiles is the A layout of one k16 tile.
      std::uint32_t pa[4];
      pa[0] = pack2<T>(s[0][0], s[0][1]);
      pa[1] = pack2<T>(s[0][2], s[0][3]);
      pa[2] = pack2<T>(s[1][0], s[1][1]);
      pa[3] = pack2<T>(s[1][2], s[1][3]);
#pragma unroll
      for (int n2 = 0; n2 < D / 16; ++n2) {
        std::uint32_t bv[4];
        ldmatrix_x4_trans(bv, tv + swz<D>(tok0 + (lane & 7) + 8 * ((lane >> 3) & 1), n2 * 2 + (lane >> 4)));
        mma_16816<T>(acc[2 * n2], pa, bv[0], bv[1]);
        mma_16816<T>(acc[2 * n2 + 1], pa, bv[2], bv[3]);
      }
    }
  }
  cp_async_wait<0>();
  __syncthreads();  // every warp is done with the ring: reuse it for the combine

  // ---- combine the warps of each 16-row tile ----
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    l_run[r] += __shfl_xor_sync(0xffffffffu, l_run[r], 1);
    l_run[r] += __shfl_xor_sync(0xffffffffu, l_run[r], 2);
  }
  float* cbuf = reinterpret_cast<float*>(sK);  // [warp][16][D] then m[warp][16], l[warp][16]
  float* cm = cbuf + Tr::kWarps * 16 * D;
  float* cl = cm + Tr::kWarps * 16;
  {
    const int r0 = lane >> 2, col = 2 * (lane & 3);
    float* wbuf = cbuf + warp * 16 * D;
#pragma unroll
    for (int j = 0; j < D / 8; ++j) {
      *reinterpret_cast<float2*>(wbuf + r0 * D + j * 8 + col) = make_float2(acc[j][0], acc[j][1]);
      *reinterpret_cast<float2*>(wbuf + (r0 + 8) * D + j * 8 + col) = make_float2(acc[j][2], acc[j][3]);
    }
    if ((lane & 3) == 0) {
      cm[warp * 16 + r0] = m_run[0];
      cm[warp * 16 + r0 + 8] = m_run[1];
      cl[warp * 16 + r0] = l_run[0];
      cl[warp * 16 + r0 + 8] = l_run[1];
    }
  }
  __syncthreads();

  const int Hq = Hkv * G;
  const bool direct = p.num_splits == 1;
  for (int idx = tid; idx < Tr::kRows * (D / 4); idx += Tr::kThreads) {
    const int row = idx / (D / 4), d = (idx % (D / 4)) * 4;
    if (row >= G) continue;
    const int rmt = row >> 4, rr = row & 15;
    float M = -INFINITY;
#pragma unroll
    for (int t = 0; t < Tr::kTW; ++t) M = fmaxf(M, cm[(rmt * Tr::kTW + t) * 16 + rr]);
    float L = 0.f, o0 = 0.f, o1 = 0.f, o2 = 0.f, o3 = 0.f;
    if (M != -INFINITY) {
#pragma unroll
      for (int t = 0; t < Tr::kTW; ++t) {
        const int w = rmt * Tr::kTW + t;
        const float wt = fast_exp2(cm[w * 16 + rr] - M);  // -inf - M = -inf -> 0
        L += wt * cl[w * 16 + rr];
        const float4 a = *reinterpret_cast<const float4*>(cbuf + (w * 16 + rr) * D + d);
        o0 += wt * a.x;
        o1 += wt * a.y;
        o2 += wt * a.z;
        o3 += wt * a.w;
      }
    }
    const float inv = L > 0.f ? 1.f / L : 0.f;
    const float lse = L > 0.f ? (M + log2f(L)) * 0.6931471805599453f : -INFINITY;
    const std::size_t out_row = std::size_t(b) * Hq + std::size_t(h) * G + row;
    if (direct) {
      T* o = static_cast<T*>(p.o) + out_row * D + d;
      std::uint32_t lo = pack2<T>(o0 * inv, o1 * inv), hi = pack2<T>(o2 * inv, o3 * inv);
      *reinterpret_cast<uint2*>(o) = make_uint2(lo, hi);
      if (d == 0) p.lse[out_row] = lse;
    } else {
      const std::size_t prow = std::size_t(split) * p.batch * Hq + out_row;
      *reinterpret_cast<float4*>(p.part_o + prow * D + d) = make_float4(o0 * inv, o1 * inv, o2 * inv, o3 * inv);
      if (d == 0) p.part_lse[prow] = lse;
    }
  }
}

/// Merges the num_splits partials of each row: grid = rows, block = D / 4 threads.
template <class T, int D>
__global__ void merge_splits_kernel(const float* __restrict__ part_o,
                                                          const float* __restrict__ part_lse, int num_splits,
                                                          int rows, T* __restrict__ o, float* __restrict__ lse) {
  const int row = blockIdx.x;
  const int d = threadIdx.x * 4;
  grid_dependency_wait();  // launched as a programmatic dependent: the partials are complete after this
  float M = -INFINITY;
  for (int s = 0; s < num_splits; ++s) M = fmaxf(M, part_lse[std::size_t(s) * rows + row]);
  float W = 0.f, o0 = 0.f, o1 = 0.f, o2 = 0.f, o3 = 0.f;
  if (M != -INFINITY) {
    for (int s = 0; s < num_splits; ++s) {
      const float w = __expf(part_lse[std::size_t(s) * rows + row] - M);
      const float4 a = *reinterpret_cast<const float4*>(part_o + (std::size_t(s) * rows + row) * D + d);
      W += w;
      o0 += w * a.x;
      o1 += w * a.y;
      o2 += w * a.z;
      o3 += w * a.w;
    }
  }
  const float inv = W > 0.f ? 1.f / W : 0.f;
  std::uint32_t lo = pack2<T>(o0 * inv, o1 * inv), hi = pack2<T>(o2 * inv, o3 * inv);
  *reinterpret_cast<uint2*>(o + std::size_t(row) * D + d) = make_uint2(lo, hi);
  if (threadIdx.x == 0) lse[row] = W > 0.f ? M + __logf(W) : -INFINITY;
}

/// Public two-way merge (o_out/lse_out may alias a): one group of D/8 lanes per row, each lane
/// 8 elements. The lanes of a row read both lse values before any of them writes lse_out.
template <class T, int D>
__global__ void __launch_bounds__(256) merge_pair_kernel(int rows, const T* o_a, const float* lse_a, const T* o_b,
                                                         const float* lse_b, T* o_out, float* lse_out) {
  constexpr int kLanes = D / 8;
  const long long gid = static_cast<long long>(blockIdx.x) * blockDim.x + threadIdx.x;
  const long long row = gid / kLanes;
  const int d = static_cast<int>(gid % kLanes) * 8;
  const bool active = row < rows;
  float la = -INFINITY, lb = -INFINITY;
  if (active) {
    la = lse_a[row];
    lb = lse_b[row];
  }
  __syncwarp();
  if (!active) return;
  const float m = fmaxf(la, lb);
  float wa = 0.f, wb = 0.f, l = -INFINITY;
  if (m != -INFINITY) {
    wa = expf(la - m);
    wb = expf(lb - m);
    const float sum = wa + wb;
    l = m + logf(sum);
    wa /= sum;
    wb /= sum;
  }
  const uint4 va = *reinterpret_cast<const uint4*>(o_a + row * D + d);
  const uint4 vb = *reinterpret_cast<const uint4*>(o_b + row * D + d);
  const T* ea = reinterpret_cast<const T*>(&va);
  const T* eb = reinterpret_cast<const T*>(&vb);
  std::uint32_t out[4];
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    out[i] = pack2<T>(wa * to_f32(ea[2 * i]) + wb * to_f32(eb[2 * i]),
                      wa * to_f32(ea[2 * i + 1]) + wb * to_f32(eb[2 * i + 1]));
  }
  *reinterpret_cast<uint4*>(o_out + row * D + d) = make_uint4(out[0], out[1], out[2], out[3]);
  if (d == 0) lse_out[row] = l;
}

}  // namespace detail
NOSA_NAMESPACE_END
