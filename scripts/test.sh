#!/usr/bin/env bash
# Builds nosa and runs every test: the README's test command.
#
#   ./scripts/test.sh
#
# Steps: install missing dependencies (scripts/install_deps.sh), configure into build/, build,
# and run `ctest --test-dir build --output-on-failure`. GPU tests are compiled when nvcc is found
# and report "skipped" on a machine without a GPU.
#
# Environment:
#   NOSA_BUILD_DIR    build directory (default: build)
#   NOSA_CMAKE_ARGS   extra configure arguments, e.g. "-DCMAKE_CUDA_ARCHITECTURES=90a"
#   NOSA_JOBS         parallel build and test jobs (default: number of cores)
#   NOSA_CTEST_ARGS   extra ctest arguments, e.g. "-L gpu" or "-LE consumer"
#   NOSA_SKIP_DEPS=1  do not look for or install packages
#   NOSA_REQUIRE_GPU=1  a GPU test fails instead of skipping when no GPU is visible
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

build_dir="${NOSA_BUILD_DIR:-build}"
jobs="${NOSA_JOBS:-$(nproc 2>/dev/null || echo 2)}"

# nvcc is usually not on PATH in a fresh shell.
if ! command -v nvcc >/dev/null 2>&1 && [[ -x /usr/local/cuda/bin/nvcc ]]; then
  export PATH="/usr/local/cuda/bin:${PATH}"
fi

./scripts/install_deps.sh

# shellcheck disable=SC2086 # NOSA_CMAKE_ARGS / NOSA_CTEST_ARGS are word lists on purpose
cmake -S . -B "${build_dir}" -DCMAKE_BUILD_TYPE=Release ${NOSA_CMAKE_ARGS:-}
cmake --build "${build_dir}" --parallel "${jobs}"
# shellcheck disable=SC2086
ctest --test-dir "${build_dir}" --output-on-failure --parallel "${jobs}" ${NOSA_CTEST_ARGS:-}
