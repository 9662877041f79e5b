// Tests of host::KVCache (include/nosa/host/kv_cache.h): incremental compression equals a bulk
// recompute bit for bit at every step, the token-major input layout, conversion on load, every
// rejected argument (with the right StatusCode and nothing changed), and sequences joining and
// leaving while others grow.
#include <nosa/detail/selection_math.h>
#include <nosa/host/kv_cache.h>

#include <doctest/doctest.h>

#include "test_rng.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <map>
#include <string>
#include <vector>

namespace {

using nosa::SelectionParams;
using nosa::SequenceId;
using nosa::StatusCode;
using nosa::host::KVCache;

using nosa_test::Rng;

// Token-major engine input for one sequence: k, v [T][Hkv][D], bias [T][Hkv].
template <class T = float>
struct Tokens {
  int Hkv, D;
  std::vector<T> k, v, bias;
  long long count() const { return static_cast<long long>(bias.size()) / Hkv; }
  const T* k_at(long long t) const { return k.data() + t * Hkv * D; }
  const T* v_at(long long t) const { return v.data() + t * Hkv * D; }
  const T* b_at(long long t) const { return bias.data() + t * Hkv; }
};

Tokens<float> random_tokens(Rng& rng, long long T, int Hkv, int D) {
  Tokens<float> x{Hkv, D, {}, {}, {}};
  x.k.resize(static_cast<size_t>(T) * Hkv * D);
  x.v.resize(x.k.size());
  x.bias.resize(static_cast<size_t>(T) * Hkv);
  for (float& a : x.k) a = static_cast<float>(rng.normal());
  for (float& a : x.v) a = static_cast<float>(rng.normal());
  for (float& a : x.bias) a = static_cast<float>(2 * rng.normal());
  return x;
}

nosa::Dims dims_of(int B, int D, int G) { return nosa::Dims{B, D, G, nosa::HeadLayout::kNHD}; }

SelectionParams params_of(int window, int stride) {
  SelectionParams p;
  p.window = window;
  p.stride = stride;
  return p;
}

// Compressed key j of head h straight from the raw input, summed in token order then divided
// (the order the contract's mean is defined in), so it must match bit for bit.
template <class Real>
void expected_window(const Tokens<float>& x, int h, int j, int c, int s, std::vector<Real>& key, Real& score) {
  key.assign(x.D, Real(0));
  score = Real(0);
  for (int t = 0; t < c; ++t) {
    const long long tok = static_cast<long long>(j) * s + t;
    for (int d = 0; d < x.D; ++d) key[d] += static_cast<Real>(x.k_at(tok)[h * x.D + d]);
    score += static_cast<Real>(x.b_at(tok)[h]);
  }
  for (int d = 0; d < x.D; ++d) key[d] /= Real(c);
  score /= Real(c);
}

template <class Real>
bool same_bits(const Real* a, const Real* b, size_t n) {
  return n == 0 || std::memcmp(a, b, n * sizeof(Real)) == 0;
}

// Full snapshot of a sequence, to prove a failed call changed nothing.
template <class Real>
std::vector<std::vector<Real>> snapshot(const KVCache<Real>& cache, SequenceId id) {
  std::vector<std::vector<Real>> out;
  for (int h = 0; h < cache.num_kv_heads(); ++h) {
    const auto& hs = cache.head(id, h);
    out.push_back(hs.keys);
    out.push_back(hs.values);
    out.push_back(hs.bias);
    const size_t n = static_cast<size_t>(hs.compressed.count());
    out.emplace_back(hs.compressed.keys(), hs.compressed.keys() + n * cache.dims().head_dim);
    out.emplace_back(hs.compressed.scores(), hs.compressed.scores() + n);
  }
  return out;
}

template <class Real>
void check_incremental_equals_bulk(int window, int stride, std::uint64_t seed) {
  CAPTURE(window);
  CAPTURE(stride);
  Rng rng(seed);
  const int Hkv = 2, D = 12;
  const long long T = 300;
  const Tokens<float> x = random_tokens(rng, T, Hkv, D);
  KVCache<Real> one(Hkv, dims_of(16, D, 2), params_of(window, stride));
  KVCache<Real> chunked(Hkv, dims_of(16, D, 2), params_of(window, stride));
  REQUIRE(one.add_sequence(5).ok());
  REQUIRE(chunked.add_sequence(5).ok());
  long long chunk_end = 0;
  std::vector<Real> key;
  Real score;
  for (long long t = 0; t < T; ++t) {
    REQUIRE(one.append(5, 1, x.k_at(t), x.v_at(t), x.b_at(t)).ok());
    if (t == chunk_end) {  // a random chunk (sometimes empty) starting at token t
      const long long n = std::min<long long>(T - t, rng.range(0, 70));
      REQUIRE(chunked.append(5, n, x.k_at(t), x.v_at(t), x.b_at(t)).ok());
      chunk_end = t + std::max<long long>(n, 1);
      if (n == 0) REQUIRE(chunked.append(5, 1, x.k_at(t), x.v_at(t), x.b_at(t)).ok());
    }
    const long long len = t + 1;
    REQUIRE(one.length(5) == len);
    const int nc = nosa::detail::num_compressed(len, window, stride);
    for (int h = 0; h < Hkv; ++h) {
      const auto& cs = one.head(5, h).compressed;
      REQUIRE(cs.count() == nc);  // usable the moment its window is complete, not a step later
      // Bulk recompute from scratch over the first len tokens of the stored head.
      nosa::host::CompressedState<Real> bulk(D, window, stride);
      bulk.update(one.head(5, h).keys.data(), D, one.head(5, h).bias.data(), 1, len);
      REQUIRE(bulk.count() == nc);
      REQUIRE(same_bits(cs.keys(), bulk.keys(), static_cast<size_t>(nc) * D));
      REQUIRE(same_bits(cs.scores(), bulk.scores(), static_cast<size_t>(nc)));
      // And straight from the engine's input.
      for (int j = 0; j < nc; ++j) {
        expected_window<Real>(x, h, j, window, stride, key, score);
        REQUIRE(same_bits(cs.keys() + static_cast<size_t>(j) * D, key.data(), D));
        REQUIRE(same_bits(&cs.scores()[j], &score, 1));
      }
      if (chunked.length(5) == len) {
        const auto& cc = chunked.head(5, h).compressed;
        REQUIRE(cc.count() == nc);
        REQUIRE(same_bits(cc.keys(), cs.keys(), static_cast<size_t>(nc) * D));
        REQUIRE(same_bits(cc.scores(), cs.scores(), static_cast<size_t>(nc)));
      }
    }
  }
  REQUIRE(chunked.length(5) == T);
}

}  // namespace

TEST_CASE("incremental compression equals bulk recompute bit for bit at every step") {
  const int combos[][2] = {{32, 16}, {64, 64}, {5, 3}, {1, 1}, {48, 7}, {17, 17}};
  std::uint64_t seed = 100;
  for (const auto& cs : combos) {
    check_incremental_equals_bulk<float>(cs[0], cs[1], ++seed);
    check_incremental_equals_bulk<double>(cs[0], cs[1], ++seed);
  }
}

TEST_CASE("append stores the token-major input [t][h][d] per KV head, converted on load") {
  Rng rng(3);
  const int Hkv = 3, D = 8;
  const long long T = 50;
  const Tokens<float> x = random_tokens(rng, T, Hkv, D);
  KVCache<double> cache(Hkv, dims_of(16, D, 4), SelectionParams{});
  CHECK(cache.num_query_heads() == 12);
  REQUIRE(cache.add_sequence(-9).ok());  // any id, negative too
  REQUIRE(cache.append(-9, T, x.k.data(), x.v.data(), x.bias.data()).ok());
  for (int h = 0; h < Hkv; ++h) {
    const auto& hs = cache.head(-9, h);
    REQUIRE(hs.keys.size() == static_cast<size_t>(T) * D);
    REQUIRE(hs.bias.size() == static_cast<size_t>(T));
    for (long long t = 0; t < T; ++t) {
      for (int d = 0; d < D; ++d) {
        REQUIRE(hs.keys[t * D + d] == x.k_at(t)[h * D + d]);
        REQUIRE(hs.values[t * D + d] == x.v_at(t)[h * D + d]);
      }
      REQUIRE(hs.bias[t] == x.b_at(t)[h]);
    }
  }
  // bf16 and fp16 inputs: the stored value is exactly the decoded 2-byte value.
  std::vector<nosa::bfloat16_t> kb(x.k.size()), vb(x.v.size()), bb(x.bias.size());
  std::vector<nosa::float16_t> kh(x.k.size()), vh(x.v.size()), bh(x.bias.size());
  for (size_t i = 0; i < x.k.size(); ++i) {
    kb[i] = nosa::to_bfloat16(x.k[i]);
    vb[i] = nosa::to_bfloat16(x.v[i]);
    kh[i] = nosa::to_float16(x.k[i]);
    vh[i] = nosa::to_float16(x.v[i]);
  }
  for (size_t i = 0; i < x.bias.size(); ++i) {
    bb[i] = nosa::to_bfloat16(x.bias[i]);
    bh[i] = nosa::to_float16(x.bias[i]);
  }
  KVCache<float> c16(Hkv, dims_of(16, D, 4), SelectionParams{});
  REQUIRE(c16.add_sequence(1).ok());
  REQUIRE(c16.add_sequence(2).ok());
  REQUIRE(c16.append(1, T, kb.data(), vb.data(), bb.data()).ok());
  REQUIRE(c16.append(2, T, kh.data(), vh.data(), bh.data()).ok());
  for (int h = 0; h < Hkv; ++h)
    for (long long t = 0; t < T; ++t) {
      const size_t i = static_cast<size_t>(t * Hkv + h) * D;
      REQUIRE(c16.head(1, h).keys[t * D] == nosa::to_float(kb[i]));
      REQUIRE(c16.head(1, h).values[t * D + D - 1] == nosa::to_float(vb[i + D - 1]));
      REQUIRE(c16.head(1, h).bias[t] == nosa::to_float(bb[t * Hkv + h]));
      REQUIRE(c16.head(2, h).keys[t * D] == nosa::to_float(kh[i]));
      REQUIRE(c16.head(2, h).bias[t] == nosa::to_float(bh[t * Hkv + h]));
    }
  // The bias may have its own element type.
  std::vector<double> bias_d(x.bias.begin(), x.bias.end());
  REQUIRE(c16.add_sequence(3).ok());
  REQUIRE(c16.append(3, T, kb.data(), vb.data(), bias_d.data()).ok());
  CHECK(c16.head(3, 1).bias[7] == x.b_at(7)[1]);
}

TEST_CASE("the constructor throws nosa::Error naming the bad argument") {
  struct Case {
    int hkv, B, D, G;
    SelectionParams p;
    long long cap;
    const char* name;
  };
  SelectionParams bad_budget;
  bad_budget.budget = 3;
  SelectionParams bad_stride;
  bad_stride.stride = 40;
  const Case cases[] = {
      {0, 64, 128, 16, {}, 0, "num_kv_heads"},  {-2, 64, 128, 16, {}, 0, "num_kv_heads"},
      {2, 64, 0, 16, {}, 0, "head_dim"},        {2, 64, 128, 0, {}, 0, "group_size"},
      {2, 64, 128, -1, {}, 0, "group_size"},    {2, 0, 128, 16, {}, 0, "block_size"},
      {2, 64, 128, 16, {}, -1, "max_tokens_per_sequence"},
      {2, 64, 128, 16, bad_budget, 0, "budget"}, {2, 64, 128, 16, bad_stride, 0, "stride"},
  };
  for (const Case& c : cases) {
    CAPTURE(c.name);
    bool threw = false;
    try {
      KVCache<float> cache(c.hkv, dims_of(c.B, c.D, c.G), c.p, c.cap);
    } catch (const nosa::Error& e) {
      threw = true;
      CHECK(e.code() == StatusCode::kInvalidArgument);
      CHECK(std::string(e.what()).find(c.name) != std::string::npos);
    }
    CHECK(threw);
  }
  CHECK_NOTHROW(KVCache<float>(1, dims_of(16, 64, 1), SelectionParams{}, 0));
}

TEST_CASE("append rejects bad arguments with the right code and changes nothing") {
  Rng rng(5);
  const int Hkv = 2, D = 4;
  const Tokens<float> x = random_tokens(rng, 100, Hkv, D);
  KVCache<float> cache(Hkv, dims_of(16, D, 1), params_of(8, 4), /*max_tokens_per_sequence=*/60);
  REQUIRE(cache.add_sequence(1).ok());
  REQUIRE(cache.add_sequence(2).ok());
  REQUIRE(cache.append(1, 37, x.k.data(), x.v.data(), x.bias.data()).ok());
  REQUIRE(cache.append(2, 10, x.k.data(), x.v.data(), x.bias.data()).ok());
  const auto before1 = snapshot(cache, 1), before2 = snapshot(cache, 2);
  auto unchanged = [&] {
    CHECK(cache.length(1) == 37);
    CHECK(cache.length(2) == 10);
    CHECK(snapshot(cache, 1) == before1);
    CHECK(snapshot(cache, 2) == before2);
    CHECK(cache.num_sequences() == 2);
  };
  nosa::Status s = cache.append(3, 1, x.k.data(), x.v.data(), x.bias.data());
  CHECK(s.code() == StatusCode::kNotFound);
  CHECK(s.message().find("3") != std::string::npos);
  unchanged();
  s = cache.append(1, -1, x.k.data(), x.v.data(), x.bias.data());
  CHECK(s.code() == StatusCode::kInvalidArgument);
  CHECK(s.message().find("num_tokens") != std::string::npos);
  unchanged();
  s = cache.append(1, 1, static_cast<const float*>(nullptr), x.v.data(), x.bias.data());
  CHECK(s.code() == StatusCode::kInvalidArgument);
  CHECK(s.message().find("k is null") != std::string::npos);
  unchanged();
  s = cache.append(1, 1, x.k.data(), static_cast<const float*>(nullptr), x.bias.data());
  CHECK(s.code() == StatusCode::kInvalidArgument);
  CHECK(s.message().find("v is null") != std::string::npos);
  unchanged();
  s = cache.append(1, 1, x.k.data(), x.v.data(), static_cast<const float*>(nullptr));
  CHECK(s.code() == StatusCode::kInvalidArgument);
  CHECK(s.message().find("bias is null") != std::string::npos);
  unchanged();
  s = cache.append(1, 24, x.k.data(), x.v.data(), x.bias.data());  // 37 + 24 = 61 > 60
  CHECK(s.code() == StatusCode::kCapacityExceeded);
  CHECK(s.message().find("max_tokens_per_sequence") != std::string::npos);
  unchanged();
  CHECK(cache.append(1, 0, static_cast<const float*>(nullptr), static_cast<const float*>(nullptr),
                     static_cast<const float*>(nullptr)).ok());  // nothing to append: no pointer needed
  unchanged();
  // Filling exactly to capacity is fine; one more token is not.
  CHECK(cache.append(1, 23, x.k.data(), x.v.data(), x.bias.data()).ok());
  CHECK(cache.length(1) == 60);
  CHECK(cache.append(1, 1, x.k.data(), x.v.data(), x.bias.data()).code() == StatusCode::kCapacityExceeded);
  CHECK(cache.length(1) == 60);
  CHECK(snapshot(cache, 2) == before2);  // the other sequence never moved
}

TEST_CASE("add and remove: duplicates and unknown ids are rejected; a re-added id starts fresh") {
  Rng rng(6);
  const Tokens<float> x = random_tokens(rng, 40, 1, 4);
  KVCache<float> cache(1, dims_of(16, 4, 1), params_of(8, 8));
  CHECK(cache.length(7) == -1);
  CHECK_FALSE(cache.contains(7));
  REQUIRE(cache.add_sequence(7).ok());
  REQUIRE(cache.append(7, 40, x.k.data(), x.v.data(), x.bias.data()).ok());
  const nosa::Status dup = cache.add_sequence(7);
  CHECK(dup.code() == StatusCode::kInvalidArgument);
  CHECK(dup.message().find("7") != std::string::npos);
  CHECK(cache.length(7) == 40);  // the duplicate add did not reset it
  CHECK(cache.remove_sequence(8).code() == StatusCode::kNotFound);
  CHECK(cache.remove_sequence(7).ok());
  CHECK_FALSE(cache.contains(7));
  CHECK(cache.remove_sequence(7).code() == StatusCode::kNotFound);
  REQUIRE(cache.add_sequence(7).ok());
  CHECK(cache.length(7) == 0);
  CHECK(cache.head(7, 0).keys.empty());
  CHECK(cache.head(7, 0).compressed.count() == 0);
  REQUIRE(cache.append(7, 8, x.k.data() + 4 * 8, x.v.data(), x.bias.data() + 8).ok());
  CHECK(cache.head(7, 0).compressed.count() == 1);
  CHECK(cache.head(7, 0).keys[0] == x.k[32]);  // the new tokens, not the old ones
}

TEST_CASE("sequences joining and leaving while others grow (vs a plain model)") {
  Rng rng(8);
  const int Hkv = 2, D = 6, c = 12, s = 5;
  KVCache<double> cache(Hkv, dims_of(16, D, 3), params_of(c, s));
  std::map<SequenceId, Tokens<float>> model;  // everything appended so far, per live sequence
  SequenceId next_id = 1000;
  for (int step = 0; step < 120; ++step) {
    const double r = rng.uniform();
    if ((r < 0.15 || model.empty()) && model.size() < 6) {
      REQUIRE(cache.add_sequence(next_id).ok());
      model.emplace(next_id, Tokens<float>{Hkv, D, {}, {}, {}});
      ++next_id;
    } else if (r < 0.25 && !model.empty()) {
      auto it = model.begin();
      std::advance(it, rng.range(0, static_cast<int>(model.size()) - 1));
      REQUIRE(cache.remove_sequence(it->first).ok());
      model.erase(it);
    }
    for (auto& [id, toks] : model) {  // every live sequence gets a chunk (a prompt or one token)
      const long long n = rng.uniform() < 0.2 ? rng.range(0, 90) : 1;
      const Tokens<float> add = random_tokens(rng, n, Hkv, D);
      REQUIRE(cache.append(id, n, add.k.data(), add.v.data(), add.bias.data()).ok());
      toks.k.insert(toks.k.end(), add.k.begin(), add.k.end());
      toks.v.insert(toks.v.end(), add.v.begin(), add.v.end());
      toks.bias.insert(toks.bias.end(), add.bias.begin(), add.bias.end());
    }
    REQUIRE(cache.num_sequences() == model.size());
    std::vector<SequenceId> ids;
    for (const auto& kv : model) ids.push_back(kv.first);
    REQUIRE(cache.sequence_ids() == ids);
    for (const auto& [id, toks] : model) {
      const long long T = toks.count();
      REQUIRE(cache.length(id) == T);
      for (int h = 0; h < Hkv; ++h) {
        const auto& hs = cache.head(id, h);
        const int nc = nosa::detail::num_compressed(T, c, s);
        REQUIRE(hs.compressed.count() == nc);
        if (T > 0) {
          REQUIRE(hs.keys[(T - 1) * D] == toks.k_at(T - 1)[h * D]);
          REQUIRE(hs.bias[T - 1] == toks.b_at(T - 1)[h]);
        }
        std::vector<double> key;
        double score;
        for (int j = std::max(0, nc - 2); j < nc; ++j) {
          expected_window<double>(toks, h, j, c, s, key, score);
          REQUIRE(same_bits(hs.compressed.keys() + static_cast<size_t>(j) * D, key.data(), D));
          REQUIRE(hs.compressed.scores()[j] == score);
        }
      }
    }
  }
  CHECK(next_id > 1010);  // sequences really came and went
}
