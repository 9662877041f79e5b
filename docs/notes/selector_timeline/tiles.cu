// Scratch (not part of the project): per-tile timeline of the register cluster kernel, built
// against a copy of include/ patched by instrument_tiles.py.
#include <nosa/selector.cuh>
#include <cuda_runtime.h>
#include <cuda_bf16.h>
#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <vector>
#define CK(x) do { cudaError_t e_ = (x); if (e_ != cudaSuccess) { std::printf("%s: %s\n", #x, cudaGetErrorString(e_)); std::exit(1); } } while (0)
using Geo = nosa::Geometry<64, 128, 16>;
using T = nosa::bfloat16_t;
using Sel = nosa::DeviceSelector<Geo, nosa::NosaSelector, T>;
__device__ unsigned hash32(unsigned x) { x ^= x >> 16; x *= 0x7feb352du; x ^= x >> 15; x *= 0x846ca68bu; x ^= x >> 16; return x; }
__global__ void fill_bf16(__nv_bfloat16* p, size_t n, unsigned seed, float scale) {
  for (size_t e = blockIdx.x * size_t(blockDim.x) + threadIdx.x; e < n; e += size_t(gridDim.x) * blockDim.x)
    p[e] = __float2bfloat16((hash32(unsigned(e) ^ seed) * 2.3283064e-10f - 0.5f) * scale);
}
__global__ void fill_f32(float* p, size_t n, unsigned seed, float scale) {
  for (size_t e = blockIdx.x * size_t(blockDim.x) + threadIdx.x; e < n; e += size_t(gridDim.x) * blockDim.x)
    p[e] = (hash32(unsigned(e) ^ seed) * 2.3283064e-10f - 0.5f) * scale;
}
template <class F> float time_ms(cudaStream_t s, F f, int reps = 10) {
  cudaEvent_t a, b; CK(cudaEventCreate(&a)); CK(cudaEventCreate(&b));
  f(); f(); CK(cudaStreamSynchronize(s));
  std::vector<float> v;
  for (int r = 0; r < 5; ++r) {
    CK(cudaEventRecord(a, s)); for (int i = 0; i < reps; ++i) f(); CK(cudaEventRecord(b, s)); CK(cudaEventSynchronize(b));
    float ms; CK(cudaEventElapsedTime(&ms, a, b)); v.push_back(ms / reps);
  }
  std::sort(v.begin(), v.end()); return v[v.size() / 2];
}
void run(int batch, int hkv, int ctx) {
  cudaStream_t s; CK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
  nosa::DeviceSelectorConfig cfg; cfg.max_sequences = batch; cfg.num_kv_heads = hkv; cfg.max_batch = batch; cfg.max_tokens = ctx;
  size_t bytes = 0; if (!Sel::workspace_bytes(cfg, &bytes).ok()) std::exit(2);
  void* ws; CK(cudaMalloc(&ws, bytes)); Sel sel; if (!Sel::create(cfg, ws, bytes, &sel).ok()) std::exit(3);
  if (!sel.initialize(s).ok()) std::exit(3);
  const auto& st = sel.state(); const int nc = sel.max_compressed();
  const size_t nkeys = size_t(batch) * hkv * nc * Geo::head_dim;
  fill_bf16<<<1024, 256, 0, s>>>(reinterpret_cast<__nv_bfloat16*>(st.keys), nkeys, 1u, 4.f);
  fill_f32<<<1024, 256, 0, s>>>(st.cbias, size_t(batch) * hkv * nc, 2u, 2.f);
  std::vector<int> slots(batch), lens(batch, ctx); for (int i = 0; i < batch; ++i) slots[i] = i;
  int *d_slots, *d_lens, *d_ids, *d_counts; T* d_q; const size_t qn = size_t(batch) * hkv * 16 * 128;
  CK(cudaMalloc(&d_slots, batch * 4)); CK(cudaMalloc(&d_lens, batch * 4)); CK(cudaMalloc(&d_q, qn * 2));
  CK(cudaMalloc(&d_ids, size_t(batch) * hkv * 64 * 4)); CK(cudaMalloc(&d_counts, size_t(batch) * hkv * 4));
  CK(cudaMemcpyAsync(d_slots, slots.data(), batch * 4, cudaMemcpyHostToDevice, s));
  CK(cudaMemcpyAsync(d_lens, lens.data(), batch * 4, cudaMemcpyHostToDevice, s));
  CK(cudaMemcpyAsync(st.counts, lens.data(), batch * 4, cudaMemcpyHostToDevice, s));
  fill_bf16<<<256, 256, 0, s>>>(reinterpret_cast<__nv_bfloat16*>(d_q), qn, 3u, 1.f);
  nosa::SelectArgs<T> a; a.batch = batch; a.seq_slots = d_slots; a.seq_lens = d_lens; a.max_seq_len = ctx; a.q = d_q;
  a.block_ids = d_ids; a.block_stride = 64; a.counts = d_counts; a.path = nosa::SelectPath::kCluster;
  a.cluster_scan = nosa::ClusterScan::kRegisterLogits;
  auto call = [&] { nosa::Status r = sel.stage1_only(a, s); if (!r.ok()) { std::printf("%s\n", r.to_string().c_str()); std::exit(4); } };
  const float ms = time_ms(s, call);
  void* tt; CK(cudaGetSymbolAddress(&tt, nosa::detail::nosa_tt)); CK(cudaMemset(tt, 0, 8192 * 24 * 8));
  call(); CK(cudaStreamSynchronize(s));
  std::vector<unsigned long long> h(8192 * 24); CK(cudaMemcpy(h.data(), tt, h.size() * 8, cudaMemcpyDeviceToHost));
  const int C = sel.cluster_size_for(batch, nosa::SelectPath::kCluster);
  const int n = std::min(8192, C * hkv * batch);
  unsigned long long t0 = ~0ull, tend = 0;
  for (int c = 0; c < n; ++c) { t0 = std::min(t0, h[c * 24]); tend = std::max(tend, h[c * 24 + 22]); }
  const double span = (tend - t0) * 1e-3;
  const double cta_bytes = double(nc) / C * 256.0;
  std::printf("%3dx%d ctx %6d C %2d CTAs %5d: event %.1f us, span %.1f us, %.0f KiB per CTA\n", batch, hkv, ctx, C, n, ms * 1e3, span, cta_bytes / 1024);
  for (int group = 0; group < 2; ++group) {  // 0: CTAs started in the first 10 % of the span, 1: later
    double pro = 0, wait[9] = {}, comp[9] = {}, scan = 0, end = 0; int m = 0;
    for (int c = 0; c < n; ++c) {
      const unsigned long long* r = &h[c * 24];
      const bool late = (r[0] - t0) * 1e-3 > 0.1 * span;
      if (late != (group == 1)) continue;
      ++m; pro += r[1] - r[0]; scan += r[21] - r[0]; end += r[22] - r[21];
      for (int k = 0; k < 9; ++k) { wait[k] += r[2 + k] - (k == 0 ? r[1] : r[12 + k - 1]); comp[k] += r[12 + k] - r[2 + k]; }
    }
    if (m == 0) continue;
    std::printf("   %s CTAs %4d: prologue (q landed) %.2f us, scan %.2f us (%.1f GB/s per CTA), end %.2f us\n      per tile wait / compute (us):",
                group ? "late " : "early", m, pro / m * 1e-3, scan / m * 1e-3, cta_bytes / (scan / m), end / m * 1e-3);
    for (int k = 0; k < 9; ++k) std::printf(" %.2f/%.2f", wait[k] / m * 1e-3, comp[k] / m * 1e-3);
    std::printf("\n");
  }
  cudaFree(d_slots); cudaFree(d_lens); cudaFree(d_q); cudaFree(d_ids); cudaFree(d_counts); cudaFree(ws); cudaStreamDestroy(s);
}
int main() {
  cudaDeviceProp prop; CK(cudaGetDeviceProperties(&prop, 0));
#ifdef NOSA_TT_NOCOMPUTE
  std::printf("device %s: register kernel WITHOUT products (copy pipeline only)\n", prop.name);
#else
  std::printf("device %s: register kernel\n", prop.name);
#endif
  for (auto sh : {std::pair<int, int>{1, 1}, {1, 2}, {16, 2}, {16, 8}}) run(sh.first, sh.second, 131072);
  return 0;
}
