// Shared pieces of the nosa benchmarks: error checks that abort (a benchmark has no caller to
// report to) and the ceilings every benchmark reports against, measured in the same binary and
// the same run as the kernels (DESIGN.md section 5):
//   hbm_copy_ceiling_gbps()    device-to-device cudaMemcpy, bytes read + written / time;
//   pinned_h2d_ceiling_gbps()  pinned host -> device cudaMemcpy, bytes / time.
// Both take the median of the timed repetitions after warm-up ones.
#pragma once

#include <nosa/status.h>

#include <benchmark/benchmark.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstddef>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>

#define NOSA_BENCH_CUDA(expr)                                                             \
  do {                                                                                    \
    cudaError_t e_ = (expr);                                                              \
    if (e_ != cudaSuccess) {                                                              \
      std::fprintf(stderr, "%s failed: %s\n", #expr, cudaGetErrorString(e_));            \
      std::exit(1);                                                                       \
    }                                                                                     \
  } while (0)

#define NOSA_BENCH_OK(expr)                                                               \
  do {                                                                                    \
    nosa::Status s_ = (expr);                                                             \
    if (!s_.ok()) {                                                                       \
      std::fprintf(stderr, "%s failed: %s\n", #expr, s_.to_string().c_str());            \
      std::exit(1);                                                                       \
    }                                                                                     \
  } while (0)

namespace nosa_bench {

/// Median time in seconds of `reps` calls of `copy(stream)` after `warmup` untimed ones, each
/// timed alone with CUDA events on a non-blocking stream.
template <class Copy>
double median_copy_seconds(Copy&& copy, int warmup, int reps) {
  cudaStream_t s;
  NOSA_BENCH_CUDA(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
  cudaEvent_t e0, e1;
  NOSA_BENCH_CUDA(cudaEventCreate(&e0));
  NOSA_BENCH_CUDA(cudaEventCreate(&e1));
  std::vector<float> ms;
  for (int i = 0; i < warmup + reps; ++i) {
    NOSA_BENCH_CUDA(cudaEventRecord(e0, s));
    copy(s);
    NOSA_BENCH_CUDA(cudaEventRecord(e1, s));
    NOSA_BENCH_CUDA(cudaEventSynchronize(e1));
    float t = 0;
    NOSA_BENCH_CUDA(cudaEventElapsedTime(&t, e0, e1));
    if (i >= warmup) ms.push_back(t);
  }
  NOSA_BENCH_CUDA(cudaEventDestroy(e0));
  NOSA_BENCH_CUDA(cudaEventDestroy(e1));
  NOSA_BENCH_CUDA(cudaStreamDestroy(s));
  std::sort(ms.begin(), ms.end());
  return ms[ms.size() / 2] * 1e-3;
}

/// HBM ceiling: a device-to-device cudaMemcpy of `bytes`, counting bytes read + written (GB/s).
inline double hbm_copy_ceiling_gbps(std::size_t bytes = std::size_t(1) << 30, int reps = 10) {
  void *a = nullptr, *b = nullptr;
  NOSA_BENCH_CUDA(cudaMalloc(&a, bytes));
  NOSA_BENCH_CUDA(cudaMalloc(&b, bytes));
  NOSA_BENCH_CUDA(cudaMemset(a, 1, bytes));
  const double sec = median_copy_seconds(
      [&](cudaStream_t s) { NOSA_BENCH_CUDA(cudaMemcpyAsync(b, a, bytes, cudaMemcpyDeviceToDevice, s)); }, 3, reps);
  NOSA_BENCH_CUDA(cudaFree(a));
  NOSA_BENCH_CUDA(cudaFree(b));
  return 2.0 * static_cast<double>(bytes) / sec / 1e9;
}

/// PCIe ceiling: a pinned host -> device cudaMemcpy of `bytes` (GB/s).
inline double pinned_h2d_ceiling_gbps(std::size_t bytes = std::size_t(64) << 20, int reps = 20) {
  void *h = nullptr, *d = nullptr;
  NOSA_BENCH_CUDA(cudaHostAlloc(&h, bytes, cudaHostAllocDefault));
  NOSA_BENCH_CUDA(cudaMalloc(&d, bytes));
  std::memset(h, 1, bytes);
  const double sec = median_copy_seconds(
      [&](cudaStream_t s) { NOSA_BENCH_CUDA(cudaMemcpyAsync(d, h, bytes, cudaMemcpyHostToDevice, s)); }, 5, reps);
  NOSA_BENCH_CUDA(cudaFreeHost(h));
  NOSA_BENCH_CUDA(cudaFree(d));
  return static_cast<double>(bytes) / sec / 1e9;
}

/// A pair of CUDA events around one timed region.
struct EventTimer {
  cudaEvent_t e0{}, e1{};
  EventTimer() {
    NOSA_BENCH_CUDA(cudaEventCreate(&e0));
    NOSA_BENCH_CUDA(cudaEventCreate(&e1));
  }
  ~EventTimer() {
    cudaEventDestroy(e0);
    cudaEventDestroy(e1);
  }
  EventTimer(const EventTimer&) = delete;
  EventTimer& operator=(const EventTimer&) = delete;
};

/// The manual-time loop of a benchmark: every iteration times one `launch(set)` on `stream`
/// alone with CUDA events, rotating over `sets` input sets (so the L2 cache never serves a
/// previous iteration's data), after `warmup` untimed launches. Returns the summed seconds.
template <class Launch>
double timed_iterations(benchmark::State& state, cudaStream_t stream, int sets, int warmup, Launch&& launch) {
  for (int i = 0; i < warmup; ++i) launch(i % sets);
  NOSA_BENCH_CUDA(cudaStreamSynchronize(stream));
  EventTimer timer;
  double total = 0;
  int it = 0;
  for (auto _ : state) {
    NOSA_BENCH_CUDA(cudaEventRecord(timer.e0, stream));
    launch(it++ % sets);
    NOSA_BENCH_CUDA(cudaEventRecord(timer.e1, stream));
    NOSA_BENCH_CUDA(cudaEventSynchronize(timer.e1));
    float ms = 0;
    NOSA_BENCH_CUDA(cudaEventElapsedTime(&ms, timer.e0, timer.e1));
    state.SetIterationTime(ms * 1e-3);
    total += ms * 1e-3;
  }
  return total;
}

}  // namespace nosa_bench
