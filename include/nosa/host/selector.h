// nosa::host: the block selector of DESIGN.md section 2 on the CPU, written literally.
//
// This is the reference every CUDA selector kernel is checked against, and the selector of the
// CPU backend. All functions work on one (sequence, KV head) and plain row-major arrays:
//   q            [G][D]   the G query heads of one KV head, post-RoPE
//   keys         [T][D]   post-RoPE keys of one KV head (row stride `key_stride` elements)
//   bias         [T]      per-token agnostic score b_t (log domain)
//   compressed   [Nc][D]  Kc[j] = mean(k[s*j .. s*j+c))
//   comp_bias    [Nc]     bc[j] = mean(b[s*j .. s*j+c))
// Real is the accumulation type (float or double); scores are Real.
#pragma once

#include <nosa/config.h>
#include <nosa/detail/selection_math.h>
#include <nosa/params.h>
#include <nosa/types.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>
#include <vector>

NOSA_NAMESPACE_BEGIN
namespace host {

/// Mean of `window` consecutive rows of a [T][D] array starting at row `first` (a compressed
/// key) written to out[D]. Summation runs in token order so that incremental and bulk
/// compression give bit-identical results.
template <class Real, class T>
void compress_window(const T* rows, long long row_stride, int head_dim, long long first, int window,
                     Real* out) {
  for (int d = 0; d < head_dim; ++d) out[d] = Real(0);
  for (int t = 0; t < window; ++t) {
    const T* row = rows + (first + t) * row_stride;
    for (int d = 0; d < head_dim; ++d) out[d] += load_as<Real>(row[d]);
  }
  for (int d = 0; d < head_dim; ++d) out[d] /= Real(window);
}

/// Compressed keys and compressed agnostic scores of one (sequence, KV head), maintained
/// incrementally: after every append, it holds exactly the Nc(T) complete windows.
template <class Real>
class CompressedState {
 public:
  CompressedState() = default;
  CompressedState(int head_dim, int window, int stride)
      : head_dim_(head_dim), window_(window), stride_(stride) {}

  int head_dim() const { return head_dim_; }
  int window() const { return window_; }
  int stride() const { return stride_; }
  int count() const { return static_cast<int>(scores_.size()); }
  const Real* keys() const { return keys_.data(); }    ///< [count][head_dim]
  const Real* scores() const { return scores_.data(); }  ///< [count]

  /// Brings the state up to date for the first `num_tokens` tokens of keys [T][D] (row stride
  /// key_stride) and bias [T] (stride bias_stride): adds every window completed since the last
  /// call. Tokens must only ever be appended; earlier rows must not change.
  template <class T, class BiasT>
  void update(const T* keys, long long key_stride, const BiasT* bias, long long bias_stride,
              long long num_tokens) {
    const int target = detail::num_compressed(num_tokens, window_, stride_);
    for (int j = count(); j < target; ++j) {
      const long long first = static_cast<long long>(j) * stride_;
      keys_.resize(static_cast<size_t>(j + 1) * head_dim_);
      compress_window<Real>(keys, key_stride, head_dim_, first, window_, keys_.data() + static_cast<size_t>(j) * head_dim_);
      Real b;
      compress_window<Real>(bias, bias_stride, 1, first, window_, &b);
      scores_.push_back(b);
    }
  }

  void clear() {
    keys_.clear();
    scores_.clear();
  }

 private:
  int head_dim_ = 0, window_ = 32, stride_ = 16;
  std::vector<Real> keys_;
  std::vector<Real> scores_;
};

/// Stage-1 scores: S[j] = sum over the G query heads of softmax_j(q_g . Kc[j] / sqrt(D)).
/// Returns Nc values; empty when no compressed key exists.
template <class Real, class QT>
std::vector<Real> stage1_scores(const QT* q, int group_size, int head_dim, const Real* compressed,
                                int num_compressed_keys) {
  std::vector<Real> S(num_compressed_keys, Real(0));
  if (num_compressed_keys == 0) return S;
  const Real scale = Real(1) / std::sqrt(Real(head_dim));
  std::vector<Real> logits(num_compressed_keys);
  for (int g = 0; g < group_size; ++g) {
    const QT* qg = q + static_cast<size_t>(g) * head_dim;
    Real max_logit = -std::numeric_limits<Real>::infinity();
    for (int j = 0; j < num_compressed_keys; ++j) {
      Real dot = 0;
      const Real* kc = compressed + static_cast<size_t>(j) * head_dim;
      for (int d = 0; d < head_dim; ++d) dot += load_as<Real>(qg[d]) * kc[d];
      logits[j] = dot * scale;
      max_logit = std::max(max_logit, logits[j]);
    }
    Real denom = 0;
    for (int j = 0; j < num_compressed_keys; ++j) {
      logits[j] = std::exp(logits[j] - max_logit);
      denom += logits[j];
    }
    for (int j = 0; j < num_compressed_keys; ++j) S[j] += logits[j] / denom;
  }
  return S;
}

/// Window-overlap max pooling: P[m] = max of per_window[j] over the windows j whose span
/// [s*j, s*j+c) overlaps block m; -inf when no window overlaps. Returns nb values.
template <class Real>
std::vector<Real> pool_to_blocks(const Real* per_window, int num_compressed_keys, int num_blocks,
                                 int block_size, int window, int stride) {
  std::vector<Real> P(num_blocks, -std::numeric_limits<Real>::infinity());
  for (int m = 0; m < num_blocks; ++m) {
    const auto r = detail::windows_overlapping_block(m, block_size, window, stride, num_compressed_keys);
    for (int j = r.first; j <= r.last; ++j) P[m] = std::max(P[m], per_window[j]);
  }
  return P;
}

/// Indices of the top min(k, n) scores under the deterministic rule (higher score first,
/// equal scores lower index first), in rank order.
template <class Real>
std::vector<int> top_k(const std::vector<Real>& scores, int k) {
  std::vector<int> idx(scores.size());
  std::iota(idx.begin(), idx.end(), 0);
  const int n = std::min<int>(k, static_cast<int>(idx.size()));
  std::partial_sort(idx.begin(), idx.begin() + n, idx.end(), [&](int a, int b) {
    return detail::ranks_before(scores[a], a, scores[b], b);
  });
  idx.resize(n);
  return idx;
}

/// Everything the selector computed for one (sequence, KV head), for tests and diagnostics.
template <class Real>
struct Selection {
  std::vector<int> blocks;          ///< the selected set I, ascending
  std::vector<int> query_aware;     ///< Q (NOSA) in rank order; empty for other selectors
  std::vector<Real> block_scores_q; ///< Pq with forced blocks at +inf
  std::vector<Real> block_scores_e; ///< Pe after forcing forced and Q blocks to +inf (NOSA)
};

/// Selects the blocks one (sequence, KV head) attends to at a step with T tokens (T >= 1).
///   q            [G][D]   query heads of the KV head
///   compressed   [>=Nc][D], comp_bias [>=Nc]: compressed state; only the first Nc(T) are used,
///                so prefill rows can share one state built for the whole prompt.
template <class Real, class QT>
Selection<Real> select_blocks(SelectorKind kind, const SelectionParams& params, int block_size,
                              long long T, const QT* q, int group_size, int head_dim,
                              const Real* compressed, const Real* comp_bias) {
  Selection<Real> out;
  const int nb = detail::num_blocks(T, block_size);
  const int cur = nb - 1;
  if (kind == SelectorKind::kDense) {
    out.blocks.resize(nb);
    std::iota(out.blocks.begin(), out.blocks.end(), 0);
    return out;
  }
  const Real inf = std::numeric_limits<Real>::infinity();
  const int nc = detail::num_compressed(T, params.window, params.stride);
  const std::vector<Real> S = stage1_scores<Real>(q, group_size, head_dim, compressed, nc);
  std::vector<Real> Pq = pool_to_blocks<Real>(S.data(), nc, nb, block_size, params.window, params.stride);
  for (int m = 0; m < nb; ++m)
    if (detail::is_forced_block(m, cur, params.sink, params.local)) Pq[m] = inf;

  if (kind == SelectorKind::kInfllmV2) {
    out.blocks = top_k(Pq, params.budget);
  } else {
    std::vector<Real> Pe = pool_to_blocks<Real>(comp_bias, nc, nb, block_size, params.window, params.stride);
    for (int m = 0; m < nb; ++m)
      if (detail::is_forced_block(m, cur, params.sink, params.local)) Pe[m] = inf;
    out.query_aware = top_k(Pq, params.query_aware);
    for (int m : out.query_aware) Pe[m] = inf;
    out.blocks = top_k(Pe, params.budget);
    out.block_scores_e = std::move(Pe);
  }
  std::sort(out.blocks.begin(), out.blocks.end());
  out.block_scores_q = std::move(Pq);
  return out;
}

}  // namespace host
NOSA_NAMESPACE_END
