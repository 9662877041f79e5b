// nosa::host: block-sparse decode attention with an additive per-token bias, on the CPU.
//
// For one (sequence, KV head) with T tokens and a selected set I of blocks:
//   o_g   = sum over tokens t < T in blocks I of softmax_t(q_g . k_t / sqrt(D) + b_t) v_t
//   lse_g = log(sum_t exp(q_g . k_t / sqrt(D) + b_t))      (natural log, includes b_t)
// The bias is added after the 1/sqrt(D) scale. With no bias (InfLLM-V2 and plain dense
// attention) b_t = 0. If every logit is -inf (a -inf bias on every attended token) the result
// is o = 0 and lse = -inf; merge_partials treats such a partial as empty.
#pragma once

#include <nosa/config.h>
#include <nosa/types.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

NOSA_NAMESPACE_BEGIN
namespace host {

/// Attention of G query heads over the selected blocks of one KV head.
///   q      [G][D]           query heads
///   keys   [T][D], values [T][D]  (row stride key_stride / value_stride elements)
///   bias   [T] (stride bias_stride) or nullptr for no bias
///   blocks the selected block ids (any order, no duplicates); the last block contributes only
///          its tokens < T
///   out    [G][D], lse [G]   written
template <class Real, class QT, class KT, class BiasT, class OutT>
void attend_blocks(const QT* q, int group_size, int head_dim, const KT* keys, long long key_stride,
                   const KT* values, long long value_stride, const BiasT* bias, long long bias_stride,
                   long long T, int block_size, const std::vector<int>& blocks, OutT* out, Real* lse) {
  const Real scale = Real(1) / std::sqrt(Real(head_dim));
  const Real neg_inf = -std::numeric_limits<Real>::infinity();
  std::vector<long long> tokens;
  for (int m : blocks) {
    const long long first = static_cast<long long>(m) * block_size;
    const long long last = std::min<long long>(first + block_size, T);
    for (long long t = first; t < last; ++t) tokens.push_back(t);
  }
  std::vector<Real> logits(tokens.size());
  std::vector<Real> acc(head_dim);
  for (int g = 0; g < group_size; ++g) {
    const QT* qg = q + static_cast<size_t>(g) * head_dim;
    Real max_logit = neg_inf;
    for (size_t i = 0; i < tokens.size(); ++i) {
      const KT* k = keys + tokens[i] * key_stride;
      Real dot = 0;
      for (int d = 0; d < head_dim; ++d) dot += load_as<Real>(qg[d]) * load_as<Real>(k[d]);
      Real l = dot * scale;
      if (bias != nullptr) l += load_as<Real>(bias[tokens[i] * bias_stride]);
      logits[i] = l;
      max_logit = std::max(max_logit, l);
    }
    std::fill(acc.begin(), acc.end(), Real(0));
    Real denom = 0;
    if (max_logit != neg_inf) {
      for (size_t i = 0; i < tokens.size(); ++i) {
        const Real p = std::exp(logits[i] - max_logit);
        denom += p;
        const KT* v = values + tokens[i] * value_stride;
        for (int d = 0; d < head_dim; ++d) acc[d] += p * load_as<Real>(v[d]);
      }
    }
    OutT* og = out + static_cast<size_t>(g) * head_dim;
    for (int d = 0; d < head_dim; ++d) og[d] = store_as<OutT>(denom > 0 ? acc[d] / denom : Real(0));
    lse[g] = denom > 0 ? max_logit + std::log(denom) : neg_inf;
  }
}

/// Merges two partial attention results over disjoint token sets into the result over their
/// union: o = (e^{lse_a} o_a + e^{lse_b} o_b) / (e^{lse_a} + e^{lse_b}), lse = log of the sum.
/// rows: number of (query head) rows, each of head_dim values. Output may alias input a.
template <class Real, class T>
void merge_partials(int rows, int head_dim, const T* o_a, const Real* lse_a, const T* o_b,
                    const Real* lse_b, T* o_out, Real* lse_out) {
  const Real neg_inf = -std::numeric_limits<Real>::infinity();
  for (int r = 0; r < rows; ++r) {
    const Real la = lse_a[r], lb = lse_b[r];
    const Real m = std::max(la, lb);
    Real wa = 0, wb = 0, lse = neg_inf;
    if (m != neg_inf) {
      wa = std::exp(la - m);
      wb = std::exp(lb - m);
      lse = m + std::log(wa + wb);
      const Real sum = wa + wb;
      wa /= sum;
      wb /= sum;
    }
    for (int d = 0; d < head_dim; ++d) {
      const size_t i = static_cast<size_t>(r) * head_dim + d;
      o_out[i] = store_as<T>(wa * load_as<Real>(o_a[i]) + wb * load_as<Real>(o_b[i]));
    }
    lse_out[r] = lse;
  }
}

}  // namespace host
NOSA_NAMESPACE_END
