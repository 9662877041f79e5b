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

/// Threads of one diff CTA: the copy of a group's missing blocks runs on them, so more threads
/// means more 16-byte loads in flight per CTA (the grid is batch * Hkv CTAs, however small).
constexpr int kDiffThreads = 512;

inline std::size_t diff_smem_bytes(int slots_per_head, int max_blocks) {
  return (4 * static_cast<std::size_t>(slots_per_head) + 3 * static_cast<std::size_t>(max_blocks + 1)) * sizeof(int);
}

template <class T, int B, int D, HeadLayout L, bool kCopy>
__global__ void __launch_bounds__(kDiffThreads) residency_diff_kernel(const __grid_constant__ DiffParams p) {
  extern __shared__ int sm[];
  const int S = p.slots_per_head, M1 = p.max_blocks + 1, H = p.num_heads;
  int* res = sm;
  int* stp = res + S;
  int* keep = stp + S;
  int* vic = keep + S;
  int* need = vic + S;
  int* slot_of = need + M1;
  int* mrank = slot_of + M1;
  // kCopy: the missing block of rank r goes to global slot cdst[r] (-1: none) from page cpage[r].
  // keep is dead after phase 3; vic[r] is read only by the thread that writes cpage[r].
  int* cdst = keep;
  int* cpage = vic;
  __shared__ int s_nmiss, s_nkept, s_base;

  const int b = blockIdx.x / H, h = blockIdx.x % H;
  const int tid = threadIdx.x, nt = blockDim.x;
  const int seq = p.seq_slots[b];
  const int len = p.seq_lens[b];
  const int count = p.counts[b * H + h];
  const int* sel = p.block_ids + (static_cast<std::size_t>(b) * H + h) * p.max_blocks;
  int* out = p.slot_ids + (static_cast<std::size_t>(b) * H + h) * p.max_blocks;

  unsigned bad = 0;
  if (seq < 0 || seq >= p.max_sequences) bad = kResErrSequence;
  else if (len < 1 || static_cast<long long>(len) > static_cast<long long>(p.max_blocks_per_sequence) * p.block_size) bad = kResErrLength;
  else if (count < 0 || count > p.max_blocks) bad = kResErrBlockId;
  if (bad) {
    for (int i = tid; i < p.max_blocks; i += nt) out[i] = -1;
    if (tid == 0) atomicOr(&p.counters->errors, bad);
    return;
  }
  const int nb = (len + p.block_size - 1) / p.block_size;
  const int tail = nb - 1;
  const int group = seq * H + h;
  const int base = group * S;
  const int* table = p.page_table + static_cast<std::size_t>(seq) * p.max_blocks_per_sequence;
  const int clock = p.state.clock[group];

  // Phase 1: slot state and the needed list (the selection, then the tail when not selected;
  // need[count] = tail is only counted when the tail is not in the selection).
  for (int s = tid; s < S; s += nt) {
    res[s] = p.state.block[base + s];
    stp[s] = p.state.stamp[base + s];
    keep[s] = 0;
  }
  int my_tail = 0, my_badid = 0;
  for (int i = tid; i < count; i += nt) {
    int blk = sel[i];
    if (blk < 0 || blk >= nb) {
      my_badid = 1;
      blk = -2;  // not needed: its slot id is -1
    }
    my_tail |= blk == tail;
    need[i] = blk;
  }
  if (tid == 0) {
    need[count] = tail;
    s_nmiss = 0;
    s_nkept = 0;
  }
  const bool tail_in = __syncthreads_or(my_tail) != 0;
  const bool bad_id = __syncthreads_or(my_badid) != 0;
  const int n = tail_in ? count : count + 1;
  // Phase 2: hits.
  for (int i = tid; i < n; i += nt) {
    const int blk = need[i];
    int found = -1;
    if (blk >= 0)
      for (int s = 0; s < S; ++s)
        if (res[s] == blk) {
          found = s;
          break;
        }
    slot_of[i] = found;
    if (found >= 0) keep[found] = 1;
  }
  __syncthreads();
  // Phase 3: rank of each missing block among the missing (needed order), and of each victim slot
  // among the non-kept slots (victim order). Both O(n) per element: n and S are small.
  int my_miss = 0, my_kept = 0;
  for (int i = tid; i < n; i += nt) {
    int r = -1;
    if (need[i] >= 0 && slot_of[i] < 0) {
      r = 0;
      for (int j = 0; j < i; ++j) r += (need[j] >= 0 && slot_of[j] < 0);
      ++my_miss;
    }
    mrank[i] = r;
  }
  for (int s = tid; s < S; s += nt) {
    if (keep[s]) {
      ++my_kept;
      continue;
    }
    const unsigned long long ks = victim_key(res[s], stp[s], s);
    int r = 0;
    for (int s2 = 0; s2 < S; ++s2) r += (!keep[s2] && victim_key(res[s2], stp[s2], s2) < ks);
    vic[r] = s;
  }
  if (my_miss) atomicAdd(&s_nmiss, my_miss);
  if (my_kept) atomicAdd(&s_nkept, my_kept);
  __syncthreads();
  int nmiss = s_nmiss;
  const int nvict = S - s_nkept;
  const bool overflow = nmiss > nvict;
  if (overflow) nmiss = nvict;
  if constexpr (!kCopy) {
    if (tid == 0) s_base = nmiss > 0 ? atomicAdd(&p.counters->items, nmiss) : 0;
    __syncthreads();
  }
  // Phase 4: missing block of rank r -> victim slot vic[r].
  int my_nopage = 0;
  for (int i = tid; i < n; i += nt) {
    const int r = mrank[i];
    if (r < 0) continue;
    if (r >= nmiss) {  // overflow: no slot left
      slot_of[i] = -1;
      continue;
    }
    const int s = vic[r];
    const int page = table[need[i]];
    if (page < 0) {
      my_nopage = 1;
      res[s] = -1;
      slot_of[i] = -1;
      if constexpr (kCopy) cdst[r] = -1;
      else p.items[s_base + r] = make_int4(-1, -1, h, 0);
    } else {
      res[s] = need[i];
      slot_of[i] = s;
      if constexpr (kCopy) {
        cdst[r] = base + s;
        cpage[r] = page;
      } else {
        p.items[s_base + r] = make_int4(base + s, page, h, 0);
      }
    }
  }
  const bool no_page = __syncthreads_or(my_nopage) != 0;
  for (int i = tid; i < n; i += nt)
    if (slot_of[i] >= 0) stp[slot_of[i]] = clock + 1;
  __syncthreads();
  for (int s = tid; s < S; s += nt) {
    p.state.block[base + s] = res[s];
    p.state.stamp[base + s] = stp[s];
  }
  for (int i = tid; i < count; i += nt) out[i] = slot_of[i] >= 0 ? base + slot_of[i] : -1;
  if (tid == 0) {
    p.state.clock[group] = clock + 1;
    atomicAdd(&p.counters->moved, static_cast<unsigned long long>(nmiss));
    atomicAdd(&p.counters->needed, static_cast<unsigned long long>(n));
    const unsigned err = (bad_id ? kResErrBlockId : 0u) | (overflow ? kResErrOverflow : 0u) | (no_page ? kResErrPageMissing : 0u);
    if (err) atomicOr(&p.counters->errors, err);
  }
  if constexpr (kCopy) {
    // Phase 5: copy this group's nmiss blocks. One block-head (K, V: B x D each, bias: B floats)
    // is kUnits 16-byte units; thread tid moves units tid + k * kDiffThreads (k < kPer) of every
    // block, so its source offsets inside a page and destination offsets inside a slot are the
    // same for every block: computed once per chunk of kChunk units. kItems blocks per pass keep
    // kItems * kChunk (8 to 14) independent loads in flight per thread before the first store.
    using Fmt = PageFormat<T, B, D, L>;
    constexpr int kEpv = 16 / sizeof(T);          // elements per 16-byte vector
    constexpr int kVecRow = D / kEpv;             // vectors per token row of one head
    constexpr int kVecMat = B * kVecRow;          // vectors of K (or V) of one head's block
    constexpr int kUnits = 2 * kVecMat + B / 4;   // + bias, 4 floats per unit
    constexpr int kPer = (kUnits + kDiffThreads - 1) / kDiffThreads;
    constexpr int kChunk = kPer < 8 ? kPer : 8;   // bounds the registers for large blocks
    constexpr int kItems = kChunk >= 8 ? 1 : (8 + kChunk - 1) / kChunk;
    static_assert(D % kEpv == 0 && B % 4 == 0, "rows must be whole 16-byte vectors");
    const std::size_t kv_bytes = Fmt::kv_bytes(H);
    const std::size_t bias_src = Fmt::bias_byte_offset(H);
    const std::size_t bias_step = (Fmt::bias_offset(H, h, 1) - Fmt::bias_offset(H, h, 0)) * sizeof(float);  // NHD: H floats
    char* const k_slots = static_cast<char*>(p.k_slots);
    char* const v_slots = static_cast<char*>(p.v_slots);
    char* const b_slots = reinterpret_cast<char*>(p.bias_slots);
    constexpr std::size_t kSlotKV = static_cast<std::size_t>(B) * D * sizeof(T);
    constexpr std::size_t kSlotBias = static_cast<std::size_t>(B) * sizeof(float);
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
          slot[it] = item < nmiss ? cdst[item] : -1;
          if (slot[it] < 0) continue;
          const char* page = p.pool + static_cast<std::size_t>(cpage[item]) * p.page_stride;
#pragma unroll
          for (int k = 0; k < kChunk; ++k) {
            const char* src = page + src_off[k];
            if (kind[k] < 2) {
              val[it][k] = *reinterpret_cast<const uint4*>(src);
            } else if (kind[k] == 2) {
              if constexpr (L == HeadLayout::kHND) {
                val[it][k] = *reinterpret_cast<const uint4*>(src);
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
