// nosa: the KV residency manager (DESIGN.md section 3, item 2). It owns where every block of
// every (sequence, layer, KV head) lives: all of them in the HostPool (the source of truth), the
// ones a step needs in a GPU slot cache that the attention kernel reads through a slot table.
//
// GPU slot cache (device memory, caller-owned through workspace_bytes()), per layer, kHND per-head
// slots as the shared conventions say:
//   k_slots, v_slots  [num_slots][B][D] (T),   bias_slots fp32 [num_slots][B]
//   num_slots = max_sequences * Hkv * slots_per_head; the group (seq slot s, KV head h) owns the
//   slots [(s*Hkv + h) * S, (s*Hkv + h + 1) * S), S = slots_per_head >= max_blocks.
// A step of one layer, on one stream:
//   1. append_decode: the new token's K, V and bias go to the tail slot AND, in the same kernel,
//      to the pool page (write-through): the pool is never stale, so any slot may be evicted at
//      any time without a write-back.
//   2. the selector produces block_ids/counts (shared conventions).
//   3. make_resident: a diff kernel (one CTA per (sequence, head)) finds the selected blocks (plus
//      the tail block) already in a slot, gives the missing ones the victim slots (free first,
//      then least recently needed: see nosa/host/residency_model.h) and writes slot_ids. Only the
//      missing blocks move: ZeroCopyGather / DeviceResident copy them in the same kernel (each CTA
//      its own group's blocks, right after its diff; ZeroCopyGatherBulk with TMA bulk copies);
//      CopyEngine gets a transfer list instead.
//   4. attention reads k/v/bias_slots through slot_ids.
// Graph capture: with ZeroCopyGather and DeviceResident, append_decode and make_resident are
// one fixed-shape kernel each (for a given batch), no host sync, no allocation. Page allocation is host-side
// bookkeeping (reserve): call reserve(seq, T + lookahead) outside the captured region, e.g. one
// block ahead, so that a graph replayed for the next B steps never needs a new page.
// Device-side bad input (lengths, block ids, a block without a page) cannot be reported by a
// Status without a sync: the kernel leaves that (sequence, head) unchanged, returns slot -1 and
// sets a bit in ResidencyCounters::errors (read_counters).
#pragma once

#include <nosa/config.h>
#include <nosa/detail/cuda_check.cuh>
#include <nosa/detail/cuda_types.cuh>
#include <nosa/detail/residency_kernels.cuh>
#include <nosa/geometry.h>
#include <nosa/host_pool.h>
#include <nosa/status.h>
#include <nosa/transfer_policy.h>
#include <nosa/types.h>
#include <nosa/workspace.h>

#include <cuda_runtime.h>

#include <algorithm>
#include <cstddef>
#include <string>
#include <vector>

NOSA_NAMESPACE_BEGIN

/// Pinned host memory, mapped into the device address space (cudaHostAllocMapped |
/// cudaHostAllocPortable), for a HostPool. Owns the allocation. Throws nosa::Error on failure.
class PinnedHostMemory {
 public:
  explicit PinnedHostMemory(std::size_t bytes) : bytes_(bytes) {
    if (bytes == 0) throw Error(invalid_argument("PinnedHostMemory: bytes is 0"));
    cudaError_t e = cudaHostAlloc(&host_, bytes, cudaHostAllocMapped | cudaHostAllocPortable);
    if (e != cudaSuccess) throw Error(Status(StatusCode::kCudaError, std::string("cudaHostAlloc failed: ") + cudaGetErrorString(e)));
    e = cudaHostGetDevicePointer(&device_, host_, 0);
    if (e != cudaSuccess) {
      cudaFreeHost(host_);
      throw Error(Status(StatusCode::kCudaError, std::string("cudaHostGetDevicePointer failed: ") + cudaGetErrorString(e)));
    }
  }
  PinnedHostMemory(const PinnedHostMemory&) = delete;
  PinnedHostMemory& operator=(const PinnedHostMemory&) = delete;
  ~PinnedHostMemory() {
    if (host_) cudaFreeHost(host_);
  }
  void* host() const { return host_; }
  void* device() const { return device_; }
  std::size_t bytes() const { return bytes_; }

 private:
  void* host_ = nullptr;
  void* device_ = nullptr;
  std::size_t bytes_;
};

/// Runtime sizes of the slot cache (the pool's config gives layers, heads, sequences).
struct ResidencyConfig {
  int max_batch = 1;        ///< largest batch of one make_resident / append_decode call
  int max_blocks = 64;      ///< width of block_ids/slot_ids rows (>= the selector's budget)
  int slots_per_head = 64;  ///< slots per (sequence slot, layer, KV head), >= max_blocks; extra
                            ///< slots keep recently evicted blocks
};

/// Traffic counters. "step" = since the previous read_counters call.
struct ResidencyCounters {
  long long step_blocks_moved = 0;   ///< (head) blocks transferred by make_resident
  long long step_bytes_moved = 0;    ///< their bytes (K + V + bias)
  long long step_blocks_needed = 0;  ///< blocks make_resident was asked for (selected + tail)
  long long step_append_loads = 0;   ///< tail blocks append had to reload
  long long total_blocks_moved = 0;
  long long total_bytes_moved = 0;
  long long total_blocks_needed = 0;
  double step_hit_rate = 0;   ///< 1 - moved / needed (1 when nothing was needed)
  double total_hit_rate = 0;
  unsigned errors = 0;        ///< detail::ResidencyError bits seen since the previous read
};

/// Device pointers of one layer's slot cache (what the attention kernel reads).
template <class T>
struct SlotCacheView {
  T* k = nullptr;         ///< [num_slots][B][D]
  T* v = nullptr;         ///< [num_slots][B][D]
  float* bias = nullptr;  ///< [num_slots][B]
  int num_slots = 0;
};

/// T: bfloat16_t / float16_t / float. Geo: geometry (block_size, head_dim). Policy:
/// ZeroCopyGather (ZeroCopyGatherBulk: TMA copy loop), CopyEngine or DeviceResident
/// (nosa/transfer_policy.h). HostLayout: element order of the pool pages. Not thread-safe; all
/// calls on one host thread.
template <class T, class Geo, class Policy, HeadLayout HostLayout = Geo::layout>
class Residency {
  static_assert(geometry_check_v<Geo>);
  static_assert(Policy::template supports_layout<HostLayout>,
                "nosa::Residency: this transfer policy does not support this host layout "
                "(CopyEngine needs HeadLayout::kHND: a head's block must be contiguous)");

 public:
  using Pool = HostPool<T, Geo, HostLayout>;
  using CudaT = detail::cuda_type_t<T>;
  static constexpr int B = Geo::block_size;
  static constexpr int D = Geo::head_dim;
  static constexpr int kMaxSlotsPerHead = detail::kDiffMaxSlots;
  static constexpr int kMaxBlocks = detail::kDiffMaxBlocks;
  /// The fused diff + copy kernel uses TMA bulk copies (ZeroCopyGatherBulk; sm_90 device code,
  /// SM loads elsewhere).
  static constexpr bool kBulkCopy = Policy::kind == TransferKind::kZeroCopyGather && Policy::gather_copy == GatherCopy::kBulk;

  /// Bytes moved per transferred (head) block: K + V + bias.
  static constexpr std::size_t block_bytes() { return 2 * static_cast<std::size_t>(B) * D * sizeof(T) + B * sizeof(float); }

  static Status validate(const HostPoolConfig& pc, const ResidencyConfig& c) {
    NOSA_RETURN_IF_ERROR(pc.validate());
    if (c.max_batch < 1) return invalid_argument("ResidencyConfig::max_batch = " + std::to_string(c.max_batch) + ": must be >= 1");
    if (c.max_blocks < 1 || c.max_blocks > kMaxBlocks)
      return not_supported("ResidencyConfig::max_blocks = " + std::to_string(c.max_blocks) + ": must be in [1, 1024]");
    if (c.slots_per_head < c.max_blocks)
      return invalid_argument("ResidencyConfig::slots_per_head = " + std::to_string(c.slots_per_head) +
                              ": must be >= max_blocks = " + std::to_string(c.max_blocks));
    if (c.slots_per_head > kMaxSlotsPerHead)
      return not_supported("ResidencyConfig::slots_per_head = " + std::to_string(c.slots_per_head) + ": at most 2048");
    const long long slots = static_cast<long long>(pc.max_sequences) * pc.num_kv_heads * c.slots_per_head;
    if (slots * B >= (1ll << 31)) return not_supported("slot cache too large: max_sequences * Hkv * slots_per_head * B must stay below 2^31");
    return {};
  }

  /// The caller's device workspace: slot cache, slot state, page table mirror, transfer list.
  static WorkspaceLayout workspace_layout(const HostPoolConfig& pc, const ResidencyConfig& c) {
    const std::size_t L = pc.num_layers;
    const std::size_t slots = static_cast<std::size_t>(pc.max_sequences) * pc.num_kv_heads * c.slots_per_head;
    const std::size_t groups = static_cast<std::size_t>(pc.max_sequences) * pc.num_kv_heads;
    WorkspaceLayout w;
    w.add(L * slots * B * D * sizeof(T));                                    // 0 k
    w.add(L * slots * B * D * sizeof(T));                                    // 1 v
    w.add(L * slots * B * sizeof(float));                                    // 2 bias
    w.add(L * slots * sizeof(int));                                          // 3 block
    w.add(L * slots * sizeof(int));                                          // 4 stamp
    w.add(L * groups * sizeof(int));                                         // 5 clock
    w.add(L * pc.max_sequences * static_cast<std::size_t>(pc.max_blocks_per_sequence) * sizeof(int));  // 6 page table
    w.add(static_cast<std::size_t>(c.max_batch) * pc.num_kv_heads * (c.max_blocks + 1) * sizeof(int4));  // 7 items
    w.add(sizeof(detail::ResidencyDeviceCounters));                          // 8 counters
    return w;
  }
  static std::size_t workspace_bytes(const HostPoolConfig& pc, const ResidencyConfig& c) {
    return workspace_layout(pc, c).total_bytes();
  }

  /// pool: the host pool (outlives this object; membership goes through this object so the
  /// device page table follows). workspace: device memory of workspace_bytes(), 256-aligned.
  /// Initializes the slot state on `stream`. Throws nosa::Error naming the bad argument.
  Residency(Pool& pool, ResidencyConfig config, void* workspace, std::size_t workspace_size, cudaStream_t stream)
      : pool_(&pool), pc_(pool.config()), cfg_(config) {
    throw_if_error(validate(pc_, cfg_));
    if (pool.device_base() == nullptr)
      throw Error(invalid_argument("Residency: the pool has no device address (pinned memory must be mapped)"));
    if (Policy::kind == TransferKind::kCopyEngine && pool.host_base() == nullptr)
      throw Error(invalid_argument("Residency<CopyEngine>: the pool must be host memory"));
    const WorkspaceLayout w = workspace_layout(pc_, cfg_);
    throw_if_error(w.check(workspace, workspace_size, "workspace"));
    num_slots_ = pc_.max_sequences * pc_.num_kv_heads * cfg_.slots_per_head;
    num_groups_ = pc_.max_sequences * pc_.num_kv_heads;
    k_ = w.at<T>(workspace, 0);
    v_ = w.at<T>(workspace, 1);
    bias_ = w.at<float>(workspace, 2);
    block_ = w.at<int>(workspace, 3);
    stamp_ = w.at<int>(workspace, 4);
    clock_ = w.at<int>(workspace, 5);
    table_ = w.at<int>(workspace, 6);
    items_ = w.at<int4>(workspace, 7);
    counters_ = w.at<detail::ResidencyDeviceCounters>(workspace, 8);
    const std::size_t L = pc_.num_layers;
    throw_if_error(allow_diff_smem());
    throw_if_error(init(L, stream));
    if constexpr (Policy::kind == TransferKind::kCopyEngine) {
      const std::size_t n = static_cast<std::size_t>(cfg_.max_batch) * pc_.num_kv_heads * (cfg_.max_blocks + 1);
      cudaError_t e = cudaHostAlloc(reinterpret_cast<void**>(&staging_), (n + 1) * sizeof(int4), cudaHostAllocDefault);
      if (e != cudaSuccess) throw Error(Status(StatusCode::kCudaError, std::string("cudaHostAlloc(staging) failed: ") + cudaGetErrorString(e)));
    }
  }
  Residency(const Residency&) = delete;
  Residency& operator=(const Residency&) = delete;
  ~Residency() {
    if (staging_) cudaFreeHost(staging_);
  }

  const ResidencyConfig& config() const { return cfg_; }
  const HostPoolConfig& pool_config() const { return pc_; }
  Pool& pool() const { return *pool_; }
  int num_slots() const { return num_slots_; }

  /// The slot cache of one layer (layer must be in range).
  SlotCacheView<T> slots(int layer) const {
    const std::size_t off = static_cast<std::size_t>(layer) * num_slots_;
    return SlotCacheView<T>{k_ + off * B * D, v_ + off * B * D, bias_ + off * B, num_slots_};
  }
  /// Slot state (device): block id per slot of one layer, [num_slots] int32, -1 = free.
  const int* slot_blocks(int layer) const { return block_ + static_cast<std::size_t>(layer) * num_slots_; }

  // ---- membership ---------------------------------------------------------------------------
  /// A new sequence in slot `seq` (0..max_sequences-1), with no tokens. Its GPU slots are free.
  Status add_sequence(int seq) { return pool_->add_sequence(seq); }

  /// Reserves host pages so that `tokens` tokens fit (all layers), and mirrors the new pages into
  /// the device page table on `stream`. capacity_exceeded and nothing changed when the pool is full.
  Status reserve(int seq, long long tokens, cudaStream_t stream) {
    NOSA_RETURN_IF_ERROR(pool_->reserve(seq, tokens));
    return sync_page_table(stream);
  }

  /// The sequence leaves: its pages go back to the pool, its slots are freed (all layers). Work
  /// already queued on `stream` that uses it stays valid; the slot may be reused right after.
  Status drop_sequence(int seq, cudaStream_t stream) {
    NOSA_RETURN_IF_ERROR(pool_->release(seq));
    NOSA_RETURN_IF_ERROR(sync_page_table(stream));
    detail::residency_reset_kernel<<<pc_.num_layers, 256, 0, stream>>>(block_, stamp_, clock_, num_slots_, num_groups_, seq,
                                                                      pc_.num_kv_heads, cfg_.slots_per_head);
    NOSA_CUDA_TRY_LAUNCH(residency_reset_kernel);
    return {};
  }

  /// Mirrors the pool's page-table changes on the device (kernel parameters carry them, so the
  /// host may change the pool again right away).
  Status sync_page_table(cudaStream_t stream) {
    const std::vector<PageUpdate> upd = pool_->take_page_updates();
    for (std::size_t i = 0; i < upd.size(); i += detail::kMaxPageUpdatesPerLaunch) {
      detail::PageUpdateParams p{};
      p.table = table_;
      p.n = static_cast<int>(std::min<std::size_t>(detail::kMaxPageUpdatesPerLaunch, upd.size() - i));
      for (int j = 0; j < p.n; ++j) p.upd[j] = make_int2(upd[i + j].index, upd[i + j].page);
      detail::residency_page_update_kernel<<<1, 256, 0, stream>>>(p);
      NOSA_CUDA_TRY_LAUNCH(residency_page_update_kernel);
    }
    return {};
  }

  // ---- appending ----------------------------------------------------------------------------
  /// Decode append of one token per batch entry: token T-1 (T = seq_lens[b], current token
  /// included) of every KV head goes to the tail slot and to the pool page (write-through).
  ///   seq_slots, seq_lens  int32 [batch] (device)
  ///   k, v                 [batch][Hkv][D] (T, device, 16-byte aligned)
  ///   bias                 fp32 [batch][Hkv] (device)
  /// The block of T-1 must be reserved (reserve); a new block claims a slot on the device.
  Status append_decode(int layer, int batch, const int* seq_slots, const int* seq_lens, const T* k, const T* v,
                       const float* bias, cudaStream_t stream) {
    NOSA_RETURN_IF_ERROR(check_layer_batch(layer, batch, "append_decode"));
    NOSA_RETURN_IF_ERROR(detail::check_pointer(seq_slots, "append_decode: seq_slots", 4));
    NOSA_RETURN_IF_ERROR(detail::check_pointer(seq_lens, "append_decode: seq_lens", 4));
    NOSA_RETURN_IF_ERROR(detail::check_pointer(k, "append_decode: k", 16));
    NOSA_RETURN_IF_ERROR(detail::check_pointer(v, "append_decode: v", 16));
    NOSA_RETURN_IF_ERROR(detail::check_pointer(bias, "append_decode: bias", 4));
    auto p = append_params(layer);
    p.seq_slots = seq_slots;
    p.seq_lens = seq_lens;
    p.k = detail::as_cuda(k);
    p.v = detail::as_cuda(v);
    p.bias = bias;
    detail::residency_append_kernel<CudaT, B, D, HostLayout><<<batch * pc_.num_kv_heads, 128, 0, stream>>>(p);
    NOSA_CUDA_TRY_LAUNCH(residency_append_kernel);
    return {};
  }

  /// Bulk append of tokens [first_token, first_token + n) of one sequence (prefill output) into
  /// the pool, then the tail block onto the GPU. Slots of the blocks it touched are freed first.
  ///   k, v  [n][Hkv][D] (T, device memory or mapped memory, 16-byte aligned), bias fp32 [n][Hkv]
  /// The sequence must have reserved first_token + n tokens (checked here).
  Status append_prompt(int layer, int seq, long long first_token, long long n, const T* k, const T* v, const float* bias,
                       cudaStream_t stream) {
    NOSA_RETURN_IF_ERROR(check_layer_batch(layer, 1, "append_prompt"));
    if (!pool_->active(seq)) return not_found("append_prompt: sequence slot " + std::to_string(seq) + " is not active");
    if (first_token < 0 || n < 0) return invalid_argument("append_prompt: first_token and n must be >= 0");
    if (first_token + n > pool_->reserved_tokens(seq))
      return capacity_exceeded("append_prompt: tokens up to " + std::to_string(first_token + n) + " exceed the " +
                               std::to_string(pool_->reserved_tokens(seq)) + " reserved for sequence slot " + std::to_string(seq));
    if (n == 0) return {};
    NOSA_RETURN_IF_ERROR(detail::check_pointer(k, "append_prompt: k", 16));
    NOSA_RETURN_IF_ERROR(detail::check_pointer(v, "append_prompt: v", 16));
    NOSA_RETURN_IF_ERROR(detail::check_pointer(bias, "append_prompt: bias", 4));
    detail::PromptParams<CudaT, B, D, HostLayout> pp{};
    pp.k = detail::as_cuda(k);
    pp.v = detail::as_cuda(v);
    pp.bias = bias;
    pp.n = static_cast<int>(n);
    pp.first = static_cast<int>(first_token);
    pp.num_heads = pc_.num_kv_heads;
    pp.pool = pool_->device_base();
    pp.page_stride = pool_->page_stride();
    pp.page_table = table_ + (static_cast<std::size_t>(layer) * pc_.max_sequences + seq) * pc_.max_blocks_per_sequence;
    const long long units = n * pc_.num_kv_heads * (2 * D * static_cast<long long>(sizeof(T)) / 16 + 1);
    const int grid = static_cast<int>(std::min<long long>((units + 255) / 256, 1024));
    detail::residency_prompt_kernel<CudaT, B, D, HostLayout><<<grid, 256, 0, stream>>>(pp);
    NOSA_CUDA_TRY_LAUNCH(residency_prompt_kernel);
    auto p = append_params(layer);
    p.seq_scalar = seq;
    p.T_scalar = static_cast<int>(first_token + n);
    p.first_token = static_cast<int>(first_token);
    detail::residency_append_kernel<CudaT, B, D, HostLayout><<<pc_.num_kv_heads, 128, 0, stream>>>(p);
    NOSA_CUDA_TRY_LAUNCH(residency_append_kernel);
    return {};
  }

  // ---- the per-step diff and transfer -------------------------------------------------------
  /// Makes the selected blocks (and each tail block) of one layer resident and writes the slot
  /// table.
  ///   seq_slots, seq_lens int32 [batch] (device); T = seq_lens[b] includes the current token
  ///   block_ids  int32 [batch][Hkv][max_blocks] ascending, counts int32 [batch][Hkv] (device)
  ///   slot_ids   int32 [batch][Hkv][max_blocks] (device, written): entry i < count = global slot
  ///              of block_ids[b][h][i] in slots(layer) (-1 only after a device-side error);
  ///              entries >= count are left as they were
  /// max_blocks <= config().max_blocks; batch <= config().max_batch. Transfers only the blocks
  /// not already in a slot. ZeroCopyGather / DeviceResident: no host sync (graph capturable).
  /// CopyEngine: synchronizes `stream` once to read the transfer list (stream must not be the
  /// legacy default stream).
  Status make_resident(int layer, int batch, const int* seq_slots, const int* seq_lens, const int* block_ids,
                       const int* counts, int max_blocks, int* slot_ids, cudaStream_t stream) {
    NOSA_RETURN_IF_ERROR(check_layer_batch(layer, batch, "make_resident"));
    if (max_blocks < 1 || max_blocks > cfg_.max_blocks)
      return invalid_argument("make_resident: max_blocks = " + std::to_string(max_blocks) + " must be in [1, " +
                              std::to_string(cfg_.max_blocks) + "] (ResidencyConfig::max_blocks)");
    NOSA_RETURN_IF_ERROR(detail::check_pointer(seq_slots, "make_resident: seq_slots", 4));
    NOSA_RETURN_IF_ERROR(detail::check_pointer(seq_lens, "make_resident: seq_lens", 4));
    NOSA_RETURN_IF_ERROR(detail::check_pointer(block_ids, "make_resident: block_ids", 4));
    NOSA_RETURN_IF_ERROR(detail::check_pointer(counts, "make_resident: counts", 4));
    NOSA_RETURN_IF_ERROR(detail::check_pointer(slot_ids, "make_resident: slot_ids", 4));
    if (Policy::kind == TransferKind::kCopyEngine && (stream == nullptr || stream == cudaStreamLegacy))
      return invalid_argument("make_resident<CopyEngine>: stream must be a created stream (cudaMemcpyBatchAsync)");
    detail::DiffParams dp{};
    dp.seq_slots = seq_slots;
    dp.seq_lens = seq_lens;
    dp.block_ids = block_ids;
    dp.counts = counts;
    dp.slot_ids = slot_ids;
    dp.max_blocks = max_blocks;
    dp.num_heads = pc_.num_kv_heads;
    dp.slots_per_head = cfg_.slots_per_head;
    dp.block_size = B;
    dp.max_sequences = pc_.max_sequences;
    dp.max_blocks_per_sequence = pc_.max_blocks_per_sequence;
    dp.state = state(layer);
    dp.page_table = layer_table(layer);
    dp.items = items_;
    dp.counters = counters_;
    const std::size_t smem = detail::diff_smem_bytes<CudaT, B, D, kBulkCopy>(cfg_.slots_per_head, max_blocks);
    const int grid = batch * pc_.num_kv_heads;
    if constexpr (Policy::kind == TransferKind::kCopyEngine) {
      NOSA_CUDA_TRY(cudaMemsetAsync(&counters_->items, 0, sizeof(int), stream));
      detail::residency_diff_kernel<CudaT, B, D, HostLayout, false><<<grid, detail::kDiffThreads, smem, stream>>>(dp);
      NOSA_CUDA_TRY_LAUNCH(residency_diff_kernel);
      return copy_engine_transfer(layer, stream);
    } else {
      // One kernel: each (sequence, head) CTA copies its own missing blocks right after its diff.
      const SlotCacheView<T> s = slots(layer);
      dp.pool = pool_->device_base();
      dp.page_stride = pool_->page_stride();
      dp.k_slots = s.k;
      dp.v_slots = s.v;
      dp.bias_slots = s.bias;
      detail::residency_diff_kernel<CudaT, B, D, HostLayout, true, kBulkCopy><<<grid, detail::kDiffThreads, smem, stream>>>(dp);
      NOSA_CUDA_TRY_LAUNCH(residency_diff_kernel);
      return {};
    }
  }

  /// Reads the counters (synchronizes `stream`). Step values cover the time since the last read.
  Status read_counters(ResidencyCounters* out, cudaStream_t stream) {
    if (out == nullptr) return invalid_argument("read_counters: out is null");
    detail::ResidencyDeviceCounters c{};
    NOSA_CUDA_TRY(cudaMemcpyAsync(&c, counters_, sizeof(c), cudaMemcpyDeviceToHost, stream));
    NOSA_CUDA_TRY(cudaStreamSynchronize(stream));
    NOSA_CUDA_TRY(cudaMemsetAsync(&counters_->errors, 0, sizeof(unsigned), stream));
    ResidencyCounters r;
    r.total_blocks_moved = static_cast<long long>(c.moved);
    r.total_blocks_needed = static_cast<long long>(c.needed);
    r.total_bytes_moved = r.total_blocks_moved * static_cast<long long>(block_bytes());
    r.step_blocks_moved = r.total_blocks_moved - last_.moved;
    r.step_blocks_needed = r.total_blocks_needed - last_.needed;
    r.step_bytes_moved = r.step_blocks_moved * static_cast<long long>(block_bytes());
    r.step_append_loads = static_cast<long long>(c.append_loads - last_.append_loads);
    r.step_hit_rate = r.step_blocks_needed ? 1.0 - double(r.step_blocks_moved) / double(r.step_blocks_needed) : 1.0;
    r.total_hit_rate = r.total_blocks_needed ? 1.0 - double(r.total_blocks_moved) / double(r.total_blocks_needed) : 1.0;
    r.errors = c.errors;
    last_ = c;
    *out = r;
    return {};
  }

 private:
  // The diff kernel's shared memory can pass the 48 KiB default (bulk stages: 64 KiB): opt in once
  // here, for the largest max_blocks a call may pass (a launch never changes the attribute, so
  // make_resident stays capturable).
  Status allow_diff_smem() const {
    const std::size_t smem = detail::diff_smem_bytes<CudaT, B, D, kBulkCopy>(cfg_.slots_per_head, cfg_.max_blocks);
    if (smem <= 48 * 1024) return {};
    constexpr bool kCopy = Policy::kind != TransferKind::kCopyEngine;
    cudaError_t e = cudaFuncSetAttribute(detail::residency_diff_kernel<CudaT, B, D, HostLayout, kCopy, kBulkCopy>,
                                         cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem));
    if (e != cudaSuccess)
      return Status(StatusCode::kCudaError, std::string("cudaFuncSetAttribute(diff kernel, ") + std::to_string(smem) +
                                                " bytes of shared memory) failed: " + cudaGetErrorString(e));
    return {};
  }

  Status init(std::size_t L, cudaStream_t stream) {
    NOSA_CUDA_TRY(cudaMemsetAsync(block_, 0xff, L * num_slots_ * sizeof(int), stream));
    NOSA_CUDA_TRY(cudaMemsetAsync(stamp_, 0, L * num_slots_ * sizeof(int), stream));
    NOSA_CUDA_TRY(cudaMemsetAsync(clock_, 0, L * num_groups_ * sizeof(int), stream));
    NOSA_CUDA_TRY(cudaMemsetAsync(table_, 0xff, L * pc_.max_sequences * static_cast<std::size_t>(pc_.max_blocks_per_sequence) * sizeof(int), stream));
    NOSA_CUDA_TRY(cudaMemsetAsync(counters_, 0, sizeof(detail::ResidencyDeviceCounters), stream));
    return sync_page_table(stream);
  }

  Status check_layer_batch(int layer, int batch, const char* what) const {
    if (layer < 0 || layer >= pc_.num_layers)
      return invalid_argument(std::string(what) + ": layer = " + std::to_string(layer) + " out of range [0, " +
                              std::to_string(pc_.num_layers) + ")");
    if (batch < 1 || batch > cfg_.max_batch)
      return invalid_argument(std::string(what) + ": batch = " + std::to_string(batch) + " must be in [1, " +
                              std::to_string(cfg_.max_batch) + "] (ResidencyConfig::max_batch)");
    return {};
  }

  detail::SlotState state(int layer) const {
    return detail::SlotState{block_ + static_cast<std::size_t>(layer) * num_slots_, stamp_ + static_cast<std::size_t>(layer) * num_slots_,
                             clock_ + static_cast<std::size_t>(layer) * num_groups_};
  }
  const int* layer_table(int layer) const {
    return table_ + static_cast<std::size_t>(layer) * pc_.max_sequences * pc_.max_blocks_per_sequence;
  }

  detail::AppendParams<CudaT, B, D, HostLayout> append_params(int layer) const {
    detail::AppendParams<CudaT, B, D, HostLayout> p{};
    const SlotCacheView<T> s = slots(layer);
    p.pool = pool_->device_base();
    p.page_stride = pool_->page_stride();
    p.num_heads = pc_.num_kv_heads;
    p.slots_per_head = cfg_.slots_per_head;
    p.max_sequences = pc_.max_sequences;
    p.max_blocks_per_sequence = pc_.max_blocks_per_sequence;
    p.state = state(layer);
    p.page_table = layer_table(layer);
    p.k_slots = detail::as_cuda(s.k);
    p.v_slots = detail::as_cuda(s.v);
    p.bias_slots = s.bias;
    p.counters = counters_;
    return p;
  }

  // The copy engines need the list on the host: read it back (one sync), then one batch of
  // 3 contiguous copies (K, V, bias of one head's block: kHND pages) per missing block.
  Status copy_engine_transfer(int layer, cudaStream_t stream) {
    NOSA_CUDA_TRY(cudaMemcpyAsync(staging_, &counters_->items, sizeof(int), cudaMemcpyDeviceToHost, stream));
    NOSA_CUDA_TRY(cudaStreamSynchronize(stream));
    const int n = *reinterpret_cast<const int*>(staging_);
    if (n <= 0) return {};
    NOSA_CUDA_TRY(cudaMemcpyAsync(staging_, items_, n * sizeof(int4), cudaMemcpyDeviceToHost, stream));
    NOSA_CUDA_TRY(cudaStreamSynchronize(stream));
    using Fmt = typename Pool::Format;
    const int H = pc_.num_kv_heads;
    const SlotCacheView<T> s = slots(layer);
    dsts_.clear();
    srcs_.clear();
    sizes_.clear();
    for (int i = 0; i < n; ++i) {
      const int4 it = staging_[i];
      if (it.x < 0) continue;
      const char* pg = pool_->host_page(it.y);
      const std::size_t head_kv = Fmt::kv_offset(H, it.z, 0, 0) * sizeof(T);
      dsts_.push_back(s.k + static_cast<std::size_t>(it.x) * B * D);
      srcs_.push_back(pg + head_kv);
      sizes_.push_back(static_cast<std::size_t>(B) * D * sizeof(T));
      dsts_.push_back(s.v + static_cast<std::size_t>(it.x) * B * D);
      srcs_.push_back(pg + Fmt::v_byte_offset(H) + head_kv);
      sizes_.push_back(static_cast<std::size_t>(B) * D * sizeof(T));
      dsts_.push_back(s.bias + static_cast<std::size_t>(it.x) * B);
      srcs_.push_back(pg + Fmt::bias_byte_offset(H) + Fmt::bias_offset(H, it.z, 0) * sizeof(float));
      sizes_.push_back(static_cast<std::size_t>(B) * sizeof(float));
    }
    if (dsts_.empty()) return {};
    cudaMemcpyAttributes attr{};
    attr.srcAccessOrder = cudaMemcpySrcAccessOrderStream;
    std::size_t attr_idx = 0;
    NOSA_CUDA_TRY(cudaMemcpyBatchAsync(dsts_.data(), srcs_.data(), sizes_.data(), dsts_.size(), &attr, &attr_idx, 1, stream));
    return {};
  }

  Pool* pool_;
  HostPoolConfig pc_;
  ResidencyConfig cfg_;
  int num_slots_ = 0;
  int num_groups_ = 0;
  T* k_ = nullptr;
  T* v_ = nullptr;
  float* bias_ = nullptr;
  int* block_ = nullptr;
  int* stamp_ = nullptr;
  int* clock_ = nullptr;
  int* table_ = nullptr;
  int4* items_ = nullptr;
  detail::ResidencyDeviceCounters* counters_ = nullptr;
  detail::ResidencyDeviceCounters last_{};
  int4* staging_ = nullptr;
  std::vector<void*> dsts_;
  std::vector<const void*> srcs_;
  std::vector<std::size_t> sizes_;
};

NOSA_NAMESPACE_END
