// GPU test of the Hopper wgmma primitives (detail/wgmma.cuh): descriptors, the SW128 tile layout,
// the accumulator and register-A fragment layouts, bf16 and fp16, N = 64/128/256, against a
// float64 product on the host. Skips (with a message) without an sm_90 GPU or sm_90a code.
#include "cuda/gpu_test_util.h"
#include "cuda/wgmma_launch.h"

#include <nosa/types.h>

#include <doctest/doctest.h>

#include <cmath>
#include <random>
#include <vector>

TEST_CASE("wgmma: ss (K-major x K-major) and rs (registers x MN-major) equal a float64 product") {
  NOSA_REQUIRE_GPU();
  std::mt19937 rng(11);
  std::uniform_int_distribution<int> small(-8, 8);
  for (int n : {64, 128, 256})
    for (bool fp16 : {false, true}) {
      INFO("N=" << n << " fp16=" << fp16);
      // Small integers times 1/8 are exact in both types; the products sum exactly in fp32.
      auto fill = [&](std::size_t count, std::vector<std::uint16_t>* bits, std::vector<double>* val) {
        bits->resize(count);
        val->resize(count);
        for (std::size_t i = 0; i < count; ++i) {
          const float x = small(rng) / 8.f;
          (*bits)[i] = fp16 ? nosa::to_float16(x).bits : nosa::to_bfloat16(x).bits;
          (*val)[i] = x;
        }
      };
      std::vector<std::uint16_t> a, b, p, v;
      std::vector<double> af, bf, pf, vf;
      fill(64 * 128, &a, &af);
      fill(static_cast<std::size_t>(n) * 128, &b, &bf);
      fill(64 * 64, &p, &pf);
      fill(static_cast<std::size_t>(64) * n, &v, &vf);
      const nosa_test::WgmmaProbeResult r = nosa_test::run_wgmma_probe(n, fp16, a, b, p, v);
      if (!r.compiled) {
        MESSAGE("skipped: the GPU is not sm_90 or this test was not built for sm_90a");
        return;
      }
      int bad_ss = 0, bad_rs = 0;
      for (int i = 0; i < 64; ++i)
        for (int j = 0; j < n; ++j) {
          double ss = 0, rs = 0;
          for (int k = 0; k < 128; ++k) ss += af[i * 128 + k] * bf[j * 128 + k];
          for (int k = 0; k < 64; ++k) rs += pf[i * 64 + k] * vf[k * n + j];
          bad_ss += !(std::fabs(r.d_ss[i * n + j] - ss) <= 1e-6 * (1 + std::fabs(ss)));
          bad_rs += !(std::fabs(r.d_rs[i * n + j] - rs) <= 1e-6 * (1 + std::fabs(rs)));
        }
      CHECK_MESSAGE(bad_ss == 0, bad_ss << " of " << 64 * n << " ss elements differ");
      CHECK_MESSAGE(bad_rs == 0, bad_rs << " of " << 64 * n << " rs elements differ");
    }
}
