// nosa: element types and layout enums that host and device code share.
//
// bfloat16_t and float16_t are 2-byte storage types with the same bit layout as CUDA's
// __nv_bfloat16 and __half, so a host pool filled through them can be handed to kernels by a
// reinterpret_cast. They exist so that host-only code (the reference, CPU examples, tests)
// never needs CUDA headers. Arithmetic is done after converting to float.
#pragma once

#include <nosa/config.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <type_traits>

NOSA_NAMESPACE_BEGIN

struct bfloat16_t {
  std::uint16_t bits = 0;
};
struct float16_t {
  std::uint16_t bits = 0;
};
static_assert(sizeof(bfloat16_t) == 2 && sizeof(float16_t) == 2, "storage types must be 2 bytes");

namespace detail {
inline std::uint32_t float_bits(float f) {
  std::uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}
inline float bits_float(std::uint32_t u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}
}  // namespace detail

/// float -> bf16 with round-to-nearest-even (NaN stays NaN), as __float2bfloat16 does.
inline bfloat16_t to_bfloat16(float f) {
  std::uint32_t u = detail::float_bits(f);
  if ((u & 0x7fffffffu) > 0x7f800000u) return bfloat16_t{static_cast<std::uint16_t>((u >> 16) | 0x40)};
  u += 0x7fffu + ((u >> 16) & 1u);
  return bfloat16_t{static_cast<std::uint16_t>(u >> 16)};
}
inline float to_float(bfloat16_t h) { return detail::bits_float(static_cast<std::uint32_t>(h.bits) << 16); }

/// float -> IEEE binary16 with round-to-nearest-even, as __float2half does.
inline float16_t to_float16(float f) {
  std::uint32_t x = detail::float_bits(f);
  std::uint16_t sign = static_cast<std::uint16_t>((x >> 16) & 0x8000u);
  std::uint32_t abs = x & 0x7fffffffu;
  if (abs >= 0x7f800000u) {  // inf or nan
    return float16_t{static_cast<std::uint16_t>(sign | 0x7c00u | (abs > 0x7f800000u ? 0x200u : 0u))};
  }
  if (abs >= 0x477ff000u) return float16_t{static_cast<std::uint16_t>(sign | 0x7c00u)};  // overflow
  if (abs < 0x38800000u) {  // subnormal or zero in half
    if (abs < 0x33000000u) return float16_t{sign};  // rounds to zero
    std::uint32_t mant = (abs & 0x007fffffu) | 0x00800000u;
    int shift = 113 - static_cast<int>(abs >> 23) + 13;  // 126-14 = 112 exponent offset
    std::uint32_t half_mant = mant >> shift;
    std::uint32_t rem = mant & ((1u << shift) - 1u);
    std::uint32_t halfway = 1u << (shift - 1);
    if (rem > halfway || (rem == halfway && (half_mant & 1u))) ++half_mant;
    return float16_t{static_cast<std::uint16_t>(sign | half_mant)};
  }
  std::uint32_t e = (abs >> 23) - 112;
  std::uint32_t mant = abs & 0x007fffffu;
  std::uint32_t h = (e << 10) | (mant >> 13);
  std::uint32_t rem = mant & 0x1fffu;
  if (rem > 0x1000u || (rem == 0x1000u && (h & 1u))) ++h;
  return float16_t{static_cast<std::uint16_t>(sign | h)};
}
inline float to_float(float16_t h) {
  std::uint32_t sign = static_cast<std::uint32_t>(h.bits & 0x8000u) << 16;
  std::uint32_t e = (h.bits >> 10) & 0x1fu;
  std::uint32_t m = h.bits & 0x3ffu;
  if (e == 0) {
    float v = std::ldexp(static_cast<float>(m), -24);
    return sign ? -v : v;
  }
  if (e == 31) return detail::bits_float(sign | 0x7f800000u | (m << 13));
  return detail::bits_float(sign | ((e + 112) << 23) | (m << 13));
}
inline float to_float(float f) { return f; }
inline double to_float(double f) { return f; }

/// Converts any supported element (float, double, bfloat16_t, float16_t) to Real.
template <class Real, class T>
inline Real load_as(T v) {
  return static_cast<Real>(to_float(v));
}

/// Converts a float to element type T (round to nearest even for the 2-byte types).
template <class T>
inline T store_as(double v) {
  if constexpr (std::is_same_v<T, bfloat16_t>) return to_bfloat16(static_cast<float>(v));
  else if constexpr (std::is_same_v<T, float16_t>) return to_float16(static_cast<float>(v));
  else return static_cast<T>(v);
}

template <class T>
inline constexpr bool is_element_type_v =
    std::is_same_v<T, float> || std::is_same_v<T, double> || std::is_same_v<T, bfloat16_t> ||
    std::is_same_v<T, float16_t>;

/// Element order of K/V for one block of tokens of all KV heads.
/// kNHD: token-major, [token][kv_head][head_dim] (what most engines store).
/// kHND: head-major,  [kv_head][token][head_dim] (each head's block is one contiguous run).
enum class HeadLayout : int { kNHD = 0, kHND = 1 };

inline const char* to_string(HeadLayout layout) {
  return layout == HeadLayout::kNHD ? "NHD" : "HND";
}

NOSA_NAMESPACE_END

NOSA_NAMESPACE_BEGIN
/// Engine-chosen identifier of a sequence (request). Any value; nosa never interprets it.
using SequenceId = std::int64_t;
NOSA_NAMESPACE_END
