// nosa::host: the KV cache of one attention layer on the CPU, for many sequences.
//
// It stores every token's K, V and agnostic score per (sequence, KV head), converted on load to
// the accumulation type Real, and keeps the compressed keys / scores up to date on every append.
// It is the state the host reference decode step and prefill read, the CPU backend of the
// examples, and the model the CUDA residency manager is checked against.
//
// Input layout of append (token-major, as engines produce it):
//   k, v  [num_tokens][num_kv_heads][head_dim]   (float, double, bfloat16_t or float16_t)
//   bias  [num_tokens][num_kv_heads]             agnostic score b_t (log domain)
#pragma once

#include <nosa/config.h>
#include <nosa/geometry.h>
#include <nosa/host/selector.h>
#include <nosa/params.h>
#include <nosa/status.h>
#include <nosa/types.h>

#include <map>
#include <string>
#include <vector>

NOSA_NAMESPACE_BEGIN
namespace host {

/// Everything stored for one (sequence, KV head).
template <class Real>
struct HeadState {
  std::vector<Real> keys;    ///< [T][D]
  std::vector<Real> values;  ///< [T][D]
  std::vector<Real> bias;    ///< [T]
  CompressedState<Real> compressed;
};

template <class Real = float>
class KVCache {
 public:
  /// num_kv_heads >= 1; dims: head_dim, group_size and block_size (runtime values of the
  /// geometry; layout is irrelevant on the host); params validated against dims.block_size;
  /// max_tokens_per_sequence: capacity of one sequence (0 = unlimited).
  /// Throws nosa::Error naming the bad argument.
  KVCache(int num_kv_heads, Dims dims, SelectionParams params, long long max_tokens_per_sequence = 0)
      : num_kv_heads_(num_kv_heads), dims_(dims), params_(params), max_tokens_(max_tokens_per_sequence) {
    throw_if_error(validate_construction());
  }

  int num_kv_heads() const { return num_kv_heads_; }
  int num_query_heads() const { return num_kv_heads_ * dims_.group_size; }
  const Dims& dims() const { return dims_; }
  const SelectionParams& params() const { return params_; }
  long long max_tokens_per_sequence() const { return max_tokens_; }
  size_t num_sequences() const { return sequences_.size(); }

  bool contains(SequenceId id) const { return sequences_.count(id) != 0; }

  /// Length T of a sequence, or -1 if unknown.
  long long length(SequenceId id) const {
    auto it = sequences_.find(id);
    return it == sequences_.end() ? -1 : it->second.length;
  }

  Status add_sequence(SequenceId id) {
    if (contains(id)) return invalid_argument("sequence id " + std::to_string(id) + " is already in the cache");
    Sequence seq;
    seq.heads.resize(num_kv_heads_);
    for (auto& h : seq.heads) h.compressed = CompressedState<Real>(dims_.head_dim, params_.window, params_.stride);
    sequences_.emplace(id, std::move(seq));
    return {};
  }

  Status remove_sequence(SequenceId id) {
    if (sequences_.erase(id) == 0) return not_found("sequence id " + std::to_string(id) + " is not in the cache");
    return {};
  }

  /// Appends num_tokens tokens (one decode token or a whole prompt) to a sequence and updates
  /// its compressed state. On error nothing changes.
  template <class T, class BiasT>
  Status append(SequenceId id, long long num_tokens, const T* k, const T* v, const BiasT* bias) {
    static_assert(is_element_type_v<T>, "append: k/v must be float, double, bfloat16_t or float16_t");
    auto it = sequences_.find(id);
    if (it == sequences_.end()) return not_found("append: sequence id " + std::to_string(id) + " is not in the cache");
    if (num_tokens < 0) return invalid_argument("append: num_tokens = " + std::to_string(num_tokens) + " is negative");
    if (num_tokens == 0) return {};
    if (k == nullptr) return invalid_argument("append: k is null");
    if (v == nullptr) return invalid_argument("append: v is null");
    if (bias == nullptr) return invalid_argument("append: bias is null");
    Sequence& seq = it->second;
    if (max_tokens_ > 0 && seq.length + num_tokens > max_tokens_)
      return capacity_exceeded("append: sequence " + std::to_string(id) + " would reach " +
                               std::to_string(seq.length + num_tokens) + " tokens, above max_tokens_per_sequence = " +
                               std::to_string(max_tokens_));
    const int D = dims_.head_dim;
    const long long new_length = seq.length + num_tokens;
    for (int h = 0; h < num_kv_heads_; ++h) {
      HeadState<Real>& hs = seq.heads[h];
      hs.keys.reserve(static_cast<size_t>(new_length) * D);
      hs.values.reserve(static_cast<size_t>(new_length) * D);
      for (long long t = 0; t < num_tokens; ++t) {
        const size_t row = (static_cast<size_t>(t) * num_kv_heads_ + h) * D;
        for (int d = 0; d < D; ++d) {
          hs.keys.push_back(load_as<Real>(k[row + d]));
          hs.values.push_back(load_as<Real>(v[row + d]));
        }
        hs.bias.push_back(load_as<Real>(bias[static_cast<size_t>(t) * num_kv_heads_ + h]));
      }
      hs.compressed.update(hs.keys.data(), D, hs.bias.data(), 1, new_length);
    }
    seq.length = new_length;
    return {};
  }

  /// State of one (sequence, KV head). The id must exist (check contains() first).
  const HeadState<Real>& head(SequenceId id, int kv_head) const { return sequences_.at(id).heads.at(kv_head); }

  /// Ids of all sequences, ascending.
  std::vector<SequenceId> sequence_ids() const {
    std::vector<SequenceId> ids;
    for (const auto& kv : sequences_) ids.push_back(kv.first);
    return ids;
  }

 private:
  struct Sequence {
    std::vector<HeadState<Real>> heads;
    long long length = 0;
  };

  Status validate_construction() const {
    if (num_kv_heads_ <= 0) return invalid_argument("num_kv_heads = " + std::to_string(num_kv_heads_) + ": must be >= 1");
    if (dims_.head_dim <= 0) return invalid_argument("dims.head_dim = " + std::to_string(dims_.head_dim) + ": must be >= 1");
    if (dims_.group_size <= 0)
      return invalid_argument("dims.group_size = " + std::to_string(dims_.group_size) + ": must be >= 1");
    if (max_tokens_ < 0)
      return invalid_argument("max_tokens_per_sequence = " + std::to_string(max_tokens_) + ": must be >= 0");
    return params_.validate(dims_.block_size);
  }

  int num_kv_heads_;
  Dims dims_;
  SelectionParams params_;
  long long max_tokens_;
  std::map<SequenceId, Sequence> sequences_;
};

}  // namespace host
NOSA_NAMESPACE_END
