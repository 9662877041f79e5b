// Decode attention throughput (nosa/attention.cuh): sparse over the slot cache and the dense
// (full-attention) path, against the HBM copy ceiling measured in the same binary.
//
//   bench_attention [--benchmark_filter=...]
// Counters: bytes = K + V (+ bias) bytes of the attended tokens, GBps, pct_ceiling = GBps over
// the device-to-device cudaMemcpy rate (read + write bytes) measured at start-up, splits.
// Every iteration uses the next of several input sets (slot ranges / sequences) so that the
// L2 cache (50 MB on H100) never serves K/V from a previous iteration.
#include <benchmark/benchmark.h>
#include <nosa/attention.cuh>

#include "bench_util.cuh"

#include <cuda_runtime.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <numeric>
#include <random>
#include <vector>

namespace {


constexpr int kB = 64, kD = 128, kG = 16;
using Elem = nosa::bfloat16_t;
using GeoHND = nosa::Geometry<kB, kD, kG, nosa::HeadLayout::kHND>;

double g_ceiling_gbps = 0;


template <class T>
T* dev_alloc(size_t n) {
  T* p = nullptr;
  NOSA_BENCH_CUDA(cudaMalloc(&p, std::max<size_t>(n, 1) * sizeof(T)));
  return p;
}

void fill_random(void* p, size_t bytes_even, unsigned seed) {
  // bf16 values in [-1, 1) via a host pattern copied repeatedly (fast, not zeros)
  std::vector<std::uint16_t> h(1 << 20);
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> u(-1.f, 1.f);
  for (auto& x : h) x = nosa::to_bfloat16(u(rng)).bits;
  const size_t chunk = h.size() * 2;
  for (size_t off = 0; off < bytes_even; off += chunk)
    NOSA_BENCH_CUDA(cudaMemcpy(static_cast<char*>(p) + off, h.data(), std::min(chunk, bytes_even - off), cudaMemcpyHostToDevice));
}


void report(benchmark::State& state, double bytes, int splits) {
  state.counters["bytes"] = bytes;
  state.counters["GBps"] = benchmark::Counter(bytes / 1e9, benchmark::Counter::kIsIterationInvariantRate);
  state.counters["splits"] = splits;
  state.counters["ceiling_GBps"] = g_ceiling_gbps;
}

void finish(benchmark::State& state, double bytes, double total_s, int splits) {
  report(state, bytes, splits);
  const double gbps = bytes * state.iterations() / total_s / 1e9;
  state.counters["pct_ceiling"] = 100.0 * gbps / g_ceiling_gbps;
}

/// Second view of the same call: `reps` launches back to back between one pair of events (the
/// input sets rotated as in the timed loop), so the host's per-call work overlaps the device's
/// and the launch-to-launch gap is all that remains of it. Reported as us_b2b (per call) and
/// pct_b2b; the manual time / pct_ceiling above stay the one-call-at-a-time numbers.
template <class Launch>
void back_to_back(benchmark::State& state, double bytes, cudaStream_t stream, int sets, Launch&& launch) {
  const int reps = std::max(20, 2 * sets);
  nosa_bench::EventTimer timer;
  std::vector<float> ms;
  for (int trial = 0; trial < 5; ++trial) {
    NOSA_BENCH_CUDA(cudaStreamSynchronize(stream));
    NOSA_BENCH_CUDA(cudaEventRecord(timer.e0, stream));
    for (int i = 0; i < reps; ++i) launch(i % sets);
    NOSA_BENCH_CUDA(cudaEventRecord(timer.e1, stream));
    NOSA_BENCH_CUDA(cudaEventSynchronize(timer.e1));
    float t;
    NOSA_BENCH_CUDA(cudaEventElapsedTime(&t, timer.e0, timer.e1));
    ms.push_back(t / reps);
  }
  std::sort(ms.begin(), ms.end());
  const double per_call_s = ms[ms.size() / 2] * 1e-3;
  state.counters["us_b2b"] = per_call_s * 1e6;
  state.counters["pct_b2b"] = 100.0 * bytes / per_call_s / 1e9 / g_ceiling_gbps;
}

/// Sparse: batch x Hkv rows, each attending `budget` blocks of 64 chosen among T = 32K tokens,
/// bias on, HND slot cache (the residency manager's layout).
void BM_sparse(benchmark::State& state) {
  const int batch = static_cast<int>(state.range(0)), hkv = static_cast<int>(state.range(1));
  const int budget = 64, T = 32768, nb = T / kB;
  const size_t rows = size_t(batch) * hkv;
  const size_t slots_per_set = rows * budget;
  const size_t set_bytes = slots_per_set * kB * (2 * kD * 2 + 4);
  const int sets = static_cast<int>(std::max<size_t>(2, std::min<size_t>(64, (size_t(400) << 20) / set_bytes + 1)));
  const long long num_slots = static_cast<long long>(slots_per_set) * sets;
  Elem* k = dev_alloc<Elem>(size_t(num_slots) * kB * kD);
  Elem* v = dev_alloc<Elem>(size_t(num_slots) * kB * kD);
  float* bias = dev_alloc<float>(size_t(num_slots) * kB);
  fill_random(k, size_t(num_slots) * kB * kD * 2, 1);
  fill_random(v, size_t(num_slots) * kB * kD * 2, 2);
  NOSA_BENCH_CUDA(cudaMemset(bias, 0, size_t(num_slots) * kB * 4));
  Elem* q = dev_alloc<Elem>(rows * kG * kD);
  fill_random(q, rows * kG * kD * 2, 3);
  Elem* o = dev_alloc<Elem>(rows * kG * kD);
  float* lse = dev_alloc<float>(rows * kG);
  // per set: block ids (random ascending, current block included) and shuffled slots
  std::mt19937 rng(7);
  std::vector<std::int32_t> h_blocks(rows * budget), h_counts(rows, budget), h_lens(batch, T);
  std::vector<int> all(nb);
  for (size_t r = 0; r < rows; ++r) {
    std::iota(all.begin(), all.end(), 0);
    std::shuffle(all.begin(), all.end() - 1, rng);
    std::vector<int> s(all.begin(), all.begin() + budget - 1);
    s.push_back(nb - 1);
    std::sort(s.begin(), s.end());
    std::copy(s.begin(), s.end(), h_blocks.begin() + r * budget);
  }
  std::vector<std::int32_t> h_slots(size_t(sets) * rows * budget);
  for (int st = 0; st < sets; ++st) {
    std::vector<std::int32_t> perm(slots_per_set);
    std::iota(perm.begin(), perm.end(), static_cast<std::int32_t>(size_t(st) * slots_per_set));
    std::shuffle(perm.begin(), perm.end(), rng);
    std::copy(perm.begin(), perm.end(), h_slots.begin() + size_t(st) * rows * budget);
  }
  std::int32_t* d_blocks = dev_alloc<std::int32_t>(h_blocks.size());
  std::int32_t* d_slots = dev_alloc<std::int32_t>(h_slots.size());
  std::int32_t* d_counts = dev_alloc<std::int32_t>(rows);
  std::int32_t* d_lens = dev_alloc<std::int32_t>(batch);
  NOSA_BENCH_CUDA(cudaMemcpy(d_blocks, h_blocks.data(), h_blocks.size() * 4, cudaMemcpyHostToDevice));
  NOSA_BENCH_CUDA(cudaMemcpy(d_slots, h_slots.data(), h_slots.size() * 4, cudaMemcpyHostToDevice));
  NOSA_BENCH_CUDA(cudaMemcpy(d_counts, h_counts.data(), rows * 4, cudaMemcpyHostToDevice));
  NOSA_BENCH_CUDA(cudaMemcpy(d_lens, h_lens.data(), batch * 4, cudaMemcpyHostToDevice));

  nosa::DecodeAttentionArgs<Elem> a;
  a.batch = batch;
  a.num_kv_heads = hkv;
  a.max_blocks = budget;
  a.num_slots = num_slots;
  a.q = q;
  a.o = o;
  a.lse = lse;
  a.k_cache = k;
  a.v_cache = v;
  a.bias_cache = bias;
  a.block_ids = d_blocks;
  a.counts = d_counts;
  a.seq_lens = d_lens;
  a.num_splits = static_cast<int>(state.range(2));
  a.slot_ids = d_slots;
  nosa::AttentionPlan plan;
  if (!nosa::plan_decode_attention<GeoHND>(a, &plan).ok()) state.SkipWithError("plan failed");
  void* ws = dev_alloc<unsigned char>(plan.workspace_bytes);
  cudaStream_t stream;
  NOSA_BENCH_CUDA(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
  auto launch = [&](int set) {
    a.slot_ids = d_slots + size_t(set) * rows * budget;
    nosa::Status s = nosa::decode_attention<GeoHND>(a, ws, plan.workspace_bytes, stream);
    if (!s.ok()) {
      std::fprintf(stderr, "%s\n", s.to_string().c_str());
      std::exit(1);
    }
  };
  const double total = nosa_bench::timed_iterations(state, stream, sets, 2 * sets, launch);
  finish(state, double(rows) * budget * kB * (2.0 * kD * 2 + 4), total, plan.num_splits);
  back_to_back(state, double(rows) * budget * kB * (2.0 * kD * 2 + 4), stream, sets, launch);
  cudaStreamDestroy(stream);
  for (void* p : {static_cast<void*>(k), static_cast<void*>(v), static_cast<void*>(bias), static_cast<void*>(q),
                  static_cast<void*>(o), static_cast<void*>(lse), static_cast<void*>(d_blocks),
                  static_cast<void*>(d_slots), static_cast<void*>(d_counts), static_cast<void*>(d_lens), ws})
    cudaFree(p);
}

/// Dense: every token of T, contiguous per (sequence, head) [T][D] cache (identity table),
/// no bias: the full-attention baseline, same shapes as torch SDPA with q [b, Hkv, G, D].
void BM_dense(benchmark::State& state) {
  const int batch = static_cast<int>(state.range(0)), hkv = static_cast<int>(state.range(1));
  const int T = static_cast<int>(state.range(2));
  const int nb = T / kB;
  const size_t rows = size_t(batch) * hkv;
  const size_t seq_bytes = size_t(hkv) * T * kD * 2 * 2;
  const int seqs = static_cast<int>(std::max<size_t>(batch, std::min<size_t>(size_t(batch) * 8, ((size_t(400) << 20) / seq_bytes + 1))));
  const int sets = seqs / batch;
  const size_t elems = size_t(seqs) * hkv * T * kD;
  Elem* k = dev_alloc<Elem>(elems);
  Elem* v = dev_alloc<Elem>(elems);
  fill_random(k, elems * 2, 1);
  fill_random(v, elems * 2, 2);
  Elem* q = dev_alloc<Elem>(rows * kG * kD);
  fill_random(q, rows * kG * kD * 2, 3);
  Elem* o = dev_alloc<Elem>(rows * kG * kD);
  float* lse = dev_alloc<float>(rows * kG);
  std::vector<std::int32_t> h_lens(batch, T), h_seq(size_t(sets) * batch);
  std::iota(h_seq.begin(), h_seq.end(), 0);
  std::int32_t* d_lens = dev_alloc<std::int32_t>(batch);
  std::int32_t* d_seq = dev_alloc<std::int32_t>(h_seq.size());
  NOSA_BENCH_CUDA(cudaMemcpy(d_lens, h_lens.data(), batch * 4, cudaMemcpyHostToDevice));
  NOSA_BENCH_CUDA(cudaMemcpy(d_seq, h_seq.data(), h_seq.size() * 4, cudaMemcpyHostToDevice));
  nosa::DecodeAttentionArgs<Elem> a;
  a.batch = batch;
  a.num_kv_heads = hkv;
  a.max_blocks = nb;
  a.num_slots = static_cast<long long>(seqs) * hkv * nb;
  a.q = q;
  a.o = o;
  a.lse = lse;
  a.k_cache = k;
  a.v_cache = v;
  a.seq_lens = d_lens;
  a.mode = nosa::AttentionMode::kDense;
  a.seq_slots = d_seq;
  nosa::AttentionPlan plan;
  if (!nosa::plan_decode_attention<GeoHND>(a, &plan).ok()) state.SkipWithError("plan failed");
  void* ws = dev_alloc<unsigned char>(plan.workspace_bytes);
  cudaStream_t stream;
  NOSA_BENCH_CUDA(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
  auto launch = [&](int set) {
    a.seq_slots = d_seq + size_t(set) * batch;
    nosa::Status s = nosa::decode_attention<GeoHND>(a, ws, plan.workspace_bytes, stream);
    if (!s.ok()) {
      std::fprintf(stderr, "%s\n", s.to_string().c_str());
      std::exit(1);
    }
  };
  const double total = nosa_bench::timed_iterations(state, stream, sets, 2 * sets + 2, launch);
  finish(state, double(rows) * T * (2.0 * kD * 2), total, plan.num_splits);
  back_to_back(state, double(rows) * T * (2.0 * kD * 2), stream, sets, launch);
  cudaStreamDestroy(stream);
  for (void* p : {static_cast<void*>(k), static_cast<void*>(v), static_cast<void*>(q), static_cast<void*>(o),
                  static_cast<void*>(lse), static_cast<void*>(d_lens), static_cast<void*>(d_seq), ws})
    cudaFree(p);
}

}  // namespace

// sparse: {batch, Hkv, splits (0 = auto)}
BENCHMARK(BM_sparse)
    ->ArgsProduct({{1, 16, 64, 256}, {2, 8}, {0}})
    ->Args({64, 2, 1})
    ->Args({64, 2, 3})
    ->Args({64, 2, 4})
    ->UseManualTime()
    ->Unit(benchmark::kMicrosecond);
// dense: {batch, Hkv, T}
BENCHMARK(BM_dense)
    ->ArgsProduct({{1, 16}, {8}, {4096, 32768, 131072}})
    ->UseManualTime()
    ->Unit(benchmark::kMicrosecond);

int main(int argc, char** argv) {
  int count = 0;
  if (cudaGetDeviceCount(&count) != cudaSuccess || count == 0) {
    std::fprintf(stderr, "bench_attention: no CUDA device\n");
    return 0;
  }
  cudaDeviceProp prop;
  NOSA_BENCH_CUDA(cudaGetDeviceProperties(&prop, 0));
  g_ceiling_gbps = nosa_bench::hbm_copy_ceiling_gbps();
  std::printf("device: %s, %d SMs, L2 %d MB; HBM copy ceiling (read+write): %.0f GB/s\n", prop.name,
              prop.multiProcessorCount, prop.l2CacheSize >> 20, g_ceiling_gbps);
  benchmark::Initialize(&argc, argv);
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
