// Plain (non-template) interface between the selector GPU tests (doctest, .cpp) and the kernels
// (.cu): a type-erased DeviceSelector owning its workspace and stream.
#pragma once

#include <nosa/params.h>
#include <nosa/status.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace nosa_test {

struct SelCase {
  int block_size = 64, head_dim = 128, group_size = 16;
  bool fp16 = false;        ///< element type: fp16 (true) or bf16 (false)
  bool float_store = false; ///< compressed keys stored as fp32 instead of T
  nosa::SelectorKind kind = nosa::SelectorKind::kNosa;
  std::string name() const;
};

/// Mirrors nosa::DeviceSelectorConfig (kept here so the .cpp needs no CUDA headers).
struct SelConfig {
  int max_sequences = 1, num_kv_heads = 1, max_batch = 1;
  long long max_tokens = 0;
  nosa::SelectionParams params;
};

/// Mirrors nosa::SelectPath.
enum class SelPath { kAuto = 0, kGlobal = 1, kCluster = 2, kSplit = 3 };

class SelectorHandle {
 public:
  virtual ~SelectorHandle() = default;
  /// Validates, allocates the workspace (exactly workspace_bytes), creates and initializes.
  virtual nosa::Status create(const SelConfig& cfg) = 0;
  /// Calls create() on a caller-chosen pointer (for the bad-workspace tests); no allocation.
  virtual nosa::Status create_raw(const SelConfig& cfg, void* ws, std::size_t bytes) = 0;
  virtual nosa::Status workspace_bytes(const SelConfig& cfg, std::size_t* bytes) = 0;
  virtual nosa::Status reset(int slot) = 0;
  /// Host inputs are copied to the device first. k: 2-byte bits [batch][Hkv][D]; bias [batch][Hkv].
  virtual nosa::Status append_tokens(const std::vector<int>& slots, const std::uint16_t* k, const float* bias) = 0;
  virtual nosa::Status append_prompt(int slot, long long n, const std::uint16_t* k, const float* bias) = 0;
  /// Raw device-pointer variants for argument checks (pointers passed through unchanged).
  virtual nosa::Status append_prompt_raw(int slot, long long n, const void* k, const float* bias) = 0;
  /// Runs select on host data; fills ids [batch][Hkv][stride] and counts [batch][Hkv].
  /// q: 2-byte bits [batch][Hkv*G][D]. q_offset_elems shifts the device q pointer (misalignment test).
  virtual nosa::Status select(const std::vector<int>& slots, const std::vector<int>& lens, int max_seq_len,
                              const std::uint16_t* q, int stride, std::vector<int>* ids, std::vector<int>* counts,
                              int q_offset_elems = 0, bool null_q = false) = 0;
  /// The same step captured once in a CUDA graph and replayed `replays` times.
  virtual nosa::Status select_graph(const std::vector<int>& slots, const std::vector<int>& lens, int max_seq_len,
                                    const std::uint16_t* q, int stride, int replays, std::vector<int>* ids,
                                    std::vector<int>* counts) = 0;
  virtual nosa::Status device_errors() = 0;
  /// The same selection in `parts` calls of consecutive entries, with the shape pinned for the
  /// whole batch first (DeviceSelector::pin_shape); *per_entry is pin_shape's answer (false: the
  /// parts were not run and ids/counts are left empty).
  virtual nosa::Status select_in_parts(const std::vector<int>& slots, const std::vector<int>& lens, int max_seq_len,
                                       const std::uint16_t* q, int stride, int parts, std::vector<int>* ids,
                                       std::vector<int>* counts, bool* per_entry) = 0;
  /// Stage-1 path (and cluster size, 0 = chosen from the batch) of the following select() and
  /// select_graph() calls: SelectArgs::path / cluster_size. `path_value` overrides the enum with
  /// a raw value (-1: none) to test the check of out-of-range paths.
  virtual void set_path(SelPath path, int cluster_size = 0, int path_value = -1) = 0;
  /// SelectArgs::cluster_scan of the following calls, as a raw value (0 auto, 1 shared logits,
  /// 2 register logits; others test the argument check).
  virtual void set_cluster_scan(int scan) = 0;
  /// Cluster sizes at which cluster_scan = register logits can run, ascending.
  virtual std::vector<int> register_scan_sizes() const = 0;
  /// The cluster kernel cluster_scan = auto runs for `batch` at cluster size c (raw ClusterScan value).
  virtual int auto_cluster_scan(int batch, int c) const = 0;
  /// Cluster size select() takes for `batch` on the cluster path (0: no cluster path; auto may take
  /// the split path instead, split_path_for).
  virtual int cluster_size_for(int batch) const = 0;
  /// Cluster sizes usable by this selector on this device, ascending (empty: no cluster path).
  virtual std::vector<int> cluster_sizes() const = 0;
  /// SelectArgs::head_parts values the split path can run, ascending (empty: no split path). With
  /// set_path(SelPath::kSplit, n) the following calls force head_parts = n (0: chosen).
  virtual std::vector<int> split_parts() const = 0;
  /// Whether auto takes the split path for `batch`.
  virtual bool split_path_for(int batch) const = 0;
  /// Compressed keys of (slot, h), first n rows, as raw bytes of the store type; scores as fp32.
  virtual void read_state(int slot, int h, int n, std::vector<unsigned char>* key_bytes, std::vector<float>* cbias) = 0;
  virtual int token_count(int slot) = 0;
  virtual int max_blocks() const = 0;
  virtual int key_store_bytes() const = 0;
  /// Split-K factor of the compressed-key scan for a batch of this size.
  virtual int scan_splits(int batch) const = 0;
  virtual int resident_scan_ctas() const = 0;
  /// Clusters of the register-logit cluster kernel at cluster size c the device holds at once.
  virtual int resident_register_clusters(int c) const = 0;
};

/// nullptr with a not_supported status naming the compiled-in cases if `c` is not compiled.
std::unique_ptr<SelectorHandle> make_selector(const SelCase& c, nosa::Status* status);
/// The cases compiled into this test binary (a small set unless NOSA_FULL_MATRIX).
std::vector<SelCase> compiled_selector_cases();

/// True when the selector's cluster path can run here: the device has thread-block clusters and this
/// test binary carries code for sm_90 or newer for it (an sm_80-only build falls back to the global path).
bool cluster_path_expected();

}  // namespace nosa_test
