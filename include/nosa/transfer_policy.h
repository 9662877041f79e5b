// nosa: transfer policies of the KV residency manager (compile-time choice).
//
// A policy says where the pool lives and how a missing block reaches its GPU slot:
//   ZeroCopyGather  pool in pinned, mapped host memory; a gather kernel with a bounded grid reads
//                   the pages through their device alias with 16-byte loads (either host layout:
//                   kNHD is read as strided rows of D elements). Fully device-side: no host
//                   sync, CUDA-graph capturable.
//   CopyEngine      pool in pinned host memory; the copy engines move each missing block of one
//                   head as 3 contiguous pieces (K, V, bias) in one cudaMemcpyBatchAsync. Needs
//                   host layout kHND (a head's block is contiguous only there). The list of copies
//                   must exist on the host, so make_resident copies the device-side diff back and
//                   synchronizes the stream once per call: not graph capturable.
//   DeviceResident  the pool is device memory (the no-offload baseline with the same API); blocks
//                   reach slots with the same gather kernel, at HBM speed.
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
  /// CTAs of the gather kernel: PCIe is the limit, so a few CTAs saturate it and leave the SMs
  /// to attention (DESIGN.md section 5: 8 CTAs were as fast as 264).
  static constexpr int max_ctas = 32;
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
  static constexpr int max_ctas = 132;
  template <HeadLayout L>
  static constexpr bool supports_layout = true;
};

NOSA_NAMESPACE_END
