// Instances of decode attention compiled for test_attention.cpp, behind plain functions.
#include "cuda/attention_launch.h"

#include <nosa/attention.cuh>

namespace nosa_test {
namespace {

using nosa::AttentionInstance;
using nosa::bfloat16_t;
using nosa::float16_t;
using nosa::Geometry;
using nosa::HeadLayout;

#if defined(NOSA_FULL_MATRIX) && NOSA_FULL_MATRIX
// Every head dim x block size x G in {1,2,4,8,16,32} x both layouts x both element types, plus
// odd group sizes (3, 20) that pad the 16-row tile.
template <int B, int D, HeadLayout L, class T>
using PerBDL = nosa::AttentionInstanceList<
    AttentionInstance<Geometry<B, D, 1, L>, T>, AttentionInstance<Geometry<B, D, 2, L>, T>,
    AttentionInstance<Geometry<B, D, 3, L>, T>, AttentionInstance<Geometry<B, D, 4, L>, T>,
    AttentionInstance<Geometry<B, D, 8, L>, T>, AttentionInstance<Geometry<B, D, 16, L>, T>,
    AttentionInstance<Geometry<B, D, 20, L>, T>, AttentionInstance<Geometry<B, D, 32, L>, T>>;

template <class... Ls>
struct Concat;
template <class... A>
struct Concat<nosa::AttentionInstanceList<A...>> {
  using type = nosa::AttentionInstanceList<A...>;
};
template <class... A, class... Bs, class... Rest>
struct Concat<nosa::AttentionInstanceList<A...>, nosa::AttentionInstanceList<Bs...>, Rest...> {
  using type = typename Concat<nosa::AttentionInstanceList<A..., Bs...>, Rest...>::type;
};

template <int D, HeadLayout L, class T>
using PerDL = typename Concat<PerBDL<16, D, L, T>, PerBDL<32, D, L, T>, PerBDL<64, D, L, T>, PerBDL<128, D, L, T>>::type;
template <HeadLayout L, class T>
using PerL = typename Concat<PerDL<64, L, T>, PerDL<128, L, T>, PerDL<256, L, T>>::type;
using Instances = typename Concat<PerL<HeadLayout::kNHD, bfloat16_t>, PerL<HeadLayout::kHND, bfloat16_t>,
                                  PerL<HeadLayout::kNHD, float16_t>, PerL<HeadLayout::kHND, float16_t>>::type;
constexpr bool kFull = true;
#else
// CI: a representative set (4 kernels: D=128 with 1 or 2 row tiles, both layouts, both types).
using Instances = nosa::AttentionInstanceList<
    AttentionInstance<Geometry<64, 128, 1, HeadLayout::kNHD>, bfloat16_t>,
    AttentionInstance<Geometry<64, 128, 16, HeadLayout::kNHD>, bfloat16_t>,
    AttentionInstance<Geometry<64, 128, 1, HeadLayout::kHND>, bfloat16_t>,
    AttentionInstance<Geometry<64, 128, 16, HeadLayout::kHND>, bfloat16_t>,
    AttentionInstance<Geometry<64, 128, 16, HeadLayout::kHND>, float16_t>,
    AttentionInstance<Geometry<16, 128, 3, HeadLayout::kHND>, bfloat16_t>,
    AttentionInstance<Geometry<128, 128, 5, HeadLayout::kNHD>, bfloat16_t>,
    AttentionInstance<Geometry<32, 128, 20, HeadLayout::kHND>, bfloat16_t>>;
constexpr bool kFull = false;
#endif

template <class... Insts>
std::vector<AttentionInstanceDesc> describe(nosa::AttentionInstanceList<Insts...>) {
  return {AttentionInstanceDesc{nosa::Dims::of<typename Insts::geometry>(),
                                nosa::element_type_of_v<typename Insts::element>}...};
}

}  // namespace

std::vector<AttentionInstanceDesc> attention_instances() { return describe(Instances{}); }
bool attention_full_matrix() { return kFull; }

nosa::Status attention_plan(const nosa::Dims& dims, nosa::ElementType type,
                            const nosa::DecodeAttentionArgs<void>& args, nosa::AttentionPlan* plan) {
  return nosa::plan_decode_attention(Instances{}, dims, type, args, plan);
}

nosa::Status attention_run(const nosa::Dims& dims, nosa::ElementType type, const nosa::DecodeAttentionArgs<void>& args,
                           void* workspace, size_t workspace_bytes, cudaStream_t stream) {
  return nosa::decode_attention(Instances{}, dims, type, args, workspace, workspace_bytes, stream);
}

nosa::Status attention_merge(nosa::ElementType type, int rows, int head_dim, const void* o_a, const float* lse_a,
                             const void* o_b, const float* lse_b, void* o_out, float* lse_out, cudaStream_t stream) {
  if (type == nosa::ElementType::kBFloat16)
    return nosa::merge_attention_states(rows, head_dim, static_cast<const bfloat16_t*>(o_a), lse_a,
                                        static_cast<const bfloat16_t*>(o_b), lse_b, static_cast<bfloat16_t*>(o_out),
                                        lse_out, stream);
  return nosa::merge_attention_states(rows, head_dim, static_cast<const float16_t*>(o_a), lse_a,
                                      static_cast<const float16_t*>(o_b), lse_b, static_cast<float16_t*>(o_out),
                                      lse_out, stream);
}

}  // namespace nosa_test
