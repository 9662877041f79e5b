// nosa::detail: pooling to blocks and the two-stage top-k of the device selector.
//
// pool_kernel  grid (splits, Hkv, batch), global path: combines the split softmax statistics,
//              forms S[j] = sum_g exp(logit_gj - M_g) / den_g (window_score, base 2) for the
//              windows of its block range, max-pools S and bc to blocks (Pq, Pe), forces
//              sink/local/current. window_score, pool_pq and pool_block are shared with the cluster path.
// select_kernel grid (Hkv, batch): top-k by radix select on order-preserving 32-bit keys
//              (up to 4 passes of 8 bits over a shared histogram, stopping once a bin holds
//              exactly the keys still needed) to find where the k-th score lies, then one
//              index-ordered pass with cub::BlockScan that takes every score above it and the
//              lowest-index ties, which is exactly "score desc, index asc". Writing the chosen
//              blocks at their scan position gives the ascending output for free.
#pragma once

#include <nosa/config.h>
#include <nosa/detail/selection_math.h>
#include <nosa/detail/selector_score.cuh>
#include <nosa/params.h>

#include <cub/block/block_scan.cuh>
#include <cuda_runtime.h>

NOSA_NAMESPACE_BEGIN
namespace detail {

constexpr int kPoolThreads = 256;
constexpr int kSelectThreads = 512;
constexpr int kTopItems = 4;  ///< take_top's elements per thread per scan (2048 blocks: one scan)

/// S[j] of DESIGN.md section 2, sum over g of exp(l_gj - M_g) / den_g, from window j's G base-2
/// logits (logit2(g) = l_gj * log2 e, selector_score.cuh) and off[g] = M2_g + log2(den_g) of the
/// combined base-2 statistics: one exp2 per term, summed over g ascending as the host does. The
/// host divides exp(l - M) by den; this rounds differently (~1e-6 relative), which only matters
/// at near-ties. Both device paths (global pooling, cluster) use it.
template <int G, class Logit2>
NOSA_DEVICE NOSA_FORCEINLINE float window_score(Logit2 logit2, const float* off) {
  float S = 0.f;
#pragma unroll
  for (int g = 0; g < G; ++g) S = __fadd_rn(S, exp2f(logit2(g) - off[g]));
  return S;
}

/// off = M2 + log2(den) of combined base-2 statistics (max, sum of 2^(x - max)); den >= 1
/// whenever a key exists.
NOSA_DEVICE NOSA_FORCEINLINE float window_offset(float2 stats) { return stats.x + log2f(stats.y); }

/// Pq[m] of block m: +inf for a forced block, else the max of S (window_s(j)) over the windows
/// overlapping m (-inf when none does).
template <class P, class WindowS>
NOSA_DEVICE NOSA_FORCEINLINE float pool_pq(const P& p, int m, int cur, int nc, WindowS window_s) {
  if (is_forced_block(m, cur, p.sink, p.local)) return INFINITY;
  const WindowRange r = windows_overlapping_block(m, p.block_size, p.st.window, p.st.stride, nc);
  float v = -INFINITY;
  for (int j = r.first; j <= r.last; ++j) v = fmaxf(v, window_s(j));
  return v;
}

/// Pq[m] and (NeedPe) Pe[m] of block m, from window_s(j) = S of window j and window_cb(j) = its
/// compressed agnostic score (Pe is the same pooling of those), written to pq[m] / pe[m].
template <bool NeedPe, class P, class WindowS, class WindowCb>
NOSA_DEVICE NOSA_FORCEINLINE void pool_block(const P& p, int m, int cur, int nc, WindowS window_s, WindowCb window_cb,
                                             float* pq, float* pe) {
  pq[m] = pool_pq(p, m, cur, nc, window_s);
  if constexpr (NeedPe) pe[m] = pool_pq(p, m, cur, nc, window_cb);
}

template <class T, class KS, int G, bool NeedPe>
__global__ void __launch_bounds__(kPoolThreads) pool_kernel(const __grid_constant__ SelectParams<T, KS> p) {
  extern __shared__ float pool_smem[];
  float* sOff = pool_smem;       // [G] window_offset of query head g
  float* sS = pool_smem + G;     // [pool_window_cap]
  float* sCb = sS + p.pool_window_cap;  // [pool_window_cap] (NeedPe) the windows' compressed scores
  const int split = blockIdx.x, h = blockIdx.y, i = blockIdx.z;
  const int H = p.st.num_kv_heads;
  int slot, len;
  if (!entry_length(p, i, &slot, &len)) return;
  const int B = p.block_size, c = p.st.window, s = p.st.stride;
  const int nc = num_compressed(len, c, s);
  const int nb = num_blocks(len, B);
  const int bps = (nb + p.pool_splits - 1) / p.pool_splits;
  const int m0 = split * bps;
  const int m1 = min(nb, m0 + bps);
  if (m0 >= m1) return;
  const size_t ih = static_cast<size_t>(i) * H + h;
  {
    // combine the split statistics with every thread (a serial loop over splits is all latency):
    // thread t takes query head t % G and splits t / G, t / G + lanes, ...
    __shared__ float2 red[kPoolThreads];
    constexpr int lanes = kPoolThreads / G;
    const int t = threadIdx.x, g = t % G, k0 = t / G;
    float2 acc = make_float2(-INFINITY, 0.f);
    if (k0 < lanes) {
      const float2* st = p.stats + ih * p.splits * G + g;
      for (int sp = k0; sp < p.splits; sp += lanes) acc = softmax_combine(acc, st[static_cast<size_t>(sp) * G]);
    }
    red[t] = acc;
    __syncthreads();
    if (t < G) {
      float2 a = red[t];
      for (int k = 1; k < lanes; ++k) a = softmax_combine(a, red[k * G + t]);
      sOff[t] = window_offset(a);
    }
    __syncthreads();
  }
  const WindowRange lo = windows_overlapping_block(m0, B, c, s, nc);
  const WindowRange hi = windows_overlapping_block(m1 - 1, B, c, s, nc);
  const int jw0 = lo.first, jw1 = hi.last;
  const float* logits = p.logits + ih * G * p.ld;
  const float* cb = p.st.cbias + (static_cast<size_t>(slot) * H + h) * p.st.max_nc;
  // the windows' compressed scores are loaded beside their logits (one latency for both), not
  // in the pooling loop, where each block's dependent loads would wait one after the other
  for (int j = jw0 + threadIdx.x; j <= jw1; j += blockDim.x) {
    sS[j - jw0] = window_score<G>([&](int g) { return logits[static_cast<size_t>(g) * p.ld + j]; }, sOff);
    if constexpr (NeedPe) sCb[j - jw0] = cb[j];
  }
  __syncthreads();
  for (int m = m0 + threadIdx.x; m < m1; m += blockDim.x)
    pool_block<NeedPe>(p, m, nb - 1, nc, [&](int j) { return sS[j - jw0]; }, [&](int j) { return sCb[j - jw0]; },
                       p.pq + ih * p.max_nb, p.pe + ih * p.max_nb);
}

/// Order-preserving map float -> uint32 (larger float -> larger key); -0 is treated as +0, as
/// the host's comparisons do.
NOSA_DEVICE NOSA_FORCEINLINE unsigned order_key(float x) {
  const unsigned u = __float_as_uint(x + 0.0f);
  return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}

/// Where the k-th largest key of a radix select lies: the keys whose top bits (mask) are above
/// prefix are all in the top k, and so are the first `need` keys (index order) whose top bits
/// equal it. mask is all ones unless every key of the prefix's bin is needed, where the select
/// stops early (then need = that bin's count and any mask gives the same set).
struct TopThreshold {
  unsigned prefix;
  unsigned mask;
  int need;
};

struct SelectShared {
  unsigned hist[2][256];  // double-buffered: a pass counts into one while the other is cleared
  unsigned prefix;
  int k_rem;
  int done;
};

/// The top-k threshold of x[0..n) (1 <= k <= n) by radix select on order keys, 8 bits per pass,
/// most significant first; stops after the pass whose bin holds exactly the keys still needed
/// (always when k == n: no pass). Block-wide (blockDim.x a multiple of 32); every thread gets the
/// result. Two barriers per pass: the pass counts into hist[buf] while warp 0 clears the other
/// buffer for the next one. buf (the same in every thread) names the buffer that is zero: on
/// entry, and updated for the next call. -DNOSA_SELECT_PLAIN_HISTOGRAM: one shared atomic per
/// element (A/B).
NOSA_DEVICE inline TopThreshold radix_select(const float* x, int n, int k, SelectShared& sh, int& buf) {
  TopThreshold r{0u, 0u, k};
  if (k >= n) return r;  // everything: all keys "equal" the empty prefix, all needed
  for (int pass = 0; pass < 4; ++pass) {
    const int shift = 24 - 8 * pass;
    unsigned* hist = sh.hist[buf];
#if defined(NOSA_SELECT_PLAIN_HISTOGRAM)
    for (int m = threadIdx.x; m < n; m += blockDim.x) {
      const unsigned key = order_key(x[m]);
      if ((key & r.mask) == r.prefix) atomicAdd(&hist[(key >> shift) & 255u], 1u);
    }
#else
    // Warp-aggregated: scores of a head share a few exponent bytes (and forced blocks are all
    // +inf), so many lanes hit the same bin; one atomic per distinct bin per warp instead. The
    // trip count is uniform over the block (blockDim.x is a multiple of 32), so whole warps reach
    // __match_any_sync. Integer counts: the histogram is the same as with one atomic per element.
    for (int base = 0; base < n; base += blockDim.x) {
      const int m = base + static_cast<int>(threadIdx.x);
      unsigned bin = 256u;  // not counted
      if (m < n) {
        const unsigned key = order_key(x[m]);
        if ((key & r.mask) == r.prefix) bin = (key >> shift) & 255u;
      }
      const unsigned peers = __match_any_sync(0xffffffffu, bin);
      if (bin < 256u && (threadIdx.x & 31u) == static_cast<unsigned>(__ffs(peers) - 1))
        atomicAdd(&hist[bin], static_cast<unsigned>(__popc(peers)));
    }
#endif
    __syncthreads();  // (1) histogram complete; everyone has read the previous pass's result
    if (threadIdx.x < 32) {
      // lane l owns bins 255-8l down to 248-8l (descending), so lane order is descending keys
      const int lane = threadIdx.x;
      unsigned cnt[8], total = 0;
#pragma unroll
      for (int e = 0; e < 8; ++e) {
        cnt[e] = hist[255 - 8 * lane - e];
        total += cnt[e];
      }
      unsigned* next = sh.hist[buf ^ 1];  // the next pass (or call) counts there: zero it now
#pragma unroll
      for (int e = 0; e < 8; ++e) next[8 * lane + e] = 0u;
      unsigned incl = total;
#pragma unroll
      for (int off = 1; off < 32; off <<= 1) {
        const unsigned o = __shfl_up_sync(0xffffffffu, incl, off);
        if (lane >= off) incl += o;
      }
      const unsigned excl = incl - total;
      const unsigned want = static_cast<unsigned>(r.need);
      if (excl < want && want <= incl) {
        unsigned before = excl;
#pragma unroll
        for (int e = 0; e < 8; ++e) {
          if (before + cnt[e] >= want) {
            sh.prefix = r.prefix | (static_cast<unsigned>(255 - 8 * lane - e) << shift);
            sh.k_rem = static_cast<int>(want - before);
            sh.done = before + cnt[e] == want;  // the whole bin is needed
            break;
          }
          before += cnt[e];
        }
      }
    }
    __syncthreads();  // (2) result and the cleared next histogram visible
    r.prefix = sh.prefix;
    r.need = sh.k_rem;
    r.mask |= 255u << shift;
    buf ^= 1;
    if (sh.done) break;  // block-uniform
  }
  return r;
}

/// One index-ordered pass over x[0..n): element m is in the top k iff its masked key is above the
/// threshold's prefix, or equal to it and among the first `need` such elements. Calls
/// on_selected(m, rank_in_index_order). Blocked arrangement, IPT consecutive elements per thread
/// and one cub::BlockScan per IPT * blockDim.x elements, scanning (above, equal) counts packed in
/// one 32-bit word (16 bits each: a chunk has at most 65535 elements). The rank of a selected
/// element is (above before it) + min(equal before it, need).
template <int IPT, class Scan, class F>
NOSA_DEVICE inline void take_top(const float* x, int n, TopThreshold th, typename Scan::TempStorage& tmp,
                                 F on_selected) {
  static_assert(IPT * kSelectThreads <= 65535, "take_top: packed 16-bit counts");
  int above_carry = 0, equal_carry = 0;
  for (int base = 0; base < n; base += IPT * static_cast<int>(blockDim.x)) {
    const int m0 = base + IPT * static_cast<int>(threadIdx.x);
    unsigned code[IPT];  // 0: not selected on key, 1: above, 2: equal
    unsigned mine = 0;
#pragma unroll
    for (int e = 0; e < IPT; ++e) {
      const int m = m0 + e;
      const unsigned key = m < n ? order_key(x[m]) & th.mask : 0u;
      code[e] = m >= n ? 0u : key > th.prefix ? 1u : key == th.prefix ? 2u : 0u;
      mine += code[e] == 1u ? 1u : code[e] == 2u ? 0x10000u : 0u;
    }
    unsigned before, chunk_total;
    Scan(tmp).ExclusiveSum(mine, before, chunk_total);
    __syncthreads();  // tmp is reused by the next chunk
    int above = above_carry + static_cast<int>(before & 0xffffu);
    int equal = equal_carry + static_cast<int>(before >> 16);
#pragma unroll
    for (int e = 0; e < IPT; ++e) {
      if (code[e] == 1u || (code[e] == 2u && equal < th.need)) on_selected(m0 + e, above + min(equal, th.need));
      above += code[e] == 1u;
      equal += code[e] == 2u;
    }
    above_carry += static_cast<int>(chunk_total & 0xffffu);
    equal_carry += static_cast<int>(chunk_total >> 16);
  }
}

template <class T, class KS, SelectorKind Kind>
__global__ void __launch_bounds__(kSelectThreads) select_kernel(const __grid_constant__ SelectParams<T, KS> p) {
  using Scan = cub::BlockScan<unsigned, kSelectThreads>;
  __shared__ typename Scan::TempStorage scan_tmp;
  __shared__ SelectShared sh;
  const int h = blockIdx.x, i = blockIdx.y;
  const int H = p.st.num_kv_heads;
  const size_t ih = static_cast<size_t>(i) * H + h;
  int* out = p.block_ids + ih * p.block_stride;
  int slot, len;
  if (!entry_length(p, i, &slot, &len)) {
    if (threadIdx.x == 0) {
      p.counts[ih] = 0;
      const int s0 = p.seq_slots[i], t0 = p.seq_lens[i];
      if (s0 < 0 || s0 >= p.st.max_sequences) atomicOr(p.st.error, kSelErrSlot);
      else if (t0 != 0) atomicOr(p.st.error, kSelErrLength);  // T == 0 is an idle entry
    }
    return;
  }
  const int nb = num_blocks(len, p.block_size);
  if constexpr (Kind == SelectorKind::kDense) {
    for (int m = threadIdx.x; m < nb; m += blockDim.x) out[m] = m;
    if (threadIdx.x == 0) p.counts[ih] = nb;
  } else {
    float* pq = p.pq + ih * p.max_nb;
    float* pe = p.pe + ih * p.max_nb;
    int buf = 0;  // radix_select's zero histogram
    for (int b = threadIdx.x; b < 256; b += blockDim.x) sh.hist[0][b] = 0u;
    if (p.select_smem) {
      // up to 8 radix passes + 2 scans read the scores: keep them on chip when they fit
      extern __shared__ float select_smem[];
      float* sq = select_smem;
      float* se = select_smem + p.max_nb;
      for (int m = threadIdx.x; m < nb; m += blockDim.x) {
        sq[m] = pq[m];
        if constexpr (Kind == SelectorKind::kNosa) se[m] = pe[m];
      }
      pq = sq;
      pe = se;
    }
    __syncthreads();
    if constexpr (Kind == SelectorKind::kNosa) {
      const int kq = min(p.query_aware, nb);
      if (kq > 0) {
        const TopThreshold th = radix_select(pq, nb, kq, sh, buf);
        take_top<kTopItems, Scan>(pq, nb, th, scan_tmp, [&](int m, int) { pe[m] = INFINITY; });
        __syncthreads();  // the +inf marks are read by other threads below
      }
    }
    const float* rank_by = Kind == SelectorKind::kNosa ? pe : pq;
    const int kb = min(p.budget, nb);
    const TopThreshold th = radix_select(rank_by, nb, kb, sh, buf);
    take_top<kTopItems, Scan>(rank_by, nb, th, scan_tmp, [&](int m, int pos) { out[pos] = m; });
    if (threadIdx.x == 0) p.counts[ih] = kb;
  }
}

}  // namespace detail
NOSA_NAMESPACE_END
