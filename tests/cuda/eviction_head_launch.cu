#include "cuda/eviction_head_launch.h"

#include <nosa/eviction_head.cuh>

#include <cuda_runtime.h>

#include <stdexcept>
#include <string>

namespace nosa_test {

#define EH_CHECK(expr)                                                                               \
  do {                                                                                               \
    cudaError_t e_ = (expr);                                                                         \
    if (e_ != cudaSuccess) throw std::runtime_error(std::string(#expr) + ": " + cudaGetErrorString(e_)); \
  } while (0)

template <class T>
static nosa::Status run(long long n, int hkv, int d, bool w_as_t, const std::vector<std::uint16_t>& v,
                        const std::vector<float>& W, const std::vector<float>& A, std::vector<float>* b, bool null_v,
                        int v_off) {
  if (n < 0) {  // the library must refuse this before touching anything; nothing to allocate
    b->assign(1, 0.f);
    const T* vp = nullptr;
    return nosa::eviction_head<T, float>(n, hkv, d, vp, W.data(), A.data(), b->data(), nullptr);
  }
  cudaStream_t s;
  EH_CHECK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
  std::uint16_t* dv = nullptr;
  void* dw = nullptr;
  float *da = nullptr, *db = nullptr;
  EH_CHECK(cudaMalloc(&dv, (v.size() + 8) * 2));
  EH_CHECK(cudaMalloc(&dw, W.size() * 4));
  EH_CHECK(cudaMalloc(&da, A.size() * 4));
  EH_CHECK(cudaMalloc(&db, static_cast<size_t>(n) * hkv * 4 + 4));
  EH_CHECK(cudaMemcpyAsync(dv, v.data(), v.size() * 2, cudaMemcpyHostToDevice, s));
  EH_CHECK(cudaMemcpyAsync(da, A.data(), A.size() * 4, cudaMemcpyHostToDevice, s));
  EH_CHECK(cudaMemsetAsync(db, 0xff, static_cast<size_t>(n) * hkv * 4 + 4, s));
  nosa::Status st;
  const T* vp = null_v ? nullptr : reinterpret_cast<const T*>(reinterpret_cast<const char*>(dv) + v_off);
  if (w_as_t) {
    std::vector<T> wt(W.size());
    for (size_t e = 0; e < W.size(); ++e) wt[e] = nosa::store_as<T>(W[e]);
    EH_CHECK(cudaMemcpyAsync(dw, wt.data(), wt.size() * 2, cudaMemcpyHostToDevice, s));
    EH_CHECK(cudaStreamSynchronize(s));
    (void)(st = nosa::eviction_head<T, T>(n, hkv, d, vp, static_cast<const T*>(dw), da, db, s));
  } else {
    EH_CHECK(cudaMemcpyAsync(dw, W.data(), W.size() * 4, cudaMemcpyHostToDevice, s));
    (void)(st = nosa::eviction_head<T, float>(n, hkv, d, vp, static_cast<const float*>(dw), da, db, s));
  }
  b->assign(static_cast<size_t>(n) * hkv, 0.f);
  EH_CHECK(cudaMemcpyAsync(b->data(), db, b->size() * 4, cudaMemcpyDeviceToHost, s));
  EH_CHECK(cudaStreamSynchronize(s));
  cudaFree(dv);
  cudaFree(dw);
  cudaFree(da);
  cudaFree(db);
  cudaStreamDestroy(s);
  return st;
}

nosa::Status run_eviction_head(long long n, int hkv, int d, bool fp16, bool w_as_t, const std::vector<std::uint16_t>& v,
                               const std::vector<float>& W, const std::vector<float>& A, std::vector<float>* b, bool null_v,
                               int v_offset_bytes) {
  return fp16 ? run<nosa::float16_t>(n, hkv, d, w_as_t, v, W, A, b, null_v, v_offset_bytes)
              : run<nosa::bfloat16_t>(n, hkv, d, w_as_t, v, W, A, b, null_v, v_offset_bytes);
}

}  // namespace nosa_test
