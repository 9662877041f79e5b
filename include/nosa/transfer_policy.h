// nosa: transfer policies of the KV residency manager (compile-time choice).
//
// A policy says where the pool lives and how a missing block reaches its GPU slot:
//   ZeroCopyGather  pool in pinned, mapped host memory; the diff kernel (one CTA per (batch
//                   entry, KV head)) copies its own missing blocks right after choosing their
//                   slots, reading the pages through their device alias (either host layout:
//                   kNHD is read as strided rows of D elements). PCIe is the limit, so batch * Hkv
//                   CTAs saturate it. Fully device-side: no host sync, CUDA-graph capturable.
//                   The copy loop is a compile-time choice (GatherCopy): 16-byte SM loads with
//                   many in flight (kSmLoads, the default), or TMA bulk copies through shared
//                   memory (kBulk, sm_90+; other targets compile the SM loop instead).
//   CopyEngine      pool in pinned host memory; the copy engines move each missing block of one
//                   head as 3 contiguous pieces (K, V, bias) in one cudaMemcpyBatchAsync. Needs
//                   host layout kHND (a head's block is contiguous only there). The list of copies
//                   must exist on the host, so make_resident copies the device-side diff back and
//                   synchronizes the stream once per call: not graph capturable.
//   DeviceResident  the pool is device memory (the no-offload baseline with the same API); blocks
//                   reach slots through the same fused kernel, at HBM speed.
#pragma once

#include <nosa/config.h>
#include <nosa/types.h>

NOSA_NAMESPACE_BEGIN

enum class TransferKind : int { kZeroCopyGather = 0, kCopyEngine = 1, kDeviceResident = 2 };

inline const char* to_string(TransferKind kind) {
  switch (kind) {
    case TransferKind::kZeroCopyGather: return "ZeroCopyGather";
    case TransferKind::kCopyEngine: return "CopyEngine";
    case TransferKind::kDeviceResident: return "DeviceResident";
  }
  return "unknown";
}

/// How the fused diff + copy kernel moves a missing block's bytes (ZeroCopyGather only).
///   kSmLoads  every thread moves fixed 16-byte units of every block, 8-14 loads in flight.
///   kBulk     one warp per CTA runs a ring of shared-memory stages: cp.async.bulk (TMA) reads
///             K and V from the pool (one copy per stage in kHND, one per token row in kNHD),
///             cp.async.bulk stores the stage into the slot; the other warps copy the bias with
///             plain loads. Needs sm_90; compiled for an older target it falls back to kSmLoads.
enum class GatherCopy : int { kSmLoads = 0, kBulk = 1 };

inline const char* to_string(GatherCopy c) { return c == GatherCopy::kBulk ? "bulk (TMA)" : "SM loads"; }

template <GatherCopy Copy = GatherCopy::kSmLoads>
struct ZeroCopyGatherWith {
  static constexpr TransferKind kind = TransferKind::kZeroCopyGather;
  static constexpr GatherCopy gather_copy = Copy;
  static constexpr bool pool_on_host = true;
  static constexpr bool graph_capturable = true;
  template <HeadLayout L>
  static constexpr bool supports_layout = true;
};

/// The default zero-copy policy (SM loads until a device run shows the bulk copy is faster).
using ZeroCopyGather = ZeroCopyGatherWith<GatherCopy::kSmLoads>;
/// The same with TMA bulk copies (sm_90+).
using ZeroCopyGatherBulk = ZeroCopyGatherWith<GatherCopy::kBulk>;

struct CopyEngine {
  static constexpr TransferKind kind = TransferKind::kCopyEngine;
  static constexpr GatherCopy gather_copy = GatherCopy::kSmLoads;  // unused: no fused copy
  static constexpr bool pool_on_host = true;
  static constexpr bool graph_capturable = false;
  template <HeadLayout L>
  static constexpr bool supports_layout = (L == HeadLayout::kHND);
};

struct DeviceResident {
  static constexpr TransferKind kind = TransferKind::kDeviceResident;
  static constexpr GatherCopy gather_copy = GatherCopy::kSmLoads;  // HBM to HBM: SM loads suffice
  static constexpr bool pool_on_host = false;
  static constexpr bool graph_capturable = true;
  template <HeadLayout L>
  static constexpr bool supports_layout = true;
};

NOSA_NAMESPACE_END
