// GPU tests of the decode step (nosa/decode_step.cuh): the Decoder against the host reference
// over many steps with sequences joining and leaving (every step, layer, sequence and KV head
// checked), for each transfer policy and both selectors; overlap on and off give identical
// results; a refused step (host pool full) leaves every sequence valid; bad input is named.
#include <doctest/doctest.h>

#include <cstring>

#include "cuda/decode_step_launch.h"
#include "cuda/gpu_test_util.h"

using nosa_test::DecodeStepScenario;
using nosa_test::StepSelector;
using nosa_test::StepTransfer;

namespace {

// bf16 tolerance (docs/notes/attention.md): outputs are rounded to bf16 (relative 2^-9) after
// fp32 accumulation over at most a few thousand tokens.
constexpr double kOutputTolerance = 2e-2;
constexpr double kLseTolerance = 1e-3;

nosa_test::DecodeStepReport check(const DecodeStepScenario& s) {
  const auto r = nosa_test::run_decode_step_scenario(s);
  INFO("first mismatch: " << r.first_mismatch);
  REQUIRE_MESSAGE(r.error.empty(), r.error);
  MESSAGE("steps " << r.steps << ", joins " << r.joins << ", leaves " << r.leaves << ", heads checked " << r.heads_checked
                   << ", near-ties skipped " << r.near_ties << ", max o err " << r.max_o_err << ", max lse err "
                   << r.max_lse_err << ", blocks moved " << r.blocks_moved << " of " << r.blocks_needed << " needed");
  CHECK(r.steps == s.steps);
  CHECK(r.heads_checked > 0);
  CHECK(r.selection_mismatches == 0);
  CHECK(r.near_ties * 20 <= r.heads_checked);  // near-ties are rare; many would hide a bug
  CHECK(r.non_finite == 0);
  CHECK(r.max_o_err <= kOutputTolerance);
  CHECK(r.max_lse_err <= kLseTolerance);
  CHECK(r.blocks_moved > 0);
  CHECK(r.blocks_moved < r.blocks_needed);  // resident blocks are not moved again
  if (s.join_leave) {
    CHECK(r.joins > 0);
    CHECK(r.leaves > 0);
  }
  return r;
}

}  // namespace

TEST_CASE("decode step: NOSA, zero-copy gather, joins and leaves, matches the host reference") {
  NOSA_REQUIRE_GPU();
  DecodeStepScenario s;
  s.seed = 3;
  check(s);
}

TEST_CASE("decode step: InfLLM-V2 selector, zero-copy gather") {
  NOSA_REQUIRE_GPU();
  DecodeStepScenario s;
  s.selector = StepSelector::kInfllmV2;
  s.seed = 4;
  check(s);
}

TEST_CASE("decode step: copy-engine transfer (HND host layout)") {
  NOSA_REQUIRE_GPU();
  DecodeStepScenario s;
  s.transfer = StepTransfer::kCopyEngine;
  s.seed = 5;
  check(s);
}

TEST_CASE("decode step: device-resident pool (no offload)") {
  NOSA_REQUIRE_GPU();
  DecodeStepScenario s;
  s.transfer = StepTransfer::kDeviceResident;
  s.seed = 6;
  check(s);
}

TEST_CASE("decode step: overlap off and on (2, 3 and 4 micro-batches) give identical outputs") {
  NOSA_REQUIRE_GPU();
  DecodeStepScenario s;
  s.seed = 7;
  s.steps = 12;
  s.overlap = false;
  const auto without = check(s);
  s.overlap = true;
  for (int chunks : {2, 3, 4}) {
    s.overlap_chunks = chunks;
    const auto with = check(s);
    REQUIRE(with.outputs.size() == without.outputs.size());
    std::size_t differing = 0;
    for (std::size_t i = 0; i < with.outputs.size(); ++i)
      if (std::memcmp(&with.outputs[i], &without.outputs[i], sizeof(float)) != 0) ++differing;
    INFO("overlap_chunks " << chunks);
    CHECK(differing == 0);
  }
}

TEST_CASE("decode step: a full host pool refuses a step and every sequence stays valid") {
  NOSA_REQUIRE_GPU();
  DecodeStepScenario s;
  s.tight_pool = true;
  s.join_leave = false;
  s.steps = 80;
  s.seed = 8;
  const auto r = check(s);
  CHECK(r.capacity_errors >= 1);
  CHECK(r.steps_after_capacity_error > 0);
}

TEST_CASE("decode step: bad input is refused with the argument named") {
  NOSA_REQUIRE_GPU();
  const auto failed = nosa_test::decode_step_error_checks();
  for (const auto& f : failed) MESSAGE(f);
  CHECK(failed.empty());
}

TEST_CASE("decode step: prompts ingested chunk by chunk decode like the host reference") {
  NOSA_REQUIRE_GPU();
  DecodeStepScenario s;
  s.chunked_prefill = true;
  s.steps = 18;
  s.seed = 9;
  check(s);
}
