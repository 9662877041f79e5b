// Tests of the host decode step and prefill (include/nosa/host/decode.h): ragged batches against
// an independent naive long-double attention over the selected blocks, dense = full attention,
// budget >= nb = dense, InfLLM-V2 ignores the bias, prefill row i = decode at T = i + 1 (both
// modes, bit for bit), thread counts do not change a bit, bad calls are rejected without writing
// anything, and sequences join and leave between steps.
#include <nosa/host.h>

#include <doctest/doctest.h>

#include "test_rng.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

namespace {

using nosa::SelectionParams;
using nosa::SelectorKind;
using nosa::SequenceId;
using nosa::StatusCode;
using nosa::host::KVCache;
using nosa::host::StepOptions;

using nosa_test::Rng;

std::vector<float> normals(Rng& rng, size_t n, double scale = 1.0) {
  std::vector<float> v(n);
  for (float& x : v) x = static_cast<float>(scale * rng.normal());
  return v;
}

// Appends n random tokens (token-major k, v [n][Hkv][D], bias [n][Hkv]) to a sequence.
template <class Real>
void append_random(KVCache<Real>& cache, SequenceId id, long long n, Rng& rng, double bias_scale = 1.5) {
  const int Hkv = cache.num_kv_heads(), D = cache.dims().head_dim;
  const auto k = normals(rng, static_cast<size_t>(n) * Hkv * D), v = normals(rng, static_cast<size_t>(n) * Hkv * D);
  const auto b = normals(rng, static_cast<size_t>(n) * Hkv, bias_scale);
  REQUIRE(cache.append(id, n, k.data(), v.data(), b.data()).ok());
}

SelectionParams small_params() {
  SelectionParams p;
  p.window = 32;
  p.stride = 16;
  p.sink = 1;
  p.local = 3;
  p.query_aware = 6;
  p.budget = 10;
  return p;
}

nosa::Dims dims_of(int B, int D, int G) { return nosa::Dims{B, D, G, nosa::HeadLayout::kNHD}; }

// Independent naive attention of query row qh = h*G + g of batch entry b, over the tokens < T of
// the given blocks, from the cache's stored K/V/bias, in long double.
template <class Real, class QT>
void naive_row(const KVCache<Real>& cache, SequenceId id, int h, const QT* q_row, const std::vector<int>& blocks,
               long long T, bool use_bias, std::vector<double>& o, double& lse) {
  const int D = cache.dims().head_dim, B = cache.dims().block_size;
  const auto& hs = cache.head(id, h);
  long double denom = 0;
  std::vector<long double> acc(D, 0);
  for (int m : blocks) {
    for (long long t = static_cast<long long>(m) * B; t < std::min<long long>((m + 1LL) * B, T); ++t) {
      long double dot = 0;
      for (int d = 0; d < D; ++d) dot += static_cast<long double>(nosa::load_as<double>(q_row[d])) * hs.keys[t * D + d];
      long double l = dot / std::sqrt(static_cast<long double>(D));
      if (use_bias) l += hs.bias[t];
      const long double w = std::exp(l);
      denom += w;
      for (int d = 0; d < D; ++d) acc[d] += w * hs.values[t * D + d];
    }
  }
  o.resize(D);
  for (int d = 0; d < D; ++d) o[d] = static_cast<double>(acc[d] / denom);
  lse = static_cast<double>(std::log(denom));
}

std::vector<int> iota_blocks(long long T, int B) {
  std::vector<int> v(nosa::detail::num_blocks(T, B));
  for (size_t i = 0; i < v.size(); ++i) v[i] = static_cast<int>(i);
  return v;
}

template <class T>
bool same_bits(const std::vector<T>& a, const std::vector<T>& b) {
  return a.size() == b.size() && (a.empty() || std::memcmp(a.data(), b.data(), a.size() * sizeof(T)) == 0);
}

// A cache with a ragged batch of sequences (ids 10, 11, ...).
template <class Real>
KVCache<Real> ragged_cache(Rng& rng, int Hkv, nosa::Dims dims, SelectionParams p, const std::vector<long long>& lengths) {
  KVCache<Real> cache(Hkv, dims, p);
  for (size_t i = 0; i < lengths.size(); ++i) {
    REQUIRE(cache.add_sequence(10 + static_cast<SequenceId>(i)).ok());
    append_random(cache, 10 + static_cast<SequenceId>(i), lengths[i], rng);
  }
  return cache;
}

// Checks one decode step of a batch row by row against the naive attention over the selected
// blocks (and the selector's structural rules).
template <class Real>
void check_step_against_naive(const KVCache<Real>& cache, const std::vector<SequenceId>& batch, const std::vector<float>& q,
                              const std::vector<Real>& o, const std::vector<Real>& lse,
                              const std::vector<std::vector<int>>& selected, const StepOptions& opt, double tol) {
  const int Hkv = cache.num_kv_heads(), G = cache.dims().group_size, D = cache.dims().head_dim;
  const int B = cache.dims().block_size;
  const SelectionParams& p = cache.params();
  REQUIRE(selected.size() == batch.size() * Hkv);
  for (size_t b = 0; b < batch.size(); ++b) {
    const long long T = cache.length(batch[b]);
    const int nb = nosa::detail::num_blocks(T, B);
    for (int h = 0; h < Hkv; ++h) {
      const std::vector<int>& I = selected[b * Hkv + h];
      const int want = opt.selector == SelectorKind::kDense ? nb : std::min(nb, p.budget);
      REQUIRE(static_cast<int>(I.size()) == want);
      REQUIRE(std::is_sorted(I.begin(), I.end()));
      REQUIRE(std::adjacent_find(I.begin(), I.end()) == I.end());
      for (int m = 0; m < nb; ++m)
        if (nosa::detail::is_forced_block(m, nb - 1, p.sink, p.local)) REQUIRE(std::binary_search(I.begin(), I.end(), m));
      for (int g = 0; g < G; ++g) {
        const size_t row = (b * Hkv + h) * G + g;  // query head qh = h*G + g of batch entry b
        std::vector<double> want_o;
        double want_lse;
        naive_row(cache, batch[b], h, q.data() + row * D, I, T, opt.bias_in_attention, want_o, want_lse);
        for (int d = 0; d < D; ++d) REQUIRE(static_cast<double>(o[row * D + d]) == doctest::Approx(want_o[d]).epsilon(tol).scale(1.0));
        REQUIRE(static_cast<double>(lse[row]) == doctest::Approx(want_lse).epsilon(tol).scale(1.0));
      }
    }
  }
}

template <class Real>
struct StepOut {
  std::vector<Real> o, lse;
  std::vector<std::vector<int>> selected;
};

template <class Real, class QT = float>
StepOut<Real> run_step(const KVCache<Real>& cache, const std::vector<SequenceId>& batch, const std::vector<QT>& q,
                       const StepOptions& opt) {
  const int Hq = cache.num_query_heads(), D = cache.dims().head_dim;
  StepOut<Real> out;
  out.o.assign(batch.size() * Hq * D, Real(-3));
  out.lse.assign(batch.size() * Hq, Real(-3));
  const nosa::Status s = nosa::host::decode_step(cache, batch, q.data(), out.o.data(), out.lse.data(), opt, &out.selected);
  REQUIRE(s.ok());
  return out;
}

StepOptions opts(SelectorKind kind, bool bias, int threads = 2) { return StepOptions{kind, bias, threads}; }

}  // namespace

TEST_CASE("ragged batch: every row equals naive attention over its selected blocks") {
  Rng rng(1);
  const std::vector<long long> lengths = {1, 15, 16, 17, 200, 511, 1024, 1500};
  for (int G : {1, 3, 4}) {
    CAPTURE(G);
    const int Hkv = 2, D = 16;
    auto cache = ragged_cache<double>(rng, Hkv, dims_of(16, D, G), small_params(), lengths);
    const std::vector<SequenceId> batch = {17, 10, 13, 11, 15, 12, 16, 14};  // any order
    const auto q = normals(rng, batch.size() * Hkv * G * D, 2.0);
    for (auto opt : {opts(SelectorKind::kNosa, true), opts(SelectorKind::kInfllmV2, false),
                     opts(SelectorKind::kDense, true), opts(SelectorKind::kDense, false)}) {
      CAPTURE(static_cast<int>(opt.selector));
      const auto out = run_step(cache, batch, q, opt);
      check_step_against_naive(cache, batch, q, out.o, out.lse, out.selected, opt, 1e-12);
      if (opt.selector == SelectorKind::kDense)
        for (size_t b = 0; b < batch.size(); ++b)
          CHECK(out.selected[b * Hkv] == iota_blocks(cache.length(batch[b]), 16));  // dense = full attention
    }
    // Float reference, same checks at float tolerance.
    auto cache_f = ragged_cache<float>(rng, Hkv, dims_of(16, D, G), small_params(), lengths);
    const auto out_f = run_step(cache_f, batch, q, opts(SelectorKind::kNosa, true));
    check_step_against_naive(cache_f, batch, q, out_f.o, out_f.lse, out_f.selected, opts(SelectorKind::kNosa, true), 2e-5);
  }
}

TEST_CASE("each row is the library's own select + attend composition (selection per KV head)") {
  Rng rng(2);
  const int Hkv = 3, G = 2, D = 8;
  auto cache = ragged_cache<double>(rng, Hkv, dims_of(32, D, G), small_params(), {700, 90, 1200});
  const std::vector<SequenceId> batch = {12, 10, 11};
  const auto q = normals(rng, batch.size() * Hkv * G * D, 2.5);
  const auto out = run_step(cache, batch, q, opts(SelectorKind::kNosa, true));
  bool heads_differ = false;
  for (size_t b = 0; b < batch.size(); ++b)
    for (int h = 0; h < Hkv; ++h) {
      const auto& hs = cache.head(batch[b], h);
      const long long T = cache.length(batch[b]);
      const float* qg = q.data() + (b * Hkv + h) * G * D;
      const auto sel = nosa::host::select_blocks<double>(SelectorKind::kNosa, cache.params(), 32, T, qg, G, D,
                                                        hs.compressed.keys(), hs.compressed.scores());
      CHECK(sel.blocks == out.selected[b * Hkv + h]);
      std::vector<double> o(G * D), lse(G);
      nosa::host::attend_blocks<double>(qg, G, D, hs.keys.data(), D, hs.values.data(), D, hs.bias.data(), 1, T, 32,
                                        sel.blocks, o.data(), lse.data());
      for (int i = 0; i < G * D; ++i) CHECK(o[i] == out.o[(b * Hkv + h) * G * D + i]);
      for (int g = 0; g < G; ++g) CHECK(lse[g] == out.lse[(b * Hkv + h) * G + g]);
      if (h > 0 && out.selected[b * Hkv + h] != out.selected[b * Hkv]) heads_differ = true;
    }
  CHECK(heads_differ);  // KV heads select independently
}

TEST_CASE("a sparse step whose budget covers every block equals dense attention") {
  Rng rng(3);
  SelectionParams p = small_params();
  p.budget = 40;
  p.query_aware = 20;
  for (int G : {1, 5}) {
    auto cache = ragged_cache<float>(rng, 2, dims_of(16, 32, G), p, {1, 33, 300, 640});  // nb <= 40
    const std::vector<SequenceId> batch = {10, 11, 12, 13};
    const auto q = normals(rng, batch.size() * 2 * G * 32, 2.0);
    const auto nosa_out = run_step(cache, batch, q, StepOptions::of<nosa::NosaSelector>(2));
    const auto dense_bias = run_step(cache, batch, q, StepOptions::of<nosa::DenseSelector<true>>(2));
    const auto inf_out = run_step(cache, batch, q, StepOptions::of<nosa::InfllmV2Selector>(2));
    const auto dense_plain = run_step(cache, batch, q, StepOptions::of<nosa::DenseSelector<false>>(2));
    CHECK(same_bits(nosa_out.o, dense_bias.o));
    CHECK(same_bits(nosa_out.lse, dense_bias.lse));
    CHECK(same_bits(inf_out.o, dense_plain.o));
    CHECK(same_bits(inf_out.lse, dense_plain.lse));
    CHECK_FALSE(same_bits(nosa_out.o, inf_out.o));  // the bias matters for NOSA
  }
}

TEST_CASE("InfLLM-V2 ignores the bias entirely; NOSA does not") {
  Rng rng(4);
  const int Hkv = 2, G = 4, D = 16;
  const std::vector<long long> lengths = {900, 1300};
  // Two caches with the same keys/values and different biases: the bias stream is drawn
  // separately, so append by hand.
  KVCache<double> c1(Hkv, dims_of(16, D, G), small_params()), c2(Hkv, dims_of(16, D, G), small_params());
  for (size_t i = 0; i < lengths.size(); ++i) {
    const SequenceId id = 10 + static_cast<SequenceId>(i);
    REQUIRE(c1.add_sequence(id).ok());
    REQUIRE(c2.add_sequence(id).ok());
    const auto k = normals(rng, lengths[i] * Hkv * D), v = normals(rng, lengths[i] * Hkv * D);
    const auto b1 = normals(rng, lengths[i] * Hkv, 2.0), b2 = normals(rng, lengths[i] * Hkv, 2.0);
    REQUIRE(c1.append(id, lengths[i], k.data(), v.data(), b1.data()).ok());
    REQUIRE(c2.append(id, lengths[i], k.data(), v.data(), b2.data()).ok());
  }
  const std::vector<SequenceId> batch = {10, 11};
  const auto q = normals(rng, batch.size() * Hkv * G * D, 2.0);
  const auto i1 = run_step(c1, batch, q, opts(SelectorKind::kInfllmV2, false));
  const auto i2 = run_step(c2, batch, q, opts(SelectorKind::kInfllmV2, false));
  CHECK(i1.selected == i2.selected);
  CHECK(same_bits(i1.o, i2.o));
  CHECK(same_bits(i1.lse, i2.lse));
  const auto n1 = run_step(c1, batch, q, opts(SelectorKind::kNosa, true));
  const auto n2 = run_step(c2, batch, q, opts(SelectorKind::kNosa, true));
  CHECK(n1.selected != n2.selected);  // the agnostic ranking follows the bias
  CHECK_FALSE(same_bits(n1.o, n2.o));
}

TEST_CASE("prefill row i equals a decode step at T = i + 1 (dense and sparse modes, bit for bit)") {
  Rng rng(5);
  const int Hkv = 2, G = 3, D = 16, B = 16;
  SelectionParams p = small_params();
  p.window = 8;
  p.stride = 4;  // compressed keys appear early, so sparse rows really select
  const long long L = 260;
  const auto k = normals(rng, L * Hkv * D), v = normals(rng, L * Hkv * D), bias = normals(rng, L * Hkv, 1.5);
  const auto q = normals(rng, L * Hkv * G * D, 2.0);  // one query row per position
  KVCache<double> full(Hkv, dims_of(B, D, G), p);
  REQUIRE(full.add_sequence(1).ok());
  REQUIRE(full.append(1, L, k.data(), v.data(), bias.data()).ok());
  struct Mode {
    nosa::host::PrefillMode mode;
    StepOptions options;   // what prefill is called with
    StepOptions decode;    // the decode step each row must equal
  };
  const Mode modes[] = {
      {nosa::host::PrefillMode::kSparse, opts(SelectorKind::kNosa, true), opts(SelectorKind::kNosa, true)},
      {nosa::host::PrefillMode::kSparse, opts(SelectorKind::kInfllmV2, false), opts(SelectorKind::kInfllmV2, false)},
      {nosa::host::PrefillMode::kDense, opts(SelectorKind::kNosa, true), opts(SelectorKind::kDense, true)},
      {nosa::host::PrefillMode::kDense, opts(SelectorKind::kInfllmV2, false), opts(SelectorKind::kDense, false)},
  };
  const size_t row_elems = static_cast<size_t>(Hkv) * G * D, row_heads = static_cast<size_t>(Hkv) * G;
  for (const Mode& m : modes) {
    CAPTURE(static_cast<int>(m.mode));
    CAPTURE(static_cast<int>(m.options.selector));
    std::vector<double> po(L * row_elems, -3), plse(L * row_heads, -3);
    REQUIRE(nosa::host::prefill(full, 1, 0, L, q.data(), po.data(), plse.data(), m.mode, m.options).ok());
    // Chunked prefill (rows 100..259 only) gives the same rows.
    std::vector<double> co((L - 100) * row_elems), clse((L - 100) * row_heads);
    REQUIRE(nosa::host::prefill(full, 1, 100, L - 100, q.data() + 100 * row_elems, co.data(), clse.data(), m.mode,
                                m.options).ok());
    CHECK(std::memcmp(co.data(), po.data() + 100 * row_elems, co.size() * sizeof(double)) == 0);
    CHECK(std::memcmp(clse.data(), plse.data() + 100 * row_heads, clse.size() * sizeof(double)) == 0);
    // Token-by-token decode.
    KVCache<double> inc(Hkv, dims_of(B, D, G), p);
    REQUIRE(inc.add_sequence(1).ok());
    int sparse_rows = 0;
    for (long long i = 0; i < L; ++i) {
      REQUIRE(inc.append(1, 1, k.data() + i * Hkv * D, v.data() + i * Hkv * D, bias.data() + i * Hkv).ok());
      std::vector<double> o(row_elems), lse(row_heads);
      std::vector<std::vector<int>> sel;
      REQUIRE(nosa::host::decode_step(inc, {1}, q.data() + i * row_elems, o.data(), lse.data(), m.decode, &sel).ok());
      CAPTURE(i);
      REQUIRE(std::memcmp(o.data(), po.data() + i * row_elems, o.size() * sizeof(double)) == 0);
      REQUIRE(std::memcmp(lse.data(), plse.data() + i * row_heads, lse.size() * sizeof(double)) == 0);
      if (static_cast<int>(sel[0].size()) < nosa::detail::num_blocks(i + 1, B)) ++sparse_rows;
    }
    if (m.mode == nosa::host::PrefillMode::kSparse) CHECK(sparse_rows > 50);  // the sparse rows really dropped blocks
  }
}

TEST_CASE("prefill rows see only their causal prefix (independent naive, dense mode)") {
  Rng rng(6);
  const int Hkv = 1, G = 2, D = 8;
  KVCache<double> cache(Hkv, dims_of(16, D, G), small_params());
  REQUIRE(cache.add_sequence(3).ok());
  append_random(cache, 3, 90, rng);
  const auto q = normals(rng, 90 * G * D, 2.0);
  std::vector<double> o(90 * G * D), lse(90 * G);
  REQUIRE(nosa::host::prefill(cache, 3, 0, 90, q.data(), o.data(), lse.data(), nosa::host::PrefillMode::kDense,
                              opts(SelectorKind::kNosa, true)).ok());
  for (long long i = 0; i < 90; i += 7)
    for (int g = 0; g < G; ++g) {
      std::vector<double> want;
      double want_lse;
      naive_row(cache, 3, 0, q.data() + (i * G + g) * D, iota_blocks(i + 1, 16), i + 1, true, want, want_lse);
      for (int d = 0; d < D; ++d) CHECK(o[(i * G + g) * D + d] == doctest::Approx(want[d]).epsilon(1e-12));
      CHECK(lse[i * G + g] == doctest::Approx(want_lse).epsilon(1e-12));
    }
}

TEST_CASE("num_threads 1 vs 8 (and 0 = hardware) give identical results") {
  Rng rng(7);
  auto cache = ragged_cache<float>(rng, 4, dims_of(16, 16, 2), small_params(), {300, 1, 800, 45, 1000, 64});
  const std::vector<SequenceId> batch = {10, 11, 12, 13, 14, 15};
  const auto q = normals(rng, batch.size() * 4 * 2 * 16, 2.0);
  for (SelectorKind kind : {SelectorKind::kNosa, SelectorKind::kInfllmV2, SelectorKind::kDense}) {
    const auto o1 = run_step(cache, batch, q, opts(kind, true, 1));
    const auto o8 = run_step(cache, batch, q, opts(kind, true, 8));
    const auto o0 = run_step(cache, batch, q, opts(kind, true, 0));
    CHECK(same_bits(o1.o, o8.o));
    CHECK(same_bits(o1.lse, o8.lse));
    CHECK(o1.selected == o8.selected);
    CHECK(same_bits(o1.o, o0.o));
  }
  const auto qp = normals(rng, 800 * 4 * 2 * 16, 2.0);
  std::vector<float> p1(qp.size()), p8(qp.size()), l1(800 * 8), l8(800 * 8);
  REQUIRE(nosa::host::prefill(cache, 12, 0, 800, qp.data(), p1.data(), l1.data(), nosa::host::PrefillMode::kSparse,
                              opts(SelectorKind::kNosa, true, 1)).ok());
  REQUIRE(nosa::host::prefill(cache, 12, 0, 800, qp.data(), p8.data(), l8.data(), nosa::host::PrefillMode::kSparse,
                              opts(SelectorKind::kNosa, true, 8)).ok());
  CHECK(same_bits(p1, p8));
  CHECK(same_bits(l1, l8));
}

TEST_CASE("bf16/fp16 queries and outputs: converted on load, rounded once on store") {
  Rng rng(8);
  auto cache = ragged_cache<float>(rng, 2, dims_of(16, 16, 4), small_params(), {500, 77});
  const std::vector<SequenceId> batch = {10, 11};
  const auto qf = normals(rng, 2 * 2 * 4 * 16, 2.0);
  std::vector<nosa::bfloat16_t> qb(qf.size());
  std::vector<nosa::float16_t> qh(qf.size());
  std::vector<float> qb_f(qf.size()), qh_f(qf.size());
  for (size_t i = 0; i < qf.size(); ++i) {
    qb[i] = nosa::to_bfloat16(qf[i]);
    qh[i] = nosa::to_float16(qf[i]);
    qb_f[i] = nosa::to_float(qb[i]);
    qh_f[i] = nosa::to_float(qh[i]);
  }
  const auto want_b = run_step(cache, batch, qb_f, opts(SelectorKind::kNosa, true));
  const auto want_h = run_step(cache, batch, qh_f, opts(SelectorKind::kNosa, true));
  const auto got_b = run_step(cache, batch, qb, opts(SelectorKind::kNosa, true));
  const auto got_h = run_step(cache, batch, qh, opts(SelectorKind::kNosa, true));
  CHECK(same_bits(got_b.o, want_b.o));
  CHECK(got_b.selected == want_b.selected);
  CHECK(same_bits(got_h.o, want_h.o));
  std::vector<nosa::bfloat16_t> ob(want_b.o.size());
  std::vector<float> lse(want_b.lse.size());
  REQUIRE(nosa::host::decode_step(cache, batch, qb.data(), ob.data(), lse.data(), opts(SelectorKind::kNosa, true)).ok());
  for (size_t i = 0; i < ob.size(); ++i) REQUIRE(ob[i].bits == nosa::to_bfloat16(want_b.o[i]).bits);
  CHECK(same_bits(lse, want_b.lse));
}

TEST_CASE("decode_step rejects unknown, empty and duplicate ids and null pointers, writing nothing") {
  Rng rng(9);
  auto cache = ragged_cache<float>(rng, 2, dims_of(16, 8, 2), small_params(), {40, 90});
  REQUIRE(cache.add_sequence(50).ok());  // empty: no current token yet
  const auto q = normals(rng, 3 * 2 * 2 * 8);
  std::vector<float> o(3 * 4 * 8, 123.0f), lse(3 * 4, 123.0f);
  std::vector<std::vector<int>> sel = {{42}};
  auto untouched = [&] {
    CHECK(std::all_of(o.begin(), o.end(), [](float x) { return x == 123.0f; }));
    CHECK(std::all_of(lse.begin(), lse.end(), [](float x) { return x == 123.0f; }));
    CHECK(sel == std::vector<std::vector<int>>{{42}});
  };
  nosa::Status s = nosa::host::decode_step(cache, {10, 99}, q.data(), o.data(), lse.data(), {}, &sel);
  CHECK(s.code() == StatusCode::kNotFound);
  CHECK(s.message().find("batch[1]") != std::string::npos);
  CHECK(s.message().find("99") != std::string::npos);
  untouched();
  s = nosa::host::decode_step(cache, {10, 50}, q.data(), o.data(), lse.data(), {}, &sel);
  CHECK(s.code() == StatusCode::kInvalidArgument);
  CHECK(s.message().find("50") != std::string::npos);
  untouched();
  s = nosa::host::decode_step(cache, {10, 11, 10}, q.data(), o.data(), lse.data(), {}, &sel);
  CHECK(s.code() == StatusCode::kInvalidArgument);
  CHECK(s.message().find("twice") != std::string::npos);
  untouched();
  s = nosa::host::decode_step(cache, {10}, static_cast<const float*>(nullptr), o.data(), lse.data(), {}, &sel);
  CHECK(s.code() == StatusCode::kInvalidArgument);
  CHECK(s.message().find("q is null") != std::string::npos);
  s = nosa::host::decode_step(cache, {10}, q.data(), static_cast<float*>(nullptr), lse.data(), {}, &sel);
  CHECK(s.message().find("o is null") != std::string::npos);
  s = nosa::host::decode_step(cache, {10}, q.data(), o.data(), static_cast<float*>(nullptr), {}, &sel);
  CHECK(s.message().find("lse is null") != std::string::npos);
  untouched();
  // An empty batch is a valid no-op.
  CHECK(nosa::host::decode_step(cache, {}, static_cast<const float*>(nullptr), static_cast<float*>(nullptr),
                                static_cast<float*>(nullptr)).ok());
  // prefill: unknown id, bad row ranges, nulls.
  auto pf = [&](SequenceId id, long long first, long long rows, const float* qq, float* oo, float* ll) {
    return nosa::host::prefill(cache, id, first, rows, qq, oo, ll, nosa::host::PrefillMode::kSparse);
  };
  CHECK(pf(99, 0, 1, q.data(), o.data(), lse.data()).code() == StatusCode::kNotFound);
  CHECK(pf(10, -1, 1, q.data(), o.data(), lse.data()).message().find("first_row") != std::string::npos);
  CHECK(pf(10, 0, -1, q.data(), o.data(), lse.data()).message().find("num_rows") != std::string::npos);
  CHECK(pf(10, 39, 2, q.data(), o.data(), lse.data()).code() == StatusCode::kInvalidArgument);  // 41 > 40
  CHECK(pf(10, 0, 1, nullptr, o.data(), lse.data()).message().find("q is null") != std::string::npos);
  CHECK(pf(10, 0, 1, q.data(), o.data(), nullptr).message().find("lse is null") != std::string::npos);
  untouched();
  CHECK(pf(10, 40, 0, nullptr, nullptr, nullptr).ok());
}

TEST_CASE("sequences joining and leaving between steps; results do not depend on the batch") {
  Rng rng(10);
  const int Hkv = 2, G = 2, D = 16, B = 16;
  KVCache<double> cache(Hkv, dims_of(B, D, G), small_params());
  std::vector<SequenceId> live;
  SequenceId next_id = 0;
  int joined = 0, left = 0;
  for (int step = 0; step < 40; ++step) {
    if (live.empty() || (rng.uniform() < 0.25 && live.size() < 6)) {  // join with a prompt
      REQUIRE(cache.add_sequence(next_id).ok());
      append_random(cache, next_id, rng.range(1, 1200), rng);
      live.push_back(next_id++);
      ++joined;
    }
    if (live.size() > 1 && rng.uniform() < 0.2) {  // leave
      const size_t i = rng.next() % live.size();
      REQUIRE(cache.remove_sequence(live[i]).ok());
      live.erase(live.begin() + static_cast<long>(i));
      ++left;
    }
    for (SequenceId id : live) append_random(cache, id, 1, rng);  // the current token
    std::vector<SequenceId> batch = live;
    for (size_t i = batch.size(); i > 1; --i) std::swap(batch[i - 1], batch[rng.next() % i]);
    const auto q = normals(rng, batch.size() * Hkv * G * D, 2.0);
    const auto out = run_step(cache, batch, q, opts(SelectorKind::kNosa, true));
    check_step_against_naive(cache, batch, q, out.o, out.lse, out.selected, opts(SelectorKind::kNosa, true), 1e-12);
    for (size_t b = 0; b < batch.size(); ++b) {  // a batch of one gives the same bits
      const std::vector<float> q1(q.begin() + b * Hkv * G * D, q.begin() + (b + 1) * Hkv * G * D);
      const auto single = run_step(cache, {batch[b]}, q1, opts(SelectorKind::kNosa, true, 1));
      CHECK(std::memcmp(single.o.data(), out.o.data() + b * Hkv * G * D, single.o.size() * sizeof(double)) == 0);
      CHECK(single.selected[0] == out.selected[b * Hkv]);
    }
  }
  CHECK(joined >= 4);
  CHECK(left >= 2);
  CHECK(cache.num_sequences() == live.size());
}

TEST_CASE("StepOptions::of maps the selector policies") {
  const StepOptions n = StepOptions::of<nosa::NosaSelector>(3);
  CHECK(n.selector == SelectorKind::kNosa);
  CHECK(n.bias_in_attention);
  CHECK(n.num_threads == 3);
  CHECK_FALSE(StepOptions::of<nosa::InfllmV2Selector>().bias_in_attention);
  CHECK(StepOptions::of<nosa::DenseSelector<false>>().selector == SelectorKind::kDense);
  CHECK_FALSE(StepOptions::of<nosa::DenseSelector<false>>().bias_in_attention);
  const StepOptions def;
  CHECK(def.selector == SelectorKind::kNosa);
  CHECK(def.bias_in_attention);
}
