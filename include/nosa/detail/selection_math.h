// nosa::detail: the index arithmetic of DESIGN.md section 2, shared by the host reference and
// the CUDA kernels so the two cannot drift. Everything here is constexpr-friendly and usable
// on host and device.
#pragma once

#include <nosa/config.h>

NOSA_NAMESPACE_BEGIN
namespace detail {

/// Compressed keys that exist after T tokens: complete windows only.
/// Nc = T < c ? 0 : (T - c) / s + 1.
NOSA_HOST_DEVICE constexpr int num_compressed(long long T, int window, int stride) {
  return T < window ? 0 : static_cast<int>((T - window) / stride + 1);
}

/// Blocks covering T tokens: ceil(T / B).
NOSA_HOST_DEVICE constexpr int num_blocks(long long T, int block_size) {
  return static_cast<int>((T + block_size - 1) / block_size);
}

/// floor(a / b) for b > 0 and any sign of a.
NOSA_HOST_DEVICE constexpr long long floor_div(long long a, long long b) {
  return a >= 0 ? a / b : -((-a + b - 1) / b);
}

/// The compressed keys j whose window [s*j, s*j + c) overlaps block m = [m*B, (m+1)*B):
/// s*j < (m+1)*B and s*j + c > m*B. Returns the inclusive range [first, last], clamped to
/// [0, Nc); first > last means no window overlaps (the block pools to -inf).
struct WindowRange {
  int first;
  int last;
};
NOSA_HOST_DEVICE constexpr WindowRange windows_overlapping_block(int m, int block_size, int window,
                                                                 int stride, int num_compressed_keys) {
  // smallest j with s*j > m*B - c
  long long first = floor_div(static_cast<long long>(m) * block_size - window, stride) + 1;
  // largest j with s*j < (m+1)*B, i.e. s*j <= (m+1)*B - 1
  long long last = floor_div(static_cast<long long>(m + 1) * block_size - 1, stride);
  if (first < 0) first = 0;
  if (last > num_compressed_keys - 1) last = num_compressed_keys - 1;
  return WindowRange{static_cast<int>(first), static_cast<int>(last)};
}

/// Forced blocks: the first `sink` blocks and the `local` blocks before the current one,
/// plus the current block itself.
NOSA_HOST_DEVICE constexpr bool is_forced_block(int m, int current_block, int sink, int local) {
  return m < sink || (m >= current_block - local && m <= current_block);
}

/// The deterministic ranking order: higher score first; equal scores (including +inf and
/// -inf) lower block index first. Returns true when (score_a, a) ranks before (score_b, b).
template <class Score>
NOSA_HOST_DEVICE constexpr bool ranks_before(Score score_a, int a, Score score_b, int b) {
  return score_a > score_b || (score_a == score_b && a < b);
}

}  // namespace detail
NOSA_NAMESPACE_END
