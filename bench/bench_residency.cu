// Residency manager benchmark: per-step diff + transfer time (make_resident) and the PCIe GB/s it
// achieves, against a pinned host-to-device cudaMemcpy ceiling measured in the same binary.
// Hkv = 2, D = 128, B = 64, bf16, 64 slots per head = budget 64, one layer, 256 blocks (16K tokens)
// per sequence. Each step replaces `pct`% of each head's 63 non-tail selected blocks by blocks
// that are not resident (slots == budget, so every unselected block has been evicted): the blocks
// moved per step are exactly the changed ones. pct = 0 times the diff alone.
#include <benchmark/benchmark.h>

#include <nosa/residency.cuh>

#include <algorithm>
#include <cstring>
#include <cstdio>
#include <memory>
#include <random>
#include <set>
#include <vector>

namespace {

#define BENCH_CUDA(expr)                                                                          \
  do {                                                                                            \
    cudaError_t e_ = (expr);                                                                      \
    if (e_ != cudaSuccess) {                                                                      \
      std::fprintf(stderr, "%s failed: %s\n", #expr, cudaGetErrorString(e_));                     \
      std::abort();                                                                               \
    }                                                                                             \
  } while (0)

using Geo = nosa::Geometry<64, 128, 16, nosa::HeadLayout::kHND>;
using T = nosa::bfloat16_t;
constexpr int kHeads = 2, kSlots = 64, kBudget = 64, kBlocksPerSeq = 256;

double g_ceiling_gbs = 0;  // pinned H2D cudaMemcpyAsync, 64 MiB, median of 20

double measure_ceiling() {
  const size_t bytes = 64ull << 20;
  void *h = nullptr, *d = nullptr;
  BENCH_CUDA(cudaHostAlloc(&h, bytes, cudaHostAllocDefault));
  BENCH_CUDA(cudaMalloc(&d, bytes));
  std::memset(h, 1, bytes);
  cudaStream_t s;
  BENCH_CUDA(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
  cudaEvent_t a, b;
  BENCH_CUDA(cudaEventCreate(&a));
  BENCH_CUDA(cudaEventCreate(&b));
  std::vector<float> ms;
  for (int i = 0; i < 25; ++i) {
    BENCH_CUDA(cudaEventRecord(a, s));
    BENCH_CUDA(cudaMemcpyAsync(d, h, bytes, cudaMemcpyHostToDevice, s));
    BENCH_CUDA(cudaEventRecord(b, s));
    BENCH_CUDA(cudaEventSynchronize(b));
    float t;
    BENCH_CUDA(cudaEventElapsedTime(&t, a, b));
    if (i >= 5) ms.push_back(t);
  }
  std::sort(ms.begin(), ms.end());
  cudaFreeHost(h);
  cudaFree(d);
  cudaStreamDestroy(s);
  return bytes / (ms[ms.size() / 2] * 1e-3) / 1e9;
}

template <class Policy, nosa::HeadLayout HL>
void BM_make_resident(benchmark::State& state) {
  using Res = nosa::Residency<T, Geo, Policy, HL>;
  using Pool = typename Res::Pool;
  const int batch = static_cast<int>(state.range(0));
  const int pct = static_cast<int>(state.range(1));
  const int changed = (63 * pct + 50) / 100;  // per head and step
  nosa::HostPoolConfig pc{1, kHeads, batch, kBlocksPerSeq};
  const size_t pool_bytes = Pool::bytes_for_blocks(kHeads, static_cast<long long>(batch) * kBlocksPerSeq);
  std::unique_ptr<nosa::PinnedHostMemory> pinned;
  void* dev_pool = nullptr;
  if constexpr (Policy::pool_on_host) {
    pinned = std::make_unique<nosa::PinnedHostMemory>(pool_bytes);
    std::memset(pinned->host(), 0x3c, pool_bytes);
  } else {
    BENCH_CUDA(cudaMalloc(&dev_pool, pool_bytes));
    BENCH_CUDA(cudaMemset(dev_pool, 0x3c, pool_bytes));
  }
  Pool pool(pc, pinned ? pinned->host() : nullptr, pinned ? pinned->device() : dev_pool, pool_bytes);
  nosa::ResidencyConfig rc{batch, kBudget, kSlots};
  const size_t wsb = Res::workspace_bytes(pc, rc);
  void* ws = nullptr;
  BENCH_CUDA(cudaMalloc(&ws, wsb));
  cudaStream_t stream;
  BENCH_CUDA(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
  {
    Res res(pool, rc, ws, wsb, stream);
    const int T = kBlocksPerSeq * Geo::block_size;
    std::vector<int> seqs(batch), lens(batch, T);
    for (int b = 0; b < batch; ++b) {
      seqs[b] = b;
      nosa::throw_if_error(res.add_sequence(b));
      nosa::throw_if_error(res.reserve(b, T, stream));
    }
    int *d_seq, *d_len, *d_blocks, *d_counts, *d_slots;
    const size_t nsel = static_cast<size_t>(batch) * kHeads * kBudget;
    BENCH_CUDA(cudaMalloc(&d_seq, batch * 4));
    BENCH_CUDA(cudaMalloc(&d_len, batch * 4));
    BENCH_CUDA(cudaMalloc(&d_blocks, nsel * 4));
    BENCH_CUDA(cudaMalloc(&d_counts, batch * kHeads * 4));
    BENCH_CUDA(cudaMalloc(&d_slots, nsel * 4));
    BENCH_CUDA(cudaMemcpy(d_seq, seqs.data(), batch * 4, cudaMemcpyHostToDevice));
    BENCH_CUDA(cudaMemcpy(d_len, lens.data(), batch * 4, cudaMemcpyHostToDevice));
    std::vector<int> counts(batch * kHeads, kBudget);
    BENCH_CUDA(cudaMemcpy(d_counts, counts.data(), counts.size() * 4, cudaMemcpyHostToDevice));
    std::mt19937 rng(1234);
    // current selection per (b, h): the tail block plus 63 others
    std::vector<std::vector<int>> sel(batch * kHeads);
    for (auto& s : sel) {
      std::set<int> x{kBlocksPerSeq - 1};
      while (x.size() < kBudget) x.insert(static_cast<int>(rng() % (kBlocksPerSeq - 1)));
      s.assign(x.begin(), x.end());
    }
    std::vector<int> host_blocks(nsel);
    auto upload = [&]() {
      for (size_t i = 0; i < sel.size(); ++i) std::copy(sel[i].begin(), sel[i].end(), host_blocks.begin() + i * kBudget);
      BENCH_CUDA(cudaMemcpyAsync(d_blocks, host_blocks.data(), nsel * 4, cudaMemcpyHostToDevice, stream));
    };
    auto next_selection = [&]() {
      for (auto& s : sel) {
        std::set<int> cur(s.begin(), s.end());
        std::vector<int> others(s.begin(), s.end() - 1);  // not the tail
        std::shuffle(others.begin(), others.end(), rng);
        for (int i = 0; i < changed; ++i) cur.erase(others[i]);
        std::set<int> old(s.begin(), s.end());
        while (static_cast<int>(cur.size()) < kBudget) {
          const int blk = static_cast<int>(rng() % (kBlocksPerSeq - 1));
          if (!old.count(blk)) cur.insert(blk);  // not resident: slots == budget
        }
        s.assign(cur.begin(), cur.end());
      }
    };
    upload();
    nosa::throw_if_error(res.make_resident(0, batch, d_seq, d_len, d_blocks, d_counts, kBudget, d_slots, stream));
    for (int w = 0; w < 3; ++w) {  // warm-up
      next_selection();
      upload();
      nosa::throw_if_error(res.make_resident(0, batch, d_seq, d_len, d_blocks, d_counts, kBudget, d_slots, stream));
    }
    nosa::ResidencyCounters c;
    nosa::throw_if_error(res.read_counters(&c, stream));
    cudaEvent_t e0, e1;
    BENCH_CUDA(cudaEventCreate(&e0));
    BENCH_CUDA(cudaEventCreate(&e1));
    long long steps = 0;
    double total_s = 0;
    for (auto _ : state) {
      next_selection();
      upload();
      BENCH_CUDA(cudaStreamSynchronize(stream));
      BENCH_CUDA(cudaEventRecord(e0, stream));
      nosa::throw_if_error(res.make_resident(0, batch, d_seq, d_len, d_blocks, d_counts, kBudget, d_slots, stream));
      BENCH_CUDA(cudaEventRecord(e1, stream));
      BENCH_CUDA(cudaEventSynchronize(e1));
      float ms = 0;
      BENCH_CUDA(cudaEventElapsedTime(&ms, e0, e1));
      state.SetIterationTime(ms * 1e-3);
      total_s += ms * 1e-3;
      ++steps;
    }
    nosa::throw_if_error(res.read_counters(&c, stream));
    if (c.errors != 0) state.SkipWithError("device-side residency error");
    const double bytes_per_step = static_cast<double>(c.step_bytes_moved) / std::max<long long>(steps, 1);
    state.counters["blocks_per_step"] = static_cast<double>(c.step_blocks_moved) / std::max<long long>(steps, 1);
    state.counters["MiB_per_step"] = bytes_per_step / (1 << 20);
    state.counters["hit_rate"] = c.step_hit_rate;
    const double gbs = total_s > 0 ? bytes_per_step * steps / total_s / 1e9 : 0;
    state.counters["GB/s"] = gbs;
    state.counters["pct_ceiling"] = g_ceiling_gbs > 0 ? 100.0 * gbs / g_ceiling_gbs : 0;
    state.counters["ceiling_GB/s"] = g_ceiling_gbs;
    state.SetBytesProcessed(static_cast<int64_t>(bytes_per_step * steps));
    cudaEventDestroy(e0);
    cudaEventDestroy(e1);
    cudaFree(d_seq);
    cudaFree(d_len);
    cudaFree(d_blocks);
    cudaFree(d_counts);
    cudaFree(d_slots);
  }
  cudaStreamDestroy(stream);
  cudaFree(ws);
  if (dev_pool) cudaFree(dev_pool);
}

// A fixed iteration count: one setup per row (the pool of batch 64 is 1 GiB of pinned memory).
// Batch 2 (4 CTAs) shows what a small batch gets: the transfer runs on one CTA per (sequence, head).
void args(benchmark::internal::Benchmark* b) {
  for (int batch : {2, 16, 64})
    for (int pct : {0, 2, 5, 10, 30, 100}) b->Args({batch, pct});
  b->UseManualTime()->Unit(benchmark::kMicrosecond)->Iterations(300);
}

// The floor of this timing method: one empty kernel launch between two events (make_resident
// is one kernel for ZeroCopyGather / DeviceResident).
__global__ void empty_kernel() {}
void BM_launch_floor(benchmark::State& state) {
  cudaStream_t stream;
  BENCH_CUDA(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
  cudaEvent_t e0, e1;
  BENCH_CUDA(cudaEventCreate(&e0));
  BENCH_CUDA(cudaEventCreate(&e1));
  empty_kernel<<<32, 512, 0, stream>>>();
  BENCH_CUDA(cudaStreamSynchronize(stream));
  for (auto _ : state) {
    BENCH_CUDA(cudaEventRecord(e0, stream));
    empty_kernel<<<32, 512, 0, stream>>>();
    BENCH_CUDA(cudaEventRecord(e1, stream));
    BENCH_CUDA(cudaEventSynchronize(e1));
    float ms = 0;
    BENCH_CUDA(cudaEventElapsedTime(&ms, e0, e1));
    state.SetIterationTime(ms * 1e-3);
  }
  cudaEventDestroy(e0);
  cudaEventDestroy(e1);
  cudaStreamDestroy(stream);
}
BENCHMARK(BM_launch_floor)->Name("LaunchFloor")->UseManualTime()->Unit(benchmark::kMicrosecond)->Iterations(300);

BENCHMARK(BM_make_resident<nosa::ZeroCopyGather, nosa::HeadLayout::kNHD>)->Name("ZeroCopyGather_NHD")->Apply(args);
BENCHMARK(BM_make_resident<nosa::ZeroCopyGather, nosa::HeadLayout::kHND>)->Name("ZeroCopyGather_HND")->Apply(args);
BENCHMARK(BM_make_resident<nosa::CopyEngine, nosa::HeadLayout::kHND>)->Name("CopyEngine_HND")->Apply(args);
BENCHMARK(BM_make_resident<nosa::DeviceResident, nosa::HeadLayout::kNHD>)->Name("DeviceResident_NHD")->Apply(args);

}  // namespace

int main(int argc, char** argv) {
  int devices = 0;
  if (cudaGetDeviceCount(&devices) != cudaSuccess || devices == 0) {
    std::printf("bench_residency: no CUDA device\n");
    return 0;
  }
  cudaDeviceProp prop;
  BENCH_CUDA(cudaGetDeviceProperties(&prop, 0));
  g_ceiling_gbs = measure_ceiling();
  std::printf("device: %s, pinned H2D cudaMemcpy ceiling (64 MiB): %.1f GB/s\n", prop.name, g_ceiling_gbs);
  benchmark::Initialize(&argc, argv);
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
