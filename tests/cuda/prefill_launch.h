// Launch wrappers of the prefill GPU tests: plain functions (no templates, no CUDA types) that
// the doctest file calls. They upload a problem, run the nosa prefill facade and download the
// results. Layouts follow include/nosa/prefill.cuh.
#pragma once

#include <nosa/params.h>
#include <nosa/status.h>
#include <nosa/types.h>

#include <string>
#include <vector>

namespace nosa_test {

/// One compiled instantiation of the prefill facade: Geometry<block_size, head_dim,
/// group_size, kHND> with bf16 (fp16 = false) or fp16 elements.
struct PrefillConfig {
  int block_size = 64, head_dim = 128, group_size = 8;
  bool fp16 = false;
  std::string name() const {
    return "B=" + std::to_string(block_size) + " D=" + std::to_string(head_dim) + " G=" + std::to_string(group_size) +
           (fp16 ? " fp16" : " bf16");
  }
};

/// One sequence's prompt. Element values are held as float but must be exactly representable
/// in the element type (bf16 or fp16), so the GPU and the host reference see the same inputs.
struct PrefillProblem {
  PrefillConfig config;
  int num_kv_heads = 2;
  long long length = 0;
  std::vector<float> k, v;  ///< [Hkv][length][D]
  std::vector<float> bias;  ///< [Hkv][length]
  std::vector<float> q;     ///< [length][Hq][D] (every prompt row)
  nosa::SelectionParams params;
};

struct PrefillRequest {
  bool sparse = false;
  nosa::SelectorKind selector = nosa::SelectorKind::kNosa;  ///< sparse: kNosa or kInfllmV2
  bool use_bias = true;
  std::vector<long long> chunks;  ///< row chunk sizes covering the prompt; empty = one pass
  int rows_per_pass = 1024;       ///< selection rows per workspace pass
  bool use_lo = true;             ///< hi+lo compressed keys (fp32-accurate stage 1)
  bool use_graph = false;         ///< capture the whole call sequence in a CUDA graph (global
                                  ///< capture mode), then replay it twice
  /// If set (sparse), attention uses this selection ([length][Hkv][budget], counts
  /// [length][Hkv]) instead of the GPU selector's.
  const std::vector<int>* given_ids = nullptr;
  const std::vector<int>* given_counts = nullptr;
};

struct PrefillOutput {
  std::vector<float> o;        ///< [length][Hq][D], the GPU's bf16/fp16 output widened exactly
  std::vector<float> lse;      ///< [length][Hq]
  std::vector<int> block_ids;  ///< [length][Hkv][budget] (GPU selection, sparse only)
  std::vector<int> counts;     ///< [length][Hkv]
};

/// The configurations compiled into this test binary (CI subset, or every
/// B x D x G x dtype with NOSA_FULL_MATRIX).
std::vector<PrefillConfig> prefill_compiled_configs();

/// Runs compression, selection (sparse) and attention for the whole prompt, chunk by chunk.
nosa::Status run_prefill(const PrefillProblem& problem, const PrefillRequest& request, PrefillOutput& out);

struct BadInputCase {
  std::string name;
  nosa::Status status;
  bool output_untouched = false;  ///< the output buffers still hold their sentinel bytes
};
/// Calls the facade with one broken argument at a time (bf16, D=128, G=8, B=64).
std::vector<BadInputCase> prefill_bad_inputs();

}  // namespace nosa_test
