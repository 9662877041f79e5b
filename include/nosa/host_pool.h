// nosa: the host pool of the KV residency manager: every token's K, V and agnostic score of every
// (sequence, layer), paged by block, in one caller-provided allocation (pinned host memory for the
// offloading policies, device memory for DeviceResident). It is the source of truth: the GPU slot
// cache only ever holds copies of its pages.
//
// This header is host-only (no CUDA): it is the bookkeeping (free list, page tables) plus byte
// addressing. The memory itself is a pointer pair given by the caller:
//   host_base   where the CPU reads/writes the pool (nullptr when the pool is device memory)
//   device_base where kernels read/write it (the mapped alias of pinned memory; with UVA on
//               64-bit Linux it equals host_base; nullptr for a host-only pool, e.g. in CI tests)
//
// Page = one block of B tokens of one (sequence, layer), all KV heads (K, V and bias):
//   K     [B][Hkv][D] (HostLayout kNHD, token-major)   or [Hkv][B][D] (kHND, head-major)
//   V     same as K, right after it
//   bias  fp32 [B][Hkv] (kNHD)                         or [Hkv][B]    (kHND)
//   the page stride is rounded up to 256 bytes so every part stays 16-byte aligned.
// Sequences are addressed by a dense sequence slot 0..max_sequences-1 (the engine maps its
// SequenceId to a slot). A sequence reserves whole blocks for all layers at once, so a page
// table entry (layer, seq, block) exists for every layer or for none.
#pragma once

#include <nosa/config.h>
#include <nosa/geometry.h>
#include <nosa/status.h>
#include <nosa/types.h>

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>
#include <type_traits>
#include <vector>

NOSA_NAMESPACE_BEGIN

struct HostPoolConfig {
  int num_layers = 1;
  int num_kv_heads = 1;
  int max_sequences = 1;             ///< sequence slots 0..max_sequences-1
  int max_blocks_per_sequence = 1;   ///< page-table width (longest sequence = this * B tokens)

  Status validate() const {
    auto bad = [](const char* name, long long v) {
      return invalid_argument(std::string("HostPoolConfig::") + name + " = " + std::to_string(v) + ": must be >= 1");
    };
    if (num_layers < 1) return bad("num_layers", num_layers);
    if (num_kv_heads < 1) return bad("num_kv_heads", num_kv_heads);
    if (max_sequences < 1) return bad("max_sequences", max_sequences);
    if (max_blocks_per_sequence < 1) return bad("max_blocks_per_sequence", max_blocks_per_sequence);
    return {};
  }
};

/// A change of one page-table entry, to be mirrored on the device (see Residency::sync).
struct PageUpdate {
  std::int32_t index;  ///< (layer * max_sequences + seq) * max_blocks_per_sequence + block
  std::int32_t page;   ///< page number, or -1 when released
};

/// Byte addressing of one page, shared by the host pool, the kernels and the tests.
template <class T, int BlockSize, int HeadDim, HeadLayout HostLayout>
struct PageFormat {
  static constexpr int B = BlockSize;
  static constexpr int D = HeadDim;
  static constexpr HeadLayout layout = HostLayout;
  /// Element offset of (head h, token t, dim d) inside the K (or V) part of a page.
  NOSA_HOST_DEVICE static constexpr std::size_t kv_offset(int heads, int h, int t, int d) {
    return HostLayout == HeadLayout::kNHD ? (static_cast<std::size_t>(t) * heads + h) * D + d
                                          : (static_cast<std::size_t>(h) * B + t) * D + d;
  }
  /// Element offset of (head h, token t) inside the fp32 bias part of a page.
  NOSA_HOST_DEVICE static constexpr std::size_t bias_offset(int heads, int h, int t) {
    return HostLayout == HeadLayout::kNHD ? static_cast<std::size_t>(t) * heads + h
                                          : static_cast<std::size_t>(h) * B + t;
  }
  NOSA_HOST_DEVICE static constexpr std::size_t kv_bytes(int heads) {
    return static_cast<std::size_t>(heads) * B * D * sizeof(T);
  }
  NOSA_HOST_DEVICE static constexpr std::size_t v_byte_offset(int heads) { return kv_bytes(heads); }
  NOSA_HOST_DEVICE static constexpr std::size_t bias_byte_offset(int heads) { return 2 * kv_bytes(heads); }
  NOSA_HOST_DEVICE static constexpr std::size_t page_bytes(int heads) {
    return (2 * kv_bytes(heads) + static_cast<std::size_t>(heads) * B * sizeof(float) + 255) / 256 * 256;
  }
};

/// Paged host pool. T: element type of K/V (bfloat16_t, float16_t or float). Geo: geometry (its
/// block_size and head_dim are used). HostLayout: element order inside a page (default: Geo's).
/// Not thread-safe: one owner (the engine's scheduler thread) calls it.
template <class T, class Geo, HeadLayout HostLayout = Geo::layout>
class HostPool {
  static_assert(geometry_check_v<Geo>);
  static_assert(std::is_same_v<T, bfloat16_t> || std::is_same_v<T, float16_t> || std::is_same_v<T, float>,
                "nosa::HostPool: T must be bfloat16_t, float16_t or float");

 public:
  using element_type = T;
  using Format = PageFormat<T, Geo::block_size, Geo::head_dim, HostLayout>;
  static constexpr int block_size = Geo::block_size;
  static constexpr int head_dim = Geo::head_dim;
  static constexpr HeadLayout host_layout = HostLayout;

  /// Bytes of one page (one block of one (sequence, layer), all heads).
  static std::size_t page_bytes(int num_kv_heads) { return Format::page_bytes(num_kv_heads); }
  /// Bytes of memory a pool of `blocks` pages needs.
  static std::size_t bytes_for_blocks(int num_kv_heads, long long blocks) {
    return page_bytes(num_kv_heads) * static_cast<std::size_t>(blocks);
  }

  /// memory: host_base and/or device_base (at least one non-null, both aligned to 256 bytes),
  /// `bytes` long. Capacity = floor(bytes / page_bytes) blocks. Throws nosa::Error on bad input.
  HostPool(HostPoolConfig config, void* host_base, void* device_base, std::size_t bytes)
      : config_(config), host_base_(static_cast<char*>(host_base)), device_base_(static_cast<char*>(device_base)) {
    throw_if_error(config.validate());
    if (host_base == nullptr && device_base == nullptr)
      throw_if_error(invalid_argument("HostPool: host_base and device_base are both null"));
    if (reinterpret_cast<std::uintptr_t>(host_base) % 256 != 0 || reinterpret_cast<std::uintptr_t>(device_base) % 256 != 0)
      throw_if_error(misaligned("HostPool: host_base/device_base must be aligned to 256 bytes"));
    page_stride_ = page_bytes(config.num_kv_heads);
    const long long pages = static_cast<long long>(bytes / page_stride_);
    if (pages < 1)
      throw_if_error(invalid_argument("HostPool: bytes = " + std::to_string(bytes) + " is smaller than one page (" +
                                      std::to_string(page_stride_) + " bytes)"));
    if (pages > INT32_MAX) throw_if_error(invalid_argument("HostPool: more than 2^31 pages"));
    capacity_ = static_cast<std::int32_t>(pages);
    free_.reserve(capacity_);
    for (std::int32_t p = capacity_ - 1; p >= 0; --p) free_.push_back(p);  // pop_back gives 0, 1, ...
    seqs_.resize(config.max_sequences);
  }

  const HostPoolConfig& config() const { return config_; }
  int num_kv_heads() const { return config_.num_kv_heads; }
  /// Capacity and free space in blocks (pages): one page per (sequence, layer, block).
  long long capacity_blocks() const { return capacity_; }
  long long free_blocks() const { return static_cast<long long>(free_.size()); }
  std::size_t page_stride() const { return page_stride_; }
  char* host_base() const { return host_base_; }
  char* device_base() const { return device_base_; }

  bool active(int seq) const { return seq >= 0 && seq < config_.max_sequences && seqs_[seq].active; }
  /// Blocks reserved by a sequence (per layer); 0 for an inactive slot.
  int reserved_blocks(int seq) const { return active(seq) ? seqs_[seq].blocks : 0; }
  long long reserved_tokens(int seq) const { return static_cast<long long>(reserved_blocks(seq)) * block_size; }

  /// Page of (seq, layer, block), or -1 when not reserved.
  std::int32_t page(int seq, int layer, int block) const {
    if (!active(seq) || layer < 0 || layer >= config_.num_layers || block < 0 || block >= seqs_[seq].blocks) return -1;
    return seqs_[seq].pages[static_cast<std::size_t>(layer) * config_.max_blocks_per_sequence + block];
  }
  std::int32_t table_index(int seq, int layer, int block) const {
    return (layer * config_.max_sequences + seq) * config_.max_blocks_per_sequence + block;
  }

  /// Makes a sequence slot active with no blocks. Error if out of range or already active.
  Status add_sequence(int seq) {
    NOSA_RETURN_IF_ERROR(check_slot(seq, "add_sequence"));
    if (seqs_[seq].active) return invalid_argument("add_sequence: sequence slot " + std::to_string(seq) + " is already active");
    seqs_[seq].active = true;
    seqs_[seq].blocks = 0;
    seqs_[seq].pages.assign(static_cast<std::size_t>(config_.num_layers) * config_.max_blocks_per_sequence, -1);
    return {};
  }

  /// Grows a sequence so that `tokens` tokens fit, allocating pages for every layer. All or
  /// nothing: capacity_exceeded (nothing changed) when the pool or the page table is too small.
  /// Never shrinks.
  Status reserve(int seq, long long tokens) {
    NOSA_RETURN_IF_ERROR(check_active(seq, "reserve"));
    if (tokens < 0) return invalid_argument("reserve: tokens = " + std::to_string(tokens) + " is negative");
    const long long want = (tokens + block_size - 1) / block_size;
    if (want > config_.max_blocks_per_sequence)
      return capacity_exceeded("reserve: sequence slot " + std::to_string(seq) + " needs " + std::to_string(want) +
                               " blocks, above max_blocks_per_sequence = " + std::to_string(config_.max_blocks_per_sequence));
    Seq& s = seqs_[seq];
    if (want <= s.blocks) return {};
    const long long pages_needed = (want - s.blocks) * config_.num_layers;
    if (pages_needed > free_blocks())
      return capacity_exceeded("reserve: host pool full: sequence slot " + std::to_string(seq) + " needs " +
                               std::to_string(pages_needed) + " more pages, " + std::to_string(free_blocks()) +
                               " of " + std::to_string(capacity_) + " are free");
    for (int layer = 0; layer < config_.num_layers; ++layer) {
      for (int b = s.blocks; b < want; ++b) {
        const std::int32_t p = free_.back();
        free_.pop_back();
        s.pages[static_cast<std::size_t>(layer) * config_.max_blocks_per_sequence + b] = p;
        updates_.push_back(PageUpdate{table_index(seq, layer, b), p});
      }
    }
    s.blocks = static_cast<int>(want);
    return {};
  }

  /// Returns all pages of a sequence to the free list and makes the slot inactive. The caller
  /// must have ordered every use of its pages (kernels on a stream) before reusing them.
  Status release(int seq) {
    NOSA_RETURN_IF_ERROR(check_active(seq, "release"));
    Seq& s = seqs_[seq];
    for (int layer = 0; layer < config_.num_layers; ++layer) {
      for (int b = 0; b < s.blocks; ++b) {
        std::int32_t& p = s.pages[static_cast<std::size_t>(layer) * config_.max_blocks_per_sequence + b];
        free_.push_back(p);
        p = -1;
        updates_.push_back(PageUpdate{table_index(seq, layer, b), -1});
      }
    }
    s = Seq{};
    return {};
  }

  /// Page-table changes since the last call (for the device mirror), oldest first.
  std::vector<PageUpdate> take_page_updates() {
    std::vector<PageUpdate> out;
    out.swap(updates_);
    return out;
  }
  bool has_page_updates() const { return !updates_.empty(); }

  /// Host address of a page (nullptr for a device-memory pool).
  char* host_page(std::int32_t page) const {
    return host_base_ ? host_base_ + static_cast<std::size_t>(page) * page_stride_ : nullptr;
  }
  char* device_page(std::int32_t page) const {
    return device_base_ ? device_base_ + static_cast<std::size_t>(page) * page_stride_ : nullptr;
  }

  /// Host-side bulk write of tokens [first, first + n) of (seq, layer), e.g. from a CPU prefill.
  /// k, v: [n][Hkv][D] (token-major, like engines produce them), bias: fp32 [n][Hkv].
  /// Needs a host-accessible pool and a reservation covering first + n. Writes only the pool:
  /// for a sequence whose blocks are already on the GPU use Residency::append_prompt instead.
  Status write_tokens(int seq, int layer, long long first, long long n, const T* k, const T* v, const float* bias) {
    NOSA_RETURN_IF_ERROR(check_active(seq, "write_tokens"));
    if (host_base_ == nullptr) return invalid_argument("write_tokens: the pool has no host address (device memory)");
    if (layer < 0 || layer >= config_.num_layers)
      return invalid_argument("write_tokens: layer = " + std::to_string(layer) + " out of range");
    if (first < 0 || n < 0) return invalid_argument("write_tokens: first/n must be >= 0");
    if (n > 0 && (k == nullptr || v == nullptr || bias == nullptr)) return invalid_argument("write_tokens: k, v or bias is null");
    if (first + n > reserved_tokens(seq))
      return capacity_exceeded("write_tokens: tokens up to " + std::to_string(first + n) + " exceed the " +
                               std::to_string(reserved_tokens(seq)) + " reserved for sequence slot " + std::to_string(seq));
    const int H = config_.num_kv_heads;
    for (long long i = 0; i < n; ++i) {
      const long long t = first + i;
      char* pg = host_page(page(seq, layer, static_cast<int>(t / block_size)));
      const int tb = static_cast<int>(t % block_size);
      T* pk = reinterpret_cast<T*>(pg);
      T* pv = reinterpret_cast<T*>(pg + Format::v_byte_offset(H));
      float* pb = reinterpret_cast<float*>(pg + Format::bias_byte_offset(H));
      for (int h = 0; h < H; ++h) {
        const std::size_t src = (static_cast<std::size_t>(i) * H + h) * head_dim;
        std::memcpy(pk + Format::kv_offset(H, h, tb, 0), k + src, head_dim * sizeof(T));
        std::memcpy(pv + Format::kv_offset(H, h, tb, 0), v + src, head_dim * sizeof(T));
        pb[Format::bias_offset(H, h, tb)] = bias[static_cast<std::size_t>(i) * H + h];
      }
    }
    return {};
  }

 private:
  struct Seq {
    bool active = false;
    int blocks = 0;
    std::vector<std::int32_t> pages;  // [layer][max_blocks_per_sequence]
  };

  Status check_slot(int seq, const char* what) const {
    if (seq < 0 || seq >= config_.max_sequences)
      return invalid_argument(std::string(what) + ": sequence slot " + std::to_string(seq) + " out of range [0, " +
                              std::to_string(config_.max_sequences) + ")");
    return {};
  }
  Status check_active(int seq, const char* what) const {
    NOSA_RETURN_IF_ERROR(check_slot(seq, what));
    if (!seqs_[seq].active) return not_found(std::string(what) + ": sequence slot " + std::to_string(seq) + " is not active");
    return {};
  }

  HostPoolConfig config_;
  char* host_base_;
  char* device_base_;
  std::size_t page_stride_ = 0;
  std::int32_t capacity_ = 0;
  std::vector<std::int32_t> free_;
  std::vector<Seq> seqs_;
  std::vector<PageUpdate> updates_;
};

NOSA_NAMESPACE_END
