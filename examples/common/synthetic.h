// Synthetic decode traces for nosa's examples and benchmarks (header-only, host-only).
//
// Real locality matters: offloading pays because consecutive decode steps select mostly the same
// blocks. A trace where queries are redrawn every step would make every selector look terrible,
// and one where they never move would make every selector look perfect. This generator follows
// the model of DESIGN.md section 5:
//   - queries drift as an AR(1) process, z <- rho z + sqrt(1 - rho^2) n, per (sequence, layer, KV
//     head, query head), around a fixed per-head "topic" direction (attention that keeps coming
//     back to the same places, as real heads do); an optional drifting part shared by the G query
//     heads of a KV head;
//   - keys and values are random, except a few "query-aligned" prompt blocks per head whose keys
//     lean toward the head's initial mean query direction (what the query-aware stage finds);
//   - the agnostic score b_t is smooth in t (two slow sinusoids plus a little noise): the
//     query-agnostic stage ranks by it and never changes its mind between steps.
// Everything is a pure function of (seed, sequence id, layer, token position): the same tokens
// come out whether a prompt is generated at once, in chunks, or one token per step, on every
// platform (a counter-based generator; no std::*_distribution, whose output is not portable).
//
// Layouts (token-major, what host::KVCache::append takes):
//   keys, values [n][Hkv][D], bias [n][Hkv], queries [Hq][D] with qh = kv_head * G + g.
#pragma once

#include <nosa/types.h>

#include <cmath>
#include <cstdint>
#include <map>
#include <stdexcept>
#include <string>
#include <vector>

namespace nosa_examples {

/// splitmix64: a tiny, portable, counter-friendly generator.
class Rng {
 public:
  explicit Rng(std::uint64_t seed) : state_(seed) {}
  std::uint64_t next() {
    std::uint64_t z = (state_ += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
  }
  /// Uniform in [0, 1).
  double uniform() { return static_cast<double>(next() >> 11) * (1.0 / 9007199254740992.0); }
  /// Standard normal (Box-Muller; one value per call, the simplest portable form).
  double normal() {
    const double u1 = uniform() + 1e-300, u2 = uniform();
    return std::sqrt(-2.0 * std::log(u1)) * std::cos(6.283185307179586 * u2);
  }

 private:
  std::uint64_t state_;
};

/// Mixes several integers into one seed (order matters).
inline std::uint64_t mix_seed(std::uint64_t a, std::uint64_t b, std::uint64_t c = 0, std::uint64_t d = 0) {
  Rng r(a * 0x9E3779B97F4A7C15ull ^ (b + 0x632BE59BD9B4E019ull));
  std::uint64_t h = r.next();
  h ^= Rng(h + c * 0xD1B54A32D192ED03ull).next();
  h ^= Rng(h + d * 0x8CB92BA72F3D8DD7ull + 1).next();
  return h;
}

struct SyntheticConfig {
  int num_layers = 2;
  int num_kv_heads = 2;
  int group_size = 4;
  int head_dim = 64;
  int block_size = 64;
  /// AR(1) coefficient of the query drift per decode step. Measured with the defaults below
  /// (default SelectionParams, G = 4, D = 64, 4K-16K contexts, 24 steps), mean consecutive-step
  /// overlap InfLLM-V2 / NOSA: rho 0.95 -> 0.92 / 0.99, 0.97 -> 0.94 / 0.995, 0.99 -> 0.96 / 0.996
  /// (the authors measured 0.889 / 0.944 on real text: this generator's NOSA churns less, since
  /// its agnostic score is smooth and unrelated to the keys). Lower rho or persistent_fraction
  /// for more churn; with persistent_fraction = 0, rho 0.94 brings InfLLM-V2 to ~0.90-0.91 but leaves
  /// attention so diffuse that sparse outputs differ from dense ones by ~40-70%.
  double rho = 0.95;
  double query_scale = 3.0;       ///< query entries ~ N(0, query_scale^2): sharpness of stage 1
  double shared_fraction = 0.0;   ///< variance share of a drifting component common to the G query heads
  double persistent_fraction = 0.3;  ///< variance share of a fixed per-head "topic" direction (no drift)
  int aligned_blocks = 6;         ///< query-aligned prompt blocks per (sequence, layer, KV head)
  double aligned_strength = 0.6;  ///< how far aligned keys lean toward the initial query direction
  double bias_amplitude = 1.0;    ///< size of the smooth agnostic score
  double bias_noise = 0.1;        ///< per-token jitter of the agnostic score
  std::uint64_t seed = 1;
};

/// Generates prompts, decode tokens and drifting queries for any number of sequences.
class SyntheticTrace {
 public:
  explicit SyntheticTrace(const SyntheticConfig& config) : cfg_(config) {
    if (cfg_.num_layers < 1 || cfg_.num_kv_heads < 1 || cfg_.group_size < 1 || cfg_.head_dim < 1 ||
        cfg_.block_size < 1)
      throw std::invalid_argument("SyntheticConfig: layers, heads, group size, head dim and block size must be >= 1");
    if (!(cfg_.rho >= 0.0 && cfg_.rho <= 1.0)) throw std::invalid_argument("SyntheticConfig::rho must be in [0, 1]");
    if (!(cfg_.shared_fraction >= 0.0 && cfg_.shared_fraction <= 1.0 && cfg_.persistent_fraction >= 0.0 &&
          cfg_.persistent_fraction <= 1.0))
      throw std::invalid_argument("SyntheticConfig: shared_fraction and persistent_fraction must be in [0, 1]");
  }

  const SyntheticConfig& config() const { return cfg_; }
  int num_query_heads() const { return cfg_.num_kv_heads * cfg_.group_size; }

  /// Registers a sequence whose prompt has prompt_length tokens: draws its aligned blocks,
  /// bias phases and the initial query state of every layer and KV head.
  void add_sequence(std::int64_t id, long long prompt_length) {
    Sequence seq;
    seq.prompt_length = prompt_length;
    const int D = cfg_.head_dim, G = cfg_.group_size;
    const long long prompt_blocks = prompt_length / cfg_.block_size;  // complete blocks only
    for (int layer = 0; layer < cfg_.num_layers; ++layer) {
      for (int h = 0; h < cfg_.num_kv_heads; ++h) {
        Rng rng(mix_seed(cfg_.seed, static_cast<std::uint64_t>(id), 1000003u * layer + h, 17));
        Head head;
        head.topic.resize(D);
        head.shared.resize(D);
        head.own.resize(static_cast<size_t>(G) * D);
        for (double& x : head.topic) x = rng.normal();
        for (double& x : head.shared) x = rng.normal();
        for (double& x : head.own) x = rng.normal();
        // Aligned keys lean toward the group's initial mean query, scaled to norm sqrt(D)
        // (entries of size ~1, like the random keys).
        std::vector<double> q0(static_cast<size_t>(G) * D);
        query_of(head, q0.data());
        head.direction.assign(D, 0.0);
        for (int g = 0; g < G; ++g)
          for (int d = 0; d < D; ++d) head.direction[d] += q0[static_cast<size_t>(g) * D + d];
        double norm = 0;
        for (double x : head.direction) norm += x * x;
        norm = std::sqrt(norm) + 1e-300;
        for (double& x : head.direction) x *= std::sqrt(static_cast<double>(D)) / norm;
        for (int i = 0; i < cfg_.aligned_blocks && prompt_blocks > 2; ++i)
          head.aligned.push_back(1 + static_cast<long long>(rng.next() % static_cast<std::uint64_t>(prompt_blocks - 2)));
        for (double& p : head.phase) p = 6.283185307179586 * rng.uniform();
        head.period[0] = 1500.0 + 2500.0 * rng.uniform();
        head.period[1] = 150.0 + 350.0 * rng.uniform();
        seq.heads.push_back(std::move(head));
      }
    }
    sequences_[id] = std::move(seq);
  }

  void remove_sequence(std::int64_t id) { sequences_.erase(id); }
  bool contains(std::int64_t id) const { return sequences_.count(id) != 0; }

  /// Tokens [first, first + n) of one layer of a sequence:
  ///   k, v [n][Hkv][D], bias [n][Hkv]; element type float, double, bfloat16_t or float16_t.
  template <class T, class BiasT>
  void tokens(std::int64_t id, int layer, long long first, long long n, T* k, T* v, BiasT* bias) const {
    const Sequence& seq = at(id);
    const int Hkv = cfg_.num_kv_heads, D = cfg_.head_dim;
    for (long long i = 0; i < n; ++i) {
      const long long t = first + i;
      Rng rng(mix_seed(cfg_.seed, static_cast<std::uint64_t>(id), static_cast<std::uint64_t>(layer),
                       static_cast<std::uint64_t>(t) + 1));
      const long long block = t / cfg_.block_size;
      for (int h = 0; h < Hkv; ++h) {
        const Head& head = seq.heads[static_cast<size_t>(layer) * Hkv + h];
        bool aligned = false;
        if (t < seq.prompt_length)
          for (long long a : head.aligned) aligned = aligned || a == block;
        const size_t row = (static_cast<size_t>(i) * Hkv + h) * D;
        for (int d = 0; d < D; ++d) {
          double x = rng.normal();
          if (aligned) x = std::sqrt(1.0 - cfg_.aligned_strength * cfg_.aligned_strength) * x +
                           cfg_.aligned_strength * head.direction[d];
          k[row + d] = nosa::store_as<T>(x);
        }
        for (int d = 0; d < D; ++d) v[row + d] = nosa::store_as<T>(rng.normal());
        const double two_pi = 6.283185307179586;
        const double b = cfg_.bias_amplitude * (std::sin(two_pi * t / head.period[0] + head.phase[0]) +
                                                0.5 * std::sin(two_pi * t / head.period[1] + head.phase[1])) +
                         cfg_.bias_noise * rng.normal();
        bias[static_cast<size_t>(i) * Hkv + h] = nosa::store_as<BiasT>(b);
      }
    }
  }

  /// One decode step of drift for every layer and KV head of a sequence (call once per step,
  /// before queries()).
  void advance(std::int64_t id) {
    Sequence& seq = at(id);
    const double a = cfg_.rho, b = std::sqrt(1.0 - cfg_.rho * cfg_.rho);
    for (size_t i = 0; i < seq.heads.size(); ++i) {
      Head& head = seq.heads[i];
      Rng rng(mix_seed(cfg_.seed, static_cast<std::uint64_t>(id), 7000000u + i, static_cast<std::uint64_t>(seq.step)));
      for (double& x : head.shared) x = a * x + b * rng.normal();
      for (double& x : head.own) x = a * x + b * rng.normal();
    }
    ++seq.step;
  }

  /// The current queries of one layer of a sequence: q [Hq][D], qh = kv_head * G + g.
  template <class T>
  void queries(std::int64_t id, int layer, T* q) const {
    const Sequence& seq = at(id);
    const int Hkv = cfg_.num_kv_heads, G = cfg_.group_size, D = cfg_.head_dim;
    std::vector<double> qh(static_cast<size_t>(G) * D);
    for (int h = 0; h < Hkv; ++h) {
      query_of(seq.heads[static_cast<size_t>(layer) * Hkv + h], qh.data());
      for (size_t i = 0; i < qh.size(); ++i) q[static_cast<size_t>(h) * G * D + i] = nosa::store_as<T>(qh[i]);
    }
  }

 private:
  struct Head {
    std::vector<double> topic;      // [D] fixed direction (persistent interest of the head)
    std::vector<double> shared;     // [D] AR(1) state shared by the G query heads
    std::vector<double> own;        // [G][D] AR(1) state per query head
    std::vector<double> direction;  // [D] initial mean query direction (aligned keys lean to it)
    std::vector<long long> aligned; // aligned prompt block ids
    double phase[2] = {0, 0};
    double period[2] = {2048, 256};
  };
  struct Sequence {
    long long prompt_length = 0;
    long long step = 0;
    std::vector<Head> heads;  // [layer][kv_head]
  };

  // q [G][D] of one head: scale * (topic, drifting shared and per-query-head parts mixed by variance).
  void query_of(const Head& head, double* q) const {
    const double wp = std::sqrt(cfg_.persistent_fraction);
    const double rest = 1.0 - cfg_.persistent_fraction;
    const double ws = std::sqrt(rest * cfg_.shared_fraction), wo = std::sqrt(rest * (1.0 - cfg_.shared_fraction));
    const int G = cfg_.group_size, D = cfg_.head_dim;
    for (int g = 0; g < G; ++g)
      for (int d = 0; d < D; ++d)
        q[static_cast<size_t>(g) * D + d] =
            cfg_.query_scale * (wp * head.topic[d] + ws * head.shared[d] + wo * head.own[static_cast<size_t>(g) * D + d]);
  }

  const Sequence& at(std::int64_t id) const {
    auto it = sequences_.find(id);
    if (it == sequences_.end()) throw std::out_of_range("SyntheticTrace: unknown sequence " + std::to_string(id));
    return it->second;
  }
  Sequence& at(std::int64_t id) {
    auto it = sequences_.find(id);
    if (it == sequences_.end()) throw std::out_of_range("SyntheticTrace: unknown sequence " + std::to_string(id));
    return it->second;
  }

  SyntheticConfig cfg_;
  std::map<std::int64_t, Sequence> sequences_;
};

/// Fraction of the blocks of `now` that were also in `before` (both ascending, distinct):
/// the per-step locality that decides how much an offloaded cache must transfer.
inline double overlap_fraction(const std::vector<int>& before, const std::vector<int>& now, int* changed = nullptr) {
  size_t i = 0, j = 0, common = 0;
  while (i < before.size() && j < now.size()) {
    if (before[i] == now[j]) {
      ++common;
      ++i;
      ++j;
    } else if (before[i] < now[j]) {
      ++i;
    } else {
      ++j;
    }
  }
  if (changed != nullptr) *changed = static_cast<int>(now.size() - common);
  return now.empty() ? 1.0 : static_cast<double>(common) / static_cast<double>(now.size());
}

}  // namespace nosa_examples
