// Internals of the prefill GPU test wrappers shared by prefill_launch.cu (CI instantiations,
// registry, bad-input cases) and prefill_launch_full_*.cu (the NOSA_FULL_MATRIX instantiations,
// split by head dim so a parallel build compiles them side by side).
#pragma once

#include "cuda/prefill_launch.h"

#include <nosa/prefill.cuh>

#include <cuda_runtime.h>

#include <cstring>
#include <type_traits>
#include <vector>

namespace nosa_test {
namespace prefill_detail {

#define NOSA_PF_TRY(expr)                                                                                     \
  do {                                                                                                   \
    cudaError_t e_ = (expr);                                                                             \
    if (e_ != cudaSuccess) return nosa::Status(nosa::StatusCode::kCudaError, std::string(#expr) + ": " + cudaGetErrorString(e_)); \
  } while (0)

/// Device buffer freed on scope exit.
struct Buf {
  void* p = nullptr;
  Buf() = default;
  Buf(const Buf&) = delete;
  Buf& operator=(const Buf&) = delete;
  ~Buf() { if (p) cudaFree(p); }
  cudaError_t alloc(std::size_t bytes) { return cudaMalloc(&p, bytes < 256 ? 256 : bytes); }
  template <class T> T* as() const { return static_cast<T*>(p); }
};
template <class T>
cudaError_t upload(Buf& b, const std::vector<T>& v) {
  cudaError_t e = b.alloc(v.size() * sizeof(T));
  if (e != cudaSuccess) return e;
  return v.empty() ? cudaSuccess : cudaMemcpy(b.p, v.data(), v.size() * sizeof(T), cudaMemcpyHostToDevice);
}
struct Stream {
  cudaStream_t s = nullptr;
  ~Stream() { if (s) cudaStreamDestroy(s); }
};

/// The problem's float values as elements of T (exact: they were rounded to T when made).
template <class T>
std::vector<T> to_elements(const std::vector<float>& x) {
  std::vector<T> r(x.size());
  for (std::size_t i = 0; i < x.size(); ++i) r[i] = nosa::store_as<T>(x[i]);
  return r;
}

template <int B, int D, int G, class T>
nosa::Status run_impl(const PrefillProblem& pr, const PrefillRequest& rq, PrefillOutput& out) {
  static_assert(std::is_same_v<T, nosa::bfloat16_t> || std::is_same_v<T, nosa::float16_t>);
  using Geo = nosa::Geometry<B, D, G, nosa::HeadLayout::kHND>;
  const int Hkv = pr.num_kv_heads, Hq = Hkv * G;
  const long long L = pr.length;
  const nosa::SelectionParams& sp = pr.params;
  const int budget = sp.budget;
  Stream st;
  NOSA_PF_TRY(cudaStreamCreateWithFlags(&st.s, cudaStreamNonBlocking));
  Buf k, v, bias, q, o, lse, hi, lo, sc, ids, cnt, ws;
  NOSA_PF_TRY(upload(k, to_elements<T>(pr.k)));
  NOSA_PF_TRY(upload(v, to_elements<T>(pr.v)));
  NOSA_PF_TRY(upload(bias, pr.bias));
  NOSA_PF_TRY(upload(q, to_elements<T>(pr.q)));
  NOSA_PF_TRY(o.alloc(static_cast<std::size_t>(L) * Hq * D * sizeof(T)));
  NOSA_PF_TRY(lse.alloc(static_cast<std::size_t>(L) * Hq * sizeof(float)));
  const int nc = nosa::detail::num_compressed(L, sp.window, sp.stride);
  NOSA_PF_TRY(hi.alloc(static_cast<std::size_t>(Hkv) * nc * D * sizeof(T)));
  NOSA_PF_TRY(lo.alloc(static_cast<std::size_t>(Hkv) * nc * D * sizeof(T)));
  NOSA_PF_TRY(sc.alloc(static_cast<std::size_t>(Hkv) * nc * sizeof(float)));
  if (rq.given_ids != nullptr) {
    NOSA_PF_TRY(upload(ids, *rq.given_ids));
    NOSA_PF_TRY(upload(cnt, *rq.given_counts));
  } else {
    NOSA_PF_TRY(ids.alloc(static_cast<std::size_t>(L) * Hkv * budget * sizeof(int)));
    NOSA_PF_TRY(cnt.alloc(static_cast<std::size_t>(L) * Hkv * sizeof(int)));
    NOSA_PF_TRY(cudaMemset(ids.p, 0, static_cast<std::size_t>(L) * Hkv * budget * sizeof(int)));
  }
  const nosa::WorkspaceLayout layout = nosa::prefill_select_workspace<Geo>(Hkv, L, rq.rows_per_pass);
  NOSA_PF_TRY(ws.alloc(layout.total_bytes()));

  std::vector<long long> chunks = rq.chunks;
  if (chunks.empty()) chunks.push_back(L);
  nosa::PrefillCompressed<T> comp;
  comp.keys_hi = hi.as<T>();
  comp.keys_lo = rq.use_lo ? lo.as<T>() : nullptr;
  comp.scores = sc.as<float>();
  comp.capacity = nc;
  long long row = 0;
  int windows_done = 0;
  if (rq.use_graph) NOSA_PF_TRY(cudaStreamBeginCapture(st.s, cudaStreamCaptureModeGlobal));
  for (long long n : chunks) {
    // A chunk sees only the tokens up to its last row, as in chunked ingestion.
    nosa::PrefillKV<T> kv;
    kv.k = k.as<T>();
    kv.v = v.as<T>();
    kv.bias = bias.as<float>();
    kv.kv_stride = L;
    kv.length = row + n;
    kv.num_kv_heads = Hkv;
    if (rq.sparse && rq.given_ids == nullptr) {
      NOSA_RETURN_IF_ERROR((nosa::prefill_compress<Geo, T>(kv, sp, comp, windows_done, st.s)));
      windows_done = nosa::detail::num_compressed(row + n, sp.window, sp.stride);
      nosa::PrefillSelectArgs<T> sa;
      sa.selector = rq.selector;
      sa.params = sp;
      sa.compressed = comp;
      sa.num_kv_heads = Hkv;
      sa.first_row = row;
      sa.num_rows = n;
      sa.q = q.as<T>() + static_cast<std::size_t>(row) * Hq * D;
      sa.block_ids = ids.as<int>() + static_cast<std::size_t>(row) * Hkv * budget;
      sa.counts = cnt.as<int>() + static_cast<std::size_t>(row) * Hkv;
      NOSA_RETURN_IF_ERROR((nosa::prefill_select<Geo, T>(sa, ws.p, layout.total_bytes(), L, rq.rows_per_pass, st.s)));
    }
    nosa::PrefillAttentionArgs<T> aa;
    aa.kv = kv;
    aa.first_row = row;
    aa.num_rows = n;
    aa.q = q.as<T>() + static_cast<std::size_t>(row) * Hq * D;
    aa.o = o.as<T>() + static_cast<std::size_t>(row) * Hq * D;
    aa.lse = lse.as<float>() + static_cast<std::size_t>(row) * Hq;
    aa.mode = rq.sparse ? nosa::PrefillAttention::kSparse : nosa::PrefillAttention::kDense;
    aa.use_bias = rq.use_bias;
    if (rq.sparse) {
      aa.block_ids = ids.as<int>() + static_cast<std::size_t>(row) * Hkv * budget;
      aa.counts = cnt.as<int>() + static_cast<std::size_t>(row) * Hkv;
      aa.max_selected = budget;
    }
    NOSA_RETURN_IF_ERROR((nosa::prefill_attention<Geo, T>(aa, st.s)));
    row += n;
  }
  if (rq.use_graph) {
    cudaGraph_t graph = nullptr;
    NOSA_PF_TRY(cudaStreamEndCapture(st.s, &graph));
    cudaGraphExec_t exec = nullptr;
    const cudaError_t e = cudaGraphInstantiate(&exec, graph, 0);
    cudaGraphDestroy(graph);
    NOSA_PF_TRY(e);
    for (int replay = 0; replay < 2; ++replay) NOSA_PF_TRY(cudaGraphLaunch(exec, st.s));
    NOSA_PF_TRY(cudaStreamSynchronize(st.s));
    cudaGraphExecDestroy(exec);
  }
  if (row != L) return nosa::invalid_argument("run_prefill: chunks do not cover the prompt");
  NOSA_PF_TRY(cudaStreamSynchronize(st.s));
  NOSA_PF_TRY(cudaGetLastError());
  std::vector<T> o_host(static_cast<std::size_t>(L) * Hq * D);
  out.lse.resize(static_cast<std::size_t>(L) * Hq);
  NOSA_PF_TRY(cudaMemcpy(o_host.data(), o.p, o_host.size() * sizeof(T), cudaMemcpyDeviceToHost));
  out.o.resize(o_host.size());
  for (std::size_t i = 0; i < o_host.size(); ++i) out.o[i] = nosa::to_float(o_host[i]);
  NOSA_PF_TRY(cudaMemcpy(out.lse.data(), lse.p, out.lse.size() * sizeof(float), cudaMemcpyDeviceToHost));
  if (rq.sparse) {
    out.block_ids.resize(static_cast<std::size_t>(L) * Hkv * budget);
    out.counts.resize(static_cast<std::size_t>(L) * Hkv);
    NOSA_PF_TRY(cudaMemcpy(out.block_ids.data(), ids.p, out.block_ids.size() * sizeof(int), cudaMemcpyDeviceToHost));
    NOSA_PF_TRY(cudaMemcpy(out.counts.data(), cnt.p, out.counts.size() * sizeof(int), cudaMemcpyDeviceToHost));
  }
  return {};
}

using Runner = nosa::Status (*)(const PrefillProblem&, const PrefillRequest&, PrefillOutput&);
struct Entry {
  PrefillConfig config;
  Runner run;
};

/// One registry entry per dtype of Geometry<B, D, G>.
template <int B, int D, int G>
void add_both_dtypes(std::vector<Entry>& list) {
  list.push_back({PrefillConfig{B, D, G, false}, run_impl<B, D, G, nosa::bfloat16_t>});
  list.push_back({PrefillConfig{B, D, G, true}, run_impl<B, D, G, nosa::float16_t>});
}
/// Every B in {16, 32, 64, 128} x G in {1, 4, 8, 16} x dtype for one head dim.
template <int D>
void add_full_matrix(std::vector<Entry>& list) {
  add_both_dtypes<16, D, 1>(list), add_both_dtypes<16, D, 4>(list), add_both_dtypes<16, D, 8>(list), add_both_dtypes<16, D, 16>(list);
  add_both_dtypes<32, D, 1>(list), add_both_dtypes<32, D, 4>(list), add_both_dtypes<32, D, 8>(list), add_both_dtypes<32, D, 16>(list);
  add_both_dtypes<64, D, 1>(list), add_both_dtypes<64, D, 4>(list), add_both_dtypes<64, D, 8>(list), add_both_dtypes<64, D, 16>(list);
  add_both_dtypes<128, D, 1>(list), add_both_dtypes<128, D, 4>(list), add_both_dtypes<128, D, 8>(list),
      add_both_dtypes<128, D, 16>(list);
}

// Defined in prefill_launch_full_d{64,128,256}.cu; they add nothing without NOSA_FULL_MATRIX.
void add_full_matrix_d64(std::vector<Entry>& list);
void add_full_matrix_d128(std::vector<Entry>& list);
void add_full_matrix_d256(std::vector<Entry>& list);

}  // namespace prefill_detail
}  // namespace nosa_test
