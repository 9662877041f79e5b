#!/usr/bin/env bash
# Builds nosa and runs the main example, examples/01_decode_walkthrough (GPU path when built with
# CUDA and a GPU is present, host path otherwise).
#
#   ./scripts/run_example.sh [example arguments...]
#
# Environment: NOSA_BUILD_DIR, NOSA_CMAKE_ARGS, NOSA_JOBS, NOSA_SKIP_DEPS as in scripts/test.sh;
# NOSA_EXAMPLE picks another example (default: 01_decode_walkthrough).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

build_dir="${NOSA_BUILD_DIR:-build}"
jobs="${NOSA_JOBS:-$(nproc 2>/dev/null || echo 2)}"
example="${NOSA_EXAMPLE:-01_decode_walkthrough}"

if ! command -v nvcc >/dev/null 2>&1 && [[ -x /usr/local/cuda/bin/nvcc ]]; then
  export PATH="/usr/local/cuda/bin:${PATH}"
fi

./scripts/install_deps.sh

# shellcheck disable=SC2086
cmake -S . -B "${build_dir}" -DCMAKE_BUILD_TYPE=Release ${NOSA_CMAKE_ARGS:-}
cmake --build "${build_dir}" --parallel "${jobs}"

binary="${build_dir}/examples/${example}"
if [[ ! -x "${binary}" ]]; then
  echo "run_example: ${binary} does not exist (is there an examples/${example}/main.cpp?)" >&2
  exit 1
fi
echo "run_example: ${binary} $*"
exec "${binary}" "$@"
