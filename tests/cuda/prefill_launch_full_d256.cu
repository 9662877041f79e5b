// NOSA_FULL_MATRIX instantiations of the prefill GPU tests with head dim 256 (every block size,
// group size and dtype); an empty registry contribution otherwise.
#include "cuda/prefill_launch_impl.cuh"

namespace nosa_test {
namespace prefill_detail {

void add_full_matrix_d256(std::vector<Entry>& list) {
#if defined(NOSA_FULL_MATRIX) && NOSA_FULL_MATRIX
  add_full_matrix<256>(list);
#else
  (void)list;
#endif
}

}  // namespace prefill_detail
}  // namespace nosa_test
