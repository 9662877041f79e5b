// nosa::detail: argument checks, split planning and launches of the decode attention kernels.
// The public facade (nosa/attention.cuh) is a thin layer over this file.
#pragma once

#include <nosa/config.h>
#include <nosa/detail/attention_args.h>
#include <nosa/detail/attention_kernel.cuh>
#include <nosa/detail/cuda_check.cuh>
#include <nosa/status.h>
#include <nosa/types.h>
#include <nosa/workspace.h>

#include <cuda_runtime.h>

#include <atomic>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <string>
#include <type_traits>

NOSA_NAMESPACE_BEGIN

namespace detail {

inline constexpr int kMaxAttentionSplits = 256;

template <class To, class From>
DecodeAttentionArgs<To> cast_args(const DecodeAttentionArgs<From>& a) {
  DecodeAttentionArgs<To> r;
  r.batch = a.batch;
  r.num_kv_heads = a.num_kv_heads;
  r.max_blocks = a.max_blocks;
  r.num_slots = a.num_slots;
  r.q = static_cast<const To*>(static_cast<const void*>(a.q));
  r.o = static_cast<To*>(static_cast<void*>(a.o));
  r.lse = a.lse;
  r.k_cache = static_cast<const To*>(static_cast<const void*>(a.k_cache));
  r.v_cache = static_cast<const To*>(static_cast<const void*>(a.v_cache));
  r.bias_cache = a.bias_cache;
  r.block_ids = a.block_ids;
  r.slot_ids = a.slot_ids;
  r.counts = a.counts;
  r.seq_lens = a.seq_lens;
  r.seq_slots = a.seq_slots;
  r.mode = a.mode;
  r.num_splits = a.num_splits;
  return r;
}

inline int log2_exact(int v) {
  int l = 0;
  while ((1 << l) < v) ++l;
  return l;
}

/// Checks every argument that can be checked without reading device memory.
template <class T>
Status check_attention_args(const DecodeAttentionArgs<T>& a, int block_size, int head_dim, int group_size) {
  const std::string fn = "decode_attention: ";
  if (a.batch < 0) return invalid_argument(fn + "batch = " + std::to_string(a.batch) + " is negative");
  if (a.num_kv_heads < 1)
    return invalid_argument(fn + "num_kv_heads = " + std::to_string(a.num_kv_heads) + ": must be >= 1");
  if (a.max_blocks < 1) return invalid_argument(fn + "max_blocks = " + std::to_string(a.max_blocks) + ": must be >= 1");
  if (static_cast<long long>(a.max_blocks) * block_size > (1LL << 30))
    return invalid_argument(fn + "max_blocks * block_size = " +
                            std::to_string(static_cast<long long>(a.max_blocks) * block_size) +
                            " exceeds 2^30 tokens per sequence");
  if (a.num_slots < 1) return invalid_argument(fn + "num_slots = " + std::to_string(a.num_slots) + ": must be >= 1");
  if (a.num_splits < 0 || a.num_splits > kMaxAttentionSplits)
    return invalid_argument(fn + "num_splits = " + std::to_string(a.num_splits) + ": must be in 0.." +
                            std::to_string(kMaxAttentionSplits));
  if (a.mode != AttentionMode::kSparse && a.mode != AttentionMode::kDense)
    return invalid_argument(fn + "mode is not kSparse or kDense");
  if (static_cast<long long>(a.batch) * a.num_kv_heads > 65535LL * 65535LL)
    return invalid_argument(fn + "batch * num_kv_heads is too large");
  if (a.num_kv_heads > 65535) return invalid_argument(fn + "num_kv_heads must be <= 65535");
  if (a.batch > 65535) return invalid_argument(fn + "batch must be <= 65535");
  if (a.batch == 0) return {};
  NOSA_RETURN_IF_ERROR(check_pointer(a.q, "decode_attention: q", 16));
  NOSA_RETURN_IF_ERROR(check_pointer(a.o, "decode_attention: o", 16));
  NOSA_RETURN_IF_ERROR(check_pointer(a.lse, "decode_attention: lse", 4));
  NOSA_RETURN_IF_ERROR(check_pointer(a.k_cache, "decode_attention: k_cache", 16));
  NOSA_RETURN_IF_ERROR(check_pointer(a.v_cache, "decode_attention: v_cache", 16));
  if (a.bias_cache != nullptr) NOSA_RETURN_IF_ERROR(check_pointer(a.bias_cache, "decode_attention: bias_cache", 4));
  NOSA_RETURN_IF_ERROR(check_pointer(a.seq_lens, "decode_attention: seq_lens", 4));
  if (a.mode == AttentionMode::kSparse) {
    NOSA_RETURN_IF_ERROR(check_pointer(a.block_ids, "decode_attention: block_ids", 4));
    NOSA_RETURN_IF_ERROR(check_pointer(a.slot_ids, "decode_attention: slot_ids", 4));
    NOSA_RETURN_IF_ERROR(check_pointer(a.counts, "decode_attention: counts", 4));
  } else if (a.slot_ids != nullptr) {
    NOSA_RETURN_IF_ERROR(check_pointer(a.slot_ids, "decode_attention: slot_ids", 4));
  }
  if (a.seq_slots != nullptr) NOSA_RETURN_IF_ERROR(check_pointer(a.seq_slots, "decode_attention: seq_slots", 4));
  (void)head_dim;
  (void)group_size;
  return {};
}

/// Launcher for one compiled kernel (element type, head dim, tiles of 16 query rows, layout).
template <class T, int D, int MT, HeadLayout Layout>
struct AttentionLauncher {
  using CT = cuda_type_t<T>;
  using Tr = AttentionTraits<CT, D, MT, Layout>;

  /// What a launch needs to know about the current device, queried once per device and kernel:
  /// the runtime calls (attribute set, occupancy query) cost microseconds of host time per call,
  /// on the critical path of every decode step that is not replayed from a graph.
  struct DeviceInfo {
    int sms = 0;
    int per_sm = 0;       // resident CTAs per SM at kSmemBytes
    bool pdl = false;     // programmatic dependent launch (compute capability >= 9 and sm_90+ code)
  };
  static constexpr int kCachedDevices = 64;

  static Status prepare(DeviceInfo* info) {
    int dev = 0;
    NOSA_CUDA_TRY(cudaGetDevice(&dev));
    static std::atomic<int> ready[kCachedDevices];  // 0: not yet; else packed info + 1
    if (dev >= 0 && dev < kCachedDevices) {
      const int v = ready[dev].load(std::memory_order_acquire);
      if (v != 0) {
        info->sms = (v - 1) >> 12;
        info->per_sm = ((v - 1) >> 1) & 0x7ff;
        info->pdl = ((v - 1) & 1) != 0;
        return {};
      }
    }
    NOSA_CUDA_TRY(cudaFuncSetAttribute(decode_attention_kernel<CT, D, MT, Layout>,
                                       cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(Tr::kSmemBytes)));
    int sms = 0, per_sm = 0, major = 0;
    NOSA_CUDA_TRY(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev));
    NOSA_CUDA_TRY(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev));
    NOSA_CUDA_TRY(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, decode_attention_kernel<CT, D, MT, Layout>,
                                                                Tr::kThreads, Tr::kSmemBytes));
    // griddepcontrol (the PDL wait in the merge kernel) exists only in code compiled for sm_90+:
    // an sm_80 build that the driver JIT-compiles for an sm_90 device has none, so it must not be
    // launched as a programmatic dependent (ptxVersion is the architecture the code was compiled for).
    cudaFuncAttributes fa{};
    NOSA_CUDA_TRY(cudaFuncGetAttributes(&fa, decode_attention_kernel<CT, D, MT, Layout>));
    const int code_arch = fa.ptxVersion > 0 ? fa.ptxVersion : fa.binaryVersion;
    info->sms = sms;
    info->per_sm = per_sm;
    info->pdl = major >= 9 && code_arch >= 90;
    if (dev >= 0 && dev < kCachedDevices && sms > 0 && sms < (1 << 18) && per_sm >= 0 && per_sm < 0x800)
      ready[dev].store(((sms << 12) | (per_sm << 1) | (info->pdl ? 1 : 0)) + 1, std::memory_order_release);
    return {};
  }

  static Status plan(const DecodeAttentionArgs<T>& a, int block_size, int group_size, AttentionPlan* out,
                     const DeviceInfo* known = nullptr) {
    AttentionPlan plan;
    int splits = a.num_splits;
    const long long work = static_cast<long long>(a.batch) * a.num_kv_heads;
    if (splits == 0) {
      splits = 1;
      if (work > 0) {
        DeviceInfo info;
        if (known != nullptr) info = *known;
        else NOSA_RETURN_IF_ERROR(prepare(&info));
        const long long slots = static_cast<long long>(info.sms) * (info.per_sm > 0 ? info.per_sm : 1);
        // Fill about one wave; never give a split fewer than two tiles of the largest row.
        // (Measured on H100, docs/notes/attention.md: two waves of CTAs instead of one were
        // slower in every case, e.g. 74% vs 76% of the copy ceiling at batch 64, Hkv 2.)
        const long long max_tiles = (static_cast<long long>(a.max_blocks) * block_size + Tr::kTileN - 1) / Tr::kTileN;
        long long s = slots / work;
        if (s > max_tiles / 2) s = max_tiles / 2;
        if (s > kMaxAttentionSplits) s = kMaxAttentionSplits;
        splits = s < 1 ? 1 : static_cast<int>(s);
      }
    }
    plan.num_splits = splits;
    const std::size_t rows = static_cast<std::size_t>(a.batch) * a.num_kv_heads * group_size;
    WorkspaceLayout layout;
    layout.add(splits > 1 ? std::size_t(splits) * rows * D * sizeof(float) : 0);
    layout.add(splits > 1 ? std::size_t(splits) * rows * sizeof(float) : 0);
    plan.workspace_bytes = layout.total_bytes();
    *out = plan;
    return {};
  }

  static Status run(const DecodeAttentionArgs<T>& a, int block_size, int group_size, void* workspace,
                    std::size_t workspace_bytes, cudaStream_t stream) {
    NOSA_RETURN_IF_ERROR(check_attention_args(a, block_size, D, group_size));
    if (a.batch == 0) return {};
    DeviceInfo info;
    NOSA_RETURN_IF_ERROR(prepare(&info));
    AttentionPlan plan;
    NOSA_RETURN_IF_ERROR(AttentionLauncher::plan(a, block_size, group_size, &plan, &info));
    const std::size_t rows = static_cast<std::size_t>(a.batch) * a.num_kv_heads * group_size;
    WorkspaceLayout layout;
    const int i_o = layout.add(plan.num_splits > 1 ? std::size_t(plan.num_splits) * rows * D * sizeof(float) : 0);
    const int i_l = layout.add(plan.num_splits > 1 ? std::size_t(plan.num_splits) * rows * sizeof(float) : 0);
    if (plan.num_splits > 1) NOSA_RETURN_IF_ERROR(layout.check(workspace, workspace_bytes, "decode_attention: workspace"));

    AttentionKernelParams p{};
    p.q = a.q;
    p.o = a.o;
    p.lse = a.lse;
    p.k_cache = a.k_cache;
    p.v_cache = a.v_cache;
    p.bias_cache = a.bias_cache;
    p.block_ids = a.block_ids;
    p.slot_ids = a.slot_ids;
    p.counts = a.counts;
    p.seq_lens = a.seq_lens;
    p.seq_slots = a.seq_slots;
    p.part_o = plan.num_splits > 1 ? layout.at<float>(workspace, i_o) : nullptr;
    p.part_lse = plan.num_splits > 1 ? layout.at<float>(workspace, i_l) : nullptr;
    p.batch = a.batch;
    p.num_kv_heads = a.num_kv_heads;
    p.group_size = group_size;
    p.max_blocks = a.max_blocks;
    p.num_slots = a.num_slots;
    p.log2_block = log2_exact(block_size);
    p.num_splits = plan.num_splits;
    p.dense = a.mode == AttentionMode::kDense ? 1 : 0;
    p.scale_log2 = static_cast<float>(1.4426950408889634 / std::sqrt(static_cast<double>(D)));

    const dim3 grid(plan.num_splits, a.num_kv_heads, a.batch);
    decode_attention_kernel<CT, D, MT, Layout><<<grid, Tr::kThreads, Tr::kSmemBytes, stream>>>(p);
    NOSA_CUDA_TRY(cudaPeekAtLastError());
    if (plan.num_splits > 1) {
      // On sm_90+ the merge is a programmatic dependent launch: it is scheduled while the
      // attention grid runs and waits in-kernel (griddepcontrol.wait) for its partials, which
      // takes the launch gap between the two kernels off the critical path.
      cudaLaunchConfig_t cfg{};
      cfg.gridDim = dim3(static_cast<unsigned>(rows));
      cfg.blockDim = dim3(D / 4);
      cfg.dynamicSmemBytes = 0;
      cfg.stream = stream;
      cudaLaunchAttribute attr[1];
      attr[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
      attr[0].val.programmaticStreamSerializationAllowed = 1;
      cfg.attrs = attr;
      cfg.numAttrs = info.pdl ? 1 : 0;
      const float* part_o = p.part_o;
      const float* part_lse = p.part_lse;
      const int nsplits = plan.num_splits, nrows = static_cast<int>(rows);
      CT* o_out = reinterpret_cast<CT*>(a.o);
      float* lse_out = a.lse;
      NOSA_CUDA_TRY(cudaLaunchKernelEx(&cfg, merge_splits_kernel<CT, D>, part_o, part_lse, nsplits, nrows, o_out,
                                       lse_out));
    }
    return {};
  }
};

/// The kernel family of a geometry: G query rows round up to 1 or 2 tiles of 16.
template <class Geo, class T>
using launcher_for_t = AttentionLauncher<T, Geo::head_dim, (Geo::group_size + 15) / 16, Geo::layout>;

template <class T, int D>
Status merge_pair(int rows, const T* o_a, const float* lse_a, const T* o_b, const float* lse_b, T* o_out,
                  float* lse_out, cudaStream_t stream) {
  using CT = cuda_type_t<T>;
  const long long threads = static_cast<long long>(rows) * (D / 8);
  const unsigned blocks = static_cast<unsigned>((threads + 255) / 256);
  merge_pair_kernel<CT, D><<<blocks, 256, 0, stream>>>(rows, as_cuda(o_a), lse_a, as_cuda(o_b), lse_b, as_cuda(o_out),
                                                       lse_out);
  NOSA_CUDA_TRY(cudaPeekAtLastError());
  return {};
}

}  // namespace detail
NOSA_NAMESPACE_END
