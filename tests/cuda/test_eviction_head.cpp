// GPU test of nosa::eviction_head against host::eviction_head (float64), plus argument checks.
#include "cuda/eviction_head_launch.h"
#include "cuda/gpu_test_util.h"

#include <nosa/host/eviction_head.h>
#include <nosa/types.h>

#include <doctest/doctest.h>

#include <cmath>
#include <random>
#include <vector>

TEST_CASE("eviction_head: GPU equals the float64 host reference") {
  NOSA_REQUIRE_GPU();
  std::mt19937 rng(3);
  std::normal_distribution<float> n01(0.f, 1.f);
  for (int d : {64, 128, 256})
    for (int hkv : {1, 2, 8})
      for (int variant = 0; variant < 3; ++variant) {
        const bool fp16 = variant == 1, w_as_t = variant == 2;
        const long long n = 37;
        INFO("D=" << d << " Hkv=" << hkv << " fp16=" << fp16 << " W as T=" << w_as_t);
        std::vector<std::uint16_t> v(static_cast<size_t>(n) * hkv * d);
        std::vector<float> vf(v.size()), W(static_cast<size_t>(hkv) * hkv * d), A(hkv);
        for (size_t e = 0; e < v.size(); ++e) {
          const float x = n01(rng);
          v[e] = fp16 ? nosa::to_float16(x).bits : nosa::to_bfloat16(x).bits;
          vf[e] = fp16 ? nosa::to_float(nosa::float16_t{v[e]}) : nosa::to_float(nosa::bfloat16_t{v[e]});
        }
        for (float& w : W) {
          w = n01(rng) * 2.f / std::sqrt(float(hkv * d));
          if (w_as_t) w = fp16 ? nosa::to_float(nosa::to_float16(w)) : nosa::to_float(nosa::to_bfloat16(w));
        }
        for (float& a : A) a = 0.5f + std::fabs(n01(rng));
        std::vector<double> ref(static_cast<size_t>(n) * hkv);
        REQUIRE(nosa::host::eviction_head<double>(n, hkv, d, vf.data(), W.data(), A.data(), ref.data()).ok());
        std::vector<float> got;
        const nosa::Status st = nosa_test::run_eviction_head(n, hkv, d, fp16, w_as_t, v, W, A, &got);
        REQUIRE_MESSAGE(st.ok(), st.to_string());
        double worst = 0;
        for (size_t e = 0; e < ref.size(); ++e)
          worst = std::max(worst, std::fabs(got[e] - ref[e]) / std::max(1e-3, std::fabs(ref[e])));
        CHECK_MESSAGE(worst < 1e-4, "worst relative error " << worst);
      }
}

TEST_CASE("eviction_head: bad arguments are refused before any launch") {
  NOSA_REQUIRE_GPU();
  std::vector<std::uint16_t> v(2 * 2 * 128, 0);
  std::vector<float> W(2 * 256, 0.f), A(2, 1.f), b;
  nosa::Status st = nosa_test::run_eviction_head(2, 2, 96, false, false, v, W, A, &b);
  CHECK(st.code() == nosa::StatusCode::kNotSupported);
  CHECK(st.message().find("head_dim") != std::string::npos);
  st = nosa_test::run_eviction_head(2, 2, 128, false, false, v, W, A, &b, /*null_v=*/true);
  CHECK(st.code() == nosa::StatusCode::kInvalidArgument);
  CHECK(std::isnan(b[0]));  // output untouched (0xff pattern)
  st = nosa_test::run_eviction_head(2, 2, 128, false, false, v, W, A, &b, false, /*v_offset_bytes=*/1);
  CHECK(st.code() == nosa::StatusCode::kMisaligned);
  st = nosa_test::run_eviction_head(-1, 2, 128, false, false, v, W, A, &b);
  CHECK(st.code() == nosa::StatusCode::kInvalidArgument);
  // host reference: softplus is stable for large |x|
  CHECK(nosa::host::softplus(100.0) == doctest::Approx(100.0));
  CHECK(nosa::host::softplus(-100.0) > 0.0);
}
