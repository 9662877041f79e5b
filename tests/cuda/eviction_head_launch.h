// Plain interface of the eviction-head GPU test: runs nosa::eviction_head on host data.
#pragma once

#include <nosa/status.h>

#include <cstdint>
#include <vector>

namespace nosa_test {

/// v: 2-byte bits [n][Hkv][D] (bf16 unless fp16); W: fp32 [Hkv][Hkv*D] (or, with w_as_t, rounded
/// to the element type); A [Hkv]. Outputs b [n][Hkv]. null_v / v_offset_bytes exercise the checks.
nosa::Status run_eviction_head(long long n, int hkv, int d, bool fp16, bool w_as_t, const std::vector<std::uint16_t>& v,
                               const std::vector<float>& W, const std::vector<float>& A, std::vector<float>* b,
                               bool null_v = false, int v_offset_bytes = 0);

}  // namespace nosa_test
