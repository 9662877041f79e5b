// nosa::host: one decode step and prefill of one layer on the CPU (DESIGN.md section 2).
//
// Shapes (query head qh = kv_head * G + g, i.e. the G query heads of a KV head are adjacent):
//   decode_step: q [batch][Hq][D] -> o [batch][Hq][D], lse [batch][Hq]; selected[b*Hkv + h]
//   prefill:     q [rows][Hq][D]  -> o [rows][Hq][D],  lse [rows][Hq] for rows first_row..
// The current token must already be appended to the cache (T includes it).
#pragma once

#include <nosa/config.h>
#include <nosa/detail/parallel_for.h>
#include <nosa/host/attention.h>
#include <nosa/host/kv_cache.h>
#include <nosa/host/selector.h>
#include <nosa/params.h>
#include <nosa/status.h>

#include <string>
#include <vector>

NOSA_NAMESPACE_BEGIN
namespace host {

/// How a step chooses and weights blocks: the runtime form of a selector policy.
struct StepOptions {
  SelectorKind selector = SelectorKind::kNosa;
  bool bias_in_attention = true;
  int num_threads = 0;  ///< host threads over (sequence, KV head); 0 = hardware concurrency

  template <class SelectorPolicy>
  static StepOptions of(int num_threads = 0) {
    return StepOptions{SelectorPolicy::kind, SelectorPolicy::bias_in_attention, num_threads};
  }
};

/// Selection and attention of one (sequence, KV head) at T tokens: the single place where the
/// host reference composes the contract, used by decode and by every prefill row.
template <class Real, class QT, class OutT>
std::vector<int> attend_head(const KVCache<Real>& cache, SequenceId id, int kv_head, long long T,
                             const StepOptions& options, const QT* q_group, OutT* o_group, Real* lse_group) {
  const Dims& dims = cache.dims();
  const HeadState<Real>& hs = cache.head(id, kv_head);
  Selection<Real> sel = select_blocks<Real>(options.selector, cache.params(), dims.block_size, T, q_group,
                                            dims.group_size, dims.head_dim, hs.compressed.keys(),
                                            hs.compressed.scores());
  attend_blocks<Real>(q_group, dims.group_size, dims.head_dim, hs.keys.data(), dims.head_dim, hs.values.data(),
                      dims.head_dim, options.bias_in_attention ? hs.bias.data() : static_cast<const Real*>(nullptr), 1,
                      T, dims.block_size, sel.blocks, o_group, lse_group);
  return std::move(sel.blocks);
}

/// One decode step for a batch of sequences of any lengths (each >= 1 token, current token
/// included). selected, if not null, receives batch * Hkv sorted block-id lists.
/// On error (unknown id, empty sequence, null pointer, duplicate id) nothing is written.
template <class Real, class QT, class OutT>
Status decode_step(const KVCache<Real>& cache, const std::vector<SequenceId>& batch, const QT* q, OutT* o,
                   Real* lse, const StepOptions& options = {},
                   std::vector<std::vector<int>>* selected = nullptr) {
  if (!batch.empty() && (q == nullptr || o == nullptr || lse == nullptr))
    return invalid_argument(std::string("decode_step: ") + (q == nullptr ? "q" : o == nullptr ? "o" : "lse") + " is null");
  for (size_t b = 0; b < batch.size(); ++b) {
    const long long T = cache.length(batch[b]);
    if (T < 0) return not_found("decode_step: batch[" + std::to_string(b) + "] = sequence " + std::to_string(batch[b]) + " is not in the cache");
    if (T == 0) return invalid_argument("decode_step: batch[" + std::to_string(b) + "] = sequence " + std::to_string(batch[b]) + " has no tokens (append the current token first)");
    for (size_t c = 0; c < b; ++c)
      if (batch[c] == batch[b]) return invalid_argument("decode_step: sequence " + std::to_string(batch[b]) + " appears twice in batch");
  }
  const int Hkv = cache.num_kv_heads(), G = cache.dims().group_size, D = cache.dims().head_dim;
  if (selected != nullptr) selected->assign(batch.size() * Hkv, {});
  detail::parallel_for(static_cast<long long>(batch.size()) * Hkv, options.num_threads, [&](long long i) {
    const size_t b = static_cast<size_t>(i / Hkv);
    const int h = static_cast<int>(i % Hkv);
    const size_t row = (b * Hkv + h) * G;  // first query head row of this (sequence, KV head)
    auto blocks = attend_head<Real>(cache, batch[b], h, cache.length(batch[b]), options, q + row * D, o + row * D, lse + row);
    if (selected != nullptr) (*selected)[i] = std::move(blocks);
  });
  return {};
}

/// Prefill attention mode (the NOSA paper's NOSA^F and NOSA^S).
enum class PrefillMode : int {
  kDense = 0,   ///< full causal attention for every row (NOSA^F), bias as options say
  kSparse = 1,  ///< every row attends to its own selected set (NOSA^S)
};

/// Causal prefill of rows [first_row, first_row + num_rows) of one sequence whose tokens are
/// already in the cache. Row i is exactly a decode step with T = i + 1: it sees compressed key
/// j iff s*j + c <= i + 1, uses cur = i / B and attends only to tokens <= i.
template <class Real, class QT, class OutT>
Status prefill(const KVCache<Real>& cache, SequenceId id, long long first_row, long long num_rows, const QT* q,
               OutT* o, Real* lse, PrefillMode mode, const StepOptions& options = {}) {
  const long long T = cache.length(id);
  if (T < 0) return not_found("prefill: sequence " + std::to_string(id) + " is not in the cache");
  if (first_row < 0) return invalid_argument("prefill: first_row = " + std::to_string(first_row) + " is negative");
  if (num_rows < 0) return invalid_argument("prefill: num_rows = " + std::to_string(num_rows) + " is negative");
  if (first_row + num_rows > T)
    return invalid_argument("prefill: rows up to " + std::to_string(first_row + num_rows) + " exceed the sequence length " +
                            std::to_string(T) + " (append the prompt first)");
  if (num_rows > 0 && (q == nullptr || o == nullptr || lse == nullptr))
    return invalid_argument(std::string("prefill: ") + (q == nullptr ? "q" : o == nullptr ? "o" : "lse") + " is null");
  StepOptions row_options = options;
  if (mode == PrefillMode::kDense) row_options.selector = SelectorKind::kDense;
  const int Hkv = cache.num_kv_heads(), G = cache.dims().group_size, D = cache.dims().head_dim;
  detail::parallel_for(num_rows * Hkv, options.num_threads, [&](long long i) {
    const long long r = i / Hkv;
    const int h = static_cast<int>(i % Hkv);
    const size_t row = (static_cast<size_t>(r) * Hkv + h) * G;
    attend_head<Real>(cache, id, h, first_row + r + 1, row_options, q + row * D, o + row * D, lse + row);
  });
  return {};
}

}  // namespace host
NOSA_NAMESPACE_END
