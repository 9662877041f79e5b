// Plain interface of the wgmma primitive test (detail/wgmma.cuh): one warpgroup computes
//   ss : D[64][N] = A[64][128] * B[N][128]^T   (both operands K-major in SW128 shared tiles)
//   rs : D[64][N] = P[64][64] * V[64][N]        (P from register fragments, V MN-major)
// on 2-byte inputs (bits), fp32 outputs.
#pragma once

#include <cstdint>
#include <vector>

namespace nosa_test {

struct WgmmaProbeResult {
  bool compiled = false;  // false: the binary holds no sm_90a code for this GPU (nothing ran)
  std::vector<float> d_ss, d_rs;
};

/// n: 64, 128 or 256. Returns compiled = false when the GPU is not sm_90 or the test was not
/// built for sm_90a.
WgmmaProbeResult run_wgmma_probe(int n, bool fp16, const std::vector<std::uint16_t>& a, const std::vector<std::uint16_t>& b,
                                 const std::vector<std::uint16_t>& p, const std::vector<std::uint16_t>& v);

}  // namespace nosa_test
