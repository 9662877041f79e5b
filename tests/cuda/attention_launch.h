// Plain (non-template) wrappers around nosa/attention.cuh, compiled by nvcc in
// attention_launch.cu and called from the doctest cases in test_attention.cpp.
#pragma once

#include <nosa/detail/attention_args.h>
#include <nosa/geometry.h>
#include <nosa/status.h>

#include <cuda_runtime.h>

#include <vector>

namespace nosa_test {

struct AttentionInstanceDesc {
  nosa::Dims dims;
  nosa::ElementType type;
};

/// The instances compiled into attention_launch.cu (small in CI, the full matrix with
/// NOSA_FULL_MATRIX=1).
std::vector<AttentionInstanceDesc> attention_instances();
bool attention_full_matrix();

nosa::Status attention_plan(const nosa::Dims& dims, nosa::ElementType type,
                            const nosa::DecodeAttentionArgs<void>& args, nosa::AttentionPlan* plan);
nosa::Status attention_run(const nosa::Dims& dims, nosa::ElementType type, const nosa::DecodeAttentionArgs<void>& args,
                           void* workspace, size_t workspace_bytes, cudaStream_t stream);
nosa::Status attention_merge(nosa::ElementType type, int rows, int head_dim, const void* o_a, const float* lse_a,
                             const void* o_b, const float* lse_b, void* o_out, float* lse_out, cudaStream_t stream);

}  // namespace nosa_test
