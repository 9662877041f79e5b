// Plain (non-template) interface between the residency GPU test cases (test_residency.cpp, doctest)
// and the scenario runner compiled by nvcc (residency_launch.cu).
#pragma once

#include <string>
#include <vector>

namespace nosa_test {

// kZeroCopy: ZeroCopyGather (SM-load copy loop); kZeroCopyBulk: ZeroCopyGatherBulk (TMA bulk copy
// loop on sm_90, the SM loop elsewhere).
enum class ResPolicy { kZeroCopy = 0, kCopyEngine = 1, kDeviceResident = 2, kZeroCopyBulk = 3 };
enum class ResLayout { kNHD = 0, kHND = 1 };
// small: B=16 D=64 bf16; large: B=64 D=128 bf16 (16 KiB matrices: one bulk stage each); wide:
// B=128 D=128 bf16 (32 KiB matrices: two bulk stages each). Large and wide need NOSA_FULL_MATRIX.
enum class ResShape { kSmall = 0, kLarge = 1, kWide = 2 };

struct ResidencyScenario {
  ResPolicy policy = ResPolicy::kZeroCopy;
  ResLayout layout = ResLayout::kNHD;
  ResShape shape = ResShape::kSmall;
  int steps = 60;
  unsigned seed = 1;
  double change_rate = 0.2;  // share of the previous selection replaced each step
  int slots_per_head = 12;
  int budget = 8;
  int max_blocks_per_sequence = 48;  // prompts are up to (this - 8) * B / 2 tokens long
  int min_prompt_tokens = 1;
  int pages_per_sequence = 30;       // pool pages per (sequence slot, layer), on average
};

struct ResidencyScenarioResult {
  std::string error;             // a failed call (empty when all calls succeeded)
  long long steps = 0;
  long long joins = 0, leaves = 0, prompt_chunks = 0;
  long long blocks_checked = 0;  // selected blocks compared byte by byte (slot vs pool vs truth)
  long long byte_mismatches = 0;
  long long pool_mismatches = 0;  // pool bytes vs the test's own record of every appended token
  long long slot_table_mismatches = 0;  // GPU slot_ids vs host::ResidencyModel
  long long moved_mismatches = 0;       // GPU counters vs the model's transfer count, per step
  long long model_moved = 0, gpu_moved = 0, model_needed = 0;
  long long append_loads_model = 0, append_loads_gpu = 0;
  unsigned device_errors = 0;
  std::string first_mismatch;
};

/// Runs a random scenario (joins, leaves, ragged batches, prompts in chunks, decode appends,
/// selections with the given change rate) and checks everything after every step.
ResidencyScenarioResult run_residency_scenario(const ResidencyScenario& s);

/// Bad-argument and capacity checks; returns the list of failed expectations (empty = all good).
std::vector<std::string> residency_error_checks();

}  // namespace nosa_test
