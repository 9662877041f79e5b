// Scenario runner of the residency GPU tests: drives nosa::Residency through random steps and
// checks, after every step, the slot bytes against the pool and against the test's own record of
// every token, the slot table against host::ResidencyModel, and the transfer counts.
#include "cuda/residency_launch.h"

#include <nosa/host/residency_model.h>
#include <nosa/residency.cuh>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <map>
#include <memory>
#include <random>
#include <set>
#include <sstream>
#include <stdexcept>

namespace nosa_test {
namespace {

#define RES_CHECK_CUDA(expr)                                                                              \
  do {                                                                                                    \
    cudaError_t e_ = (expr);                                                                              \
    if (e_ != cudaSuccess) throw std::runtime_error(std::string(#expr) + ": " + cudaGetErrorString(e_)); \
  } while (0)
#define RES_CHECK_STATUS(expr)                                                  \
  do {                                                                          \
    ::nosa::Status st_ = (expr);                                                \
    if (!st_.ok()) throw std::runtime_error(std::string(#expr) + ": " + st_.to_string()); \
  } while (0)

template <class X>
struct Dev {
  X* p = nullptr;
  explicit Dev(size_t n) { RES_CHECK_CUDA(cudaMalloc(&p, std::max<size_t>(n, 1) * sizeof(X))); }
  ~Dev() { cudaFree(p); }
  Dev(const Dev&) = delete;
  Dev& operator=(const Dev&) = delete;
};

struct Truth {  // every appended token of one sequence, as written
  std::vector<std::uint16_t> k, v;  // [T][H][D]
  std::vector<float> bias;          // [T][H]
};

template <class Geo, class Policy, nosa::HeadLayout HL>
ResidencyScenarioResult run(const ResidencyScenario& sc) {
  using T = nosa::bfloat16_t;
  using Res = nosa::Residency<T, Geo, Policy, HL>;
  using Pool = typename Res::Pool;
  using Fmt = typename Pool::Format;
  constexpr int B = Geo::block_size, D = Geo::head_dim;
  constexpr bool on_host = Policy::pool_on_host;
  const int H = 2, L = 2, MAXSEQ = 6, MBPS = sc.max_blocks_per_sequence;
  ResidencyScenarioResult r;
  std::mt19937 rng(sc.seed);
  auto uni = [&](int lo, int hi) { return std::uniform_int_distribution<int>(lo, hi)(rng); };
  auto coin = [&](double p) { return std::uniform_real_distribution<double>(0, 1)(rng) < p; };

  nosa::HostPoolConfig pc{L, H, MAXSEQ, MBPS};
  const long long pages = static_cast<long long>(MAXSEQ) * L * sc.pages_per_sequence;  // less than full: reuse matters
  const size_t pool_bytes = Pool::bytes_for_blocks(H, pages);
  std::unique_ptr<nosa::PinnedHostMemory> pinned;
  void* dev_pool = nullptr;
  if (on_host) pinned = std::make_unique<nosa::PinnedHostMemory>(pool_bytes);
  else RES_CHECK_CUDA(cudaMalloc(&dev_pool, pool_bytes));
  std::unique_ptr<void, void (*)(void*)> dev_pool_guard(dev_pool, [](void* p) { cudaFree(p); });
  Pool pool(pc, on_host ? pinned->host() : nullptr, on_host ? pinned->device() : dev_pool, pool_bytes);

  nosa::ResidencyConfig rc{MAXSEQ, sc.budget, sc.slots_per_head};
  const size_t ws_bytes = Res::workspace_bytes(pc, rc);
  Dev<char> ws(ws_bytes);
  cudaStream_t stream;
  RES_CHECK_CUDA(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
  std::unique_ptr<CUstream_st, void (*)(cudaStream_t)> stream_guard(stream, [](cudaStream_t s) { cudaStreamDestroy(s); });
  Res res(pool, rc, ws.p, ws_bytes, stream);
  nosa::host::ResidencyModel model(L, MAXSEQ, H, sc.slots_per_head, B);
  const int S = sc.slots_per_head, M = sc.budget;

  std::map<int, Truth> truth;                            // active sequences
  std::map<std::tuple<int, int, int>, std::vector<int>> prev_sel;  // (seq, layer, head)
  Dev<int> d_slots(MAXSEQ), d_lens(MAXSEQ), d_blocks(MAXSEQ * H * M), d_counts(MAXSEQ * H), d_slot_ids(MAXSEQ * H * M);
  Dev<T> d_k(static_cast<size_t>(MBPS) * B * H * D), d_v(static_cast<size_t>(MBPS) * B * H * D);
  Dev<float> d_bias(static_cast<size_t>(MBPS) * B * H);
  const size_t layer_elems = static_cast<size_t>(res.num_slots()) * B * D;
  std::vector<std::uint16_t> hk(layer_elems), hv(layer_elems);
  std::vector<float> hb(static_cast<size_t>(res.num_slots()) * B);
  std::vector<char> page_buf(pool.page_stride());

  auto rand_bits = [&]() { return static_cast<std::uint16_t>(rng() & 0xffff); };
  auto note = [&](const std::string& m) {
    if (r.first_mismatch.empty()) r.first_mismatch = m;
  };
  auto read_page = [&](int page) -> const char* {
    if constexpr (on_host) {
      return pool.host_page(page);
    } else {
      RES_CHECK_CUDA(cudaMemcpy(page_buf.data(), pool.device_page(page), pool.page_stride(), cudaMemcpyDeviceToHost));
      return page_buf.data();
    }
  };
  auto expect_counts = [&](long long moved, long long loads, const char* where) {
    nosa::ResidencyCounters c;
    RES_CHECK_STATUS(res.read_counters(&c, stream));
    r.gpu_moved += c.step_blocks_moved;
    r.append_loads_gpu += c.step_append_loads;
    r.device_errors |= c.errors;
    if (c.step_blocks_moved != moved || c.step_append_loads != loads) {
      ++r.moved_mismatches;
      std::ostringstream o;
      o << "step " << r.steps << " " << where << ": gpu moved " << c.step_blocks_moved << " loads " << c.step_append_loads
        << ", model " << moved << " / " << loads;
      note(o.str());
    }
  };

  // Prompt of n tokens appended in one or two chunks.
  auto join = [&](int seq) {
    const int n = uni(std::min(sc.min_prompt_tokens, (MBPS - 8) * B / 2), (MBPS - 8) * B / 2);
    RES_CHECK_STATUS(res.add_sequence(seq));
    model.reset_sequence(seq);
    RES_CHECK_STATUS(res.reserve(seq, n + B, stream));  // one block of lookahead
    Truth& tr = truth[seq];
    tr.k.resize(static_cast<size_t>(n) * H * D);
    tr.v.resize(tr.k.size());
    tr.bias.resize(static_cast<size_t>(n) * H);
    for (auto& x : tr.k) x = rand_bits() & 0xbfff;  // avoid NaN patterns being normalized: not needed, bits are copied
    for (auto& x : tr.v) x = rand_bits();
    for (auto& x : tr.bias) x = static_cast<float>(uni(-1000, 1000)) / 8;
    const int split = coin(0.5) ? uni(0, n) : 0;
    const int chunks[3] = {0, split, n};
    for (int layer = 0; layer < L; ++layer) {
      for (int c = 0; c < 2; ++c) {
        const int first = chunks[c], cnt = chunks[c + 1] - chunks[c];
        if (cnt == 0) continue;
        RES_CHECK_CUDA(cudaMemcpyAsync(d_k.p, tr.k.data() + static_cast<size_t>(first) * H * D, static_cast<size_t>(cnt) * H * D * 2, cudaMemcpyHostToDevice, stream));
        RES_CHECK_CUDA(cudaMemcpyAsync(d_v.p, tr.v.data() + static_cast<size_t>(first) * H * D, static_cast<size_t>(cnt) * H * D * 2, cudaMemcpyHostToDevice, stream));
        RES_CHECK_CUDA(cudaMemcpyAsync(d_bias.p, tr.bias.data() + static_cast<size_t>(first) * H, static_cast<size_t>(cnt) * H * 4, cudaMemcpyHostToDevice, stream));
        RES_CHECK_STATUS(res.append_prompt(layer, seq, first, cnt, d_k.p, d_v.p, d_bias.p, stream));
        RES_CHECK_CUDA(cudaStreamSynchronize(stream));  // the host buffers above are reused
        long long loads = 0;
        for (int h = 0; h < H; ++h) loads += model.prompt_tail(layer, seq, h, first, first + cnt).loaded;
        r.append_loads_model += loads;
        expect_counts(0, loads, "append_prompt");
        ++r.prompt_chunks;
      }
    }
    for (int layer = 0; layer < L; ++layer)
      for (int h = 0; h < H; ++h) prev_sel.erase({seq, layer, h});
    ++r.joins;
  };

  for (int seq = 0; seq < 3; ++seq) join(seq);
  for (int step = 0; step < sc.steps; ++step, ++r.steps) {
    // membership
    if (truth.size() > 1 && coin(0.08)) {
      auto it = truth.begin();
      std::advance(it, uni(0, static_cast<int>(truth.size()) - 1));
      const int seq = it->first;
      RES_CHECK_STATUS(res.drop_sequence(seq, stream));
      model.reset_sequence(seq);
      truth.erase(it);
      ++r.leaves;
    }
    if (static_cast<int>(truth.size()) < MAXSEQ && (truth.size() < 2 || coin(0.1))) {
      std::vector<int> free_slots;
      for (int s = 0; s < MAXSEQ; ++s)
        if (!truth.count(s)) free_slots.push_back(s);
      const int seq = free_slots[uni(0, static_cast<int>(free_slots.size()) - 1)];
      // the pool may be full: then the join must fail cleanly and change nothing
      const long long free_before = pool.free_blocks();
      try {
        join(seq);
      } catch (const std::runtime_error& e) {
        if (std::string(e.what()).find("capacity exceeded") == std::string::npos) throw;
        if (pool.free_blocks() != free_before) note("failed reserve changed the pool");
        RES_CHECK_STATUS(res.drop_sequence(seq, stream));
        model.reset_sequence(seq);
        truth.erase(seq);
      }
    }
    // ragged batch: a random non-empty subset in random order, sequences that still fit
    std::vector<int> batch;
    for (auto& kv : truth) {
      const long long T = static_cast<long long>(kv.second.bias.size()) / H;
      if (T + 1 <= static_cast<long long>(MBPS) * B && coin(0.8)) batch.push_back(kv.first);
    }
    if (batch.empty()) continue;
    std::shuffle(batch.begin(), batch.end(), rng);
    const int nb_batch = static_cast<int>(batch.size());
    std::vector<int> lens(nb_batch);
    std::vector<std::uint16_t> tk(static_cast<size_t>(nb_batch) * H * D), tv(tk.size());
    std::vector<float> tb(static_cast<size_t>(nb_batch) * H);
    for (int b = 0; b < nb_batch; ++b) {
      Truth& tr = truth[batch[b]];
      const long long T = static_cast<long long>(tr.bias.size()) / H + 1;
      lens[b] = static_cast<int>(T);
      nosa::Status st = res.reserve(batch[b], T + B, stream);  // lookahead block
      if (!st.ok()) RES_CHECK_STATUS(res.reserve(batch[b], T, stream));
      for (int i = 0; i < H * D; ++i) {
        tk[static_cast<size_t>(b) * H * D + i] = rand_bits();
        tv[static_cast<size_t>(b) * H * D + i] = rand_bits();
      }
      for (int h = 0; h < H; ++h) tb[static_cast<size_t>(b) * H + h] = static_cast<float>(uni(-1000, 1000)) / 8;
      tr.k.insert(tr.k.end(), tk.begin() + static_cast<long>(b) * H * D, tk.begin() + static_cast<long>(b + 1) * H * D);
      tr.v.insert(tr.v.end(), tv.begin() + static_cast<long>(b) * H * D, tv.begin() + static_cast<long>(b + 1) * H * D);
      tr.bias.insert(tr.bias.end(), tb.begin() + static_cast<long>(b) * H, tb.begin() + static_cast<long>(b + 1) * H);
    }
    RES_CHECK_CUDA(cudaMemcpyAsync(d_slots.p, batch.data(), nb_batch * 4, cudaMemcpyHostToDevice, stream));
    RES_CHECK_CUDA(cudaMemcpyAsync(d_lens.p, lens.data(), nb_batch * 4, cudaMemcpyHostToDevice, stream));
    RES_CHECK_CUDA(cudaMemcpyAsync(d_k.p, tk.data(), tk.size() * 2, cudaMemcpyHostToDevice, stream));
    RES_CHECK_CUDA(cudaMemcpyAsync(d_v.p, tv.data(), tv.size() * 2, cudaMemcpyHostToDevice, stream));
    RES_CHECK_CUDA(cudaMemcpyAsync(d_bias.p, tb.data(), tb.size() * 4, cudaMemcpyHostToDevice, stream));

    for (int layer = 0; layer < L; ++layer) {
      RES_CHECK_STATUS(res.append_decode(layer, nb_batch, d_slots.p, d_lens.p, d_k.p, d_v.p, d_bias.p, stream));
      long long loads = 0;
      for (int b = 0; b < nb_batch; ++b)
        for (int h = 0; h < H; ++h) loads += model.append(layer, batch[b], h, lens[b] - 1).loaded;
      r.append_loads_model += loads;

      // selection with a controlled change rate; always holds the tail block (as NOSA's does)
      std::vector<int> blocks(static_cast<size_t>(nb_batch) * H * M, -7), counts(static_cast<size_t>(nb_batch) * H);
      std::vector<std::vector<int>> sels(static_cast<size_t>(nb_batch) * H);
      for (int b = 0; b < nb_batch; ++b) {
        const int nb = (lens[b] + B - 1) / B, cnt = std::min(M, nb);
        for (int h = 0; h < H; ++h) {
          std::set<int> sel{nb - 1};
          auto& prev = prev_sel[{batch[b], layer, h}];
          for (int x : prev)
            if (x < nb && static_cast<int>(sel.size()) < cnt && !coin(sc.change_rate)) sel.insert(x);
          while (static_cast<int>(sel.size()) < cnt) sel.insert(uni(0, nb - 1));
          std::vector<int> v(sel.begin(), sel.end());
          prev = v;
          counts[static_cast<size_t>(b) * H + h] = cnt;
          std::copy(v.begin(), v.end(), blocks.begin() + (static_cast<long>(b) * H + h) * M);
          sels[static_cast<size_t>(b) * H + h] = v;
        }
      }
      RES_CHECK_CUDA(cudaMemcpyAsync(d_blocks.p, blocks.data(), blocks.size() * 4, cudaMemcpyHostToDevice, stream));
      RES_CHECK_CUDA(cudaMemcpyAsync(d_counts.p, counts.data(), counts.size() * 4, cudaMemcpyHostToDevice, stream));
      RES_CHECK_STATUS(res.make_resident(layer, nb_batch, d_slots.p, d_lens.p, d_blocks.p, d_counts.p, M, d_slot_ids.p, stream));
      std::vector<int> slot_ids(blocks.size());
      RES_CHECK_CUDA(cudaMemcpyAsync(slot_ids.data(), d_slot_ids.p, slot_ids.size() * 4, cudaMemcpyDeviceToHost, stream));
      const auto view = res.slots(layer);
      RES_CHECK_CUDA(cudaMemcpyAsync(hk.data(), view.k, layer_elems * 2, cudaMemcpyDeviceToHost, stream));
      RES_CHECK_CUDA(cudaMemcpyAsync(hv.data(), view.v, layer_elems * 2, cudaMemcpyDeviceToHost, stream));
      RES_CHECK_CUDA(cudaMemcpyAsync(hb.data(), view.bias, hb.size() * 4, cudaMemcpyDeviceToHost, stream));
      RES_CHECK_CUDA(cudaStreamSynchronize(stream));

      long long moved = 0;
      for (int b = 0; b < nb_batch; ++b) {
        const int seq = batch[b];
        const Truth& tr = truth[seq];
        for (int h = 0; h < H; ++h) {
          const auto& sel = sels[static_cast<size_t>(b) * H + h];
          auto mr = model.make_resident(layer, seq, h, lens[b], sel);
          r.model_needed += mr.needed;
          moved += static_cast<long long>(mr.moved.size());
          for (size_t i = 0; i < sel.size(); ++i) {
            const int gpu_slot = slot_ids[(static_cast<size_t>(b) * H + h) * M + i];
            const int want = (seq * H + h) * S + mr.slots[i];
            if (gpu_slot != want) {
              ++r.slot_table_mismatches;
              note("step " + std::to_string(r.steps) + " layer " + std::to_string(layer) + " seq " + std::to_string(seq) +
                   " head " + std::to_string(h) + " block " + std::to_string(sel[i]) + ": gpu slot " + std::to_string(gpu_slot) +
                   ", model " + std::to_string(want));
              continue;
            }
            // byte-exact: slot == pool page == the record of what was appended, tokens < T
            const int blk = sel[i];
            const char* pg = read_page(pool.page(seq, layer, blk));
            const std::uint16_t* pk = reinterpret_cast<const std::uint16_t*>(pg);
            const std::uint16_t* pv = reinterpret_cast<const std::uint16_t*>(pg + Fmt::v_byte_offset(H));
            const float* pb = reinterpret_cast<const float*>(pg + Fmt::bias_byte_offset(H));
            const int ntok = std::min(B, lens[b] - blk * B);
            bool ok = true, pool_ok = true;
            for (int t = 0; t < ntok; ++t) {
              const size_t tok = static_cast<size_t>(blk) * B + t;
              const size_t srow = (static_cast<size_t>(gpu_slot) * B + t) * D;
              const std::uint16_t* tk_row = tr.k.data() + (tok * H + h) * D;
              const std::uint16_t* tv_row = tr.v.data() + (tok * H + h) * D;
              if (std::memcmp(hk.data() + srow, pk + Fmt::kv_offset(H, h, t, 0), D * 2) != 0 ||
                  std::memcmp(hv.data() + srow, pv + Fmt::kv_offset(H, h, t, 0), D * 2) != 0 ||
                  std::memcmp(&hb[static_cast<size_t>(gpu_slot) * B + t], &pb[Fmt::bias_offset(H, h, t)], 4) != 0)
                ok = false;
              if (std::memcmp(tk_row, pk + Fmt::kv_offset(H, h, t, 0), D * 2) != 0 ||
                  std::memcmp(tv_row, pv + Fmt::kv_offset(H, h, t, 0), D * 2) != 0 ||
                  std::memcmp(&tr.bias[tok * H + h], &pb[Fmt::bias_offset(H, h, t)], 4) != 0)
                pool_ok = false;
            }
            ++r.blocks_checked;
            if (!ok) {
              ++r.byte_mismatches;
              note("step " + std::to_string(r.steps) + " layer " + std::to_string(layer) + " seq " + std::to_string(seq) +
                   " head " + std::to_string(h) + " block " + std::to_string(blk) + " slot " + std::to_string(gpu_slot) +
                   ": slot bytes differ from the pool");
            }
            if (!pool_ok) {
              ++r.pool_mismatches;
              note("step " + std::to_string(r.steps) + " seq " + std::to_string(seq) + " block " + std::to_string(blk) +
                   ": pool bytes differ from the appended tokens");
            }
          }
        }
      }
      r.model_moved += moved;
      expect_counts(moved, loads, "decode step");
    }
  }
  return r;
}

template <class Geo>
ResidencyScenarioResult dispatch_policy(const ResidencyScenario& s) {
  using nosa::HeadLayout;
  if (s.policy == ResPolicy::kZeroCopy && s.layout == ResLayout::kNHD) return run<Geo, nosa::ZeroCopyGather, HeadLayout::kNHD>(s);
  if (s.policy == ResPolicy::kZeroCopy && s.layout == ResLayout::kHND) return run<Geo, nosa::ZeroCopyGather, HeadLayout::kHND>(s);
  if (s.policy == ResPolicy::kZeroCopyBulk && s.layout == ResLayout::kNHD) return run<Geo, nosa::ZeroCopyGatherBulk, HeadLayout::kNHD>(s);
  if (s.policy == ResPolicy::kZeroCopyBulk && s.layout == ResLayout::kHND) return run<Geo, nosa::ZeroCopyGatherBulk, HeadLayout::kHND>(s);
  if (s.policy == ResPolicy::kCopyEngine && s.layout == ResLayout::kHND) return run<Geo, nosa::CopyEngine, HeadLayout::kHND>(s);
  if (s.policy == ResPolicy::kDeviceResident && s.layout == ResLayout::kNHD)
    return run<Geo, nosa::DeviceResident, HeadLayout::kNHD>(s);
#if defined(NOSA_FULL_MATRIX)
  if (s.policy == ResPolicy::kDeviceResident && s.layout == ResLayout::kHND)
    return run<Geo, nosa::DeviceResident, HeadLayout::kHND>(s);
#endif
  ResidencyScenarioResult r;
  r.error = "combination not compiled in (CopyEngine needs kHND; full matrix: -DNOSA_FULL_MATRIX=ON)";
  return r;
}

#if defined(NOSA_FULL_MATRIX)
// Only the zero-copy copy loops: a 32 KiB matrix is two bulk stages.
template <class Geo>
ResidencyScenarioResult dispatch_zero_copy(const ResidencyScenario& s) {
  using nosa::HeadLayout;
  if (s.policy == ResPolicy::kZeroCopy && s.layout == ResLayout::kNHD) return run<Geo, nosa::ZeroCopyGather, HeadLayout::kNHD>(s);
  if (s.policy == ResPolicy::kZeroCopyBulk && s.layout == ResLayout::kNHD) return run<Geo, nosa::ZeroCopyGatherBulk, HeadLayout::kNHD>(s);
  if (s.policy == ResPolicy::kZeroCopyBulk && s.layout == ResLayout::kHND) return run<Geo, nosa::ZeroCopyGatherBulk, HeadLayout::kHND>(s);
  ResidencyScenarioResult r;
  r.error = "wide shape: only ZeroCopy NHD and ZeroCopyBulk NHD/HND are compiled in";
  return r;
}
#endif

}  // namespace

ResidencyScenarioResult run_residency_scenario(const ResidencyScenario& s) {
  try {
    if (s.shape == ResShape::kSmall) return dispatch_policy<nosa::Geometry<16, 64, 1, nosa::HeadLayout::kHND>>(s);
#if defined(NOSA_FULL_MATRIX)
    if (s.shape == ResShape::kWide) return dispatch_zero_copy<nosa::Geometry<128, 128, 8, nosa::HeadLayout::kHND>>(s);
    return dispatch_policy<nosa::Geometry<64, 128, 16, nosa::HeadLayout::kHND>>(s);
#else
    ResidencyScenarioResult r;
    r.error = "large and wide shapes need -DNOSA_FULL_MATRIX=ON";
    return r;
#endif
  } catch (const std::exception& e) {
    ResidencyScenarioResult r;
    r.error = e.what();
    return r;
  }
}

std::vector<std::string> residency_error_checks() {
  using Geo = nosa::Geometry<16, 64, 1, nosa::HeadLayout::kHND>;
  using T = nosa::bfloat16_t;
  using Res = nosa::Residency<T, Geo, nosa::ZeroCopyGather, nosa::HeadLayout::kNHD>;
  using Pool = Res::Pool;
  std::vector<std::string> fails;
  auto expect = [&](bool cond, const std::string& what) {
    if (!cond) fails.push_back(what);
  };
  try {
    const int H = 2;
    nosa::HostPoolConfig pc{1, H, 2, 8};
    const size_t bytes = Pool::bytes_for_blocks(H, 6);
    nosa::PinnedHostMemory mem(bytes);
    Pool pool(pc, mem.host(), mem.device(), bytes);
    nosa::ResidencyConfig rc{2, 4, 4};
    const size_t wsb = Res::workspace_bytes(pc, rc);
    Dev<char> ws(wsb);
    cudaStream_t stream;
    RES_CHECK_CUDA(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
    Res res(pool, rc, ws.p, wsb, stream);
    // config errors throw
    bool threw = false;
    try {
      Res bad(pool, nosa::ResidencyConfig{2, 8, 4}, ws.p, wsb, stream);
    } catch (const nosa::Error& e) {
      threw = e.code() == nosa::StatusCode::kInvalidArgument && std::string(e.what()).find("slots_per_head") != std::string::npos;
    }
    expect(threw, "slots_per_head < max_blocks must throw invalid_argument naming slots_per_head");
    threw = false;
    try {
      Res bad(pool, rc, ws.p, wsb - 256, stream);
    } catch (const nosa::Error& e) {
      threw = e.code() == nosa::StatusCode::kInvalidArgument;
    }
    expect(threw, "a too small workspace must throw");

    RES_CHECK_STATUS(res.add_sequence(0));
    RES_CHECK_STATUS(res.reserve(0, 40, stream));  // 3 blocks
    expect(pool.free_blocks() == 3, "reserve of 3 blocks leaves 3 free");
    nosa::Status st = res.reserve(0, 16 * 7, stream);  // needs 4 more, 3 free
    expect(st.code() == nosa::StatusCode::kCapacityExceeded && pool.reserved_blocks(0) == 3 && pool.free_blocks() == 3,
           "a full pool returns capacity_exceeded and changes nothing");
    const nosa::Status st1 = res.reserve(0, 16 * 9, stream);
    expect(st1.code() == nosa::StatusCode::kCapacityExceeded, "above max_blocks_per_sequence -> capacity_exceeded");
    expect(res.add_sequence(0).code() == nosa::StatusCode::kInvalidArgument, "adding an active slot is invalid");
    expect(res.add_sequence(5).code() == nosa::StatusCode::kInvalidArgument, "slot out of range is invalid");
    expect(res.drop_sequence(1, stream).code() == nosa::StatusCode::kNotFound, "dropping an inactive slot -> not_found");

    Dev<int> d_i(64);
    Dev<T> d_t(4096);
    Dev<float> d_f(256);
    RES_CHECK_CUDA(cudaMemset(d_i.p, 0, 64 * 4));
    const nosa::Status st2 = res.append_prompt(0, 0, 30, 20, d_t.p, d_t.p, d_f.p, stream);
    expect(st2.code() == nosa::StatusCode::kCapacityExceeded, "append_prompt beyond the reservation -> capacity_exceeded");
    const nosa::Status st3 = res.append_prompt(0, 1, 0, 1, d_t.p, d_t.p, d_f.p, stream);
    expect(st3.code() == nosa::StatusCode::kNotFound, "append_prompt to an inactive slot -> not_found");
    const nosa::Status st4 = res.make_resident(1, 1, d_i.p, d_i.p, d_i.p, d_i.p, 4, d_i.p, stream);
    expect(st4.code() == nosa::StatusCode::kInvalidArgument && st4.message().find("layer") != std::string::npos, "bad layer named");
    const nosa::Status st5 = res.make_resident(0, 3, d_i.p, d_i.p, d_i.p, d_i.p, 4, d_i.p, stream);
    expect(st5.code() == nosa::StatusCode::kInvalidArgument && st5.message().find("batch") != std::string::npos, "batch > max_batch named");
    const nosa::Status st6 = res.make_resident(0, 1, d_i.p, d_i.p, d_i.p, d_i.p, 5, d_i.p, stream);
    expect(st6.code() == nosa::StatusCode::kInvalidArgument && st6.message().find("max_blocks") != std::string::npos, "max_blocks named");
    const nosa::Status st7 = res.make_resident(0, 1, d_i.p, d_i.p, nullptr, d_i.p, 4, d_i.p, stream);
    expect(st7.code() == nosa::StatusCode::kInvalidArgument && st7.message().find("block_ids") != std::string::npos, "null block_ids named");
    const nosa::Status st8 = res.append_decode(0, 1, d_i.p, d_i.p, reinterpret_cast<const T*>(reinterpret_cast<const char*>(d_t.p) + 2), d_t.p, d_f.p, stream);
    expect(st8.code() == nosa::StatusCode::kMisaligned, "misaligned k -> misaligned");

    // device-side errors: a block id outside [0, nb) leaves the slot state unchanged, slot -1
    std::vector<int> host_in = {0, 20, 7, 0, 0, 0, 9, 0, 0, 0, 2, 2};  // slot 0, T=20 (2 blocks), blocks head0 {7}, head1 {9}
    RES_CHECK_CUDA(cudaMemcpy(d_i.p, host_in.data(), host_in.size() * 4, cudaMemcpyHostToDevice));
    std::vector<int> before(res.num_slots()), after(res.num_slots());
    RES_CHECK_CUDA(cudaStreamSynchronize(stream));
    RES_CHECK_CUDA(cudaMemcpy(before.data(), res.slot_blocks(0), before.size() * 4, cudaMemcpyDeviceToHost));
    // seq_slots=d_i[0], seq_lens=d_i[1], block_ids=d_i[2..9] ([1][2][4]), counts=d_i[10..11]
    RES_CHECK_STATUS(res.make_resident(0, 1, d_i.p, d_i.p + 1, d_i.p + 2, d_i.p + 10, 4, d_i.p + 20, stream));
    nosa::ResidencyCounters c;
    RES_CHECK_STATUS(res.read_counters(&c, stream));
    RES_CHECK_CUDA(cudaMemcpy(after.data(), res.slot_blocks(0), after.size() * 4, cudaMemcpyDeviceToHost));
    std::vector<int> out(8);
    RES_CHECK_CUDA(cudaMemcpy(out.data(), d_i.p + 20, 32, cudaMemcpyDeviceToHost));
    expect((c.errors & nosa::detail::kResErrBlockId) != 0, "a block id >= nb sets the block-id error bit");
    expect(out[0] == -1 && out[4] == -1, "a bad block id gets slot -1");
    RES_CHECK_STATUS(res.read_counters(&c, stream));
    expect(c.errors == 0, "read_counters clears the error bits");
    (void)before;
    (void)after;
    RES_CHECK_CUDA(cudaStreamDestroy(stream));
  } catch (const std::exception& e) {
    fails.push_back(std::string("exception: ") + e.what());
  }
  return fails;
}

}  // namespace nosa_test
