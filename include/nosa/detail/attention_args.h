// nosa: argument and plan types of decode attention (nosa/attention.cuh). Host-only, so that
// host code (the decode step, tests) can fill them without CUDA headers.
#pragma once

#include <nosa/config.h>
#include <nosa/types.h>

#include <cstddef>
#include <cstdint>
#include <type_traits>

NOSA_NAMESPACE_BEGIN

/// Which blocks a decode attention call reads.
enum class AttentionMode : int {
  kSparse = 0,  ///< the selected blocks: block_ids / slot_ids / counts
  kDense = 1,   ///< every block 0..ceil(T/B)-1 of each sequence (the full-attention baseline)
};

/// Arguments of one decode attention call (see decode_attention in nosa/attention.cuh for the
/// shapes). T is the element type (bfloat16_t or float16_t); DecodeAttentionArgs<void> is the
/// type-erased form the run-time dispatch takes.
template <class T>
struct DecodeAttentionArgs {
  int batch = 0;           ///< batch entries (0: nothing to do)
  int num_kv_heads = 0;    ///< Hkv >= 1 (Hq = Hkv * G)
  int max_blocks = 0;      ///< capacity of a table row: block_ids/slot_ids are [batch][Hkv][max_blocks]
  long long num_slots = 0; ///< slots (kHND) or pages (kNHD) in k_cache/v_cache/bias_cache

  const T* q = nullptr;    ///< [batch][Hq][D], 16-byte aligned
  T* o = nullptr;          ///< [batch][Hq][D], 16-byte aligned (written)
  float* lse = nullptr;    ///< [batch][Hq] fp32, natural log (written)

  const T* k_cache = nullptr;            ///< slot cache, 16-byte aligned (layout: Geometry::layout)
  const T* v_cache = nullptr;            ///< same shape as k_cache
  const float* bias_cache = nullptr;     ///< per-token bias fp32, or nullptr for no bias

  const std::int32_t* block_ids = nullptr;  ///< [batch][Hkv][max_blocks] (kSparse)
  const std::int32_t* slot_ids = nullptr;   ///< [batch][Hkv][max_blocks]; kDense: nullptr = identity
  const std::int32_t* counts = nullptr;     ///< [batch][Hkv] (kSparse)
  const std::int32_t* seq_lens = nullptr;   ///< [batch] tokens T (current one included)
  const std::int32_t* seq_slots = nullptr;  ///< [batch] sequence slots; only for identity tables
                                            ///< (nullptr: batch entry b is sequence slot b)

  AttentionMode mode = AttentionMode::kSparse;
  int num_splits = 0;  ///< split-KV factor; 0 = choose from batch * Hkv and the SM count
};

/// What a call will do: the split factor and the caller workspace it needs.
struct AttentionPlan {
  int num_splits = 1;
  std::size_t workspace_bytes = 0;
};

/// Element types of the run-time dispatch.
enum class ElementType : int { kBFloat16 = 0, kFloat16 = 1 };
inline const char* to_string(ElementType t) { return t == ElementType::kBFloat16 ? "bf16" : "fp16"; }
template <class T>
inline constexpr ElementType element_type_of_v =
    std::is_same_v<T, bfloat16_t> ? ElementType::kBFloat16 : ElementType::kFloat16;

NOSA_NAMESPACE_END
