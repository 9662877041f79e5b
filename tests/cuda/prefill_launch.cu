// Kernels' side of the prefill GPU tests: uploads, the nosa facade calls, downloads.
// CI instantiates D=128 with G in {1, 8} (bf16); NOSA_FULL_MATRIX adds D in {64, 256} and
// G in {4, 16}.
#include "cuda/prefill_launch.h"

#include <nosa/prefill.cuh>

#include <cuda_runtime.h>

#include <cstring>
#include <memory>

namespace nosa_test {
namespace {

#define PF_TRY(expr)                                                                                     \
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

template <int D, int G>
nosa::Status run_impl(const PrefillProblem& pr, const PrefillRequest& rq, PrefillOutput& out) {
  using T = nosa::bfloat16_t;
  using Geo = nosa::Geometry<64, D, G, nosa::HeadLayout::kHND>;
  const int Hkv = pr.num_kv_heads, Hq = Hkv * G;
  const long long L = pr.length;
  const nosa::SelectionParams& sp = pr.params;
  const int budget = sp.budget;
  Stream st;
  PF_TRY(cudaStreamCreateWithFlags(&st.s, cudaStreamNonBlocking));
  Buf k, v, bias, q, o, lse, hi, lo, sc, ids, cnt, ws;
  PF_TRY(upload(k, pr.k));
  PF_TRY(upload(v, pr.v));
  PF_TRY(upload(bias, pr.bias));
  PF_TRY(upload(q, pr.q));
  PF_TRY(o.alloc(static_cast<std::size_t>(L) * Hq * D * sizeof(T)));
  PF_TRY(lse.alloc(static_cast<std::size_t>(L) * Hq * sizeof(float)));
  const int nc = nosa::detail::num_compressed(L, sp.window, sp.stride);
  PF_TRY(hi.alloc(static_cast<std::size_t>(Hkv) * nc * D * sizeof(T)));
  PF_TRY(lo.alloc(static_cast<std::size_t>(Hkv) * nc * D * sizeof(T)));
  PF_TRY(sc.alloc(static_cast<std::size_t>(Hkv) * nc * sizeof(float)));
  if (rq.given_ids != nullptr) {
    PF_TRY(upload(ids, *rq.given_ids));
    PF_TRY(upload(cnt, *rq.given_counts));
  } else {
    PF_TRY(ids.alloc(static_cast<std::size_t>(L) * Hkv * budget * sizeof(int)));
    PF_TRY(cnt.alloc(static_cast<std::size_t>(L) * Hkv * sizeof(int)));
    PF_TRY(cudaMemset(ids.p, 0, static_cast<std::size_t>(L) * Hkv * budget * sizeof(int)));
  }
  const nosa::WorkspaceLayout layout = nosa::prefill_select_workspace<Geo>(Hkv, L, rq.rows_per_pass);
  PF_TRY(ws.alloc(layout.total_bytes()));

  std::vector<long long> chunks = rq.chunks;
  if (chunks.empty()) chunks.push_back(L);
  nosa::PrefillCompressed<T> comp;
  comp.keys_hi = hi.as<T>();
  comp.keys_lo = rq.use_lo ? lo.as<T>() : nullptr;
  comp.scores = sc.as<float>();
  comp.capacity = nc;
  long long row = 0;
  int windows_done = 0;
  if (rq.use_graph) PF_TRY(cudaStreamBeginCapture(st.s, cudaStreamCaptureModeGlobal));
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
    PF_TRY(cudaStreamEndCapture(st.s, &graph));
    cudaGraphExec_t exec = nullptr;
    const cudaError_t e = cudaGraphInstantiate(&exec, graph, 0);
    cudaGraphDestroy(graph);
    PF_TRY(e);
    for (int replay = 0; replay < 2; ++replay) PF_TRY(cudaGraphLaunch(exec, st.s));
    PF_TRY(cudaStreamSynchronize(st.s));
    cudaGraphExecDestroy(exec);
  }
  if (row != L) return nosa::invalid_argument("run_prefill: chunks do not cover the prompt");
  PF_TRY(cudaStreamSynchronize(st.s));
  PF_TRY(cudaGetLastError());
  out.o.resize(static_cast<std::size_t>(L) * Hq * D);
  out.lse.resize(static_cast<std::size_t>(L) * Hq);
  PF_TRY(cudaMemcpy(out.o.data(), o.p, out.o.size() * sizeof(T), cudaMemcpyDeviceToHost));
  PF_TRY(cudaMemcpy(out.lse.data(), lse.p, out.lse.size() * sizeof(float), cudaMemcpyDeviceToHost));
  if (rq.sparse) {
    out.block_ids.resize(static_cast<std::size_t>(L) * Hkv * budget);
    out.counts.resize(static_cast<std::size_t>(L) * Hkv);
    PF_TRY(cudaMemcpy(out.block_ids.data(), ids.p, out.block_ids.size() * sizeof(int), cudaMemcpyDeviceToHost));
    PF_TRY(cudaMemcpy(out.counts.data(), cnt.p, out.counts.size() * sizeof(int), cudaMemcpyDeviceToHost));
  }
  return {};
}

using Runner = nosa::Status (*)(const PrefillProblem&, const PrefillRequest&, PrefillOutput&);
struct Entry {
  int d, g;
  Runner run;
};
const Entry kEntries[] = {
    {128, 1, run_impl<128, 1>},
    {128, 8, run_impl<128, 8>},
#if defined(NOSA_FULL_MATRIX) && NOSA_FULL_MATRIX
    {128, 4, run_impl<128, 4>},  {128, 16, run_impl<128, 16>}, {64, 1, run_impl<64, 1>},
    {64, 4, run_impl<64, 4>},    {64, 8, run_impl<64, 8>},     {64, 16, run_impl<64, 16>},
    {256, 1, run_impl<256, 1>},  {256, 4, run_impl<256, 4>},   {256, 8, run_impl<256, 8>},
    {256, 16, run_impl<256, 16>},
#endif
};

}  // namespace

std::vector<std::pair<int, int>> prefill_compiled_configs() {
  std::vector<std::pair<int, int>> r;
  for (const Entry& e : kEntries) r.emplace_back(e.d, e.g);
  return r;
}

nosa::Status run_prefill(const PrefillProblem& problem, const PrefillRequest& request, PrefillOutput& out) {
  for (const Entry& e : kEntries)
    if (e.d == problem.head_dim && e.g == problem.group_size) return e.run(problem, request, out);
  return nosa::not_supported("run_prefill: head_dim " + std::to_string(problem.head_dim) + ", group_size " +
                             std::to_string(problem.group_size) + " is not compiled into this test");
}

std::vector<BadInputCase> prefill_bad_inputs() {
  using T = nosa::bfloat16_t;
  constexpr int D = 128, G = 8, Hkv = 2, Hq = Hkv * G;
  using Geo = nosa::Geometry<64, D, G, nosa::HeadLayout::kHND>;
  const long long L = 300;
  nosa::SelectionParams sp;
  sp.local = 2;
  sp.query_aware = 2;
  sp.budget = 5;
  std::vector<BadInputCase> cases;
  Buf k, v, bias, q, o, lse, hi, sc, ids, cnt, ws;
  const std::size_t kv_bytes = static_cast<std::size_t>(Hkv) * L * D * sizeof(T);
  const std::size_t o_bytes = static_cast<std::size_t>(L) * Hq * D * sizeof(T);
  const int nc = nosa::detail::num_compressed(L, sp.window, sp.stride);
  auto fail = [&](const char* what) {
    cases.push_back({std::string("setup: ") + what, nosa::Status(nosa::StatusCode::kCudaError, what), false});
    return cases;
  };
  if (k.alloc(kv_bytes) || v.alloc(kv_bytes) || bias.alloc(Hkv * L * 4) || q.alloc(o_bytes) || o.alloc(o_bytes) ||
      lse.alloc(L * Hq * 4) || hi.alloc(static_cast<std::size_t>(Hkv) * nc * D * sizeof(T)) || sc.alloc(Hkv * nc * 4) ||
      ids.alloc(L * Hkv * sp.budget * 4) || cnt.alloc(L * Hkv * 4))
    return fail("cudaMalloc");
  cudaMemset(k.p, 0, kv_bytes);
  cudaMemset(v.p, 0, kv_bytes);
  cudaMemset(bias.p, 0, Hkv * L * 4);
  cudaMemset(q.p, 0, o_bytes);
  const nosa::WorkspaceLayout layout = nosa::prefill_select_workspace<Geo>(Hkv, L, 64);
  if (ws.alloc(layout.total_bytes())) return fail("cudaMalloc workspace");
  Stream st;
  if (cudaStreamCreateWithFlags(&st.s, cudaStreamNonBlocking) != cudaSuccess) return fail("stream");

  auto sentinel = [&] {
    cudaMemset(o.p, 0x5a, o_bytes);
    cudaMemset(lse.p, 0x5a, L * Hq * 4);
    cudaMemset(ids.p, 0x5a, L * Hkv * sp.budget * 4);
    cudaMemset(cnt.p, 0x5a, L * Hkv * 4);
    cudaMemset(hi.p, 0x5a, static_cast<std::size_t>(Hkv) * nc * D * sizeof(T));
  };
  auto untouched = [&] {
    cudaDeviceSynchronize();
    auto all = [](const Buf& b, std::size_t bytes) {
      std::vector<unsigned char> h(bytes);
      cudaMemcpy(h.data(), b.p, bytes, cudaMemcpyDeviceToHost);
      for (unsigned char c : h)
        if (c != 0x5a) return false;
      return true;
    };
    return all(o, o_bytes) && all(lse, L * Hq * 4) && all(ids, L * Hkv * sp.budget * 4) && all(cnt, L * Hkv * 4) &&
           all(hi, static_cast<std::size_t>(Hkv) * nc * D * sizeof(T));
  };

  nosa::PrefillKV<T> kv;
  kv.k = k.as<T>();
  kv.v = v.as<T>();
  kv.bias = bias.as<float>();
  kv.kv_stride = L;
  kv.length = L;
  kv.num_kv_heads = Hkv;
  nosa::PrefillAttentionArgs<T> good;
  good.kv = kv;
  good.first_row = 0;
  good.num_rows = L;
  good.q = q.as<T>();
  good.o = o.as<T>();
  good.lse = lse.as<float>();
  good.mode = nosa::PrefillAttention::kSparse;
  good.block_ids = ids.as<int>();
  good.counts = cnt.as<int>();
  good.max_selected = sp.budget;
  nosa::PrefillCompressed<T> comp;
  comp.keys_hi = hi.as<T>();
  comp.scores = sc.as<float>();
  comp.capacity = nc;
  nosa::PrefillSelectArgs<T> sgood;
  sgood.params = sp;
  sgood.compressed = comp;
  sgood.num_kv_heads = Hkv;
  sgood.first_row = 0;
  sgood.num_rows = L;
  sgood.q = q.as<T>();
  sgood.block_ids = ids.as<int>();
  sgood.counts = cnt.as<int>();

  auto attn = [&](const char* name, auto mutate) {
    nosa::PrefillAttentionArgs<T> a = good;
    mutate(a);
    sentinel();
    nosa::Status s = nosa::prefill_attention<Geo, T>(a, st.s);
    cases.push_back({name, s, untouched()});
  };
  auto sel = [&](const char* name, auto mutate, std::size_t ws_bytes, long long max_tokens) {
    nosa::PrefillSelectArgs<T> a = sgood;
    mutate(a);
    sentinel();
    nosa::Status s = nosa::prefill_select<Geo, T>(a, ws.p, ws_bytes, max_tokens, 64, st.s);
    cases.push_back({name, s, untouched()});
  };
  const std::size_t wsb = layout.total_bytes();
  attn("q", [](auto& a) { a.q = nullptr; });
  attn("o", [](auto& a) { a.o = reinterpret_cast<T*>(reinterpret_cast<char*>(a.o) + 2); });
  attn("kv.k", [](auto& a) { a.kv.k = nullptr; });
  attn("kv.bias", [](auto& a) { a.kv.bias = nullptr; });
  attn("block_ids", [](auto& a) { a.block_ids = nullptr; });
  attn("max_selected", [](auto& a) { a.max_selected = 0; });
  attn("kv.length", [](auto& a) { a.num_rows = 10; a.first_row = 295; });          // rows beyond the prompt
  attn("first_row", [](auto& a) { a.first_row = -1; a.num_rows = 1; });
  attn("kv.kv_stride", [](auto& a) { a.kv.length = a.kv.kv_stride + 1; });
  attn("kv.num_kv_heads", [](auto& a) { a.kv.num_kv_heads = 0; });
  {
    nosa::PrefillAttentionArgs<T> a = good;
    sentinel();
    nosa::Status s = nosa::prefill_attention<nosa::Geometry<32, D, G, nosa::HeadLayout::kHND>, T>(a, st.s);
    cases.push_back({"block_size", s, untouched()});
  }
  sel("workspace", [](auto&) {}, wsb - 256, L);
  sel("max_tokens", [](auto& a) { a.num_rows = L; }, wsb, L - 1);
  sel("compressed.capacity", [](auto& a) { a.compressed.capacity = 3; }, wsb, L);
  sel("compressed.scores", [](auto& a) { a.compressed.scores = nullptr; }, wsb, L);
  sel("selector", [](auto& a) { a.selector = nosa::SelectorKind::kDense; }, wsb, L);
  sel("budget", [](auto& a) { a.params.budget = 2; a.params.query_aware = 1; }, wsb, L);
  sel("block_ids", [](auto& a) { a.block_ids = nullptr; }, wsb, L);
  {
    sentinel();
    nosa::PrefillCompressed<T> c = comp;
    c.capacity = nc - 1;
    nosa::Status s = nosa::prefill_compress<Geo, T>(kv, sp, c, 0, st.s);
    cases.push_back({"capacity", s, untouched()});
  }
  return cases;
}

}  // namespace nosa_test
