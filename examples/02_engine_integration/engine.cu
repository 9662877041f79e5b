// 02_engine_integration, GPU part: a toy engine around nosa::Decoder (see main.cpp for who owns
// what). Model: hidden size 512, L = 2 layers, Hkv 2, G 8, D 128, bf16. Per layer, from the
// hidden state x of each running sequence:
//   q = Wq x, k = Wk x, v = Wv x, b_h = softplus(wb_h . x)         (the engine's projections)
//   o, lse = Decoder::layer_step(l, q, k, v, b)                    (nosa)
//   x = tanh(x + Wo o)                                              (the engine's residual)
// Requests (prompt length, tokens to generate) wait in a queue; up to 4 run at once. Two engines
// run the same schedule: one calls layer_step eagerly, the other captures the layer loop once per
// batch size in a CUDA graph and replays it; their outputs must be bit-identical.
#include "engine.h"

#include <nosa/decode_step.cuh>

#include "../common/cuda_util.cuh"

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <deque>
#include <map>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

namespace engine_demo {
namespace {

constexpr int kB = 64, kD = 128, kG = 8, kHkv = 2, kHq = kHkv * kG, kLayers = 2, kModel = 512;
constexpr int kProj = kHq * kD + 2 * kHkv * kD + kHkv;  // q | k | v | bias rows of the fused projection
constexpr int kMaxRunning = 4;
using T = nosa::bfloat16_t;
using Geo = nosa::Geometry<kB, kD, kG, nosa::HeadLayout::kNHD>;
using Decoder = nosa::Decoder<T, Geo, nosa::NosaSelector, nosa::ZeroCopyGather>;


using nosa_examples::DevBuf;

__host__ __device__ inline unsigned long long mix64(unsigned long long z) {
  z += 0x9E3779B97F4A7C15ull;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}
__device__ inline float hash_normal(unsigned long long h) {
  const float u1 = (static_cast<float>(mix64(h) >> 40) + 0.5f) / 16777216.f;
  const float u2 = (static_cast<float>(mix64(h ^ 0xABCDEFull) >> 40) + 0.5f) / 16777216.f;
  return sqrtf(-2.f * logf(u1)) * cosf(6.2831853f * u2);
}

/// Token embeddings: x[r][:] = N(0,1) from (request id, position first + r).
__global__ void embed_kernel(float* x, long long request, long long first, int rows) {
  const long long i = blockIdx.x * static_cast<long long>(blockDim.x) + threadIdx.x;
  if (i >= static_cast<long long>(rows) * kModel) return;
  const long long r = i / kModel, c = i % kModel;
  x[i] = hash_normal(mix64(request * 0x1000003ull + first + r) * 1031 + c);
}

/// Fused projection of rows of x [rows][kModel]: q [rows][Hq][D], k, v [rows][Hkv][D] (bf16; q may
/// be null for the prefill), bias [rows][Hkv] = softplus(wb_h . x). W [kProj][kModel].
__global__ void project_kernel(const float* x, const float* W, __nv_bfloat16* q, __nv_bfloat16* k, __nv_bfloat16* v,
                               float* bias, int rows) {
  __shared__ float xs[kModel];
  const int r = blockIdx.y;
  for (int c = threadIdx.x; c < kModel; c += blockDim.x) xs[c] = x[static_cast<std::size_t>(r) * kModel + c];
  __syncthreads();
  const int j = blockIdx.x * blockDim.x + threadIdx.x;
  if (j >= kProj) return;
  if (q == nullptr && j < kHq * kD) return;
  float acc = 0;
  const float* w = W + static_cast<std::size_t>(j) * kModel;
  for (int c = 0; c < kModel; ++c) acc += w[c] * xs[c];
  if (j < kHq * kD) q[static_cast<std::size_t>(r) * kHq * kD + j] = __float2bfloat16(acc);
  else if (j < kHq * kD + kHkv * kD) k[static_cast<std::size_t>(r) * kHkv * kD + (j - kHq * kD)] = __float2bfloat16(acc);
  else if (j < kHq * kD + 2 * kHkv * kD) v[static_cast<std::size_t>(r) * kHkv * kD + (j - kHq * kD - kHkv * kD)] = __float2bfloat16(acc);
  else bias[static_cast<std::size_t>(r) * kHkv + (j - kHq * kD - 2 * kHkv * kD)] = log1pf(expf(acc));
}

/// x[r][:] = tanh(x[r][:] + Wo o[r]) with Wo [kModel][Hq*D].
__global__ void residual_kernel(float* x, const __nv_bfloat16* o, const float* Wo) {
  __shared__ float os[kHq * kD];
  const int r = blockIdx.y;
  for (int c = threadIdx.x; c < kHq * kD; c += blockDim.x) os[c] = __bfloat162float(o[static_cast<std::size_t>(r) * kHq * kD + c]);
  __syncthreads();
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= kModel) return;
  float acc = x[static_cast<std::size_t>(r) * kModel + i];
  const float* w = Wo + static_cast<std::size_t>(i) * kHq * kD;
  for (int c = 0; c < kHq * kD; ++c) acc += w[c] * os[c];
  x[static_cast<std::size_t>(r) * kModel + i] = tanhf(acc);
}

/// The next token's input: half the last hidden state, half a fresh embedding (the "sampled" token).
__global__ void next_token_kernel(float* x, const long long* request, const long long* position) {
  const int r = blockIdx.x, c = threadIdx.x;
  for (int i = c; i < kModel; i += blockDim.x)
    x[static_cast<std::size_t>(r) * kModel + i] =
        0.5f * x[static_cast<std::size_t>(r) * kModel + i] +
        0.5f * hash_normal(mix64(request[r] * 0x1000003ull + position[r]) * 1031 + i);
}

struct Request {
  nosa::SequenceId id;
  long long prompt;
  int to_generate;
  int generated = 0;
};

/// The engine: model weights, scheduler state, the Decoder and the memory it asked for.
class Engine {
 public:
  Engine(bool use_graphs, long long max_tokens, long long pool_blocks, const std::vector<float>& w_proj,
         const std::vector<float>& w_out)
      : graphs_(use_graphs), Wp_(w_proj.size()), Wo_(w_out.size()), x_(kMaxRunning * kModel),
        q_(kMaxRunning * kHq * kD), k_(kMaxRunning * kHkv * kD), v_(k_.n),
        bias_(kMaxRunning * kHkv), o_(static_cast<std::size_t>(kLayers) * kMaxRunning * kHq * kD),
        lse_(static_cast<std::size_t>(kLayers) * kMaxRunning * kHq), req_(kMaxRunning), pos_(kMaxRunning) {
    NOSA_EX_CUDA(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking));
    NOSA_EX_CUDA(cudaMemcpy(Wp_.p, w_proj.data(), w_proj.size() * sizeof(float), cudaMemcpyHostToDevice));
    NOSA_EX_CUDA(cudaMemcpy(Wo_.p, w_out.data(), w_out.size() * sizeof(float), cudaMemcpyHostToDevice));
    // 1. Memory: the engine asks nosa what it needs and allocates it (it could carve it from its
    //    own memory pool instead).
    nosa::DecodeConfig c;
    c.num_layers = kLayers;
    c.num_kv_heads = kHkv;
    c.max_sequences = kMaxRunning;
    c.max_batch = kMaxRunning;
    c.max_tokens = max_tokens;
    c.pool_blocks = pool_blocks;
    c.attention_splits = 4;  // fixed: no dependence on the device for bit-exact comparisons
    nosa::DecodeSizes sizes;
    NOSA_EX_OK(Decoder::sizes(c, &sizes));
    workspace_ = std::make_unique<DevBuf<char>>(sizes.device_bytes);
    pool_ = std::make_unique<nosa::PinnedHostMemory>(sizes.pool_bytes);
    dec_.emplace(c, workspace_->p, sizes.device_bytes, pool_->host(), pool_->device(), sizes.pool_bytes, stream_);
    device_bytes_ = sizes.device_bytes;
    pool_bytes_ = sizes.pool_bytes;
  }
  ~Engine() {
    for (auto& g : graph_) cudaGraphExecDestroy(g.second);
    dec_.reset();
    cudaStreamDestroy(stream_);
  }

  std::size_t device_bytes() const { return device_bytes_; }
  std::size_t pool_bytes() const { return pool_bytes_; }
  int graphs_captured() const { return static_cast<int>(graph_.size()); }
  const std::vector<Request>& running() const { return running_; }
  cudaStream_t stream() const { return stream_; }
  nosa::Decoder<T, Geo, nosa::NosaSelector, nosa::ZeroCopyGather>& decoder() { return *dec_; }

  /// Scheduler: admits a request if a sequence slot is free (prefill), else returns false.
  bool try_admit(const Request& r) {
    if (static_cast<int>(running_.size()) >= kMaxRunning) return false;
    // 2. A request joins: nosa gets its prompt's K/V/bias layer by layer.
    NOSA_EX_OK(dec_->add_sequence(r.id, stream_));
    nosa::Status st = dec_->begin_prefill(r.id, r.prompt);
    if (!st.ok()) {  // e.g. pool full: nothing changed, the request waits
      NOSA_EX_OK(dec_->drop_sequence(r.id, stream_));
      return false;
    }
    DevBuf<float> xp(static_cast<std::size_t>(r.prompt) * kModel);
    DevBuf<T> k(static_cast<std::size_t>(r.prompt) * kHkv * kD), v(k.n);
    DevBuf<float> b(static_cast<std::size_t>(r.prompt) * kHkv);
    embed_kernel<<<static_cast<unsigned>((xp.n + 255) / 256), 256, 0, stream_>>>(xp.p, r.id, 0, static_cast<int>(r.prompt));
    for (int l = 0; l < kLayers; ++l) {
      // The engine's prefill (its own attention is not shown: every layer projects the embeddings).
      project_kernel<<<dim3((kProj + 127) / 128, static_cast<unsigned>(r.prompt)), 128, 0, stream_>>>(
          xp.p, Wp_.p + static_cast<std::size_t>(l) * kProj * kModel, nullptr, nosa::detail::as_cuda(k.p),
          nosa::detail::as_cuda(v.p), b.p, static_cast<int>(r.prompt));
      NOSA_EX_CUDA(cudaGetLastError());
      NOSA_EX_OK(dec_->prefill_layer(r.id, l, k.p, v.p, b.p, stream_));
    }
    NOSA_EX_OK(dec_->end_prefill(r.id));
    NOSA_EX_CUDA(cudaStreamSynchronize(stream_));  // the temporaries are freed next
    // Its first decode input: the last prompt token's embedding.
    const int row = static_cast<int>(running_.size());
    embed_kernel<<<(kModel + 255) / 256, 256, 0, stream_>>>(x_.p + static_cast<std::size_t>(row) * kModel, r.id,
                                                            r.prompt - 1, 1);
    running_.push_back(r);
    return true;
  }

  /// One decode step of every running request. Returns the last layer's o [batch][Hq][D] (host).
  std::vector<T> step() {
    const int batch = static_cast<int>(running_.size());
    std::vector<nosa::SequenceId> ids;
    std::vector<long long> req, pos;
    for (const Request& r : running_) {
      ids.push_back(r.id);
      req.push_back(r.id);
      pos.push_back(r.prompt + r.generated);
    }
    // 3. Every step: host bookkeeping, then the layer loop (device work only), then commit.
    NOSA_EX_OK(dec_->begin_step(ids.data(), batch, stream_));
    if (graphs_) {
      auto it = graph_.find(batch);
      if (it == graph_.end()) {  // capture once per batch size
        cudaGraph_t g;
        NOSA_EX_CUDA(cudaStreamBeginCapture(stream_, cudaStreamCaptureModeThreadLocal));
        layers(batch);
        NOSA_EX_CUDA(cudaStreamEndCapture(stream_, &g));
        cudaGraphExec_t exec;
        NOSA_EX_CUDA(cudaGraphInstantiate(&exec, g, 0));
        NOSA_EX_CUDA(cudaGraphDestroy(g));
        it = graph_.emplace(batch, exec).first;
      }
      NOSA_EX_CUDA(cudaGraphLaunch(it->second, stream_));
    } else {
      layers(batch);
    }
    NOSA_EX_OK(dec_->end_step());
    std::vector<T> o(static_cast<std::size_t>(batch) * kHq * kD);
    NOSA_EX_CUDA(cudaMemcpyAsync(o.data(), o_.p + static_cast<std::size_t>(kLayers - 1) * kMaxRunning * kHq * kD,
                            o.size() * sizeof(T), cudaMemcpyDeviceToHost, stream_));
    // The engine "samples" the next token and builds its input (outside the graph).
    for (auto& p : pos) ++p;
    NOSA_EX_CUDA(cudaMemcpyAsync(req_.p, req.data(), sizeof(long long) * batch, cudaMemcpyHostToDevice, stream_));
    NOSA_EX_CUDA(cudaMemcpyAsync(pos_.p, pos.data(), sizeof(long long) * batch, cudaMemcpyHostToDevice, stream_));
    next_token_kernel<<<batch, 128, 0, stream_>>>(x_.p, req_.p, pos_.p);
    NOSA_EX_CUDA(cudaStreamSynchronize(stream_));
    for (Request& r : running_) ++r.generated;
    return o;
  }

  /// 4. Requests that are done leave; the others move up (their hidden rows follow).
  std::vector<nosa::SequenceId> retire() {
    std::vector<nosa::SequenceId> done;
    std::vector<Request> keep;
    int row = 0;
    for (std::size_t i = 0; i < running_.size(); ++i) {
      if (running_[i].generated >= running_[i].to_generate) {
        NOSA_EX_OK(dec_->drop_sequence(running_[i].id, stream_));
        done.push_back(running_[i].id);
        continue;
      }
      if (row != static_cast<int>(i))  // row < i: the rows do not overlap
        NOSA_EX_CUDA(cudaMemcpyAsync(x_.p + static_cast<std::size_t>(row) * kModel, x_.p + i * kModel, kModel * sizeof(float),
                                cudaMemcpyDeviceToDevice, stream_));
      keep.push_back(running_[i]);
      ++row;
    }
    running_ = std::move(keep);
    return done;
  }

 private:
  /// The captured part: every layer's projections, nosa's layer_step and the residual.
  void layers(int batch) {
    for (int l = 0; l < kLayers; ++l) {
      T* o = o_.p + static_cast<std::size_t>(l) * kMaxRunning * kHq * kD;
      float* lse = lse_.p + static_cast<std::size_t>(l) * kMaxRunning * kHq;
      project_kernel<<<dim3((kProj + 127) / 128, batch), 128, 0, stream_>>>(
          x_.p, Wp_.p + static_cast<std::size_t>(l) * kProj * kModel, nosa::detail::as_cuda(q_.p), nosa::detail::as_cuda(k_.p),
          nosa::detail::as_cuda(v_.p), bias_.p, batch);
      NOSA_EX_CUDA(cudaGetLastError());
      NOSA_EX_OK(dec_->layer_step(l, q_.p, k_.p, v_.p, bias_.p, o, lse, stream_));
      residual_kernel<<<dim3((kModel + 127) / 128, batch), 128, 0, stream_>>>(x_.p, nosa::detail::as_cuda(o),
                                                                             Wo_.p + static_cast<std::size_t>(l) * kModel * kHq * kD);
      NOSA_EX_CUDA(cudaGetLastError());
    }
  }

  bool graphs_;
  cudaStream_t stream_ = nullptr;
  DevBuf<float> Wp_, Wo_, x_;
  DevBuf<T> q_, k_, v_;
  DevBuf<float> bias_;
  DevBuf<T> o_;
  DevBuf<float> lse_;
  DevBuf<long long> req_, pos_;
  std::unique_ptr<DevBuf<char>> workspace_;
  std::unique_ptr<nosa::PinnedHostMemory> pool_;
  std::optional<Decoder> dec_;
  std::size_t device_bytes_ = 0, pool_bytes_ = 0;
  std::vector<Request> running_;
  std::map<int, cudaGraphExec_t> graph_;
};

}  // namespace

bool gpu_available() {
  int n = 0;
  return cudaGetDeviceCount(&n) == cudaSuccess && n > 0;
}

int run(bool verbose, double prompt_scale) {
  try {
    cudaDeviceProp prop;
    NOSA_EX_CUDA(cudaGetDeviceProperties(&prop, 0));
    std::printf("02_engine_integration on %s: toy engine, %d layers, hidden %d, Hkv %d, G %d, D %d, bf16, NOSA "
                "selection, KV cache in pinned host memory\n", prop.name, kLayers, kModel, kHkv, kG, kD);
    // The model's weights (the engine's): W [L][kProj][kModel] ~ N(0, 1/kModel), Wo [L][kModel][Hq*D].
    std::vector<float> wp(static_cast<std::size_t>(kLayers) * kProj * kModel), wo(static_cast<std::size_t>(kLayers) * kModel * kHq * kD);
    unsigned long long s = 7;
    auto normal = [&] {
      const double u1 = ((mix64(s++) >> 11) + 0.5) / 9007199254740992.0, u2 = ((mix64(s++) >> 11) + 0.5) / 9007199254740992.0;
      return static_cast<float>(std::sqrt(-2 * std::log(u1)) * std::cos(6.283185307179586 * u2));
    };
    for (float& x : wp) x = normal() * static_cast<float>(1.0 / std::sqrt(kModel));
    for (float& x : wo) x = normal() * static_cast<float>(0.5 / std::sqrt(kHq * kD));

    std::deque<Request> queue = {{11, 5000, 12}, {12, 3000, 20}, {13, 6100, 8}, {14, 2500, 16},
                                 {15, 4200, 10}, {16, 3600, 14}, {17, 7000, 9}};
    for (Request& r : queue) r.prompt = std::max(1LL, static_cast<long long>(r.prompt * prompt_scale));
    const long long max_tokens = 8192;
    const long long pool_blocks = static_cast<long long>(kMaxRunning) * kLayers * (max_tokens / kB);
    Engine eager(false, max_tokens, pool_blocks, wp, wo), graphed(true, max_tokens, pool_blocks, wp, wo);
    std::printf("  nosa asked for %.1f MiB of device workspace and %.1f MiB of pinned host pool (per engine)\n",
                eager.device_bytes() / 1048576.0, eager.pool_bytes() / 1048576.0);

    int step = 0, joins = 0, leaves = 0;
    long long compared = 0, differing = 0;
    while (!queue.empty() || !eager.running().empty()) {
      // Scheduler: admit waiting requests while slots are free (both engines, same decisions).
      while (!queue.empty()) {
        const bool a = eager.try_admit(queue.front());
        const bool b = graphed.try_admit(queue.front());
        if (a != b) throw std::runtime_error("the two engines admitted differently");
        if (!a) break;
        if (verbose) std::printf("  step %3d: request %lld joins (prompt %lld tokens, %d to generate)\n", step,
                                 static_cast<long long>(queue.front().id), queue.front().prompt, queue.front().to_generate);
        queue.pop_front();
        ++joins;
      }
      const std::vector<T> oa = eager.step(), ob = graphed.step();
      compared += static_cast<long long>(oa.size());
      for (std::size_t i = 0; i < oa.size(); ++i) differing += std::memcmp(&oa[i], &ob[i], sizeof(T)) != 0;
      ++step;
      const auto da = eager.retire(), db = graphed.retire();
      if (da != db) throw std::runtime_error("the two engines retired differently");
      for (auto id : da) {
        ++leaves;
        if (verbose) std::printf("  step %3d: request %lld leaves\n", step, static_cast<long long>(id));
      }
    }
    nosa::ResidencyCounters ca, cb;
    NOSA_EX_OK(eager.decoder().residency().read_counters(&ca, eager.stream()));
    NOSA_EX_OK(graphed.decoder().residency().read_counters(&cb, graphed.stream()));
    std::printf("  %d steps, %d joins, %d leaves; CUDA graphs captured (one per batch size seen): %d\n", step, joins,
                leaves, graphed.graphs_captured());
    std::printf("  blocks moved: eager %lld, graphs %lld (of %lld / %lld needed); residency error bits %u / %u\n",
                ca.total_blocks_moved, cb.total_blocks_moved, ca.total_blocks_needed, cb.total_blocks_needed, ca.errors,
                cb.errors);
    std::printf("  outputs compared: %lld bf16 values, %lld differ between eager calls and graph replays\n", compared,
                differing);
    const bool ok = differing == 0 && compared > 0 && ca.errors == 0 && cb.errors == 0 &&
                    ca.total_blocks_moved == cb.total_blocks_moved && joins == 7 && leaves == 7;
    std::printf(ok ? "all checks passed\n" : "FAILED\n");
    return ok ? 0 : 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "02_engine_integration failed: %s\n", e.what());
    return 1;
  }
}

}  // namespace engine_demo
