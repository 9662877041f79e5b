// nosa: compile-time geometry of a model's attention (block size, head dim, group size,
// head layout), checked once by a trait with readable messages.
#pragma once

#include <nosa/config.h>
#include <nosa/types.h>

NOSA_NAMESPACE_BEGIN

/// Geometry chosen by the host application at compile time.
///   BlockSize B: tokens per KV block (16, 32, 64 or 128); the unit of selection and transfer.
///   HeadDim   D: elements per head (64, 128 or 256).
///   GroupSize G: query heads per KV head (1..32); query head qh belongs to KV head qh / G.
///   Layout     : element order of K/V in host pool and slot cache (see HeadLayout).
template <int BlockSize_, int HeadDim_, int GroupSize_, HeadLayout Layout_ = HeadLayout::kNHD>
struct Geometry {
  static constexpr int block_size = BlockSize_;
  static constexpr int head_dim = HeadDim_;
  static constexpr int group_size = GroupSize_;
  static constexpr HeadLayout layout = Layout_;
};

template <int B>
inline constexpr bool is_supported_block_size_v = (B == 16 || B == 32 || B == 64 || B == 128);
template <int D>
inline constexpr bool is_supported_head_dim_v = (D == 64 || D == 128 || D == 256);
template <int G>
inline constexpr bool is_supported_group_size_v = (G >= 1 && G <= 32);

/// Instantiating this checks a geometry; every nosa template that takes one does so.
template <class Geo>
struct GeometryCheck {
  static_assert(is_supported_block_size_v<Geo::block_size>,
                "nosa: Geometry::block_size must be 16, 32, 64 or 128");
  static_assert(is_supported_head_dim_v<Geo::head_dim>, "nosa: Geometry::head_dim must be 64, 128 or 256");
  static_assert(is_supported_group_size_v<Geo::group_size>,
                "nosa: Geometry::group_size (query heads per KV head) must be in 1..32");
  static_assert(Geo::layout == HeadLayout::kNHD || Geo::layout == HeadLayout::kHND,
                "nosa: Geometry::layout must be HeadLayout::kNHD or kHND");
  static constexpr bool value = true;
};
template <class Geo>
inline constexpr bool geometry_check_v = GeometryCheck<Geo>::value;

/// The same geometry as runtime values, for the host reference and dispatch tables.
struct Dims {
  int block_size = 64;
  int head_dim = 128;
  int group_size = 16;
  HeadLayout layout = HeadLayout::kNHD;

  template <class Geo>
  static constexpr Dims of() {
    static_assert(geometry_check_v<Geo>);
    return Dims{Geo::block_size, Geo::head_dim, Geo::group_size, Geo::layout};
  }
};

NOSA_NAMESPACE_END
