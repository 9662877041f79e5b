// nosa::detail: the kernels of the KV residency manager (diff, gather, append, bookkeeping).
// The sequential model of the same state machine is nosa/host/residency_model.h; the choices
// (needed order, victim order, stamps) are identical so tests compare them one to one.
#pragma once

#include <nosa/config.h>
#include <nosa/host_pool.h>
#include <nosa/types.h>

#include <cuda_runtime.h>

#include <cstdint>

NOSA_NAMESPACE_BEGIN
namespace detail {

/// Device-side error bits (ResidencyCounters::errors). A kernel that sees bad device-side input
/// (only known on the device: lengths, block ids) leaves that (sequence, head) unchanged.
enum ResidencyError : unsigned {
  kResErrSequence = 1u,      ///< seq_slots[b] out of range
  kResErrLength = 2u,        ///< seq_lens[b] < 1 or above max_blocks_per_sequence * B
  kResErrBlockId = 4u,       ///< a block id outside [0, ceil(T/B)) or counts[] out of range
  kResErrPageMissing = 8u,   ///< a needed block has no host page (not reserved)
  kResErrOverflow = 16u,     ///< more needed blocks than slots_per_head
};

struct ResidencyDeviceCounters {
  int items;                        ///< transfer-list length of the current make_resident
  unsigned errors;                  ///< ResidencyError bits, sticky until read_counters
  unsigned long long moved;         ///< blocks (of one head) transferred, all time
  unsigned long long needed;        ///< blocks needed by make_resident, all time
  unsigned long long append_loads;  ///< tail blocks reloaded by append, all time
};

/// Slot-state of one layer, all groups: group g = seq * H + head owns slots [g*S, (g+1)*S).
struct SlotState {
  int* block;  ///< [num_slots] block id or -1
  int* stamp;  ///< [num_slots]
  int* clock;  ///< [num_groups]
};

NOSA_DEVICE NOSA_FORCEINLINE unsigned long long victim_key(int block, int stamp, int s) {
  const unsigned long long occ = block >= 0 ? 1ull : 0ull;
  const unsigned long long st = block >= 0 ? static_cast<unsigned long long>(static_cast<unsigned>(stamp)) : 0ull;
  return (occ << 63) | (st << 24) | static_cast<unsigned long long>(s);
}

// ---------------------------------------------------------------------------------------------
// TMA bulk copies (sm_90+): global -> shared with an mbarrier that counts the bytes, and shared
// -> global in a bulk group. Addresses of shared memory are 32-bit shared-window addresses.
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
NOSA_DEVICE NOSA_FORCEINLINE std::uint32_t smem_addr(const void* p) {
  return static_cast<std::uint32_t>(__cvta_generic_to_shared(p));
}
NOSA_DEVICE NOSA_FORCEINLINE void mbar_init(std::uint32_t bar, unsigned count) {
  asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;" ::"r"(bar), "r"(count) : "memory");
}
/// Makes barrier initializations visible to the async proxy (the bulk copies complete on them).
NOSA_DEVICE NOSA_FORCEINLINE void mbar_init_fence() { asm volatile("fence.mbarrier_init.release.cluster;" ::: "memory"); }
NOSA_DEVICE NOSA_FORCEINLINE void mbar_arrive_expect_tx(std::uint32_t bar, unsigned bytes) {
  asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;" ::"r"(bar), "r"(bytes) : "memory");
}
NOSA_DEVICE NOSA_FORCEINLINE void mbar_wait(std::uint32_t bar, unsigned parity) {
  unsigned done = 0;
  do {
    asm volatile(
        "{\n .reg .pred p;\n mbarrier.try_wait.parity.shared::cta.b64 p, [%1], %2;\n selp.u32 %0, 1, 0, p;\n}"
        : "=r"(done)
        : "r"(bar), "r"(parity)
        : "memory");
  } while (!done);
}
NOSA_DEVICE NOSA_FORCEINLINE void bulk_g2s(std::uint32_t dst, const void* src, unsigned bytes, std::uint32_t bar) {
  asm volatile("cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1], %2, [%3];" ::"r"(dst), "l"(src),
               "r"(bytes), "r"(bar)
               : "memory");
}
NOSA_DEVICE NOSA_FORCEINLINE void bulk_s2g(void* dst, std::uint32_t src, unsigned bytes) {
  asm volatile("cp.async.bulk.global.shared::cta.bulk_group [%0], [%1], %2;" ::"l"(dst), "r"(src), "r"(bytes) : "memory");
}
NOSA_DEVICE NOSA_FORCEINLINE void bulk_commit() { asm volatile("cp.async.bulk.commit_group;" ::: "memory"); }
/// Waits until every committed bulk store has read its shared memory (the stage may be refilled).
NOSA_DEVICE NOSA_FORCEINLINE void bulk_wait_read_all() { asm volatile("cp.async.bulk.wait_group.read 0;" ::: "memory"); }
/// Waits until every committed bulk store has completed its writes.
NOSA_DEVICE NOSA_FORCEINLINE void bulk_wait_all() { asm volatile("cp.async.bulk.wait_group 0;" ::: "memory"); }
NOSA_DEVICE NOSA_FORCEINLINE void fence_proxy_async_smem() { asm volatile("fence.proxy.async.shared::cta;" ::: "memory"); }
#endif

/// Stages of the bulk copy loop: a K or V matrix of one block-head (B x D) in pieces of at most
/// 16 KiB, kStages of them in flight per CTA (64 KiB of shared memory for B*D*sizeof(T) >= 16 KiB).
template <class T, int B, int D>
struct BulkStages {
  static constexpr std::size_t kMatBytes = static_cast<std::size_t>(B) * D * sizeof(T);
  static constexpr std::size_t kStageBytes = kMatBytes < 16384 ? kMatBytes : 16384;
  static constexpr int kStages = 4;
  static constexpr int kPartsPerMat = static_cast<int>(kMatBytes / kStageBytes);
  static constexpr int kRowBytes = D * static_cast<int>(sizeof(T));
  static constexpr int kRowsPerStage = static_cast<int>(kStageBytes) / kRowBytes;
  static_assert(kMatBytes % kStageBytes == 0 && kStageBytes % kRowBytes == 0 && kRowBytes % 16 == 0,
                "bulk copy pieces must be whole rows of 16-byte multiples");
};

// ---------------------------------------------------------------------------------------------
// Diff: one CTA per (batch entry, KV head). It finds the needed blocks already in a slot, gives the
// missing ones the victim slots, and then either (kCopy) copies its own missing blocks from the
// pool into their slots (ZeroCopyGather, DeviceResident: no transfer list, no second launch, the
// copy of one group starts as soon as its own diff is done) or (!kCopy) appends them to the
// global transfer list (CopyEngine: the host needs the list).
struct DiffParams {
  const int* seq_slots;  // [batch]
  const int* seq_lens;   // [batch]
  const int* block_ids;  // [batch][H][max_blocks]
  const int* counts;     // [batch][H]
  int* slot_ids;         // [batch][H][max_blocks]
  int max_blocks;
  int num_heads;
  int slots_per_head;
  int block_size;
  int max_sequences;
  int max_blocks_per_sequence;
  SlotState state;
  const int* page_table;  // this layer's [max_sequences][max_blocks_per_sequence]
  int4* items;            // !kCopy: {global dst slot, page, head, 0}
  ResidencyDeviceCounters* counters;
  // kCopy: the pool (pinned host through its mapped alias, or device memory) and the slot cache
  const char* pool;
  std::size_t page_stride;
  void* k_slots;      // [num_slots][B][D]
  void* v_slots;      // [num_slots][B][D]
  float* bias_slots;  // [num_slots][B]
};

/// One 16-byte load from the pool with the 256-byte L2 fetch-size hint (sm_80+): on an H100 it moved
/// scattered blocks from pinned host memory 2-4 points closer to the cudaMemcpy rate than a plain
/// load at 1-6 MiB per call (bench_residency Probe/sm_l2_256B vs Probe/sm, docs/notes/residency.md).
NOSA_DEVICE NOSA_FORCEINLINE uint4 load_pool16(const char* p) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  uint4 v;
  asm volatile("ld.global.L2::256B.v4.u32 {%0, %1, %2, %3}, [%4];" : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w) : "l"(p));
  return v;
#else
  return *reinterpret_cast<const uint4*>(p);
#endif
}

/// Threads of one diff CTA: the copy of a group's missing blocks runs on them, so more threads
/// means more 16-byte loads in flight per CTA (the grid is batch * Hkv CTAs, however small).
constexpr int kDiffThreads = 512;
constexpr int kDiffWarps = kDiffThreads / 32;
/// Largest slots_per_head and max_blocks the diff kernel handles (Residency validates both): each
/// thread keeps its slots and needed entries in registers.
constexpr int kDiffMaxSlots = 2048;
constexpr int kDiffMaxBlocks = 1024;
constexpr int kDiffSlotIters = kDiffMaxSlots / kDiffThreads;
constexpr int kDiffNeedIters = (kDiffMaxBlocks + 1 + kDiffThreads - 1) / kDiffThreads;
/// Marks a kept slot inside its victim key (bit 62 is free: occupied 63, stamp 24..55, slot 0..23).
/// Kept slots are occupied, so their keys sort after every victim's.
constexpr unsigned long long kKeptBit = 1ull << 62;

/// Byte offsets of the diff kernel's dynamic shared memory (host: launch size; device: carving).
/// R = min(S, max_blocks + 1) bounds the number of transfers (ranks).
struct DiffSmemLayout {
  std::size_t key, res, vic, need, slot_of, cpage, cblk, mcount;  // per-phase arrays
  std::size_t bars, stage;                                         // bulk copy only
  std::size_t total;
};
NOSA_HOST_DEVICE inline DiffSmemLayout diff_smem_layout(int slots_per_head, int max_blocks, int stages, std::size_t stage_bytes) {
  const std::size_t s = static_cast<std::size_t>(slots_per_head), m1 = static_cast<std::size_t>(max_blocks) + 1;
  const std::size_t r = s < m1 ? s : m1, chunks = (m1 + 31) / 32;
  DiffSmemLayout l{};
  l.key = 0;                  // u64 [S] victim key | kKeptBit
  l.res = l.key + 8 * s;      // int [S] block per slot
  l.vic = l.res + 4 * s;      // int [R] victim slot of rank r
  l.need = l.vic + 4 * r;     // int [M1] needed block (-2: bad id)
  l.slot_of = l.need + 4 * m1;  // int [M1] slot of a hit, -1 otherwise
  l.cpage = l.slot_of + 4 * m1;  // int [R] page of the transfer of rank r
  l.cblk = l.cpage + 4 * r;      // int [R] block of rank r, -1: no page (not copied)
  l.mcount = l.cblk + 4 * r;     // int [chunks] missing entries per 32 needed entries
  const std::size_t end = l.mcount + 4 * chunks;
  if (stages > 0) {
    l.bars = (end + 7) / 8 * 8;
    l.stage = (l.bars + 8 * static_cast<std::size_t>(stages) + 127) / 128 * 128;
    l.total = l.stage + static_cast<std::size_t>(stages) * stage_bytes + 128;  // + alignment slack of the base
  } else {
    l.bars = l.stage = end;
    l.total = end;
  }
  return l;
}

/// Dynamic shared memory of one diff launch.
template <class T, int B, int D, bool kBulk>
inline std::size_t diff_smem_bytes(int slots_per_head, int max_blocks) {
  using St = BulkStages<T, B, D>;
  return diff_smem_layout(slots_per_head, max_blocks, kBulk ? St::kStages : 0, kBulk ? St::kStageBytes : 0).total;
}

// The kernel's phases, with a barrier after each (4 in all; CopyEngine one more for its list slot):
//   1. every global load that only needs the request: seq, length, count, the whole selection row
//      (speculatively, before count is known); then, all at once, the group's slot state, its
//      clock and the page of every needed block (speculatively, hit or not). Two dependent global
//      latencies in all before any copy load can be issued.
//   2. hits: one warp per needed entry compares 32 slots per ballot (first slot wins, like the
//      model's find) and marks the slot kept in its victim key.
//   3. ranks: each missing entry's rank among the missing (ballot prefix inside 32 entries + the
//      counts of the earlier chunks), each non-kept slot's rank among the victims (one compare
//      per slot of one 64-bit key).
//   4. missing entry of rank r -> victim vic[r]; slot_ids written here. After the barrier the
//      slot state goes back (only changed slots) and the copy starts.
template <class T, int B, int D, HeadLayout L, bool kCopy, bool kBulk = false>
__global__ void __launch_bounds__(kDiffThreads) residency_diff_kernel(const __grid_constant__ DiffParams p) {
  extern __shared__ __align__(128) unsigned char dsm[];
  using St = BulkStages<T, B, D>;
  constexpr bool kUseStages = kCopy && kBulk;
  const int S = p.slots_per_head, M = p.max_blocks, H = p.num_heads;
  const DiffSmemLayout lay = diff_smem_layout(S, M, kUseStages ? St::kStages : 0, kUseStages ? St::kStageBytes : 0);
  unsigned long long* key = reinterpret_cast<unsigned long long*>(dsm + lay.key);
  int* res = reinterpret_cast<int*>(dsm + lay.res);
  int* vic = reinterpret_cast<int*>(dsm + lay.vic);
  int* need = reinterpret_cast<int*>(dsm + lay.need);
  int* slot_of = reinterpret_cast<int*>(dsm + lay.slot_of);
  int* cpage = reinterpret_cast<int*>(dsm + lay.cpage);
  int* cblk = reinterpret_cast<int*>(dsm + lay.cblk);
  int* mcount = reinterpret_cast<int*>(dsm + lay.mcount);
  __shared__ int s_nmiss, s_nkept, s_base;
  __shared__ unsigned s_flags1[kDiffWarps], s_flags4[kDiffWarps];

  const int b = blockIdx.x / H, h = blockIdx.x % H;
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const unsigned lanes_below = (1u << lane) - 1u;
  const int* sel = p.block_ids + (static_cast<std::size_t>(b) * H + h) * M;
  int* out = p.slot_ids + (static_cast<std::size_t>(b) * H + h) * M;

  // Phase 1a: loads that need nothing but (b, h).
  const int seq = p.seq_slots[b];
  const int len = p.seq_lens[b];
  const int count = p.counts[b * H + h];
  int sel_r[kDiffNeedIters];
#pragma unroll
  for (int k = 0; k < kDiffNeedIters; ++k) {
    const int i = tid + k * kDiffThreads;
    sel_r[k] = i < M ? sel[i] : -1;
  }
  unsigned bad = 0;
  if (seq < 0 || seq >= p.max_sequences) bad = kResErrSequence;
  else if (len < 1 || static_cast<long long>(len) > static_cast<long long>(p.max_blocks_per_sequence) * p.block_size) bad = kResErrLength;
  else if (count < 0 || count > M) bad = kResErrBlockId;
  if (bad) {
    for (int i = tid; i < M; i += kDiffThreads) out[i] = -1;
    if (tid == 0) atomicOr(&p.counters->errors, bad);
    return;
  }
  const int nb = (len + p.block_size - 1) / p.block_size;
  const int tail = nb - 1;
  const int group = seq * H + h;
  const int base = group * S;
  const int* table = p.page_table + static_cast<std::size_t>(seq) * p.max_blocks_per_sequence;

  // Phase 1b: slot state, clock and pages, all issued before any of them is used. Entry `count`
  // is the tail (counted only when the selection does not hold it).
  int res_r[kDiffSlotIters], stp_r[kDiffSlotIters];
#pragma unroll
  for (int k = 0; k < kDiffSlotIters; ++k) {
    const int s = tid + k * kDiffThreads;
    res_r[k] = -1;
    stp_r[k] = 0;
    if (s < S) {
      res_r[k] = p.state.block[base + s];
      stp_r[k] = p.state.stamp[base + s];
    }
  }
  int need_r[kDiffNeedIters], page_r[kDiffNeedIters];
  bool my_tail = false, my_badid = false;
#pragma unroll
  for (int k = 0; k < kDiffNeedIters; ++k) {
    const int i = tid + k * kDiffThreads;
    int blk = -2;
    if (i < count) {
      blk = sel_r[k];
      if (blk < 0 || blk >= nb) {
        my_badid = true;
        blk = -2;  // not needed: its slot id is -1
      }
      my_tail |= blk == tail;
    } else if (i == count) {
      blk = tail;
    }
    need_r[k] = blk;
    page_r[k] = blk >= 0 ? table[blk] : -1;
  }
  const int clock = p.state.clock[group];
#pragma unroll
  for (int k = 0; k < kDiffSlotIters; ++k) {
    const int s = tid + k * kDiffThreads;
    if (s < S) {
      res[s] = res_r[k];
      key[s] = victim_key(res_r[k], stp_r[k], s);
    }
  }
#pragma unroll
  for (int k = 0; k < kDiffNeedIters; ++k) {
    const int i = tid + k * kDiffThreads;
    if (i <= count) need[i] = need_r[k];
  }
  {
    const unsigned t = __ballot_sync(0xffffffffu, my_tail), e = __ballot_sync(0xffffffffu, my_badid);
    if (lane == 0) s_flags1[warp] = (t ? 1u : 0u) | (e ? 2u : 0u);
  }
  if (tid == 0) {
    s_nmiss = 0;
    s_nkept = 0;
  }
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  if constexpr (kUseStages) {
    if (tid == 0) {
      const std::uint32_t bars = smem_addr(dsm + lay.bars);
      for (int st = 0; st < St::kStages; ++st) mbar_init(bars + 8u * st, 1u);
      mbar_init_fence();
    }
  }
#endif
  __syncthreads();

  // Phase 2: hits.
  unsigned flags1 = 0;
#pragma unroll
  for (int w = 0; w < kDiffWarps; ++w) flags1 |= s_flags1[w];
  const bool tail_in = (flags1 & 1u) != 0;
  const bool bad_id = (flags1 & 2u) != 0;
  const int n = tail_in ? count : count + 1;
  for (int i = warp; i < n; i += kDiffWarps) {
    const int blk = need[i];
    int found = -1;
    if (blk >= 0) {
      for (int s0 = 0; s0 < S; s0 += 32) {
        const int s = s0 + lane;
        const unsigned m = __ballot_sync(0xffffffffu, s < S && res[s] == blk);
        if (m) {
          found = s0 + __ffs(m) - 1;
          break;
        }
      }
    }
    if (lane == 0) {
      slot_of[i] = found;
      if (found >= 0) atomicOr(&key[found], kKeptBit);
    }
  }
  __syncthreads();

  // Phase 3: ranks.
  int mrank_r[kDiffNeedIters];  // rank inside its chunk of 32 entries, -1: not missing
#pragma unroll
  for (int k = 0; k < kDiffNeedIters; ++k) {
    const int i = tid + k * kDiffThreads;
    const bool miss = i < n && need_r[k] >= 0 && slot_of[i] < 0;
    const unsigned m = __ballot_sync(0xffffffffu, miss);
    mrank_r[k] = miss ? __popc(m & lanes_below) : -1;
    const int chunk = i >> 5;
    if (lane == 0 && chunk * 32 <= M) {
      mcount[chunk] = __popc(m);
      if (m) atomicAdd(&s_nmiss, __popc(m));
    }
  }
  const int R = S < M + 1 ? S : M + 1;
  int vrank_r[kDiffSlotIters];  // victim rank, -1: kept (or no slot)
#pragma unroll
  for (int k = 0; k < kDiffSlotIters; ++k) {
    const int s = tid + k * kDiffThreads;
    vrank_r[k] = -1;
    bool kept = false;
    if (s < S) {
      const unsigned long long ks = key[s];
      kept = (ks & kKeptBit) != 0;
      if (!kept) {
        int r = 0;
#pragma unroll 8
        for (int s2 = 0; s2 < S; ++s2) r += key[s2] < ks ? 1 : 0;  // kept keys sort after every victim
        vrank_r[k] = r;
        if (r < R) vic[r] = s;
      }
    }
    const unsigned km = __ballot_sync(0xffffffffu, kept);
    if (lane == 0 && km) atomicAdd(&s_nkept, __popc(km));
  }
  __syncthreads();

  // Phase 4: missing entry of rank r -> victim slot vic[r]; slot_ids.
  int nmiss = s_nmiss;
  const int nvict = S - s_nkept;
  const bool overflow = nmiss > nvict;
  if (overflow) nmiss = nvict;
  if constexpr (!kCopy) {
    if (tid == 0) s_base = nmiss > 0 ? atomicAdd(&p.counters->items, nmiss) : 0;
    __syncthreads();
  }
  bool my_nopage = false;
#pragma unroll
  for (int k = 0; k < kDiffNeedIters; ++k) {
    const int i = tid + k * kDiffThreads;
    if (i < n) {
      int slot = slot_of[i];  // a hit, or -1
      if (mrank_r[k] >= 0) {
        int r = mrank_r[k];
        for (int c = 0; c < (i >> 5); ++c) r += mcount[c];
        slot = -1;  // overflow: no slot left
        if (r < nmiss) {
          const int s = vic[r];
          const int page = page_r[k];
          if (page < 0) my_nopage = true;
          else slot = s;
          cpage[r] = page;
          cblk[r] = page < 0 ? -1 : need_r[k];
          if constexpr (!kCopy) p.items[s_base + r] = page < 0 ? make_int4(-1, -1, h, 0) : make_int4(base + s, page, h, 0);
        }
      }
      if (i < count) out[i] = slot >= 0 ? base + slot : -1;
    }
  }
  {
    const unsigned e = __ballot_sync(0xffffffffu, my_nopage);
    if (lane == 0) s_flags4[warp] = e;
  }
  __syncthreads();

  // Slot state: kept and newly filled slots get stamp clock + 1; a victim whose block has no
  // page is freed and keeps its stamp. Other slots are unchanged.
#pragma unroll
  for (int k = 0; k < kDiffSlotIters; ++k) {
    const int s = tid + k * kDiffThreads;
    if (s >= S) continue;
    if (vrank_r[k] < 0) {
      p.state.stamp[base + s] = clock + 1;  // kept
    } else if (vrank_r[k] < nmiss) {
      const int blk = cblk[vrank_r[k]];
      p.state.block[base + s] = blk;
      if (blk >= 0) p.state.stamp[base + s] = clock + 1;
    }
  }
  if (tid == 0) {
    bool no_page = false;
#pragma unroll
    for (int w = 0; w < kDiffWarps; ++w) no_page |= s_flags4[w] != 0;
    p.state.clock[group] = clock + 1;
    atomicAdd(&p.counters->moved, static_cast<unsigned long long>(nmiss));
    atomicAdd(&p.counters->needed, static_cast<unsigned long long>(n));
    const unsigned err = (bad_id ? kResErrBlockId : 0u) | (overflow ? kResErrOverflow : 0u) | (no_page ? kResErrPageMissing : 0u);
    if (err) atomicOr(&p.counters->errors, err);
  }
  if constexpr (kCopy) {
    using Fmt = PageFormat<T, B, D, L>;
    constexpr std::size_t kSlotKV = static_cast<std::size_t>(B) * D * sizeof(T);
    constexpr std::size_t kSlotBias = static_cast<std::size_t>(B) * sizeof(float);
    const std::size_t kv_bytes = Fmt::kv_bytes(H);
    const std::size_t bias_src = Fmt::bias_byte_offset(H);
    char* const k_slots = static_cast<char*>(p.k_slots);
    char* const v_slots = static_cast<char*>(p.v_slots);
    char* const b_slots = reinterpret_cast<char*>(p.bias_slots);
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    if constexpr (kBulk) {
      // Bulk copy: warp 0 streams K and V through kStages shared-memory stages (one bulk read per
      // stage in kHND, where a head's rows are contiguous; one per token row in kNHD), each stage
      // written to its slot by one bulk store. The other warps copy the bias with plain loads.
      if (warp == 0) {
        const std::uint32_t bars = smem_addr(dsm + lay.bars);
        const std::uint32_t stage0 = (smem_addr(dsm + lay.stage) + 127u) & ~127u;
        constexpr int kChunksPerItem = 2 * St::kPartsPerMat;
        const int nchunks = nmiss * kChunksPerItem;
        char* dst_of[St::kStages];  // lane 0: slot destination of each stage's data
        int issued = 0, done = 0, next = 0;
        for (;;) {
          while (issued - done < St::kStages && next < nchunks) {
            const int item = next / kChunksPerItem, rem = next % kChunksPerItem;
            ++next;
            const int blk = cblk[item];  // warp-uniform
            if (blk < 0) continue;
            const int mat = rem / St::kPartsPerMat, part = rem % St::kPartsPerMat;
            const int st = issued % St::kStages;
            const std::uint32_t bar = bars + 8u * st, dst = stage0 + static_cast<std::uint32_t>(st * St::kStageBytes);
            const char* src = p.pool + static_cast<std::size_t>(cpage[item]) * p.page_stride + mat * kv_bytes;
            const int row0 = part * St::kRowsPerStage;
            if (lane == 0) {
              mbar_arrive_expect_tx(bar, static_cast<unsigned>(St::kStageBytes));
#pragma unroll
              for (int x = 0; x < St::kStages; ++x)
                if (x == st)
                  dst_of[x] = (mat ? v_slots : k_slots) + static_cast<std::size_t>(base + vic[item]) * kSlotKV + part * St::kStageBytes;
            }
            __syncwarp();
            if constexpr (L == HeadLayout::kHND) {
              if (lane == 0) bulk_g2s(dst, src + Fmt::kv_offset(H, h, row0, 0) * sizeof(T), static_cast<unsigned>(St::kStageBytes), bar);
            } else {
              for (int r = lane; r < St::kRowsPerStage; r += 32)
                bulk_g2s(dst + static_cast<std::uint32_t>(r * St::kRowBytes), src + Fmt::kv_offset(H, h, row0 + r, 0) * sizeof(T),
                         static_cast<unsigned>(St::kRowBytes), bar);
            }
            ++issued;
          }
          if (done == issued) break;
          const int st = done % St::kStages;
          mbar_wait(bars + 8u * st, static_cast<unsigned>((done / St::kStages) & 1));
          if (lane == 0) {
            char* d = nullptr;
#pragma unroll
            for (int x = 0; x < St::kStages; ++x)
              if (x == st) d = dst_of[x];
            fence_proxy_async_smem();
            bulk_s2g(d, stage0 + static_cast<std::uint32_t>(st * St::kStageBytes), static_cast<unsigned>(St::kStageBytes));
            bulk_commit();
            bulk_wait_read_all();  // the stage may be refilled
          }
          __syncwarp();
          ++done;
        }
        if (lane == 0) bulk_wait_all();
      } else {
        constexpr int kUnit = L == HeadLayout::kHND ? 16 : 4;  // kHND: a head's bias is contiguous
        constexpr int kPerBlock = static_cast<int>(kSlotBias) / kUnit;
        const std::size_t step = (Fmt::bias_offset(H, h, 1) - Fmt::bias_offset(H, h, 0)) * sizeof(float);
#pragma unroll 4
        for (int e = tid - 32; e < nmiss * kPerBlock; e += kDiffThreads - 32) {
          const int item = e / kPerBlock, u = e % kPerBlock;
          if (cblk[item] < 0) continue;
          const char* src = p.pool + static_cast<std::size_t>(cpage[item]) * p.page_stride + bias_src + Fmt::bias_offset(H, h, 0) * sizeof(float);
          char* dst = b_slots + static_cast<std::size_t>(base + vic[item]) * kSlotBias;
          if constexpr (kUnit == 16) {
            *reinterpret_cast<uint4*>(dst + u * 16) = *reinterpret_cast<const uint4*>(src + u * 16);
          } else {
            *reinterpret_cast<float*>(dst + u * 4) = *reinterpret_cast<const float*>(src + u * step);
          }
        }
      }
      return;
    }
#endif
    // SM loads: one block-head (K, V: B x D each, bias: B floats) is kUnits 16-byte units; thread
    // tid moves units tid + k * kDiffThreads (k < kPer) of every block, so its source offsets
    // inside a page and destination offsets inside a slot are the same for every block: computed
    // once per chunk of kChunk units. kItems blocks per pass keep kItems * kChunk (8 to 14)
    // independent loads in flight per thread before the first store.
    constexpr int kEpv = 16 / sizeof(T);          // elements per 16-byte vector
    constexpr int kVecRow = D / kEpv;             // vectors per token row of one head
    constexpr int kVecMat = B * kVecRow;          // vectors of K (or V) of one head's block
    constexpr int kUnits = 2 * kVecMat + B / 4;   // + bias, 4 floats per unit
    constexpr int kPer = (kUnits + kDiffThreads - 1) / kDiffThreads;
    constexpr int kChunk = kPer < 8 ? kPer : 8;   // bounds the registers for large blocks
    constexpr int kItems = kChunk >= 8 ? 1 : (8 + kChunk - 1) / kChunk;
    static_assert(D % kEpv == 0 && B % 4 == 0, "rows must be whole 16-byte vectors");
    const std::size_t bias_step = (Fmt::bias_offset(H, h, 1) - Fmt::bias_offset(H, h, 0)) * sizeof(float);  // NHD: H floats
#pragma unroll 1
    for (int k0 = 0; k0 < kPer; k0 += kChunk) {
      std::size_t src_off[kChunk];  // bytes inside the page
      int dst_off[kChunk];          // bytes inside the slot's K / V (B*D elements) or bias (B floats)
      int kind[kChunk];             // 0 K, 1 V, 2 bias, 3 none
#pragma unroll
      for (int k = 0; k < kChunk; ++k) {
        const int j = tid + (k0 + k) * kDiffThreads;
        kind[k] = 3;
        src_off[k] = 0;
        dst_off[k] = 0;
        if (j < 2 * kVecMat) {
          const int mat = j >= kVecMat, jj = j - mat * kVecMat;
          const int tok = jj / kVecRow, c = jj % kVecRow;
          kind[k] = mat;
          src_off[k] = mat * kv_bytes + Fmt::kv_offset(H, h, tok, c * kEpv) * sizeof(T);
          dst_off[k] = jj * 16;
        } else if (j < kUnits) {
          const int t0 = (j - 2 * kVecMat) * 4;
          kind[k] = 2;
          src_off[k] = bias_src + Fmt::bias_offset(H, h, t0) * sizeof(float);
          dst_off[k] = t0 * static_cast<int>(sizeof(float));
        }
      }
      for (int i0 = 0; i0 < nmiss; i0 += kItems) {
        uint4 val[kItems][kChunk];
        int slot[kItems];
#pragma unroll
        for (int it = 0; it < kItems; ++it) {
          const int item = i0 + it;
          slot[it] = item < nmiss && cblk[item] >= 0 ? base + vic[item] : -1;
          if (slot[it] < 0) continue;
          const char* page = p.pool + static_cast<std::size_t>(cpage[item]) * p.page_stride;
#pragma unroll
          for (int k = 0; k < kChunk; ++k) {
            const char* src = page + src_off[k];
            if (kind[k] < 2) {
              val[it][k] = load_pool16(src);
            } else if (kind[k] == 2) {
              if constexpr (L == HeadLayout::kHND) {
                val[it][k] = load_pool16(src);
              } else {
                val[it][k] = make_uint4(*reinterpret_cast<const unsigned*>(src), *reinterpret_cast<const unsigned*>(src + bias_step),
                                        *reinterpret_cast<const unsigned*>(src + 2 * bias_step),
                                        *reinterpret_cast<const unsigned*>(src + 3 * bias_step));
              }
            }
          }
        }
#pragma unroll
        for (int it = 0; it < kItems; ++it) {
          if (slot[it] < 0) continue;
          const std::size_t sl = static_cast<std::size_t>(slot[it]);
#pragma unroll
          for (int k = 0; k < kChunk; ++k) {
            if (kind[k] == 3) continue;
            char* dst = kind[k] == 2 ? b_slots + sl * kSlotBias : (kind[k] ? v_slots : k_slots) + sl * kSlotKV;
            *reinterpret_cast<uint4*>(dst + dst_off[k]) = val[it][k];
          }
        }
      }
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Append: one CTA per (batch entry, KV head). Decode mode writes token T-1 (k/v/bias given) to
// the tail slot and to the pool page; prompt mode (k == nullptr) only brings the tail block of a
// sequence whose tokens [first_token, T) were just written to the pool onto the GPU, after
// freeing the slots whose blocks changed. Either way a tail block without a slot claims the
// first victim slot and loads its earlier tokens from the pool.
template <class T, int B, int D, HeadLayout L>
struct AppendParams {
  const int* seq_slots;  // [batch] (decode) or nullptr (prompt: seq_scalar)
  const int* seq_lens;   // [batch] (decode) or nullptr (prompt: T_scalar)
  int seq_scalar;
  int T_scalar;
  int first_token;  // prompt mode
  const T* k;       // [batch][H][D] (decode) or nullptr (prompt mode)
  const T* v;
  const float* bias;  // [batch][H]
  char* pool;
  std::size_t page_stride;
  int num_heads;
  int slots_per_head;
  int max_sequences;
  int max_blocks_per_sequence;
  SlotState state;
  const int* page_table;
  T* k_slots;
  T* v_slots;
  float* bias_slots;
  ResidencyDeviceCounters* counters;
};

template <class T, int B, int D, HeadLayout L>
__global__ void __launch_bounds__(128) residency_append_kernel(const __grid_constant__ AppendParams<T, B, D, L> p) {
  using Fmt = PageFormat<T, B, D, L>;
  constexpr int kEpv = 16 / sizeof(T);
  constexpr int kVecRow = D / kEpv;
  // s_found is written before the middle barrier and only read after it; s_claim is written by
  // thread 0 alone and read after the last barrier (no shared variable is both read and written
  // between two barriers).
  __shared__ int s_found, s_claim, s_load;
  const int H = p.num_heads, S = p.slots_per_head;
  const int b = blockIdx.x / H, h = blockIdx.x % H;
  const int tid = threadIdx.x, nt = blockDim.x;
  const bool decode = p.k != nullptr;
  const int seq = p.seq_slots ? p.seq_slots[b] : p.seq_scalar;
  const int Tlen = p.seq_lens ? p.seq_lens[b] : p.T_scalar;
  unsigned bad = 0;
  if (seq < 0 || seq >= p.max_sequences) bad = kResErrSequence;
  else if (Tlen < 1 || static_cast<long long>(Tlen) > static_cast<long long>(p.max_blocks_per_sequence) * B) bad = kResErrLength;
  const int blk = (Tlen - 1) / B;
  const int* table = p.page_table + static_cast<std::size_t>(seq) * p.max_blocks_per_sequence;
  int page = -1;
  if (!bad) {
    page = table[blk];
    if (page < 0) bad = kResErrPageMissing;
  }
  if (bad) {
    if (tid == 0) atomicOr(&p.counters->errors, bad);
    return;
  }
  const int group = seq * H + h;
  const int base = group * S;
  int* res = p.state.block + base;
  int* stp = p.state.stamp + base;
  if (tid == 0) {
    s_found = -1;
    s_load = 0;
  }
  if (!decode) {
    const int first_block = p.first_token / B;
    for (int s = tid; s < S; s += nt)
      if (res[s] >= first_block) {
        res[s] = -1;
        stp[s] = 0;
      }
  }
  __syncthreads();
  for (int s = tid; s < S; s += nt)
    if (res[s] == blk) s_found = s;
  __syncthreads();
  const int found = s_found;
  if (tid == 0 && found >= 0) s_claim = found;
  if (tid == 0 && found < 0) {  // claim the first victim: free first, then least recently needed
    int best = 0;
    unsigned long long best_key = victim_key(res[0], stp[0], 0);
    for (int s = 1; s < S; ++s) {
      const unsigned long long k = victim_key(res[s], stp[s], s);
      if (k < best_key) {
        best_key = k;
        best = s;
      }
    }
    res[best] = blk;
    stp[best] = p.state.clock[group];
    s_claim = best;
    s_load = 1;
  }
  __syncthreads();
  const int slot = base + s_claim;
  const char* pg = p.pool + static_cast<std::size_t>(page) * p.page_stride;
  const int tb = (Tlen - 1) % B;
  const int ntok = decode ? tb : tb + 1;  // tokens of the block already in the pool
  if (s_load && ntok > 0) {
    const T* pk = reinterpret_cast<const T*>(pg);
    const T* pv = reinterpret_cast<const T*>(pg + Fmt::v_byte_offset(H));
    const float* pb = reinterpret_cast<const float*>(pg + Fmt::bias_byte_offset(H));
    for (int j = tid; j < 2 * ntok * kVecRow; j += nt) {
      const int mat = j / (ntok * kVecRow), jj = j % (ntok * kVecRow);
      const int tok = jj / kVecRow, c = jj % kVecRow;
      const T* src = (mat ? pv : pk) + Fmt::kv_offset(H, h, tok, c * kEpv);
      T* dst = (mat ? p.v_slots : p.k_slots) + (static_cast<std::size_t>(slot) * B + tok) * D + c * kEpv;
      *reinterpret_cast<uint4*>(dst) = *reinterpret_cast<const uint4*>(src);
    }
    for (int tok = tid; tok < ntok; tok += nt) p.bias_slots[static_cast<std::size_t>(slot) * B + tok] = pb[Fmt::bias_offset(H, h, tok)];
    if (tid == 0) atomicAdd(&p.counters->append_loads, 1ull);
  }
  if (decode) {
    T* pk = reinterpret_cast<T*>(const_cast<char*>(pg));
    T* pv = reinterpret_cast<T*>(const_cast<char*>(pg) + Fmt::v_byte_offset(H));
    float* pb = reinterpret_cast<float*>(const_cast<char*>(pg) + Fmt::bias_byte_offset(H));
    const T* sk = p.k + (static_cast<std::size_t>(b) * H + h) * D;
    const T* sv = p.v + (static_cast<std::size_t>(b) * H + h) * D;
    for (int j = tid; j < 2 * kVecRow; j += nt) {
      const int mat = j / kVecRow, c = j % kVecRow;
      const uint4 val = *reinterpret_cast<const uint4*>((mat ? sv : sk) + c * kEpv);
      *reinterpret_cast<uint4*>((mat ? p.v_slots : p.k_slots) + (static_cast<std::size_t>(slot) * B + tb) * D + c * kEpv) = val;
      *reinterpret_cast<uint4*>((mat ? pv : pk) + Fmt::kv_offset(H, h, tb, c * kEpv)) = val;  // write-back: host never stale
    }
    if (tid == 0) {
      const float bv = p.bias[static_cast<std::size_t>(b) * H + h];
      p.bias_slots[static_cast<std::size_t>(slot) * B + tb] = bv;
      pb[Fmt::bias_offset(H, h, tb)] = bv;
    }
    __threadfence_system();
  }
}

// ---------------------------------------------------------------------------------------------
// Bulk prompt append: tokens [first, first + n) of one sequence, from [n][H][D] (device memory),
// written straight into the pool pages (through the mapped alias for a host pool).
template <class T, int B, int D, HeadLayout L>
struct PromptParams {
  const T* k;
  const T* v;
  const float* bias;  // [n][H]
  int n;
  int first;
  int num_heads;
  char* pool;
  std::size_t page_stride;
  const int* page_table;  // this sequence's row of this layer
};

template <class T, int B, int D, HeadLayout L>
__global__ void __launch_bounds__(256) residency_prompt_kernel(const __grid_constant__ PromptParams<T, B, D, L> p) {
  using Fmt = PageFormat<T, B, D, L>;
  constexpr int kEpv = 16 / sizeof(T);
  constexpr int kVecRow = D / kEpv;
  const int H = p.num_heads;
  const long long per_tok = static_cast<long long>(H) * (2 * kVecRow + 1);
  const long long total = static_cast<long long>(p.n) * per_tok;
  for (long long idx = static_cast<long long>(blockIdx.x) * blockDim.x + threadIdx.x; idx < total;
       idx += static_cast<long long>(gridDim.x) * blockDim.x) {
    const int i = static_cast<int>(idx / per_tok);
    int r = static_cast<int>(idx % per_tok);
    const int t = p.first + i;
    char* pg = p.pool + static_cast<std::size_t>(p.page_table[t / B]) * p.page_stride;
    const int tb = t % B;
    if (r < H * 2 * kVecRow) {
      const int h = r / (2 * kVecRow);
      r %= 2 * kVecRow;
      const int mat = r / kVecRow, c = r % kVecRow;
      const T* src = (mat ? p.v : p.k) + (static_cast<std::size_t>(i) * H + h) * D + c * kEpv;
      T* dst = reinterpret_cast<T*>(pg + mat * Fmt::kv_bytes(H)) + Fmt::kv_offset(H, h, tb, c * kEpv);
      *reinterpret_cast<uint4*>(dst) = *reinterpret_cast<const uint4*>(src);
    } else {
      const int h = r - H * 2 * kVecRow;
      reinterpret_cast<float*>(pg + Fmt::bias_byte_offset(H))[Fmt::bias_offset(H, h, tb)] =
          p.bias[static_cast<std::size_t>(i) * H + h];
    }
  }
  __threadfence_system();
}

// ---------------------------------------------------------------------------------------------
// Bookkeeping kernels.
constexpr int kMaxPageUpdatesPerLaunch = 256;
struct PageUpdateParams {
  int* table;
  int n;
  int2 upd[kMaxPageUpdatesPerLaunch];  // {index, page}: captured by value at launch, so the host
                                       // list can change right after (no staging buffer race)
};
template <int kUnused = 0>
__global__ void residency_page_update_kernel(const __grid_constant__ PageUpdateParams p) {
  for (int i = threadIdx.x; i < p.n; i += blockDim.x) p.table[p.upd[i].x] = p.upd[i].y;
}

/// Frees every slot of one sequence in every layer (grid: one CTA per layer).
template <int kUnused = 0>
__global__ void residency_reset_kernel(int* block, int* stamp, int* clock, long long layer_slots, long long layer_groups,
                                       int seq, int num_heads, int slots_per_head) {
  const long long l = blockIdx.x;
  const int n = num_heads * slots_per_head;
  for (int i = threadIdx.x; i < n; i += blockDim.x) {
    block[l * layer_slots + static_cast<long long>(seq) * n + i] = -1;
    stamp[l * layer_slots + static_cast<long long>(seq) * n + i] = 0;
  }
  for (int i = threadIdx.x; i < num_heads; i += blockDim.x) clock[l * layer_groups + static_cast<long long>(seq) * num_heads + i] = 0;
}

}  // namespace detail
NOSA_NAMESPACE_END
