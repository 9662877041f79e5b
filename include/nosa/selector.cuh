// nosa: the GPU block selector (DESIGN.md section 2) for a batch of sequences and all KV heads.
//
// DeviceSelector<Geometry, Policy, T, KeyStore> keeps, per (sequence slot, KV head), the
// compressed keys and compressed agnostic scores on the device, updated incrementally as tokens
// are appended, and selects each step's blocks for a batch on one stream. Stage 1 (scores of
// the compressed keys, softmax over them, window max-pooling to blocks, forced blocks) runs on
// one of three paths, chosen per call from the config and the batch (SelectArgs::path):
//   cluster: one thread-block cluster per (entry, KV head) scans, normalizes and pools on chip
//            (2-byte KeyStore, heads that fit in C CTAs); its kernel (SelectArgs::cluster_scan)
//            keeps the logits in shared memory or, for grids of more than 1.5 waves, in registers;
//   split:   the register-logit scan with each (entry, KV head) split over head_parts CTAs of one
//            cooperative launch (no cluster: softmax statistics exchanged through global memory),
//            for batches whose jobs fit in one or two rounds of the GPU (split_path_for);
//   global:  score (split-K, logits + split statistics to global scratch) -> pool.
// Then select (query-aware top-qk, agnostic top-budget; radix select + cub::BlockScan).
// The result equals host::select_blocks (up to fp32 near-ties in the stage-1 scores).
// Engines that select a batch in parts (micro-batches) call pin_shape on the whole batch's
// arguments, then select part_of(args, first, n) for each part: every part runs the whole batch's
// kernels and the parts together equal one call bit for bit.
//
//   Geometry  nosa::Geometry<B, D, G, Layout> (layout does not matter here)
//   Policy    NosaSelector, InfllmV2Selector or DenseSelector<...>
//   T         bfloat16_t or float16_t: element type of q and of appended keys
//   KeyStore  type the compressed keys are stored in: T (default; half the bytes, tensor-core
//             scoring) or float
//
// Memory: everything lives in one caller-owned device buffer of workspace_bytes(config) bytes
// (persistent state and per-step scratch). After create(), call initialize(stream) once.
// Sequences are addressed by a dense slot 0..max_sequences-1; reset_sequence(slot) before a slot
// is reused for a new sequence.
//
// Device-side checks: argument values that live in device memory (seq_slots, seq_lens, token
// counts) cannot be checked before launch without a host sync. The kernels check them and on a
// violation do nothing for that entry (count 0 for select) and set a sticky flag that
// device_errors() reports (it synchronizes the stream: call it in tests or debug builds only).
//
// Graph capture: append_tokens and select launch fixed grids (from batch and the config), never
// allocate and never synchronize; capture them once per batch size and replay. select() calls of
// one selector share its workspace scratch (and the split path's arrive counters): issue them in
// stream order, not concurrently on several streams.
#pragma once

#include <nosa/config.h>
#include <nosa/detail/cuda_check.cuh>
#include <nosa/detail/cuda_types.cuh>
#include <nosa/detail/selection_math.h>
#include <nosa/detail/selector_append.cuh>
#include <nosa/detail/selector_cluster.cuh>
#include <nosa/detail/selector_score.cuh>
#include <nosa/detail/selector_topk.cuh>
#include <nosa/geometry.h>
#include <nosa/params.h>
#include <nosa/status.h>
#include <nosa/types.h>
#include <nosa/workspace.h>

#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <string>
#include <type_traits>

NOSA_NAMESPACE_BEGIN

/// Sizes of a DeviceSelector (runtime values; validated by DeviceSelector::validate).
struct DeviceSelectorConfig {
  int max_sequences = 1;          ///< sequence slots
  int num_kv_heads = 1;           ///< Hkv of the layer
  long long max_tokens = 0;       ///< capacity of one sequence, 1 .. kMaxSelectorTokens
  int max_batch = 1;              ///< largest batch passed to select()
  SelectionParams params;         ///< window, stride, sink, local, query_aware, budget
};

/// Longest sequence a DeviceSelector supports (tokens). Larger capacities are refused.
inline constexpr long long kMaxSelectorTokens = 1LL << 22;  // 4M tokens

/// Which stage-1 path select() runs (see DeviceSelector). kAuto (the default) takes the cluster
/// path whenever the configuration allows it (2-byte KeyStore, a sparse policy, a device with
/// thread-block clusters, and max_tokens small enough that one head's logits fit in the shared
/// memory of at most 16 CTAs: ~800K tokens for G = 16 with window 32, stride 16), else the global
/// path. kGlobal and kCluster force one (tests and benchmarks compare them on the same data);
/// kCluster where it is not available returns kNotSupported before any launch.
/// kSplit: the register-logit scan with each (entry, KV head) split over head_parts CTAs anywhere
/// on the GPU (no cluster: the parts exchange their softmax statistics through global memory),
/// one cooperative launch whose CTAs are all resident at once and take the jobs in a fixed order.
/// It needs what the register cluster kernel needs (2-byte KeyStore, G <= 16, a sparse policy, code
/// for sm_90+) and cooperative launch; kAuto takes it where it was measured faster
/// (DeviceSelector::split_path_for).
enum class SelectPath { kAuto = 0, kGlobal = 1, kCluster = 2, kSplit = 3 };

inline const char* to_string(SelectPath path) {
  switch (path) {
    case SelectPath::kAuto: return "auto";
    case SelectPath::kGlobal: return "global";
    case SelectPath::kCluster: return "cluster";
    case SelectPath::kSplit: return "split";
  }
  return "?";
}

/// Which kernel the cluster path runs. Both give the same results (up to fp32 rounding at
/// near-ties: the register kernel sums S in another order). kSharedLogits keeps each CTA's logits
/// in shared memory (plain or cp.async-staged key loads, chosen at create from the occupancy);
/// kRegisterLogits keeps them in registers behind a deeper cp.async ring (G <= 16, at most
/// detail::RegisterScan::kMaxKeys keys per CTA). kAuto (default): register logits when the grid
/// needs more than 1.5 waves of them (measured faster from 2 waves up, slower within about one:
/// docs/notes/selector.md), else shared logits. Forcing one is for tests and tuning.
enum class ClusterScan { kAuto = 0, kSharedLogits = 1, kRegisterLogits = 2 };

/// Arguments of one select() call. All pointers are device memory.
template <class T>
struct SelectArgs {
  int batch = 0;                 ///< entries, 1 .. max_batch
  const int* seq_slots = nullptr;///< int32 [batch] slot of each entry
  const int* seq_lens = nullptr; ///< int32 [batch] T (current token included); 0 = idle entry
  int max_seq_len = 0;           ///< host-side upper bound of seq_lens (<= max_tokens)
  const T* q = nullptr;          ///< [batch][Hkv*G][D] post-RoPE queries, 16-byte aligned
  int* block_ids = nullptr;      ///< int32 [batch][Hkv][block_stride]: ascending block ids
  int block_stride = 0;          ///< >= min(budget, max blocks) (sparse) or max blocks (dense)
  int* counts = nullptr;         ///< int32 [batch][Hkv]: min(budget, nb) (sparse), nb (dense)
  SelectPath path = SelectPath::kAuto;  ///< stage-1 path; results agree up to fp32 near-ties
  /// CTAs per (entry, KV head) of the cluster path, 2..16, or 0 (default) to choose it from the
  /// batch (DeviceSelector::cluster_size_for). Non-zero forces the cluster path (path kAuto or
  /// kCluster; with kGlobal it is refused). For tests and tuning; a size the device cannot run
  /// for this config (cluster_size_usable) returns kNotSupported before any launch.
  int cluster_size = 0;
  /// Cluster-path kernel (ClusterScan). Non-auto values need the cluster path (refused with
  /// kGlobal); kRegisterLogits where it cannot run for this config returns kNotSupported.
  ClusterScan cluster_scan = ClusterScan::kAuto;
  /// CTAs per (entry, KV head) of the split path, 2..kMaxHeadParts, or 0 (default) to choose it
  /// from the batch (DeviceSelector::head_parts_for). Non-zero forces the split path (path kAuto
  /// or kSplit; refused with the others). For tests and tuning; a count the device cannot run for
  /// this config (head_parts_usable) returns kNotSupported before any launch.
  int head_parts = 0;
};

/// Most CTAs per (entry, KV head) the split path takes (SelectArgs::head_parts).
inline constexpr int kMaxHeadParts = 128;

template <class Geo, class Policy, class T, class KeyStore = T>
class DeviceSelector {
  static_assert(geometry_check_v<Geo>);
  static_assert(std::is_same_v<T, bfloat16_t> || std::is_same_v<T, float16_t>,
                "nosa: DeviceSelector element type T must be bfloat16_t or float16_t");
  static_assert(std::is_same_v<KeyStore, T> || std::is_same_v<KeyStore, float>,
                "nosa: DeviceSelector KeyStore must be T or float");

 public:
  static constexpr int kBlockSize = Geo::block_size;
  static constexpr int kHeadDim = Geo::head_dim;
  static constexpr int kGroupSize = Geo::group_size;
  static constexpr SelectorKind kKind = Policy::kind;
  using Config = DeviceSelectorConfig;
  using State = detail::SelectorStateView<T, KeyStore>;

  /// Checks a configuration; the message names the bad field.
  static Status validate(const Config& cfg) {
    if (cfg.max_sequences <= 0)
      return invalid_argument("DeviceSelectorConfig::max_sequences = " + std::to_string(cfg.max_sequences) + ": must be >= 1");
    if (cfg.num_kv_heads <= 0)
      return invalid_argument("DeviceSelectorConfig::num_kv_heads = " + std::to_string(cfg.num_kv_heads) + ": must be >= 1");
    if (cfg.max_batch <= 0)
      return invalid_argument("DeviceSelectorConfig::max_batch = " + std::to_string(cfg.max_batch) + ": must be >= 1");
    if (cfg.max_tokens <= 0)
      return invalid_argument("DeviceSelectorConfig::max_tokens = " + std::to_string(cfg.max_tokens) + ": must be >= 1");
    if (cfg.max_tokens > kMaxSelectorTokens)
      return capacity_exceeded("DeviceSelectorConfig::max_tokens = " + std::to_string(cfg.max_tokens) +
                               " exceeds the supported maximum of " + std::to_string(kMaxSelectorTokens) + " tokens");
    return cfg.params.validate(kBlockSize);
  }

  /// Device bytes the caller must provide for this configuration (0 and an error if invalid).
  static Status workspace_bytes(const Config& cfg, std::size_t* bytes) {
    if (bytes == nullptr) return invalid_argument("workspace_bytes: bytes is null");
    *bytes = 0;
    NOSA_RETURN_IF_ERROR(validate(cfg));
    *bytes = layout(cfg).ws.total_bytes();
    return {};
  }

  DeviceSelector() = default;

  /// Binds a workspace (device memory, 256-byte aligned, >= workspace_bytes). No launch.
  static Status create(const Config& cfg, void* workspace, std::size_t bytes, DeviceSelector* out) {
    if (out == nullptr) return invalid_argument("create: out is null");
    NOSA_RETURN_IF_ERROR(validate(cfg));
    const Layout l = layout(cfg);
    NOSA_RETURN_IF_ERROR(l.ws.check(workspace, bytes, "workspace"));
    DeviceSelector s;
    s.cfg_ = cfg;
    s.dims_ = l.dims;
    s.st_.counts = l.ws.template at<int>(workspace, l.counts);
    s.st_.error = l.ws.template at<unsigned>(workspace, l.error);
    s.st_.ring_k = l.ws.template at<T>(workspace, l.ring_k);
    s.st_.ring_b = l.ws.template at<float>(workspace, l.ring_b);
    s.st_.keys = l.ws.template at<KeyStore>(workspace, l.keys);
    s.st_.cbias = l.ws.template at<float>(workspace, l.cbias);
    s.st_.max_sequences = cfg.max_sequences;
    s.st_.num_kv_heads = cfg.num_kv_heads;
    s.st_.max_nc = l.dims.max_nc;
    s.st_.max_tokens = cfg.max_tokens;
    s.st_.window = cfg.params.window;
    s.st_.stride = cfg.params.stride;
    s.logits_ = l.ws.template at<float>(workspace, l.logits);
    s.stats_ = l.ws.template at<float2>(workspace, l.stats);
    s.arrive_ = l.ws.template at<unsigned>(workspace, l.arrive);
    s.pq_ = l.ws.template at<float>(workspace, l.pq);
    s.pe_ = l.ws.template at<float>(workspace, l.pe);
    // resident scoring CTAs on the current device (host query, once): sizes the split-K
    int device = 0, sms = 0, per_sm = 0;
    NOSA_CUDA_TRY(cudaGetDevice(&device));
    NOSA_CUDA_TRY(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device));
    if constexpr (kKind != SelectorKind::kDense) {
      if constexpr (sizeof(KeyStore) == 2)
        NOSA_CUDA_TRY(cudaOccupancyMaxActiveBlocksPerMultiprocessor(
            &per_sm, detail::score_mma_kernel<T, KeyStore, kHeadDim, kGroupSize>, detail::kScoreThreads, 0));
      else
        NOSA_CUDA_TRY(cudaOccupancyMaxActiveBlocksPerMultiprocessor(
            &per_sm, detail::score_simt_kernel<T, KeyStore, kHeadDim, kGroupSize>, detail::kScoreThreads, 0));
    }
    s.resident_ctas_ = std::max(1, sms * std::max(per_sm, 1));
    NOSA_RETURN_IF_ERROR(s.plan_clusters(device));
    *out = s;
    return {};
  }

  /// Zeroes every slot's token count, the error flag and the split path's arrive counters. Call
  /// once after create(), before any other call (the split path's waits rely on the zeroed
  /// counters).
  Status initialize(cudaStream_t stream) {
    NOSA_RETURN_IF_ERROR(check_created());
    NOSA_CUDA_TRY(cudaMemsetAsync(st_.counts, 0, sizeof(int) * cfg_.max_sequences, stream));
    NOSA_CUDA_TRY(cudaMemsetAsync(st_.error, 0, sizeof(unsigned), stream));
    if constexpr (kKind != SelectorKind::kDense)
      NOSA_CUDA_TRY(cudaMemsetAsync(arrive_, 0, sizeof(unsigned) * static_cast<std::size_t>(cfg_.max_batch) *
                                                    cfg_.num_kv_heads * detail::kArriveStride, stream));
    return {};
  }

  /// Forgets the tokens of one slot (a new sequence joins there).
  Status reset_sequence(int slot, cudaStream_t stream) {
    NOSA_RETURN_IF_ERROR(check_created());
    NOSA_RETURN_IF_ERROR(check_slot(slot, "reset_sequence: slot"));
    NOSA_CUDA_TRY(cudaMemsetAsync(st_.counts + slot, 0, sizeof(int), stream));
    return {};
  }

  /// Decode append: one new token per entry.
  ///   seq_slots int32 [batch] (distinct slots), k [batch][Hkv][D] T (post-RoPE keys),
  ///   bias fp32 [batch][Hkv] (agnostic scores b_t; may be any values for InfLLM-V2/dense).
  /// A slot already at max_tokens is skipped and flags kCapacityExceeded (device_errors()).
  Status append_tokens(int batch, const int* seq_slots, const T* k, const float* bias, cudaStream_t stream) {
    NOSA_RETURN_IF_ERROR(check_created());
    if (batch <= 0) return invalid_argument("append_tokens: batch = " + std::to_string(batch) + ": must be >= 1");
    NOSA_RETURN_IF_ERROR(detail::check_pointer(seq_slots, "append_tokens: seq_slots", alignof(int)));
    NOSA_RETURN_IF_ERROR(detail::check_pointer(k, "append_tokens: k", sizeof(T)));
    NOSA_RETURN_IF_ERROR(detail::check_pointer(bias, "append_tokens: bias", alignof(float)));
    detail::append_tokens_kernel<T, KeyStore, kHeadDim><<<batch, 256, 0, stream>>>(st_, seq_slots, k, bias);
    NOSA_CUDA_TRY_LAUNCH("append_tokens_kernel");
    return {};
  }

  /// Prompt append: num_tokens tokens of one sequence (chunked prefill works too).
  ///   k [num_tokens][Hkv][D] T (token-major NHD), bias fp32 [num_tokens][Hkv].
  /// Returns kCapacityExceeded before any launch when num_tokens > max_tokens; a prompt that
  /// would pass max_tokens given the device-side length is skipped whole and flagged.
  Status append_prompt(int slot, long long num_tokens, const T* k, const float* bias, cudaStream_t stream) {
    NOSA_RETURN_IF_ERROR(check_created());
    NOSA_RETURN_IF_ERROR(check_slot(slot, "append_prompt: slot"));
    if (num_tokens < 0)
      return invalid_argument("append_prompt: num_tokens = " + std::to_string(num_tokens) + " is negative");
    if (num_tokens > cfg_.max_tokens)
      return capacity_exceeded("append_prompt: num_tokens = " + std::to_string(num_tokens) +
                               " exceeds max_tokens = " + std::to_string(cfg_.max_tokens));
    if (num_tokens == 0) return {};
    NOSA_RETURN_IF_ERROR(detail::check_pointer(k, "append_prompt: k", sizeof(T)));
    NOSA_RETURN_IF_ERROR(detail::check_pointer(bias, "append_prompt: bias", alignof(float)));
    const int c = cfg_.params.window, s = cfg_.params.stride;
    const long long windows = num_tokens / s + 2;  // windows ending in any n consecutive tokens
    const int threads = (kHeadDim + 1 + 31) / 32 * 32;
    const dim3 g1(static_cast<unsigned>(windows), cfg_.num_kv_heads);
    detail::append_prompt_windows_kernel<T, KeyStore, kHeadDim><<<g1, threads, 0, stream>>>(st_, slot, num_tokens, k, bias);
    NOSA_CUDA_TRY_LAUNCH("append_prompt_windows_kernel");
    const dim3 g2(static_cast<unsigned>(std::min<long long>(num_tokens, c)), cfg_.num_kv_heads);
    detail::append_prompt_ring_kernel<T, KeyStore, kHeadDim><<<g2, threads, 0, stream>>>(st_, slot, num_tokens, k, bias);
    NOSA_CUDA_TRY_LAUNCH("append_prompt_ring_kernel");
    detail::append_prompt_count_kernel<T, KeyStore><<<1, 1, 0, stream>>>(st_, slot, num_tokens);
    NOSA_CUDA_TRY_LAUNCH("append_prompt_count_kernel");
    return {};
  }

  /// Selects the blocks of every (entry, KV head) of a batch; see SelectArgs for shapes.
  Status select(const SelectArgs<T>& a, cudaStream_t stream) {
    NOSA_RETURN_IF_ERROR(check_created());
    NOSA_RETURN_IF_ERROR(check_select(a));
    Stage1 s1;
    NOSA_RETURN_IF_ERROR(stage1_for(a, &s1));
    detail::SelectParams<T, KeyStore> p = params_for(a, s1);
    NOSA_RETURN_IF_ERROR(launch_stage1(p, a.batch, s1, stream));
    const dim3 grid_sel(cfg_.num_kv_heads, a.batch);
    auto sel = detail::select_kernel<T, KeyStore, kKind>;
    std::size_t sel_smem = 0;
    if (p.select_smem) {
      sel_smem = sizeof(float) * 2 * static_cast<std::size_t>(dims_.max_nb);
      if (sel_smem > 48 * 1024)
        NOSA_CUDA_TRY(cudaFuncSetAttribute(sel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(sel_smem)));
    }
    sel<<<grid_sel, detail::kSelectThreads, sel_smem, stream>>>(p);
    NOSA_CUDA_TRY_LAUNCH("select_kernel");
    return {};
  }

  /// Fixes a->path, cluster_size, cluster_scan and head_parts to the shape select(*a) would run, for callers
  /// that select a batch in parts (micro-batches): a call with the pinned shape on a part
  /// (part_of) computes each entry bit for bit as the whole-batch call does, because the
  /// per-entry kernels then no longer depend on the batch size. *per_entry is false where that
  /// cannot hold (a sparse policy on the global path: its split-K parts follow the batch): select
  /// the whole batch in one call there. Nothing is launched; errors are select()'s.
  Status pin_shape(SelectArgs<T>* a, bool* per_entry) const {
    if (a == nullptr || per_entry == nullptr) return invalid_argument("pin_shape: a and per_entry must not be null");
    NOSA_RETURN_IF_ERROR(check_created());
    NOSA_RETURN_IF_ERROR(check_select(*a));
    Stage1 s1;
    NOSA_RETURN_IF_ERROR(stage1_for(*a, &s1));
    a->head_parts = 0;
    if (s1.parts > 0) {
      a->path = SelectPath::kSplit;
      a->cluster_size = 0;
      a->cluster_scan = ClusterScan::kAuto;
      a->head_parts = s1.parts;
    } else if (s1.cluster > 0) {
      a->path = SelectPath::kCluster;
      a->cluster_size = s1.cluster;
      a->cluster_scan = s1.plan == &register_clusters_[s1.cluster] ? ClusterScan::kRegisterLogits : ClusterScan::kSharedLogits;
    } else {
      a->path = SelectPath::kGlobal;
      a->cluster_scan = ClusterScan::kAuto;
    }
    *per_entry = s1.parts > 0 || s1.cluster > 0 || kKind == SelectorKind::kDense;
    return {};
  }

  /// `whole` restricted to its entries [first, first + n): seq_slots, seq_lens and counts offset
  /// by first, q and block_ids by first entries' rows, batch n, the shape fields kept (pin them
  /// first with pin_shape). For selecting a batch in parts.
  SelectArgs<T> part_of(const SelectArgs<T>& whole, int first, int n) const {
    const std::size_t rows = static_cast<std::size_t>(first) * cfg_.num_kv_heads;
    SelectArgs<T> a = whole;
    a.batch = n;
    a.seq_slots += first;
    a.seq_lens += first;
    a.q += rows * kGroupSize * kHeadDim;
    a.block_ids += rows * static_cast<std::size_t>(whole.block_stride);
    a.counts += rows;
    return a;
  }

  /// Launches only stage 1 (compressed-key scan, softmax, pooling to Pq/Pe; no top-k) on the
  /// path select() would take for `a`. For benchmarks: the part whose bytes scale with the keys.
  Status stage1_only(const SelectArgs<T>& a, cudaStream_t stream) {
    NOSA_RETURN_IF_ERROR(check_created());
    NOSA_RETURN_IF_ERROR(check_select(a));
    Stage1 s1;
    NOSA_RETURN_IF_ERROR(stage1_for(a, &s1));
    return launch_stage1(params_for(a, s1), a.batch, s1, stream);
  }

  /// Synchronizes `stream` and reports (then clears) the sticky device-side error flags.
  Status device_errors(cudaStream_t stream) {
    NOSA_RETURN_IF_ERROR(check_created());
    unsigned flags = 0;
    NOSA_CUDA_TRY(cudaMemcpyAsync(&flags, st_.error, sizeof(unsigned), cudaMemcpyDeviceToHost, stream));
    NOSA_CUDA_TRY(cudaStreamSynchronize(stream));
    if (flags == 0) return {};
    NOSA_CUDA_TRY(cudaMemsetAsync(st_.error, 0, sizeof(unsigned), stream));
    if (flags & detail::kSelErrSlot)
      return invalid_argument("a seq_slots entry is outside [0, max_sequences = " + std::to_string(cfg_.max_sequences) + ")");
    if (flags & detail::kSelErrCapacity)
      return capacity_exceeded("an append would pass max_tokens = " + std::to_string(cfg_.max_tokens) +
                               " (the append was skipped)");
    return invalid_argument("a seq_lens entry is negative, above max_seq_len or above the tokens appended to its slot "
                            "(its count was set to 0)");
  }

  const Config& config() const { return cfg_; }
  /// Largest number of blocks of one sequence: ceil(max_tokens / B).
  int max_blocks() const { return dims_.max_nb; }
  /// Largest number of compressed keys of one sequence.
  int max_compressed() const { return dims_.max_nc; }
  /// Device state (pointers into the workspace) for tests and diagnostics:
  /// keys of (slot, h) at keys + ((slot*Hkv + h)*max_nc + j)*D, scores at cbias + (slot*Hkv + h)*max_nc + j.
  const State& state() const { return st_; }
  /// Split-K parts the global path's scoring kernel uses for a batch of `batch` entries.
  int splits_for(int batch) const { return choose_splits(batch); }
  /// Scoring CTAs of the global path resident on the device at once (measured at create()): the
  /// fixed 256-key split rule applies once batch * Hkv * splits fills two such waves.
  int resident_scan_ctas() const { return resident_ctas_; }
  /// Largest cluster size the cluster path may use with this config on this device (0: the
  /// cluster path is not available; kAuto then takes the global path).
  int max_cluster_size() const {
    for (int c = detail::kMaxClusterSize; c >= detail::kMinClusterSize; --c)
      if (cluster_size_usable(c)) return c;
    return 0;
  }
  /// Whether SelectArgs::cluster_size = c can run (the head fits in c CTAs and c CTAs with that
  /// shared memory can be co-resident on this device).
  bool cluster_size_usable(int c) const {
    return c >= detail::kMinClusterSize && c <= detail::kMaxClusterSize && clusters_[c].active > 0;
  }
  /// Whether SelectArgs::cluster_scan = kRegisterLogits can run at cluster size c.
  bool register_scan_usable(int c) const { return cluster_size_usable(c) && register_clusters_[c].active > 0; }
  /// Clusters of cluster size c that the device holds at once with kernel `scan` (kAuto: the one
  /// auto runs for `batch`), from the occupancy query at create(); 0 where it cannot run. A grid
  /// of batch x Hkv clusters takes ceil(batch x Hkv / this) waves.
  int resident_clusters(int c, ClusterScan scan, int batch = 1) const {
    if (!cluster_size_usable(c)) return 0;
    if (scan == ClusterScan::kAuto) scan = cluster_scan_for(batch, c);
    return scan == ClusterScan::kRegisterLogits ? register_clusters_[c].active : clusters_[c].active;
  }
  /// The cluster kernel cluster_scan = kAuto runs for `batch` entries at cluster size c: register
  /// logits where usable and the grid (batch x Hkv clusters) needs more than 1.5 waves of them.
  /// Measured on an H200 (docs/notes/selector.md): the register kernel was 6-16 % faster from 2.06
  /// waves up and 3-17 % slower at 1.03 and 1.14 waves (its shorter tail matters only over many
  /// waves; within about one, the shared-logit kernel's staged scan streams faster per CTA).
  ClusterScan cluster_scan_for(int batch, int c) const {
    const long long clusters = static_cast<long long>(batch) * cfg_.num_kv_heads;
    return register_scan_usable(c) && 2 * clusters > 3LL * register_clusters_[c].active ? ClusterScan::kRegisterLogits
                                                                                        : ClusterScan::kSharedLogits;
  }
  /// Cluster size (CTAs per (entry, KV head)) select() uses for a batch of `batch` entries on
  /// `path`; 0 means the global path, or (path kAuto) the split path where split_path_for(batch).
  /// Fixed by the config and batch (graph replay stays valid).
  int cluster_size_for(int batch, SelectPath path = SelectPath::kAuto) const {
    if (path == SelectPath::kGlobal || path == SelectPath::kSplit) return 0;
    if (path == SelectPath::kAuto && split_path_for(batch)) return 0;
    return choose_cluster(batch);
  }
  /// Whether SelectArgs::head_parts = n can run: a part's keys (and halo) fit the register scan,
  /// at least one group of n such CTAs is resident at once, and the device launches cooperatively.
  bool head_parts_usable(int n) const { return n >= 2 && n <= kMaxHeadParts && split_plans_[n].groups > 0; }
  /// Groups of n CTAs a split launch holds at once (0: n is not usable). A batch of J (entry, head)
  /// jobs takes ceil(J / groups) jobs per CTA, one after the other.
  int split_groups(int n) const { return head_parts_usable(n) ? split_plans_[n].groups : 0; }
  /// CTAs per (entry, KV head) the split path uses for `batch` entries (0: it is not available).
  int head_parts_for(int batch) const { return choose_parts(batch); }
  /// Whether path kAuto takes the split path for `batch` entries: where it is available, heads of
  /// at least kSplitAutoMinKeys compressed keys, and the jobs fit in at most two positions (each
  /// CTA takes one or two jobs). Measured on an H100 (docs/notes/selector.md), stage 1: 2-21 %
  /// faster than the cluster path at those shapes at 32K and 128K (it runs on all 132 SMs where
  /// 16-CTA clusters use 116, and one round ends with no second wave to wait for); from 4
  /// positions up a job's fixed cost (q and first tiles, the statistics exchange through L2) makes
  /// it 1-10 % slower, and at 16K it lost at 16 x 8 and 64 x 2 (19.7 against 17.2 us): the
  /// cluster kernels keep those shapes.
  bool split_path_for(int batch) const {
    if (dims_.max_nc < kSplitAutoMinKeys) return false;
    const int n = choose_parts(batch);
    return n > 0 && split_positions(batch, n) <= 2;
  }

 private:
  struct Dims {
    int max_nc = 0, max_nb = 0, max_splits = 1, pool_splits = 1, ld = 0, pool_window_cap = 0;
    int max_parts = 2;  ///< split path: most parts per head (a part owns at least 32 keys)
  };
  struct Layout {
    WorkspaceLayout ws;
    Dims dims;
    int counts, error, ring_k, ring_b, keys, cbias, logits, stats, arrive, pq, pe;
  };

  // Pooling: ~256 compressed keys' worth of blocks per CTA. Scoring: split-K chosen per call
  // (choose_splits) with at least kMinKeysPerSplit keys per CTA (kScanKeysPerSplit for large grids).
  static constexpr int kKeysPerSplit = 256;
  static constexpr int kMinKeysPerSplit = 64;
  static constexpr int kScanKeysPerSplit = 256;  // scoring CTAs of large grids
  static constexpr int kFixedSplitWaves = 2;
  static constexpr int kClusterKeysPerCta = 512;  // cluster path: target keys per CTA (choose_cluster)
  static constexpr int kSplitKeysPerPart = 256;    // split path: target keys per part (choose_parts)
  static constexpr int kSplitAutoMinKeys = 2047;   // split path: shortest heads auto takes it for (32K tokens)

  static Layout layout(const Config& cfg) {
    Layout l;
    const SelectionParams& sp = cfg.params;
    Dims& d = l.dims;
    d.max_nc = detail::num_compressed(cfg.max_tokens, sp.window, sp.stride);
    d.max_nb = detail::num_blocks(cfg.max_tokens, kBlockSize);
    d.pool_splits = std::max(1, std::min(1024, (d.max_nc + kKeysPerSplit - 1) / kKeysPerSplit));
    d.max_splits = std::max(1, std::min(4096, (d.max_nc + kMinKeysPerSplit - 1) / kMinKeysPerSplit));
    d.ld = (std::max(d.max_nc, 1) + 3) / 4 * 4;
    d.max_parts = std::max(2, std::min(kMaxHeadParts, (d.max_nc + 31) / 32));
    const int bps = (d.max_nb + d.pool_splits - 1) / d.pool_splits;
    d.pool_window_cap = static_cast<int>((static_cast<long long>(bps) * kBlockSize + sp.window) / sp.stride + 2);
    const std::size_t seq_heads = static_cast<std::size_t>(cfg.max_sequences) * cfg.num_kv_heads;
    const std::size_t batch_heads = static_cast<std::size_t>(cfg.max_batch) * cfg.num_kv_heads;
    const bool sparse = kKind != SelectorKind::kDense;
    l.counts = l.ws.add(sizeof(int) * cfg.max_sequences);
    l.error = l.ws.add(sizeof(unsigned));
    l.ring_k = l.ws.add(sizeof(T) * seq_heads * sp.window * kHeadDim);
    l.ring_b = l.ws.add(sizeof(float) * seq_heads * sp.window);
    l.keys = l.ws.add(sizeof(KeyStore) * seq_heads * d.max_nc * kHeadDim);
    l.cbias = l.ws.add(sizeof(float) * seq_heads * d.max_nc);
    l.logits = l.ws.add(sparse ? sizeof(float) * batch_heads * kGroupSize * d.ld : 0);
    // split statistics of the global path ([splits][G] per job) or of the split path ([parts][G])
    l.stats = l.ws.add(sparse ? sizeof(float2) * batch_heads * std::max(d.max_splits, d.max_parts) * kGroupSize : 0);
    l.arrive = l.ws.add(sparse ? sizeof(unsigned) * batch_heads * detail::kArriveStride : 0);
    l.pq = l.ws.add(sparse ? sizeof(float) * batch_heads * d.max_nb : 0);
    l.pe = l.ws.add(sparse ? sizeof(float) * batch_heads * d.max_nb : 0);
    return l;
  }

  /// Split-K for `batch` entries. Large grids: a fixed kScanKeysPerSplit keys per CTA once that
  /// fills kFixedSplitWaves waves of resident CTAs (measured 5-10 % faster than the wave model
  /// there on an H100, docs/notes/selector.md). Smaller grids: minimizes
  /// (waves of resident CTAs) x (keys per CTA), so the scan neither starves the GPU at batch 1
  /// nor leaves a nearly empty last wave.
  int choose_splits(int batch) const {
    const long long pairs = static_cast<long long>(batch) * cfg_.num_kv_heads;
    const long long resident = std::max(1, resident_ctas_);
    const int fixed = std::min(dims_.max_splits, std::max(1, (dims_.max_nc + kScanKeysPerSplit - 1) / kScanKeysPerSplit));
    if (pairs * fixed >= kFixedSplitWaves * resident) return fixed;
    int best = 1;
    long long best_cost = -1;
    for (int s = 1; s <= dims_.max_splits; ++s) {
      const long long waves = (pairs * s + resident - 1) / resident;
      const long long per = (dims_.max_nc + s - 1) / s;
      const long long cost = waves * (((per + 31) / 32) * 32 + 16);  // +16: fixed cost of a CTA
      if (best_cost < 0 || cost < best_cost) best = s, best_cost = cost;
    }
    return best;
  }

  /// One cluster size's plan (plan_clusters): keys and shared memory per CTA, resident clusters.
  struct ClusterPlan {
    int keys = 0;
    int smem = 0;
    int active = 0;
    int variant = 0;  ///< which cluster kernel: detail::kClusterPlain / kClusterStaged / kClusterRegisters
  };

  /// Whether the register-logit cluster kernel exists for this instantiation (one m16 tile of
  /// query heads).
  static constexpr bool kHasRegisterCluster = kGroupSize <= 16;
  using ClusterKernel = void (*)(detail::SelectParams<T, KeyStore>);
  /// The cluster-path kernels of this instantiation (2-byte keys, sparse policies only), by how
  /// the scan reads keys and keeps logits: kClusterPlain (plain loads, logits in shared memory),
  /// kClusterStaged (cp.async double buffer, logits in shared memory), kClusterRegisters (deep
  /// cp.async ring, logits in registers; G <= 16).
  template <int V>
  static ClusterKernel cluster_kernel() {
    constexpr bool need_pe = kKind == SelectorKind::kNosa;
    if constexpr (V == detail::kClusterRegisters && kHasRegisterCluster)
      return detail::score_pool_cluster_registers_kernel<T, KeyStore, kHeadDim, kGroupSize, need_pe>;
    else
      return detail::score_pool_cluster_kernel<T, KeyStore, kHeadDim, kGroupSize, need_pe,
                                               V == detail::kClusterPlain ? 0 : 2>;
  }
  /// The split path's kernel (exists where the register cluster kernel does).
  static ClusterKernel split_kernel() {
    constexpr bool need_pe = kKind == SelectorKind::kNosa;
    if constexpr (kHasRegisterCluster) return detail::score_pool_split_kernel<T, KeyStore, kHeadDim, kGroupSize, need_pe>;
    else return nullptr;
  }
  static ClusterKernel cluster_kernel_for(int variant) {
    if (variant == detail::kClusterRegisters) return cluster_kernel<detail::kClusterRegisters>();
    return variant == detail::kClusterStaged ? cluster_kernel<detail::kClusterStaged>() : cluster_kernel<detail::kClusterPlain>();
  }

  /// Kernel attributes of a cluster-path or split-path kernel: the largest dynamic shared memory
  /// the device allows next to its static shared memory (dyn_max, <= 0: none) and the whole
  /// L1/shared carveout as shared memory (the keys stream past L1; they are read once);
  /// prepare_cluster_kernel also allows cluster sizes above 8 where the device accepts them
  /// (non_portable). The same values from every selector of this instantiation: a later create()
  /// cannot shrink what an earlier one's launches need.
  static Status prepare_kernel(ClusterKernel kernel, int optin, int* dyn_max) {
    cudaFuncAttributes fa{};
    NOSA_CUDA_TRY(cudaFuncGetAttributes(&fa, kernel));
    *dyn_max = optin - static_cast<int>(fa.sharedSizeBytes);
    if (*dyn_max > 0) NOSA_CUDA_TRY(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, *dyn_max));
    NOSA_CUDA_TRY(cudaFuncSetAttribute(kernel, cudaFuncAttributePreferredSharedMemoryCarveout,
                                       static_cast<int>(cudaSharedmemCarveoutMaxShared)));
    return {};
  }
  template <int V>
  static Status prepare_cluster_kernel(int optin, int* dyn_max, bool* non_portable) {
    auto kernel = cluster_kernel<V>();
    NOSA_RETURN_IF_ERROR(prepare_kernel(kernel, optin, dyn_max));
    *non_portable = cudaFuncSetAttribute(kernel, cudaFuncAttributeNonPortableClusterSizeAllowed, 1) == cudaSuccess;
    if (!*non_portable) (void)cudaGetLastError();  // refused: sizes above 8 stay unusable
    return {};
  }

  /// Shared memory and resident clusters of variant V at cluster size c with `keys` keys per CTA
  /// (active 0: it does not fit or cannot launch here).
  /// halo: the register kernel's extra keys per CTA (detail::register_scan_halo), which its
  /// shared memory and tile count must also cover.
  /// non_portable: whether the kernel accepted cluster sizes above the portable 8.
  template <int V>
  static ClusterPlan plan_cluster_variant(int c, int keys, int halo, int dyn_max, bool non_portable) {
    constexpr bool regs = V == detail::kClusterRegisters;
    std::size_t smem = 0;
    if constexpr (regs) {
      // the register kernel exists only for G <= 16 and holds at most kMaxKeys keys per CTA
      if constexpr (!kHasRegisterCluster) return ClusterPlan{keys, 0, 0, V};
      else if (keys + halo > detail::RegisterScan<T, kHeadDim, kGroupSize>::kMaxKeys) return ClusterPlan{keys, 0, 0, V};
      else smem = detail::register_cluster_smem_bytes<T, kHeadDim, kGroupSize>(keys + halo);
    } else {
      smem = detail::cluster_smem_bytes<T, kHeadDim, kGroupSize, V == detail::kClusterPlain ? 0 : 2>(keys);
    }
    ClusterPlan plan{keys, static_cast<int>(smem), 0, V};
    if (c > detail::kMaxPortableClusterSize && !non_portable) return plan;
    if (dyn_max <= 0 || smem > static_cast<std::size_t>(dyn_max)) return plan;
    cudaLaunchAttribute attr;
    const cudaLaunchConfig_t lc = cluster_launch_config(c, V, dim3(static_cast<unsigned>(c), 1, 1), smem, nullptr, &attr);
    if (cudaOccupancyMaxActiveClusters(&plan.active, cluster_kernel<V>(), &lc) != cudaSuccess) {
      (void)cudaGetLastError();  // this size cannot be launched here: leave it unusable
      plan.active = 0;
    }
    return plan;
  }

  /// The shared-logit kernel: the staged scan (cp.async double buffer) hides the key latency
  /// better per CTA, the plain one keeps more CTAs resident; measured on an H200
  /// (docs/notes/selector.md) the staged one was 10-23 % faster with 3 CTAs per SM and slower with
  /// 2. Rule: staged while it keeps at least 3/4 of the plain scan's resident clusters.
  /// -DNOSA_CLUSTER_STAGING=0|2 forces one (A/B runs).
  static bool choose_staging(const ClusterPlan& plain, const ClusterPlan& staged) {
#if defined(NOSA_CLUSTER_STAGING)
    (void)plain;
    return NOSA_CLUSTER_STAGING > 0 && staged.active > 0;
#else
    return staged.active > 0 && 4 * staged.active >= 3 * plain.active;
#endif
  }

  /// Fills clusters_ (host queries, once at create): for each C in 2..16 (9..16 only where the
  /// non-portable size attribute is accepted) the keys per CTA for max_nc, its shared memory, and
  /// how many such clusters can be resident. Leaves every entry unusable for fp32 keys, the dense
  /// policy, devices without cluster launch, and heads too long for 16 CTAs.
  /// Fills split_plans_ (host queries, once at create; called by plan_clusters once the code is
  /// known to be sm_90+): for each n in 2..max_parts (kMaxHeadParts, or fewer for short heads) the
  /// keys per part for max_nc, the register scan's shared memory for them plus the halo, and how
  /// many groups of n CTAs are resident at once.
  Status plan_split(int device, int optin, int halo) {
    if constexpr (!kHasRegisterCluster) {
      split_why_not_ = "it needs G <= 16 (the register-logit scan)";
      return {};
    } else {
      int coop = 0, sms = 0;
      NOSA_CUDA_TRY(cudaDeviceGetAttribute(&coop, cudaDevAttrCooperativeLaunch, device));
      NOSA_CUDA_TRY(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device));
      if (!coop) {
        split_why_not_ = "the device has no cooperative launch";
        return {};
      }
      auto kernel = split_kernel();
      int dyn_max = 0;
      NOSA_RETURN_IF_ERROR(prepare_kernel(kernel, optin, &dyn_max));
      using R = detail::RegisterScan<T, kHeadDim, kGroupSize>;
      bool any = false;
      for (int n = 2; n <= dims_.max_parts; ++n) {
        const int keys = detail::score_chunk(std::max(dims_.max_nc, 1), n);
        if (keys + halo > R::kMaxKeys) continue;
        const std::size_t smem = detail::register_cluster_smem_bytes<T, kHeadDim, kGroupSize>(keys + halo);
        if (dyn_max <= 0 || smem > static_cast<std::size_t>(dyn_max)) continue;
        int per_sm = 0;
        if (cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, kernel, detail::kRegisterScanThreads, smem) != cudaSuccess) {
          (void)cudaGetLastError();
          continue;
        }
        split_plans_[n] = SplitPlan{keys, static_cast<int>(smem), per_sm * sms / n};
        any = any || split_plans_[n].groups > 0;
      }
      split_why_not_ = any ? ""
                           : "one head's " + std::to_string(dims_.max_nc) + " compressed keys do not split into at most " +
                                 std::to_string(dims_.max_parts) + " parts of at most " +
                                 std::to_string(R::kMaxKeys - halo) + " keys";
      return {};
    }
  }

  Status plan_clusters(int device) {
    for (auto& c : clusters_) c = ClusterPlan{};
    for (auto& c : register_clusters_) c = ClusterPlan{};
    for (auto& n : split_plans_) n = SplitPlan{};
    split_why_not_ = "not planned";
    if constexpr (kKind == SelectorKind::kDense) {
      cluster_why_not_ = split_why_not_ = "the dense policy has no stage 1";
      return {};
    } else if constexpr (sizeof(KeyStore) != 2) {
      cluster_why_not_ = split_why_not_ = "it needs 2-byte keys (KeyStore = T)";
      return {};
    } else {
      int has_clusters = 0, optin = 0;
      NOSA_CUDA_TRY(cudaDeviceGetAttribute(&has_clusters, cudaDevAttrClusterLaunch, device));
      NOSA_CUDA_TRY(cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, device));
      if (!has_clusters) {
        cluster_why_not_ = split_why_not_ = "the device has no thread-block clusters (needs sm_90 or newer)";
        return {};
      }
      cudaFuncAttributes fa{};
      NOSA_CUDA_TRY(cudaFuncGetAttributes(&fa, cluster_kernel<detail::kClusterPlain>()));
      // The kernel body exists only in code compiled for sm_90+ (__CUDA_ARCH__ >= 900). ptxVersion is
      // the virtual architecture the loaded code was compiled for (also when the driver JIT-compiles
      // compute_80 PTX for an sm_90 device, where binaryVersion would say 90).
      const int code_arch = fa.ptxVersion > 0 ? fa.ptxVersion : fa.binaryVersion;
      if (code_arch < 90) {
        cluster_why_not_ = "the selector's code for this device was compiled for compute_" + std::to_string(code_arch) +
                           " (thread-block clusters need code for sm_90 or newer)";
        split_why_not_ = cluster_why_not_;
        return {};
      }
      int dyn_plain = 0, dyn_staged = 0, dyn_regs = 0;
      bool np_plain = false, np_staged = false, np_regs = false;
      NOSA_RETURN_IF_ERROR(prepare_cluster_kernel<detail::kClusterPlain>(optin, &dyn_plain, &np_plain));
      NOSA_RETURN_IF_ERROR(prepare_cluster_kernel<detail::kClusterStaged>(optin, &dyn_staged, &np_staged));
      if constexpr (kHasRegisterCluster)
        NOSA_RETURN_IF_ERROR(prepare_cluster_kernel<detail::kClusterRegisters>(optin, &dyn_regs, &np_regs));
      const int max_c = np_plain ? detail::kMaxClusterSize : detail::kMaxPortableClusterSize;
      const int halo = detail::register_scan_halo(cfg_.params.window, cfg_.params.stride, kBlockSize);
      for (int c = detail::kMinClusterSize; c <= max_c; ++c) {
        const int keys = detail::score_chunk(std::max(dims_.max_nc, 1), c);  // >= score_chunk(nc, c), nc <= max_nc
        const ClusterPlan plain = plan_cluster_variant<detail::kClusterPlain>(c, keys, 0, dyn_plain, np_plain);
        const ClusterPlan staged = plan_cluster_variant<detail::kClusterStaged>(c, keys, 0, dyn_staged, np_staged);
        clusters_[c] = choose_staging(plain, staged) ? staged : plain;
        register_clusters_[c] = plan_cluster_variant<detail::kClusterRegisters>(c, keys, halo, dyn_regs, np_regs);
      }
      NOSA_RETURN_IF_ERROR(plan_split(device, optin, halo));
      cluster_why_not_ = max_cluster_size() > 0
                             ? ""
                             : "one head's " + std::to_string(dims_.max_nc) + " compressed keys (max_tokens = " +
                                   std::to_string(cfg_.max_tokens) + ") do not fit in the shared memory of " +
                                   std::to_string(max_c) + " CTAs";
      return {};
    }
  }

  /// Cluster size for `batch` entries (0: none usable): the smallest usable C whose CTAs hold at
  /// most kClusterKeysPerCta compressed keys of the longest head, else the largest usable C.
  /// Measured on an H100 (bench_selector, Hkv 2/8, batch 1-128; docs/notes/selector.md): at 128K
  /// (8191 keys) C = 16 was fastest at every batch, and a wave model that traded cluster size for
  /// fewer waves (C = 8-11) was 20-30 % slower; at 32K, C = 16 (128 keys per CTA) was 40 % slower
  /// than 512 keys per CTA. A CTA's scan is latency-bound, so it wants enough CTAs streaming keys
  /// but enough keys per CTA to amortize its prologue and the cluster barriers.
  int choose_cluster(int batch) const {
    (void)batch;
    int largest = 0;
    for (int c = detail::kMinClusterSize; c <= detail::kMaxClusterSize; ++c) {
      if (clusters_[c].active <= 0) continue;
      if (clusters_[c].keys <= kClusterKeysPerCta) return c;
      largest = c;
    }
    return largest;
  }

  /// Jobs per CTA (positions) of a split launch with n parts for `batch` entries.
  long long split_positions(int batch, int n) const {
    const long long jobs = static_cast<long long>(batch) * cfg_.num_kv_heads;
    return (jobs + split_plans_[n].groups - 1) / split_plans_[n].groups;
  }
  /// Parts per job of the split path for `batch` entries (0: not available): the fewest positions,
  /// then keys per part closest to kSplitKeysPerPart, then the fewest parts. Measured on an H100
  /// (BM_HeadParts, docs/notes/selector.md): a job's fixed cost makes more positions of smaller
  /// parts slower (16 x 8 at 128K: 132 us at 16 parts in 4 positions, 224 at 64 in 16), and in
  /// one position 256-key parts were the fastest or within 5 % of it (batch 1 at 128K).
  int choose_parts(int batch) const {
    int best = 0;
    long long best_pos = 0, best_dist = 0;
    for (int n = 2; n <= kMaxHeadParts; ++n) {
      if (!head_parts_usable(n)) continue;
      const long long pos = split_positions(batch, n);
      const long long dist = std::abs(split_plans_[n].keys - kSplitKeysPerPart);
      if (best == 0 || pos < best_pos || (pos == best_pos && dist < best_dist)) best = n, best_pos = pos, best_dist = dist;
    }
    return best;
  }

  /// The stage-1 shape of one call: split path (parts > 0), cluster path (cluster > 0, plan: its
  /// kernel) or global path (all zero).
  struct Stage1 {
    int cluster = 0;
    const ClusterPlan* plan = nullptr;
    int parts = 0;
  };
  /// Resolves SelectArgs::path, head_parts, cluster_size and cluster_scan into the call's Stage1.
  Status stage1_for(const SelectArgs<T>& a, Stage1* s1) const {
    *s1 = Stage1{};
    if (a.head_parts != 0 || a.path == SelectPath::kSplit) {
      if (a.path != SelectPath::kAuto && a.path != SelectPath::kSplit)
        return invalid_argument("select: head_parts = " + std::to_string(a.head_parts) + " is set but path = " +
                                std::string(to_string(a.path)));
      if (a.cluster_size != 0)
        return invalid_argument("select: cluster_size = " + std::to_string(a.cluster_size) + " is set but path = split");
      if (a.cluster_scan != ClusterScan::kAuto) return invalid_argument("select: cluster_scan is set but path = split");
      if (a.head_parts != 0) {
        if (a.head_parts < 2 || a.head_parts > kMaxHeadParts)
          return invalid_argument("select: head_parts = " + std::to_string(a.head_parts) + " is outside [2, " +
                                  std::to_string(kMaxHeadParts) + "]");
        if (!head_parts_usable(a.head_parts))
          return not_supported("select: head_parts = " + std::to_string(a.head_parts) +
                               " cannot run for this selector on this device" +
                               (split_why_not_.empty() ? std::string(" (keys per part, shared memory or occupancy)")
                                                       : ": " + split_why_not_));
        s1->parts = a.head_parts;
      } else {
        s1->parts = choose_parts(a.batch);
        if (s1->parts == 0) return not_supported("select: path = split is not available for this selector: " + split_why_not_);
      }
      return {};
    }
    if (a.path == SelectPath::kAuto && a.cluster_size == 0 && a.cluster_scan == ClusterScan::kAuto &&
        split_path_for(a.batch)) {
      s1->parts = choose_parts(a.batch);
      return {};
    }
    return cluster_for(a, &s1->cluster, &s1->plan);
  }

  /// The cluster size of this call (0 = global path) from SelectArgs::path and cluster_size, and
  /// the cluster kernel's plan from cluster_scan (nullptr on the global path).
  Status cluster_for(const SelectArgs<T>& a, int* cluster, const ClusterPlan** plan) const {
    *cluster = 0;
    *plan = nullptr;
    if (a.path != SelectPath::kAuto && a.path != SelectPath::kGlobal && a.path != SelectPath::kCluster)
      return invalid_argument("select: path = " + std::to_string(static_cast<int>(a.path)) +
                              " is not a SelectPath (auto, global, cluster, split)");
    if (a.cluster_scan != ClusterScan::kAuto && a.cluster_scan != ClusterScan::kSharedLogits &&
        a.cluster_scan != ClusterScan::kRegisterLogits)
      return invalid_argument("select: cluster_scan = " + std::to_string(static_cast<int>(a.cluster_scan)) +
                              " is not a ClusterScan (auto, shared logits, register logits)");
    if (a.path == SelectPath::kGlobal && a.cluster_scan != ClusterScan::kAuto)
      return invalid_argument("select: cluster_scan is set but path = global");
    if (a.cluster_size != 0) {
      if (a.path == SelectPath::kGlobal)
        return invalid_argument("select: cluster_size = " + std::to_string(a.cluster_size) + " is set but path = global");
      if (a.cluster_size < detail::kMinClusterSize || a.cluster_size > detail::kMaxClusterSize)
        return invalid_argument("select: cluster_size = " + std::to_string(a.cluster_size) + " is outside [" +
                                std::to_string(detail::kMinClusterSize) + ", " + std::to_string(detail::kMaxClusterSize) + "]");
      if (clusters_[a.cluster_size].active <= 0)
        return not_supported("select: cluster_size = " + std::to_string(a.cluster_size) +
                             " cannot run for this selector on this device" +
                             (cluster_why_not_.empty() ? std::string(" (shared memory or occupancy)") : ": " + cluster_why_not_));
      *cluster = a.cluster_size;
    } else if (a.path != SelectPath::kGlobal) {
      *cluster = choose_cluster(a.batch);
      if (*cluster == 0 && (a.path == SelectPath::kCluster || a.cluster_scan != ClusterScan::kAuto))
        return not_supported("select: path = cluster is not available for this selector: " + cluster_why_not_);
    }
    if (*cluster == 0) return {};
    const ClusterPlan& regs = register_clusters_[*cluster];
    if (a.cluster_scan == ClusterScan::kRegisterLogits) {
      if (regs.active <= 0)
        return not_supported("select: cluster_scan = register logits cannot run at cluster size " + std::to_string(*cluster) +
                             (kHasRegisterCluster ? " (keys per CTA, shared memory or occupancy)" : " (it needs G <= 16)"));
      *plan = &regs;
    } else if (a.cluster_scan == ClusterScan::kAuto && cluster_scan_for(a.batch, *cluster) == ClusterScan::kRegisterLogits) {
      *plan = &regs;
    } else {
      *plan = &clusters_[*cluster];
    }
    return {};
  }

  /// Launch configuration of cluster kernel `variant`: clusters of `c` CTAs along x, that kernel's
  /// threads per CTA (the occupancy query and the launch use the same one). `attr` must outlive
  /// the returned configuration.
  static cudaLaunchConfig_t cluster_launch_config(int c, int variant, dim3 grid, std::size_t smem, cudaStream_t stream,
                                                  cudaLaunchAttribute* attr) {
    attr->id = cudaLaunchAttributeClusterDimension;
    attr->val.clusterDim.x = static_cast<unsigned>(c);
    attr->val.clusterDim.y = 1;
    attr->val.clusterDim.z = 1;
    cudaLaunchConfig_t lc{};
    lc.gridDim = grid;
    lc.blockDim = dim3(variant == detail::kClusterRegisters ? detail::kRegisterScanThreads : detail::kScoreThreads, 1, 1);
    lc.dynamicSmemBytes = smem;
    lc.stream = stream;
    lc.attrs = attr;
    lc.numAttrs = 1;
    return lc;
  }

  /// Clusters of a persistent launch of the register cluster kernel for `batch` entries (0: one
  /// cluster per (entry, head), grid (C, Hkv, batch)). Persistent, `active` clusters (as many
  /// as the device holds at once) each take every active-th job, and start the next job's loads
  /// while the current one ends. No cluster waits for another, so it stays correct when other
  /// work on the GPU leaves fewer of them resident (they then run in more waves). Measured on an
  /// H100 against one cluster per job (docs/notes/selector.md): 4-6 % faster between 3 and 6
  /// waves of clusters (16 x 8 and 64 x 2 at 128K, 4.6 waves: 134 -> 126-129 us), 1-2 % slower
  /// at 2 waves, 2-5 % slower from 9 waves up (the hardware's order of clusters balances SMs of
  /// different streaming rates; a fixed order does not), equal at one wave.
  int persistent_clusters(int batch, int active) const {
    const long long jobs = static_cast<long long>(batch) * cfg_.num_kv_heads;
    return active > 0 && jobs > 3LL * active && jobs <= 6LL * active ? active : 0;
  }

  /// Stage 1 on the chosen path: the cluster kernel, or score + pool (nothing for dense).
  Status launch_stage1(const detail::SelectParams<T, KeyStore>& p, int batch, const Stage1& s1, cudaStream_t stream) const {
    const int cluster = s1.cluster;
    const ClusterPlan* plan = s1.plan;
    if constexpr (kKind != SelectorKind::kDense) {
      constexpr bool need_pe = kKind == SelectorKind::kNosa;
      if constexpr (sizeof(KeyStore) == 2 && kHasRegisterCluster) {
        if (s1.parts > 0) {  // cooperative: every CTA resident at once (GroupExchange waits)
          const SplitPlan& sp = split_plans_[s1.parts];
          const long long jobs = static_cast<long long>(batch) * cfg_.num_kv_heads;
          const int groups = static_cast<int>(std::min<long long>(sp.groups, jobs));
          cudaLaunchAttribute attr;
          attr.id = cudaLaunchAttributeCooperative;
          attr.val.cooperative = 1;
          cudaLaunchConfig_t lc{};
          lc.gridDim = dim3(static_cast<unsigned>(groups * s1.parts), 1, 1);
          lc.blockDim = dim3(detail::kRegisterScanThreads, 1, 1);
          lc.dynamicSmemBytes = static_cast<std::size_t>(sp.smem);
          lc.stream = stream;
          lc.attrs = &attr;
          lc.numAttrs = 1;
          NOSA_CUDA_TRY(cudaLaunchKernelEx(&lc, split_kernel(), p));
          return {};
        }
      }
      if constexpr (sizeof(KeyStore) == 2) {
        if (cluster > 0) {
          const int persistent = plan->variant == detail::kClusterRegisters ? persistent_clusters(batch, plan->active) : 0;
          const dim3 grid = persistent > 0 ? dim3(static_cast<unsigned>(cluster), static_cast<unsigned>(persistent), 1)
                                           : dim3(static_cast<unsigned>(cluster), cfg_.num_kv_heads, batch);
          cudaLaunchAttribute attr;
          const cudaLaunchConfig_t lc =
              cluster_launch_config(cluster, plan->variant, grid, static_cast<std::size_t>(plan->smem), stream, &attr);
          NOSA_CUDA_TRY(cudaLaunchKernelEx(&lc, cluster_kernel_for(plan->variant), p));
          return {};
        }
      }
      const dim3 grid_split(p.splits, cfg_.num_kv_heads, batch);
      const dim3 grid_pool(dims_.pool_splits, cfg_.num_kv_heads, batch);
      if constexpr (sizeof(KeyStore) == 2) {
        detail::score_mma_kernel<T, KeyStore, kHeadDim, kGroupSize><<<grid_split, detail::kScoreThreads, 0, stream>>>(p);
      } else {
        detail::score_simt_kernel<T, KeyStore, kHeadDim, kGroupSize><<<grid_split, detail::kScoreThreads, 0, stream>>>(p);
      }
      NOSA_CUDA_TRY_LAUNCH("score_kernel");
      const std::size_t smem = sizeof(float) * (kGroupSize + (need_pe ? 2 : 1) * dims_.pool_window_cap);
      auto pool = detail::pool_kernel<T, KeyStore, kGroupSize, need_pe>;
      if (smem > 48 * 1024) NOSA_CUDA_TRY(cudaFuncSetAttribute(pool, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem)));
      pool<<<grid_pool, detail::kPoolThreads, smem, stream>>>(p);
      NOSA_CUDA_TRY_LAUNCH("pool_kernel");
    }
    return {};
  }

  Status check_created() const {
    if (st_.counts == nullptr) return invalid_argument("DeviceSelector used before create()");
    return {};
  }
  Status check_slot(int slot, const char* name) const {
    if (slot < 0 || slot >= cfg_.max_sequences)
      return invalid_argument(std::string(name) + " = " + std::to_string(slot) + " is outside [0, max_sequences = " +
                              std::to_string(cfg_.max_sequences) + ")");
    return {};
  }
  Status check_select(const SelectArgs<T>& a) const {
    if (a.batch <= 0 || a.batch > cfg_.max_batch)
      return invalid_argument("select: batch = " + std::to_string(a.batch) + " is outside [1, max_batch = " +
                              std::to_string(cfg_.max_batch) + "]");
    if (a.max_seq_len < 0)
      return invalid_argument("select: max_seq_len = " + std::to_string(a.max_seq_len) + " is negative");
    if (a.max_seq_len > cfg_.max_tokens)
      return capacity_exceeded("select: max_seq_len = " + std::to_string(a.max_seq_len) + " exceeds max_tokens = " +
                               std::to_string(cfg_.max_tokens));
    NOSA_RETURN_IF_ERROR(detail::check_pointer(a.seq_slots, "select: seq_slots", alignof(int)));
    NOSA_RETURN_IF_ERROR(detail::check_pointer(a.seq_lens, "select: seq_lens", alignof(int)));
    NOSA_RETURN_IF_ERROR(detail::check_pointer(a.q, "select: q", 16));
    NOSA_RETURN_IF_ERROR(detail::check_pointer(a.block_ids, "select: block_ids", alignof(int)));
    NOSA_RETURN_IF_ERROR(detail::check_pointer(a.counts, "select: counts", alignof(int)));
    const int need = kKind == SelectorKind::kDense ? dims_.max_nb : std::min(cfg_.params.budget, dims_.max_nb);
    if (a.block_stride < need)
      return invalid_argument("select: block_stride = " + std::to_string(a.block_stride) + " is below " +
                              std::to_string(need) + (kKind == SelectorKind::kDense ? " (max blocks)" : " (min(budget, max blocks))"));
    return {};
  }
  detail::SelectParams<T, KeyStore> params_for(const SelectArgs<T>& a, const Stage1& s1) const {
    const int cluster = s1.cluster;
    detail::SelectParams<T, KeyStore> p{};
    p.st = st_;
    p.seq_slots = a.seq_slots;
    p.seq_lens = a.seq_lens;
    p.q = a.q;
    p.logits = logits_;
    p.stats = stats_;
    p.arrive = arrive_;
    p.pq = pq_;
    p.pe = pe_;
    p.block_ids = a.block_ids;
    p.counts = a.counts;
    p.batch = a.batch;
    p.block_stride = a.block_stride;
    p.ld = dims_.ld;
    // cluster and split paths: CTAs per head, and the keys one CTA owns at most
    p.splits = s1.parts > 0 ? s1.parts : cluster > 0 ? cluster : choose_splits(a.batch);
    p.cluster_keys = s1.parts > 0 ? split_plans_[s1.parts].keys : cluster > 0 ? clusters_[cluster].keys : 0;
    p.pool_splits = dims_.pool_splits;
    p.max_nb = dims_.max_nb;
    p.max_seq_len = a.max_seq_len;
    p.block_size = kBlockSize;
    p.sink = cfg_.params.sink;
    p.local = cfg_.params.local;
    p.query_aware = cfg_.params.query_aware;
    p.budget = cfg_.params.budget;
    p.pool_window_cap = dims_.pool_window_cap;
    // Pq and Pe on chip up to 16K blocks per sequence (128 KiB); above, they stay in global (L2)
    p.select_smem = (kKind != SelectorKind::kDense && dims_.max_nb <= 16384) ? 1 : 0;
    p.scale = 1.0f / std::sqrt(static_cast<float>(kHeadDim));
    return p;
  }

  Config cfg_{};
  Dims dims_{};
  State st_{};
  float* logits_ = nullptr;
  float2* stats_ = nullptr;
  unsigned* arrive_ = nullptr;
  float* pq_ = nullptr;
  float* pe_ = nullptr;
  int resident_ctas_ = 1;
  /// Cluster path per cluster size C: keys per CTA, dynamic shared bytes, clusters resident at
  /// once (cudaOccupancyMaxActiveClusters at create; 0 = C not usable).
  ClusterPlan clusters_[detail::kMaxClusterSize + 1] = {};           ///< shared-logit kernel per cluster size
  ClusterPlan register_clusters_[detail::kMaxClusterSize + 1] = {};  ///< register-logit kernel (active 0: cannot run)
  std::string cluster_why_not_ = "not planned";
  /// Split path per parts count n: keys per part, dynamic shared bytes, groups of n resident at once.
  struct SplitPlan {
    int keys = 0;
    int smem = 0;
    int groups = 0;
  };
  SplitPlan split_plans_[kMaxHeadParts + 1] = {};
  std::string split_why_not_ = "not planned";
};

NOSA_NAMESPACE_END
