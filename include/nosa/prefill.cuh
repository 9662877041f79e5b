// nosa: GPU prefill of one sequence: dense causal attention (NOSA^F and the plain baseline),
// per-row block selection, and block-sparse causal attention (NOSA^S). DESIGN.md section 2:
// prompt row i is exactly a decode step with T = i + 1 (compressed key j visible iff
// s*j + c <= i + 1, cur = i / B, tokens <= i only, bias added after the 1/sqrt(D) scale).
//
// Data layout (one sequence; bf16 or fp16 elements T; fp32 bias and statistics):
//   K, V          [Hkv][kv_stride][D]   contiguous per KV head, token t of head h at
//                                        (h * kv_stride + t) * D. Rows 0 .. length-1 exist.
//   bias          [Hkv][kv_stride]      fp32 agnostic score b_t (log domain)
//   q             [num_rows][Hq][D]     rows first_row .. first_row + num_rows - 1, Hq = Hkv*G,
//                                        query head qh = kv_head * G + g
//   o             [num_rows][Hq][D]     T
//   lse           [num_rows][Hq]        fp32, natural log of the softmax denominator (with b_t)
//   compressed    keys_hi/keys_lo [Hkv][capacity][D] (T), scores [Hkv][capacity] (fp32):
//                 Kc[j] = keys_hi + keys_lo (the fp32 mean split into two T values), bc[j]
//   selection     block_ids [num_rows][Hkv][budget] int32 ascending, counts [num_rows][Hkv]
//
// Chunked prefill: call with consecutive [first_row, first_row + num_rows) ranges; a chunk needs
// K/V/bias of tokens < first_row + num_rows only (the earlier chunks' tokens included) and the
// compressed keys of the windows complete by then. Results equal one pass bit for bit.
//
// Every entry point validates its arguments (Status naming the argument, nothing launched on
// error), takes an explicit stream, allocates nothing, and never synchronizes the host, so a
// fixed-shape call sequence can be captured in a CUDA graph.
#pragma once

#include <nosa/config.h>
#include <nosa/detail/cuda_check.cuh>
#include <nosa/detail/cuda_types.cuh>
#include <nosa/detail/prefill_attention.cuh>
#include <nosa/detail/prefill_select.cuh>
#include <nosa/detail/selection_math.h>
#include <nosa/geometry.h>
#include <nosa/params.h>
#include <nosa/status.h>
#include <nosa/types.h>
#include <nosa/workspace.h>

#include <cuda_runtime.h>

#include <atomic>
#include <cmath>
#include <cstddef>
#include <string>
#include <type_traits>

NOSA_NAMESPACE_BEGIN

/// Which attention a prefill row performs.
enum class PrefillAttention : int {
  kDense = 0,   ///< causal over every earlier token (NOSA^F, and the dense baseline)
  kSparse = 1,  ///< causal over the row's own selected blocks (NOSA^S)
};

/// The prompt's keys/values of one sequence (see the layout above).
template <class T>
struct PrefillKV {
  const T* k = nullptr;       ///< [num_kv_heads][kv_stride][D]
  const T* v = nullptr;       ///< [num_kv_heads][kv_stride][D]
  const float* bias = nullptr;  ///< [num_kv_heads][kv_stride]; needed for bias and compression
  long long kv_stride = 0;    ///< token capacity per head, >= length
  long long length = 0;       ///< tokens present (rows must be < length)
  int num_kv_heads = 0;
};

/// Compressed keys and scores of one sequence, written by prefill_compress, read by
/// prefill_select. keys_lo may be null: stage 1 then uses bf16/fp16-rounded keys (faster,
/// near-ties may differ from the fp32 contract).
template <class T>
struct PrefillCompressed {
  T* keys_hi = nullptr;   ///< [num_kv_heads][capacity][D]
  T* keys_lo = nullptr;   ///< [num_kv_heads][capacity][D] or null
  float* scores = nullptr;  ///< [num_kv_heads][capacity]
  int capacity = 0;       ///< compressed keys per head the arrays hold
};

template <class T>
struct PrefillAttentionArgs {
  PrefillKV<T> kv;
  long long first_row = 0;
  long long num_rows = 0;
  const T* q = nullptr;  ///< [num_rows][Hq][D]
  T* o = nullptr;        ///< [num_rows][Hq][D]
  float* lse = nullptr;  ///< [num_rows][Hq]
  PrefillAttention mode = PrefillAttention::kDense;
  bool use_bias = true;  ///< add b_t after the scale (NOSA); false for InfLLM-V2 / baseline
  const int* block_ids = nullptr;  ///< sparse: [num_rows][Hkv][max_selected], ascending
  const int* counts = nullptr;     ///< sparse: [num_rows][Hkv]
  int max_selected = 0;            ///< sparse: row stride of block_ids (the budget)
};

template <class T>
struct PrefillSelectArgs {
  SelectorKind selector = SelectorKind::kNosa;  ///< kNosa or kInfllmV2
  SelectionParams params;
  PrefillCompressed<T> compressed;  ///< keys for every window complete by the last row
  int num_kv_heads = 0;
  long long first_row = 0;
  long long num_rows = 0;
  const T* q = nullptr;      ///< [num_rows][Hq][D]
  int* block_ids = nullptr;  ///< [num_rows][Hkv][params.budget] written, ascending
  int* counts = nullptr;     ///< [num_rows][Hkv] written: min(budget, ceil((i+1)/B))
};
// Block size: Geo::block_size B is the selection unit (any of 16, 32, 64, 128); block_ids are
// block indices m (tokens [m*B, m*B + B)), params.budget / local / sink / query_aware count
// blocks of B tokens.

namespace detail {
namespace prefill {

template <class T>
inline Status check_element_ptr(const void* ptr, const char* name) {
  return check_pointer(ptr, name, 16);
}

template <class Geo>
inline Status check_geometry(const char* fn) {
  static_assert(geometry_check_v<Geo>);
  // Every Geometry block size (16, 32, 64, 128) divides the 64-token key tile or is a multiple.
  if (Geo::block_size % 16 != 0 || (kKeyTile % Geo::block_size != 0 && Geo::block_size % kKeyTile != 0))
    return not_supported(std::string(fn) + ": block_size " + std::to_string(Geo::block_size) + " (supported: 16, 32, 64, 128)");
  if (Geo::head_dim != 64 && Geo::head_dim != 128 && Geo::head_dim != 256)
    return not_supported(std::string(fn) + ": head_dim " + std::to_string(Geo::head_dim) + " (supported: 64, 128, 256)");
  if (Geo::group_size < 1 || Geo::group_size > 32)
    return not_supported(std::string(fn) + ": group_size " + std::to_string(Geo::group_size) + " (supported: 1..32)");
  return {};
}

inline int round_up(int x, int m) { return (x + m - 1) / m * m; }

/// What the launches need to know of the current device, queried once per device (a pure
/// query, also legal while a stream is being captured): the dynamic shared memory one block
/// may opt in to, and whether it is sm_90 (where sm_90a code, the wgmma bodies, may run).
struct DeviceLimits {
  int smem_optin = 0;
  bool sm90 = false;
};
inline Status device_limits(DeviceLimits* limits) {
  constexpr int kCachedDevices = 64;
  static std::atomic<int> cached[kCachedDevices];  // 0: not yet queried; else smem * 2 + sm90
  int device = 0;
  NOSA_CUDA_TRY(cudaGetDevice(&device));
  const bool cacheable = device >= 0 && device < kCachedDevices;
  int packed = cacheable ? cached[device].load(std::memory_order_relaxed) : 0;
  if (packed == 0) {
    int smem = 0, major = 0, minor = 0;
    NOSA_CUDA_TRY(cudaDeviceGetAttribute(&smem, cudaDevAttrMaxSharedMemoryPerBlockOptin, device));
    NOSA_CUDA_TRY(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device));
    NOSA_CUDA_TRY(cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, device));
    packed = smem * 2 + (major == 9 && minor == 0 ? 1 : 0);
    if (cacheable) cached[device].store(packed, std::memory_order_relaxed);
  }
  limits->smem_optin = packed / 2;
  limits->sm90 = (packed & 1) != 0;
  return {};
}

}  // namespace prefill
}  // namespace detail

/// Bytes of dynamic shared memory the attention kernel needs for rows < max_tokens (sparse
/// mode keeps a bitmask of ceil(max_tokens / 64) bits, one per 64-token key tile). sm90: for an
/// sm_90 device, whose sm_90a body stages 128-token K/V tiles (default: the larger of the two).
template <class Geo>
inline int prefill_attention_smem_bytes(long long max_tokens, bool sm90 = true) {
  return detail::prefill::attn_smem_bytes<Geo::head_dim>(
      (detail::num_blocks(max_tokens, detail::prefill::kKeyTile) + 31) / 32, sm90);
}

/// Dense or block-sparse causal attention of rows [first_row, first_row + num_rows).
/// Needs no workspace. o/lse rows of q rows past the chunk are untouched.
/// Sparse: block m of row i covers tokens [m*B, m*B + B) of Geo::block_size B (any of 16, 32,
/// 64, 128); row i attends to the tokens <= i of the blocks in its ascending list.
template <class Geo, class T>
Status prefill_attention(const PrefillAttentionArgs<T>& a, cudaStream_t stream) {
  static_assert(std::is_same_v<T, bfloat16_t> || std::is_same_v<T, float16_t>,
                "prefill_attention: T must be nosa::bfloat16_t or nosa::float16_t");
  constexpr int D = Geo::head_dim, G = Geo::group_size, B = Geo::block_size;
  NOSA_RETURN_IF_ERROR(detail::prefill::check_geometry<Geo>("prefill_attention"));
  const auto& kv = a.kv;
  if (kv.num_kv_heads < 1 || kv.num_kv_heads > 65535)
    return invalid_argument("prefill_attention: kv.num_kv_heads = " + std::to_string(kv.num_kv_heads) + ": must be in 1..65535");
  if (a.first_row < 0) return invalid_argument("prefill_attention: first_row = " + std::to_string(a.first_row) + " is negative");
  if (a.num_rows < 0) return invalid_argument("prefill_attention: num_rows = " + std::to_string(a.num_rows) + " is negative");
  if (kv.length < 0 || kv.length > kv.kv_stride)
    return invalid_argument("prefill_attention: kv.length = " + std::to_string(kv.length) + " must be in 0..kv.kv_stride (" +
                            std::to_string(kv.kv_stride) + ")");
  if (a.first_row + a.num_rows > kv.length)
    return invalid_argument("prefill_attention: rows up to " + std::to_string(a.first_row + a.num_rows) +
                            " exceed the prompt length kv.length = " + std::to_string(kv.length));
  if (a.num_rows > (1LL << 30)) return invalid_argument("prefill_attention: num_rows too large (max 2^30 per call)");
  if (a.mode != PrefillAttention::kDense && a.mode != PrefillAttention::kSparse)
    return invalid_argument("prefill_attention: mode is not kDense or kSparse");
  if (a.num_rows == 0) return {};
  NOSA_RETURN_IF_ERROR(detail::check_pointer(a.q, "prefill_attention: q", 16));
  NOSA_RETURN_IF_ERROR(detail::check_pointer(kv.k, "prefill_attention: kv.k", 16));
  NOSA_RETURN_IF_ERROR(detail::check_pointer(kv.v, "prefill_attention: kv.v", 16));
  NOSA_RETURN_IF_ERROR(detail::check_pointer(a.o, "prefill_attention: o", 16));
  NOSA_RETURN_IF_ERROR(detail::check_pointer(a.lse, "prefill_attention: lse", 4));
  if (a.use_bias) NOSA_RETURN_IF_ERROR(detail::check_pointer(kv.bias, "prefill_attention: kv.bias", 4));
  const bool sparse = a.mode == PrefillAttention::kSparse;
  if (sparse) {
    NOSA_RETURN_IF_ERROR(detail::check_pointer(a.block_ids, "prefill_attention: block_ids", 4));
    NOSA_RETURN_IF_ERROR(detail::check_pointer(a.counts, "prefill_attention: counts", 4));
    if (a.max_selected < 1)
      return invalid_argument("prefill_attention: max_selected = " + std::to_string(a.max_selected) + ": must be >= 1");
  }

  namespace pf = detail::prefill;
  constexpr int kRows = pf::kTileRows / G;
  pf::AttnParams p{};
  p.q = a.q;
  p.k = kv.k;
  p.v = kv.v;
  p.bias = kv.bias;
  p.o = a.o;
  p.lse = a.lse;
  p.block_ids = a.block_ids;
  p.counts = a.counts;
  p.kv_stride = kv.kv_stride;
  p.first_row = a.first_row;
  p.num_rows = static_cast<int>(a.num_rows);
  p.num_kv_heads = kv.num_kv_heads;
  p.max_selected = a.max_selected;
  p.mask_words = sparse ? (detail::num_blocks(a.first_row + a.num_rows, pf::kKeyTile) + 31) / 32 : 0;
  p.scale_log2 = static_cast<float>(1.4426950408889634 / std::sqrt(static_cast<double>(D)));
  pf::DeviceLimits limits;
  NOSA_RETURN_IF_ERROR(pf::device_limits(&limits));
  const int smem = pf::attn_smem_bytes<D>(p.mask_words, limits.sm90);
  const int smem_max = limits.smem_optin;
  if (smem > smem_max)
    return not_supported("prefill_attention: rows up to first_row + num_rows = " + std::to_string(a.first_row + a.num_rows) +
                         " need " + std::to_string(smem) + " bytes of shared memory (tile bitmask included), the device allows " +
                         std::to_string(smem_max));
  const dim3 grid(static_cast<unsigned>((a.num_rows + kRows - 1) / kRows), static_cast<unsigned>(kv.num_kv_heads));
  auto launch = [&](auto kernel) -> Status {
    NOSA_CUDA_TRY(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, smem));
    kernel<<<grid, pf::kAttnThreads, smem, stream>>>(p);
    NOSA_CUDA_TRY_LAUNCH("prefill_attention_kernel");
    return {};
  };
  using CT = detail::cuda_type_t<T>;
  if (sparse) {
    return a.use_bias ? launch(pf::prefill_attention_kernel<CT, D, G, B, true, true>)
                      : launch(pf::prefill_attention_kernel<CT, D, G, B, true, false>);
  }
  // Dense attention does not depend on the block size: one instantiation serves every B.
  return a.use_bias ? launch(pf::prefill_attention_kernel<CT, D, G, pf::kKeyTile, false, true>)
                    : launch(pf::prefill_attention_kernel<CT, D, G, pf::kKeyTile, false, false>);
}

/// Compressed keys and scores of windows [first_window, Nc(kv.length)) of every KV head:
/// Kc[j] = mean(k[s*j .. s*j+c)) and bc[j] = mean(b[...]), summed in fp32 in token order and
/// divided by the window (host::compress_window). For chunked ingestion pass the number of
/// windows already written as first_window. out.scores needs kv.bias.
template <class Geo, class T>
Status prefill_compress(const PrefillKV<T>& kv, const SelectionParams& params, const PrefillCompressed<T>& out,
                        int first_window, cudaStream_t stream) {
  static_assert(std::is_same_v<T, bfloat16_t> || std::is_same_v<T, float16_t>,
                "prefill_compress: T must be nosa::bfloat16_t or nosa::float16_t");
  constexpr int D = Geo::head_dim;
  NOSA_RETURN_IF_ERROR(detail::prefill::check_geometry<Geo>("prefill_compress"));
  NOSA_RETURN_IF_ERROR(params.validate(Geo::block_size));
  if (kv.num_kv_heads < 1 || kv.num_kv_heads > 65535)
    return invalid_argument("prefill_compress: kv.num_kv_heads = " + std::to_string(kv.num_kv_heads) + ": must be in 1..65535");
  if (kv.length < 0 || kv.length > kv.kv_stride)
    return invalid_argument("prefill_compress: kv.length = " + std::to_string(kv.length) + " must be in 0..kv.kv_stride (" +
                            std::to_string(kv.kv_stride) + ")");
  const int nc = detail::num_compressed(kv.length, params.window, params.stride);
  if (first_window < 0 || first_window > nc)
    return invalid_argument("prefill_compress: first_window = " + std::to_string(first_window) + " must be in 0.." + std::to_string(nc));
  if (nc > out.capacity)
    return capacity_exceeded("prefill_compress: " + std::to_string(nc) + " compressed keys do not fit out.capacity = " +
                             std::to_string(out.capacity));
  if (nc == first_window) return {};
  NOSA_RETURN_IF_ERROR(detail::check_pointer(kv.k, "prefill_compress: kv.k", 16));
  NOSA_RETURN_IF_ERROR(detail::check_pointer(out.keys_hi, "prefill_compress: out.keys_hi", 16));
  if (out.keys_lo != nullptr) NOSA_RETURN_IF_ERROR(detail::check_pointer(out.keys_lo, "prefill_compress: out.keys_lo", 16));
  if (out.scores != nullptr) NOSA_RETURN_IF_ERROR(detail::check_pointer(kv.bias, "prefill_compress: kv.bias", 4));
  namespace pf = detail::prefill;
  pf::CompressParams p{};
  p.k = kv.k;
  p.bias = kv.bias;
  p.keys_hi = out.keys_hi;
  p.keys_lo = out.keys_lo;
  p.scores = out.scores;
  p.kv_stride = kv.kv_stride;
  p.capacity = out.capacity;
  p.first_window = first_window;
  p.num_windows = nc - first_window;
  p.window = params.window;
  p.stride = params.stride;
  pf::compress_kernel<detail::cuda_type_t<T>, D>
      <<<dim3(static_cast<unsigned>(nc - first_window), static_cast<unsigned>(kv.num_kv_heads)), D, 0, stream>>>(p);
  NOSA_CUDA_TRY_LAUNCH("compress_kernel");
  return {};
}

/// Workspace of prefill_select: per pass of up to rows_per_pass rows, the pooled query-aware
/// scores Pq and agnostic scores Pe, fp32 [rows_per_pass][num_kv_heads][ceil(max_tokens/B)].
/// max_tokens bounds first_row + num_rows of every call using this workspace.
template <class Geo>
inline WorkspaceLayout prefill_select_workspace(int num_kv_heads, long long max_tokens, int rows_per_pass) {
  WorkspaceLayout layout;
  const std::size_t nb = static_cast<std::size_t>(
      detail::prefill::round_up(detail::num_blocks(max_tokens < 1 ? 1 : max_tokens, Geo::block_size), 4));
  const std::size_t n = static_cast<std::size_t>(rows_per_pass < 0 ? 0 : rows_per_pass) *
                        static_cast<std::size_t>(num_kv_heads < 0 ? 0 : num_kv_heads) * nb;
  layout.add(n * sizeof(float));  // Pq
  layout.add(n * sizeof(float));  // Pe
  return layout;
}

/// Per-row selection (NOSA or InfLLM-V2) of rows [first_row, first_row + num_rows) of one
/// sequence, processed in passes of rows_per_pass rows (the workspace's row count).
template <class Geo, class T>
Status prefill_select(const PrefillSelectArgs<T>& a, void* workspace, std::size_t workspace_bytes, long long max_tokens,
                      int rows_per_pass, cudaStream_t stream) {
  static_assert(std::is_same_v<T, bfloat16_t> || std::is_same_v<T, float16_t>,
                "prefill_select: T must be nosa::bfloat16_t or nosa::float16_t");
  constexpr int D = Geo::head_dim, G = Geo::group_size, B = Geo::block_size;
  NOSA_RETURN_IF_ERROR(detail::prefill::check_geometry<Geo>("prefill_select"));
  if (a.selector != SelectorKind::kNosa && a.selector != SelectorKind::kInfllmV2)
    return invalid_argument(std::string("prefill_select: selector = ") + to_string(a.selector) +
                            " (dense prefill needs no selection: use PrefillAttention::kDense)");
  NOSA_RETURN_IF_ERROR(a.params.validate(B));
  if (a.num_kv_heads < 1 || a.num_kv_heads > 65535)
    return invalid_argument("prefill_select: num_kv_heads = " + std::to_string(a.num_kv_heads) + ": must be in 1..65535");
  if (a.first_row < 0) return invalid_argument("prefill_select: first_row = " + std::to_string(a.first_row) + " is negative");
  if (a.num_rows < 0) return invalid_argument("prefill_select: num_rows = " + std::to_string(a.num_rows) + " is negative");
  if (rows_per_pass < 1) return invalid_argument("prefill_select: rows_per_pass = " + std::to_string(rows_per_pass) + ": must be >= 1");
  if (a.first_row + a.num_rows > max_tokens)
    return invalid_argument("prefill_select: rows up to " + std::to_string(a.first_row + a.num_rows) +
                            " exceed max_tokens = " + std::to_string(max_tokens) + " of the workspace");
  const WorkspaceLayout layout = prefill_select_workspace<Geo>(a.num_kv_heads, max_tokens, rows_per_pass);
  NOSA_RETURN_IF_ERROR(layout.check(workspace, workspace_bytes, "prefill_select: workspace"));
  const int nc_max = detail::num_compressed(a.first_row + a.num_rows, a.params.window, a.params.stride);
  if (nc_max > a.compressed.capacity)
    return invalid_argument("prefill_select: compressed.capacity = " + std::to_string(a.compressed.capacity) +
                            " holds fewer than the " + std::to_string(nc_max) + " compressed keys the last row sees");
  if (a.num_rows == 0) return {};
  NOSA_RETURN_IF_ERROR(detail::check_pointer(a.q, "prefill_select: q", 16));
  NOSA_RETURN_IF_ERROR(detail::check_pointer(a.block_ids, "prefill_select: block_ids", 4));
  NOSA_RETURN_IF_ERROR(detail::check_pointer(a.counts, "prefill_select: counts", 4));
  if (nc_max > 0) {
    NOSA_RETURN_IF_ERROR(detail::check_pointer(a.compressed.keys_hi, "prefill_select: compressed.keys_hi", 16));
    if (a.compressed.keys_lo != nullptr)
      NOSA_RETURN_IF_ERROR(detail::check_pointer(a.compressed.keys_lo, "prefill_select: compressed.keys_lo", 16));
    if (a.selector == SelectorKind::kNosa)
      NOSA_RETURN_IF_ERROR(detail::check_pointer(a.compressed.scores, "prefill_select: compressed.scores", 4));
  }

  namespace pf = detail::prefill;
  const int nb_stride = pf::round_up(detail::num_blocks(max_tokens, B), 4);
  const int nb_chunk = detail::num_blocks(a.first_row + a.num_rows, B);
  // The top-k keeps its picks in shared memory: min(budget, nb) and min(query_aware, nb) ints.
  const int pick_cap = a.params.budget < nb_chunk ? a.params.budget : nb_chunk;
  const int qpick_cap = a.params.query_aware < nb_chunk ? a.params.query_aware : nb_chunk;
  const long long topk_smem_ll = static_cast<long long>(pf::kTopkWarps) * (pick_cap + qpick_cap) * 4;
  // Stage 1 runs 8 warps (the sm_90a wgmma shape) on sm_90 devices, else 4 warps (whose shared
  // memory fits the 99 KB of sm_86 / sm_89 at D = 128); NOSA_STAGE1_WARPS forces one shape
  // (a test / benchmark knob).
  pf::DeviceLimits limits;
  NOSA_RETURN_IF_ERROR(pf::device_limits(&limits));
  const int smem_max = limits.smem_optin;
  constexpr int kSmem8 = pf::stage1_smem_bytes<D, G, pf::kS1WarpsSm90>();
  constexpr int kSmem4 = pf::stage1_smem_bytes<D, G, pf::kS1WarpsOther>();
#if defined(NOSA_STAGE1_WARPS)
  static_assert(NOSA_STAGE1_WARPS == 4 || NOSA_STAGE1_WARPS == 8, "NOSA_STAGE1_WARPS must be 4 or 8");
  const bool s1_wide = NOSA_STAGE1_WARPS == 8;
#else
  const bool s1_wide = limits.sm90 && kSmem8 <= smem_max;
#endif
  const int s1_smem = s1_wide ? kSmem8 : kSmem4;
  if (topk_smem_ll > smem_max)
    return not_supported("prefill_select: params.budget = " + std::to_string(a.params.budget) + " needs " +
                         std::to_string(topk_smem_ll) + " bytes of shared memory for the top-k picks, the device allows " +
                         std::to_string(smem_max));
  if (s1_smem > smem_max)
    return not_supported("prefill_select: head_dim " + std::to_string(D) + " needs " + std::to_string(s1_smem) +
                         " bytes of shared memory for stage 1, the device allows " + std::to_string(smem_max));
  const int topk_smem = static_cast<int>(topk_smem_ll);
  using CT = detail::cuda_type_t<T>;
  auto stage1 = s1_wide ? pf::stage1_kernel<CT, D, G, pf::kS1WarpsSm90> : pf::stage1_kernel<CT, D, G, pf::kS1WarpsOther>;
  const int s1_warps = s1_wide ? pf::kS1WarpsSm90 : pf::kS1WarpsOther;
  NOSA_CUDA_TRY(cudaFuncSetAttribute(stage1, cudaFuncAttributeMaxDynamicSharedMemorySize, s1_smem));
  NOSA_CUDA_TRY(cudaFuncSetAttribute(pf::topk_kernel<>, cudaFuncAttributeMaxDynamicSharedMemorySize, topk_smem));
  int* pq = layout.at<int>(workspace, 0);
  float* pe = layout.at<float>(workspace, 1);
  const int Hq = a.num_kv_heads * G;
  const int s1_rows = 16 * s1_warps / G;  // query rows per stage-1 CTA
  for (long long r0 = 0; r0 < a.num_rows; r0 += rows_per_pass) {
    const int rows = static_cast<int>(a.num_rows - r0 < rows_per_pass ? a.num_rows - r0 : rows_per_pass);
    // all-ones bits: a negative int, read as "no window" (-inf) by the top-k kernel
    NOSA_CUDA_TRY(cudaMemsetAsync(pq, 0xff, static_cast<std::size_t>(rows) * a.num_kv_heads * nb_stride * sizeof(int), stream));
    pf::Stage1Params s{};
    s.q = a.q + static_cast<std::size_t>(r0) * Hq * D;
    s.keys_hi = a.compressed.keys_hi;
    s.keys_lo = a.compressed.keys_lo;
    s.pq = pq;
    s.first_row = a.first_row + r0;
    s.num_rows = rows;
    s.num_kv_heads = a.num_kv_heads;
    s.capacity = a.compressed.capacity;
    s.nb_stride = nb_stride;
    s.window = a.params.window;
    s.stride = a.params.stride;
    s.block_size = B;
    s.scale_log2 = static_cast<float>(1.4426950408889634 / std::sqrt(static_cast<double>(D)));
    stage1<<<dim3(static_cast<unsigned>((rows + s1_rows - 1) / s1_rows), static_cast<unsigned>(a.num_kv_heads)),
             32 * s1_warps, s1_smem, stream>>>(s);
    NOSA_CUDA_TRY_LAUNCH("stage1_kernel");
    pf::TopkParams t{};
    t.pq = pq;
    t.pe = pe;
    t.scores = a.compressed.scores;
    t.block_ids = a.block_ids;
    t.counts = a.counts;
    t.first_row = a.first_row + r0;
    t.out_row0 = r0;
    t.num_rows = rows;
    t.num_kv_heads = a.num_kv_heads;
    t.capacity = a.compressed.capacity;
    t.nb_stride = nb_stride;
    t.out_stride = a.params.budget;
    t.pick_cap = pick_cap;
    t.qpick_cap = qpick_cap;
    t.window = a.params.window;
    t.stride = a.params.stride;
    t.block_size = B;
    t.sink = a.params.sink;
    t.local = a.params.local;
    t.query_aware = a.params.query_aware;
    t.budget = a.params.budget;
    t.nosa = a.selector == SelectorKind::kNosa ? 1 : 0;
    const long long tasks = static_cast<long long>(rows) * a.num_kv_heads;
    pf::topk_kernel<><<<static_cast<unsigned>((tasks + pf::kTopkWarps - 1) / pf::kTopkWarps), pf::kTopkWarps * 32,
                      topk_smem, stream>>>(t);
    NOSA_CUDA_TRY_LAUNCH("topk_kernel");
  }
  return {};
}

NOSA_NAMESPACE_END
