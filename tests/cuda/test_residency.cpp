// GPU tests of the KV residency manager (nosa/residency.cuh): random scenarios with joins,
// leaves, ragged batches, chunked prompts and decode appends, for every transfer policy and both
// host layouts; after every step the slot bytes equal the pool's and the test's own record of
// every token (byte-exact), the slot table equals host::ResidencyModel's, and the blocks moved
// equal the model's (exactly the non-resident ones). The zero-copy cases run both copy loops of
// the fused kernel: SM loads (ZeroCopyGather) and TMA bulk copies (ZeroCopyGatherBulk).
#include <doctest/doctest.h>

#include "cuda/gpu_test_util.h"
#include "cuda/residency_launch.h"

using nosa_test::ResidencyScenario;
using nosa_test::ResLayout;
using nosa_test::ResPolicy;
using nosa_test::ResShape;

namespace {

void check_scenario(const ResidencyScenario& s) {
  const auto r = nosa_test::run_residency_scenario(s);
  INFO("first mismatch: " << r.first_mismatch);
  REQUIRE_MESSAGE(r.error.empty(), r.error);
  MESSAGE("steps " << r.steps << ", joins " << r.joins << ", leaves " << r.leaves << ", prompt chunks " << r.prompt_chunks
                   << ", blocks checked " << r.blocks_checked << ", moved " << r.gpu_moved << " of " << r.model_needed
                   << " needed, append loads " << r.append_loads_gpu);
  CHECK(r.steps == s.steps);
  CHECK(r.blocks_checked > 0);
  CHECK(r.byte_mismatches == 0);
  CHECK(r.pool_mismatches == 0);
  CHECK(r.slot_table_mismatches == 0);
  CHECK(r.moved_mismatches == 0);
  CHECK(r.gpu_moved == r.model_moved);
  CHECK(r.append_loads_gpu == r.append_loads_model);
  CHECK(r.device_errors == 0u);
  CHECK(r.joins > 3);
  CHECK(r.leaves > 0);
}

constexpr ResPolicy kZeroCopyLoops[] = {ResPolicy::kZeroCopy, ResPolicy::kZeroCopyBulk};

const char* loop_name(ResPolicy p) { return p == ResPolicy::kZeroCopyBulk ? "bulk (TMA)" : "SM loads"; }

}  // namespace

TEST_CASE("residency: zero-copy gather, NHD host layout, change rates") {
  NOSA_REQUIRE_GPU();
  for (ResPolicy policy : kZeroCopyLoops) {
    for (double rate : {0.0, 0.05, 0.3, 1.0}) {
      CAPTURE(loop_name(policy));
      CAPTURE(rate);
      ResidencyScenario s;
      s.policy = policy;
      s.layout = ResLayout::kNHD;
      s.change_rate = rate;
      s.seed = 11 + static_cast<unsigned>(rate * 100);
      check_scenario(s);
    }
  }
}

TEST_CASE("residency: zero-copy gather, HND host layout, budget == slots") {
  NOSA_REQUIRE_GPU();
  for (ResPolicy policy : kZeroCopyLoops) {
    CAPTURE(loop_name(policy));
    ResidencyScenario s;
    s.policy = policy;
    s.layout = ResLayout::kHND;
    s.slots_per_head = 8;
    s.budget = 8;
    s.seed = 5;
    check_scenario(s);
  }
}

// More than 64 needed entries (three 32-entry rank chunks) and 100 slots (four 32-slot ballots,
// the last one partial): the diff's warp-wide searches and chunked ranks at their edges.
TEST_CASE("residency: zero-copy gather, 100 slots and 72 selected blocks, both layouts") {
  NOSA_REQUIRE_GPU();
  for (ResPolicy policy : kZeroCopyLoops) {
    for (ResLayout layout : {ResLayout::kNHD, ResLayout::kHND}) {
      CAPTURE(loop_name(policy));
      CAPTURE(static_cast<int>(layout));
      ResidencyScenario s;
      s.policy = policy;
      s.layout = layout;
      s.steps = 30;
      s.slots_per_head = 100;
      s.budget = 72;
      s.max_blocks_per_sequence = 160;  // prompts of 70-76 blocks: 70-72 selected + the tail
      s.min_prompt_tokens = 70 * 16;
      s.pages_per_sequence = 100;
      s.change_rate = 0.15;
      s.seed = 41 + static_cast<unsigned>(layout);
      check_scenario(s);
    }
  }
}

TEST_CASE("residency: copy engine (cudaMemcpyBatchAsync), HND host layout") {
  NOSA_REQUIRE_GPU();
  ResidencyScenario s;
  s.policy = ResPolicy::kCopyEngine;
  s.layout = ResLayout::kHND;
  s.change_rate = 0.25;
  s.seed = 7;
  check_scenario(s);
}

TEST_CASE("residency: device-resident pool, NHD host layout") {
  NOSA_REQUIRE_GPU();
  ResidencyScenario s;
  s.policy = ResPolicy::kDeviceResident;
  s.layout = ResLayout::kNHD;
  s.seed = 9;
  check_scenario(s);
}

#if defined(NOSA_FULL_MATRIX)
TEST_CASE("residency: full matrix (B=64, D=128; device-resident HND)") {
  NOSA_REQUIRE_GPU();
  for (auto [policy, layout] : {std::pair{ResPolicy::kZeroCopy, ResLayout::kNHD}, std::pair{ResPolicy::kZeroCopy, ResLayout::kHND},
                                std::pair{ResPolicy::kZeroCopyBulk, ResLayout::kNHD}, std::pair{ResPolicy::kZeroCopyBulk, ResLayout::kHND},
                                std::pair{ResPolicy::kCopyEngine, ResLayout::kHND}, std::pair{ResPolicy::kDeviceResident, ResLayout::kHND}}) {
    ResidencyScenario s;
    s.policy = policy;
    s.layout = layout;
    s.shape = ResShape::kLarge;
    s.steps = 40;
    s.slots_per_head = 20;
    s.budget = 16;
    s.seed = 21 + static_cast<unsigned>(policy) * 3 + static_cast<unsigned>(layout);
    check_scenario(s);
  }
  ResidencyScenario s;
  s.policy = ResPolicy::kDeviceResident;
  s.layout = ResLayout::kHND;
  s.seed = 33;
  check_scenario(s);
}

TEST_CASE("residency: full matrix (B=128, D=128: two bulk stages per matrix)") {
  NOSA_REQUIRE_GPU();
  for (auto [policy, layout] : {std::pair{ResPolicy::kZeroCopy, ResLayout::kNHD}, std::pair{ResPolicy::kZeroCopyBulk, ResLayout::kNHD},
                                std::pair{ResPolicy::kZeroCopyBulk, ResLayout::kHND}}) {
    ResidencyScenario s;
    s.policy = policy;
    s.layout = layout;
    s.shape = ResShape::kWide;
    s.steps = 30;
    s.slots_per_head = 20;
    s.budget = 16;
    s.seed = 51 + static_cast<unsigned>(policy) * 3 + static_cast<unsigned>(layout);
    check_scenario(s);
  }
}
#endif

TEST_CASE("residency: argument and capacity errors") {
  NOSA_REQUIRE_GPU();
  const auto fails = nosa_test::residency_error_checks();
  for (const auto& f : fails) FAIL_CHECK(f);
  CHECK(fails.empty());
}
