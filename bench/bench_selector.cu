// Selection time per layer of nosa::DeviceSelector (NOSA policy, G = 16, D = 128, bf16 keys),
// for batch 1/16/64/128, Hkv 2/8, contexts 16K/32K/128K, on each stage-1 path:
//   BM_Stage1/<path>  stage 1 alone: compressed-key scan, softmax, pooling to Pq/Pe
//                     (global: score + pool kernels; cluster: the one cluster kernel; split: the
//                     one cooperative split-head kernel)
//   BM_Select/<path>  the whole selection (stage 1 + two-stage top-k)
//   BM_Stage1Scan/<kernel>  stage 1 on the cluster path with its kernel forced (shared_logits,
//                     register_logits; SelectArgs::cluster_scan): tunes cluster_scan_for
//   BM_ClusterSize/<kernel>  stage 1 on the cluster path at a forced cluster size (2..16; sizes
//                     this device cannot run for the shape are skipped), with the kernel auto
//                     (cluster_scan_for) or forced (register_logits): tunes choose_cluster and the
//                     register scan's build-time shape (NOSA_REGISTER_SCAN_*)
//   BM_HeadParts      stage 1 on the split path at a forced head_parts (CTAs per (entry, head)):
//                     tunes choose_parts and split_path_for
// <path> is auto (what select() runs: cluster or split per shape, DeviceSelector::split_path_for),
// global, cluster or split.
// Counters: key_bytes (compressed keys read per call), GBps (key_bytes / time), pct_ceiling
// (GBps / the device-to-device copy bandwidth measured once in this binary, counting read +
// write), cluster (CTAs per (entry, head); 0 = global path), splits (global path's split-K),
// regs (1: the register-logit cluster kernel ran), resident (its clusters resident at once) and
// waves (batch x Hkv / resident: 1.1 means a second wave with a 10 % tail); split path: parts
// (CTAs per (entry, head)), groups (groups of parts resident at once), positions (jobs per CTA).
// The compressed state is filled directly with random keys (appending 128K tokens x 64
// sequences would only slow the setup down; append kernels are not what is measured here).
// Short subset: --benchmark_filter='BM_(Stage1|Select)/.*/batch:(16|128)/hkv:2/ctx:131072'.
#include <nosa/selector.cuh>

#include "bench_util.cuh"

#include <benchmark/benchmark.h>
#include <cuda_runtime.h>

#include <cstdio>
#include <cstdlib>
#include <vector>

namespace {


using Geo = nosa::Geometry<64, 128, 16>;
using T = nosa::bfloat16_t;
using Sel = nosa::DeviceSelector<Geo, nosa::NosaSelector, T>;

__device__ unsigned hash32(unsigned x) {
  x ^= x >> 16;
  x *= 0x7feb352du;
  x ^= x >> 15;
  x *= 0x846ca68bu;
  x ^= x >> 16;
  return x;
}
__global__ void fill_bf16(__nv_bfloat16* p, size_t n, unsigned seed, float scale) {
  for (size_t e = blockIdx.x * size_t(blockDim.x) + threadIdx.x; e < n; e += size_t(gridDim.x) * blockDim.x)
    p[e] = __float2bfloat16((hash32(unsigned(e) ^ seed) * 2.3283064e-10f - 0.5f) * scale);
}
__global__ void fill_f32(float* p, size_t n, unsigned seed, float scale) {
  for (size_t e = blockIdx.x * size_t(blockDim.x) + threadIdx.x; e < n; e += size_t(gridDim.x) * blockDim.x)
    p[e] = (hash32(unsigned(e) ^ seed) * 2.3283064e-10f - 0.5f) * scale;
}

/// Device-to-device copy bandwidth (read + write bytes / time) of a 1 GiB buffer, best of 10.
double copy_ceiling_gbps() {
  static double gbps = [] {
    const size_t bytes = size_t(1) << 30;
    void *a, *b;
    NOSA_BENCH_CUDA(cudaMalloc(&a, bytes));
    NOSA_BENCH_CUDA(cudaMalloc(&b, bytes));
    cudaStream_t s;
    NOSA_BENCH_CUDA(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
    cudaEvent_t e0, e1;
    NOSA_BENCH_CUDA(cudaEventCreate(&e0));
    NOSA_BENCH_CUDA(cudaEventCreate(&e1));
    NOSA_BENCH_CUDA(cudaMemcpyAsync(b, a, bytes, cudaMemcpyDeviceToDevice, s));
    float best = 1e30f;
    for (int r = 0; r < 10; ++r) {
      NOSA_BENCH_CUDA(cudaEventRecord(e0, s));
      NOSA_BENCH_CUDA(cudaMemcpyAsync(b, a, bytes, cudaMemcpyDeviceToDevice, s));
      NOSA_BENCH_CUDA(cudaEventRecord(e1, s));
      NOSA_BENCH_CUDA(cudaEventSynchronize(e1));
      float ms;
      NOSA_BENCH_CUDA(cudaEventElapsedTime(&ms, e0, e1));
      best = std::min(best, ms);
    }
    cudaFree(a);
    cudaFree(b);
    cudaEventDestroy(e0);
    cudaEventDestroy(e1);
    cudaStreamDestroy(s);
    const double g = 2.0 * bytes / (best * 1e-3) / 1e9;
    std::printf("device-to-device copy ceiling: %.1f GB/s (read + write of 1 GiB, best of 10)\n", g);
    return g;
  }();
  return gbps;
}

enum class What { kStage1, kSelect };

void run(benchmark::State& state, What what, nosa::SelectPath path, int cluster_size,
         nosa::ClusterScan scan = nosa::ClusterScan::kAuto, int head_parts = 0) {
  const int batch = static_cast<int>(state.range(0));
  const int hkv = static_cast<int>(state.range(1));
  const int ctx = static_cast<int>(state.range(2));
  const double ceiling = copy_ceiling_gbps();
  nosa::DeviceSelectorConfig cfg;
  cfg.max_sequences = batch;
  cfg.num_kv_heads = hkv;
  cfg.max_batch = batch;
  cfg.max_tokens = ctx;
  size_t bytes = 0;
  if (!Sel::workspace_bytes(cfg, &bytes).ok()) return state.SkipWithError("workspace_bytes failed");
  void* ws;
  if (cudaMalloc(&ws, bytes) != cudaSuccess) return state.SkipWithError("out of device memory");
  Sel sel;
  if (!Sel::create(cfg, ws, bytes, &sel).ok()) {
    cudaFree(ws);
    return state.SkipWithError("create failed");
  }
  if (path == nosa::SelectPath::kCluster &&
      (cluster_size > 0 ? !sel.cluster_size_usable(cluster_size) : sel.cluster_size_for(batch, path) == 0)) {
    cudaFree(ws);
    return state.SkipWithError("cluster path (or this cluster size) not usable for this shape on this device");
  }
  if (path == nosa::SelectPath::kSplit &&
      (head_parts > 0 ? !sel.head_parts_usable(head_parts) : sel.head_parts_for(batch) == 0)) {
    cudaFree(ws);
    return state.SkipWithError("split path (or this head_parts) not usable for this shape on this device");
  }
  if (scan == nosa::ClusterScan::kRegisterLogits &&
      !sel.register_scan_usable(cluster_size > 0 ? cluster_size : sel.cluster_size_for(batch, path))) {
    cudaFree(ws);
    return state.SkipWithError("register-logit cluster kernel not usable for this shape on this device");
  }
  cudaStream_t s;
  NOSA_BENCH_CUDA(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
  if (!sel.initialize(s).ok()) {
    cudaStreamDestroy(s);
    cudaFree(ws);
    return state.SkipWithError("initialize failed");
  }
  const auto& st = sel.state();
  const int nc = sel.max_compressed();
  const size_t nkeys = size_t(batch) * hkv * nc * Geo::head_dim;
  fill_bf16<<<1024, 256, 0, s>>>(reinterpret_cast<__nv_bfloat16*>(st.keys), nkeys, 1u, 4.f);
  fill_f32<<<1024, 256, 0, s>>>(st.cbias, size_t(batch) * hkv * nc, 2u, 2.f);
  std::vector<int> slots(batch), lens(batch, ctx);
  for (int i = 0; i < batch; ++i) slots[i] = i;
  int *d_slots, *d_lens, *d_ids, *d_counts;
  T* d_q;
  const size_t qn = size_t(batch) * hkv * Geo::group_size * Geo::head_dim;
  NOSA_BENCH_CUDA(cudaMalloc(&d_slots, batch * 4));
  NOSA_BENCH_CUDA(cudaMalloc(&d_lens, batch * 4));
  NOSA_BENCH_CUDA(cudaMalloc(&d_q, qn * 2));
  NOSA_BENCH_CUDA(cudaMalloc(&d_ids, size_t(batch) * hkv * 64 * 4));
  NOSA_BENCH_CUDA(cudaMalloc(&d_counts, size_t(batch) * hkv * 4));
  NOSA_BENCH_CUDA(cudaMemcpyAsync(d_slots, slots.data(), batch * 4, cudaMemcpyHostToDevice, s));
  NOSA_BENCH_CUDA(cudaMemcpyAsync(d_lens, lens.data(), batch * 4, cudaMemcpyHostToDevice, s));
  NOSA_BENCH_CUDA(cudaMemcpyAsync(st.counts, lens.data(), batch * 4, cudaMemcpyHostToDevice, s));
  fill_bf16<<<256, 256, 0, s>>>(reinterpret_cast<__nv_bfloat16*>(d_q), qn, 3u, 1.f);
  nosa::SelectArgs<T> a;
  a.batch = batch;
  a.seq_slots = d_slots;
  a.seq_lens = d_lens;
  a.max_seq_len = ctx;
  a.q = d_q;
  a.block_ids = d_ids;
  a.block_stride = 64;
  a.counts = d_counts;
  a.path = path;
  a.cluster_size = cluster_size;
  a.cluster_scan = scan;
  a.head_parts = head_parts;
  auto call = [&] {
    const nosa::Status r = what == What::kStage1 ? sel.stage1_only(a, s) : sel.select(a, s);
    if (!r.ok()) {
      std::fprintf(stderr, "%s\n", r.to_string().c_str());
      std::exit(1);
    }
  };
  for (int w = 0; w < 3; ++w) call();  // warm-up
  NOSA_BENCH_CUDA(cudaStreamSynchronize(s));
  cudaEvent_t e0, e1;
  NOSA_BENCH_CUDA(cudaEventCreate(&e0));
  NOSA_BENCH_CUDA(cudaEventCreate(&e1));
  const int reps = 10;
  for (auto _ : state) {
    NOSA_BENCH_CUDA(cudaEventRecord(e0, s));
    for (int r = 0; r < reps; ++r) call();
    NOSA_BENCH_CUDA(cudaEventRecord(e1, s));
    NOSA_BENCH_CUDA(cudaEventSynchronize(e1));
    float ms;
    NOSA_BENCH_CUDA(cudaEventElapsedTime(&ms, e0, e1));
    state.SetIterationTime(ms * 1e-3 / reps);
  }
  if (!sel.device_errors(s).ok()) state.SkipWithError("device error flag set");
  const double key_bytes = double(nkeys) * sizeof(T);
  state.counters["key_bytes"] = key_bytes;
  state.counters["GBps"] = benchmark::Counter(key_bytes * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
  state.counters["ceiling_GBps"] = ceiling;
  const int used_cluster = cluster_size > 0 ? cluster_size : sel.cluster_size_for(batch, path);
  state.counters["cluster"] = used_cluster;
  const bool split = path == nosa::SelectPath::kSplit || (path == nosa::SelectPath::kAuto && sel.split_path_for(batch));
  state.counters["splits"] = used_cluster > 0 || split ? 0 : sel.splits_for(batch);
  const nosa::ClusterScan ran = scan == nosa::ClusterScan::kAuto ? sel.cluster_scan_for(batch, used_cluster) : scan;
  state.counters["regs"] = used_cluster > 0 && ran == nosa::ClusterScan::kRegisterLogits;
  if (split) {  // parts per head, groups of parts resident at once, jobs per CTA
    const int parts = head_parts > 0 ? head_parts : sel.head_parts_for(batch);
    const int groups = sel.split_groups(parts);
    state.counters["parts"] = parts;
    state.counters["groups"] = groups;
    state.counters["positions"] = groups > 0 ? (batch * hkv + groups - 1) / groups : 0;
  }
  if (used_cluster > 0) {  // wave quantization: resident clusters of the kernel that ran, and waves of the grid
    const int resident = sel.resident_clusters(used_cluster, ran);
    state.counters["resident"] = resident;
    state.counters["waves"] = resident > 0 ? static_cast<double>(batch) * hkv / resident : 0.0;
  }
  // pct_ceiling is filled by the reporter-independent rate below (same formula as GBps)
  state.counters["pct_ceiling"] =
      benchmark::Counter(key_bytes * 1e-9 * 100.0 / ceiling, benchmark::Counter::kIsIterationInvariantRate);
  cudaEventDestroy(e0);
  cudaEventDestroy(e1);
  cudaFree(d_slots);
  cudaFree(d_lens);
  cudaFree(d_q);
  cudaFree(d_ids);
  cudaFree(d_counts);
  cudaFree(ws);
  cudaStreamDestroy(s);
}

void BM_Stage1(benchmark::State& state, nosa::SelectPath path) { run(state, What::kStage1, path, 0); }
void BM_Stage1Scan(benchmark::State& state, nosa::ClusterScan scan) {
  run(state, What::kStage1, nosa::SelectPath::kCluster, 0, scan);
}
void BM_Select(benchmark::State& state, nosa::SelectPath path) { run(state, What::kSelect, path, 0); }
void BM_ClusterSize(benchmark::State& state, nosa::ClusterScan scan) {
  run(state, What::kStage1, nosa::SelectPath::kCluster, static_cast<int>(state.range(3)), scan);
}
void BM_HeadParts(benchmark::State& state) {
  run(state, What::kStage1, nosa::SelectPath::kSplit, 0, nosa::ClusterScan::kAuto, static_cast<int>(state.range(3)));
}

void shapes(benchmark::internal::Benchmark* b) {
  for (int batch : {1, 16, 64, 128})
    for (int hkv : {2, 8})
      for (int ctx : {16384, 32768, 131072}) b->Args({batch, hkv, ctx});
  b->ArgNames({"batch", "hkv", "ctx"})->UseManualTime()->Unit(benchmark::kMicrosecond);
}

void head_parts(benchmark::internal::Benchmark* b) {
  for (int batch : {1, 16, 64, 128})
    for (int hkv : {2, 8}) {
      for (int n : {10, 12, 16, 20, 24, 32, 48, 64}) b->Args({batch, hkv, 32768, n});
      for (int n : {16, 20, 24, 32, 37, 40, 43, 48, 56, 64, 86, 128}) b->Args({batch, hkv, 131072, n});
    }
  b->ArgNames({"batch", "hkv", "ctx", "parts"})->UseManualTime()->Unit(benchmark::kMicrosecond);
}

void cluster_sizes(benchmark::internal::Benchmark* b) {
  for (int batch : {1, 16, 128})
    for (int hkv : {2, 8})
      for (int c = 2; c <= 16; ++c) b->Args({batch, hkv, 131072, c});
  b->ArgNames({"batch", "hkv", "ctx", "C"})->UseManualTime()->Unit(benchmark::kMicrosecond);
}

}  // namespace

BENCHMARK_CAPTURE(BM_Stage1, auto, nosa::SelectPath::kAuto)->Apply(shapes);
BENCHMARK_CAPTURE(BM_Stage1, global, nosa::SelectPath::kGlobal)->Apply(shapes);
BENCHMARK_CAPTURE(BM_Stage1, cluster, nosa::SelectPath::kCluster)->Apply(shapes);
BENCHMARK_CAPTURE(BM_Stage1, split, nosa::SelectPath::kSplit)->Apply(shapes);
BENCHMARK_CAPTURE(BM_Stage1Scan, shared_logits, nosa::ClusterScan::kSharedLogits)->Apply(shapes);
BENCHMARK_CAPTURE(BM_Stage1Scan, register_logits, nosa::ClusterScan::kRegisterLogits)->Apply(shapes);
BENCHMARK_CAPTURE(BM_Select, auto, nosa::SelectPath::kAuto)->Apply(shapes);
BENCHMARK_CAPTURE(BM_Select, global, nosa::SelectPath::kGlobal)->Apply(shapes);
BENCHMARK_CAPTURE(BM_Select, cluster, nosa::SelectPath::kCluster)->Apply(shapes);
BENCHMARK_CAPTURE(BM_Select, split, nosa::SelectPath::kSplit)->Apply(shapes);
BENCHMARK(BM_HeadParts)->Apply(head_parts);
BENCHMARK_CAPTURE(BM_ClusterSize, auto, nosa::ClusterScan::kAuto)->Apply(cluster_sizes);
BENCHMARK_CAPTURE(BM_ClusterSize, register_logits, nosa::ClusterScan::kRegisterLogits)->Apply(cluster_sizes);
BENCHMARK_MAIN();
