// nosa: the decode step (DESIGN.md section 3, item 4): the selector, the KV residency manager and
// the attention kernel composed into what an engine calls for each layer of each decode step,
// for all L layers of a model and a batch whose sequences come and go.
//
// Per step the engine calls:
//   begin_step(ids, batch, stream)        host bookkeeping: T <- T + 1 for each sequence, host
//                                         pages reserved for the new token, seq_slots/seq_lens
//                                         uploaded. Fails cleanly (pool full, unknown id, ...)
//                                         before any sequence changes.
//   layer_step(layer, q, k, v, bias, o, lse, stream)   for layer = 0 .. L-1 (device work only)
//   end_step()                            commits the new lengths
// and to bring a prompt in (its K/V/bias computed by the engine's prefill):
//   begin_prefill(id, n) ; prefill_layer(id, layer, k, v, bias, stream) for every layer ; end_prefill(id)
//
// layer_step, on `stream` (and an internal second stream when overlap is on):
//   1. append   the new token's K, V, bias to the GPU tail slot and, write-through, to the host
//               pool (Residency::append_decode), and to the selector's compressed state
//   2. select   block ids per (sequence, KV head)                              (DeviceSelector)
//   3. resident diff against the slot cache, move only the missing blocks    (Residency)
//   4. attend   split-KV block-sparse attention over the slots, bias per policy (decode_attention)
// Overlap: the batch is selected in one call, then cut into DecodeConfig::overlap_chunks
// micro-batches. Chunk c's diff + transfer runs on `stream`; its attention runs on an internal
// side stream (forked after that transfer), except the last chunk's, which runs on `stream`. So
// chunk c's attention overlaps chunk c+1's transfer, and the last attention may overlap the
// others (two attention workspaces): a half-batch attention does not fill the GPU, and putting
// all attentions on one stream was measured slower (docs/notes/decode_step.md, which also has the
// slower variant that selected each chunk separately). `stream` waits for the side stream before
// layer_step returns (also after an error). Each sequence's computation does not depend on the
// split (fixed split-KV factor, per-entry kernels), so the result is bit-identical for any chunk
// count and with overlap off.
//
// Tensors (device memory, caller-owned, 16-byte aligned; Hq = Hkv * G):
//   q    [batch][Hq][D] T       post-RoPE queries of the current token
//   k, v [batch][Hkv][D] T      post-RoPE key and value of the current token
//   bias [batch][Hkv] fp32      its agnostic score b_t (any value for InfLLM-V2/dense)
//   o    [batch][Hq][D] T,  lse [batch][Hq] fp32
// Batch entry b is ids[b] of the last begin_step.
//
// Memory: the caller provides (a) a device workspace of DecodeSizes::device_bytes and (b) the
// pool memory of DecodeSizes::pool_bytes: pinned, mapped host memory (PinnedHostMemory) for
// ZeroCopyGather/CopyEngine, device memory for DeviceResident.
//
// CUDA graphs: with ZeroCopyGather or DeviceResident, layer_step for all layers is capturable
// (fixed launch shapes for a given batch, no allocation, no host synchronisation); begin_step and
// end_step are host bookkeeping that run outside the graph before/after each replay (begin_step
// may launch a page-table update when a sequence crosses into a new block). CopyEngine reads the
// transfer list back to the host inside make_resident and therefore cannot be captured.
#pragma once

#include <nosa/attention.cuh>
#include <nosa/config.h>
#include <nosa/detail/cuda_check.cuh>
#include <nosa/geometry.h>
#include <nosa/host_pool.h>
#include <nosa/params.h>
#include <nosa/residency.cuh>
#include <nosa/selector.cuh>
#include <nosa/status.h>
#include <nosa/transfer_policy.h>
#include <nosa/types.h>
#include <nosa/workspace.h>

#include <cuda_runtime.h>

#include <algorithm>
#include <cstring>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

NOSA_NAMESPACE_BEGIN

/// Runtime sizes of a Decoder.
struct DecodeConfig {
  int num_layers = 1;
  int num_kv_heads = 1;
  int max_sequences = 1;      ///< sequences held at once (slots)
  int max_batch = 1;          ///< largest batch of one step
  long long max_tokens = 0;   ///< capacity of one sequence in tokens
  long long pool_blocks = 0;  ///< host pool capacity in pages (one page: one block of one
                              ///< (sequence, layer), all KV heads)
  int slots_per_head = 0;     ///< GPU slots per (sequence, layer, KV head); 0 = max_blocks()
  SelectionParams params;     ///< selection parameters (validated against the block size)
  int attention_splits = 0;   ///< split-KV factor; 0 = chosen once from max_batch and the GPU
  bool overlap = true;        ///< overlap transfers with attention across micro-batches (below)
  int overlap_chunks = 2;     ///< micro-batches of a step when overlap is on (1..64); 2 measured
                              ///< fastest on an H100 (docs/notes/decode_step.md): each attention
                              ///< call has a latency floor, so smaller chunks add more than they hide

  /// Blocks attended per (sequence, KV head): the budget, or every block for the dense selector.
  template <int B>
  int max_blocks(SelectorKind kind) const {
    return kind == SelectorKind::kDense ? static_cast<int>((max_tokens + B - 1) / B) : params.budget;
  }
};

/// What a Decoder needs from the caller.
struct DecodeSizes {
  std::size_t device_bytes = 0;  ///< device workspace
  std::size_t pool_bytes = 0;    ///< pool memory (pinned host, or device for DeviceResident)
};

template <class T, class Geo, class SelectorPolicy, class Transfer, HeadLayout HostLayout = Geo::layout>
class Decoder {
  static_assert(geometry_check_v<Geo>);

 public:
  static constexpr int B = Geo::block_size;
  static constexpr int D = Geo::head_dim;
  static constexpr int G = Geo::group_size;
  static constexpr SelectorKind kKind = SelectorPolicy::kind;
  /// The slot cache is per-head (kHND) whatever the host layout.
  using SlotGeo = Geometry<B, D, G, HeadLayout::kHND>;
  using Pool = HostPool<T, Geo, HostLayout>;
  using Res = Residency<T, Geo, Transfer, HostLayout>;
  using Sel = DeviceSelector<Geo, SelectorPolicy, T>;

  static Status validate(const DecodeConfig& c) {
    auto bad = [](const char* name, long long v, const char* why) {
      return invalid_argument(std::string("DecodeConfig::") + name + " = " + std::to_string(v) + ": " + why);
    };
    if (c.num_layers < 1) return bad("num_layers", c.num_layers, "must be >= 1");
    if (c.num_kv_heads < 1) return bad("num_kv_heads", c.num_kv_heads, "must be >= 1");
    if (c.max_sequences < 1) return bad("max_sequences", c.max_sequences, "must be >= 1");
    if (c.max_batch < 1) return bad("max_batch", c.max_batch, "must be >= 1");
    if (c.max_batch > c.max_sequences) return bad("max_batch", c.max_batch, "must not exceed max_sequences");
    if (c.max_tokens < 1) return bad("max_tokens", c.max_tokens, "must be >= 1");
    if (c.pool_blocks < 1) return bad("pool_blocks", c.pool_blocks, "must be >= 1");
    if (c.slots_per_head < 0) return bad("slots_per_head", c.slots_per_head, "must be >= 0");
    if (c.overlap_chunks < 1 || c.overlap_chunks > 64) return bad("overlap_chunks", c.overlap_chunks, "must be in [1, 64]");
    if (c.slots_per_head > 0 && c.slots_per_head < c.max_blocks<B>(kKind))
      return bad("slots_per_head", c.slots_per_head, "must be >= the blocks attended per head (budget)");
    NOSA_RETURN_IF_ERROR(c.params.validate(B));
    NOSA_RETURN_IF_ERROR(Res::validate(pool_config(c), residency_config(c)));
    return Sel::validate(selector_config(c));
  }

  /// Memory the caller must provide for this configuration.
  static Status sizes(const DecodeConfig& c, DecodeSizes* out) {
    if (out == nullptr) return invalid_argument("Decoder::sizes: out is null");
    NOSA_RETURN_IF_ERROR(validate(c));
    Plan p;
    NOSA_RETURN_IF_ERROR(make_plan(c, &p));
    out->device_bytes = p.ws.total_bytes();
    out->pool_bytes = Pool::bytes_for_blocks(c.num_kv_heads, c.pool_blocks);
    return {};
  }

  /// workspace: device memory of sizes().device_bytes (256-byte aligned). pool_host/pool_device:
  /// the host and device addresses of pinned mapped host memory (PinnedHostMemory) or, for
  /// DeviceResident, pool_host = nullptr and device memory; pool_bytes >= sizes().pool_bytes.
  /// Initializes the state on `stream`. Throws nosa::Error naming the bad argument.
  Decoder(const DecodeConfig& config, void* workspace, std::size_t workspace_bytes, void* pool_host,
          void* pool_device, std::size_t pool_bytes, cudaStream_t stream)
      : cfg_(config) {
    throw_if_error(validate(cfg_));
    Plan plan;
    throw_if_error(make_plan(cfg_, &plan));
    const WorkspaceLayout& w = plan.ws;
    const Offsets& off = plan.off;
    throw_if_error(w.check(workspace, workspace_bytes, "Decoder: workspace"));
    attn_bytes_ = plan.attn_bytes;
    splits_ = plan.splits;
    max_blocks_ = cfg_.max_blocks<B>(kKind);
    pool_.emplace(pool_config(cfg_), Transfer::pool_on_host ? pool_host : nullptr, pool_device, pool_bytes);
    residency_.emplace(*pool_, residency_config(cfg_), w.at<void>(workspace, off.residency), plan.res_bytes, stream);
    selectors_.resize(cfg_.num_layers);
    for (int l = 0; l < cfg_.num_layers; ++l) {
      throw_if_error(Sel::create(selector_config(cfg_), w.at<char>(workspace, off.selector) + l * plan.sel_bytes, plan.sel_bytes,
                                 &selectors_[l]));
      throw_if_error(selectors_[l].initialize(stream));
    }
    for (int i = 0; i < 2; ++i) attn_ws_[i] = w.at<void>(workspace, off.attention[i]);
    d_slots_ = w.at<int>(workspace, off.slots);
    d_lens_ = w.at<int>(workspace, off.lens);
    block_ids_ = w.at<int>(workspace, off.block_ids);
    counts_ = w.at<int>(workspace, off.counts);
    slot_ids_ = w.at<int>(workspace, off.slot_ids);
    const Status st = [&]() -> Status {
      NOSA_CUDA_TRY(cudaHostAlloc(reinterpret_cast<void**>(&staging_), 2 * sizeof(int) * cfg_.max_batch, cudaHostAllocDefault));
      NOSA_CUDA_TRY(cudaStreamCreateWithFlags(&side_, cudaStreamNonBlocking));
      for (auto& e : events_) NOSA_CUDA_TRY(cudaEventCreateWithFlags(&e, cudaEventDisableTiming));
      return {};
    }();
    if (!st.ok()) {  // the destructor does not run for a constructor that throws
      release();
      throw Error(st);
    }
    free_slots_.reserve(cfg_.max_sequences);
    for (int s = cfg_.max_sequences - 1; s >= 0; --s) free_slots_.push_back(s);
    lengths_.assign(cfg_.max_sequences, 0);
  }
  Decoder(const Decoder&) = delete;
  Decoder& operator=(const Decoder&) = delete;
  ~Decoder() { release(); }

  const DecodeConfig& config() const { return cfg_; }
  int max_blocks() const { return max_blocks_; }
  Res& residency() { return *residency_; }
  Pool& pool() { return *pool_; }
  /// Device selection of the last layer_step's layer: block_ids [batch][Hkv][max_blocks()],
  /// counts [batch][Hkv], slot_ids like block_ids (for tests and diagnostics).
  const int* block_ids() const { return block_ids_; }
  const int* counts() const { return counts_; }
  const int* slot_ids() const { return slot_ids_; }

  // ---- membership -----------------------------------------------------------------------------
  bool contains(SequenceId id) const { return slot_of_.count(id) != 0; }
  /// Tokens of a sequence (committed), or -1 if unknown.
  long long length(SequenceId id) const {
    auto it = slot_of_.find(id);
    return it == slot_of_.end() ? -1 : lengths_[it->second];
  }
  std::size_t num_sequences() const { return slot_of_.size(); }

  /// A new, empty sequence. Errors: id already present, all max_sequences slots in use.
  Status add_sequence(SequenceId id, cudaStream_t stream) {
    NOSA_RETURN_IF_ERROR(check_idle("add_sequence"));
    if (contains(id)) return invalid_argument("add_sequence: sequence " + std::to_string(id) + " is already present");
    if (free_slots_.empty())
      return capacity_exceeded("add_sequence: all DecodeConfig::max_sequences = " + std::to_string(cfg_.max_sequences) +
                               " sequence slots are in use");
    const int slot = free_slots_.back();
    NOSA_RETURN_IF_ERROR(residency_->add_sequence(slot));
    for (auto& s : selectors_) NOSA_RETURN_IF_ERROR(s.reset_sequence(slot, stream));
    free_slots_.pop_back();
    slot_of_.emplace(id, slot);
    lengths_[slot] = 0;
    return {};
  }

  /// The sequence leaves; its pages and slots are reused. Work queued before on `stream` stays valid.
  Status drop_sequence(SequenceId id, cudaStream_t stream) {
    NOSA_RETURN_IF_ERROR(check_idle("drop_sequence"));
    auto it = slot_of_.find(id);
    if (it == slot_of_.end()) return not_found("drop_sequence: sequence " + std::to_string(id) + " is not present");
    NOSA_RETURN_IF_ERROR(residency_->drop_sequence(it->second, stream));
    free_slots_.push_back(it->second);
    lengths_[it->second] = 0;
    slot_of_.erase(it);
    return {};
  }

  // ---- prompt ingestion -------------------------------------------------------------------------
  /// Prepares appending n prompt tokens to a sequence: reserves host pages for all layers.
  /// Errors (nothing changed): unknown id, capacity, pool full.
  Status begin_prefill(SequenceId id, long long n) {
    NOSA_RETURN_IF_ERROR(check_idle("begin_prefill"));
    auto it = slot_of_.find(id);
    if (it == slot_of_.end()) return not_found("begin_prefill: sequence " + std::to_string(id) + " is not present");
    if (n < 1) return invalid_argument("begin_prefill: n = " + std::to_string(n) + ": must be >= 1");
    const long long new_len = lengths_[it->second] + n;
    if (new_len > cfg_.max_tokens)
      return capacity_exceeded("begin_prefill: sequence " + std::to_string(id) + " would have " + std::to_string(new_len) +
                               " tokens, above DecodeConfig::max_tokens = " + std::to_string(cfg_.max_tokens));
    NOSA_RETURN_IF_ERROR(pool_->reserve(it->second, new_len));
    prefill_slot_ = it->second;
    prefill_tokens_ = n;
    layer_done_.assign(cfg_.num_layers, 0);
    return {};
  }

  /// Appends the prompt's tokens to one layer: k, v [n][Hkv][D] T, bias fp32 [n][Hkv] (device or
  /// mapped memory). They go to the host pool, the compressed state and the GPU tail slot.
  Status prefill_layer(SequenceId id, int layer, const T* k, const T* v, const float* bias, cudaStream_t stream) {
    auto it = slot_of_.find(id);
    if (prefill_slot_ < 0 || it == slot_of_.end() || it->second != prefill_slot_)
      return invalid_argument("prefill_layer: sequence " + std::to_string(id) + " has no begin_prefill in progress");
    NOSA_RETURN_IF_ERROR(check_layer(layer, "prefill_layer"));
    if (layer_done_[layer])  // a second append would duplicate the prompt in the compressed state
      return invalid_argument("prefill_layer: layer " + std::to_string(layer) + " already has this prompt chunk");
    NOSA_RETURN_IF_ERROR(detail::check_pointer(k, "prefill_layer: k", 16));
    NOSA_RETURN_IF_ERROR(detail::check_pointer(v, "prefill_layer: v", 16));
    NOSA_RETURN_IF_ERROR(detail::check_pointer(bias, "prefill_layer: bias", 4));
    layer_done_[layer] = 1;  // from here on device state changes: never append this chunk twice
    NOSA_RETURN_IF_ERROR(residency_->sync_page_table(stream));
    NOSA_RETURN_IF_ERROR(residency_->append_prompt(layer, prefill_slot_, lengths_[prefill_slot_], prefill_tokens_, k, v,
                                                   bias, stream));
    if constexpr (kKind != SelectorKind::kDense)
      NOSA_RETURN_IF_ERROR(selectors_[layer].append_prompt(prefill_slot_, prefill_tokens_, k, bias, stream));
    return {};
  }

  /// Commits the prompt: the sequence's length grows by n. Call after prefill_layer for all layers.
  Status end_prefill(SequenceId id) {
    auto it = slot_of_.find(id);
    if (prefill_slot_ < 0 || it == slot_of_.end() || it->second != prefill_slot_)
      return invalid_argument("end_prefill: sequence " + std::to_string(id) + " has no begin_prefill in progress");
    for (int l = 0; l < cfg_.num_layers; ++l)
      if (!layer_done_[l]) return invalid_argument("end_prefill: prefill_layer was not called for layer " + std::to_string(l));
    lengths_[prefill_slot_] += prefill_tokens_;
    prefill_slot_ = -1;
    prefill_tokens_ = 0;
    return {};
  }

  // ---- decode step ------------------------------------------------------------------------------
  /// Starts a decode step for ids[0..batch): every sequence gains its current token (T + 1).
  /// Validates everything and reserves host pages first; on error no sequence changes (pages
  /// reserved for earlier ids stay reserved for their next tokens: no data moves).
  Status begin_step(const SequenceId* ids, int batch, cudaStream_t stream) {
    NOSA_RETURN_IF_ERROR(check_idle("begin_step"));
    if (batch < 1 || batch > cfg_.max_batch)
      return invalid_argument("begin_step: batch = " + std::to_string(batch) + " must be in [1, DecodeConfig::max_batch = " +
                              std::to_string(cfg_.max_batch) + "]");
    if (ids == nullptr) return invalid_argument("begin_step: ids is null");
    // The previous step's upload must have read the staging buffer before it is rewritten.
    if (uploaded_) NOSA_CUDA_TRY(cudaEventSynchronize(events_[kUploadEvent]));
    for (int b = 0; b < batch; ++b) {
      auto it = slot_of_.find(ids[b]);
      if (it == slot_of_.end())
        return not_found("begin_step: ids[" + std::to_string(b) + "] = sequence " + std::to_string(ids[b]) + " is not present");
      for (int c = 0; c < b; ++c)
        if (ids[c] == ids[b]) return invalid_argument("begin_step: sequence " + std::to_string(ids[b]) + " appears twice");
      const long long new_len = lengths_[it->second] + 1;
      if (new_len > cfg_.max_tokens)
        return capacity_exceeded("begin_step: sequence " + std::to_string(ids[b]) + " would have " + std::to_string(new_len) +
                                 " tokens, above DecodeConfig::max_tokens = " + std::to_string(cfg_.max_tokens));
      staging_[b] = it->second;
      staging_[cfg_.max_batch + b] = static_cast<int>(new_len);
    }
    for (int b = 0; b < batch; ++b) NOSA_RETURN_IF_ERROR(pool_->reserve(staging_[b], staging_[cfg_.max_batch + b]));
    NOSA_RETURN_IF_ERROR(residency_->sync_page_table(stream));
    NOSA_CUDA_TRY(cudaMemcpyAsync(d_slots_, staging_, sizeof(int) * batch, cudaMemcpyHostToDevice, stream));
    NOSA_CUDA_TRY(cudaMemcpyAsync(d_lens_, staging_ + cfg_.max_batch, sizeof(int) * batch, cudaMemcpyHostToDevice, stream));
    // The staging buffer is rewritten by the next begin_step: make sure this copy has read it.
    NOSA_CUDA_TRY(cudaEventRecord(events_[kUploadEvent], stream));
    uploaded_ = true;
    staged_ = true;
    layer_done_.assign(cfg_.num_layers, 0);
    batch_ = batch;
    return {};
  }

  /// One layer of the current step (shapes in the header comment). Device work only.
  Status layer_step(int layer, const T* q, const T* k, const T* v, const float* bias, T* o, float* lse,
                    cudaStream_t stream) {
    if (!staged_) return invalid_argument("layer_step: no begin_step in progress");
    NOSA_RETURN_IF_ERROR(check_layer(layer, "layer_step"));
    if (layer_done_[layer])  // the new token would be appended twice
      return invalid_argument("layer_step: layer " + std::to_string(layer) + " already ran in this step");
    NOSA_RETURN_IF_ERROR(detail::check_pointer(q, "layer_step: q", 16));
    NOSA_RETURN_IF_ERROR(detail::check_pointer(o, "layer_step: o", 16));
    NOSA_RETURN_IF_ERROR(detail::check_pointer(lse, "layer_step: lse", 4));
    NOSA_RETURN_IF_ERROR(detail::check_pointer(k, "layer_step: k", 16));
    NOSA_RETURN_IF_ERROR(detail::check_pointer(v, "layer_step: v", 16));
    NOSA_RETURN_IF_ERROR(detail::check_pointer(bias, "layer_step: bias", 4));
    layer_done_[layer] = 1;  // from here on device state changes: never run this layer twice
    NOSA_RETURN_IF_ERROR(residency_->append_decode(layer, batch_, d_slots_, d_lens_, k, v, bias, stream));
    Sel& sel = selectors_[layer];
    if constexpr (kKind != SelectorKind::kDense) NOSA_RETURN_IF_ERROR(sel.append_tokens(batch_, d_slots_, k, bias, stream));
    SelectArgs<T> sa;
    sa.batch = batch_;
    sa.seq_slots = d_slots_;
    sa.seq_lens = d_lens_;
    // A fixed bound (not this step's longest length): layer_step replayed from a CUDA graph must
    // stay valid as the sequences grow; the selector still checks each length against its state.
    sa.max_seq_len = static_cast<int>(cfg_.max_tokens);
    sa.q = q;
    sa.block_ids = block_ids_;
    sa.block_stride = max_blocks_;
    sa.counts = counts_;

    NOSA_RETURN_IF_ERROR(sel.select(sa, stream));

    // Micro-batches: the Overlap paragraph at the top of this file.
    const int chunks = cfg_.overlap ? std::min(batch_, cfg_.overlap_chunks) : 1;
    const int per = (batch_ + chunks - 1) / chunks;
    const Status st = [&]() -> Status {
      for (int first = 0; first < batch_; first += per) {
        const int n = std::min(per, batch_ - first);
        NOSA_RETURN_IF_ERROR(resident_and_attend(layer, first, n, q, o, lse, stream, /*attend_on_side=*/first + n < batch_));
      }
      return {};
    }();
    if (per < batch_) {  // join the side stream (after an error too: it may hold work of this call)
      const cudaError_t r = cudaEventRecord(events_[kJoinEvent], side_);
      const cudaError_t w = r == cudaSuccess ? cudaStreamWaitEvent(stream, events_[kJoinEvent], 0) : r;
      if (st.ok() && w != cudaSuccess) NOSA_CUDA_TRY(w);
    }
    return st;
  }

  /// Ends the step: the sequences of the batch keep their current token.
  Status end_step() {
    if (!staged_) return invalid_argument("end_step: no begin_step in progress");
    for (int b = 0; b < batch_; ++b) lengths_[staging_[b]] = staging_[cfg_.max_batch + b];
    staged_ = false;
    return {};
  }

  /// Abandons a begun step without committing its tokens (e.g. after a layer_step error). The
  /// tokens written to the pool beyond the committed length are overwritten by the next step.
  void cancel_step() { staged_ = false; }

 private:
  struct Offsets {
    int residency = 0, selector = 0, attention[2] = {0, 0}, slots = 0, lens = 0, block_ids = 0, counts = 0, slot_ids = 0;
  };

  void release() {
    for (auto& e : events_)
      if (e) cudaEventDestroy(e);
    if (side_) cudaStreamDestroy(side_);
    if (staging_) cudaFreeHost(staging_);
  }

  static HostPoolConfig pool_config(const DecodeConfig& c) {
    HostPoolConfig p;
    p.num_layers = c.num_layers;
    p.num_kv_heads = c.num_kv_heads;
    p.max_sequences = c.max_sequences;
    p.max_blocks_per_sequence = static_cast<int>((c.max_tokens + B - 1) / B);
    return p;
  }
  static ResidencyConfig residency_config(const DecodeConfig& c) {
    ResidencyConfig r;
    r.max_batch = c.max_batch;
    r.max_blocks = c.max_blocks<B>(kKind);
    r.slots_per_head = c.slots_per_head > 0 ? c.slots_per_head : r.max_blocks;
    return r;
  }
  static DeviceSelectorConfig selector_config(const DecodeConfig& c) {
    DeviceSelectorConfig s;
    s.max_sequences = c.max_sequences;
    s.num_kv_heads = c.num_kv_heads;
    s.max_tokens = c.max_tokens;
    s.max_batch = c.max_batch;
    s.params = c.params;
    return s;
  }
  /// Attention arguments for batch entries [first, first + n) (pointers offset into the step arrays).
  DecodeAttentionArgs<T> attention_args(int layer, int first, int n, const T* q, T* o, float* lse) const {
    const SlotCacheView<T> s = residency_->slots(layer);
    const std::size_t rows = static_cast<std::size_t>(first) * cfg_.num_kv_heads;
    DecodeAttentionArgs<T> a;
    a.batch = n;
    a.num_kv_heads = cfg_.num_kv_heads;
    a.max_blocks = max_blocks_;
    a.num_slots = s.num_slots;
    a.q = q + rows * G * D;
    a.o = o + rows * G * D;
    a.lse = lse + rows * G;
    a.k_cache = s.k;
    a.v_cache = s.v;
    a.bias_cache = SelectorPolicy::bias_in_attention ? s.bias : nullptr;
    a.block_ids = block_ids_ + rows * max_blocks_;
    a.slot_ids = slot_ids_ + rows * max_blocks_;
    a.counts = counts_ + rows;
    a.seq_lens = d_lens_ + first;
    a.mode = AttentionMode::kSparse;
    a.num_splits = splits_;
    return a;
  }

  /// Makes entries [first, first + n) resident on `stream`, then attends them on `stream` or,
  /// when attend_on_side, on the side stream (forked after the transfer; layer_step joins it).
  /// Attentions on the two streams use the two attention workspaces.
  Status resident_and_attend(int layer, int first, int n, const T* q, T* o, float* lse, cudaStream_t stream,
                             bool attend_on_side) {
    const std::size_t rows = static_cast<std::size_t>(first) * cfg_.num_kv_heads;
    NOSA_RETURN_IF_ERROR(residency_->make_resident(layer, n, d_slots_ + first, d_lens_ + first, block_ids_ + rows * max_blocks_,
                                                   counts_ + rows, max_blocks_, slot_ids_ + rows * max_blocks_, stream));
    const DecodeAttentionArgs<T> a = attention_args(layer, first, n, q, o, lse);
    if (!attend_on_side) return decode_attention<SlotGeo, T>(a, attn_ws_[0], attn_bytes_, stream);
    NOSA_CUDA_TRY(cudaEventRecord(events_[kForkEvent], stream));
    NOSA_CUDA_TRY(cudaStreamWaitEvent(side_, events_[kForkEvent], 0));
    return decode_attention<SlotGeo, T>(a, attn_ws_[1], attn_bytes_, side_);
  }

  /// Workspace layout and the sizes of its parts: the one code path behind sizes() and the
  /// constructor, so the two cannot disagree.
  struct Plan {
    WorkspaceLayout ws;
    Offsets off;
    std::size_t res_bytes = 0, sel_bytes = 0, attn_bytes = 0;
    int splits = 1;
  };
  static Status make_plan(const DecodeConfig& c, Plan* p) {
    const int mb = c.max_blocks<B>(kKind);
    p->res_bytes = Res::workspace_bytes(pool_config(c), residency_config(c));
    NOSA_RETURN_IF_ERROR(Sel::workspace_bytes(selector_config(c), &p->sel_bytes));
    // Split-KV factor fixed once (from the largest batch) so results never depend on the batch split.
    DecodeAttentionArgs<T> probe;
    probe.batch = c.max_batch;
    probe.num_kv_heads = c.num_kv_heads;
    probe.max_blocks = mb;
    probe.num_slots = 1;
    probe.num_splits = c.attention_splits;
    AttentionPlan plan;
    NOSA_RETURN_IF_ERROR(detail::launcher_for_t<SlotGeo, T>::plan(probe, B, G, &plan));
    p->attn_bytes = plan.workspace_bytes;
    p->splits = plan.num_splits;
    WorkspaceLayout& w = p->ws;
    Offsets& o = p->off;
    o.residency = w.add(p->res_bytes);
    o.selector = w.add(p->sel_bytes * c.num_layers);
    o.attention[0] = w.add(p->attn_bytes);  // attentions on `stream`
    o.attention[1] = w.add(p->attn_bytes);  // attentions on the side stream (they may run at once)
    const std::size_t table = static_cast<std::size_t>(c.max_batch) * c.num_kv_heads;
    o.slots = w.add(sizeof(int) * c.max_batch);
    o.lens = w.add(sizeof(int) * c.max_batch);
    o.block_ids = w.add(sizeof(int) * table * mb);
    o.counts = w.add(sizeof(int) * table);
    o.slot_ids = w.add(sizeof(int) * table * mb);
    return {};
  }

  Status check_layer(int layer, const char* what) const {
    if (layer < 0 || layer >= cfg_.num_layers)
      return invalid_argument(std::string(what) + ": layer = " + std::to_string(layer) + " out of range [0, " +
                              std::to_string(cfg_.num_layers) + ")");
    return {};
  }
  Status check_idle(const char* what) const {
    if (staged_) return invalid_argument(std::string(what) + ": a decode step is in progress (call end_step first)");
    if (prefill_slot_ >= 0)
      return invalid_argument(std::string(what) + ": a prefill is in progress (call end_prefill first)");
    return {};
  }

  DecodeConfig cfg_;
  int max_blocks_ = 0;
  std::size_t attn_bytes_ = 0;
  int splits_ = 1;
  std::optional<Pool> pool_;
  std::optional<Res> residency_;
  std::vector<Sel> selectors_;
  void* attn_ws_[2] = {nullptr, nullptr};
  int* d_slots_ = nullptr;
  int* d_lens_ = nullptr;
  int* block_ids_ = nullptr;
  int* counts_ = nullptr;
  int* slot_ids_ = nullptr;
  int* staging_ = nullptr;  // pinned: [max_batch] slots, then [max_batch] lengths
  cudaStream_t side_ = nullptr;
  // events_: `stream` -> side stream (a chunk resident), side -> `stream` (the join), the staging upload
  enum { kForkEvent = 0, kJoinEvent = 1, kUploadEvent = 2, kNumEvents = 3 };
  cudaEvent_t events_[kNumEvents] = {};
  // host bookkeeping
  std::unordered_map<SequenceId, int> slot_of_;
  std::vector<int> free_slots_;
  std::vector<long long> lengths_;
  bool staged_ = false;
  bool uploaded_ = false;
  int batch_ = 0;
  std::vector<char> layer_done_;  // layers that ran in the current step / prefill chunk
  int prefill_slot_ = -1;
  long long prefill_tokens_ = 0;
};

NOSA_NAMESPACE_END
