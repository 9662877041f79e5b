// Tests of the host attention (include/nosa/host/attention.h): a 3-token case by hand, then
// properties against an independent naive long-double softmax: zero bias is plain softmax, a
// constant bias leaves o unchanged and shifts lse, merging disjoint partials equals attending the
// union, float agrees with double, and bf16/fp16 inputs are converted on load.
#include <nosa/host/attention.h>
#include <nosa/types.h>

#include <doctest/doctest.h>

#include "test_rng.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <numeric>
#include <vector>

namespace {

constexpr double kInf = std::numeric_limits<double>::infinity();

using nosa_test::Rng;

// One attention problem for one KV head: T tokens, G query heads, a random block subset.
struct Problem {
  int G = 1, D = 8, B = 16;
  long long T = 1;
  std::vector<double> q, keys, values, bias;  // [G][D], [T][D], [T][D], [T]
  std::vector<int> blocks;                    // distinct, random order
};

Problem random_problem(Rng& rng) {
  Problem p;
  const int Gs[] = {1, 2, 3, 5, 8, 16};
  const int Ds[] = {1, 4, 16, 64, 128};
  const int Bs[] = {1, 4, 16, 64};
  p.G = Gs[rng.range(0, 5)];
  p.D = Ds[rng.range(0, 4)];
  p.B = Bs[rng.range(0, 3)];
  p.T = rng.range(1, 600);
  const double qs = 0.3 + 2.0 * rng.uniform();
  p.q.resize(static_cast<size_t>(p.G) * p.D);
  for (double& x : p.q) x = qs * rng.normal();
  p.keys.resize(static_cast<size_t>(p.T) * p.D);
  p.values.resize(p.keys.size());
  for (double& x : p.keys) x = rng.normal();
  for (double& x : p.values) x = rng.normal();
  p.bias.resize(p.T);
  for (double& x : p.bias) x = 1.5 * rng.normal();
  const int nb = static_cast<int>((p.T + p.B - 1) / p.B);
  for (int m = 0; m < nb; ++m)
    if (rng.uniform() < 0.6) p.blocks.push_back(m);
  if (p.blocks.empty()) p.blocks.push_back(nb - 1);
  for (size_t i = p.blocks.size(); i > 1; --i) std::swap(p.blocks[i - 1], p.blocks[rng.next() % i]);
  return p;
}

// Independent naive attention in long double: explicit token list, no max subtraction needed
// for the small logits used here, direct normalisation.
void naive_attention(const Problem& p, const std::vector<long long>& tokens, bool use_bias, double bias_shift,
                     std::vector<double>& o, std::vector<double>& lse) {
  o.assign(static_cast<size_t>(p.G) * p.D, 0.0);
  lse.assign(p.G, -kInf);
  for (int g = 0; g < p.G; ++g) {
    long double denom = 0;
    std::vector<long double> acc(p.D, 0);
    for (long long t : tokens) {
      long double dot = 0;
      for (int d = 0; d < p.D; ++d) dot += static_cast<long double>(p.q[g * p.D + d]) * p.keys[t * p.D + d];
      long double logit = dot / std::sqrt(static_cast<long double>(p.D));
      if (use_bias) logit += p.bias[t] + bias_shift;
      const long double w = std::exp(logit);
      denom += w;
      for (int d = 0; d < p.D; ++d) acc[d] += w * p.values[t * p.D + d];
    }
    for (int d = 0; d < p.D; ++d) o[g * p.D + d] = static_cast<double>(acc[d] / denom);
    lse[g] = static_cast<double>(std::log(denom));
  }
}

std::vector<long long> tokens_of(const Problem& p, const std::vector<int>& blocks) {
  std::vector<long long> t;
  for (int m : blocks)
    for (long long i = static_cast<long long>(m) * p.B; i < std::min<long long>((m + 1LL) * p.B, p.T); ++i) t.push_back(i);
  return t;
}

template <class Real>
void library_attention(const Problem& p, const std::vector<int>& blocks, const double* bias, std::vector<Real>& o,
                       std::vector<Real>& lse) {
  o.assign(static_cast<size_t>(p.G) * p.D, Real(-7));
  lse.assign(p.G, Real(-7));
  nosa::host::attend_blocks<Real>(p.q.data(), p.G, p.D, p.keys.data(), p.D, p.values.data(), p.D, bias, 1, p.T, p.B,
                                  blocks, o.data(), lse.data());
}

// max |a - b| / max(1, max |b|): errors relative to the output scale.
template <class A>
double rel_err(const std::vector<A>& a, const std::vector<double>& b) {
  double err = 0, scale = 1;
  for (size_t i = 0; i < b.size(); ++i) {
    err = std::max(err, std::fabs(static_cast<double>(a[i]) - b[i]));
    scale = std::max(scale, std::fabs(b[i]));
  }
  return err / scale;
}

}  // namespace

TEST_CASE("attention on a 3-token example computed by hand (o and lse)") {
  // D = 4 (scale 1/2), B = 2, T = 3 (block 1 holds only token 2). q = (2,0,0,0): q.k/2 = k[0].
  // logits + bias: t0: 0 + 0, t1: 1 - 1, t2: 0 + ln 2 -> weights 1 : 1 : 2, lse = ln 4.
  const double ln2 = std::log(2.0);
  const double q[] = {2, 0, 0, 0};
  const double keys[] = {0, 9, 9, 9, 1, -3, 5, 0, 0, 1, 1, 1};
  const double values[] = {4, 0, 0, 0, 0, 4, 0, 0, 0, 0, 2, 6, /* token 3 must never be read: */ 1e9, 1e9, 1e9, 1e9};
  const double bias[] = {0, -1, ln2, 1e9};
  double o[4], lse;
  nosa::host::attend_blocks<double>(q, 1, 4, keys, 4, values, 4, bias, 1, 3, 2, {0, 1}, o, &lse);
  CHECK(o[0] == doctest::Approx(1.0).epsilon(1e-15));
  CHECK(o[1] == doctest::Approx(1.0).epsilon(1e-15));
  CHECK(o[2] == doctest::Approx(1.0).epsilon(1e-15));
  CHECK(o[3] == doctest::Approx(3.0).epsilon(1e-15));
  CHECK(lse == doctest::Approx(std::log(4.0)).epsilon(1e-15));
  // Only block 1 (token 2): o = v2, lse = ln 2.
  nosa::host::attend_blocks<double>(q, 1, 4, keys, 4, values, 4, bias, 1, 3, 2, {1}, o, &lse);
  CHECK(o[2] == doctest::Approx(2.0).epsilon(1e-15));
  CHECK(o[3] == doctest::Approx(6.0).epsilon(1e-15));
  CHECK(lse == doctest::Approx(ln2).epsilon(1e-15));
  // Only block 0 (tokens 0, 1): equal weights, lse = ln 2.
  nosa::host::attend_blocks<double>(q, 1, 4, keys, 4, values, 4, bias, 1, 3, 2, {0}, o, &lse);
  CHECK(o[0] == doctest::Approx(2.0).epsilon(1e-15));
  CHECK(o[1] == doctest::Approx(2.0).epsilon(1e-15));
  CHECK(lse == doctest::Approx(ln2).epsilon(1e-15));
  // No bias: logits 0, 1, 0 -> weights 1 : e : 1.
  nosa::host::attend_blocks<double>(q, 1, 4, keys, 4, values, 4, static_cast<const double*>(nullptr), 1, 3, 2, {1, 0},
                                    o, &lse);
  const double e = std::exp(1.0);
  CHECK(o[0] == doctest::Approx(4 / (2 + e)).epsilon(1e-15));
  CHECK(o[1] == doctest::Approx(4 * e / (2 + e)).epsilon(1e-15));
  CHECK(o[3] == doctest::Approx(6 / (2 + e)).epsilon(1e-15));
  CHECK(lse == doctest::Approx(std::log(2 + e)).epsilon(1e-15));
  // Two query heads: the second, q = 0, averages the three values uniformly (bias still counts).
  const double q2[] = {2, 0, 0, 0, 0, 0, 0, 0};
  double o2[8], lse2[2];
  nosa::host::attend_blocks<double>(q2, 2, 4, keys, 4, values, 4, bias, 1, 3, 2, {0, 1}, o2, lse2);
  // head 1 logits: 0 + 0, 0 - 1, 0 + ln 2 -> weights 1 : 1/e : 2
  const double w1 = 1 / e, den = 3 + w1;
  CHECK(o2[0] == doctest::Approx(1.0).epsilon(1e-15));
  CHECK(o2[4] == doctest::Approx(4 / den).epsilon(1e-15));
  CHECK(o2[5] == doctest::Approx(4 * w1 / den).epsilon(1e-15));
  CHECK(o2[7] == doctest::Approx(12 / den).epsilon(1e-15));
  CHECK(lse2[1] == doctest::Approx(std::log(den)).epsilon(1e-15));
}

TEST_CASE("bias is added after the 1/sqrt(D) scale") {
  // D = 16 (scale 1/4), one token pair: logits q.k/4 + b. With q.k = 8, b = 1: 3 vs token 1: 0.
  // Adding b before the scale would give (8 + 1)/4 = 2.25 and a different weight.
  std::vector<double> q(16, 0.0), keys(32, 0.0), values(32, 0.0);
  q[0] = 8;
  keys[0] = 1;
  values[0] = 1;   // token 0 value (1, 0, ...)
  values[17] = 1;  // token 1 value (0, 1, ...)
  const double bias[] = {1, 0};
  double o[16], lse;
  nosa::host::attend_blocks<double>(q.data(), 1, 16, keys.data(), 16, values.data(), 16, bias, 1, 2, 64, {0}, o, &lse);
  const double e3 = std::exp(3.0);
  CHECK(o[0] == doctest::Approx(e3 / (e3 + 1)).epsilon(1e-15));
  CHECK(lse == doctest::Approx(std::log(e3 + 1)).epsilon(1e-15));
}

TEST_CASE("zero bias gives plain softmax attention (vs independent naive)") {
  Rng rng(11);
  for (int it = 0; it < 150; ++it) {
    const Problem p = random_problem(rng);
    const std::vector<long long> tokens = tokens_of(p, p.blocks);
    std::vector<double> want_o, want_lse;
    naive_attention(p, tokens, false, 0, want_o, want_lse);
    std::vector<double> o, lse;
    library_attention<double>(p, p.blocks, nullptr, o, lse);
    CHECK(rel_err(o, want_o) < 1e-12);
    CHECK(rel_err(lse, want_lse) < 1e-12);
    const std::vector<double> zero(p.T, 0.0);
    std::vector<double> o0, lse0;
    library_attention<double>(p, p.blocks, zero.data(), o0, lse0);
    CHECK(o0 == o);  // a zero bias array and no bias are the same computation
    CHECK(lse0 == lse);
  }
}

TEST_CASE("with bias: matches the independent naive computation") {
  Rng rng(12);
  for (int it = 0; it < 150; ++it) {
    const Problem p = random_problem(rng);
    std::vector<double> want_o, want_lse, o, lse;
    naive_attention(p, tokens_of(p, p.blocks), true, 0, want_o, want_lse);
    library_attention<double>(p, p.blocks, p.bias.data(), o, lse);
    CHECK(rel_err(o, want_o) < 1e-12);
    CHECK(rel_err(lse, want_lse) < 1e-12);
  }
}

TEST_CASE("a constant bias changes nothing in o and shifts lse by the constant") {
  Rng rng(13);
  for (int it = 0; it < 100; ++it) {
    const Problem p = random_problem(rng);
    const double shift = (it % 2 ? 1 : -1) * (0.5 + 40 * rng.uniform());  // large shifts too: no overflow
    std::vector<double> shifted = p.bias;
    for (double& b : shifted) b += shift;
    std::vector<double> o, lse, os, lses;
    library_attention<double>(p, p.blocks, p.bias.data(), o, lse);
    library_attention<double>(p, p.blocks, shifted.data(), os, lses);
    CHECK(rel_err(os, o) < 1e-12);
    for (int g = 0; g < p.G; ++g) CHECK(lses[g] == doctest::Approx(lse[g] + shift).epsilon(1e-12));
    // A constant bias on top of no bias: o equals the unbiased output.
    std::vector<double> flat(p.T, shift), onb, lsenb, of, lsef;
    library_attention<double>(p, p.blocks, nullptr, onb, lsenb);
    library_attention<double>(p, p.blocks, flat.data(), of, lsef);
    CHECK(rel_err(of, onb) < 1e-12);
    for (int g = 0; g < p.G; ++g) CHECK(lsef[g] == doctest::Approx(lsenb[g] + shift).epsilon(1e-12));
  }
}

TEST_CASE("block order does not matter; the last block contributes only tokens < T") {
  Rng rng(14);
  for (int it = 0; it < 50; ++it) {
    Problem p = random_problem(rng);
    std::vector<int> sorted = p.blocks;
    std::sort(sorted.begin(), sorted.end());
    std::vector<double> o1, l1, o2, l2;
    library_attention<double>(p, p.blocks, p.bias.data(), o1, l1);
    library_attention<double>(p, sorted, p.bias.data(), o2, l2);
    CHECK(rel_err(o1, o2) < 1e-13);
    CHECK(rel_err(l1, l2) < 1e-13);
    // Tokens past T in the arrays are never read: poison them.
    const int nb = static_cast<int>((p.T + p.B - 1) / p.B);
    const long long padded = static_cast<long long>(nb) * p.B;
    Problem poisoned = p;
    poisoned.keys.resize(padded * p.D, 1e30);
    poisoned.values.resize(padded * p.D, std::numeric_limits<double>::quiet_NaN());
    poisoned.bias.resize(padded, 1e30);
    std::vector<double> o3, l3;
    library_attention<double>(poisoned, sorted, poisoned.bias.data(), o3, l3);
    CHECK(o3 == o2);
    CHECK(l3 == l2);
  }
}

TEST_CASE("merge_partials of two disjoint halves equals attention over the union") {
  Rng rng(15);
  for (int it = 0; it < 120; ++it) {
    const Problem p = random_problem(rng);
    std::vector<int> a, b;
    for (int m : p.blocks) (rng.uniform() < 0.5 ? a : b).push_back(m);
    std::vector<double> oa, la, ob, lb, ou, lu;
    library_attention<double>(p, a, p.bias.data(), oa, la);  // an empty half gives lse = -inf
    library_attention<double>(p, b, p.bias.data(), ob, lb);
    library_attention<double>(p, p.blocks, p.bias.data(), ou, lu);
    std::vector<double> om(oa.size()), lm(la.size());
    nosa::host::merge_partials<double>(p.G, p.D, oa.data(), la.data(), ob.data(), lb.data(), om.data(), lm.data());
    CHECK(rel_err(om, ou) < 1e-12);
    CHECK(rel_err(lm, lu) < 1e-12);
    // In place (output aliases a), and the merge is symmetric.
    nosa::host::merge_partials<double>(p.G, p.D, ob.data(), lb.data(), oa.data(), la.data(), ob.data(), lb.data());
    CHECK(rel_err(ob, ou) < 1e-12);
    CHECK(rel_err(lb, lu) < 1e-12);
  }
}

TEST_CASE("empty and all -inf partials: o = 0, lse = -inf, and merging them is a no-op") {
  const double q[] = {1, 2}, keys[] = {1, 1, 2, 2}, values[] = {3, 4, 5, 6};
  const double ninf = -kInf;
  const double bias[] = {ninf, ninf};
  double o[2], lse;
  nosa::host::attend_blocks<double>(q, 1, 2, keys, 2, values, 2, bias, 1, 2, 1, {0, 1}, o, &lse);
  CHECK(o[0] == 0);
  CHECK(o[1] == 0);
  CHECK(lse == -kInf);
  nosa::host::attend_blocks<double>(q, 1, 2, keys, 2, values, 2, bias, 1, 2, 1, {}, o, &lse);
  CHECK(lse == -kInf);
  // A -inf bias masks one token exactly.
  const double half[] = {0, ninf};
  nosa::host::attend_blocks<double>(q, 1, 2, keys, 2, values, 2, half, 1, 2, 1, {0, 1}, o, &lse);
  CHECK(o[0] == 3);
  CHECK(o[1] == 4);
  CHECK(lse == doctest::Approx(3 / std::sqrt(2.0)).epsilon(1e-15));
  const double oe[] = {0, 0}, le[] = {-kInf};
  const double ox[] = {7, 8}, lx[] = {1.25};
  double om[2], lm[1];
  nosa::host::merge_partials<double>(1, 2, ox, lx, oe, le, om, lm);
  CHECK(om[0] == 7);
  CHECK(om[1] == 8);
  CHECK(lm[0] == 1.25);
  nosa::host::merge_partials<double>(1, 2, oe, le, oe, le, om, lm);
  CHECK(om[0] == 0);
  CHECK(lm[0] == -kInf);
}

TEST_CASE("float and double references agree to ~1e-5") {
  Rng rng(16);
  double worst_o = 0, worst_lse = 0;
  for (int it = 0; it < 100; ++it) {
    const Problem p = random_problem(rng);
    std::vector<double> od, ld;
    std::vector<float> of, lf;
    library_attention<double>(p, p.blocks, p.bias.data(), od, ld);
    library_attention<float>(p, p.blocks, p.bias.data(), of, lf);
    worst_o = std::max(worst_o, rel_err(of, od));
    double le = 0;
    for (int g = 0; g < p.G; ++g) le = std::max(le, std::fabs(lf[g] - ld[g]) / std::max(1.0, std::fabs(ld[g])));
    worst_lse = std::max(worst_lse, le);
  }
  MESSAGE("float vs double: max relative error o " << worst_o << ", lse " << worst_lse);
  CHECK(worst_o < 1e-5);
  CHECK(worst_lse < 1e-5);
  CHECK(worst_o > 0);  // the float path really runs in float
}

TEST_CASE("bf16 and fp16 inputs are converted on load; bf16 output rounds once") {
  Rng rng(17);
  for (int it = 0; it < 40; ++it) {
    Problem p = random_problem(rng);
    std::vector<nosa::bfloat16_t> qb(p.q.size()), kb(p.keys.size()), vb(p.values.size()), bb(p.bias.size());
    std::vector<nosa::float16_t> qh(p.q.size()), kh(p.keys.size()), vh(p.values.size()), bh(p.bias.size());
    Problem rb = p, rh = p;  // the same values, rounded, held as double
    auto convert = [](const std::vector<double>& src, auto& dst_b, auto& dst_h, std::vector<double>& rb_vals,
                      std::vector<double>& rh_vals) {
      for (size_t i = 0; i < src.size(); ++i) {
        dst_b[i] = nosa::to_bfloat16(static_cast<float>(src[i]));
        dst_h[i] = nosa::to_float16(static_cast<float>(src[i]));
        rb_vals[i] = nosa::to_float(dst_b[i]);
        rh_vals[i] = nosa::to_float(dst_h[i]);
      }
    };
    convert(p.q, qb, qh, rb.q, rh.q);
    convert(p.keys, kb, kh, rb.keys, rh.keys);
    convert(p.values, vb, vh, rb.values, rh.values);
    convert(p.bias, bb, bh, rb.bias, rh.bias);
    std::vector<double> want_b, lwb, want_h, lwh;
    library_attention<double>(rb, p.blocks, rb.bias.data(), want_b, lwb);
    library_attention<double>(rh, p.blocks, rh.bias.data(), want_h, lwh);
    std::vector<double> ob(want_b.size()), lb(p.G), oh(want_h.size()), lh(p.G);
    nosa::host::attend_blocks<double>(qb.data(), p.G, p.D, kb.data(), p.D, vb.data(), p.D, bb.data(), 1, p.T, p.B,
                                      p.blocks, ob.data(), lb.data());
    nosa::host::attend_blocks<double>(qh.data(), p.G, p.D, kh.data(), p.D, vh.data(), p.D, bh.data(), 1, p.T, p.B,
                                      p.blocks, oh.data(), lh.data());
    CHECK(ob == want_b);  // bit-identical: conversion happens on load, math is the same
    CHECK(lb == lwb);
    CHECK(oh == want_h);
    CHECK(lh == lwh);
    // bf16 output: each element is the double result rounded to nearest bf16 (through float).
    std::vector<nosa::bfloat16_t> obf(want_b.size());
    std::vector<double> lbf(p.G);
    nosa::host::attend_blocks<double>(qb.data(), p.G, p.D, kb.data(), p.D, vb.data(), p.D, bb.data(), 1, p.T, p.B,
                                      p.blocks, obf.data(), lbf.data());
    for (size_t i = 0; i < obf.size(); ++i) REQUIRE(obf[i].bits == nosa::to_bfloat16(static_cast<float>(want_b[i])).bits);
  }
}
