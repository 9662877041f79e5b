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

/// How a head's Nc compressed keys are split over `splits` CTAs (global-path splits or the CTAs of
/// a cluster): `chunk` keys each, ceil(Nc / splits) rounded up to 32; part r owns
/// [r * chunk, min(Nc, (r + 1) * chunk)).
NOSA_HOST_DEVICE constexpr int score_chunk(int num_compressed_keys, int splits) {
  const int per = (num_compressed_keys + splits - 1) / splits;
  return (per + 31) / 32 * 32;
}

/// First block that CTA `rank` of a cluster of C pools: the first block starting at or after the
/// first token of its keys' windows, so that most windows it reads are its own. Non-decreasing in
/// rank, 0 for rank 0 and nb for rank C: the CTAs partition [0, nb).
NOSA_HOST_DEVICE constexpr int cluster_block_begin(int rank, int C, int chunk, int stride, int block_size, int nb) {
  if (rank <= 0) return 0;
  if (rank >= C) return nb;
  const long long first = (static_cast<long long>(rank) * chunk * stride + block_size - 1) / block_size;
  return first < nb ? static_cast<int>(first) : nb;
}

/// Keys beyond its own [j0, j1) that a cluster CTA needs to pool its blocks [m0, m1) from local
/// scores alone: at most (window - 1) / stride before j0 (m0 starts at or after token j0 * stride)
/// and ceil(block / stride) + 1 after j1 (m1 - 1 ends before token j1 * stride + block).
NOSA_HOST_DEVICE constexpr int register_scan_halo(int window, int stride, int block_size) {
  return (window - 1) / stride + (block_size + stride - 1) / stride + 1;
}

/// The keys [lo, hi) whose windows overlap blocks [m0, m1) together with the CTA's own keys
/// [j0, j1), clamped to [0, Nc): what a register-scan CTA scans. hi - lo <= chunk +
/// register_scan_halo (tests/host/test_selection_math.cpp checks it over many shapes).
struct KeySpan {
  int lo;
  int hi;
};
NOSA_HOST_DEVICE constexpr KeySpan cluster_scan_span(int j0, int j1, int m0, int m1, int block_size, int window,
                                                     int stride, int num_compressed_keys) {
  int lo = j0, hi = j1 > j0 ? j1 : j0;
  if (m0 < m1) {
    const WindowRange w0 = windows_overlapping_block(m0, block_size, window, stride, num_compressed_keys);
    const WindowRange w1 = windows_overlapping_block(m1 - 1, block_size, window, stride, num_compressed_keys);
    if (w0.first <= w0.last && w0.first < lo) lo = w0.first;
    if (w1.first <= w1.last && w1.last + 1 > hi) hi = w1.last + 1;
  }
  if (hi > num_compressed_keys) hi = num_compressed_keys;
  if (lo > hi) lo = hi;
  return KeySpan{lo, hi};
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
