// The host usage example of README.md ("Using it"), compiled and run as written, so the README
// cannot drift from the API.
#include <doctest/doctest.h>

#include <nosa/host.h>

#include <cmath>
#include <cstdio>
#include <vector>

#include "test_rng.h"

TEST_CASE("README host example") {
  const int Hkv = 2, G = 16, D = 128;
  const long long n = 6000;  // prompt tokens: 94 blocks, more than the budget of 64
  nosa_test::Rng rng(42);
  std::vector<float> k(static_cast<size_t>(n) * Hkv * D), v(k.size()), bias(static_cast<size_t>(n) * Hkv);
  for (auto& x : k) x = static_cast<float>(rng.normal());
  for (auto& x : v) x = static_cast<float>(rng.normal());
  for (auto& x : bias) x = static_cast<float>(rng.normal());
  std::vector<float> q(static_cast<size_t>(Hkv) * G * D), o(q.size()), lse(static_cast<size_t>(Hkv) * G);
  for (auto& x : q) x = static_cast<float>(rng.normal());

  // ---- as in README.md ----
  nosa::SelectionParams params;                       // c=32, s=16, sink 1, local 16, qk 33, budget 64
  nosa::Dims dims{/*block*/ 64, /*head_dim*/ 128, /*group*/ 16};
  nosa::host::KVCache<float> layer(/*num_kv_heads=*/2, dims, params);

  nosa::throw_if_error(layer.add_sequence(/*id=*/7));
  // k, v: [n][Hkv][D], bias: [n][Hkv]   (float, double, nosa::bfloat16_t or nosa::float16_t)
  nosa::throw_if_error(layer.append(7, n, k.data(), v.data(), bias.data()));

  // One decode step for a batch: q [batch][Hq][D] -> o [batch][Hq][D], lse [batch][Hq]
  std::vector<std::vector<int>> selected;              // [batch * Hkv] sorted block ids
  auto options = nosa::host::StepOptions::of<nosa::NosaSelector>();
  nosa::Status st = nosa::host::decode_step(layer, {7}, q.data(), o.data(), lse.data(), options, &selected);
  if (!st) std::fprintf(stderr, "%s\n", st.to_string().c_str());   // names the bad argument
  // ---- end of the README example ----

  REQUIRE(st.ok());
  REQUIRE(selected.size() == static_cast<size_t>(Hkv));
  for (const auto& s : selected) CHECK(s.size() == static_cast<size_t>(params.budget));
  for (float x : o) CHECK(std::isfinite(x));
  for (float x : lse) CHECK(std::isfinite(x));
  // A bad call names its argument.
  nosa::Status bad = nosa::host::decode_step(layer, {8}, q.data(), o.data(), lse.data(), options);
  CHECK(bad.code() == nosa::StatusCode::kNotFound);
  CHECK(bad.message().find("8") != std::string::npos);
}
