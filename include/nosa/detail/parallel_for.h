// nosa::detail: a minimal fork-join loop for the host reference (threads over sequences and
// heads). No pool: the reference favours clarity; each call spawns at most `threads` workers.
#pragma once

#include <nosa/config.h>

#include <algorithm>
#include <atomic>
#include <exception>
#include <mutex>
#include <thread>
#include <vector>

NOSA_NAMESPACE_BEGIN
namespace detail {

/// Calls fn(i) for i in [0, n), on up to `threads` threads (0: hardware concurrency).
/// The first exception thrown by fn is rethrown after all workers finish.
template <class Fn>
void parallel_for(long long n, int threads, Fn&& fn) {
  if (n <= 0) return;
  unsigned hw = std::thread::hardware_concurrency();
  long long workers = threads > 0 ? threads : static_cast<long long>(hw == 0 ? 1 : hw);
  workers = std::min(workers, n);
  if (workers <= 1) {
    for (long long i = 0; i < n; ++i) fn(i);
    return;
  }
  std::atomic<long long> next{0};
  std::exception_ptr error;
  std::mutex error_mutex;
  auto work = [&] {
    for (long long i; (i = next.fetch_add(1)) < n;) {
      try {
        fn(i);
      } catch (...) {
        std::lock_guard<std::mutex> lock(error_mutex);
        if (!error) error = std::current_exception();
      }
    }
  };
  std::vector<std::thread> pool;
  for (long long w = 1; w < workers; ++w) pool.emplace_back(work);
  work();
  for (auto& t : pool) t.join();
  if (error) std::rethrow_exception(error);
}

}  // namespace detail
NOSA_NAMESPACE_END
