// Tests of the host block selector (include/nosa/host/selector.h) against DESIGN.md section 2:
// hand-computed cases, properties on random inputs, exact ties, and an independent brute-force
// float64 selector written differently (explicit loops over windows with a direct overlap test,
// full sort with a comparator) whose selected sets must agree on random inputs.
#include <nosa/detail/selection_math.h>
#include <nosa/host/selector.h>
#include <nosa/params.h>

#include <doctest/doctest.h>

#include "test_rng.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <set>
#include <utility>
#include <vector>

namespace {

using nosa::SelectionParams;
using nosa::SelectorKind;
constexpr double kInf = std::numeric_limits<double>::infinity();

using nosa_test::Rng;

// One (sequence, KV head) problem: raw tokens and a query group.
struct Problem {
  SelectionParams p;
  int B = 64, G = 1, D = 8;
  long long T = 1;
  std::vector<double> keys;  // [T][D]
  std::vector<double> bias;  // [T]
  std::vector<double> q;     // [G][D]
};

Problem random_problem(Rng& rng) {
  Problem pr;
  const int Bs[] = {16, 32, 64};
  pr.B = Bs[rng.range(0, 2)];
  switch (rng.range(0, 4)) {
    case 0: pr.p.window = 32; pr.p.stride = 16; break;  // the release values
    case 1: pr.p.window = pr.B; pr.p.stride = pr.B; break;
    case 2: pr.p.window = rng.range(1, 3 * pr.B); pr.p.stride = rng.range(1, pr.p.window); break;
    case 3: pr.p.window = rng.range(2, 80); pr.p.stride = std::max(1, pr.p.window / 2); break;
    default: pr.p.window = rng.range(1, 20); pr.p.stride = pr.p.window; break;
  }
  pr.p.sink = rng.range(0, 3);
  pr.p.local = rng.range(0, 8);
  pr.p.budget = pr.p.forced_blocks() + rng.range(0, 12);
  pr.p.query_aware = rng.range(0, pr.p.budget);
  REQUIRE(pr.p.validate(pr.B).ok());
  const int Gs[] = {1, 2, 3, 4, 8, 16};
  const int Ds[] = {2, 8, 16, 64, 128};
  pr.G = Gs[rng.range(0, 5)];
  pr.D = Ds[rng.range(0, 4)];
  pr.T = rng.range(1, (pr.p.budget + 12) * pr.B);
  const double qscale = 0.5 + 3.0 * rng.uniform();  // from flat to peaked stage-1 softmax
  const double bscale = rng.uniform() < 0.2 ? 0.0 : 2.0 * rng.uniform();
  pr.keys.resize(static_cast<size_t>(pr.T) * pr.D);
  for (double& x : pr.keys) x = rng.normal();
  pr.bias.resize(pr.T);
  for (double& x : pr.bias) x = bscale * rng.normal();
  pr.q.resize(static_cast<size_t>(pr.G) * pr.D);
  for (double& x : pr.q) x = qscale * rng.normal();
  return pr;
}

// The library's selection for a problem, with its compressed state built from the raw tokens.
template <class Real>
nosa::host::Selection<Real> library_select(SelectorKind kind, const Problem& pr) {
  nosa::host::CompressedState<Real> cs(pr.D, pr.p.window, pr.p.stride);
  cs.update(pr.keys.data(), pr.D, pr.bias.data(), 1, pr.T);
  REQUIRE(cs.count() == nosa::detail::num_compressed(pr.T, pr.p.window, pr.p.stride));
  return nosa::host::select_blocks<Real>(kind, pr.p, pr.B, pr.T, pr.q.data(), pr.G, pr.D, cs.keys(), cs.scores());
}

// ---------------------------------------------------------------------------------------------
// Independent brute-force selector, float64, written from DESIGN.md section 2 without the
// library's helpers: windows are counted by testing completeness, stage-1 logits are the mean of
// per-token dot products (q . mean(k) == mean(q . k)), softmax goes through log-sum-exp, pooling
// tests every (block, window) pair for overlap, and ranking is a full sort.
struct Brute {
  std::vector<int> I, Q;        // ascending
  std::vector<double> Pq, Pe;   // after forcing
  bool near_tie = false;        // a top-k boundary too close to call
};

bool ranks_first(const std::pair<double, int>& a, const std::pair<double, int>& b) {
  if (a.first != b.first) return a.first > b.first;
  return a.second < b.second;
}

// Top-k of scores as an ascending set; flags a near tie across the k-th / (k+1)-th boundary.
std::vector<int> brute_top(const std::vector<double>& scores, int k, double tie_tol, bool& near_tie) {
  std::vector<std::pair<double, int>> order;
  for (int m = 0; m < static_cast<int>(scores.size()); ++m) order.push_back({scores[m], m});
  std::sort(order.begin(), order.end(), ranks_first);
  const int n = std::min<int>(k, static_cast<int>(order.size()));
  if (n > 0 && n < static_cast<int>(order.size())) {
    const double a = order[n - 1].first, b = order[n].first;
    if (std::isfinite(a) && std::isfinite(b) && a != b && std::fabs(a - b) <= tie_tol * std::max(std::fabs(a), std::fabs(b)))
      near_tie = true;
  }
  std::vector<int> out;
  for (int i = 0; i < n; ++i) out.push_back(order[i].second);
  std::sort(out.begin(), out.end());
  return out;
}

Brute brute_select(SelectorKind kind, const Problem& pr, double tie_tol) {
  const SelectionParams& p = pr.p;
  const int c = p.window, s = p.stride, B = pr.B, G = pr.G, D = pr.D;
  const long long T = pr.T;
  Brute out;
  int nb = 0;
  while (static_cast<long long>(nb) * B < T) ++nb;
  if (kind == SelectorKind::kDense) {
    for (int m = 0; m < nb; ++m) out.I.push_back(m);
    return out;
  }
  std::vector<long long> starts;  // complete windows only
  for (long long j = 0; j * s + c <= T; ++j) starts.push_back(j * s);
  const int nc = static_cast<int>(starts.size());
  std::vector<double> S(nc, 0.0), bc(nc, 0.0);
  for (int j = 0; j < nc; ++j) {
    for (int t = 0; t < c; ++t) bc[j] += pr.bias[starts[j] + t];
    bc[j] /= c;
  }
  for (int g = 0; g < G; ++g) {
    std::vector<double> logit(nc, 0.0);
    for (int j = 0; j < nc; ++j) {
      for (int t = 0; t < c; ++t) {
        double dot = 0;
        for (int d = 0; d < D; ++d) dot += pr.q[g * D + d] * pr.keys[(starts[j] + t) * D + d];
        logit[j] += dot;
      }
      logit[j] = logit[j] / c / std::sqrt(static_cast<double>(D));
    }
    if (nc == 0) continue;
    const double mx = *std::max_element(logit.begin(), logit.end());
    double sum = 0;
    for (double l : logit) sum += std::exp(l - mx);
    const double lse = mx + std::log(sum);
    for (int j = 0; j < nc; ++j) S[j] += std::exp(logit[j] - lse);
  }
  const int cur = nb - 1;
  out.Pq.assign(nb, -kInf);
  out.Pe.assign(nb, -kInf);
  for (int m = 0; m < nb; ++m) {
    const long long lo = static_cast<long long>(m) * B, hi = lo + B;
    for (int j = 0; j < nc; ++j) {
      if (std::max(lo, starts[j]) < std::min(hi, starts[j] + c)) {  // the spans intersect
        out.Pq[m] = std::max(out.Pq[m], S[j]);
        out.Pe[m] = std::max(out.Pe[m], bc[j]);
      }
    }
    const bool forced = m < p.sink || (m >= cur - p.local);
    if (forced) out.Pq[m] = out.Pe[m] = kInf;
  }
  if (kind == SelectorKind::kInfllmV2) {
    out.I = brute_top(out.Pq, p.budget, tie_tol, out.near_tie);
    return out;
  }
  out.Q = brute_top(out.Pq, p.query_aware, tie_tol, out.near_tie);
  for (int m : out.Q) out.Pe[m] = kInf;
  out.I = brute_top(out.Pe, p.budget, tie_tol, out.near_tie);
  return out;
}

std::vector<int> sorted_copy(std::vector<int> v) {
  std::sort(v.begin(), v.end());
  return v;
}

// Structural properties every sparse selection must have.
template <class Real>
void check_selection_properties(SelectorKind kind, const Problem& pr, const nosa::host::Selection<Real>& sel) {
  const int nb = nosa::detail::num_blocks(pr.T, pr.B);
  const int cur = nb - 1;
  const std::vector<int>& I = sel.blocks;
  const int want = kind == SelectorKind::kDense ? nb : std::min(pr.p.budget, nb);
  REQUIRE(static_cast<int>(I.size()) == want);
  for (size_t i = 0; i < I.size(); ++i) {
    REQUIRE(I[i] >= 0);
    REQUIRE(I[i] < nb);
    if (i > 0) REQUIRE(I[i - 1] < I[i]);  // sorted and distinct
  }
  for (int m = 0; m < nb; ++m)
    if (nosa::detail::is_forced_block(m, cur, pr.p.sink, pr.p.local))
      REQUIRE(std::binary_search(I.begin(), I.end(), m));
  if (nb <= pr.p.budget)
    for (int m = 0; m < nb; ++m) REQUIRE(I[m] == m);
  if (kind == SelectorKind::kNosa) {
    REQUIRE(static_cast<int>(sel.query_aware.size()) == std::min(pr.p.query_aware, nb));
    const std::vector<int> Q = sorted_copy(sel.query_aware);
    REQUIRE(std::adjacent_find(Q.begin(), Q.end()) == Q.end());
    for (int m : Q) REQUIRE(std::binary_search(I.begin(), I.end(), m));  // Q is always in I
  } else {
    REQUIRE(sel.query_aware.empty());
  }
}

}  // namespace

// =============================================================================================
// Hand-computed cases
// =============================================================================================

TEST_CASE("Nc counts complete windows only") {
  using nosa::detail::num_compressed;
  // c = 32, s = 16: windows [0,32), [16,48), [32,64), ...
  CHECK(num_compressed(0, 32, 16) == 0);
  CHECK(num_compressed(31, 32, 16) == 0);
  CHECK(num_compressed(32, 32, 16) == 1);  // usable the moment token 31 is appended
  CHECK(num_compressed(47, 32, 16) == 1);
  CHECK(num_compressed(48, 32, 16) == 2);
  CHECK(num_compressed(64, 32, 16) == 3);
  CHECK(num_compressed(32768, 32, 16) == 2047);
  // Non-overlapping windows and odd sizes.
  CHECK(num_compressed(127, 64, 64) == 1);
  CHECK(num_compressed(128, 64, 64) == 2);
  CHECK(num_compressed(4, 5, 3) == 0);
  CHECK(num_compressed(5, 5, 3) == 1);
  CHECK(num_compressed(7, 5, 3) == 1);
  CHECK(num_compressed(8, 5, 3) == 2);
  CHECK(num_compressed(1, 1, 1) == 1);
  CHECK(num_compressed(10LL * 1000 * 1000 * 1000, 32, 16) == 624999999);  // 64-bit T
  // Brute force over many (c, s, T).
  for (int c = 1; c <= 40; ++c)
    for (int s = 1; s <= c; ++s)
      for (int T = 0; T <= 130; ++T) {
        int count = 0;
        while (static_cast<long long>(count) * s + c <= T) ++count;
        REQUIRE(num_compressed(T, c, s) == count);
      }
  CHECK(nosa::detail::num_blocks(1, 64) == 1);
  CHECK(nosa::detail::num_blocks(64, 64) == 1);
  CHECK(nosa::detail::num_blocks(65, 64) == 2);
}

TEST_CASE("compressed keys and scores on tiny integer inputs") {
  // c = 4, s = 2, D = 2, k_t = (t, 2t), b_t = t^2, T = 9: Nc = 3 windows starting at 0, 2, 4.
  const int T = 9, D = 2;
  std::vector<float> keys(T * D), bias(T);
  for (int t = 0; t < T; ++t) {
    keys[t * D] = static_cast<float>(t);
    keys[t * D + 1] = static_cast<float>(2 * t);
    bias[t] = static_cast<float>(t * t);
  }
  nosa::host::CompressedState<double> cs(D, 4, 2);
  cs.update(keys.data(), D, bias.data(), 1, T);
  REQUIRE(cs.count() == 3);
  const double want_k0[] = {1.5, 3.5, 5.5};       // mean(2j .. 2j+3)
  const double want_b[] = {3.5, 13.5, 31.5};      // (0+1+4+9)/4, (4+9+16+25)/4, (16+25+36+49)/4
  for (int j = 0; j < 3; ++j) {
    CHECK(cs.keys()[j * D] == want_k0[j]);
    CHECK(cs.keys()[j * D + 1] == 2 * want_k0[j]);
    CHECK(cs.scores()[j] == want_b[j]);
  }
  // Strided rows (a [T][2][D] token-major array, KV head 1) read the same way.
  std::vector<float> wide(T * 2 * D, -100.0f), wide_bias(T * 2, -100.0f);
  for (int t = 0; t < T; ++t) {
    for (int d = 0; d < D; ++d) wide[(t * 2 + 1) * D + d] = keys[t * D + d];
    wide_bias[t * 2 + 1] = bias[t];
  }
  nosa::host::CompressedState<float> cs2(D, 4, 2);
  cs2.update(wide.data() + D, 2 * D, wide_bias.data() + 1, 2, T);
  REQUIRE(cs2.count() == 3);
  for (int j = 0; j < 3; ++j) {
    CHECK(cs2.keys()[j * D] == static_cast<float>(want_k0[j]));
    CHECK(cs2.scores()[j] == static_cast<float>(want_b[j]));
  }
}

TEST_CASE("pooling windows for c=32, s=16, B=64 are [4m-1, 4m+3] clamped") {
  for (int nc : {1, 3, 4, 7, 8, 100, 2047}) {
    for (int m = 0; m < 600; ++m) {
      const auto r = nosa::detail::windows_overlapping_block(m, 64, 32, 16, nc);
      const int first = std::max(0, 4 * m - 1), last = std::min(nc - 1, 4 * m + 3);
      CAPTURE(nc);
      CAPTURE(m);
      if (first <= last) {
        REQUIRE(r.first == first);
        REQUIRE(r.last == last);
      } else {
        REQUIRE(r.first > r.last);  // no window: the block pools to -inf
      }
    }
  }
}

TEST_CASE("pooling windows for other (c, s, B) equal a brute-force overlap test") {
  for (int B : {1, 2, 7, 16, 32, 64, 128})
    for (int c = 1; c <= 140; c += (c < 20 ? 1 : 7))
      for (int s = 1; s <= c; s += (s < 10 ? 1 : 5))
        for (int m = 0; m < 12; ++m) {
          const int nc = 2 + (m * 7 + c) % 40;  // varied clamping
          int first = -1, last = -2;
          for (int j = 0; j < nc; ++j) {
            const long long ws = static_cast<long long>(s) * j, we = ws + c;
            const long long bs = static_cast<long long>(m) * B, be = bs + B;
            if (ws < be && we > bs) {
              if (first < 0) first = j;
              else REQUIRE(j == last + 1);  // the overlapping windows form one contiguous range
              last = j;
            }
          }
          const auto r = nosa::detail::windows_overlapping_block(m, B, c, s, nc);
          CAPTURE(B);
          CAPTURE(c);
          CAPTURE(s);
          CAPTURE(m);
          if (first < 0) {
            REQUIRE(r.first > r.last);
          } else {
            REQUIRE(r.first == first);
            REQUIRE(r.last == last);
          }
        }
}

TEST_CASE("pool_to_blocks by hand (c=4, s=2, B=4: block m sees windows 2m-1..2m+1)") {
  const double w[] = {1, 5, 2, 0, 3, 7, 4};  // Nc = 7 (T = 16)
  const std::vector<double> P = nosa::host::pool_to_blocks<double>(w, 7, 5, 4, 4, 2);
  REQUIRE(P.size() == 5);
  CHECK(P[0] == 5);  // windows 0..1
  CHECK(P[1] == 5);  // windows 1..3
  CHECK(P[2] == 7);  // windows 3..5
  CHECK(P[3] == 7);  // windows 5..6 (7 does not exist yet)
  CHECK(P[4] == -kInf);  // no complete window overlaps block 4
}

TEST_CASE("stage-1 scores on a 2-key hand example") {
  // D = 4 (scale 1/2), G = 2. Kc0 = (1,0,0,0), Kc1 = 0.
  // g0: q = (2,0,0,0): logits (1, 0) -> (e/(1+e), 1/(1+e)); g1: q = 0: logits (0,0) -> (1/2, 1/2).
  const double Kc[] = {1, 0, 0, 0, 0, 0, 0, 0};
  const float q[] = {2, 0, 0, 0, 0, 0, 0, 0};
  const std::vector<double> S = nosa::host::stage1_scores<double>(q, 2, 4, Kc, 2);
  REQUIRE(S.size() == 2);
  const double e = std::exp(1.0);
  CHECK(S[0] == doctest::Approx(e / (1 + e) + 0.5).epsilon(1e-15));
  CHECK(S[1] == doctest::Approx(1 / (1 + e) + 0.5).epsilon(1e-15));
  // G = 1 uses only the first query head.
  const std::vector<double> S1 = nosa::host::stage1_scores<double>(q, 1, 4, Kc, 2);
  CHECK(S1[0] == doctest::Approx(e / (1 + e)).epsilon(1e-15));
  CHECK(S1[0] + S1[1] == doctest::Approx(1.0).epsilon(1e-15));
  // No compressed key: empty.
  CHECK(nosa::host::stage1_scores<double>(q, 2, 4, Kc, 0).empty());
  // Huge logits do not overflow (max subtracted): q = (2000,0,0,0) -> S = (1, 0).
  const float big[] = {2000, 0, 0, 0};
  const float Kcf[] = {1, 0, 0, 0, 0, 0, 0, 0};
  const std::vector<float> Sb = nosa::host::stage1_scores<float>(big, 1, 4, Kcf, 2);
  CHECK(Sb[0] == 1.0f);
  CHECK(Sb[1] == 0.0f);
}

TEST_CASE("a tiny full selection computed by hand") {
  // B = 4, c = s = 4 (window j == block j), D = 1, G = 1, q = (1): S = softmax(Kc / 1).
  // T = 24: nb = 6, cur = 5; sink = 1, local = 1 -> forced {0, 4, 5}.
  SelectionParams p;
  p.window = 4;
  p.stride = 4;
  p.sink = 1;
  p.local = 1;
  p.query_aware = 4;
  p.budget = 5;
  REQUIRE(p.validate(4).ok());
  const double Kc[] = {0, 3, 1, 2, 5, 0};
  const double bc[] = {0, -1, 5, 4, 0, 0};
  const double q[] = {1};
  // Pq = (inf, S1, S2, S3, inf, inf), S1 > S3 > S2.
  // NOSA: Q = top 4 by Pq = {0, 4, 5, 1} (the three +inf in index order, then block 1).
  //       Pe = (inf, inf, 5, 4, inf, inf) -> I = top 5 = {0, 1, 2, 4, 5}.
  auto nosa_sel = nosa::host::select_blocks<double>(SelectorKind::kNosa, p, 4, 24, q, 1, 1, Kc, bc);
  CHECK(nosa_sel.query_aware == std::vector<int>{0, 4, 5, 1});
  CHECK(nosa_sel.blocks == std::vector<int>{0, 1, 2, 4, 5});
  const double denom = std::exp(0.0) * 2 + std::exp(3.0) + std::exp(1.0) + std::exp(2.0) + std::exp(5.0);
  CHECK(nosa_sel.block_scores_q[1] == doctest::Approx(std::exp(3.0) / denom).epsilon(1e-14));
  CHECK(nosa_sel.block_scores_q[2] == doctest::Approx(std::exp(1.0) / denom).epsilon(1e-14));
  CHECK(nosa_sel.block_scores_q[0] == kInf);
  CHECK(nosa_sel.block_scores_e == std::vector<double>{kInf, kInf, 5, 4, kInf, kInf});
  // InfLLM-V2: top 5 by Pq = {0, 4, 5, 1, 3}: block 3 (S3) instead of block 2, bias ignored.
  auto inf_sel = nosa::host::select_blocks<double>(SelectorKind::kInfllmV2, p, 4, 24, q, 1, 1, Kc, bc);
  CHECK(inf_sel.blocks == std::vector<int>{0, 1, 3, 4, 5});
  CHECK(inf_sel.query_aware.empty());
  // Dense: everything.
  auto dense_sel = nosa::host::select_blocks<double>(SelectorKind::kDense, p, 4, 24, q, 1, 1, Kc, bc);
  CHECK(dense_sel.blocks == std::vector<int>{0, 1, 2, 3, 4, 5});
  // With qk = 3 stage 1 only confirms the forced blocks: Pe = (inf, -1, 5, 4, inf, inf)
  // -> I = {0, 2, 3, 4, 5}.
  p.query_aware = 3;
  auto nosa3 = nosa::host::select_blocks<double>(SelectorKind::kNosa, p, 4, 24, q, 1, 1, Kc, bc);
  CHECK(nosa3.query_aware == std::vector<int>{0, 4, 5});
  CHECK(nosa3.blocks == std::vector<int>{0, 2, 3, 4, 5});
  // At T = 22 the current block 5 has only two tokens and window 5 [20, 24) is incomplete:
  // Nc = 5, block 5 would pool to -inf but is forced anyway.
  p.query_aware = 4;
  auto early = nosa::host::select_blocks<double>(SelectorKind::kNosa, p, 4, 22, q, 1, 1, Kc, bc);
  CHECK(early.blocks == std::vector<int>{0, 1, 2, 4, 5});
}

// =============================================================================================
// Exact ties
// =============================================================================================

TEST_CASE("top_k: equal scores pick the lower index, +inf and -inf included") {
  const std::vector<double> s = {1, 3, 3, kInf, kInf, -kInf, -kInf, 3, 0};
  CHECK(nosa::host::top_k(s, 1) == std::vector<int>{3});
  CHECK(nosa::host::top_k(s, 5) == std::vector<int>{3, 4, 1, 2, 7});
  CHECK(nosa::host::top_k(s, 8) == std::vector<int>{3, 4, 1, 2, 7, 0, 8, 5});
  CHECK(nosa::host::top_k(s, 20) == std::vector<int>{3, 4, 1, 2, 7, 0, 8, 5, 6});
  CHECK(nosa::host::top_k(s, 0).empty());
  const std::vector<float> all_neg_inf(5, -std::numeric_limits<float>::infinity());
  CHECK(nosa::host::top_k(all_neg_inf, 3) == std::vector<int>{0, 1, 2});
  // ranks_before is the rule itself.
  CHECK(nosa::detail::ranks_before(2.0, 5, 1.0, 0));
  CHECK(nosa::detail::ranks_before(1.0, 0, 1.0, 5));
  CHECK_FALSE(nosa::detail::ranks_before(1.0, 5, 1.0, 0));
  CHECK_FALSE(nosa::detail::ranks_before(1.0, 3, 1.0, 3));
  CHECK(nosa::detail::ranks_before(kInf, 2, kInf, 3));
  CHECK(nosa::detail::ranks_before(-kInf, 2, -kInf, 3));
}

TEST_CASE("exact ties in a full selection (identical keys, windows spanning 4 blocks)") {
  // B = 16, c = s = 64: window j covers blocks 4j..4j+3. T = 100: nb = 7, cur = 6, Nc = 1, so
  // blocks 0..3 tie at the same finite score and blocks 4, 5 tie at -inf.
  const int D = 4, G = 2;
  const long long T = 100;
  std::vector<double> keys(T * D, 0.25), bias(T, 0.5), q(G * D, 1.0);
  nosa::host::CompressedState<double> cs(D, 64, 64);
  cs.update(keys.data(), D, bias.data(), 1, T);
  REQUIRE(cs.count() == 1);
  SelectionParams p;
  p.window = 64;
  p.stride = 64;
  p.sink = 0;
  p.local = 0;
  auto run = [&](SelectorKind kind, int qk, int budget) {
    p.query_aware = qk;
    p.budget = budget;
    REQUIRE(p.validate(16).ok());
    return nosa::host::select_blocks<double>(kind, p, 16, T, q.data(), G, D, cs.keys(), cs.scores());
  };
  auto a = run(SelectorKind::kInfllmV2, 0, 3);
  CHECK(a.block_scores_q == std::vector<double>{2, 2, 2, 2, -kInf, -kInf, kInf});  // G heads x softmax of 1 key
  CHECK(a.blocks == std::vector<int>{0, 1, 6});
  CHECK(run(SelectorKind::kInfllmV2, 0, 6).blocks == std::vector<int>{0, 1, 2, 3, 4, 6});  // -inf tie: 4 first
  auto b = run(SelectorKind::kNosa, 2, 4);
  CHECK(b.query_aware == std::vector<int>{6, 0});  // +inf first, then the lowest-index finite tie
  CHECK(b.blocks == std::vector<int>{0, 1, 2, 6});
  CHECK(run(SelectorKind::kNosa, 0, 6).blocks == std::vector<int>{0, 1, 2, 3, 4, 6});
  CHECK(run(SelectorKind::kNosa, 6, 6).query_aware == std::vector<int>{6, 0, 1, 2, 3, 4});
  // +inf ties among forced blocks: more forced blocks than qk -> the lowest indices win.
  p.sink = 1;
  p.local = 2;  // forced {0, 4, 5, 6}
  auto c = run(SelectorKind::kNosa, 2, 5);
  CHECK(c.query_aware == std::vector<int>{0, 4});
  CHECK(c.blocks == std::vector<int>{0, 1, 4, 5, 6});  // block 1: lowest finite tie in Pe
}

TEST_CASE("T < window: no compressed key, every non-forced block ties at -inf") {
  SelectionParams p;  // c = 32
  p.sink = 0;
  p.local = 0;
  p.query_aware = 0;
  p.budget = 2;
  const double q[] = {1, 2};
  for (SelectorKind kind : {SelectorKind::kNosa, SelectorKind::kInfllmV2}) {
    // B = 8, T = 31: nb = 4, cur = 3; blocks 0..2 all -inf -> block 0 wins.
    auto s = nosa::host::select_blocks<double>(kind, p, 8, 31, q, 1, 2, static_cast<const double*>(nullptr),
                                               static_cast<const double*>(nullptr));
    CHECK(s.blocks == std::vector<int>{0, 3});
  }
}

// =============================================================================================
// Properties on random inputs, and the independent brute-force selector
// =============================================================================================

TEST_CASE("random problems: structural properties (NOSA, InfLLM-V2, dense; float and double)") {
  Rng rng(20251124);
  int sparse_cases = 0;
  for (int it = 0; it < 250; ++it) {
    const Problem pr = random_problem(rng);
    CAPTURE(it);
    CAPTURE(pr.T);
    CAPTURE(pr.B);
    for (SelectorKind kind : {SelectorKind::kNosa, SelectorKind::kInfllmV2, SelectorKind::kDense}) {
      check_selection_properties(kind, pr, library_select<double>(kind, pr));
      check_selection_properties(kind, pr, library_select<float>(kind, pr));
    }
    if (nosa::detail::num_blocks(pr.T, pr.B) > pr.p.budget) ++sparse_cases;
  }
  CHECK(sparse_cases > 100);  // most problems must actually drop blocks
}

TEST_CASE("InfLLM-V2 selects the top budget by Pq, forced blocks included") {
  Rng rng(77);
  for (int it = 0; it < 120; ++it) {
    const Problem pr = random_problem(rng);
    const auto sel = library_select<double>(SelectorKind::kInfllmV2, pr);
    const std::vector<int> want = sorted_copy(nosa::host::top_k(sel.block_scores_q, pr.p.budget));
    CHECK(sel.blocks == want);
    // Every selected block scores at least as high as every dropped one.
    const int nb = nosa::detail::num_blocks(pr.T, pr.B);
    double min_in = kInf, max_out = -kInf;
    for (int m = 0; m < nb; ++m) {
      if (std::binary_search(sel.blocks.begin(), sel.blocks.end(), m)) min_in = std::min(min_in, sel.block_scores_q[m]);
      else max_out = std::max(max_out, sel.block_scores_q[m]);
    }
    CHECK(min_in >= max_out);
    // The bias does not matter to InfLLM-V2's choice.
    Problem other = pr;
    for (double& b : other.bias) b = -b * 3 + 1;
    CHECK(library_select<double>(SelectorKind::kInfllmV2, other).blocks == sel.blocks);
  }
}

TEST_CASE("NOSA stage 2 ranks by compressed bias once Q and forced blocks are pinned") {
  Rng rng(4242);
  for (int it = 0; it < 120; ++it) {
    const Problem pr = random_problem(rng);
    const auto sel = library_select<double>(SelectorKind::kNosa, pr);
    const int nb = nosa::detail::num_blocks(pr.T, pr.B);
    // Q: the top min(qk, nb) of Pq.
    CHECK(sorted_copy(sel.query_aware) == sorted_copy(nosa::host::top_k(sel.block_scores_q, pr.p.query_aware)));
    // Pe is +inf exactly on Q and forced blocks (finite or -inf elsewhere).
    for (int m = 0; m < nb; ++m) {
      const bool pinned = nosa::detail::is_forced_block(m, nb - 1, pr.p.sink, pr.p.local) ||
                          std::find(sel.query_aware.begin(), sel.query_aware.end(), m) != sel.query_aware.end();
      CHECK((sel.block_scores_e[m] == kInf) == pinned);
    }
    CHECK(sel.blocks == sorted_copy(nosa::host::top_k(sel.block_scores_e, pr.p.budget)));
  }
}

TEST_CASE("independent brute-force float64 selector agrees (near-ties skipped and counted)") {
  Rng rng(31337);
  int compared = 0, skipped_double = 0, skipped_float = 0;
  for (int it = 0; it < 300; ++it) {
    const Problem pr = random_problem(rng);
    CAPTURE(it);
    for (SelectorKind kind : {SelectorKind::kNosa, SelectorKind::kInfllmV2, SelectorKind::kDense}) {
      CAPTURE(static_cast<int>(kind));
      const Brute want = brute_select(kind, pr, 1e-9);
      if (want.near_tie) {
        ++skipped_double;
      } else {
        const auto got = library_select<double>(kind, pr);
        REQUIRE(got.blocks == want.I);
        if (kind == SelectorKind::kNosa) REQUIRE(sorted_copy(got.query_aware) == want.Q);
        if (kind != SelectorKind::kDense) {
          for (size_t m = 0; m < want.Pq.size(); ++m) {
            if (std::isfinite(want.Pq[m])) REQUIRE(got.block_scores_q[m] == doctest::Approx(want.Pq[m]).epsilon(1e-11));
            else REQUIRE(got.block_scores_q[m] == want.Pq[m]);
          }
        }
        ++compared;
      }
      // The float reference agrees too, except where float rounding can flip a boundary.
      const Brute loose = brute_select(kind, pr, 1e-4);
      if (loose.near_tie) {
        ++skipped_float;
      } else {
        const auto gotf = library_select<float>(kind, pr);
        REQUIRE(gotf.blocks == loose.I);
      }
    }
  }
  MESSAGE("brute-force comparison: " << compared << " compared, " << skipped_double
                                     << " near-ties skipped (1e-9), " << skipped_float
                                     << " skipped for float (1e-4)");
  CHECK(compared >= 850);
  CHECK(skipped_float < 90);
}
