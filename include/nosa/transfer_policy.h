// nosa: transfer policies of the KV residency manager (compile-time choice).
//
// A policy says where the pool lives and how a missing block reaches its GPU slot:
//   ZeroCopyGather  pool in pinned, mapped host memory; the diff kernel (one CTA per (batch
//                   entry, KV head)) copies its own missing blocks right after choosing their
//                   slots, reading the pages through their device alias with 16-byte loads and
//                   many loads in flight (either host layout: kNHD is read as strided rows of D
//                   elements). PCIe is the limit, so batch * Hkv CTAs saturate it. Fully
//                   device-side: no host sync, CUDA-graph capturable.
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

struct ZeroCopyGather {
  static constexpr TransferKind kind = TransferKind::kZeroCopyGather;
  static constexpr bool pool_on_host = true;
  static constexpr bool graph_capturable = true;
  template <HeadLayout L>
  static constexpr bool supports_layout = true;
};

struct CopyEngine {
  static constexpr TransferKind kind = TransferKind::kCopyEngine;
  static constexpr bool pool_on_host = true;
  static constexpr bool graph_capturable = false;
  template <HeadLayout L>
  static constexpr bool supports_layout = (L == HeadLayout::kHND);
};

struct DeviceResident {
  static constexpr TransferKind kind = TransferKind::kDeviceResident;
  static constexpr bool pool_on_host = false;
  static constexpr bool graph_capturable = true;
  template <HeadLayout L>
  static constexpr bool supports_layout = true;
};

NOSA_NAMESPACE_END
