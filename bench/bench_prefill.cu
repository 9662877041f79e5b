// Prefill throughput of one sequence: dense causal attention (baseline without bias, NOSA^F with
// bias) and NOSA^S / InfLLM-V2 sparse prefill (compression + per-row selection + block-sparse
// attention), for 32K and 128K prompts, Hkv = 2, G = 16, D = 128, bf16, B = 64, release
// selection parameters; plus B = 32 and B = 128 at 32K (same parameters, counted in blocks of
// B, so the token budget scales with B; dense attention does not depend on B). Manual time
// from CUDA events, one warm-up call before timing.
//
// Counters: tokens/s (prompt tokens per second), TFLOP/s of the attention's useful work
// (4*D FLOPs per (query head, attended token) pair: causal pairs for dense, the selected tokens
// for sparse), and pct_of_mm: that rate as a share of the bf16 matrix-multiply rate measured in
// the same binary before the benchmarks (cuBLAS, 8192^3 bf16 -> fp32 accumulate, random inputs).
#include <benchmark/benchmark.h>

#include <nosa/prefill.cuh>

#include "bench_util.cuh"

#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <vector>

namespace {

constexpr int kD = 128, kG = 16, kHkv = 2, kHq = kHkv * kG;
double g_matmul_tflops = 0;  // measured by measure_matmul_ceiling() before the benchmarks run
using T = nosa::bfloat16_t;
template <int B>
using GeoOf = nosa::Geometry<B, kD, kG, nosa::HeadLayout::kHND>;


__device__ __forceinline__ float hash_uniform(unsigned long long i, unsigned seed) {
  unsigned long long x = i * 0x9E3779B97F4A7C15ull + seed * 0xD1B54A32D192ED03ull;
  x ^= x >> 31;
  x *= 0xBF58476D1CE4E5B9ull;
  x ^= x >> 29;
  return static_cast<float>(x >> 40) * (2.0f / 16777216.0f) - 1.0f;
}
// Keys with a few query-aligned blocks (a sign pattern per head), smooth bias: the selection
// then has clear winners, like real text, instead of near-uniform scores.
__global__ void fill_kernel(__nv_bfloat16* x, long long n, unsigned seed, float scale, float dir_scale, int hot_mod,
                            long long tokens_per_head) {
  for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x) {
    const int d = static_cast<int>(i % kD);
    const long long t = (i / kD) % tokens_per_head;
    const float dir = hash_uniform(d, 99) < 0 ? -1.f : 1.f;
    const bool hot = hot_mod > 0 && (((t / 64) * 2654435761ull) >> 7) % hot_mod == 0;
    x[i] = __float2bfloat16_rn(scale * hash_uniform(i, seed) + (hot || hot_mod < 0 ? dir_scale * dir : 0.f));
  }
}
__global__ void fill_bias_kernel(float* b, long long n, long long L) {
  for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x)
    b[i] = 1.5f * __sinf(0.013f * static_cast<float>(i % L) + static_cast<float>(i / L)) + 0.3f * hash_uniform(i, 5);
}

template <int B>
struct Problem {
  using Geo = GeoOf<B>;
  long long L = 0;
  T *q = nullptr, *k = nullptr, *v = nullptr, *o = nullptr, *hi = nullptr, *lo = nullptr;
  float *bias = nullptr, *lse = nullptr, *scores = nullptr;
  int *ids = nullptr, *counts = nullptr;
  void* ws = nullptr;
  std::size_t ws_bytes = 0;
  int rows_per_pass = 8192;
  int nc = 0;
  cudaStream_t stream = nullptr;
  nosa::SelectionParams params;

  explicit Problem(long long len) : L(len) {
    NOSA_BENCH_CUDA(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
    const std::size_t qn = static_cast<std::size_t>(L) * kHq * kD, kvn = static_cast<std::size_t>(kHkv) * L * kD;
    nc = nosa::detail::num_compressed(L, params.window, params.stride);
    NOSA_BENCH_CUDA(cudaMalloc(&q, qn * 2));
    NOSA_BENCH_CUDA(cudaMalloc(&o, qn * 2));
    NOSA_BENCH_CUDA(cudaMalloc(&k, kvn * 2));
    NOSA_BENCH_CUDA(cudaMalloc(&v, kvn * 2));
    NOSA_BENCH_CUDA(cudaMalloc(&bias, kHkv * L * 4));
    NOSA_BENCH_CUDA(cudaMalloc(&lse, static_cast<std::size_t>(L) * kHq * 4));
    NOSA_BENCH_CUDA(cudaMalloc(&hi, static_cast<std::size_t>(kHkv) * nc * kD * 2));
    NOSA_BENCH_CUDA(cudaMalloc(&lo, static_cast<std::size_t>(kHkv) * nc * kD * 2));
    NOSA_BENCH_CUDA(cudaMalloc(&scores, static_cast<std::size_t>(kHkv) * nc * 4));
    NOSA_BENCH_CUDA(cudaMalloc(&ids, static_cast<std::size_t>(L) * kHkv * params.budget * 4));
    NOSA_BENCH_CUDA(cudaMalloc(&counts, static_cast<std::size_t>(L) * kHkv * 4));
    ws_bytes = nosa::prefill_select_workspace<Geo>(kHkv, L, rows_per_pass).total_bytes();
    NOSA_BENCH_CUDA(cudaMalloc(&ws, ws_bytes));
    fill_kernel<<<1024, 256, 0, stream>>>(reinterpret_cast<__nv_bfloat16*>(q), qn, 1, 1.5f, 0.4f, -1, L);
    fill_kernel<<<1024, 256, 0, stream>>>(reinterpret_cast<__nv_bfloat16*>(k), kvn, 2, 1.0f, 0.6f, 6, L);
    fill_kernel<<<1024, 256, 0, stream>>>(reinterpret_cast<__nv_bfloat16*>(v), kvn, 3, 1.0f, 0.f, 0, L);
    fill_bias_kernel<<<256, 256, 0, stream>>>(bias, kHkv * L, L);
    NOSA_BENCH_CUDA(cudaStreamSynchronize(stream));
  }
  ~Problem() {
    for (void* p : {(void*)q, (void*)o, (void*)k, (void*)v, (void*)bias, (void*)lse, (void*)hi, (void*)lo, (void*)scores,
                    (void*)ids, (void*)counts, ws})
      cudaFree(p);
    cudaStreamDestroy(stream);
  }
  nosa::PrefillKV<T> kv() const {
    nosa::PrefillKV<T> r;
    r.k = k;
    r.v = v;
    r.bias = bias;
    r.kv_stride = L;
    r.length = L;
    r.num_kv_heads = kHkv;
    return r;
  }
  nosa::Status attention(bool sparse, bool use_bias) const {
    nosa::PrefillAttentionArgs<T> a;
    a.kv = kv();
    a.first_row = 0;
    a.num_rows = L;
    a.q = q;
    a.o = o;
    a.lse = lse;
    a.use_bias = use_bias;
    a.mode = sparse ? nosa::PrefillAttention::kSparse : nosa::PrefillAttention::kDense;
    a.block_ids = ids;
    a.counts = counts;
    a.max_selected = params.budget;
    return nosa::prefill_attention<Geo, T>(a, stream);
  }
  nosa::Status select(nosa::SelectorKind kind, bool use_lo) const {
    nosa::PrefillCompressed<T> c;
    c.keys_hi = hi;
    c.keys_lo = use_lo ? lo : nullptr;
    c.scores = scores;
    c.capacity = nc;
    NOSA_RETURN_IF_ERROR((nosa::prefill_compress<Geo, T>(kv(), params, c, 0, stream)));
    nosa::PrefillSelectArgs<T> s;
    s.selector = kind;
    s.params = params;
    s.compressed = c;
    s.num_kv_heads = kHkv;
    s.first_row = 0;
    s.num_rows = L;
    s.q = q;
    s.block_ids = ids;
    s.counts = counts;
    return nosa::prefill_select<Geo, T>(s, ws, ws_bytes, L, rows_per_pass, stream);
  }
  /// Useful attention FLOPs of the sparse pass: 4*D per (query head, selected token).
  double sparse_flops() const {
    std::vector<int> c(static_cast<std::size_t>(L) * kHkv);
    NOSA_BENCH_CUDA(cudaMemcpy(c.data(), counts, c.size() * 4, cudaMemcpyDeviceToHost));
    double pairs = 0;
    for (long long i = 0; i < L; ++i)
      for (int h = 0; h < kHkv; ++h)  // the current block (always selected) holds i%B+1 tokens
        pairs += static_cast<double>(c[i * kHkv + h]) * B - (B - 1 - i % B);
    return pairs * kG * 4.0 * kD;
  }
};

void report(benchmark::State& state, long long L, double seconds_per_iter, double flops) {
  state.counters["tokens_per_s"] = benchmark::Counter(static_cast<double>(L) / seconds_per_iter);
  const double tflops = flops / seconds_per_iter / 1e12;
  state.counters["attn_TFLOP_s"] = tflops;
  state.counters["pct_of_mm"] = 100.0 * tflops / g_matmul_tflops;
}

// mode 0: dense no bias (baseline), 1: dense with bias (NOSA^F)
template <int B>
void run_dense(benchmark::State& state) {
  const long long L = state.range(0);
  const bool bias = state.range(1) != 0;
  Problem<B> p(L);
  cudaEvent_t e0, e1;
  NOSA_BENCH_CUDA(cudaEventCreate(&e0));
  NOSA_BENCH_CUDA(cudaEventCreate(&e1));
  NOSA_BENCH_OK(p.attention(false, bias));
  double total = 0;
  for (auto _ : state) {
    NOSA_BENCH_CUDA(cudaEventRecord(e0, p.stream));
    NOSA_BENCH_OK(p.attention(false, bias));
    NOSA_BENCH_CUDA(cudaEventRecord(e1, p.stream));
    NOSA_BENCH_CUDA(cudaEventSynchronize(e1));
    float ms = 0;
    NOSA_BENCH_CUDA(cudaEventElapsedTime(&ms, e0, e1));
    state.SetIterationTime(ms / 1e3);
    total += ms / 1e3;
  }
  const double flops = 4.0 * kD * kHq * (static_cast<double>(L) * (L + 1) / 2);
  report(state, L, total / state.iterations(), flops);
  cudaEventDestroy(e0);
  cudaEventDestroy(e1);
}

// Sparse prefill: compression + selection + attention; the selection and attention shares are
// reported as select_ms / attn_ms, attn_TFLOP_s counts the attention time only.
template <int B>
void run_sparse(benchmark::State& state) {
  const long long L = state.range(0);
  const auto kind = state.range(1) == 0 ? nosa::SelectorKind::kNosa : nosa::SelectorKind::kInfllmV2;
  const bool bias = kind == nosa::SelectorKind::kNosa;
  const bool use_lo = state.range(2) != 0;  // 0: stage 1 on bf16-rounded compressed keys only
  Problem<B> p(L);
  cudaEvent_t e0, e1, e2;
  NOSA_BENCH_CUDA(cudaEventCreate(&e0));
  NOSA_BENCH_CUDA(cudaEventCreate(&e1));
  NOSA_BENCH_CUDA(cudaEventCreate(&e2));
  NOSA_BENCH_OK(p.select(kind, use_lo));
  NOSA_BENCH_OK(p.attention(true, bias));
  NOSA_BENCH_CUDA(cudaStreamSynchronize(p.stream));
  double sel_total = 0, attn_total = 0;
  for (auto _ : state) {
    NOSA_BENCH_CUDA(cudaEventRecord(e0, p.stream));
    NOSA_BENCH_OK(p.select(kind, use_lo));
    NOSA_BENCH_CUDA(cudaEventRecord(e1, p.stream));
    NOSA_BENCH_OK(p.attention(true, bias));
    NOSA_BENCH_CUDA(cudaEventRecord(e2, p.stream));
    NOSA_BENCH_CUDA(cudaEventSynchronize(e2));
    float ms_sel = 0, ms_attn = 0;
    NOSA_BENCH_CUDA(cudaEventElapsedTime(&ms_sel, e0, e1));
    NOSA_BENCH_CUDA(cudaEventElapsedTime(&ms_attn, e1, e2));
    state.SetIterationTime((ms_sel + ms_attn) / 1e3);
    sel_total += ms_sel / 1e3;
    attn_total += ms_attn / 1e3;
  }
  const double n = static_cast<double>(state.iterations());
  const double flops = p.sparse_flops();
  report(state, L, (sel_total + attn_total) / n, flops);
  state.counters["attn_TFLOP_s"] = flops / (attn_total / n) / 1e12;
  state.counters["pct_of_mm"] = 100.0 * flops / (attn_total / n) / 1e12 / g_matmul_tflops;
  state.counters["select_ms"] = 1e3 * sel_total / n;
  state.counters["attn_ms"] = 1e3 * attn_total / n;
  state.counters["avg_sel_tokens"] = flops / (4.0 * kD * kHq) / static_cast<double>(L);
  cudaEventDestroy(e0);
  cudaEventDestroy(e1);
  cudaEventDestroy(e2);
}

/// The block size B is the last benchmark argument (compiled in: 32, 64, 128).
template <template <int> class Fn>
void by_block_size(benchmark::State& state, int arg) {
  switch (state.range(arg)) {
    case 32: return Fn<32>::run(state);
    case 64: return Fn<64>::run(state);
    case 128: return Fn<128>::run(state);
    default: state.SkipWithError("block size B must be 32, 64 or 128");
  }
}
template <int B>
struct Dense {
  static void run(benchmark::State& state) { run_dense<B>(state); }
};
template <int B>
struct Sparse {
  static void run(benchmark::State& state) { run_sparse<B>(state); }
};
void BM_dense(benchmark::State& state) { by_block_size<Dense>(state, 2); }
void BM_sparse(benchmark::State& state) { by_block_size<Sparse>(state, 3); }

}  // namespace

BENCHMARK(BM_dense)->ArgNames({"L", "bias", "B"})->Args({32768, 0, 64})->Args({32768, 1, 64})->Args({131072, 0, 64})
    ->Args({131072, 1, 64})->Args({32768, 1, 32})->Args({32768, 1, 128})
    ->UseManualTime()->Unit(benchmark::kMillisecond)->Iterations(3);
BENCHMARK(BM_sparse)->ArgNames({"L", "infllm", "lo", "B"})->Args({32768, 0, 1, 64})->Args({32768, 1, 1, 64})
    ->Args({32768, 0, 0, 64})->Args({131072, 0, 1, 64})->Args({131072, 1, 1, 64})->Args({131072, 0, 0, 64})
    ->Args({32768, 0, 1, 32})->Args({32768, 1, 1, 32})->Args({32768, 0, 1, 128})->Args({32768, 1, 1, 128})
    ->UseManualTime()->Unit(benchmark::kMillisecond)->Iterations(3);

namespace {

__global__ void fill_random_bf16(__nv_bfloat16* x, std::size_t n, unsigned seed) {
  for (std::size_t i = blockIdx.x * static_cast<std::size_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<std::size_t>(gridDim.x) * blockDim.x) {
    unsigned h = static_cast<unsigned>(i) * 2654435761u ^ seed;
    h ^= h >> 13;
    h *= 0x5bd1e995u;
    h ^= h >> 15;
    x[i] = __float2bfloat16((static_cast<float>(h & 0xffff) / 65536.f - 0.5f));
  }
}

/// The bf16 tensor-core rate of this GPU: median of 10 cuBLAS 8192^3 products (fp32 accumulate)
/// on random data, after 3 warm-ups (METHOD.md: never time on zeros).
double measure_matmul_ceiling() {
  constexpr int n = 8192;
  const std::size_t elems = static_cast<std::size_t>(n) * n;
  __nv_bfloat16 *a, *b, *c;
  NOSA_BENCH_CUDA(cudaMalloc(&a, elems * sizeof(__nv_bfloat16)));
  NOSA_BENCH_CUDA(cudaMalloc(&b, elems * sizeof(__nv_bfloat16)));
  NOSA_BENCH_CUDA(cudaMalloc(&c, elems * sizeof(__nv_bfloat16)));
  fill_random_bf16<<<1024, 256>>>(a, elems, 1u);
  fill_random_bf16<<<1024, 256>>>(b, elems, 2u);
  NOSA_BENCH_CUDA(cudaGetLastError());
  cublasHandle_t handle;
  if (cublasCreate(&handle) != CUBLAS_STATUS_SUCCESS) {
    std::fprintf(stderr, "cublasCreate failed\n");
    std::exit(1);
  }
  const float alpha = 1.f, beta = 0.f;
  auto gemm = [&] {
    if (cublasGemmEx(handle, CUBLAS_OP_N, CUBLAS_OP_N, n, n, n, &alpha, a, CUDA_R_16BF, n, b, CUDA_R_16BF, n, &beta, c,
                     CUDA_R_16BF, n, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT) != CUBLAS_STATUS_SUCCESS) {
      std::fprintf(stderr, "cublasGemmEx failed\n");
      std::exit(1);
    }
  };
  cudaEvent_t e0, e1;
  NOSA_BENCH_CUDA(cudaEventCreate(&e0));
  NOSA_BENCH_CUDA(cudaEventCreate(&e1));
  for (int i = 0; i < 3; ++i) gemm();
  std::vector<float> ms(10);
  for (float& t : ms) {
    NOSA_BENCH_CUDA(cudaEventRecord(e0));
    gemm();
    NOSA_BENCH_CUDA(cudaEventRecord(e1));
    NOSA_BENCH_CUDA(cudaEventSynchronize(e1));
    NOSA_BENCH_CUDA(cudaEventElapsedTime(&t, e0, e1));
  }
  std::sort(ms.begin(), ms.end());
  const double median_s = 0.5 * (ms[4] + ms[5]) * 1e-3;
  cublasDestroy(handle);
  cudaEventDestroy(e0);
  cudaEventDestroy(e1);
  cudaFree(a);
  cudaFree(b);
  cudaFree(c);
  return 2.0 * n * n * static_cast<double>(n) / median_s / 1e12;
}

}  // namespace

int main(int argc, char** argv) {
  g_matmul_tflops = measure_matmul_ceiling();
  cudaDeviceProp prop;
  NOSA_BENCH_CUDA(cudaGetDeviceProperties(&prop, 0));
  std::printf("GPU %s: cuBLAS bf16 8192^3 matmul %.0f TFLOP/s (measured now; the pct_of_mm ceiling)\n", prop.name,
              g_matmul_tflops);
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
