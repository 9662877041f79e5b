// Plain (non-template) interface between the decode-step GPU test cases (test_decode_step.cpp)
// and the scenario runner compiled by nvcc (decode_step_launch.cu).
#pragma once

#include <string>
#include <vector>

namespace nosa_test {

enum class StepTransfer { kZeroCopy = 0, kCopyEngine = 1, kDeviceResident = 2 };
enum class StepSelector { kNosa = 0, kInfllmV2 = 1 };

struct DecodeStepScenario {
  StepTransfer transfer = StepTransfer::kZeroCopy;
  StepSelector selector = StepSelector::kNosa;
  bool overlap = true;
  int overlap_chunks = 2;     ///< DecodeConfig::overlap_chunks (micro-batches when overlap is on)
  int layers = 2;
  int steps = 24;
  int extra_slots = 4;        ///< slots per head beyond the budget
  bool join_leave = true;     ///< sequences leave and join between steps
  bool tight_pool = false;    ///< a pool so small that a step must fail with capacity_exceeded
  bool chunked_prefill = false;  ///< prompts ingested in random chunks (begin/prefill_layer/end per chunk)
  unsigned seed = 1;
};

struct DecodeStepReport {
  std::string error;                   ///< an unexpected failed call
  int steps = 0;
  int joins = 0, leaves = 0;
  long long heads_checked = 0;         ///< (step, layer, sequence, KV head) compared with the host
  long long selection_mismatches = 0;  ///< GPU set != host set, host scores not near a tie
  long long near_ties = 0;             ///< sets differ at a near-tie of the host's scores (skipped)
  double max_o_err = 0;                ///< max |o - o_ref| / max(1, |o_ref| of the row)
  double max_lse_err = 0;              ///< max |lse - lse_ref| / max(1, |lse_ref|)
  long long non_finite = 0;            ///< NaN/Inf in o or lse
  long long blocks_moved = 0;          ///< from the residency counters
  long long blocks_needed = 0;
  int capacity_errors = 0;             ///< begin_step/begin_prefill refused with kCapacityExceeded
  int steps_after_capacity_error = 0;  ///< steps that ran and matched after such a refusal
  std::string first_mismatch;
  std::vector<float> outputs;          ///< every o and lse produced, in order (overlap on/off equality)
};

DecodeStepReport run_decode_step_scenario(const DecodeStepScenario& s);

/// Bad-argument checks of the Decoder; returns the failed expectations (empty = all good).
std::vector<std::string> decode_step_error_checks();

}  // namespace nosa_test
