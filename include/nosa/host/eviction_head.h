// nosa::host: the optional eviction head of NOSA on the CPU (the reference of
// nosa/eviction_head.cuh): per new token and KV head h,
//   b[t][h] = A[h] * softplus( W[h] . concat_{h'} v[t][h'][:] )
// with softplus(x) = log(1 + exp(x)), evaluated stably as max(x, 0) + log1p(exp(-|x|)).
//   v  [n][Hkv][D]     values of the new tokens (token-major NHD), any element type
//   W  [Hkv][Hkv*D]    projection rows (float or a 2-byte type)
//   A  [Hkv]           per-head scale (fp32)
//   b  [n][Hkv]        output agnostic scores (Real)
#pragma once

#include <nosa/config.h>
#include <nosa/status.h>
#include <nosa/types.h>

#include <algorithm>
#include <cmath>
#include <string>

NOSA_NAMESPACE_BEGIN
namespace host {

template <class Real>
inline Real softplus(Real x) {
  return std::max(x, Real(0)) + std::log1p(std::exp(-std::fabs(x)));
}

template <class Real, class VT, class WT>
Status eviction_head(long long n, int num_kv_heads, int head_dim, const VT* v, const WT* W, const float* A, Real* b) {
  if (n < 0) return invalid_argument("eviction_head: n = " + std::to_string(n) + " is negative");
  if (num_kv_heads <= 0) return invalid_argument("eviction_head: num_kv_heads must be >= 1");
  if (head_dim <= 0) return invalid_argument("eviction_head: head_dim must be >= 1");
  if (n == 0) return {};
  if (!v || !W || !A || !b) return invalid_argument("eviction_head: a pointer argument (v, W, A or b) is null");
  const long long row = static_cast<long long>(num_kv_heads) * head_dim;
  for (long long t = 0; t < n; ++t) {
    const VT* vt = v + t * row;
    for (int h = 0; h < num_kv_heads; ++h) {
      const WT* w = W + h * row;
      Real dot = 0;
      for (long long e = 0; e < row; ++e) dot += load_as<Real>(w[e]) * load_as<Real>(vt[e]);
      b[t * num_kv_heads + h] = Real(A[h]) * softplus(dot);
    }
  }
  return {};
}

}  // namespace host
NOSA_NAMESPACE_END
