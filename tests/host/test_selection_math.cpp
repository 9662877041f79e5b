// Tests of the index arithmetic in nosa/detail/selection_math.h that the cluster kernels rely on
// and that a GPU run would only catch at the shapes it happens to try: how a head's compressed
// keys and blocks are split over the CTAs of a cluster, and the register-scan halo (the keys a CTA
// scans beyond its own so that it pools its blocks from local scores only). Each property is
// checked against a brute-force definition over a sweep of lengths, windows, strides, block sizes
// and cluster sizes.
#include <nosa/detail/selection_math.h>

#include <doctest/doctest.h>

#include <algorithm>
#include <vector>

namespace {

namespace d = nosa::detail;

struct Shape {
  int window, stride, block;
};

// window >= stride >= 1 (SelectionParams::validate), block sizes of nosa::Geometry
const std::vector<Shape>& shapes() {
  static const std::vector<Shape> s = {{32, 16, 64}, {32, 16, 16}, {32, 16, 128}, {32, 32, 64}, {64, 16, 32},
                                       {16, 16, 16}, {32, 8, 64},  {1, 1, 16},    {48, 20, 32}, {32, 1, 128},
                                       {7, 3, 16},   {128, 64, 128}};
  return s;
}

// token lengths around the edges of windows, blocks and 32-key chunks, plus a few long ones
std::vector<long long> lengths(const Shape& s) {
  std::vector<long long> t;
  for (long long v = 1; v <= 600; ++v) t.push_back(v);
  for (long long base : {4096LL, 32768LL, 131072LL + 100, 200001LL})
    for (long long dv : {-s.block - 1LL, -1LL, 0LL, 1LL, static_cast<long long>(s.window)}) t.push_back(base + dv);
  return t;
}

// Brute force: key j's window [s j, s j + c) overlaps block m = [m B, (m + 1) B).
bool overlaps(int j, int m, const Shape& s) {
  const long long a = static_cast<long long>(s.stride) * j, b = a + s.window;
  const long long lo = static_cast<long long>(m) * s.block, hi = lo + s.block;
  return a < hi && b > lo;
}

}  // namespace

TEST_CASE("selection_math: windows_overlapping_block equals the brute-force overlap") {
  for (const Shape& s : shapes()) {
    for (long long T : {1LL, 31LL, 32LL, 33LL, 100LL, 257LL, 1000LL}) {
      const int nc = d::num_compressed(T, s.window, s.stride), nb = d::num_blocks(T, s.block);
      for (int m = 0; m < nb; ++m) {
        const d::WindowRange r = d::windows_overlapping_block(m, s.block, s.window, s.stride, nc);
        for (int j = 0; j < nc; ++j) {
          INFO("window " << s.window << " stride " << s.stride << " block " << s.block << " T " << T << " m " << m
                         << " j " << j);
          CHECK(overlaps(j, m, s) == (j >= r.first && j <= r.last));
        }
      }
    }
  }
}

TEST_CASE("selection_math: cluster CTAs partition the keys and the blocks, and the halo bounds each CTA's span") {
  long long spans = 0;
  int widest_extra = 0;  // most keys any CTA scans beyond its own, over the sweep
  for (const Shape& s : shapes()) {
    const int halo = d::register_scan_halo(s.window, s.stride, s.block);
    for (long long T : lengths(s)) {
      const int nc = d::num_compressed(T, s.window, s.stride), nb = d::num_blocks(T, s.block);
      for (int C = 2; C <= 16; ++C) {
        const int chunk = d::score_chunk(nc, C);
        REQUIRE(chunk % 32 == 0);
        REQUIRE(static_cast<long long>(chunk) * C >= nc);  // the last CTA's range reaches Nc
        int prev_m1 = 0;
        for (int rank = 0; rank < C; ++rank) {
          const int j0 = rank * chunk, j1 = std::min(nc, j0 + chunk);
          const int m0 = d::cluster_block_begin(rank, C, chunk, s.stride, s.block, nb);
          const int m1 = d::cluster_block_begin(rank + 1, C, chunk, s.stride, s.block, nb);
          INFO("window " << s.window << " stride " << s.stride << " block " << s.block << " T " << T << " C " << C
                         << " rank " << rank << " blocks [" << m0 << ", " << m1 << ") keys [" << j0 << ", " << j1 << ")");
          CHECK(m0 == prev_m1);  // contiguous, in rank order
          CHECK(m0 <= m1);
          prev_m1 = m1;
          const d::KeySpan span = d::cluster_scan_span(j0, j1, m0, m1, s.block, s.window, s.stride, nc);
          CHECK(span.lo >= 0);
          CHECK(span.lo <= span.hi);
          CHECK(span.hi <= nc);
          // every window any of its blocks overlaps is inside the span
          for (int m = m0; m < m1; ++m) {
            const d::WindowRange w = d::windows_overlapping_block(m, s.block, s.window, s.stride, nc);
            if (w.first <= w.last) {
              CHECK(w.first >= span.lo);
              CHECK(w.last < span.hi);
            }
          }
          // its own keys are inside too (their statistics are this CTA's part of the softmax)
          if (j0 < j1) {
            CHECK(span.lo <= j0);
            CHECK(span.hi >= j1);
          }
          // what the register kernel's shared memory and tiles are sized for
          CHECK(span.hi - span.lo <= chunk + halo);
          if (j0 < j1) widest_extra = std::max(widest_extra, (span.hi - span.lo) - (j1 - j0));
          ++spans;
        }
        CHECK(prev_m1 == nb);  // the last CTA ends at the last block
      }
    }
  }
  MESSAGE("checked " << spans << " CTA spans; most keys beyond a CTA's own: " << widest_extra);
  CHECK(spans > 0);
  CHECK(widest_extra > 0);  // the sweep reaches CTAs that need a halo
}
