// nosa::detail: kernels that keep the device selector's compressed state up to date.
//
// State per (sequence slot, KV head), all in caller memory (see DeviceSelector):
//   ring_k  T     [window][D]   the last `window` raw keys, token t at row t % window
//   ring_b  float [window]      their agnostic scores
//   keys    KS    [max_nc][D]   compressed keys Kc[j], rounded to the store type KS
//   cbias   float [max_nc]      compressed scores bc[j]
// and per slot an int32 token count. A window is compressed by the thread that owns dimension d,
// summing in token order in fp32 and dividing by window with IEEE division, exactly as
// host::compress_window does, so device and host compressed keys agree bit for bit.
#pragma once

#include <nosa/config.h>
#include <nosa/detail/cuda_types.cuh>
#include <nosa/detail/selection_math.h>

#include <cuda_runtime.h>

NOSA_NAMESPACE_BEGIN
namespace detail {

/// Sticky device-side error bits (checked by DeviceSelector::device_errors).
enum SelectorDeviceError : unsigned {
  kSelErrSlot = 1u,         ///< a seq_slots entry outside [0, max_sequences)
  kSelErrCapacity = 2u,     ///< an append would pass max_tokens: nothing was appended
  kSelErrLength = 4u,       ///< a seq_lens entry < 0, > max_seq_len or > tokens appended
};

template <class T, class KS>
struct SelectorStateView {
  int* counts;          ///< [max_sequences] tokens appended
  unsigned* error;      ///< sticky error bits
  T* ring_k;            ///< [max_sequences][Hkv][window][D]
  float* ring_b;        ///< [max_sequences][Hkv][window]
  KS* keys;             ///< [max_sequences][Hkv][max_nc][D]
  float* cbias;         ///< [max_sequences][Hkv][max_nc]
  int max_sequences;
  int num_kv_heads;
  int max_nc;
  long long max_tokens;
  int window;
  int stride;
};

/// Compresses window j of (slot, h) for dimension d from a token source (ring or new input).
/// get(t) returns the fp32 value of token t (absolute index) at dimension d.
template <class Get>
NOSA_DEVICE NOSA_FORCEINLINE float compress_sum(long long first, int window, Get get) {
  float sum = 0.f;
  for (int u = 0; u < window; ++u) sum = __fadd_rn(sum, get(first + u));
  return __fdiv_rn(sum, static_cast<float>(window));
}

/// Decode append: one token per batch entry. grid = batch, any block size.
///   k    [batch][Hkv][D] T,  bias [batch][Hkv] fp32,  seq_slots [batch] int32 (distinct).
template <class T, class KS, int D>
__global__ void append_tokens_kernel(const __grid_constant__ SelectorStateView<T, KS> st,
                                     const int* __restrict__ seq_slots, const T* __restrict__ k,
                                     const float* __restrict__ bias) {
  using CT = cuda_type_t<T>;
  using CKS = cuda_type_t<KS>;
  const int i = blockIdx.x;
  const int slot = seq_slots[i];
  if (slot < 0 || slot >= st.max_sequences) {
    if (threadIdx.x == 0) atomicOr(st.error, kSelErrSlot);
    return;
  }
  const long long start = st.counts[slot];
  if (start + 1 > st.max_tokens) {
    if (threadIdx.x == 0) atomicOr(st.error, kSelErrCapacity);
    return;
  }
  const int c = st.window, s = st.stride, H = st.num_kv_heads;
  const int pos = static_cast<int>(start % c);
  const long long end = start + 1;  // tokens after this append
  const bool completes = end >= c && (end - c) % s == 0;
  const int j = completes ? static_cast<int>((end - c) / s) : -1;
  const CT* kin = as_cuda(k);
  CT* ring = as_cuda(st.ring_k);
  CKS* keys = as_cuda(st.keys);
  for (int e = threadIdx.x; e < H * (D + 1); e += blockDim.x) {
    const int h = e / (D + 1);
    const int d = e % (D + 1);  // d == D: the bias lane of head h
    const size_t sh = static_cast<size_t>(slot) * H + h;
    if (d < D) {
      CT* rk = ring + sh * c * D;
      rk[static_cast<size_t>(pos) * D + d] = kin[(static_cast<size_t>(i) * H + h) * D + d];
      if (completes) {
        const float mean = compress_sum(static_cast<long long>(j) * s, c, [&](long long t) {
          return to_f32(rk[static_cast<size_t>(t % c) * D + d]);
        });
        keys[(sh * st.max_nc + j) * D + d] = from_f32<CKS>(mean);
      }
    } else {
      float* rb = st.ring_b + sh * c;
      rb[pos] = bias[static_cast<size_t>(i) * H + h];
      if (completes) {
        st.cbias[sh * st.max_nc + j] =
            compress_sum(static_cast<long long>(j) * s, c, [&](long long t) { return rb[t % c]; });
      }
    }
  }
  __syncthreads();
  if (threadIdx.x == 0) st.counts[slot] = static_cast<int>(end);
}

/// Prompt append, part 1: compress every window that completes inside the new tokens.
/// grid = (max new windows, Hkv); block = D + 1 threads or more (thread D does the bias).
///   k [n][Hkv][D] T, bias [n][Hkv] fp32 (token-major, NHD).
template <class T, class KS, int D>
__global__ void append_prompt_windows_kernel(const __grid_constant__ SelectorStateView<T, KS> st, int slot,
                                             long long n, const T* __restrict__ k,
                                             const float* __restrict__ bias) {
  using CT = cuda_type_t<T>;
  using CKS = cuda_type_t<KS>;
  const long long start = st.counts[slot];
  if (start + n > st.max_tokens) {
    if (blockIdx.x == 0 && blockIdx.y == 0 && threadIdx.x == 0) atomicOr(st.error, kSelErrCapacity);
    return;
  }
  const int c = st.window, s = st.stride, H = st.num_kv_heads, h = blockIdx.y;
  const long long end = start + n;
  // first window whose last token s*j + c - 1 is a new token (>= start)
  long long j_first = floor_div(start - c + 1 + s - 1, s);
  if (j_first < 0) j_first = 0;
  const long long j = j_first + blockIdx.x;
  if (static_cast<long long>(j) * s + c > end) return;
  const size_t sh = static_cast<size_t>(slot) * H + h;
  const CT* kin = as_cuda(k);
  const CT* ring = as_cuda(st.ring_k) + sh * c * D;
  const float* rb = st.ring_b + sh * c;
  const int d = threadIdx.x;
  if (d < D) {
    const float mean = compress_sum(j * s, c, [&](long long t) {
      return t < start ? to_f32(ring[static_cast<size_t>(t % c) * D + d])
                       : to_f32(kin[(static_cast<size_t>(t - start) * H + h) * D + d]);
    });
    as_cuda(st.keys)[(sh * st.max_nc + j) * D + d] = from_f32<CKS>(mean);
  } else if (d == D) {
    st.cbias[sh * st.max_nc + j] = compress_sum(j * s, c, [&](long long t) {
      return t < start ? rb[t % c] : bias[static_cast<size_t>(t - start) * H + h];
    });
  }
}

/// Prompt append, part 2 (after part 1, which still reads the old ring): store the last
/// min(n, window) new tokens in the ring. grid = (min(n, window), Hkv), block >= D + 1.
template <class T, class KS, int D>
__global__ void append_prompt_ring_kernel(const __grid_constant__ SelectorStateView<T, KS> st, int slot,
                                          long long n, const T* __restrict__ k,
                                          const float* __restrict__ bias) {
  const long long start = st.counts[slot];
  if (start + n > st.max_tokens) return;
  const int c = st.window, H = st.num_kv_heads, h = blockIdx.y;
  const long long t = start + n - 1 - blockIdx.x;  // absolute token index
  if (t < start) return;
  const size_t sh = static_cast<size_t>(slot) * H + h;
  const int d = threadIdx.x;
  if (d < D) {
    as_cuda(st.ring_k)[(sh * c + t % c) * D + d] = as_cuda(k)[(static_cast<size_t>(t - start) * H + h) * D + d];
  } else if (d == D) {
    st.ring_b[sh * c + t % c] = bias[static_cast<size_t>(t - start) * H + h];
  }
}

/// Prompt append, part 3: advance the token count (single thread, after parts 1 and 2).
template <class T, class KS>
__global__ void append_prompt_count_kernel(const __grid_constant__ SelectorStateView<T, KS> st, int slot,
                                           long long n) {
  const long long start = st.counts[slot];
  if (start + n > st.max_tokens) return;
  st.counts[slot] = static_cast<int>(start + n);
}

}  // namespace detail
NOSA_NAMESPACE_END
