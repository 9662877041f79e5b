// Host reference of the eviction head: b = A * softplus(W . concat(v)) on hand-computable inputs.
#include <nosa/host/eviction_head.h>

#include <doctest/doctest.h>

#include <cmath>
#include <vector>

TEST_CASE("host::eviction_head: small exact example") {
  // Hkv = 2, D = 2: concat(v_t) = [1, 2, 3, 4]
  const std::vector<float> v = {1, 2, 3, 4};
  const std::vector<float> W = {1, 0, 0, 0,    // head 0: x = 1
                                0, 0, -1, -1}; // head 1: x = -7
  const std::vector<float> A = {2.f, 0.5f};
  std::vector<double> b(2);
  REQUIRE(nosa::host::eviction_head<double>(1, 2, 2, v.data(), W.data(), A.data(), b.data()).ok());
  CHECK(b[0] == doctest::Approx(2.0 * std::log1p(std::exp(1.0))).epsilon(1e-14));
  CHECK(b[1] == doctest::Approx(0.5 * std::log1p(std::exp(-7.0))).epsilon(1e-14));
  CHECK(nosa::host::softplus(800.0) == doctest::Approx(800.0));  // no overflow
  CHECK(nosa::host::eviction_head<double>(1, 2, 2, v.data(), W.data(), nullptr, b.data()).code() ==
        nosa::StatusCode::kInvalidArgument);
  CHECK(nosa::host::eviction_head<double>(-1, 2, 2, v.data(), W.data(), A.data(), b.data()).code() ==
        nosa::StatusCode::kInvalidArgument);
}
