// nosa: caller-owned memory. A component describes the buffers it needs with a WorkspaceLayout;
// the caller asks for total_bytes(), allocates once (device, pinned host, wherever the
// component says), and the component carves the caller's pointer with the same layout that
// computed the size, so the two can never disagree (CUB's two-phase temporary storage).
#pragma once

#include <nosa/config.h>
#include <nosa/status.h>

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

NOSA_NAMESPACE_BEGIN

/// Alignment every carved buffer gets: enough for 16-byte vector loads and TMA (128 B).
inline constexpr std::size_t kWorkspaceAlignment = 256;

class WorkspaceLayout {
 public:
  /// Reserves `bytes` and returns the index to pass to at(). Zero-byte entries are allowed.
  int add(std::size_t bytes, std::size_t alignment = kWorkspaceAlignment) {
    offset_ = (offset_ + alignment - 1) / alignment * alignment;
    offsets_.push_back(offset_);
    offset_ += bytes;
    return static_cast<int>(offsets_.size()) - 1;
  }
  /// Bytes the caller must provide (base pointer aligned to kWorkspaceAlignment).
  std::size_t total_bytes() const { return (offset_ + kWorkspaceAlignment - 1) / kWorkspaceAlignment * kWorkspaceAlignment; }

  /// Checks a caller buffer against this layout.
  Status check(const void* base, std::size_t bytes, const char* name) const {
    if (total_bytes() > 0 && base == nullptr) return invalid_argument(std::string(name) + " is null");
    if (reinterpret_cast<std::uintptr_t>(base) % kWorkspaceAlignment != 0)
      return misaligned(std::string(name) + " must be aligned to " + std::to_string(kWorkspaceAlignment) + " bytes");
    if (bytes < total_bytes())
      return invalid_argument(std::string(name) + " has " + std::to_string(bytes) + " bytes, " +
                              std::to_string(total_bytes()) + " needed");
    return {};
  }

  template <class T>
  T* at(void* base, int index) const {
    return reinterpret_cast<T*>(static_cast<char*>(base) + offsets_.at(index));
  }

 private:
  std::size_t offset_ = 0;
  std::vector<std::size_t> offsets_;
};

NOSA_NAMESPACE_END
