// bench_decode_step: the headline benchmark (issue 7 part 4). Tokens/s of the attention stack of
// ONE layer (select + transfer + attend + append) for a batch of long sequences, at 32K and 128K
// context, for
//   nosa_offload     Decoder<NosaSelector, ZeroCopyGather>: KV cache in pinned host memory
//   infllm_offload   Decoder<InfllmV2Selector, ZeroCopyGather>: same, InfLLM-V2 selection
//   dense_gpu        what a dense engine does: the whole cache on the GPU (contiguous kHND),
//                    per-step append of the new token + decode_attention(kDense, identity table)
//   nosa_device      Decoder<NosaSelector, DeviceResident>: the whole cache on the GPU
// under one GPU memory budget per layer (--gpu_budget_gib, default 2 GiB: an H100's 80 GB holding
// a 16 GB model and 64 GB of KV state for 32 layers). The offload runs take the largest batch
// whose device workspace fits the budget and whose pinned pool fits --pinned_cap_gib (default 32
// GiB; the lent machine has 128 GiB of RAM, so the benchmark has ONE layer: per-layer tokens/s is
// what the model's L layers divide). The on-GPU runs take the largest batch whose cache fits.
//
// Data: a hash-based generator on the GPU (no tables; the same trace in every run) fills the
// prompts through begin_prefill / prefill_layer / end_prefill in 32K-token chunks. The model, per
// (sequence s, KV head h), for a prompt of P tokens (nbp = P / 64 blocks):
//   topics      u_i[D] ~ N(0,1), i < kTopics (8)
//   keys        k_t ~ N(0,1) per element; in the kAligned (32) "aligned" blocks,
//               k_t = 0.8 n + 0.6 u_i, i = that block's topic. The aligned blocks sit one per
//               stratum of the blocks [1, nbp - 32) (a hashed position in each of 32 equal strata,
//               so never on the sink or the last blocks, which are forced anyway); their topics are
//               hashed, about 4 blocks per topic spread over the prompt. Their number does not
//               grow with the context: the query-dependent competition for the 47 non-forced
//               places of the budget looks the same at 32K and 128K.
//   bias        b_t = sin(2 pi t/p1 + f1) + 0.5 sin(2 pi t/p2 + f2) + 0.1 N(0,1), a smooth
//               query-independent score (p1 in [1500,4000), p2 in [150,500) tokens, hashed)
//   queries     q_g = 3 (sqrt(0.3) sum_i w_i u_i / |w| + sqrt(0.7) z_g) for the G query heads g
//               of KV head h. Both drift as AR(1) with ONE knob rho:
//               w[kTopics] <- rho w + sqrt(1-rho^2) n   (shared by the group: the topic mixture)
//               z_g[D]     <- rho z_g + sqrt(1-rho^2) n (per query head)
// The blocks of the topics with the largest weights (and their neighbours, which share a
// compressed window with them) lead the query-aware ranking, so the selection moves as the
// mixture drifts; NOSA's agnostic part follows the bias and does not move, so NOSA overlaps more
// than InfLLM-V2 at the same rho. rho is calibrated per context at start-up so that InfLLM-V2's
// mean consecutive-step overlap is ~0.89 (DESIGN.md s.5) unless --rho is given. A CPU model of
// this trace with nosa::host::select_blocks gives nearly the same rho -> overlap curve at 32K and
// 128K (128K ~0.01 lower; docs/notes/decode_step.md). The generator's kernels run before each timed step (the engine's job).
//
// Per run it reports: tokens/s (batch / step time), the measured fraction of selected blocks that
// changed between steps (block_ids read back in a side run), blocks moved (residency counters),
// the time split select / transfer / attend / append (a side run of the same components, one
// stream, CUDA events between the phases), PCIe and HBM bytes per step and the fraction of the
// bound max(HBM bytes / HBM ceiling, PCIe bytes / PCIe ceiling), with both ceilings measured at
// start-up in this binary (D2D cudaMemcpy; pinned H2D cudaMemcpy).
//
// Extra flags (before the Google Benchmark ones): --rho R, --gpu_budget_gib X, --pinned_cap_gib X,
// --max_batch N (cap for every run), --steps N (timed steps per run, default 24), --overlap_chunks N
// (DecodeConfig::overlap_chunks of the sparse runs; default: the library's), --slots_per_head N (GPU
// slots per head of the offload runs, within the GPU budget; default 128 = budget + 64 extra slots;
// 0 = the budget, no extra slots).
#include <nosa/attention.cuh>
#include <nosa/decode_step.cuh>

#include "bench_util.cuh"

#include <benchmark/benchmark.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <memory>
#include <optional>
#include <stdexcept>
#include <map>
#include <string>
#include <vector>

namespace {

using T = nosa::bfloat16_t;
using CT = __nv_bfloat16;
constexpr int kB = 64, kD = 128, kG = 16, kHkv = 2, kHq = kHkv * kG;
using Geo = nosa::Geometry<kB, kD, kG, nosa::HeadLayout::kNHD>;
using SlotGeo = nosa::Geometry<kB, kD, kG, nosa::HeadLayout::kHND>;
constexpr long long kChunk = 32768;  // prompt ingestion chunk (tokens)
constexpr double kGiB = 1024.0 * 1024.0 * 1024.0;

struct Flags {
  double rho = -1;  // < 0: calibrate
  double gpu_budget_gib = 2.0;
  double pinned_cap_gib = 32.0;
  int max_batch = 128;
  int steps = 24;
  int overlap_chunks = 0;  // > 0: DecodeConfig::overlap_chunks (else the library's default)
  // GPU slots per head of the offload runs (0: the budget, no extra slots). 128 = the budget + 64
  // extra slots (LRU), which fit the 2 GiB budget at batch 128 up to 128K (fits() checks it).
  int slots_per_head = 128;
} g_flags;

struct Ceilings {
  double hbm = 0, pcie = 0;  // bytes/s
} g_ceil;

// Query drift per context length. The trace is built so that one rho gives about the same overlap
// at 32K and 128K, but each context is still calibrated on its own (the rest of the difference).
std::map<long long, double> g_rho;
double rho_for(long long ctx) {
  auto it = g_rho.find(ctx);
  return it == g_rho.end() ? 0.97 : it->second;
}
std::string g_gpu_name;


/// Owning device buffer.
template <class U>
struct DevBuf {
  U* p = nullptr;
  std::size_t n = 0;
  DevBuf() = default;
  explicit DevBuf(std::size_t count) : n(count) {
    NOSA_BENCH_CUDA(cudaMalloc(reinterpret_cast<void**>(&p), std::max<std::size_t>(count, 1) * sizeof(U)));
  }
  DevBuf(const DevBuf&) = delete;
  DevBuf& operator=(const DevBuf&) = delete;
  ~DevBuf() {
    if (p) cudaFree(p);
  }
};

// ---- hash-based synthetic data (device) ---------------------------------------------------------
__host__ __device__ inline unsigned long long mix64(unsigned long long z) {
  z += 0x9E3779B97F4A7C15ull;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}
__device__ inline unsigned long long key(unsigned long long a, unsigned long long b, unsigned long long c,
                                         unsigned long long d) {
  return mix64(mix64(mix64(a * 0x632BE59BD9B4E019ull + b) ^ c) ^ d);
}
__device__ inline float unit(unsigned long long h) { return (static_cast<float>(h >> 40) + 0.5f) * (1.0f / 16777216.0f); }
__device__ inline float gauss(unsigned long long h) {
  const float u1 = unit(h), u2 = unit(mix64(h ^ 0xA5A5A5A5ull));
  return sqrtf(-2.0f * __logf(u1)) * __cosf(6.2831853f * u2);
}
constexpr unsigned long long kSeed = 20261124ull;
enum : unsigned long long {
  kTagK = 1, kTagV = 2, kTagBias = 3, kTagTopic = 4, kTagAligned = 5, kTagPhase = 6, kTagZ = 7, kTagW = 8
};
constexpr int kTopics = 8;    // topics per (sequence, KV head)
constexpr int kAligned = 32;  // aligned blocks per (sequence, KV head), whatever the context

/// Element d of topic i of (sequence seq, KV head h).
__device__ inline float topic(int seq, int h, int i, int d) {
  return gauss(key(kSeed, kTagTopic, static_cast<unsigned long long>(seq * 64 + h) * 64 + i, d));
}

/// Topic of block m when it is one of the kAligned aligned blocks of (seq, h), else -1. Stratum j
/// of the usable blocks [1, 1 + nu) holds one aligned block at a hashed position; a block can only
/// be the pick of its own stratum or a neighbouring one (integer rounding), so 3 hashes decide.
__device__ inline int aligned_topic(int seq, int h, long long m, long long prompt_blocks) {
  const long long nu = prompt_blocks - 33;  // the last 32 prompt blocks and later ones: never
  if (m < 1 || m >= 1 + nu || nu < kAligned) return -1;
  const long long j0 = ((m - 1) * kAligned) / nu;
  for (long long j = j0 - 1; j <= j0 + 1; ++j) {
    if (j < 0 || j >= kAligned) continue;
    const unsigned long long hs = key(kSeed, kTagAligned, seq * 64 + h, static_cast<unsigned long long>(j));
    const long long pos = 1 + (j * nu + static_cast<long long>(hs % static_cast<unsigned long long>(nu))) / kAligned;
    if (pos == m) return static_cast<int>((hs >> 32) % kTopics);
  }
  return -1;
}

/// Token t of sequence seq, KV head h (prompt of prompt_blocks blocks): element d of k and v.
/// Random keys, the aligned blocks leaning toward their topic (see the header comment).
__device__ inline void gen_token(int seq, long long t, int h, int d, long long prompt_blocks, float* k, float* v) {
  const unsigned long long base = key(kSeed, seq, static_cast<unsigned long long>(t), h);
  const int ti = aligned_topic(seq, h, t / kB, prompt_blocks);
  float x = gauss(mix64(base ^ (kTagK << 56) ^ d));
  if (ti >= 0) x = 0.8f * x + 0.6f * topic(seq, h, ti, d);
  *k = x;
  *v = gauss(mix64(base ^ (kTagV << 56) ^ d));
}
__device__ inline float gen_bias(int seq, long long t, int h) {
  const unsigned long long ph = key(kSeed, kTagPhase, seq, h);
  const float p1 = 1500.f + 2500.f * unit(ph), p2 = 150.f + 350.f * unit(mix64(ph));
  const float f1 = 6.2831853f * unit(mix64(ph + 1)), f2 = 6.2831853f * unit(mix64(ph + 2));
  const float tt = static_cast<float>(t);
  return sinf(6.2831853f * tt / p1 + f1) + 0.5f * sinf(6.2831853f * tt / p2 + f2) +
         0.1f * gauss(key(kSeed, kTagBias, seq, static_cast<unsigned long long>(t) * 8 + h));
}

/// Rows r < rows of [rows][Hkv][D]: row r is token first + r of sequence seq0 (prompt chunk) or,
/// when per_seq, token `first` of sequence r (one decode token per batch entry).
__global__ void gen_kv_kernel(CT* k, CT* v, float* bias, int seq0, long long first, int rows, bool per_seq,
                              long long prompt_blocks) {
  const long long i = blockIdx.x * static_cast<long long>(blockDim.x) + threadIdx.x;
  if (i >= static_cast<long long>(rows) * kHkv * kD) return;
  const int d = static_cast<int>(i % kD);
  const int h = static_cast<int>((i / kD) % kHkv);
  const int r = static_cast<int>(i / (kD * kHkv));
  const int seq = per_seq ? r : seq0;
  const long long t = per_seq ? first : first + r;
  float kv, vv;
  gen_token(seq, t, h, d, prompt_blocks, &kv, &vv);
  k[i] = __float2bfloat16(kv);
  v[i] = __float2bfloat16(vv);
  if (d == 0) bias[static_cast<long long>(r) * kHkv + h] = gen_bias(seq, t, h);
}

/// Dense cache prompt fill: kHND contiguous, (seq, h) owns [cap_tokens][D]; tokens < n.
__global__ void gen_dense_cache_kernel(CT* kc, CT* vc, int batch, long long cap_tokens, long long n,
                                       long long prompt_blocks) {
  const long long total = static_cast<long long>(batch) * kHkv * n * kD;
  for (long long i = blockIdx.x * static_cast<long long>(blockDim.x) + threadIdx.x; i < total;
       i += static_cast<long long>(gridDim.x) * blockDim.x) {
    const int d = static_cast<int>(i % kD);
    const long long t = (i / kD) % n;
    const int h = static_cast<int>((i / (kD * n)) % kHkv);
    const int seq = static_cast<int>(i / (kD * n * kHkv));
    float kv, vv;
    gen_token(seq, t, h, d, prompt_blocks, &kv, &vv);
    const std::size_t at = ((static_cast<std::size_t>(seq) * kHkv + h) * cap_tokens + t) * kD + d;
    kc[at] = __float2bfloat16(kv);
    vc[at] = __float2bfloat16(vv);
  }
}

/// Dense engine's per-step append: token T-1 of each sequence into its contiguous run.
__global__ void dense_append_kernel(CT* kc, CT* vc, const CT* k, const CT* v, const int* seq_lens, long long cap_tokens,
                                    int batch) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;  // one 16-byte chunk each
  constexpr int kChunks = kD / 8;
  if (i >= batch * kHkv * kChunks) return;
  const int c = i % kChunks, h = (i / kChunks) % kHkv, b = i / (kChunks * kHkv);
  const long long t = seq_lens[b] - 1;
  const std::size_t dst = ((static_cast<std::size_t>(b) * kHkv + h) * cap_tokens + t) * kD + c * 8;
  const std::size_t src = (static_cast<std::size_t>(b) * kHkv + h) * kD + c * 8;
  *reinterpret_cast<uint4*>(kc + dst) = *reinterpret_cast<const uint4*>(k + src);
  *reinterpret_cast<uint4*>(vc + dst) = *reinterpret_cast<const uint4*>(v + src);
}

/// AR(1) query drift, step < 0 initializes (stationary N(0,1) states):
///   z [batch][Hq][D] fp32, per query head;
///   w [2][batch][Hkv][kTopics] fp32, the topic weights of each KV head's group, double-buffered by
///   step parity: step reads w[step & 1] and writes w[(step + 1) & 1], so every thread of the group
///   computes the same new weights from the old ones without a race (one thread stores them).
/// q = 3 * (sqrt(0.3) sum_i w_i topic_i / |w| + sqrt(0.7) z)
__global__ void query_kernel(float* z, float* w, CT* q, int batch, long long step, float rho) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= batch * kHq * kD) return;
  const int d = i % kD, qh = (i / kD) % kHq, b = i / (kD * kHq), h = qh / kG;
  const float keep = sqrtf(fmaxf(0.f, 1.f - rho * rho));
  const unsigned long long tag = static_cast<unsigned long long>(step + 1);
  const std::size_t wn = static_cast<std::size_t>(batch) * kHkv * kTopics;
  const float* w_old = w + (step & 1) * wn + (static_cast<std::size_t>(b) * kHkv + h) * kTopics;
  float* w_new = w + ((step + 1) & 1) * wn + (static_cast<std::size_t>(b) * kHkv + h) * kTopics;
  float mix = 0.f, norm2 = 0.f;
  for (int t = 0; t < kTopics; ++t) {
    const float n = gauss(key(kSeed, kTagW, tag, static_cast<unsigned long long>(b * kHkv + h) * 64 + t));
    const float wt = step < 0 ? n : rho * w_old[t] + keep * n;
    if (qh % kG == 0 && d == 0) w_new[t] = wt;
    mix += wt * topic(b, h, t, d);
    norm2 += wt * wt;
  }
  const float n = gauss(key(kSeed, kTagZ, tag, i));
  const float zn = step < 0 ? n : rho * z[i] + keep * n;
  z[i] = zn;
  q[i] = __float2bfloat16(3.0f * (0.5477226f * mix * rsqrtf(fmaxf(norm2, 1e-20f)) + 0.8366600f * zn));
}

int blocks_for(long long n, int threads) { return static_cast<int>((n + threads - 1) / threads); }

/// q, k, v, bias of one decode step for the whole batch (all sequences at length `len` before it),
/// for prompts of `context` tokens.
struct StepInputs {
  long long prompt_blocks;
  DevBuf<float> z, w;
  DevBuf<T> q, k, v, o;
  DevBuf<float> bias, lse;
  StepInputs(int batch, long long context)
      : prompt_blocks(context / kB), z(static_cast<std::size_t>(batch) * kHq * kD),
        w(2 * static_cast<std::size_t>(batch) * kHkv * kTopics), q(z.n), k(static_cast<std::size_t>(batch) * kHkv * kD),
        v(k.n), o(z.n), bias(static_cast<std::size_t>(batch) * kHkv), lse(static_cast<std::size_t>(batch) * kHq) {}
  /// Step -1: the stationary start of the drift. Steps then count 0, 1, 2, ... (w's parity).
  void init(int batch, cudaStream_t s) {
    query_kernel<<<blocks_for(z.n, 256), 256, 0, s>>>(z.p, w.p, nosa::detail::as_cuda(q.p), batch, -1, 0.f);
    NOSA_BENCH_CUDA(cudaGetLastError());
  }
  /// Inputs of the step that appends token position `t` (0-based) to every sequence.
  void make(int batch, long long step, long long t, float rho, cudaStream_t s) {
    query_kernel<<<blocks_for(z.n, 256), 256, 0, s>>>(z.p, w.p, nosa::detail::as_cuda(q.p), batch, step, rho);
    gen_kv_kernel<<<blocks_for(k.n, 256), 256, 0, s>>>(nosa::detail::as_cuda(k.p), nosa::detail::as_cuda(v.p), bias.p, 0,
                                                        t, batch, true, prompt_blocks);
    NOSA_BENCH_CUDA(cudaGetLastError());
  }
};

/// Fraction of entries of `now` also in `before` (rows of ascending ids), summed over rows.
double overlap_sum(const std::vector<int>& before, const std::vector<int>& now, const std::vector<int>& cb,
                   const std::vector<int>& cn, int rows, int stride) {
  double sum = 0;
  for (int r = 0; r < rows; ++r) {
    const int* a = before.data() + static_cast<std::size_t>(r) * stride;
    const int* b = now.data() + static_cast<std::size_t>(r) * stride;
    int i = 0, j = 0, common = 0;
    while (i < cb[r] && j < cn[r]) {
      if (a[i] == b[j]) ++common, ++i, ++j;
      else if (a[i] < b[j]) ++i;
      else ++j;
    }
    sum += cn[r] ? static_cast<double>(common) / cn[r] : 1.0;
  }
  return sum;
}

// ---- Decoder runs -----------------------------------------------------------------------------
template <class Policy, class Transfer>
struct DecoderRun {
  using Dec = nosa::Decoder<T, Geo, Policy, Transfer>;
  using Sel = nosa::DeviceSelector<Geo, Policy, T>;
  static constexpr bool kOnHost = Transfer::pool_on_host;

  static nosa::DecodeConfig config(int batch, long long max_tokens) {
    nosa::DecodeConfig c;
    c.num_layers = 1;
    c.num_kv_heads = kHkv;
    c.max_sequences = batch;
    c.max_batch = batch;
    c.max_tokens = max_tokens;
    c.pool_blocks = static_cast<long long>(batch) * ((max_tokens + kB - 1) / kB);
    c.overlap = true;
    if (g_flags.overlap_chunks > 0) c.overlap_chunks = g_flags.overlap_chunks;
    // Extra slots keep recently dropped blocks on the GPU (a block that comes back is not moved
    // again); they count against the same GPU budget (fits() below).
    if (kOnHost && g_flags.slots_per_head > 0) c.slots_per_head = g_flags.slots_per_head;
    return c;
  }
  /// GPU bytes of a batch (workspace, plus the pool when it lives on the device).
  static bool fits(int batch, long long max_tokens, double* gpu, double* host) {
    nosa::DecodeSizes s;
    if (!Dec::sizes(config(batch, max_tokens), &s).ok()) return false;
    *gpu = static_cast<double>(s.device_bytes) + (kOnHost ? 0.0 : static_cast<double>(s.pool_bytes));
    *host = kOnHost ? static_cast<double>(s.pool_bytes) : 0.0;
    return *gpu <= g_flags.gpu_budget_gib * kGiB && *host <= g_flags.pinned_cap_gib * kGiB;
  }
  static int largest_batch(long long max_tokens, double* gpu, double* host) {
    int best = 0;
    for (int b = 1; b <= g_flags.max_batch; b += b < 16 ? 1 : 8) {
      double g, h;
      if (!fits(b, max_tokens, &g, &h)) break;
      best = b, *gpu = g, *host = h;
    }
    return best;
  }

  int batch;
  long long context, max_tokens;
  cudaStream_t stream = nullptr;
  nosa::DecodeSizes sizes;
  std::unique_ptr<DevBuf<char>> ws, dev_pool;
  std::unique_ptr<nosa::PinnedHostMemory> pinned;
  std::optional<Dec> dec;
  std::vector<nosa::SequenceId> ids;
  // Side-run selector: same state as the Decoder's (fed the same prompt), for the time split.
  std::unique_ptr<DevBuf<char>> sel_ws;
  Sel side_sel;

  DecoderRun(int b, long long ctx, long long cap, cudaStream_t s) : batch(b), context(ctx), max_tokens(cap), stream(s) {
    const nosa::DecodeConfig c = config(batch, max_tokens);
    NOSA_BENCH_OK(Dec::sizes(c, &sizes));
    ws = std::make_unique<DevBuf<char>>(sizes.device_bytes);
    void* host = nullptr;
    void* dev = nullptr;
    if (kOnHost) {
      pinned = std::make_unique<nosa::PinnedHostMemory>(sizes.pool_bytes);
      host = pinned->host();
      dev = pinned->device();
    } else {
      dev_pool = std::make_unique<DevBuf<char>>(sizes.pool_bytes);
      dev = dev_pool->p;
    }
    dec.emplace(c, ws->p, sizes.device_bytes, host, dev, sizes.pool_bytes, stream);
    nosa::DeviceSelectorConfig sc;
    sc.max_sequences = batch;
    sc.num_kv_heads = kHkv;
    sc.max_tokens = max_tokens;
    sc.max_batch = batch;
    std::size_t sel_bytes = 0;
    NOSA_BENCH_OK(Sel::workspace_bytes(sc, &sel_bytes));
    sel_ws = std::make_unique<DevBuf<char>>(sel_bytes);
    NOSA_BENCH_OK(Sel::create(sc, sel_ws->p, sel_bytes, &side_sel));
    NOSA_BENCH_OK(side_sel.initialize(stream));
    // Prompts, generated on the GPU in chunks.
    DevBuf<T> k(static_cast<std::size_t>(kChunk) * kHkv * kD), v(k.n);
    DevBuf<float> bias(static_cast<std::size_t>(kChunk) * kHkv);
    for (int i = 0; i < batch; ++i) {
      const nosa::SequenceId id = 1000 + i;
      NOSA_BENCH_OK(dec->add_sequence(id, stream));
      NOSA_BENCH_OK(side_sel.reset_sequence(i, stream));  // the Decoder hands out slots 0, 1, ... in order
      for (long long first = 0; first < context; first += kChunk) {
        const long long n = std::min(kChunk, context - first);
        gen_kv_kernel<<<blocks_for(n * kHkv * kD, 256), 256, 0, stream>>>(nosa::detail::as_cuda(k.p),
                                                                           nosa::detail::as_cuda(v.p), bias.p, i, first,
                                                                           static_cast<int>(n), false, context / kB);
        NOSA_BENCH_OK(dec->begin_prefill(id, n));
        NOSA_BENCH_OK(dec->prefill_layer(id, 0, k.p, v.p, bias.p, stream));
        NOSA_BENCH_OK(dec->end_prefill(id));
        if constexpr (Policy::kind != nosa::SelectorKind::kDense)
          NOSA_BENCH_OK(side_sel.append_prompt(i, n, k.p, bias.p, stream));
      }
      ids.push_back(id);
    }
    NOSA_BENCH_CUDA(cudaStreamSynchronize(stream));
  }

  long long length() const { return dec->length(ids[0]); }

  /// One decode step of the one layer (what is timed).
  void step(StepInputs& in) {
    NOSA_BENCH_OK(dec->begin_step(ids.data(), batch, stream));
    NOSA_BENCH_OK(dec->layer_step(0, in.q.p, in.k.p, in.v.p, in.bias.p, in.o.p, in.lse.p, stream));
    NOSA_BENCH_OK(dec->end_step());
  }

  /// Side run of `steps` steps through the same components on one stream, CUDA events between the
  /// phases: append (residency + selector), select, transfer (make_resident), attend. Uses the
  /// Decoder's residency and slots; call it before the Decoder's first step. Fills the split
  /// (ms per step), the mean overlap of consecutive selections, and blocks moved / needed.
  void side_run(StepInputs& in, int steps, long long step0, double split_ms[4], double* overlap, double* moved_frac) {
    auto& res = dec->residency();
    const int mb = dec->max_blocks();
    const std::size_t rows = static_cast<std::size_t>(batch) * kHkv;
    DevBuf<int> slots(batch), lens(batch), bids(rows * mb), cnts(rows), sids(rows * mb);
    std::vector<int> h_slots(batch), h_lens(batch);
    for (int i = 0; i < batch; ++i) h_slots[i] = i;
    NOSA_BENCH_CUDA(cudaMemcpyAsync(slots.p, h_slots.data(), sizeof(int) * batch, cudaMemcpyHostToDevice, stream));
    nosa::DecodeAttentionArgs<T> a;
    const nosa::SlotCacheView<T> sv = res.slots(0);
    a.batch = batch;
    a.num_kv_heads = kHkv;
    a.max_blocks = mb;
    a.num_slots = sv.num_slots;
    a.q = in.q.p;
    a.o = in.o.p;
    a.lse = in.lse.p;
    a.k_cache = sv.k;
    a.v_cache = sv.v;
    a.bias_cache = Policy::bias_in_attention ? sv.bias : nullptr;
    a.block_ids = bids.p;
    a.slot_ids = sids.p;
    a.counts = cnts.p;
    a.seq_lens = lens.p;
    a.mode = nosa::AttentionMode::kSparse;
    nosa::AttentionPlan plan;
    NOSA_BENCH_OK((nosa::plan_decode_attention<SlotGeo, T>(a, &plan)));
    a.num_splits = plan.num_splits;
    DevBuf<char> aws(plan.workspace_bytes);
    cudaEvent_t ev[5];
    for (auto& e : ev) NOSA_BENCH_CUDA(cudaEventCreate(&e));
    double acc[4] = {0, 0, 0, 0}, ov = 0;
    long long ov_rows = 0;
    std::vector<int> prev(rows * mb), now(rows * mb), cprev(rows), cnow(rows);
    nosa::ResidencyCounters rc;
    NOSA_BENCH_OK(res.read_counters(&rc, stream));  // start the step counters here
    long long moved = 0, needed = 0;
    for (int s = 0; s < steps; ++s) {
      const long long T0 = length() + s;  // tokens before this step (the Decoder's length stays)
      in.make(batch, step0 + s, T0, static_cast<float>(rho_for(context)), stream);
      for (int i = 0; i < batch; ++i) {
        h_lens[i] = static_cast<int>(T0 + 1);
        NOSA_BENCH_OK(res.reserve(i, T0 + 1, stream));
      }
      NOSA_BENCH_CUDA(cudaMemcpyAsync(lens.p, h_lens.data(), sizeof(int) * batch, cudaMemcpyHostToDevice, stream));
      NOSA_BENCH_CUDA(cudaEventRecord(ev[0], stream));
      NOSA_BENCH_OK(res.append_decode(0, batch, slots.p, lens.p, in.k.p, in.v.p, in.bias.p, stream));
      NOSA_BENCH_OK(side_sel.append_tokens(batch, slots.p, in.k.p, in.bias.p, stream));
      NOSA_BENCH_CUDA(cudaEventRecord(ev[1], stream));
      nosa::SelectArgs<T> sa;
      sa.batch = batch;
      sa.seq_slots = slots.p;
      sa.seq_lens = lens.p;
      sa.max_seq_len = static_cast<int>(max_tokens);
      sa.q = in.q.p;
      sa.block_ids = bids.p;
      sa.block_stride = mb;
      sa.counts = cnts.p;
      NOSA_BENCH_OK(side_sel.select(sa, stream));
      NOSA_BENCH_CUDA(cudaEventRecord(ev[2], stream));
      NOSA_BENCH_OK(res.make_resident(0, batch, slots.p, lens.p, bids.p, cnts.p, mb, sids.p, stream));
      NOSA_BENCH_CUDA(cudaEventRecord(ev[3], stream));
      NOSA_BENCH_OK((nosa::decode_attention<SlotGeo, T>(a, aws.p, plan.workspace_bytes, stream)));
      NOSA_BENCH_CUDA(cudaEventRecord(ev[4], stream));
      NOSA_BENCH_CUDA(cudaMemcpyAsync(now.data(), bids.p, sizeof(int) * now.size(), cudaMemcpyDeviceToHost, stream));
      NOSA_BENCH_CUDA(cudaMemcpyAsync(cnow.data(), cnts.p, sizeof(int) * rows, cudaMemcpyDeviceToHost, stream));
      NOSA_BENCH_OK(res.read_counters(&rc, stream));  // synchronizes
      if (rc.errors != 0) throw std::runtime_error("side run: residency error bits " + std::to_string(rc.errors));
      if (s > 0) {  // the first step re-selects after the timed loop's state: not counted
        for (int p = 0; p < 4; ++p) {
          float ms = 0;
          NOSA_BENCH_CUDA(cudaEventElapsedTime(&ms, ev[p], ev[p + 1]));
          acc[p] += ms;
        }
        ov += overlap_sum(prev, now, cprev, cnow, static_cast<int>(rows), mb);
        ov_rows += static_cast<long long>(rows);
        moved += rc.step_blocks_moved;
        needed += rc.step_blocks_needed;
      }
      std::swap(prev, now);
      std::swap(cprev, cnow);
    }
    for (auto& e : ev) cudaEventDestroy(e);
    // acc: [append, select, transfer, attend] -> split order select / transfer / attend / append
    const double n = std::max(1, steps - 1);
    split_ms[0] = acc[1] / n;
    split_ms[1] = acc[2] / n;
    split_ms[2] = acc[3] / n;
    split_ms[3] = acc[0] / n;
    *overlap = ov_rows ? ov / static_cast<double>(ov_rows) : 1.0;
    *moved_frac = needed ? static_cast<double>(moved) / static_cast<double>(needed) : 0.0;
  }
};

// ---- dense on the GPU --------------------------------------------------------------------------
struct DenseRun {
  int batch;
  long long context, cap_tokens;
  int cap_blocks;
  cudaStream_t stream;
  DevBuf<T> kc, vc;
  DevBuf<int> lens;
  std::vector<int> h_lens;
  nosa::DecodeAttentionArgs<T> a;
  nosa::AttentionPlan plan;
  std::unique_ptr<DevBuf<char>> aws;
  long long len;

  static double bytes(int batch, long long cap_tokens) {
    return 2.0 * batch * kHkv * static_cast<double>(cap_tokens) * kD * sizeof(T);
  }
  static int largest_batch(long long cap_tokens, double* gpu) {
    int best = 0;
    for (int b = 1; b <= g_flags.max_batch; ++b) {
      // + attention workspace (fp32 partials: splits * batch * Hq * (D + 1) floats, <= 64 splits)
      const double g = bytes(b, cap_tokens) + 64.0 * b * kHq * (kD + 2) * 4;
      if (g > g_flags.gpu_budget_gib * kGiB) break;
      best = b, *gpu = g;
    }
    return best;
  }

  DenseRun(int b, long long ctx, long long cap, cudaStream_t s)
      : batch(b), context(ctx), cap_tokens((cap + kB - 1) / kB * kB), cap_blocks(static_cast<int>((cap + kB - 1) / kB)),
        stream(s), kc(static_cast<std::size_t>(b) * kHkv * cap_tokens * kD), vc(kc.n), lens(b), h_lens(b), len(ctx) {
    gen_dense_cache_kernel<<<132 * 8, 256, 0, stream>>>(nosa::detail::as_cuda(kc.p), nosa::detail::as_cuda(vc.p), batch,
                                                        cap_tokens, context, context / kB);
    NOSA_BENCH_CUDA(cudaGetLastError());
    a.batch = batch;
    a.num_kv_heads = kHkv;
    a.max_blocks = cap_blocks;
    a.num_slots = static_cast<long long>(batch) * kHkv * cap_blocks;
    a.k_cache = kc.p;
    a.v_cache = vc.p;
    a.bias_cache = nullptr;
    a.seq_lens = lens.p;
    a.mode = nosa::AttentionMode::kDense;
  }
  void bind(StepInputs& in) {
    a.q = in.q.p;
    a.o = in.o.p;
    a.lse = in.lse.p;
    NOSA_BENCH_OK((nosa::plan_decode_attention<SlotGeo, T>(a, &plan)));
    a.num_splits = plan.num_splits;
    aws = std::make_unique<DevBuf<char>>(plan.workspace_bytes);
  }
  long long length() const { return len; }
  /// One step: lengths upload (the engine's scheduler), append, attention.
  void step(StepInputs& in) {
    ++len;
    std::fill(h_lens.begin(), h_lens.end(), static_cast<int>(len));
    NOSA_BENCH_CUDA(cudaMemcpyAsync(lens.p, h_lens.data(), sizeof(int) * batch, cudaMemcpyHostToDevice, stream));
    dense_append_kernel<<<blocks_for(static_cast<long long>(batch) * kHkv * (kD / 8), 128), 128, 0, stream>>>(
        nosa::detail::as_cuda(kc.p), nosa::detail::as_cuda(vc.p), nosa::detail::as_cuda(in.k.p),
        nosa::detail::as_cuda(in.v.p), lens.p, cap_tokens, batch);
    NOSA_BENCH_CUDA(cudaGetLastError());
    NOSA_BENCH_OK((nosa::decode_attention<SlotGeo, T>(a, aws->p, plan.workspace_bytes, stream)));
  }
};

// ---- the timed loop, shared by every mode -------------------------------------------------------
/// Runs warm-up steps, then one timed step per benchmark iteration (CUDA events around the step;
/// the inputs are generated before the start event). Returns the mean step time in seconds.
template <class Run>
double timed_steps(benchmark::State& state, Run& run, StepInputs& in, cudaStream_t stream, long long* step_counter) {
  cudaEvent_t e0, e1;
  NOSA_BENCH_CUDA(cudaEventCreate(&e0));
  NOSA_BENCH_CUDA(cudaEventCreate(&e1));
  for (int w = 0; w < 4; ++w) {  // warm-up: first touches, plans, residency steady state
    in.make(run.batch, (*step_counter)++, run.length(), static_cast<float>(rho_for(run.context)), stream);
    run.step(in);
  }
  NOSA_BENCH_CUDA(cudaStreamSynchronize(stream));
  double total = 0;
  long long n = 0;
  for (auto _ : state) {
    in.make(run.batch, (*step_counter)++, run.length(), static_cast<float>(rho_for(run.context)), stream);
    NOSA_BENCH_CUDA(cudaEventRecord(e0, stream));
    run.step(in);
    NOSA_BENCH_CUDA(cudaEventRecord(e1, stream));
    NOSA_BENCH_CUDA(cudaEventSynchronize(e1));
    float ms = 0;
    NOSA_BENCH_CUDA(cudaEventElapsedTime(&ms, e0, e1));
    state.SetIterationTime(ms * 1e-3);
    total += ms * 1e-3;
    ++n;
  }
  cudaEventDestroy(e0);
  cudaEventDestroy(e1);
  return n ? total / static_cast<double>(n) : 0.0;
}

enum class Mode { kNosaOffload, kInfllmOffload, kDenseGpu, kNosaDevice };
const char* mode_name(Mode m) {
  switch (m) {
    case Mode::kNosaOffload: return "nosa_offload";
    case Mode::kInfllmOffload: return "infllm_offload";
    case Mode::kDenseGpu: return "dense_gpu";
    case Mode::kNosaDevice: return "nosa_device";
  }
  return "?";
}

/// Bytes one step moves, per component. Offload: pcie = moved blocks + the write-through of the
/// new token; hbm = compressed-key scan (selection) + the attended slots + slot writes.
struct StepBytes {
  double hbm = 0, pcie = 0;
};
StepBytes sparse_bytes(int batch, long long len, int budget, double moved_blocks, bool on_host, bool bias) {
  const double rows = static_cast<double>(batch) * kHkv;
  const double block = 2.0 * kB * kD * sizeof(T) + kB * sizeof(float);
  const double nc = len < 32 ? 0 : static_cast<double>((len - 32) / 16 + 1);
  StepBytes s;
  const double token = 2.0 * kD * sizeof(T) + sizeof(float);
  s.hbm = rows * nc * kD * sizeof(T)                                                   // compressed keys
          + rows * budget * kB * (2.0 * kD * sizeof(T) + (bias ? sizeof(float) : 0))   // attention
          + moved_blocks * block                                                       // slot writes
          + (on_host ? 0.0 : moved_blocks * block)                                     // device pool reads
          + rows * token * 2;                                                          // append
  s.pcie = on_host ? moved_blocks * block + rows * token : 0.0;
  return s;
}

struct Result {
  std::string name;
  long long ctx = 0;
  int batch = 0;
  double tok_s = 0, step_us = 0, gpu_gib = 0, host_gib = 0, overlap = -1, moved_frac = -1, moved_per_step = 0;
  double split_us[4] = {-1, -1, -1, -1};
  double hbm_mb = 0, pcie_mb = 0, bound_frac = 0;
};
std::vector<Result> g_results;

/// Share of the serial phase sum (select + transfer + attend + append of the one-stream side run)
/// that the Decoder's overlap hides in a step (negative: the step took longer than the serial
/// sum); false without a side run.
bool hidden_fraction(const Result& r, double* hidden) {
  const double serial = r.split_us[0] + r.split_us[1] + r.split_us[2] + r.split_us[3];
  if (r.split_us[0] < 0 || serial <= 0) return false;
  *hidden = 1.0 - r.step_us / serial;
  return true;
}

void report(benchmark::State& state, Result r, double step_s, const StepBytes& by) {
  r.step_us = step_s * 1e6;
  r.tok_s = step_s > 0 ? r.batch / step_s : 0;
  r.hbm_mb = by.hbm / 1e6;
  r.pcie_mb = by.pcie / 1e6;
  const double bound = std::max(by.hbm / g_ceil.hbm, by.pcie / g_ceil.pcie);
  r.bound_frac = step_s > 0 ? bound / step_s : 0;
  state.counters["batch"] = r.batch;
  state.counters["tok/s"] = r.tok_s;
  state.counters["gpu_GiB"] = r.gpu_gib;
  state.counters["host_GiB"] = r.host_gib;
  state.counters["HBM_MB"] = r.hbm_mb;
  state.counters["PCIe_MB"] = r.pcie_mb;
  state.counters["bound%"] = 100.0 * r.bound_frac;
  if (r.overlap >= 0) state.counters["overlap"] = r.overlap;
  if (r.moved_frac >= 0) state.counters["moved%"] = 100.0 * r.moved_frac;
  if (r.split_us[0] >= 0) {
    state.counters["sel_us"] = r.split_us[0];
    state.counters["xfer_us"] = r.split_us[1];
    state.counters["attn_us"] = r.split_us[2];
    state.counters["app_us"] = r.split_us[3];
    double hidden = 0;
    if (hidden_fraction(r, &hidden)) state.counters["hidden%"] = 100.0 * hidden;
  }
  g_results.push_back(r);
}

template <class Policy, class Transfer>
void run_decoder(benchmark::State& state, Mode mode, long long ctx) {
  using Run = DecoderRun<Policy, Transfer>;
  const long long cap = ctx + 4 + g_flags.steps + 16 + 64;
  Result r;
  r.name = mode_name(mode);
  r.ctx = ctx;
  double gpu = 0, host = 0;
  r.batch = Run::largest_batch(cap, &gpu, &host);  // DeviceResident: the pool counts as GPU memory
  if (r.batch < 1) {
    state.SkipWithError("no batch fits the GPU memory budget");
    return;
  }
  r.gpu_gib = gpu / kGiB;
  r.host_gib = host / kGiB;
  cudaStream_t stream;
  NOSA_BENCH_CUDA(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
  {
    Run run(r.batch, ctx, cap, stream);
    StepInputs in(r.batch, ctx);
    in.init(r.batch, stream);
    // Side run first, right after the prompts (its selector is in step with the prompt only);
    // the Decoder's steps then rewrite the same token positions, with a warm slot cache.
    const int side_steps = 12;
    double split[4];
    run.side_run(in, side_steps, 0, split, &r.overlap, &r.moved_frac);
    for (int p = 0; p < 4; ++p) r.split_us[p] = split[p] * 1e3;
    long long counter = side_steps;
    nosa::ResidencyCounters rc;
    NOSA_BENCH_OK(run.dec->residency().read_counters(&rc, stream));  // step counters restart here
    const double step_s = timed_steps(state, run, in, stream, &counter);
    NOSA_BENCH_OK(run.dec->residency().read_counters(&rc, stream));
    if (rc.errors != 0) throw std::runtime_error("residency error bits " + std::to_string(rc.errors));
    // blocks moved per Decoder step (warm-up + timed steps)
    r.moved_per_step = static_cast<double>(rc.step_blocks_moved) / std::max(1.0, static_cast<double>(counter - side_steps));
    const StepBytes by = sparse_bytes(r.batch, ctx, 64, r.moved_per_step, Transfer::pool_on_host,
                                      Policy::bias_in_attention);
    state.counters["moved_blk"] = r.moved_per_step;
    report(state, r, step_s, by);
  }
  NOSA_BENCH_CUDA(cudaStreamSynchronize(stream));
  cudaStreamDestroy(stream);
}

void run_dense(benchmark::State& state, long long ctx) {
  const long long cap = ctx + 4 + g_flags.steps + 64;
  Result r;
  r.name = mode_name(Mode::kDenseGpu);
  r.ctx = ctx;
  double gpu = 0;
  r.batch = DenseRun::largest_batch((cap + kB - 1) / kB * kB, &gpu);
  if (r.batch < 1) {
    state.SkipWithError("no batch fits the GPU memory budget");
    return;
  }
  r.gpu_gib = gpu / kGiB;
  cudaStream_t stream;
  NOSA_BENCH_CUDA(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
  {
    DenseRun run(r.batch, ctx, cap, stream);
    StepInputs in(r.batch, ctx);
    in.init(r.batch, stream);
    run.bind(in);
    long long counter = 0;
    const double step_s = timed_steps(state, run, in, stream, &counter);
    StepBytes by;
    by.hbm = 2.0 * r.batch * kHkv * static_cast<double>(ctx) * kD * sizeof(T);
    report(state, r, step_s, by);
  }
  NOSA_BENCH_CUDA(cudaStreamSynchronize(stream));
  cudaStreamDestroy(stream);
}

void bench_mode(benchmark::State& state, Mode mode, long long ctx) {
  try {
    switch (mode) {
      case Mode::kNosaOffload: run_decoder<nosa::NosaSelector, nosa::ZeroCopyGather>(state, mode, ctx); break;
      case Mode::kInfllmOffload: run_decoder<nosa::InfllmV2Selector, nosa::ZeroCopyGather>(state, mode, ctx); break;
      case Mode::kNosaDevice: run_decoder<nosa::NosaSelector, nosa::DeviceResident>(state, mode, ctx); break;
      case Mode::kDenseGpu: run_dense(state, ctx); break;
    }
  } catch (const std::exception& e) {
    state.SkipWithError(e.what());
  }
}

// ---- ceilings and calibration --------------------------------------------------------------------
void measure_ceilings() {
  const std::size_t bytes = std::size_t(1) << 30;
  void *a, *b, *h;
  NOSA_BENCH_CUDA(cudaMalloc(&a, bytes));
  NOSA_BENCH_CUDA(cudaMalloc(&b, bytes));
  NOSA_BENCH_CUDA(cudaHostAlloc(&h, bytes, cudaHostAllocDefault));
  std::memset(h, 1, bytes);
  cudaStream_t s;
  NOSA_BENCH_CUDA(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
  cudaEvent_t e0, e1;
  NOSA_BENCH_CUDA(cudaEventCreate(&e0));
  NOSA_BENCH_CUDA(cudaEventCreate(&e1));
  auto best = [&](const std::function<void()>& f) {
    float b = 1e30f;
    for (int i = 0; i < 6; ++i) {
      NOSA_BENCH_CUDA(cudaEventRecord(e0, s));
      f();
      NOSA_BENCH_CUDA(cudaEventRecord(e1, s));
      NOSA_BENCH_CUDA(cudaEventSynchronize(e1));
      float ms;
      NOSA_BENCH_CUDA(cudaEventElapsedTime(&ms, e0, e1));
      if (i > 0) b = std::min(b, ms);
    }
    return b * 1e-3;
  };
  // HBM: bytes read + written by a D2D copy (DESIGN.md s.5 counts it the same way)
  g_ceil.hbm = 2.0 * bytes / best([&] { NOSA_BENCH_CUDA(cudaMemcpyAsync(b, a, bytes, cudaMemcpyDeviceToDevice, s)); });
  g_ceil.pcie = bytes / best([&] { NOSA_BENCH_CUDA(cudaMemcpyAsync(a, h, bytes, cudaMemcpyHostToDevice, s)); });
  cudaEventDestroy(e0);
  cudaEventDestroy(e1);
  cudaStreamDestroy(s);
  cudaFree(a);
  cudaFree(b);
  cudaFreeHost(h);
}

/// Fits rho so that InfLLM-V2's overlap is `target`, from the overlaps measured at the candidates
/// (ascending). Near the target the overlap is close to linear in x = sqrt(1 - rho) (host model:
/// docs/notes/decode_step.md), and one candidate's estimate is noisy (+-0.01-0.02: the topic mixture
/// moves blocks in groups), so the candidates within 0.04 of the target get a least-squares line in
/// x; with fewer than 3 of them (or a non-decreasing fit) the bracketing pair is interpolated, and
/// with no bracket the nearer end of the list is returned.
double fit_rho(const std::vector<double>& rhos, const std::vector<double>& ov, double target) {
  double sx = 0, sy = 0, sxx = 0, sxy = 0;
  int n = 0;
  for (std::size_t i = 0; i < rhos.size(); ++i)
    if (std::fabs(ov[i] - target) <= 0.04) {
      const double x = std::sqrt(1 - rhos[i]);
      sx += x, sy += ov[i], sxx += x * x, sxy += x * ov[i], ++n;
    }
  const double det = n * sxx - sx * sx;
  if (n >= 3 && det > 1e-12) {
    const double b = (n * sxy - sx * sy) / det, a = (sy - b * sx) / n;
    if (b < 0) {  // overlap falls as x grows (rho falls)
      const double x = std::max(0.0, (target - a) / b);
      return std::min(rhos.back(), std::max(rhos.front(), 1 - x * x));
    }
  }
  for (std::size_t i = 0; i + 1 < rhos.size(); ++i)
    if ((ov[i] - target) * (ov[i + 1] - target) <= 0 && ov[i] != ov[i + 1])
      return rhos[i] + (target - ov[i]) * (rhos[i + 1] - rhos[i]) / (ov[i + 1] - ov[i]);
  return ov.front() > target ? rhos.front() : rhos.back();
}

/// InfLLM-V2's mean consecutive-step overlap for each candidate rho, on one warm Decoder (64
/// sequences of ctx tokens): the AR(1) states are stationary, so rho can change between phases.
/// The candidates are dense where the host model puts 0.89 (rho 0.95-0.975 at 32K and 128K). One
/// sequence's overlap has a spread of ~0.03 (host model), hence 64 sequences: ~0.004 on the mean.
double calibrate_rho(long long ctx) {
  const double target = 0.89;
  const std::vector<double> rhos = {0.5,  0.7,   0.8,  0.85,  0.9,  0.92,  0.94, 0.95,
                                    0.96, 0.965, 0.97, 0.975, 0.98, 0.985, 0.99, 0.995};
  using Run = DecoderRun<nosa::InfllmV2Selector, nosa::ZeroCopyGather>;
  const int batch = 64;
  const long long steps = 12;
  cudaStream_t stream;
  NOSA_BENCH_CUDA(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
  std::vector<double> ov;
  {
    Run run(batch, ctx, ctx + static_cast<long long>(rhos.size()) * (steps + 1) + 64, stream);
    StepInputs in(batch, ctx);
    in.init(batch, stream);
    const int mb = run.dec->max_blocks();
    const std::size_t rows = static_cast<std::size_t>(batch) * kHkv;
    std::vector<int> prev(rows * mb), now(rows * mb), cp(rows), cn(rows);
    long long counter = 0;
    for (double rho : rhos) {
      double sum = 0;
      for (int s = 0; s <= steps; ++s) {
        in.make(batch, counter++, run.length(), static_cast<float>(rho), stream);
        run.step(in);
        NOSA_BENCH_CUDA(cudaMemcpyAsync(now.data(), run.dec->block_ids(), sizeof(int) * now.size(), cudaMemcpyDeviceToHost, stream));
        NOSA_BENCH_CUDA(cudaMemcpyAsync(cn.data(), run.dec->counts(), sizeof(int) * rows, cudaMemcpyDeviceToHost, stream));
        NOSA_BENCH_CUDA(cudaStreamSynchronize(stream));
        if (s > 0) sum += overlap_sum(prev, now, cp, cn, static_cast<int>(rows), mb);
        std::swap(prev, now);
        std::swap(cp, cn);
      }
      ov.push_back(sum / (static_cast<double>(steps) * rows));
    }
  }
  cudaStreamDestroy(stream);
  std::printf("calibration (InfLLM-V2, batch %d, %lldK, %lld steps each): ", batch, ctx / 1024, steps);
  for (std::size_t i = 0; i < rhos.size(); ++i) std::printf("rho %.3f -> overlap %.3f%s", rhos[i], ov[i], i + 1 < rhos.size() ? ", " : "\n");
  return fit_rho(rhos, ov, target);
}

void print_table() {
  std::printf("\nresults (%s; HBM ceiling %.2f TB/s, pinned H2D ceiling %.1f GB/s, both measured now; rho %.4f at 32K, "
              "%.4f at 128K; GPU budget %.2f GiB per layer; 1 layer; overlap_chunks %d; offload slots/head %d)\n",
              g_gpu_name.c_str(), g_ceil.hbm / 1e12, g_ceil.pcie / 1e9, rho_for(32768), rho_for(131072),
              g_flags.gpu_budget_gib, g_flags.overlap_chunks > 0 ? g_flags.overlap_chunks : nosa::DecodeConfig{}.overlap_chunks,
              g_flags.slots_per_head > 0 ? g_flags.slots_per_head : nosa::SelectionParams{}.budget);
  std::printf("| context | mode | batch | GPU GiB | pinned GiB | tokens/s | step us | overlap | moved/needed | "
              "select us | transfer us | attend us | append us | hidden | HBM MB | PCIe MB | bound %% |\n");
  std::printf("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n");
  for (const Result& r : g_results) {
    auto opt = [](double v, const char* fmt) {
      char buf[32];
      if (v < 0) return std::string("-");
      std::snprintf(buf, sizeof(buf), fmt, v);
      return std::string(buf);
    };
    double hidden = 0;
    char hidden_txt[32] = "-";
    if (hidden_fraction(r, &hidden)) std::snprintf(hidden_txt, sizeof(hidden_txt), "%.0f%%", 100 * hidden);
    std::printf("| %lldK | %s | %d | %.2f | %.1f | %.0f | %.0f | %s | %s | %s | %s | %s | %s | %s | %.0f | %.1f | %.0f |\n",
                r.ctx / 1024, r.name.c_str(), r.batch, r.gpu_gib, r.host_gib, r.tok_s, r.step_us,
                opt(r.overlap, "%.3f").c_str(), opt(r.moved_frac < 0 ? -1 : 100 * r.moved_frac, "%.1f%%").c_str(),
                opt(r.split_us[0], "%.0f").c_str(), opt(r.split_us[1], "%.0f").c_str(), opt(r.split_us[2], "%.0f").c_str(),
                opt(r.split_us[3], "%.0f").c_str(), hidden_txt, r.hbm_mb, r.pcie_mb,
                100 * r.bound_frac);
  }
  for (long long ctx : {32768LL, 131072LL}) {
    const Result *n = nullptr, *i = nullptr, *d = nullptr;
    for (const Result& r : g_results)
      if (r.ctx == ctx) {
        if (r.name == "nosa_offload") n = &r;
        if (r.name == "infllm_offload") i = &r;
        if (r.name == "dense_gpu") d = &r;
      }
    if (n && d && d->tok_s > 0) std::printf("%lldK: NOSA-offload / dense-on-GPU = %.2fx\n", ctx / 1024, n->tok_s / d->tok_s);
    if (n && i && i->tok_s > 0 && n->overlap < 1 && i->overlap < 1)
      std::printf("%lldK: NOSA-offload / InfLLM-V2-offload = %.2fx (change-rate ratio (1-ovl_I)/(1-ovl_N) = %.2f)\n",
                  ctx / 1024, n->tok_s / i->tok_s, (1 - i->overlap) / (1 - n->overlap));
    // What the lower change rate alone allows: InfLLM-V2's step with its (side-run) transfer time
    // divided by the ratio of blocks moved, every other phase kept.
    if (n && i && n->moved_frac > 0 && i->moved_frac > 0 && i->split_us[1] >= 0 && i->step_us > 0) {
      const double moved_ratio = i->moved_frac / n->moved_frac;  // side run: the source of the split too
      const double allowed = i->step_us / (i->step_us - i->split_us[1] + i->split_us[1] / moved_ratio);
      std::printf("%lldK: the moved-block ratio %.2f allows %.2fx over InfLLM-V2-offload (InfLLM-V2's step %.0f us with its "
                  "transfer %.0f us divided by it)\n",
                  ctx / 1024, moved_ratio, allowed, i->step_us, i->split_us[1]);
      // The same with NOSA's own selection time in place of InfLLM-V2's: NOSA's selection does more
      // (agnostic pooling and a second top-k), which no change rate can remove.
      if (n->split_us[0] >= 0 && i->split_us[0] >= 0) {
        const double with_select = i->step_us / (i->step_us - i->split_us[1] + i->split_us[1] / moved_ratio +
                                                 n->split_us[0] - i->split_us[0]);
        std::printf("%lldK: with NOSA's own selection (%.0f us vs %.0f) it allows %.2fx; measured %.2fx (%.0f%% of it)\n",
                    ctx / 1024, n->split_us[0], i->split_us[0], with_select, n->tok_s / i->tok_s,
                    100.0 * (n->tok_s / i->tok_s) / with_select);
      }
    }
  }
}

}  // namespace

int main(int argc, char** argv) {
  // our flags first; the rest goes to Google Benchmark
  std::vector<char*> rest = {argv[0]};
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto val = [&](const char* name, double* out) {
      const std::string p = std::string("--") + name + "=";
      if (a.rfind(p, 0) != 0) return false;
      *out = std::atof(a.c_str() + p.size());
      return true;
    };
    double x;
    if (val("rho", &g_flags.rho) || val("gpu_budget_gib", &g_flags.gpu_budget_gib) ||
        val("pinned_cap_gib", &g_flags.pinned_cap_gib))
      continue;
    if (val("max_batch", &x)) { g_flags.max_batch = static_cast<int>(x); continue; }
    if (val("steps", &x)) { g_flags.steps = std::max(2, static_cast<int>(x)); continue; }
    if (val("overlap_chunks", &x)) { g_flags.overlap_chunks = static_cast<int>(x); continue; }
    if (val("slots_per_head", &x)) { g_flags.slots_per_head = static_cast<int>(x); continue; }
    rest.push_back(argv[i]);
  }
  int n = static_cast<int>(rest.size());
  benchmark::Initialize(&n, rest.data());
  int dev_count = 0;
  if (cudaGetDeviceCount(&dev_count) != cudaSuccess || dev_count == 0) {
    std::fprintf(stderr, "bench_decode_step: no CUDA device\n");
    return 0;
  }
  cudaDeviceProp prop;
  cudaGetDeviceProperties(&prop, 0);
  g_gpu_name = prop.name;
  try {
    measure_ceilings();
    std::printf("GPU %s: D2D copy %.2f TB/s (read + write), pinned H2D copy %.1f GB/s\n", prop.name, g_ceil.hbm / 1e12,
                g_ceil.pcie / 1e9);
    for (long long ctx : {32768LL, 131072LL}) {
      g_rho[ctx] = g_flags.rho >= 0 ? g_flags.rho : calibrate_rho(ctx);
      std::printf("query drift rho at %lldK = %.4f%s\n", ctx / 1024, g_rho[ctx],
                  g_flags.rho >= 0 ? " (given)" : " (calibrated: InfLLM-V2 overlap ~0.89)");
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_decode_step: setup failed: %s\n", e.what());
    return 1;
  }
  for (long long ctx : {32768LL, 131072LL})
    for (Mode m : {Mode::kNosaOffload, Mode::kInfllmOffload, Mode::kDenseGpu, Mode::kNosaDevice}) {
      const std::string name = std::string("decode_step/") + mode_name(m) + "/ctx:" + std::to_string(ctx / 1024) + "K";
      benchmark::RegisterBenchmark(name.c_str(), [m, ctx](benchmark::State& st) { bench_mode(st, m, ctx); })
          ->UseManualTime()
          ->Unit(benchmark::kMicrosecond)
          ->Iterations(g_flags.steps);
    }
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  print_table();
  return 0;
}
