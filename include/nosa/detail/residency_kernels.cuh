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
// Diff: one CTA per (batch entry, KV head).
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
  int4* items;            // {global dst slot, page, head, 0}
  ResidencyDeviceCounters* counters;
};

inline std::size_t diff_smem_bytes(int slots_per_head, int max_blocks) {
  return (4 * static_cast<std::size_t>(slots_per_head) + 3 * static_cast<std::size_t>(max_blocks + 1)) * sizeof(int);
}

template <int kUnused = 0>
__global__ void __launch_bounds__(256) residency_diff_kernel(const __grid_constant__ DiffParams p) {
  extern __shared__ int sm[];
  const int S = p.slots_per_head, M1 = p.max_blocks + 1, H = p.num_heads;
  int* res = sm;
  int* stp = res + S;
  int* keep = stp + S;
  int* vic = keep + S;
  int* need = vic + S;
  int* slot_of = need + M1;
  int* mrank = slot_of + M1;
  __shared__ int s_n, s_tail_in, s_nmiss, s_nkept, s_base;
  __shared__ unsigned s_err;

  const int b = blockIdx.x / H, h = blockIdx.x % H;
  const int tid = threadIdx.x, nt = blockDim.x;
  const int seq = p.seq_slots[b];
  const int T = p.seq_lens[b];
  const int count = p.counts[b * H + h];
  const int* sel = p.block_ids + (static_cast<std::size_t>(b) * H + h) * p.max_blocks;
  int* out = p.slot_ids + (static_cast<std::size_t>(b) * H + h) * p.max_blocks;

  unsigned bad = 0;
  if (seq < 0 || seq >= p.max_sequences) bad = kResErrSequence;
  else if (T < 1 || static_cast<long long>(T) > static_cast<long long>(p.max_blocks_per_sequence) * p.block_size) bad = kResErrLength;
  else if (count < 0 || count > p.max_blocks) bad = kResErrBlockId;
  if (bad) {
    for (int i = tid; i < p.max_blocks; i += nt) out[i] = -1;
    if (tid == 0) atomicOr(&p.counters->errors, bad);
    return;
  }
  const int nb = (T + p.block_size - 1) / p.block_size;
  const int tail = nb - 1;
  const int group = seq * H + h;
  const int base = group * S;
  const int* table = p.page_table + static_cast<std::size_t>(seq) * p.max_blocks_per_sequence;
  const int clock = p.state.clock[group];

  for (int s = tid; s < S; s += nt) {
    res[s] = p.state.block[base + s];
    stp[s] = p.state.stamp[base + s];
    keep[s] = 0;
  }
  if (tid == 0) {
    s_tail_in = 0;
    s_err = 0;
  }
  __syncthreads();
  for (int i = tid; i < count; i += nt) {
    int blk = sel[i];
    if (blk < 0 || blk >= nb) {
      atomicOr(&s_err, static_cast<unsigned>(kResErrBlockId));
      blk = -2;  // not needed: its slot id is -1
    }
    if (blk == tail) s_tail_in = 1;
    need[i] = blk;
  }
  __syncthreads();
  if (tid == 0) {
    int n = count;
    if (!s_tail_in) need[n++] = tail;
    s_n = n;
  }
  __syncthreads();
  const int n = s_n;
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
  // Rank of each missing block among the missing (needed order), and of each victim slot among
  // the non-kept slots (victim order). Both O(n) per element: n and S are small (<= a few 100).
  for (int i = tid; i < n; i += nt) {
    int r = -1;
    if (need[i] >= 0 && slot_of[i] < 0) {
      r = 0;
      for (int j = 0; j < i; ++j) r += (need[j] >= 0 && slot_of[j] < 0);
    }
    mrank[i] = r;
  }
  for (int s = tid; s < S; s += nt) {
    if (keep[s]) continue;
    const unsigned long long ks = victim_key(res[s], stp[s], s);
    int r = 0;
    for (int s2 = 0; s2 < S; ++s2) r += (!keep[s2] && victim_key(res[s2], stp[s2], s2) < ks);
    vic[r] = s;
  }
  __syncthreads();
  if (tid == 0) {
    int nmiss = 0, nkept = 0;
    for (int i = 0; i < n; ++i) nmiss += mrank[i] >= 0;
    for (int s = 0; s < S; ++s) nkept += keep[s];
    const int nvict = S - nkept;
    if (nmiss > nvict) {
      s_err |= kResErrOverflow;
      nmiss = nvict;
    }
    s_nmiss = nmiss;
    s_nkept = nkept;
    s_base = nmiss > 0 ? atomicAdd(&p.counters->items, nmiss) : 0;
  }
  __syncthreads();
  const int nmiss = s_nmiss;
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
      atomicOr(&s_err, static_cast<unsigned>(kResErrPageMissing));
      res[s] = -1;
      slot_of[i] = -1;
      p.items[s_base + r] = make_int4(-1, -1, h, 0);
    } else {
      res[s] = need[i];
      slot_of[i] = s;
      p.items[s_base + r] = make_int4(base + s, page, h, 0);
    }
  }
  __syncthreads();
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
    if (s_err) atomicOr(&p.counters->errors, s_err);
  }
}

// ---------------------------------------------------------------------------------------------
// Gather: copies the blocks of the transfer list from the pool (pinned host through its mapped
// alias, or device memory) into their slots. A fixed, bounded grid walks the list (its length is
// read on the device, so the launch shape never changes).
template <class T, int B, int D, HeadLayout L>
struct GatherParams {
  const int4* items;
  const ResidencyDeviceCounters* counters;
  const char* pool;
  std::size_t page_stride;
  int num_heads;
  T* k_slots;         // [num_slots][B][D]
  T* v_slots;         // [num_slots][B][D]
  float* bias_slots;  // [num_slots][B]
};

template <class T, int B, int D, HeadLayout L>
__global__ void __launch_bounds__(512) residency_gather_kernel(const __grid_constant__ GatherParams<T, B, D, L> p) {
  using Fmt = PageFormat<T, B, D, L>;
  constexpr int kEpv = 16 / sizeof(T);           // elements per 16-byte vector
  constexpr int kVecRow = D / kEpv;              // vectors per token row of one head
  constexpr int kVecMat = B * kVecRow;           // vectors of K (or V) of one head's block
  constexpr int kUnitsItem = 2 * kVecMat + B / 4;  // + bias, 4 floats per unit
  constexpr int kUnroll = 4;
  static_assert(D % kEpv == 0 && B % 4 == 0, "rows must be whole 16-byte vectors");
  const int H = p.num_heads;
  const long long total = static_cast<long long>(p.counters->items) * kUnitsItem;
  const long long stride = static_cast<long long>(gridDim.x) * blockDim.x;
  const std::size_t kv_bytes = Fmt::kv_bytes(H);
  for (long long base = static_cast<long long>(blockIdx.x) * blockDim.x + threadIdx.x; base < total;
       base += stride * kUnroll) {
    uint4 val[kUnroll];
    void* dst[kUnroll];
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      dst[u] = nullptr;
      const long long idx = base + u * stride;
      if (idx >= total) continue;
      const int item = static_cast<int>(idx / kUnitsItem);
      const int r = static_cast<int>(idx % kUnitsItem);
      const int4 it = p.items[item];
      if (it.x < 0) continue;
      const char* page = p.pool + static_cast<std::size_t>(it.y) * p.page_stride;
      const int h = it.z;
      if (r < 2 * kVecMat) {
        const int mat = r / kVecMat, j = r % kVecMat;
        const int tok = j / kVecRow, c = j % kVecRow;
        const T* src = reinterpret_cast<const T*>(page + mat * kv_bytes) + Fmt::kv_offset(H, h, tok, c * kEpv);
        val[u] = *reinterpret_cast<const uint4*>(src);
        T* slots = mat ? p.v_slots : p.k_slots;
        dst[u] = slots + (static_cast<std::size_t>(it.x) * B + tok) * D + c * kEpv;
      } else {
        const int t0 = (r - 2 * kVecMat) * 4;
        const float* bsrc = reinterpret_cast<const float*>(page + Fmt::bias_byte_offset(H));
        if constexpr (L == HeadLayout::kHND) {
          val[u] = *reinterpret_cast<const uint4*>(bsrc + Fmt::bias_offset(H, h, t0));
        } else {
          val[u] = make_uint4(__float_as_uint(bsrc[Fmt::bias_offset(H, h, t0)]), __float_as_uint(bsrc[Fmt::bias_offset(H, h, t0 + 1)]),
                              __float_as_uint(bsrc[Fmt::bias_offset(H, h, t0 + 2)]), __float_as_uint(bsrc[Fmt::bias_offset(H, h, t0 + 3)]));
        }
        dst[u] = p.bias_slots + static_cast<std::size_t>(it.x) * B + t0;
      }
    }
#pragma unroll
    for (int u = 0; u < kUnroll; ++u)
      if (dst[u] != nullptr) *reinterpret_cast<uint4*>(dst[u]) = val[u];
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
