// Scenario runner of the decode-step GPU tests: a Decoder and the host reference (one
// host::KVCache<double> per layer) are fed the same tokens; every (step, layer, sequence, KV head)
// is compared: the selected block set exactly (away from near-ties of the host's scores), o and
// lse within the bf16 tolerance of docs/notes/attention.md.
#include "cuda/decode_step_launch.h"

#include <nosa/decode_step.cuh>
#include <nosa/host.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <limits>
#include <map>
#include <random>
#include <sstream>

namespace nosa_test {
namespace {

constexpr int kB = 64, kD = 64, kG = 4, kHkv = 2;
constexpr int kMaxSequences = 6, kMaxBatch = 6;
constexpr long long kMaxTokens = 4096;
using T = nosa::bfloat16_t;

nosa::SelectionParams small_params() {
  nosa::SelectionParams p;
  p.window = 32;
  p.stride = 16;
  p.sink = 1;
  p.local = 2;
  p.query_aware = 4;
  p.budget = 8;
  return p;
}

#define STEP_CUDA(expr)                                                                      \
  do {                                                                                       \
    cudaError_t e_ = (expr);                                                                 \
    if (e_ != cudaSuccess) {                                                                 \
      rep.error = std::string(#expr) + ": " + cudaGetErrorString(e_);                        \
      return rep;                                                                            \
    }                                                                                        \
  } while (0)
#define STEP_OK(expr)                                                                        \
  do {                                                                                       \
    nosa::Status s_ = (expr);                                                                \
    if (!s_.ok()) {                                                                          \
      rep.error = std::string(#expr) + ": " + s_.to_string();                                \
      return rep;                                                                            \
    }                                                                                        \
  } while (0)

template <class U>
struct DeviceBuf {
  U* p = nullptr;
  explicit DeviceBuf(std::size_t n) { cudaMalloc(&p, std::max<std::size_t>(n, 1) * sizeof(U)); }
  ~DeviceBuf() { cudaFree(p); }
};

/// Relative margin at the boundary of a top-k (sorted descending); +inf when there is no
/// boundary or the two scores are an exact (deterministic) tie of forced blocks.
double boundary_margin(std::vector<double> v, int k) {
  if (k <= 0 || k >= static_cast<int>(v.size())) return std::numeric_limits<double>::infinity();
  std::sort(v.begin(), v.end(), std::greater<double>());
  const double a = v[k - 1], b = v[k];
  if (std::isinf(a) || std::isinf(b)) return std::numeric_limits<double>::infinity();
  return (a - b) / std::max({std::fabs(a), std::fabs(b), 1e-6});
}

template <class Transfer, nosa::HeadLayout HostLayout, class SelectorPolicy>
DecodeStepReport run(const DecodeStepScenario& sc) {
  DecodeStepReport rep;
  using Geo = nosa::Geometry<kB, kD, kG, HostLayout>;
  using Dec = nosa::Decoder<T, Geo, SelectorPolicy, Transfer>;
  const int L = sc.layers, Hq = kHkv * kG;
  std::mt19937 rng(sc.seed);
  std::normal_distribution<float> normal(0.f, 1.f);
  std::uniform_int_distribution<int> prompt_len(150, 1400);
  auto rnd = [&](std::size_t n, float scale) {
    std::vector<T> v(n);
    for (auto& x : v) x = nosa::to_bfloat16(normal(rng) * scale);
    return v;
  };
  auto rnd_bias = [&](std::size_t n) {
    std::vector<float> v(n);
    for (auto& x : v) x = nosa::to_float(nosa::to_bfloat16(normal(rng)));  // exactly representable
    return v;
  };

  nosa::DecodeConfig cfg;
  cfg.num_layers = L;
  cfg.num_kv_heads = kHkv;
  cfg.max_sequences = kMaxSequences;
  cfg.max_batch = kMaxBatch;
  cfg.max_tokens = kMaxTokens;
  cfg.params = small_params();
  cfg.slots_per_head = cfg.params.budget + sc.extra_slots;
  cfg.overlap = sc.overlap;
  cfg.overlap_chunks = sc.overlap_chunks;
  cfg.attention_splits = 3;  // fixed: the overlap on/off runs must be comparable bit for bit

  // Initial sequences and their prompts (generated up front so the tight pool can be sized).
  std::vector<int> initial_len;
  for (int i = 0; i < 4; ++i) initial_len.push_back(prompt_len(rng));
  long long need = 0;
  for (int n : initial_len) need += (n + kB - 1) / kB;
  cfg.pool_blocks = sc.tight_pool ? need * L + L : static_cast<long long>(kMaxSequences) * (kMaxTokens / kB) * L;

  nosa::DecodeSizes sizes;
  STEP_OK((Dec::sizes(cfg, &sizes)));
  cudaStream_t stream;
  STEP_CUDA(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
  DeviceBuf<char> ws(sizes.device_bytes);
  std::optional<nosa::PinnedHostMemory> pinned;
  DeviceBuf<char> device_pool(Transfer::pool_on_host ? 1 : sizes.pool_bytes);
  void* pool_host = nullptr;
  void* pool_dev = device_pool.p;
  if (Transfer::pool_on_host) {
    pinned.emplace(sizes.pool_bytes);
    pool_host = pinned->host();
    pool_dev = pinned->device();
  }
  std::optional<Dec> dec;
  try {
    dec.emplace(cfg, ws.p, sizes.device_bytes, pool_host, pool_dev, sizes.pool_bytes, stream);
  } catch (const nosa::Error& e) {
    rep.error = std::string("Decoder: ") + e.what();
    return rep;
  }

  const nosa::Dims dims{kB, kD, kG};
  std::vector<nosa::host::KVCache<double>> ref;
  for (int l = 0; l < L; ++l) ref.emplace_back(kHkv, dims, cfg.params);
  const auto options = nosa::host::StepOptions::of<SelectorPolicy>();

  DeviceBuf<T> d_q(static_cast<std::size_t>(kMaxBatch) * Hq * kD), d_o(static_cast<std::size_t>(kMaxBatch) * Hq * kD);
  DeviceBuf<T> d_k(static_cast<std::size_t>(kMaxTokens) * kHkv * kD), d_v(static_cast<std::size_t>(kMaxTokens) * kHkv * kD);
  DeviceBuf<float> d_bias(static_cast<std::size_t>(kMaxTokens) * kHkv), d_lse(static_cast<std::size_t>(kMaxBatch) * Hq);

  std::vector<nosa::SequenceId> active;
  nosa::SequenceId next_id = 100;
  std::uniform_int_distribution<int> chunk_len(1, 700);
  auto join = [&](int n) -> nosa::Status {
    const nosa::SequenceId id = next_id++;
    NOSA_RETURN_IF_ERROR(dec->add_sequence(id, stream));
    for (int l = 0; l < L; ++l) NOSA_RETURN_IF_ERROR(ref[l].add_sequence(id));
    // The prompt arrives whole or, with chunked_prefill, in random pieces: each piece is one
    // begin_prefill / prefill_layer x L / end_prefill and must give the same state as one pass.
    for (int first = 0; first < n;) {
      const int c = sc.chunked_prefill ? std::min(n - first, chunk_len(rng)) : n;
      nosa::Status st = dec->begin_prefill(id, c);
      if (!st.ok()) {
        NOSA_RETURN_IF_ERROR(dec->drop_sequence(id, stream));
        for (auto& r : ref) NOSA_RETURN_IF_ERROR(r.remove_sequence(id));
        return st;
      }
      for (int l = 0; l < L; ++l) {
        auto k = rnd(static_cast<std::size_t>(c) * kHkv * kD, 1.f), v = rnd(static_cast<std::size_t>(c) * kHkv * kD, 1.f);
        auto b = rnd_bias(static_cast<std::size_t>(c) * kHkv);
        if (cudaMemcpyAsync(d_k.p, k.data(), k.size() * sizeof(T), cudaMemcpyHostToDevice, stream) != cudaSuccess ||
            cudaMemcpyAsync(d_v.p, v.data(), v.size() * sizeof(T), cudaMemcpyHostToDevice, stream) != cudaSuccess ||
            cudaMemcpyAsync(d_bias.p, b.data(), b.size() * sizeof(float), cudaMemcpyHostToDevice, stream) != cudaSuccess)
          return nosa::Status(nosa::StatusCode::kCudaError, "prompt upload");
        NOSA_RETURN_IF_ERROR(dec->prefill_layer(id, l, d_k.p, d_v.p, d_bias.p, stream));
        if (cudaStreamSynchronize(stream) != cudaSuccess) return nosa::Status(nosa::StatusCode::kCudaError, "sync");
        NOSA_RETURN_IF_ERROR(ref[l].append(id, c, k.data(), v.data(), b.data()));
      }
      NOSA_RETURN_IF_ERROR(dec->end_prefill(id));
      first += c;
    }
    active.push_back(id);
    ++rep.joins;
    return {};
  };
  auto leave = [&](std::size_t index) -> nosa::Status {
    const nosa::SequenceId id = active[index];
    NOSA_RETURN_IF_ERROR(dec->drop_sequence(id, stream));
    for (auto& r : ref) NOSA_RETURN_IF_ERROR(r.remove_sequence(id));
    active.erase(active.begin() + static_cast<long>(index));
    ++rep.leaves;
    return {};
  };
  for (int n : initial_len) STEP_OK(join(n));
  rep.joins = 0;  // count only joins between steps

  bool had_capacity_error = false;
  for (int step = 0; step < sc.steps; ++step) {
    if (sc.join_leave && step > 0 && step % 6 == 0) {
      STEP_OK(leave(static_cast<std::size_t>(step / 6) % active.size()));
      STEP_OK(join(prompt_len(rng)));
      if (active.size() < static_cast<std::size_t>(kMaxBatch) && step % 12 == 0) STEP_OK(join(prompt_len(rng)));
    }
    std::vector<long long> before;
    for (auto id : active) before.push_back(dec->length(id));
    nosa::Status st = dec->begin_step(active.data(), static_cast<int>(active.size()), stream);
    if (!st.ok()) {
      if (!sc.tight_pool || st.code() != nosa::StatusCode::kCapacityExceeded) STEP_OK(st);
      ++rep.capacity_errors;
      had_capacity_error = true;
      for (std::size_t i = 0; i < active.size(); ++i)
        if (dec->length(active[i]) != before[i]) {
          rep.error = "a refused begin_step changed a sequence's length";
          return rep;
        }
      // Free room: the longest sequence leaves; the rest must go on unharmed.
      std::size_t longest = 0;
      for (std::size_t i = 1; i < active.size(); ++i)
        if (dec->length(active[i]) > dec->length(active[longest])) longest = i;
      STEP_OK(leave(longest));
      STEP_OK(dec->begin_step(active.data(), static_cast<int>(active.size()), stream));
    }
    const int batch = static_cast<int>(active.size());
    for (int l = 0; l < L; ++l) {
      auto q = rnd(static_cast<std::size_t>(batch) * Hq * kD, 1.f);
      auto k = rnd(static_cast<std::size_t>(batch) * kHkv * kD, 1.f), v = rnd(static_cast<std::size_t>(batch) * kHkv * kD, 1.f);
      auto b = rnd_bias(static_cast<std::size_t>(batch) * kHkv);
      STEP_CUDA(cudaMemcpyAsync(d_q.p, q.data(), q.size() * sizeof(T), cudaMemcpyHostToDevice, stream));
      STEP_CUDA(cudaMemcpyAsync(d_k.p, k.data(), k.size() * sizeof(T), cudaMemcpyHostToDevice, stream));
      STEP_CUDA(cudaMemcpyAsync(d_v.p, v.data(), v.size() * sizeof(T), cudaMemcpyHostToDevice, stream));
      STEP_CUDA(cudaMemcpyAsync(d_bias.p, b.data(), b.size() * sizeof(float), cudaMemcpyHostToDevice, stream));
      std::vector<T> o_init(q.size(), nosa::to_bfloat16(NAN));  // poison: every output must be written
      STEP_CUDA(cudaMemcpyAsync(d_o.p, o_init.data(), o_init.size() * sizeof(T), cudaMemcpyHostToDevice, stream));
      STEP_OK(dec->layer_step(l, d_q.p, d_k.p, d_v.p, d_bias.p, d_o.p, d_lse.p, stream));
      std::vector<T> o(q.size());
      std::vector<float> lse(static_cast<std::size_t>(batch) * Hq);
      const int mb = dec->max_blocks();
      std::vector<int> ids(static_cast<std::size_t>(batch) * kHkv * mb), counts(static_cast<std::size_t>(batch) * kHkv);
      STEP_CUDA(cudaMemcpyAsync(o.data(), d_o.p, o.size() * sizeof(T), cudaMemcpyDeviceToHost, stream));
      STEP_CUDA(cudaMemcpyAsync(lse.data(), d_lse.p, lse.size() * sizeof(float), cudaMemcpyDeviceToHost, stream));
      STEP_CUDA(cudaMemcpyAsync(ids.data(), dec->block_ids(), ids.size() * sizeof(int), cudaMemcpyDeviceToHost, stream));
      STEP_CUDA(cudaMemcpyAsync(counts.data(), dec->counts(), counts.size() * sizeof(int), cudaMemcpyDeviceToHost, stream));
      STEP_CUDA(cudaStreamSynchronize(stream));

      // Host reference of the same layer.
      for (int i = 0; i < batch; ++i)
        STEP_OK(ref[l].append(active[i], 1, k.data() + static_cast<std::size_t>(i) * kHkv * kD,
                              v.data() + static_cast<std::size_t>(i) * kHkv * kD, b.data() + static_cast<std::size_t>(i) * kHkv));
      std::vector<double> o_ref(q.size()), lse_ref(lse.size());
      std::vector<std::vector<int>> sel_ref;
      STEP_OK(nosa::host::decode_step(ref[l], active, q.data(), o_ref.data(), lse_ref.data(), options, &sel_ref));

      for (int i = 0; i < batch; ++i) {
        const long long Tlen = ref[l].length(active[i]);
        for (int h = 0; h < kHkv; ++h) {
          ++rep.heads_checked;
          const std::size_t row = static_cast<std::size_t>(i) * kHkv + h;
          const std::vector<int>& want = sel_ref[row];
          std::vector<int> got(ids.begin() + static_cast<long>(row * mb), ids.begin() + static_cast<long>(row * mb + std::clamp(counts[row], 0, mb)));
          if (got != want) {
            const auto& hs = ref[l].head(active[i], h);
            const auto sel = nosa::host::select_blocks<double>(options.selector, cfg.params, kB, Tlen,
                                                               q.data() + row * kG * kD, kG, kD, hs.compressed.keys(),
                                                               hs.compressed.scores());
            double margin = boundary_margin(sel.block_scores_q, options.selector == nosa::SelectorKind::kNosa
                                                                    ? cfg.params.query_aware
                                                                    : cfg.params.budget);
            if (options.selector == nosa::SelectorKind::kNosa)
              margin = std::min(margin, boundary_margin(sel.block_scores_e, cfg.params.budget));
            if (margin < 3e-2) {
              ++rep.near_ties;
            } else {
              ++rep.selection_mismatches;
              if (rep.first_mismatch.empty()) {
                std::ostringstream os;
                os << "step " << step << " layer " << l << " seq " << active[i] << " head " << h << " T " << Tlen
                   << ": GPU set of " << got.size() << " != host set of " << want.size() << " (margin " << margin << ")";
                rep.first_mismatch = os.str();
              }
            }
            continue;  // outputs of different sets are not comparable
          }
          for (int g = 0; g < kG; ++g) {
            const std::size_t r = row * kG + g;
            double scale = 1;
            for (int d = 0; d < kD; ++d) scale = std::max(scale, std::fabs(o_ref[r * kD + d]));
            for (int d = 0; d < kD; ++d) {
              const double x = nosa::to_float(o[r * kD + d]);
              if (!std::isfinite(x)) ++rep.non_finite;
              rep.max_o_err = std::max(rep.max_o_err, std::fabs(x - o_ref[r * kD + d]) / scale);
            }
            if (!std::isfinite(lse[r])) ++rep.non_finite;
            rep.max_lse_err = std::max(rep.max_lse_err, std::fabs(lse[r] - lse_ref[r]) / std::max(1.0, std::fabs(lse_ref[r])));
          }
        }
      }
      for (const T& x : o) rep.outputs.push_back(nosa::to_float(x));
      rep.outputs.insert(rep.outputs.end(), lse.begin(), lse.end());
    }
    STEP_OK(dec->end_step());
    if (had_capacity_error) ++rep.steps_after_capacity_error;
    ++rep.steps;
  }
  nosa::ResidencyCounters c;
  STEP_OK(dec->residency().read_counters(&c, stream));
  rep.blocks_moved = c.total_blocks_moved;
  rep.blocks_needed = c.total_blocks_needed;
  if (c.errors != 0) rep.error = "residency device error bits " + std::to_string(c.errors);
  cudaStreamDestroy(stream);
  return rep;
}

}  // namespace

DecodeStepReport run_decode_step_scenario(const DecodeStepScenario& s) {
  using nosa::HeadLayout;
  if (s.transfer == StepTransfer::kCopyEngine)
    return run<nosa::CopyEngine, HeadLayout::kHND, nosa::NosaSelector>(s);
  if (s.transfer == StepTransfer::kDeviceResident)
    return run<nosa::DeviceResident, HeadLayout::kNHD, nosa::NosaSelector>(s);
  if (s.selector == StepSelector::kInfllmV2) return run<nosa::ZeroCopyGather, HeadLayout::kNHD, nosa::InfllmV2Selector>(s);
  return run<nosa::ZeroCopyGather, HeadLayout::kNHD, nosa::NosaSelector>(s);
}

std::vector<std::string> decode_step_error_checks() {
  using Geo = nosa::Geometry<kB, kD, kG, nosa::HeadLayout::kNHD>;
  using Dec = nosa::Decoder<T, Geo, nosa::NosaSelector, nosa::ZeroCopyGather>;
  std::vector<std::string> failed;
  auto expect = [&](const nosa::Status& st, nosa::StatusCode code, const std::string& needle, const char* what) {
    if (st.code() != code || st.message().find(needle) == std::string::npos)
      failed.push_back(std::string(what) + ": got \"" + st.to_string() + "\", expected code " + nosa::to_string(code) +
                       " naming \"" + needle + "\"");
  };
  nosa::DecodeConfig good;
  good.num_layers = 2;
  good.num_kv_heads = kHkv;
  good.max_sequences = 4;
  good.max_batch = 4;
  good.max_tokens = 1024;
  good.pool_blocks = 64;
  good.params = small_params();
  {
    nosa::DecodeConfig c = good;
    c.num_layers = 0;
    expect(Dec::validate(c), nosa::StatusCode::kInvalidArgument, "num_layers", "num_layers = 0");
    c = good;
    c.max_batch = 5;
    expect(Dec::validate(c), nosa::StatusCode::kInvalidArgument, "max_batch", "max_batch > max_sequences");
    c = good;
    c.slots_per_head = 4;
    expect(Dec::validate(c), nosa::StatusCode::kInvalidArgument, "slots_per_head", "slots_per_head < budget");
    c = good;
    c.params.budget = 2;
    expect(Dec::validate(c), nosa::StatusCode::kInvalidArgument, "budget", "budget < forced");
    c = good;
    c.pool_blocks = 0;
    expect(Dec::validate(c), nosa::StatusCode::kInvalidArgument, "pool_blocks", "pool_blocks = 0");
    c = good;
    c.overlap_chunks = 0;
    expect(Dec::validate(c), nosa::StatusCode::kInvalidArgument, "overlap_chunks", "overlap_chunks = 0");
    expect(Dec::sizes(good, nullptr), nosa::StatusCode::kInvalidArgument, "out", "sizes(nullptr)");
  }
  nosa::DecodeSizes sizes;
  if (!Dec::sizes(good, &sizes).ok()) {
    failed.push_back("sizes of a good config failed");
    return failed;
  }
  cudaStream_t stream;
  cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking);
  DeviceBuf<char> ws(sizes.device_bytes);
  nosa::PinnedHostMemory pinned(sizes.pool_bytes);
  try {
    Dec bad(good, ws.p, sizes.device_bytes - 512, pinned.host(), pinned.device(), sizes.pool_bytes, stream);
    failed.push_back("a too small workspace was accepted");
  } catch (const nosa::Error& e) {
    if (std::string(e.what()).find("workspace") == std::string::npos) failed.push_back(std::string("workspace error: ") + e.what());
  }
  Dec dec(good, ws.p, sizes.device_bytes, pinned.host(), pinned.device(), sizes.pool_bytes, stream);
  expect(dec.add_sequence(1, stream), nosa::StatusCode::kSuccess, "", "add 1");
  expect(dec.add_sequence(1, stream), nosa::StatusCode::kInvalidArgument, "already present", "add 1 twice");
  expect(dec.drop_sequence(9, stream), nosa::StatusCode::kNotFound, "9", "drop unknown");
  expect(dec.begin_prefill(1, 2000), nosa::StatusCode::kCapacityExceeded, "max_tokens", "prompt beyond max_tokens");
  expect(dec.begin_prefill(7, 10), nosa::StatusCode::kNotFound, "7", "prefill unknown");
  expect(dec.begin_prefill(1, 0), nosa::StatusCode::kInvalidArgument, "n = 0", "prefill n = 0");
  nosa::SequenceId ids[2] = {1, 1};
  expect(dec.begin_step(ids, 2, stream), nosa::StatusCode::kInvalidArgument, "twice", "duplicate id");
  ids[1] = 5;
  expect(dec.begin_step(ids, 2, stream), nosa::StatusCode::kNotFound, "5", "unknown id");
  expect(dec.begin_step(ids, 0, stream), nosa::StatusCode::kInvalidArgument, "batch", "batch 0");
  expect(dec.begin_step(nullptr, 1, stream), nosa::StatusCode::kInvalidArgument, "ids", "null ids");
  expect(dec.layer_step(0, nullptr, nullptr, nullptr, nullptr, nullptr, nullptr, stream), nosa::StatusCode::kInvalidArgument,
         "no begin_step", "layer_step without begin_step");
  if (dec.length(1) != 0) failed.push_back("refused calls changed the length of sequence 1");
  expect(dec.begin_step(ids, 1, stream), nosa::StatusCode::kSuccess, "", "begin_step");
  expect(dec.layer_step(2, nullptr, nullptr, nullptr, nullptr, nullptr, nullptr, stream), nosa::StatusCode::kInvalidArgument,
         "layer", "layer out of range");
  expect(dec.layer_step(0, nullptr, nullptr, nullptr, nullptr, nullptr, nullptr, stream), nosa::StatusCode::kInvalidArgument,
         "q", "null q");
  expect(dec.add_sequence(2, stream), nosa::StatusCode::kInvalidArgument, "in progress", "add during a step");
  dec.cancel_step();
  if (dec.length(1) != 0) failed.push_back("a cancelled step changed the length");
  cudaStreamSynchronize(stream);
  cudaStreamDestroy(stream);
  return failed;
}

}  // namespace nosa_test
