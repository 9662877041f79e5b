// 01_decode_walkthrough, GPU path: a synthetic model's attention stack decodes a batch of long
// prompts through nosa::Decoder (KV cache offloaded to pinned host memory, ZeroCopyGather),
// once with NOSA selection and once with InfLLM-V2 selection, on the same tokens.
//
// Data flow per step and layer l (bf16, Hkv 2, G 8, D 128, B 64):
//   q_l = q_trace_l + W_l o_{l-1}      (l > 0: a random per-layer "o_proj" feeds the previous
//                                       layer's attention output into this layer's query)
//   k, v, b of the new token           from the synthetic trace (examples/common/synthetic.h)
//   o_l, lse_l = Decoder::layer_step(l, q_l, k, v, b)
// Checked steps (0, every --check-every, the last): every (layer, sequence, KV head) is compared
// with the host reference (host::KVCache + host::decode_step fed the same q): the selected set
// exactly (away from near-ties of the host's scores), o within 2e-2 of the row's scale and lse
// within 1e-3 (the bf16 tolerance of the decode-step tests). Timing (CUDA events around
// begin_step .. end_step) and tokens/s use the unchecked steps; blocks moved per step come from
// Residency::read_counters.
#include "gpu_path.h"

#include <nosa/decode_step.cuh>
#include <nosa/host.h>

#include "../common/cuda_util.cuh"
#include "../common/synthetic.h"

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <limits>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

namespace walkthrough_gpu {
namespace {

constexpr int kB = 64, kD = 128, kG = 8, kHkv = 2, kHq = kHkv * kG;
using T = nosa::bfloat16_t;
using Geo = nosa::Geometry<kB, kD, kG, nosa::HeadLayout::kNHD>;
using Real = float;  // host reference accumulation


using nosa_examples::DevBuf;

/// q[r][:] = q_in[r][:] + W o_prev[r][:] (o_prev may be null): one CTA of D threads per row.
__global__ void mix_kernel(__nv_bfloat16* q, const __nv_bfloat16* q_in, const __nv_bfloat16* o_prev, const float* W) {
  __shared__ float o[kD];
  const int r = blockIdx.x, d = threadIdx.x;
  const std::size_t row = static_cast<std::size_t>(r) * kD;
  float acc = __bfloat162float(q_in[row + d]);
  if (o_prev != nullptr) {
    o[d] = __bfloat162float(o_prev[row + d]);
    __syncthreads();
    for (int j = 0; j < kD; ++j) acc += W[d * kD + j] * o[j];
  }
  q[row + d] = __float2bfloat16(acc);
}

/// Relative gap at the boundary of a top-k (DESIGN.md: tests must not depend on near-ties).
double boundary_margin(std::vector<Real> v, int k) {
  if (k <= 0 || k >= static_cast<int>(v.size())) return std::numeric_limits<double>::infinity();
  std::sort(v.begin(), v.end(), std::greater<Real>());
  const double a = v[k - 1], b = v[k];
  if (std::isinf(a) || std::isinf(b)) return std::numeric_limits<double>::infinity();
  return (a - b) / std::max({std::fabs(a), std::fabs(b), 1e-6});
}

/// Per-layer step inputs on the host, shared by both selectors.
struct HostInputs {
  std::vector<T> q, k, v;      // [L][batch][Hq][D], [L][batch][Hkv][D] x2
  std::vector<float> bias;     // [L][batch][Hkv]
};

struct CheckStats {
  long long heads = 0, mismatches = 0, near_ties = 0, non_finite = 0;
  double max_o_err = 0, max_lse_err = 0;
  std::string first;
};

/// One selector's Decoder with its memory and per-layer device buffers.
template <class Policy>
struct Lane {
  using Dec = nosa::Decoder<T, Geo, Policy, nosa::ZeroCopyGather>;
  const char* name;
  int L, batch;
  cudaStream_t stream = nullptr;
  nosa::DecodeSizes sizes;
  std::unique_ptr<DevBuf<char>> ws;
  std::unique_ptr<nosa::PinnedHostMemory> pool;
  std::optional<Dec> dec;
  DevBuf<T> q_in, q, k, v, o;
  DevBuf<float> bias, lse, W;
  cudaEvent_t e0 = nullptr, e1 = nullptr;
  // results
  double timed_ms = 0;
  int timed_steps = 0;
  long long moved_total = 0, needed_total = 0;
  std::vector<long long> moved_per_step;
  CheckStats check;

  Lane(const char* n, const nosa::DecodeConfig& cfg, int b, const std::vector<float>& w)
      : name(n), L(cfg.num_layers), batch(b), q_in(static_cast<std::size_t>(L) * b * kHq * kD), q(q_in.n), k(static_cast<std::size_t>(L) * b * kHkv * kD),
        v(k.n), o(q_in.n), bias(static_cast<std::size_t>(L) * b * kHkv), lse(static_cast<std::size_t>(L) * b * kHq), W(w.size()) {
    NOSA_EX_CUDA(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
    NOSA_EX_CUDA(cudaEventCreate(&e0));
    NOSA_EX_CUDA(cudaEventCreate(&e1));
    NOSA_EX_OK(Dec::sizes(cfg, &sizes));
    ws = std::make_unique<DevBuf<char>>(sizes.device_bytes);
    pool = std::make_unique<nosa::PinnedHostMemory>(sizes.pool_bytes);
    dec.emplace(cfg, ws->p, sizes.device_bytes, pool->host(), pool->device(), sizes.pool_bytes, stream);
    W.upload(w.data(), w.size(), stream);
  }
  ~Lane() {
    dec.reset();
    if (e0) cudaEventDestroy(e0);
    if (e1) cudaEventDestroy(e1);
    if (stream) cudaStreamDestroy(stream);
  }
  std::size_t qoff(int l) const { return static_cast<std::size_t>(l) * batch * kHq * kD; }
  std::size_t kvoff(int l) const { return static_cast<std::size_t>(l) * batch * kHkv * kD; }

  /// One decode step of all layers. When `readback`, fills the fed q, o, lse and the selection of
  /// every layer (syncs after each layer: such steps are not timed).
  void step(const std::vector<nosa::SequenceId>& ids, const HostInputs& in, bool readback, std::vector<T>* q_fed,
            std::vector<T>* o_out, std::vector<float>* lse_out, std::vector<int>* sel, std::vector<int>* counts) {
    q_in.upload(in.q.data(), in.q.size(), stream);
    k.upload(in.k.data(), in.k.size(), stream);
    v.upload(in.v.data(), in.v.size(), stream);
    bias.upload(in.bias.data(), in.bias.size(), stream);
    const int mb = dec->max_blocks();
    NOSA_EX_CUDA(cudaEventRecord(e0, stream));
    NOSA_EX_OK(dec->begin_step(ids.data(), batch, stream));
    for (int l = 0; l < L; ++l) {
      mix_kernel<<<batch * kHq, kD, 0, stream>>>(nosa::detail::as_cuda(q.p + qoff(l)), nosa::detail::as_cuda(q_in.p + qoff(l)),
                                                 l > 0 ? nosa::detail::as_cuda(o.p + qoff(l - 1)) : nullptr,
                                                 W.p + static_cast<std::size_t>(l) * kD * kD);
      NOSA_EX_CUDA(cudaGetLastError());
      NOSA_EX_OK(dec->layer_step(l, q.p + qoff(l), k.p + kvoff(l), v.p + kvoff(l), bias.p + static_cast<std::size_t>(l) * batch * kHkv,
                            o.p + qoff(l), lse.p + static_cast<std::size_t>(l) * batch * kHq, stream));
      if (readback) {
        const std::size_t rows = static_cast<std::size_t>(batch) * kHkv;
        NOSA_EX_CUDA(cudaMemcpyAsync(sel->data() + l * rows * mb, dec->block_ids(), rows * mb * sizeof(int), cudaMemcpyDeviceToHost, stream));
        NOSA_EX_CUDA(cudaMemcpyAsync(counts->data() + l * rows, dec->counts(), rows * sizeof(int), cudaMemcpyDeviceToHost, stream));
        NOSA_EX_CUDA(cudaStreamSynchronize(stream));
      }
    }
    NOSA_EX_OK(dec->end_step());
    NOSA_EX_CUDA(cudaEventRecord(e1, stream));
    NOSA_EX_CUDA(cudaEventSynchronize(e1));
    if (!readback) {
      float ms = 0;
      NOSA_EX_CUDA(cudaEventElapsedTime(&ms, e0, e1));
      timed_ms += ms;
      ++timed_steps;
    } else {
      NOSA_EX_CUDA(cudaMemcpy(q_fed->data(), q.p, q_fed->size() * sizeof(T), cudaMemcpyDeviceToHost));
      NOSA_EX_CUDA(cudaMemcpy(o_out->data(), o.p, o_out->size() * sizeof(T), cudaMemcpyDeviceToHost));
      NOSA_EX_CUDA(cudaMemcpy(lse_out->data(), lse.p, lse_out->size() * sizeof(float), cudaMemcpyDeviceToHost));
    }
    nosa::ResidencyCounters c;
    NOSA_EX_OK(dec->residency().read_counters(&c, stream));
    if (c.errors != 0) throw std::runtime_error(std::string(name) + ": residency error bits " + std::to_string(c.errors));
    moved_per_step.push_back(c.step_blocks_moved);
    moved_total += c.step_blocks_moved;
    needed_total += c.step_blocks_needed;
  }
};

/// Compares one checked step of one lane with the host reference.
template <class Policy>
void check_step(Lane<Policy>& lane, int step, const std::vector<nosa::host::KVCache<Real>>& ref,
                const std::vector<nosa::SequenceId>& ids, const std::vector<T>& q_fed, const std::vector<T>& o,
                const std::vector<float>& lse, const std::vector<int>& sel, const std::vector<int>& counts) {
  const auto options = nosa::host::StepOptions::of<Policy>();
  const int batch = lane.batch, mb = lane.dec->max_blocks();
  const nosa::SelectionParams& params = lane.dec->config().params;
  CheckStats& cs = lane.check;
  for (int l = 0; l < lane.L; ++l) {
    const T* ql = q_fed.data() + lane.qoff(l);
    std::vector<Real> o_ref(static_cast<std::size_t>(batch) * kHq * kD), lse_ref(static_cast<std::size_t>(batch) * kHq);
    std::vector<std::vector<int>> sel_ref;
    NOSA_EX_OK(nosa::host::decode_step(ref[l], ids, ql, o_ref.data(), lse_ref.data(), options, &sel_ref));
    for (int b = 0; b < batch; ++b)
      for (int h = 0; h < kHkv; ++h) {
        ++cs.heads;
        const std::size_t row = static_cast<std::size_t>(b) * kHkv + h;
        const std::size_t lrow = static_cast<std::size_t>(l) * batch * kHkv + row;
        const int cnt = std::clamp(counts[lrow], 0, mb);
        const std::vector<int> got(sel.begin() + static_cast<long>(lrow * mb), sel.begin() + static_cast<long>(lrow * mb + cnt));
        if (got != sel_ref[row]) {
          const auto& hs = ref[l].head(ids[b], h);
          const auto s = nosa::host::select_blocks<Real>(options.selector, params, kB, ref[l].length(ids[b]),
                                                         ql + row * kG * kD, kG, kD, hs.compressed.keys(),
                                                         hs.compressed.scores());
          double margin = boundary_margin(s.block_scores_q, options.selector == nosa::SelectorKind::kNosa
                                                                ? params.query_aware
                                                                : params.budget);
          if (options.selector == nosa::SelectorKind::kNosa) margin = std::min(margin, boundary_margin(s.block_scores_e, params.budget));
          if (margin < 3e-2) {
            ++cs.near_ties;
          } else {
            ++cs.mismatches;
            if (cs.first.empty())
              cs.first = "step " + std::to_string(step) + " layer " + std::to_string(l) + " seq " + std::to_string(ids[b]) +
                         " head " + std::to_string(h) + ": GPU selected " + std::to_string(got.size()) + " blocks, host " +
                         std::to_string(sel_ref[row].size()) + ", sets differ (margin " + std::to_string(margin) + ")";
          }
          continue;  // outputs over different sets are not comparable
        }
        for (int g = 0; g < kG; ++g) {
          const std::size_t r = row * kG + g;
          const std::size_t lr = static_cast<std::size_t>(l) * batch * kHq + r;
          double scale = 1;
          for (int d = 0; d < kD; ++d) scale = std::max(scale, std::fabs(static_cast<double>(o_ref[r * kD + d])));
          for (int d = 0; d < kD; ++d) {
            const double x = nosa::to_float(o[lr * kD + d]);
            if (!std::isfinite(x)) ++cs.non_finite;
            cs.max_o_err = std::max(cs.max_o_err, std::fabs(x - o_ref[r * kD + d]) / scale);
          }
          if (!std::isfinite(lse[lr])) ++cs.non_finite;
          cs.max_lse_err = std::max(cs.max_lse_err, std::fabs(static_cast<double>(lse[lr]) - lse_ref[r]) /
                                                        std::max(1.0, std::fabs(static_cast<double>(lse_ref[r]))));
        }
      }
  }
}

}  // namespace

bool gpu_available() {
  int n = 0;
  return cudaGetDeviceCount(&n) == cudaSuccess && n > 0;
}

int run_gpu_path(const GpuOptions& opt) {
  try {
    cudaDeviceProp prop;
    NOSA_EX_CUDA(cudaGetDeviceProperties(&prop, 0));
    const int L = opt.layers, batch = opt.batch;
    const nosa::SelectionParams params;  // the NOSA release defaults
    std::printf("nosa %d.%d.%d decode walkthrough on the GPU (%s): nosa::Decoder, KV cache in pinned host memory "
                "(ZeroCopyGather)\n", NOSA_VERSION_MAJOR, NOSA_VERSION_MINOR, NOSA_VERSION_PATCH, prop.name);
    std::printf("  layers %d, batch %d, Hkv %d, G %d, D %d, B %d, bf16 | window %d stride %d sink %d local %d "
                "query-aware %d budget %d | AR(1) rho %.3f, seed %llu\n",
                L, batch, kHkv, kG, kD, kB, params.window, params.stride, params.sink, params.local, params.query_aware,
                params.budget, opt.rho, opt.seed);

    nosa_examples::SyntheticConfig scfg;
    scfg.num_layers = L;
    scfg.num_kv_heads = kHkv;
    scfg.group_size = kG;
    scfg.head_dim = kD;
    scfg.block_size = kB;
    scfg.rho = opt.rho;
    scfg.seed = opt.seed;
    nosa_examples::SyntheticTrace trace(scfg);

    // Random per-layer o_proj-like mixing W_l ~ N(0, 0.5 / D): feeds o_{l-1} into q_l.
    std::vector<float> w(static_cast<std::size_t>(L) * kD * kD);
    nosa_examples::Rng wrng(nosa_examples::mix_seed(opt.seed, 4242));
    for (float& x : w) x = static_cast<float>(wrng.normal() * std::sqrt(0.5 / kD));

    std::vector<nosa::SequenceId> ids;
    std::vector<long long> lens;
    nosa_examples::Rng len_rng(nosa_examples::mix_seed(opt.seed, 99));
    for (int b = 0; b < batch; ++b) {
      const double frac = batch > 1 ? static_cast<double>(b) / (batch - 1) : 0.0;
      long long len = opt.min_context + static_cast<long long>(frac * (opt.max_context - opt.min_context));
      len = std::max(1LL, len - static_cast<long long>(len_rng.next() % 61));
      ids.push_back(100 + b);
      lens.push_back(len);
      trace.add_sequence(ids.back(), len);
    }
    const long long longest = *std::max_element(lens.begin(), lens.end());

    nosa::DecodeConfig cfg;
    cfg.num_layers = L;
    cfg.num_kv_heads = kHkv;
    cfg.max_sequences = batch;
    cfg.max_batch = batch;
    cfg.max_tokens = longest + opt.steps + 1;
    cfg.pool_blocks = static_cast<long long>(batch) * L * ((cfg.max_tokens + kB - 1) / kB);
    cfg.params = params;
    cfg.overlap = true;
    Lane<nosa::NosaSelector> nosa_lane("NOSA", cfg, batch, w);
    Lane<nosa::InfllmV2Selector> infllm_lane("InfLLM-V2", cfg, batch, w);
    std::printf("  memory per selector: GPU workspace %.1f MiB, pinned host pool %.1f MiB\n",
                nosa_lane.sizes.device_bytes / 1048576.0, nosa_lane.sizes.pool_bytes / 1048576.0);

    // ---- Prompts: one trace, the host reference and both Decoders get the same bf16 tokens. ----
    std::vector<nosa::host::KVCache<Real>> ref;
    const nosa::Dims dims{kB, kD, kG, nosa::HeadLayout::kNHD};
    for (int l = 0; l < L; ++l) ref.emplace_back(kHkv, dims, params);
    std::printf("  prompts:");
    {
      DevBuf<T> dk(static_cast<std::size_t>(longest) * kHkv * kD), dv(dk.n);
      DevBuf<float> db(static_cast<std::size_t>(longest) * kHkv);
      std::vector<T> k(dk.n), v(dk.n);
      std::vector<float> bias(db.n);
      for (int b = 0; b < batch; ++b) {
        const long long n = lens[b];
        std::printf(" %lld", n);
        std::fflush(stdout);
        NOSA_EX_OK(nosa_lane.dec->add_sequence(ids[b], nosa_lane.stream));
        NOSA_EX_OK(infllm_lane.dec->add_sequence(ids[b], infllm_lane.stream));
        NOSA_EX_OK(nosa_lane.dec->begin_prefill(ids[b], n));
        NOSA_EX_OK(infllm_lane.dec->begin_prefill(ids[b], n));
        for (int l = 0; l < L; ++l) {
          trace.tokens(ids[b], l, 0, n, k.data(), v.data(), bias.data());
          NOSA_EX_OK(ref[l].add_sequence(ids[b]));
          NOSA_EX_OK(ref[l].append(ids[b], n, k.data(), v.data(), bias.data()));
          NOSA_EX_CUDA(cudaMemcpy(dk.p, k.data(), n * kHkv * kD * sizeof(T), cudaMemcpyHostToDevice));
          NOSA_EX_CUDA(cudaMemcpy(dv.p, v.data(), n * kHkv * kD * sizeof(T), cudaMemcpyHostToDevice));
          NOSA_EX_CUDA(cudaMemcpy(db.p, bias.data(), n * kHkv * sizeof(float), cudaMemcpyHostToDevice));
          NOSA_EX_OK(nosa_lane.dec->prefill_layer(ids[b], l, dk.p, dv.p, db.p, nosa_lane.stream));
          NOSA_EX_OK(infllm_lane.dec->prefill_layer(ids[b], l, dk.p, dv.p, db.p, infllm_lane.stream));
          NOSA_EX_CUDA(cudaStreamSynchronize(nosa_lane.stream));  // dk/dv/db are reused by the next layer
          NOSA_EX_CUDA(cudaStreamSynchronize(infllm_lane.stream));
        }
        NOSA_EX_OK(nosa_lane.dec->end_prefill(ids[b]));
        NOSA_EX_OK(infllm_lane.dec->end_prefill(ids[b]));
      }
      std::printf(" tokens\n");
    }
    // The prompt's slot loads are not decode traffic.
    nosa::ResidencyCounters c0;
    NOSA_EX_OK(nosa_lane.dec->residency().read_counters(&c0, nosa_lane.stream));
    NOSA_EX_OK(infllm_lane.dec->residency().read_counters(&c0, infllm_lane.stream));

    // ---- Decode steps. ----
    HostInputs in;
    in.q.resize(static_cast<std::size_t>(L) * batch * kHq * kD);
    in.k.resize(static_cast<std::size_t>(L) * batch * kHkv * kD);
    in.v.resize(in.k.size());
    in.bias.resize(static_cast<std::size_t>(L) * batch * kHkv);
    const int mb = nosa_lane.dec->max_blocks();
    std::vector<T> q_fed(in.q.size()), o(in.q.size());
    std::vector<float> lse(static_cast<std::size_t>(L) * batch * kHq);
    std::vector<int> sel(static_cast<std::size_t>(L) * batch * kHkv * mb), counts(static_cast<std::size_t>(L) * batch * kHkv);
    if (!opt.quiet) std::printf("\n step | tokens (first..last) | checked | blocks moved: NOSA  InfLLM-V2 | step ms: NOSA  InfLLM-V2\n");
    for (int step = 0; step < opt.steps; ++step) {
      const bool checked = step == 0 || step == opt.steps - 1 || (opt.check_every > 0 && step % opt.check_every == 0);
      for (int b = 0; b < batch; ++b) {
        trace.advance(ids[b]);
        for (int l = 0; l < L; ++l) {
          const long long T0 = ref[l].length(ids[b]);
          const std::size_t qo = (static_cast<std::size_t>(l) * batch + b) * kHq * kD;
          const std::size_t ko = (static_cast<std::size_t>(l) * batch + b) * kHkv * kD;
          const std::size_t bo = (static_cast<std::size_t>(l) * batch + b) * kHkv;
          trace.queries(ids[b], l, in.q.data() + qo);
          trace.tokens(ids[b], l, T0, 1, in.k.data() + ko, in.v.data() + ko, in.bias.data() + bo);
          NOSA_EX_OK(ref[l].append(ids[b], 1, in.k.data() + ko, in.v.data() + ko, in.bias.data() + bo));
        }
      }
      const double t_n0 = nosa_lane.timed_ms, t_i0 = infllm_lane.timed_ms;
      nosa_lane.step(ids, in, checked, &q_fed, &o, &lse, &sel, &counts);
      if (checked) check_step(nosa_lane, step, ref, ids, q_fed, o, lse, sel, counts);
      infllm_lane.step(ids, in, checked, &q_fed, &o, &lse, &sel, &counts);
      if (checked) check_step(infllm_lane, step, ref, ids, q_fed, o, lse, sel, counts);
      if (!opt.quiet) {
        std::printf(" %4d | %7lld..%-7lld      | %7s | %18lld  %9lld |", step, ref[0].length(ids.front()),
                    ref[0].length(ids.back()), checked ? "yes" : "", nosa_lane.moved_per_step.back(),
                    infllm_lane.moved_per_step.back());
        if (checked) std::printf("     (not timed)\n");
        else std::printf(" %12.3f  %9.3f\n", nosa_lane.timed_ms - t_n0, infllm_lane.timed_ms - t_i0);
      }
    }

    // ---- Summary. ----
    int failures = 0;
    std::printf("\nsummary over %d steps x %d layers x %d sequences x %d KV heads (budget %d blocks of %d tokens):\n",
                opt.steps, L, batch, kHkv, params.budget, kB);
    auto summary = [&](auto& lane) {
      const CheckStats& c = lane.check;
      // steps after the first: the first decode step loads every selected block once
      long long moved_after_first = 0;
      for (std::size_t s = 1; s < lane.moved_per_step.size(); ++s) moved_after_first += lane.moved_per_step[s];
      const double per_step = lane.moved_per_step.size() > 1 ? static_cast<double>(moved_after_first) / (lane.moved_per_step.size() - 1) : 0.0;
      const double tok_s = lane.timed_ms > 0 ? 1e3 * batch * lane.timed_steps / lane.timed_ms : 0.0;
      std::printf("  %-9s: %.1f blocks moved per step after the first (%.2f per (layer, sequence, head); %.1f MiB/step over "
                  "PCIe), hit rate %.3f; %.0f tokens/s (%d-layer stack, mean of %d timed steps, %.3f ms/step)\n",
                  lane.name, per_step, per_step / (L * batch * kHkv),
                  per_step * nosa::Residency<T, Geo, nosa::ZeroCopyGather>::block_bytes() / 1048576.0,
                  lane.needed_total ? 1.0 - static_cast<double>(lane.moved_total) / lane.needed_total : 1.0, tok_s,
                  L, lane.timed_steps, lane.timed_steps ? lane.timed_ms / lane.timed_steps : 0.0);
      std::printf("             checked %lld (step, layer, sequence, head): %lld selection mismatches, %lld near-ties "
                  "skipped, max o err %.2e (tol 2e-2), max lse err %.2e (tol 1e-3), %lld non-finite\n",
                  c.heads, c.mismatches, c.near_ties, c.max_o_err, c.max_lse_err, c.non_finite);
      const bool ok = c.heads > 0 && c.mismatches == 0 && c.non_finite == 0 && c.max_o_err <= 2e-2 &&
                      c.max_lse_err <= 1e-3 && c.near_ties * 10 <= c.heads;
      if (!ok) {
        ++failures;
        std::printf("CHECK FAILED (%s)%s%s\n", lane.name, c.first.empty() ? "" : ": first mismatch: ", c.first.c_str());
      }
      return per_step;
    };
    const double pn = summary(nosa_lane), pi = summary(infllm_lane);
    if (pn > 0) std::printf("  InfLLM-V2 moves %.2fx the blocks NOSA moves\n", pi / pn);
    if (failures > 0) {
      std::printf("FAILED: %d selector(s) disagree with the host reference\n", failures);
      return 1;
    }
    std::printf("all GPU checks against the host reference passed\n");
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "GPU path failed: %s\n", e.what());
    return 1;
  }
}

}  // namespace walkthrough_gpu
