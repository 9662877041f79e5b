// nosa: runtime selection parameters and the selector policies (DESIGN.md section 2).
#pragma once

#include <nosa/config.h>
#include <nosa/status.h>

#include <string>

NOSA_NAMESPACE_BEGIN

/// Which block-selection rule a decode step uses.
enum class SelectorKind : int {
  kNosa = 0,      ///< query-aware top-qk, then query-agnostic top-budget (bias in attention)
  kInfllmV2 = 1,  ///< query-aware top-budget only, no bias in attention
  kDense = 2,     ///< every block (full attention baseline)
};

inline const char* to_string(SelectorKind kind) {
  switch (kind) {
    case SelectorKind::kNosa: return "NOSA";
    case SelectorKind::kInfllmV2: return "InfLLM-V2";
    case SelectorKind::kDense: return "dense";
  }
  return "unknown";
}

/// Compile-time selector policies. A host application picks one as a template argument; the
/// runtime value kind/bias flag is what the host reference and the dispatch tables consume.
struct NosaSelector {
  static constexpr SelectorKind kind = SelectorKind::kNosa;
  static constexpr bool bias_in_attention = true;
};
struct InfllmV2Selector {
  static constexpr SelectorKind kind = SelectorKind::kInfllmV2;
  static constexpr bool bias_in_attention = false;
};
/// Full attention. UseBias = true is the NOSA model's dense mode (NOSA^F prefill, and the
/// exact reference for a sparse step whose budget covers the whole context); UseBias = false
/// is plain full attention (the baseline of InfLLM-V2 and of the benchmarks).
template <bool UseBias = true>
struct DenseSelector {
  static constexpr SelectorKind kind = SelectorKind::kDense;
  static constexpr bool bias_in_attention = UseBias;
};

/// Runtime selection parameters, shared by all KV heads and layers of a model.
/// Defaults are the NOSA / InfLLM-V2 release values.
struct SelectionParams {
  int window = 32;       ///< compression window c (tokens per compressed key), >= 1
  int stride = 16;       ///< compression stride s, 1 <= s <= c
  int sink = 1;          ///< forced leading blocks, >= 0
  int local = 16;        ///< forced blocks just before the current block, >= 0
  int query_aware = 33;  ///< qk: blocks picked by the query (NOSA stage 1), 0 <= qk <= budget
  int budget = 64;       ///< blocks attended per (sequence, KV head), >= sink + local + 1

  /// Blocks always selected (sink + local + the current block), when the context is long enough.
  int forced_blocks() const { return sink + local + 1; }

  /// Checks every parameter and every relation between them; the message names the parameter.
  /// block_size is the compile-time block size B of the geometry in use.
  Status validate(int block_size) const {
    auto bad = [](const char* name, int value, const std::string& why) {
      return invalid_argument(std::string("SelectionParams::") + name + " = " + std::to_string(value) +
                              ": " + why);
    };
    if (block_size <= 0) return invalid_argument("block_size = " + std::to_string(block_size) + ": must be >= 1");
    if (window <= 0) return bad("window", window, "must be >= 1");
    if (stride <= 0) return bad("stride", stride, "must be >= 1");
    if (stride > window)
      return bad("stride", stride, "must not exceed window (" + std::to_string(window) + ")");
    if (sink < 0) return bad("sink", sink, "must be >= 0");
    if (local < 0) return bad("local", local, "must be >= 0");
    if (budget <= 0) return bad("budget", budget, "must be >= 1");
    if (budget < forced_blocks())
      return bad("budget", budget,
                 "is smaller than the forced blocks sink + local + 1 = " + std::to_string(forced_blocks()));
    if (query_aware < 0) return bad("query_aware", query_aware, "must be >= 0");
    if (query_aware > budget)
      return bad("query_aware", query_aware, "must not exceed budget (" + std::to_string(budget) + ")");
    return {};
  }
};

NOSA_NAMESPACE_END
