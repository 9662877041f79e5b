// Tests of the 2-byte storage types: bf16 and fp16 conversions must round to nearest even exactly
// like __float2bfloat16 / __float2half, since host pools filled through them are handed to the
// kernels bit for bit. The references below are written independently (double arithmetic with
// std::nearbyint, and the compiler's _Float16 where it has one), not by re-deriving the bit tricks.
#include <nosa/types.h>

#include <doctest/doctest.h>

#include <cfenv>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>

namespace {

std::uint64_t splitmix(std::uint64_t& s) {
  std::uint64_t z = (s += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

float from_bits(std::uint32_t u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}
std::uint32_t bits_of(float f) {
  std::uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}
bool same_value(double a, double b) {  // equal, and same sign for zeros
  return a == b && std::signbit(a) == std::signbit(b);
}

// Decoded value of an fp16 bit pattern, from the IEEE definition.
double half_value(std::uint16_t h) {
  const int s = h >> 15, e = (h >> 10) & 31, m = h & 1023;
  double v;
  if (e == 0) v = std::ldexp(static_cast<double>(m), -24);
  else if (e == 31) v = m == 0 ? std::numeric_limits<double>::infinity() : std::numeric_limits<double>::quiet_NaN();
  else v = std::ldexp(1.0 + m / 1024.0, e - 15);
  return s ? -v : v;
}

// Nearest fp16 value of a finite float (ties to even), in double arithmetic.
double half_reference(float f) {
  const double a = std::fabs(static_cast<double>(f));
  double r;
  if (a >= 65520.0) {
    r = std::numeric_limits<double>::infinity();  // 65520 is the tie between 65504 and 2^16: rounds up
  } else if (a == 0.0) {
    r = 0.0;
  } else {
    int e = std::ilogb(a);
    if (e < -14) e = -14;  // subnormal range has the fixed spacing 2^-24
    const double ulp = std::ldexp(1.0, e - 10);
    r = std::nearbyint(a / ulp) * ulp;  // a / ulp is exact; nearbyint ties to even
  }
  return std::signbit(f) ? -r : r;
}

// Nearest bf16 value of a finite float (ties to even): pick between truncation and the next step.
double bf16_reference(float f) {
  const std::uint32_t u = bits_of(f);
  const std::uint32_t lo = u & 0xffff0000u;
  const double dlo = from_bits(lo);
  const double dhi = (lo & 0x7fffffffu) == 0x7f7f0000u ? std::copysign(std::numeric_limits<double>::infinity(), f)
                                                       : static_cast<double>(from_bits(lo + 0x10000u));
  const double x = f;
  const double dist_lo = std::fabs(x - dlo), dist_hi = std::fabs(dhi - x);
  if (std::isinf(dhi)) {
    // Above the largest bf16, RNE still rounds to inf past the midpoint 0x7f7f8000.
    return (u & 0xffffu) > 0x8000u || ((u & 0xffffu) == 0x8000u && ((lo >> 16) & 1u)) ? dhi : dlo;
  }
  if (dist_lo < dist_hi) return dlo;
  if (dist_hi < dist_lo) return dhi;
  return ((lo >> 16) & 1u) ? dhi : dlo;
}

// Random floats covering every exponent, plus values clustered on rounding midpoints.
float random_float(std::uint64_t& s, int kind) {
  const std::uint32_t r = static_cast<std::uint32_t>(splitmix(s));
  switch (kind) {
    case 0: return from_bits(r);                                     // any bit pattern
    case 1: {  // |f| in [2^-26, 2^18): the whole fp16 range, subnormals and overflow included
      const std::uint32_t e = 101 + static_cast<std::uint32_t>(splitmix(s) % 44);
      return from_bits((r & 0x807fffffu) | (e << 23));
    }
    case 2: return from_bits((r & 0xffff0000u) | 0x8000u);           // bf16 midpoints
    default: return from_bits((r & 0xffffe000u) | 0x1000u);          // fp16 (normal) midpoints
  }
}

}  // namespace

TEST_CASE("bf16: known values and exhaustive round trip") {
  CHECK(nosa::to_bfloat16(1.0f).bits == 0x3F80);
  CHECK(nosa::to_bfloat16(-2.0f).bits == 0xC000);
  CHECK(nosa::to_bfloat16(std::numeric_limits<float>::infinity()).bits == 0x7F80);
  CHECK(nosa::to_bfloat16(-0.0f).bits == 0x8000);
  CHECK(nosa::to_float(nosa::bfloat16_t{0x4049}) == 3.140625f);
  // Ties: 1 + 2^-8 lies halfway between 1 and 1 + 2^-7 and goes to the even 1.0;
  // 1 + 3*2^-8 lies halfway between 1 + 2^-7 (odd) and 1 + 2^-6 and goes up.
  CHECK(nosa::to_bfloat16(1.0f + std::ldexp(1.0f, -8)).bits == 0x3F80);
  CHECK(nosa::to_bfloat16(1.0f + 3 * std::ldexp(1.0f, -8)).bits == 0x3F82);
  CHECK(nosa::to_bfloat16(std::numeric_limits<float>::max()).bits == 0x7F80);  // RNE overflows
  int nan_count = 0;
  for (std::uint32_t b = 0; b < 65536; ++b) {
    const nosa::bfloat16_t h{static_cast<std::uint16_t>(b)};
    const float f = nosa::to_float(h);
    REQUIRE(bits_of(f) == (b << 16));
    if (std::isnan(f)) {
      ++nan_count;
      CHECK(std::isnan(nosa::to_float(nosa::to_bfloat16(f))));  // NaN stays NaN (never becomes inf)
    } else {
      REQUIRE(nosa::to_bfloat16(f).bits == b);
    }
  }
  CHECK(nan_count == 2 * 127);
}

TEST_CASE("bf16: float rounding matches an independent nearest-even reference") {
  std::uint64_t seed = 1234;
  int checked = 0;
  for (int i = 0; i < 600000; ++i) {
    const float f = random_float(seed, i % 3);
    if (std::isnan(f)) continue;
    const double want = bf16_reference(f);
    const double got = nosa::to_float(nosa::to_bfloat16(f));
    if (!same_value(got, want)) {
      CAPTURE(bits_of(f));
      CAPTURE(got);
      CAPTURE(want);
      REQUIRE(same_value(got, want));
    }
    ++checked;
  }
  CHECK(checked > 500000);
}

TEST_CASE("fp16: decoding matches the IEEE definition for all 65536 patterns") {
  CHECK(nosa::to_float(nosa::float16_t{0x3C00}) == 1.0f);
  CHECK(nosa::to_float(nosa::float16_t{0xC000}) == -2.0f);
  CHECK(nosa::to_float(nosa::float16_t{0x7BFF}) == 65504.0f);
  CHECK(nosa::to_float(nosa::float16_t{0x0001}) == std::ldexp(1.0f, -24));
  CHECK(nosa::to_float(nosa::float16_t{0x0400}) == std::ldexp(1.0f, -14));
  CHECK(std::isinf(nosa::to_float(nosa::float16_t{0xFC00})));
  for (std::uint32_t b = 0; b < 65536; ++b) {
    const std::uint16_t h = static_cast<std::uint16_t>(b);
    const double want = half_value(h);
    const float got = nosa::to_float(nosa::float16_t{h});
    if (std::isnan(want)) {
      REQUIRE(std::isnan(got));
      CHECK(std::isnan(nosa::to_float(nosa::to_float16(got))));
    } else {
      REQUIRE(same_value(got, want));
      REQUIRE(nosa::to_float16(got).bits == h);  // exact round trip
    }
  }
}

TEST_CASE("fp16: float rounding matches an independent nearest-even reference") {
  REQUIRE(std::fegetround() == FE_TONEAREST);
  // Hand cases: ties to even at 1 + 2^-11, the overflow boundary and the subnormal boundary.
  CHECK(nosa::to_float16(1.0f + std::ldexp(1.0f, -11)).bits == 0x3C00);
  CHECK(nosa::to_float16(1.0f + 3 * std::ldexp(1.0f, -11)).bits == 0x3C02);
  CHECK(nosa::to_float16(65504.0f).bits == 0x7BFF);
  CHECK(nosa::to_float16(65519.996f).bits == 0x7BFF);
  CHECK(nosa::to_float16(65520.0f).bits == 0x7C00);
  CHECK(nosa::to_float16(std::ldexp(1.0f, -25)).bits == 0x0000);  // tie between 0 and 2^-24
  CHECK(nosa::to_float16(std::nextafter(std::ldexp(1.0f, -25), 1.0f)).bits == 0x0001);
  CHECK(nosa::to_float16(3 * std::ldexp(1.0f, -25)).bits == 0x0002);  // tie 1.5 ulp -> even 2
  CHECK(nosa::to_float16(-0.0f).bits == 0x8000);
  std::uint64_t seed = 99;
  int checked = 0;
  for (int i = 0; i < 600000; ++i) {
    const int kind = i % 4 == 2 ? 0 : i % 4;  // bf16 midpoints are not interesting for fp16
    const float f = random_float(seed, kind);
    if (std::isnan(f)) continue;
    const double want = half_reference(f);
    const double got = nosa::to_float(nosa::to_float16(f));
    if (!same_value(got, want)) {
      CAPTURE(bits_of(f));
      CAPTURE(got);
      CAPTURE(want);
      REQUIRE(same_value(got, want));
    }
#if defined(__FLT16_MAX__) && (defined(__x86_64__) || defined(__aarch64__))
    // Second opinion from the compiler's own binary16 conversion.
    const _Float16 c = static_cast<_Float16>(f);
    std::uint16_t cbits;
    std::memcpy(&cbits, &c, 2);
    REQUIRE(nosa::to_float16(f).bits == cbits);
#endif
    ++checked;
  }
  CHECK(checked > 500000);
}

TEST_CASE("load_as and store_as convert on load and round once on store") {
  const nosa::bfloat16_t b = nosa::to_bfloat16(0.1f);
  CHECK(nosa::load_as<double>(b) == static_cast<double>(nosa::to_float(b)));
  CHECK(nosa::load_as<float>(nosa::to_float16(0.1f)) == nosa::to_float(nosa::to_float16(0.1f)));
  CHECK(nosa::load_as<double>(0.25f) == 0.25);
  CHECK(nosa::load_as<float>(0.1) == 0.1f);
  CHECK(nosa::store_as<nosa::bfloat16_t>(1.0 + 3 * std::ldexp(1.0, -8)).bits == 0x3F82);
  CHECK(nosa::store_as<nosa::float16_t>(-2.0).bits == 0xC000);
  CHECK(nosa::store_as<float>(0.1) == 0.1f);
  CHECK(nosa::store_as<double>(0.1) == 0.1);
  static_assert(nosa::is_element_type_v<nosa::bfloat16_t> && nosa::is_element_type_v<nosa::float16_t>);
  static_assert(nosa::is_element_type_v<float> && nosa::is_element_type_v<double>);
  static_assert(!nosa::is_element_type_v<int> && !nosa::is_element_type_v<std::uint16_t>);
}
