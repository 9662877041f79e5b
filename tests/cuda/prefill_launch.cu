// Kernels' side of the prefill GPU tests: the CI instantiations, the registry, and the
// bad-input cases. CI (one arch, 2 cores) compiles a representative subset of Geometry<B, D, G>
// x dtype: every block size once, G in {1, 8}, D = 128, bf16, plus one fp16 configuration;
// NOSA_FULL_MATRIX replaces it with every B x D x G x dtype (prefill_launch_full_*.cu).
#include "cuda/prefill_launch_impl.cuh"

namespace nosa_test {
namespace {

using prefill_detail::Buf;
using prefill_detail::Entry;
using prefill_detail::Stream;
using prefill_detail::run_impl;

const std::vector<Entry>& registry() {
  static const std::vector<Entry> list = [] {
    std::vector<Entry> l;
#if defined(NOSA_FULL_MATRIX) && NOSA_FULL_MATRIX
    prefill_detail::add_full_matrix_d128(l);
    prefill_detail::add_full_matrix_d64(l);
    prefill_detail::add_full_matrix_d256(l);
#else
    l.push_back({PrefillConfig{64, 128, 8, false}, run_impl<64, 128, 8, nosa::bfloat16_t>});
    l.push_back({PrefillConfig{64, 128, 1, false}, run_impl<64, 128, 1, nosa::bfloat16_t>});
    l.push_back({PrefillConfig{32, 128, 8, false}, run_impl<32, 128, 8, nosa::bfloat16_t>});
    l.push_back({PrefillConfig{128, 128, 8, false}, run_impl<128, 128, 8, nosa::bfloat16_t>});
    l.push_back({PrefillConfig{16, 128, 1, false}, run_impl<16, 128, 1, nosa::bfloat16_t>});
    l.push_back({PrefillConfig{16, 128, 8, true}, run_impl<16, 128, 8, nosa::float16_t>});
#endif
    return l;
  }();
  return list;
}

}  // namespace

std::vector<PrefillConfig> prefill_compiled_configs() {
  std::vector<PrefillConfig> r;
  for (const Entry& e : registry()) r.push_back(e.config);
  return r;
}

nosa::Status run_prefill(const PrefillProblem& problem, const PrefillRequest& request, PrefillOutput& out) {
  const PrefillConfig& c = problem.config;
  for (const Entry& e : registry())
    if (e.config.block_size == c.block_size && e.config.head_dim == c.head_dim && e.config.group_size == c.group_size &&
        e.config.fp16 == c.fp16)
      return e.run(problem, request, out);
  return nosa::not_supported("run_prefill: " + c.name() + " is not compiled into this test");
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
    // A sparse chunk far into a 2^32-token prompt: its tile bitmask cannot fit in shared memory.
    // Only the lengths are huge; nothing is read, since the call must fail before any launch.
    nosa::PrefillAttentionArgs<T> a = good;
    a.kv.kv_stride = a.kv.length = 1LL << 32;
    a.first_row = (1LL << 32) - L;
    sentinel();
    nosa::Status s = nosa::prefill_attention<Geo, T>(a, st.s);
    cases.push_back({"shared memory", s, untouched()});
  }
  sel("workspace", [](auto&) {}, wsb - 256, L);
  sel("max_tokens", [](auto& a) { a.num_rows = L; }, wsb, L - 1);
  sel("compressed.capacity", [](auto& a) { a.compressed.capacity = 3; }, wsb, L);
  sel("compressed.scores", [](auto& a) { a.compressed.scores = nullptr; }, wsb, L);
  sel("selector", [](auto& a) { a.selector = nosa::SelectorKind::kDense; }, wsb, L);
  sel("budget", [](auto& a) { a.params.budget = 2; a.params.query_aware = 1; }, wsb, L);
  sel("block_ids", [](auto& a) { a.block_ids = nullptr; }, wsb, L);
  {
    // B = 16 over 400K rows: 25000 blocks, so a budget of 30000 keeps 25000 picks per warp in
    // shared memory (400 KB), more than a block may have. Lengths only: it must fail before any
    // launch.
    using Geo16 = nosa::Geometry<16, D, G, nosa::HeadLayout::kHND>;
    const long long rows = 400000;
    const int rows_per_pass = 1;
    nosa::PrefillSelectArgs<T> a = sgood;
    a.params.budget = 30000;
    a.num_rows = rows;
    a.compressed.capacity = nosa::detail::num_compressed(rows, sp.window, sp.stride);
    const nosa::WorkspaceLayout big = nosa::prefill_select_workspace<Geo16>(Hkv, rows, rows_per_pass);
    Buf big_ws;
    if (big_ws.alloc(big.total_bytes())) return fail("cudaMalloc big workspace");
    sentinel();
    nosa::Status s = nosa::prefill_select<Geo16, T>(a, big_ws.p, big.total_bytes(), rows, rows_per_pass, st.s);
    cases.push_back({"params.budget", s, untouched()});
  }
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
