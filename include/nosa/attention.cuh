// nosa: block-sparse decode attention with a per-token bias over the GPU slot cache
// (DESIGN.md section 3, item 3), its dense (full-attention) mode and the lse merge of two
// partial results.
//
// For batch entry b, KV head h, query head g of that KV head (row qh = h * G + g):
//   o[b][qh]   = sum over valid tokens t of the selected blocks of softmax_t(q.k_t / sqrt(D) + bias_t) v_t
//   lse[b][qh] = log(sum_t exp(q.k_t / sqrt(D) + bias_t))         (natural log, fp32)
// in fp32 (bias added after the scale); a -inf logit contributes nothing, and if every logit
// is -inf (or nothing is selected) o = 0 and lse = -inf, never NaN.
//
// Tensors (all device memory, caller-owned):
//   q, o        [batch][Hq][D] of T (bfloat16_t or float16_t), Hq = Hkv * G, 16-byte aligned
//   lse         [batch][Hq] fp32
//   block_ids   int32 [batch][Hkv][max_blocks], ascending block indices (kSparse)
//   slot_ids    int32 [batch][Hkv][max_blocks], slot (kHND) / page (kNHD) of block_ids[..][i]
//   counts      int32 [batch][Hkv], entries used per row (clamped to max_blocks)
//   seq_lens    int32 [batch], tokens T (current token included); block ceil(T/B)-1 contributes
//               only its tokens < T
//   k_cache, v_cache, bias_cache (fp32, optional) by Geometry::layout:
//     kHND: K[((size_t)slot*B + token)*D + d],            bias[(size_t)slot*B + token]
//     kNHD: K[(((size_t)page*B + token)*Hkv + h)*D + d],  bias[((size_t)page*B + token)*Hkv + h]
//   num_slots   slots (kHND) or pages (kNHD) in the cache; a table entry outside [0, num_slots)
//               or a negative block id is treated as an empty entry (never read).
// Dense mode (AttentionMode::kDense): every block 0..ceil(T/B)-1 (at most max_blocks) is read;
// block_ids/counts are ignored. slot_ids, if given, is the page table [batch][Hkv][max_blocks];
// if null the table is the identity of a contiguous cache: kHND slot = (seq*Hkv + h)*max_blocks + i
// (each (sequence, head) a contiguous [max_blocks*B][D] run), kNHD page = seq*max_blocks + i (each
// sequence a contiguous [max_blocks*B][Hkv][D] run), with seq = seq_slots[b] (or b if null).
//
// Split-KV: each (b, h) row of work is cut into num_splits ranges of its selected tokens; the
// partials (fp32) go to the caller's workspace and a second kernel merges them by lse. Launch
// shapes depend only on host values (batch, Hkv, max_blocks, splits), so a call is CUDA-graph
// capturable once its workspace is allocated; it never synchronizes or allocates.
#pragma once

#include <nosa/config.h>
#include <nosa/detail/attention_dispatch.cuh>
#include <nosa/geometry.h>
#include <nosa/status.h>
#include <nosa/types.h>

#include <cuda_runtime.h>

#include <cstddef>
#include <string>
#include <type_traits>

NOSA_NAMESPACE_BEGIN

template <class T>
inline constexpr bool is_attention_element_v = std::is_same_v<T, bfloat16_t> || std::is_same_v<T, float16_t>;

/// Split factor and workspace bytes that decode_attention<Geo, T>(args, ...) will use. With
/// args.num_splits = 0 the factor comes from batch * Hkv against the current device's SM count
/// and the kernel's occupancy; call again if any of those change.
template <class Geo, class T>
Status plan_decode_attention(const DecodeAttentionArgs<T>& args, AttentionPlan* plan) {
  static_assert(geometry_check_v<Geo>);
  static_assert(is_attention_element_v<T>, "nosa: attention element type must be bfloat16_t or float16_t");
  if (plan == nullptr) return invalid_argument("plan_decode_attention: plan is null");
  NOSA_RETURN_IF_ERROR(detail::check_attention_args(args, Geo::block_size, Geo::head_dim, Geo::group_size));
  return detail::launcher_for_t<Geo, T>::plan(args, Geo::block_size, Geo::group_size, plan);
}

/// Decode attention of one layer for a batch (shapes above). workspace: device memory of at
/// least plan_decode_attention(...).workspace_bytes, 256-byte aligned (may be null when that is
/// 0). Validates every argument before launching; on error nothing is written.
template <class Geo, class T>
Status decode_attention(const DecodeAttentionArgs<T>& args, void* workspace, std::size_t workspace_bytes,
                        cudaStream_t stream) {
  static_assert(geometry_check_v<Geo>);
  static_assert(is_attention_element_v<T>, "nosa: attention element type must be bfloat16_t or float16_t");
  return detail::launcher_for_t<Geo, T>::run(args, Geo::block_size, Geo::group_size, workspace, workspace_bytes,
                                             stream);
}

/// Merges two partial attention results over disjoint token sets (host::merge_partials):
///   o = (e^{lse_a} o_a + e^{lse_b} o_b) / (e^{lse_a} + e^{lse_b}),  lse = log(e^{lse_a} + e^{lse_b})
/// rows of head_dim elements: o_* [rows][head_dim] of T (16-byte aligned), lse_* [rows] fp32.
/// A partial with lse = -inf is empty; both empty gives o = 0, lse = -inf. o_out/lse_out may
/// alias o_a/lse_a (or o_b/lse_b).
template <class T>
Status merge_attention_states(int rows, int head_dim, const T* o_a, const float* lse_a, const T* o_b,
                              const float* lse_b, T* o_out, float* lse_out, cudaStream_t stream) {
  static_assert(is_attention_element_v<T>, "nosa: attention element type must be bfloat16_t or float16_t");
  if (rows < 0) return invalid_argument("merge_attention_states: rows = " + std::to_string(rows) + " is negative");
  if (head_dim != 64 && head_dim != 128 && head_dim != 256)
    return not_supported("merge_attention_states: head_dim = " + std::to_string(head_dim) +
                         " (compiled in: 64, 128, 256)");
  if (rows == 0) return {};
  NOSA_RETURN_IF_ERROR(detail::check_pointer(o_a, "merge_attention_states: o_a", 16));
  NOSA_RETURN_IF_ERROR(detail::check_pointer(o_b, "merge_attention_states: o_b", 16));
  NOSA_RETURN_IF_ERROR(detail::check_pointer(o_out, "merge_attention_states: o_out", 16));
  NOSA_RETURN_IF_ERROR(detail::check_pointer(lse_a, "merge_attention_states: lse_a", 4));
  NOSA_RETURN_IF_ERROR(detail::check_pointer(lse_b, "merge_attention_states: lse_b", 4));
  NOSA_RETURN_IF_ERROR(detail::check_pointer(lse_out, "merge_attention_states: lse_out", 4));
  switch (head_dim) {
    case 64: return detail::merge_pair<T, 64>(rows, o_a, lse_a, o_b, lse_b, o_out, lse_out, stream);
    case 128: return detail::merge_pair<T, 128>(rows, o_a, lse_a, o_b, lse_b, o_out, lse_out, stream);
    default: return detail::merge_pair<T, 256>(rows, o_a, lse_a, o_b, lse_b, o_out, lse_out, stream);
  }
}

// ---------------------------------------------------------------------------------------------
// Run-time dispatch: the one place where run-time geometry and element type become template
// arguments. An application lists the instances it compiles in; anything else is kNotSupported
// with that list in the message.

/// One compiled-in combination.
template <class Geo, class T>
struct AttentionInstance {
  static_assert(geometry_check_v<Geo>);
  static_assert(is_attention_element_v<T>);
  using geometry = Geo;
  using element = T;
};
template <class... Instances>
struct AttentionInstanceList {};

namespace detail {
template <class Inst>
std::string describe_instance() {
  using Geo = typename Inst::geometry;
  return "(B=" + std::to_string(Geo::block_size) + ", D=" + std::to_string(Geo::head_dim) +
         ", G=" + std::to_string(Geo::group_size) + ", " + to_string(Geo::layout) + ", " +
         to_string(element_type_of_v<typename Inst::element>) + ")";
}
template <class Inst>
bool instance_matches(const Dims& dims, ElementType type) {
  using Geo = typename Inst::geometry;
  return Geo::block_size == dims.block_size && Geo::head_dim == dims.head_dim && Geo::group_size == dims.group_size &&
         Geo::layout == dims.layout && element_type_of_v<typename Inst::element> == type;
}
template <class... Insts>
Status unsupported_instance(const Dims& dims, ElementType type, AttentionInstanceList<Insts...>) {
  std::string list;
  ((list += (list.empty() ? "" : ", ") + describe_instance<Insts>()), ...);
  return not_supported("decode_attention: B=" + std::to_string(dims.block_size) + ", D=" +
                       std::to_string(dims.head_dim) + ", G=" + std::to_string(dims.group_size) + ", " +
                       to_string(dims.layout) + ", " + to_string(type) + " is not compiled in; compiled in: " +
                       (list.empty() ? std::string("none") : list));
}
}  // namespace detail

/// plan_decode_attention for run-time dims / element type, over the instances of the list.
template <class... Insts>
Status plan_decode_attention(AttentionInstanceList<Insts...> list, const Dims& dims, ElementType type,
                             const DecodeAttentionArgs<void>& args, AttentionPlan* plan) {
  Status result;
  const bool found = ([&] {
    if (!detail::instance_matches<Insts>(dims, type)) return false;
    (void)(result = plan_decode_attention<typename Insts::geometry, typename Insts::element>(
        detail::cast_args<typename Insts::element>(args), plan));
    return true;
  }() || ...);
  if (!found) return detail::unsupported_instance(dims, type, list);
  return result;
}

/// decode_attention for run-time dims / element type, over the instances of the list.
template <class... Insts>
Status decode_attention(AttentionInstanceList<Insts...> list, const Dims& dims, ElementType type,
                        const DecodeAttentionArgs<void>& args, void* workspace, std::size_t workspace_bytes,
                        cudaStream_t stream) {
  Status result;
  const bool found = ([&] {
    if (!detail::instance_matches<Insts>(dims, type)) return false;
    (void)(result = decode_attention<typename Insts::geometry, typename Insts::element>(
        detail::cast_args<typename Insts::element>(args), workspace, workspace_bytes, stream));
    return true;
  }() || ...);
  if (!found) return detail::unsupported_instance(dims, type, list);
  return result;
}

NOSA_NAMESPACE_END
