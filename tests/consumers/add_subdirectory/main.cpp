// nosa consumer through add_subdirectory(nosa): validates SelectionParams and prints them.
// Exits nonzero when validation does not behave as documented.
#include <nosa/geometry.h>
#include <nosa/params.h>
#include <nosa/status.h>

#include <cstdio>
#include <string>

static_assert(NOSA_VERSION_MAJOR == EXPECTED_MAJOR && NOSA_VERSION_MINOR == EXPECTED_MINOR &&
                  NOSA_VERSION_PATCH == EXPECTED_PATCH,
              "include/nosa/config.h and the CMake package disagree on the version");

int main() {
  using Geo = nosa::Geometry<64, 128, 16>;
  constexpr nosa::Dims dims = nosa::Dims::of<Geo>();

  const nosa::SelectionParams params;  // the NOSA release defaults
  const nosa::Status ok = params.validate(dims.block_size);
  std::printf("nosa %d.%d.%d (add_subdirectory): B=%d D=%d G=%d  window=%d stride=%d sink=%d local=%d "
              "query_aware=%d budget=%d -> %s\n",
              NOSA_VERSION_MAJOR, NOSA_VERSION_MINOR, NOSA_VERSION_PATCH, dims.block_size, dims.head_dim,
              dims.group_size, params.window, params.stride, params.sink, params.local, params.query_aware,
              params.budget, ok.to_string().c_str());
  if (!ok.ok()) return 1;

  nosa::SelectionParams bad = params;
  bad.budget = 3;  // fewer than the sink + local + 1 forced blocks
  const nosa::Status rejected = bad.validate(dims.block_size);
  std::printf("budget=3 -> %s\n", rejected.to_string().c_str());
  if (rejected.code() != nosa::StatusCode::kInvalidArgument) return 2;
  if (rejected.message().find("budget") == std::string::npos) return 3;
  return 0;
}
