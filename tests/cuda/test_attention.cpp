// Decode attention on the GPU (nosa/attention.cuh) against the host reference
// (host::attend_blocks / host::merge_partials in double).
//
// Tolerance (documented once, also in docs/notes/attention.md): with S = max |ref o| over the
// call's output (the output scale), every element must satisfy |o - ref| <= rtol * S with
// rtol = 2e-2 for bf16 and 4e-3 for fp16 (the kernel rounds P to the input type for the tensor
// core P.V product and rounds o once), and ||o - ref|| / ||ref|| <= rtol / 2. lse (fp32):
// |lse - ref| <= 1e-3 * max(1, |ref|), and -inf exactly where the reference is -inf.
#include "cuda/attention_launch.h"
#include "cuda/gpu_test_util.h"

#include <doctest/doctest.h>
#include <nosa/host/attention.h>
#include <nosa/types.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <limits>
#include <numeric>
#include <random>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

using nosa::bfloat16_t;
using nosa::Dims;
using nosa::ElementType;
using nosa::float16_t;
using nosa::HeadLayout;

namespace {

/// Device buffer that can be reassigned (grown) in place.
template <class T>
struct DeviceArray {
  T* ptr = nullptr;
  size_t count = 0;
  DeviceArray() = default;
  explicit DeviceArray(size_t n) : count(n) { if (n) NOSA_CUDA_CHECK(cudaMalloc(&ptr, n * sizeof(T))); }
  DeviceArray(const DeviceArray&) = delete;
  DeviceArray(DeviceArray&& o) noexcept { *this = std::move(o); }
  DeviceArray& operator=(DeviceArray&& o) noexcept {
    std::swap(ptr, o.ptr);
    std::swap(count, o.count);
    return *this;
  }
  ~DeviceArray() { if (ptr) cudaFree(ptr); }
  size_t bytes() const { return count * sizeof(T); }
};

constexpr double kInf = std::numeric_limits<double>::infinity();

enum class BiasMode { kNone, kNormal, kLarge, kSomeNegInf, kAllNegInf, kZeroOrNegInf };

const char* bias_name(BiasMode m) {
  switch (m) {
    case BiasMode::kNone: return "none";
    case BiasMode::kNormal: return "normal";
    case BiasMode::kLarge: return "large(+-30)";
    case BiasMode::kSomeNegInf: return "some -inf";
    case BiasMode::kAllNegInf: return "all -inf";
    case BiasMode::kZeroOrNegInf: return "0 or -inf";
  }
  return "?";
}

std::uint16_t to_bits(double v, ElementType t) {
  return t == ElementType::kBFloat16 ? nosa::to_bfloat16(static_cast<float>(v)).bits
                                     : nosa::to_float16(static_cast<float>(v)).bits;
}
double from_bits(std::uint16_t b, ElementType t) {
  return t == ElementType::kBFloat16 ? nosa::to_float(bfloat16_t{b}) : nosa::to_float(float16_t{b});
}

/// One attention problem: logical per-(sequence, head) K/V/bias, a selection, and the slot cache.
struct Problem {
  Dims dims;
  ElementType type = ElementType::kBFloat16;
  int batch = 0, hkv = 0, max_blocks = 0;
  bool dense = false;
  bool identity_table = false;  // dense with slot_ids = nullptr (contiguous cache)
  BiasMode bias = BiasMode::kNone;
  std::vector<int> lens;
  // logical data: [b][h] -> [T][D] bits, bias [T]
  std::vector<std::vector<std::uint16_t>> k, v;
  std::vector<std::vector<float>> bias_v;
  std::vector<std::uint16_t> q;  // [batch][Hq][D]
  std::vector<std::vector<int>> sel;  // [b*hkv + h] ascending block ids
  // GPU-side tables and caches (host copies)
  std::vector<std::int32_t> block_ids, slot_ids, counts, seq_lens, seq_slots;
  long long num_slots = 0;
  std::vector<std::uint16_t> kc, vc;
  std::vector<float> bc;

  int G() const { return dims.group_size; }
  int D() const { return dims.head_dim; }
  int B() const { return dims.block_size; }
  int Hq() const { return hkv * G(); }
};

/// Builds logical data, a selection of `budget` blocks per (b, h) (or all, for dense) and a
/// shuffled slot cache holding them.
Problem make_problem(const Dims& dims, ElementType type, const std::vector<int>& lens, int hkv, int budget,
                     BiasMode bias, bool dense, bool identity_table, std::uint64_t seed, double q_scale = 1.0) {
  Problem p;
  p.dims = dims;
  p.type = type;
  p.batch = static_cast<int>(lens.size());
  p.hkv = hkv;
  p.dense = dense;
  p.identity_table = identity_table;
  p.bias = bias;
  p.lens = lens;
  const int B = dims.block_size, D = dims.head_dim;
  std::mt19937_64 rng(seed);
  std::normal_distribution<double> nd(0.0, 1.0);
  std::uniform_real_distribution<double> ud(-1.0, 1.0);
  int max_nb = 1;
  for (int T : lens) max_nb = std::max(max_nb, (T + B - 1) / B);
  p.max_blocks = dense ? max_nb : std::max(1, std::min(budget, max_nb)) + 1;  // +1: unused tail entry
  p.q.resize(static_cast<size_t>(p.batch) * p.Hq() * D);
  for (auto& x : p.q) x = to_bits(nd(rng) * q_scale, type);
  p.k.resize(p.batch * hkv);
  p.v.resize(p.batch * hkv);
  p.bias_v.resize(p.batch * hkv);
  p.sel.resize(p.batch * hkv);
  for (int b = 0; b < p.batch; ++b) {
    const int T = lens[b], nb = (T + B - 1) / B;
    for (int h = 0; h < hkv; ++h) {
      const int i = b * hkv + h;
      p.k[i].resize(static_cast<size_t>(T) * D);
      p.v[i].resize(static_cast<size_t>(T) * D);
      for (auto& x : p.k[i]) x = to_bits(nd(rng), type);
      for (auto& x : p.v[i]) x = to_bits(q_scale == 0 ? static_cast<double>(static_cast<int>(rng() % 9) - 4) : ud(rng), type);
      p.bias_v[i].resize(T);
      for (int t = 0; t < T; ++t) {
        float bv = 0.f;
        switch (bias) {
          case BiasMode::kNone: bv = 0.f; break;
          case BiasMode::kNormal: bv = static_cast<float>(nd(rng)); break;
          case BiasMode::kLarge: bv = (rng() & 1) ? 30.f : -30.f; break;
          case BiasMode::kSomeNegInf:
            bv = (rng() % 3 == 0) ? -std::numeric_limits<float>::infinity() : static_cast<float>(nd(rng));
            break;
          case BiasMode::kAllNegInf: bv = -std::numeric_limits<float>::infinity(); break;
          case BiasMode::kZeroOrNegInf: bv = (rng() % 4 == 0) ? -std::numeric_limits<float>::infinity() : 0.f; break;
        }
        p.bias_v[i][t] = bv;
      }
      std::vector<int> blocks(nb);
      std::iota(blocks.begin(), blocks.end(), 0);
      if (!dense && budget < nb) {
        // always keep the current (partial) block, then a random subset
        std::shuffle(blocks.begin(), blocks.end() - 1, rng);
        blocks.resize(budget - 1);
        blocks.push_back(nb - 1);
        std::sort(blocks.begin(), blocks.end());
      }
      p.sel[i] = blocks;
    }
  }
  // Tables and slot cache.
  const size_t rows = static_cast<size_t>(p.batch) * hkv;
  p.block_ids.assign(rows * p.max_blocks, -12345);  // entries past count are garbage on purpose
  p.slot_ids.assign(rows * p.max_blocks, -54321);
  p.counts.assign(rows, 0);
  p.seq_lens.assign(lens.begin(), lens.end());
  p.seq_slots.resize(p.batch);
  for (int b = 0; b < p.batch; ++b) p.seq_slots[b] = p.batch - 1 - b;  // not the identity
  const bool hnd = dims.layout == HeadLayout::kHND;
  // Assign slot numbers: HND one per (b, h, selected block); NHD one page per (b, block) used by
  // any head. Shuffled, with a few unused slots in between.
  std::vector<std::vector<long long>> slot_of(rows);  // [b*hkv+h][block] -> slot
  std::vector<std::tuple<int, int, int>> owners;      // (b, h or -1, block)
  for (int b = 0; b < p.batch; ++b) {
    const int nb = (lens[b] + B - 1) / B;
    for (int h = 0; h < hkv; ++h) slot_of[b * hkv + h].assign(nb, -1);
    if (hnd) {
      for (int h = 0; h < hkv; ++h)
        for (int m : p.sel[b * hkv + h]) owners.emplace_back(b, h, m);
    } else {
      std::vector<char> used(nb, 0);
      for (int h = 0; h < hkv; ++h)
        for (int m : p.sel[b * hkv + h]) used[m] = 1;
      for (int m = 0; m < nb; ++m)
        if (used[m]) owners.emplace_back(b, -1, m);
    }
  }
  if (identity_table) {
    // contiguous cache: HND slot = (seq*Hkv + h)*max_blocks + i, NHD page = seq*max_blocks + i
    p.num_slots = hnd ? static_cast<long long>(p.batch) * hkv * p.max_blocks : static_cast<long long>(p.batch) * p.max_blocks;
    for (auto& [b, h, m] : owners) {
      const long long seq = p.seq_slots[b];
      if (hnd) slot_of[b * hkv + h][m] = (seq * hkv + h) * p.max_blocks + m;
      else
        for (int hh = 0; hh < hkv; ++hh) slot_of[b * hkv + hh][m] = seq * p.max_blocks + m;
    }
  } else {
    p.num_slots = static_cast<long long>(owners.size()) + 3;
    std::vector<long long> perm(p.num_slots);
    std::iota(perm.begin(), perm.end(), 0);
    std::shuffle(perm.begin(), perm.end(), rng);
    for (size_t o = 0; o < owners.size(); ++o) {
      auto [b, h, m] = owners[o];
      if (hnd) slot_of[b * hkv + h][m] = perm[o];
      else
        for (int hh = 0; hh < hkv; ++hh) slot_of[b * hkv + hh][m] = perm[o];
    }
  }
  const size_t per_slot = hnd ? static_cast<size_t>(B) * D : static_cast<size_t>(B) * hkv * D;
  const size_t bias_per_slot = hnd ? static_cast<size_t>(B) : static_cast<size_t>(B) * hkv;
  // Unused cache content is a large finite value: it must never be read.
  p.kc.assign(p.num_slots * per_slot, to_bits(1000.0, type));
  p.vc.assign(p.num_slots * per_slot, to_bits(1000.0, type));
  p.bc.assign(p.num_slots * bias_per_slot, 1000.f);
  for (int b = 0; b < p.batch; ++b) {
    const int T = lens[b];
    for (int h = 0; h < hkv; ++h) {
      const int i = b * hkv + h;
      const auto& s = p.sel[i];
      p.counts[i] = dense ? 0 : static_cast<int>(s.size());
      for (size_t e = 0; e < s.size(); ++e) {
        const int m = s[e];
        const long long slot = slot_of[i][m];
        if (!dense) p.block_ids[i * p.max_blocks + e] = m;
        p.slot_ids[i * p.max_blocks + (dense ? m : static_cast<int>(e))] = static_cast<std::int32_t>(slot);
        for (int tib = 0; tib < B; ++tib) {
          const long long t = static_cast<long long>(m) * B + tib;
          if (t >= T) break;
          const size_t dst = hnd ? (static_cast<size_t>(slot) * B + tib) * D
                                 : ((static_cast<size_t>(slot) * B + tib) * hkv + h) * D;
          std::memcpy(&p.kc[dst], &p.k[i][t * D], D * 2);
          std::memcpy(&p.vc[dst], &p.v[i][t * D], D * 2);
          const size_t bdst = hnd ? static_cast<size_t>(slot) * B + tib : (static_cast<size_t>(slot) * B + tib) * hkv + h;
          p.bc[bdst] = p.bias_v[i][t];
        }
      }
    }
  }
  return p;
}

struct Reference {
  std::vector<double> o;    // [batch][Hq][D]
  std::vector<double> lse;  // [batch][Hq]
};

/// host::attend_blocks in double over the selection (or a subset of its entries).
Reference reference(const Problem& p, const std::vector<std::vector<int>>* override_sel = nullptr) {
  const int G = p.G(), D = p.D();
  Reference r;
  r.o.assign(static_cast<size_t>(p.batch) * p.Hq() * D, 0.0);
  r.lse.assign(static_cast<size_t>(p.batch) * p.Hq(), -kInf);
  for (int b = 0; b < p.batch; ++b)
    for (int h = 0; h < p.hkv; ++h) {
      const int i = b * p.hkv + h;
      std::vector<double> qd(static_cast<size_t>(G) * D), kd, vd;
      const size_t row0 = (static_cast<size_t>(b) * p.Hq() + static_cast<size_t>(h) * G);
      for (size_t j = 0; j < qd.size(); ++j) qd[j] = from_bits(p.q[row0 * D + j], p.type);
      kd.resize(p.k[i].size());
      vd.resize(p.v[i].size());
      for (size_t j = 0; j < kd.size(); ++j) kd[j] = from_bits(p.k[i][j], p.type);
      for (size_t j = 0; j < vd.size(); ++j) vd[j] = from_bits(p.v[i][j], p.type);
      const auto& blocks = override_sel ? (*override_sel)[i] : p.sel[i];
      nosa::host::attend_blocks<double>(qd.data(), G, D, kd.data(), D, vd.data(), D,
                                        p.bias == BiasMode::kNone ? static_cast<const float*>(nullptr) : p.bias_v[i].data(),
                                        1, p.lens[b], p.dims.block_size, blocks, r.o.data() + row0 * D,
                                        r.lse.data() + row0);
    }
  return r;
}

struct GpuProblem {
  DeviceArray<std::uint16_t> q, o, kc, vc;
  DeviceArray<float> lse, bc;
  DeviceArray<std::int32_t> block_ids, slot_ids, counts, seq_lens, seq_slots;
  DeviceArray<unsigned char> ws;
};

template <class T>
void upload(DeviceArray<T>& d, const std::vector<T>& h) {
  d = DeviceArray<T>(std::max<size_t>(h.size(), 1));
  if (!h.empty()) NOSA_CUDA_CHECK(cudaMemcpy(d.ptr, h.data(), h.size() * sizeof(T), cudaMemcpyHostToDevice));
}

nosa::DecodeAttentionArgs<void> make_args(const Problem& p, GpuProblem& g, int num_splits) {
  nosa::DecodeAttentionArgs<void> a;
  a.batch = p.batch;
  a.num_kv_heads = p.hkv;
  a.max_blocks = p.max_blocks;
  a.num_slots = p.num_slots;
  a.q = g.q.ptr;
  a.o = g.o.ptr;
  a.lse = g.lse.ptr;
  a.k_cache = g.kc.ptr;
  a.v_cache = g.vc.ptr;
  a.bias_cache = p.bias == BiasMode::kNone ? nullptr : g.bc.ptr;
  a.block_ids = p.dense ? nullptr : g.block_ids.ptr;
  a.slot_ids = p.identity_table ? nullptr : g.slot_ids.ptr;
  a.counts = p.dense ? nullptr : g.counts.ptr;
  a.seq_lens = g.seq_lens.ptr;
  a.seq_slots = g.seq_slots.ptr;
  a.mode = p.dense ? nosa::AttentionMode::kDense : nosa::AttentionMode::kSparse;
  a.num_splits = num_splits;
  return a;
}

struct GpuResult {
  std::vector<std::uint16_t> o;
  std::vector<float> lse;
  int splits = 0;
};

GpuProblem upload_problem(const Problem& p) {
  GpuProblem g;
  upload(g.q, p.q);
  upload(g.kc, p.kc);
  upload(g.vc, p.vc);
  upload(g.bc, p.bc);
  upload(g.block_ids, p.block_ids);
  upload(g.slot_ids, p.slot_ids);
  upload(g.counts, p.counts);
  upload(g.seq_lens, p.seq_lens);
  upload(g.seq_slots, p.seq_slots);
  g.o = DeviceArray<std::uint16_t>(p.q.size());
  g.lse = DeviceArray<float>(static_cast<size_t>(p.batch) * p.Hq());
  return g;
}

GpuResult run_gpu(const Problem& p, GpuProblem& g, int num_splits) {
  // Poison the outputs (NaN bit patterns) so an unwritten element fails the checks.
  NOSA_CUDA_CHECK(cudaMemset(g.o.ptr, 0xFF, g.o.bytes()));
  NOSA_CUDA_CHECK(cudaMemset(g.lse.ptr, 0xFF, g.lse.bytes()));
  auto args = make_args(p, g, num_splits);
  nosa::AttentionPlan plan;
  nosa::Status st = nosa_test::attention_plan(p.dims, p.type, args, &plan);
  REQUIRE_MESSAGE(st.ok(), st.to_string());
  if (g.ws.bytes() < plan.workspace_bytes) g.ws = DeviceArray<unsigned char>(plan.workspace_bytes);
  cudaStream_t stream;
  NOSA_CUDA_CHECK(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
  st = nosa_test::attention_run(p.dims, p.type, args, g.ws.ptr, g.ws.bytes(), stream);
  REQUIRE_MESSAGE(st.ok(), st.to_string());
  NOSA_CUDA_CHECK(cudaStreamSynchronize(stream));
  NOSA_CUDA_CHECK(cudaGetLastError());
  NOSA_CUDA_CHECK(cudaStreamDestroy(stream));
  GpuResult r;
  r.splits = plan.num_splits;
  r.o.resize(p.q.size());
  r.lse.resize(static_cast<size_t>(p.batch) * p.Hq());
  NOSA_CUDA_CHECK(cudaMemcpy(r.o.data(), g.o.ptr, r.o.size() * 2, cudaMemcpyDeviceToHost));
  NOSA_CUDA_CHECK(cudaMemcpy(r.lse.data(), g.lse.ptr, r.lse.size() * 4, cudaMemcpyDeviceToHost));
  return r;
}

/// Worst achieved errors over all compare() calls, per element type (reported at the end).
double g_worst_max[2] = {0, 0}, g_worst_l2[2] = {0, 0};

double rtol_of(ElementType t) { return t == ElementType::kBFloat16 ? 2e-2 : 4e-3; }

/// Compares against the reference; prints the first mismatches with their indices.
bool compare(const Problem& p, const GpuResult& r, const Reference& ref, const std::string& what) {
  const int D = p.D();
  double scale = 0, num = 0, den = 0;
  for (double x : ref.o) scale = std::max(scale, std::abs(x));
  const double tol = rtol_of(p.type) * std::max(scale, 1e-30);
  int bad = 0;
  for (size_t i = 0; i < r.o.size(); ++i) {
    const double got = from_bits(r.o[i], p.type), want = ref.o[i];
    const double err = std::abs(got - want);
    num += err * err;
    den += want * want;
    if (!std::isfinite(got) || err > tol || (scale == 0 && got != 0)) {
      if (bad < 8) {
        const size_t row = i / D;
        std::printf("  [%s] o mismatch at batch %zu qhead %zu d %zu: got %.6g want %.6g (tol %.3g)\n", what.c_str(),
                    row / p.Hq(), row % p.Hq(), i % D, got, want, tol);
      }
      ++bad;
    }
  }
  for (size_t i = 0; i < r.lse.size(); ++i) {
    const double got = r.lse[i], want = ref.lse[i];
    bool ok;
    if (want == -kInf) ok = got == -kInf;
    else ok = std::isfinite(got) && std::abs(got - want) <= 1e-3 * std::max(1.0, std::abs(want));
    if (!ok) {
      if (bad < 8)
        std::printf("  [%s] lse mismatch at batch %zu qhead %zu: got %.8g want %.8g\n", what.c_str(), i / p.Hq(),
                    i % p.Hq(), got, want);
      ++bad;
    }
  }
  const double rel = den > 0 ? std::sqrt(num / den) : std::sqrt(num);
  {
    double worst = 0;
    for (size_t i = 0; i < r.o.size(); ++i)
      if (scale > 0) worst = std::max(worst, std::abs(from_bits(r.o[i], p.type) - ref.o[i]) / scale);
    const int ti = p.type == ElementType::kBFloat16 ? 0 : 1;
    g_worst_max[ti] = std::max(g_worst_max[ti], worst);
    g_worst_l2[ti] = std::max(g_worst_l2[ti], rel);
  }
  if (rel > rtol_of(p.type) / 2) {
    std::printf("  [%s] relative L2 error %.3g > %.3g\n", what.c_str(), rel, rtol_of(p.type) / 2);
    ++bad;
  }
  if (bad) std::printf("  [%s] %d mismatches\n", what.c_str(), bad);
  return bad == 0;
}

std::string describe(const Dims& d, ElementType t) {
  return "B=" + std::to_string(d.block_size) + " D=" + std::to_string(d.head_dim) + " G=" + std::to_string(d.group_size) +
         " " + nosa::to_string(d.layout) + " " + nosa::to_string(t);
}

}  // namespace

TEST_CASE("decode attention matches the host reference on every compiled instance") {
  NOSA_REQUIRE_GPU();
  const auto instances = nosa_test::attention_instances();
  std::uint64_t seed = 1;
  for (const auto& inst : instances) {
    const Dims& d = inst.dims;
    const int B = d.block_size;
    struct Scenario {
      std::vector<int> lens;
      int hkv, budget;
      BiasMode bias;
      int splits;
      double q_scale;
    };
    // ragged lengths: 1 token, partial blocks, exact blocks, budgets above the block count
    std::vector<Scenario> scenarios = {
        {{1, B - 1, B, B + 1, 3 * B + 5}, 2, 64, BiasMode::kNormal, 0, 1.0},
        {{40 * B + 7, 9 * B, 1}, 2, 8, BiasMode::kLarge, 0, 1.0},
        {{17 * B + 3, 5}, 1, 6, BiasMode::kSomeNegInf, 3, 3.0},
        {{2 * B + 1, 130 * B}, 3, 70, BiasMode::kNone, 0, 0.5},
    };
    if (!nosa_test::attention_full_matrix() || (d.group_size == 16 && d.block_size == 64)) {
      scenarios.push_back({{300 * B + 11}, 1, 64, BiasMode::kNormal, 1, 1.0});
    }
    for (const auto& sc : scenarios) {
      Problem p = make_problem(d, inst.type, sc.lens, sc.hkv, sc.budget, sc.bias, false, false, seed++, sc.q_scale);
      GpuProblem g = upload_problem(p);
      GpuResult r = run_gpu(p, g, sc.splits);
      const Reference ref = reference(p);
      const std::string what = describe(d, inst.type) + " bias=" + bias_name(sc.bias) + " budget=" +
                               std::to_string(sc.budget) + " splits=" + std::to_string(r.splits);
      CHECK_MESSAGE(compare(p, r, ref, what), what);
    }
  }
}

TEST_CASE("dense path: contiguous (identity table) and paged caches match the host reference") {
  NOSA_REQUIRE_GPU();
  std::uint64_t seed = 100;
  for (const auto& inst : nosa_test::attention_instances()) {
    const Dims& d = inst.dims;
    if (nosa_test::attention_full_matrix() && d.group_size != 16 && d.group_size != 3) continue;
    const int B = d.block_size;
    for (bool identity : {true, false}) {
      for (BiasMode bias : {BiasMode::kNone, BiasMode::kNormal}) {
        Problem p = make_problem(d, inst.type, {5, 33 * B + 2, 70 * B}, 2, 0, bias, true, identity, seed++);
        GpuProblem g = upload_problem(p);
        GpuResult r = run_gpu(p, g, 0);
        const Reference ref = reference(p);
        const std::string what = describe(d, inst.type) + (identity ? " dense contiguous" : " dense paged") +
                                 " bias=" + bias_name(bias) + " splits=" + std::to_string(r.splits);
        CHECK_MESSAGE(compare(p, r, ref, what), what);
      }
    }
  }
}

TEST_CASE("split-KV result equals the unsplit result") {
  NOSA_REQUIRE_GPU();
  std::uint64_t seed = 200;
  for (const auto& inst : nosa_test::attention_instances()) {
    const Dims& d = inst.dims;
    if (nosa_test::attention_full_matrix() && d.group_size != 16 && d.group_size != 20) continue;
    Problem p = make_problem(d, inst.type, {64 * d.block_size + 9, 3 * d.block_size}, 2, 48, BiasMode::kNormal, false,
                             false, seed++);
    GpuProblem g = upload_problem(p);
    GpuResult one = run_gpu(p, g, 1);
    CHECK(one.splits == 1);
    for (int splits : {2, 5, 16}) {
      GpuResult many = run_gpu(p, g, splits);
      CHECK(many.splits == splits);
      int bad = 0;
      double scale = 0;
      for (auto b : one.o) scale = std::max(scale, std::abs(from_bits(b, p.type)));
      for (size_t i = 0; i < one.o.size(); ++i) {
        const double a = from_bits(one.o[i], p.type), b = from_bits(many.o[i], p.type);
        // both are fp32 sums rounded once: at most a rounding step of the element type apart
        // Both are fp32 sums, but each split rounds P (relative to its own running max) to
        // the element type for the tensor-core P.V product, so they differ by P-rounding
        // noise: a fraction of the reference tolerance.
        if (!(std::abs(a - b) <= 1e-2 * std::abs(a) + rtol_of(p.type) / 4 * scale)) {
          if (bad++ < 5) std::printf("  split %d differs at %zu: %.6g vs %.6g\n", splits, i, a, b);
        }
      }
      for (size_t i = 0; i < one.lse.size(); ++i) {
        if (!(std::abs(one.lse[i] - many.lse[i]) <= 1e-5 * std::max(1.f, std::abs(one.lse[i])))) {
          if (bad++ < 5) std::printf("  split %d lse differs at %zu: %.8g vs %.8g\n", splits, i, one.lse[i], many.lse[i]);
        }
      }
      CHECK_MESSAGE(bad == 0, (describe(d, inst.type) + " splits=" + std::to_string(splits)));
    }
  }
}

TEST_CASE("lse merge of two disjoint halves equals attention over the union") {
  NOSA_REQUIRE_GPU();
  std::uint64_t seed = 300;
  for (const auto& inst : nosa_test::attention_instances()) {
    const Dims& d = inst.dims;
    if (nosa_test::attention_full_matrix() && d.group_size != 16) continue;
    for (BiasMode bias : {BiasMode::kNormal, BiasMode::kSomeNegInf}) {
      Problem full = make_problem(d, inst.type, {20 * d.block_size + 3, 7 * d.block_size, 1}, 2, 12, bias, false, false,
                                  seed++);
      // Half A: even entries of each selection, half B: odd entries (same cache, sub-tables).
      Problem pa = full, pb = full;
      std::vector<std::vector<int>> sel_a(full.sel.size()), sel_b(full.sel.size());
      for (size_t i = 0; i < full.sel.size(); ++i) {
        std::vector<std::int32_t> slots_a, slots_b;
        for (size_t e = 0; e < full.sel[i].size(); ++e) {
          const std::int32_t slot = full.slot_ids[i * full.max_blocks + e];
          (e % 2 == 0 ? sel_a[i] : sel_b[i]).push_back(full.sel[i][e]);
          (e % 2 == 0 ? slots_a : slots_b).push_back(slot);
        }
        for (auto* pr : {&pa, &pb}) {
          const auto& s = pr == &pa ? sel_a[i] : sel_b[i];
          const auto& sl = pr == &pa ? slots_a : slots_b;
          pr->counts[i] = static_cast<int>(s.size());
          for (size_t e = 0; e < s.size(); ++e) {
            pr->block_ids[i * full.max_blocks + e] = s[e];
            pr->slot_ids[i * full.max_blocks + e] = sl[e];
          }
          pr->sel[i] = s;
        }
      }
      GpuProblem ga = upload_problem(pa), gb = upload_problem(pb), gf = upload_problem(full);
      GpuResult ra = run_gpu(pa, ga, 0), rb = run_gpu(pb, gb, 0), rf = run_gpu(full, gf, 0);
      CHECK(compare(pa, ra, reference(pa), "half A"));
      CHECK(compare(pb, rb, reference(pb), "half B"));
      // merge on the GPU, in place into half A's buffers (o_out aliases o_a)
      cudaStream_t stream;
      NOSA_CUDA_CHECK(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
      const int rows = full.batch * full.Hq();
      nosa::Status st = nosa_test::attention_merge(full.type, rows, full.D(), ga.o.ptr, ga.lse.ptr, gb.o.ptr, gb.lse.ptr,
                                                   ga.o.ptr, ga.lse.ptr, stream);
      REQUIRE_MESSAGE(st.ok(), st.to_string());
      NOSA_CUDA_CHECK(cudaStreamSynchronize(stream));
      NOSA_CUDA_CHECK(cudaStreamDestroy(stream));
      GpuResult merged;
      merged.o.resize(full.q.size());
      merged.lse.resize(rows);
      NOSA_CUDA_CHECK(cudaMemcpy(merged.o.data(), ga.o.ptr, merged.o.size() * 2, cudaMemcpyDeviceToHost));
      NOSA_CUDA_CHECK(cudaMemcpy(merged.lse.data(), ga.lse.ptr, merged.lse.size() * 4, cudaMemcpyDeviceToHost));
      const std::string what = describe(d, inst.type) + " merge bias=" + bias_name(bias);
      CHECK_MESSAGE(compare(full, merged, reference(full), what + " vs reference(union)"), what);
      CHECK_MESSAGE(compare(full, rf, reference(full), what + " union"), what);
      // host::merge_partials of the GPU halves (double) must agree with the GPU merge
      std::vector<double> oa(ra.o.size()), ob(rb.o.size()), om(ra.o.size()), la(rows), lb(rows), lm(rows);
      for (size_t i = 0; i < oa.size(); ++i) {
        oa[i] = from_bits(ra.o[i], full.type);
        ob[i] = from_bits(rb.o[i], full.type);
      }
      for (int i = 0; i < rows; ++i) {
        la[i] = ra.lse[i];
        lb[i] = rb.lse[i];
      }
      nosa::host::merge_partials<double>(rows, full.D(), oa.data(), la.data(), ob.data(), lb.data(), om.data(), lm.data());
      Reference host_merge{om, lm};
      CHECK_MESSAGE(compare(full, merged, host_merge, what + " vs host::merge_partials"), what);
    }
  }
}

TEST_CASE("-inf bias on every token gives o = 0 and lse = -inf, never NaN") {
  NOSA_REQUIRE_GPU();
  const auto inst = nosa_test::attention_instances().front();
  for (int splits : {1, 4}) {
    Problem p = make_problem(inst.dims, inst.type, {10 * inst.dims.block_size + 1, 1}, 2, 5, BiasMode::kAllNegInf, false,
                             false, 400 + splits);
    GpuProblem g = upload_problem(p);
    GpuResult r = run_gpu(p, g, splits);
    for (auto b : r.o) REQUIRE(from_bits(b, p.type) == 0.0);
    for (float l : r.lse) REQUIRE(l == -std::numeric_limits<float>::infinity());
    CHECK(compare(p, r, reference(p), "all -inf"));
  }
}

TEST_CASE("a 128K-token sequence (sparse budget 64 and dense) matches the host reference") {
  NOSA_REQUIRE_GPU();
  // One representative instance (G = 16 if compiled in).
  auto instances = nosa_test::attention_instances();
  auto it = std::find_if(instances.begin(), instances.end(), [](const auto& i) {
    return i.dims.group_size == 16 && i.dims.block_size == 64 && i.type == ElementType::kBFloat16;
  });
  const auto inst = it != instances.end() ? *it : instances.front();
  const int T = 131072;
  for (bool dense : {false, true}) {
    Problem p = make_problem(inst.dims, inst.type, {T}, 1, 64, BiasMode::kNormal, dense, false, 500 + dense);
    GpuProblem g = upload_problem(p);
    GpuResult r = run_gpu(p, g, 0);
    const std::string what = describe(inst.dims, inst.type) + (dense ? " 128K dense" : " 128K sparse") +
                             " splits=" + std::to_string(r.splits);
    CHECK_MESSAGE(compare(p, r, reference(p), what), what);
  }
}

TEST_CASE("invalid and unsupported arguments are refused before any launch") {
  NOSA_REQUIRE_GPU();
  const auto inst = nosa_test::attention_instances().front();
  Problem p = make_problem(inst.dims, inst.type, {100, 7}, 2, 4, BiasMode::kNormal, false, false, 600);
  GpuProblem g = upload_problem(p);
  NOSA_CUDA_CHECK(cudaMemset(g.o.ptr, 0x7F, g.o.bytes()));
  auto base = make_args(p, g, 0);
  auto expect = [&](nosa::DecodeAttentionArgs<void> a, const Dims& dims, nosa::StatusCode code, const char* needle,
                    void* ws = nullptr, size_t ws_bytes = 0) {
    nosa::Status st = nosa_test::attention_run(dims, p.type, a, ws, ws_bytes, cudaStreamPerThread);
    CHECK_MESSAGE(st.code() == code, st.to_string());
    CHECK_MESSAGE(st.message().find(needle) != std::string::npos, (st.to_string() + " (expected to mention '" + needle + "')"));
  };
  Dims bad_d = inst.dims;
  bad_d.head_dim = 96;
  expect(base, bad_d, nosa::StatusCode::kNotSupported, "compiled in");
  Dims bad_g = inst.dims;
  bad_g.group_size = 33;
  expect(base, bad_g, nosa::StatusCode::kNotSupported, "G=33");
  {
    auto a = base;
    a.q = nullptr;
    expect(a, inst.dims, nosa::StatusCode::kInvalidArgument, "q is null");
  }
  {
    auto a = base;
    a.k_cache = static_cast<const char*>(a.k_cache) + 2;
    expect(a, inst.dims, nosa::StatusCode::kMisaligned, "k_cache");
  }
  {
    auto a = base;
    a.block_ids = nullptr;
    expect(a, inst.dims, nosa::StatusCode::kInvalidArgument, "block_ids");
  }
  {
    auto a = base;
    a.num_splits = 1000;
    expect(a, inst.dims, nosa::StatusCode::kInvalidArgument, "num_splits");
  }
  {
    auto a = base;
    a.num_kv_heads = 0;
    expect(a, inst.dims, nosa::StatusCode::kInvalidArgument, "num_kv_heads");
  }
  {
    auto a = base;
    a.num_splits = 4;  // needs a workspace
    expect(a, inst.dims, nosa::StatusCode::kInvalidArgument, "workspace");
  }
  // nothing was written by the refused calls
  NOSA_CUDA_CHECK(cudaDeviceSynchronize());
  std::vector<std::uint16_t> o(p.q.size());
  NOSA_CUDA_CHECK(cudaMemcpy(o.data(), g.o.ptr, o.size() * 2, cudaMemcpyDeviceToHost));
  for (auto b : o) REQUIRE(b == 0x7F7F);
  // merge: unsupported head dim
  nosa::Status st = nosa_test::attention_merge(p.type, 4, 80, g.o.ptr, g.lse.ptr, g.o.ptr, g.lse.ptr, g.o.ptr,
                                               g.lse.ptr, cudaStreamPerThread);
  CHECK(st.code() == nosa::StatusCode::kNotSupported);
}

TEST_CASE("exact uniform attention: every valid token counted once (q = 0, integer V, bias 0 or -inf)") {
  NOSA_REQUIRE_GPU();
  // With q = 0 every logit is its bias (0 or -inf), so P is exactly 1 or 0, sum(P v) is an exact
  // integer sum in fp32 and lse = log(n): a token dropped or read twice moves lse by ~1/n,
  // far above the 1e-5 checked here.
  std::uint64_t seed = 700;
  for (const auto& inst : nosa_test::attention_instances()) {
    const Dims& d = inst.dims;
    if (nosa_test::attention_full_matrix() && d.group_size != 16 && d.group_size != 1) continue;
    for (bool dense : {false, true}) {
      for (int splits : {1, 0, 7}) {
        Problem p = make_problem(d, inst.type, {1, d.block_size + 3, 37 * d.block_size + 5}, 2, 20,
                                 BiasMode::kZeroOrNegInf, dense, false, seed++, 0.0);
        GpuProblem g = upload_problem(p);
        GpuResult r = run_gpu(p, g, splits);
        const Reference ref = reference(p);
        int bad = 0;
        for (size_t i = 0; i < r.o.size(); ++i) {
          const double got = from_bits(r.o[i], p.type), want = ref.o[i];
          const double ulp = std::max(1e-5, std::ldexp(1.0, std::ilogb(std::max(std::abs(want), 1e-30)) - (p.type == ElementType::kBFloat16 ? 7 : 10)));
          if (!(std::abs(got - want) <= ulp)) {
            if (bad++ < 5) std::printf("  exact o at %zu: got %.8g want %.8g\n", i, got, want);
          }
        }
        for (size_t i = 0; i < r.lse.size(); ++i) {
          const double got = r.lse[i], want = ref.lse[i];
          const bool ok = want == -kInf ? got == -kInf : std::abs(got - want) <= 1e-5 * std::max(1.0, std::abs(want));
          if (!ok && bad++ < 5) std::printf("  exact lse at %zu: got %.8g want %.8g\n", i, got, want);
        }
        CHECK_MESSAGE(bad == 0, (describe(d, inst.type) + (dense ? " dense" : " sparse") + " splits=" +
                                 std::to_string(r.splits)));
      }
    }
  }
}

TEST_CASE("achieved error (report)") {
  NOSA_REQUIRE_GPU();
  MESSAGE("worst max|o - ref| / max|ref| over all comparisons: bf16 " << g_worst_max[0] << ", fp16 " << g_worst_max[1]);
  MESSAGE("worst relative L2 error: bf16 " << g_worst_l2[0] << ", fp16 " << g_worst_l2[1]);
  CHECK(g_worst_max[0] <= rtol_of(ElementType::kBFloat16));
}
