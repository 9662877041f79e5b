// Kernels of the selector GPU tests: DeviceSelector instantiations behind SelectorHandle.
#include "cuda/selector_launch.h"

#include <nosa/selector.cuh>

#include <cuda_runtime.h>

#include <cstdio>
#include <cstring>
#include <stdexcept>

namespace nosa_test {

std::string SelCase::name() const {
  return std::string(nosa::to_string(kind)) + " B" + std::to_string(block_size) + " D" + std::to_string(head_dim) +
         " G" + std::to_string(group_size) + (fp16 ? " fp16" : " bf16") + (float_store ? " store=f32" : "");
}

namespace {

#define SEL_CHECK(expr)                                                                              \
  do {                                                                                               \
    cudaError_t e_ = (expr);                                                                         \
    if (e_ != cudaSuccess) throw std::runtime_error(std::string(#expr) + ": " + cudaGetErrorString(e_)); \
  } while (0)

template <class Geo, class Policy, class T, class KS>
class Impl final : public SelectorHandle {
  using Sel = nosa::DeviceSelector<Geo, Policy, T, KS>;

 public:
  Impl() { SEL_CHECK(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking)); }
  ~Impl() override {
    for (void* p : allocs_) cudaFree(p);
    if (ws_) cudaFree(ws_);
    cudaStreamDestroy(stream_);
  }
  static nosa::DeviceSelectorConfig conv(const SelConfig& c) {
    nosa::DeviceSelectorConfig d;
    d.max_sequences = c.max_sequences;
    d.num_kv_heads = c.num_kv_heads;
    d.max_batch = c.max_batch;
    d.max_tokens = c.max_tokens;
    d.params = c.params;
    return d;
  }
  nosa::Status workspace_bytes(const SelConfig& cfg, std::size_t* bytes) override {
    return Sel::workspace_bytes(conv(cfg), bytes);
  }
  nosa::Status create(const SelConfig& cfg) override {
    std::size_t bytes = 0;
    NOSA_RETURN_IF_ERROR(Sel::workspace_bytes(conv(cfg), &bytes));
    if (ws_) cudaFree(ws_);
    ws_ = nullptr;
    SEL_CHECK(cudaMalloc(&ws_, bytes));
    NOSA_RETURN_IF_ERROR(Sel::create(conv(cfg), ws_, bytes, &sel_));
    hkv_ = cfg.num_kv_heads;
    return sel_.initialize(stream_);
  }
  nosa::Status create_raw(const SelConfig& cfg, void* ws, std::size_t bytes) override {
    return Sel::create(conv(cfg), ws, bytes, &sel_);
  }
  nosa::Status reset(int slot) override { return sel_.reset_sequence(slot, stream_); }

  template <class U>
  U* upload(const U* host, std::size_t n) {
    if (n == 0) return nullptr;
    void* d = nullptr;
    SEL_CHECK(cudaMalloc(&d, n * sizeof(U)));
    allocs_.push_back(d);
    SEL_CHECK(cudaMemcpyAsync(d, host, n * sizeof(U), cudaMemcpyHostToDevice, stream_));
    return static_cast<U*>(d);
  }
  void release() {
    SEL_CHECK(cudaStreamSynchronize(stream_));
    for (void* p : allocs_) cudaFree(p);
    allocs_.clear();
  }
  nosa::Status append_tokens(const std::vector<int>& slots, const std::uint16_t* k, const float* bias) override {
    const std::size_t b = slots.size();
    int* ds = upload(slots.data(), b);
    const T* dk = reinterpret_cast<const T*>(upload(k, b * hkv_ * Geo::head_dim));
    const float* db = upload(bias, b * hkv_);
    nosa::Status s = sel_.append_tokens(static_cast<int>(b), ds, dk, db, stream_);
    release();
    return s;
  }
  nosa::Status append_prompt(int slot, long long n, const std::uint16_t* k, const float* bias) override {
    const T* dk = reinterpret_cast<const T*>(upload(k, static_cast<std::size_t>(n) * hkv_ * Geo::head_dim));
    const float* db = upload(bias, static_cast<std::size_t>(n) * hkv_);
    nosa::Status s = sel_.append_prompt(slot, n, dk, db, stream_);
    release();
    return s;
  }
  nosa::Status append_prompt_raw(int slot, long long n, const void* k, const float* bias) override {
    return sel_.append_prompt(slot, n, static_cast<const T*>(k), bias, stream_);
  }
  nosa::SelectArgs<T> make_args(const std::vector<int>& slots, const std::vector<int>& lens, int max_seq_len,
                                const std::uint16_t* q, int stride, int q_off, bool null_q, int** ids, int** cnt) {
    const std::size_t b = slots.size();
    nosa::SelectArgs<T> a;
    a.batch = static_cast<int>(b);
    a.seq_slots = upload(slots.data(), b);
    a.seq_lens = upload(lens.data(), b);
    a.max_seq_len = max_seq_len;
    const std::size_t qn = b * hkv_ * Geo::group_size * Geo::head_dim;
    std::vector<std::uint16_t> qpad(qn + 8, 0);
    std::memcpy(qpad.data() + q_off, q, qn * 2);
    a.q = null_q ? nullptr : reinterpret_cast<const T*>(upload(qpad.data(), qn + 8)) + q_off;
    const std::size_t idn = b * hkv_ * static_cast<std::size_t>(std::max(stride, 1));
    std::vector<int> sentinel(std::max(idn, b * hkv_), -7);
    *ids = upload(sentinel.data(), idn);
    *cnt = upload(sentinel.data(), b * hkv_);
    a.block_ids = *ids;
    a.block_stride = stride;
    a.counts = *cnt;
    a.path = path_value_ >= 0 ? static_cast<nosa::SelectPath>(path_value_) : static_cast<nosa::SelectPath>(path_);
    a.cluster_size = path_ == SelPath::kSplit ? 0 : cluster_size_;
    a.head_parts = path_ == SelPath::kSplit ? cluster_size_ : 0;
    a.cluster_scan = static_cast<nosa::ClusterScan>(cluster_scan_);
    return a;
  }
  void download(int* dids, int* dcnt, std::size_t b, int stride, std::vector<int>* ids, std::vector<int>* counts) {
    ids->assign(b * hkv_ * stride, 0);
    counts->assign(b * hkv_, 0);
    SEL_CHECK(cudaMemcpyAsync(ids->data(), dids, ids->size() * 4, cudaMemcpyDeviceToHost, stream_));
    SEL_CHECK(cudaMemcpyAsync(counts->data(), dcnt, counts->size() * 4, cudaMemcpyDeviceToHost, stream_));
  }
  nosa::Status select(const std::vector<int>& slots, const std::vector<int>& lens, int max_seq_len, const std::uint16_t* q,
                      int stride, std::vector<int>* ids, std::vector<int>* counts, int q_off, bool null_q) override {
    int *dids, *dcnt;
    nosa::SelectArgs<T> a = make_args(slots, lens, max_seq_len, q, stride, q_off, null_q, &dids, &dcnt);
    nosa::Status s = sel_.select(a, stream_);
    download(dids, dcnt, slots.size(), stride, ids, counts);
    release();
    return s;
  }
  nosa::Status select_graph(const std::vector<int>& slots, const std::vector<int>& lens, int max_seq_len,
                            const std::uint16_t* q, int stride, int replays, std::vector<int>* ids,
                            std::vector<int>* counts) override {
    int *dids, *dcnt;
    nosa::SelectArgs<T> a = make_args(slots, lens, max_seq_len, q, stride, 0, false, &dids, &dcnt);
    SEL_CHECK(cudaStreamSynchronize(stream_));
    cudaGraph_t graph;
    SEL_CHECK(cudaStreamBeginCapture(stream_, cudaStreamCaptureModeThreadLocal));
    nosa::Status s = sel_.select(a, stream_);
    SEL_CHECK(cudaStreamEndCapture(stream_, &graph));
    if (!s.ok()) return s;
    cudaGraphExec_t exec;
    SEL_CHECK(cudaGraphInstantiate(&exec, graph, 0));
    for (int r = 0; r < replays; ++r) SEL_CHECK(cudaGraphLaunch(exec, stream_));
    download(dids, dcnt, slots.size(), stride, ids, counts);
    release();
    cudaGraphExecDestroy(exec);
    cudaGraphDestroy(graph);
    return s;
  }
  nosa::Status device_errors() override { return sel_.device_errors(stream_); }
  nosa::Status select_in_parts(const std::vector<int>& slots, const std::vector<int>& lens, int max_seq_len,
                               const std::uint16_t* q, int stride, int parts, std::vector<int>* ids,
                               std::vector<int>* counts, bool* per_entry) override {
    int *dids, *dcnt;
    nosa::SelectArgs<T> whole = make_args(slots, lens, max_seq_len, q, stride, 0, false, &dids, &dcnt);
    const nosa::Status pinned = sel_.pin_shape(&whole, per_entry);
    if (!pinned.ok() || !*per_entry) {
      release();
      return pinned;
    }
    const int batch = whole.batch, per = (batch + parts - 1) / parts;
    for (int first = 0; first < batch; first += per) {
      const nosa::Status s = sel_.select(sel_.part_of(whole, first, std::min(per, batch - first)), stream_);
      if (!s.ok()) {
        release();
        return s;
      }
    }
    download(dids, dcnt, slots.size(), stride, ids, counts);
    release();
    return {};
  }
  void set_path(SelPath path, int cluster_size, int path_value) override {
    path_ = path;
    cluster_size_ = cluster_size;
    path_value_ = path_value;
  }
  void set_cluster_scan(int scan) override { cluster_scan_ = scan; }
  std::vector<int> register_scan_sizes() const override {
    std::vector<int> v;
    for (int c = 2; c <= 16; ++c)
      if (sel_.register_scan_usable(c)) v.push_back(c);
    return v;
  }
  int auto_cluster_scan(int batch, int c) const override { return static_cast<int>(sel_.cluster_scan_for(batch, c)); }
  int cluster_size_for(int batch) const override { return sel_.cluster_size_for(batch, nosa::SelectPath::kCluster); }
  std::vector<int> split_parts() const override {
    std::vector<int> v;
    for (int n = 2; n <= nosa::kMaxHeadParts; ++n)
      if (sel_.head_parts_usable(n)) v.push_back(n);
    return v;
  }
  bool split_path_for(int batch) const override { return sel_.split_path_for(batch); }
  std::vector<int> cluster_sizes() const override {
    std::vector<int> v;
    for (int c = 2; c <= 16; ++c)
      if (sel_.cluster_size_usable(c)) v.push_back(c);
    return v;
  }
  void read_state(int slot, int h, int n, std::vector<unsigned char>* key_bytes, std::vector<float>* cbias) override {
    const auto& st = sel_.state();
    const std::size_t sh = static_cast<std::size_t>(slot) * hkv_ + h;
    key_bytes->assign(static_cast<std::size_t>(n) * Geo::head_dim * sizeof(KS), 0);
    cbias->assign(n, 0.f);
    if (n > 0) {
      SEL_CHECK(cudaMemcpyAsync(key_bytes->data(), st.keys + sh * st.max_nc * Geo::head_dim, key_bytes->size(),
                                cudaMemcpyDeviceToHost, stream_));
      SEL_CHECK(cudaMemcpyAsync(cbias->data(), st.cbias + sh * st.max_nc, n * sizeof(float), cudaMemcpyDeviceToHost, stream_));
    }
    SEL_CHECK(cudaStreamSynchronize(stream_));
  }
  int token_count(int slot) override {
    int v = -1;
    SEL_CHECK(cudaMemcpyAsync(&v, sel_.state().counts + slot, 4, cudaMemcpyDeviceToHost, stream_));
    SEL_CHECK(cudaStreamSynchronize(stream_));
    return v;
  }
  int max_blocks() const override { return sel_.max_blocks(); }
  int key_store_bytes() const override { return static_cast<int>(sizeof(KS)); }
  int scan_splits(int batch) const override { return sel_.splits_for(batch); }
  int resident_scan_ctas() const override { return sel_.resident_scan_ctas(); }
  int resident_register_clusters(int c) const override {
    return sel_.resident_clusters(c, nosa::ClusterScan::kRegisterLogits);
  }

 private:
  cudaStream_t stream_{};
  void* ws_ = nullptr;
  std::vector<void*> allocs_;
  Sel sel_;
  int hkv_ = 1;
  SelPath path_ = SelPath::kAuto;
  int cluster_size_ = 0, path_value_ = -1, cluster_scan_ = 0;
};

struct Entry {
  SelCase c;
  std::unique_ptr<SelectorHandle> (*make)();
};

template <int B, int D, int G, class Policy, class T, class KS>
Entry entry(nosa::SelectorKind kind) {
  SelCase c;
  c.block_size = B;
  c.head_dim = D;
  c.group_size = G;
  c.fp16 = std::is_same_v<T, nosa::float16_t>;
  c.float_store = std::is_same_v<KS, float>;
  c.kind = kind;
  return Entry{c, [] { return std::unique_ptr<SelectorHandle>(new Impl<nosa::Geometry<B, D, G>, Policy, T, KS>()); }};
}

using bf = nosa::bfloat16_t;
using hf = nosa::float16_t;
constexpr auto kN = nosa::SelectorKind::kNosa;
constexpr auto kI = nosa::SelectorKind::kInfllmV2;
constexpr auto kD = nosa::SelectorKind::kDense;

const std::vector<Entry>& registry() {
  static const std::vector<Entry> r = {
      entry<64, 128, 16, nosa::NosaSelector, bf, bf>(kN),
      entry<64, 64, 4, nosa::NosaSelector, hf, hf>(kN),
      entry<32, 256, 1, nosa::NosaSelector, bf, bf>(kN),
      entry<64, 128, 8, nosa::NosaSelector, bf, float>(kN),
      entry<64, 128, 16, nosa::InfllmV2Selector, bf, bf>(kI),
      entry<64, 128, 16, nosa::DenseSelector<false>, bf, bf>(kD),
#if defined(NOSA_FULL_MATRIX) && NOSA_FULL_MATRIX
      entry<64, 128, 32, nosa::NosaSelector, bf, bf>(kN),
      entry<64, 128, 1, nosa::NosaSelector, hf, hf>(kN),
      entry<64, 64, 16, nosa::NosaSelector, bf, bf>(kN),
      entry<64, 256, 16, nosa::NosaSelector, hf, hf>(kN),
      entry<64, 256, 32, nosa::NosaSelector, bf, bf>(kN),
      entry<16, 128, 8, nosa::NosaSelector, bf, bf>(kN),
      entry<128, 64, 32, nosa::NosaSelector, hf, hf>(kN),
      entry<64, 64, 8, nosa::InfllmV2Selector, hf, hf>(kI),
      entry<64, 128, 4, nosa::NosaSelector, hf, float>(kN),
#endif
  };
  return r;
}

}  // namespace

namespace {
__global__ void binary_version_probe_kernel() {}
}  // namespace

bool cluster_path_expected() {
  int device = 0, clusters = 0;
  if (cudaGetDevice(&device) != cudaSuccess) return false;
  if (cudaDeviceGetAttribute(&clusters, cudaDevAttrClusterLaunch, device) != cudaSuccess || !clusters) return false;
  cudaFuncAttributes fa{};
  if (cudaFuncGetAttributes(&fa, binary_version_probe_kernel) != cudaSuccess) return false;
  // the same architecture list as the selector kernels of this TU; ptxVersion is what __CUDA_ARCH__ was
  std::printf("[selector] code for this device: ptxVersion %d, binaryVersion %d\n", fa.ptxVersion, fa.binaryVersion);
  return (fa.ptxVersion > 0 ? fa.ptxVersion : fa.binaryVersion) >= 90;
}

std::vector<SelCase> compiled_selector_cases() {
  std::vector<SelCase> v;
  for (const auto& e : registry()) v.push_back(e.c);
  return v;
}

std::unique_ptr<SelectorHandle> make_selector(const SelCase& c, nosa::Status* status) {
  for (const auto& e : registry()) {
    const SelCase& k = e.c;
    if (k.block_size == c.block_size && k.head_dim == c.head_dim && k.group_size == c.group_size && k.fp16 == c.fp16 &&
        k.float_store == c.float_store && k.kind == c.kind) {
      (void)(*status = nosa::Status());
      return e.make();
    }
  }
  std::string list;
  for (const auto& e : registry()) list += (list.empty() ? "" : ", ") + e.c.name();
  (void)(*status = nosa::not_supported("selector case " + c.name() + " is not compiled in (compiled: " + list + ")"));
  return nullptr;
}

}  // namespace nosa_test
