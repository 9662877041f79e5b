#!/usr/bin/env bash
# Installs what building and testing nosa needs, with apt-get, and only what is missing:
#   required: cmake, make, g++, doctest (doctest-dev)
#   optional: Google Benchmark (libbenchmark-dev; without it the benchmarks are skipped)
# The CUDA toolkit is not installed here: nvcc is used when present (/usr/local/cuda/bin is
# searched), and the CUDA parts are skipped otherwise.
#
# Runs apt-get as root, or through sudo. `apt-get update` runs only when something is missing.
# NOSA_SKIP_DEPS=1 skips this script (e.g. on a machine without network access).
set -euo pipefail

if [[ "${NOSA_SKIP_DEPS:-0}" != "0" ]]; then
  echo "install_deps: skipped (NOSA_SKIP_DEPS=${NOSA_SKIP_DEPS})"
  exit 0
fi

have_pkg() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"; }

required=()
optional=()
command -v cmake >/dev/null 2>&1 || required+=(cmake)
command -v make >/dev/null 2>&1 || command -v ninja >/dev/null 2>&1 || required+=(make)
command -v g++ >/dev/null 2>&1 || required+=(g++)
if ! have_pkg doctest-dev && [[ ! -f /usr/include/doctest/doctest.h && ! -f /usr/local/include/doctest/doctest.h ]]; then
  required+=(doctest-dev)
fi
have_pkg libbenchmark-dev || [[ -f /usr/local/include/benchmark/benchmark.h ]] || optional+=(libbenchmark-dev)

if [[ ${#required[@]} -eq 0 && ${#optional[@]} -eq 0 ]]; then
  echo "install_deps: everything is installed"
  exit 0
fi

if ! command -v apt-get >/dev/null 2>&1; then
  echo "install_deps: apt-get not available; please install: ${required[*]} ${optional[*]}" >&2
  [[ ${#required[@]} -eq 0 ]] && exit 0 || exit 1
fi

if [[ $(id -u) -eq 0 ]]; then
  as_root=()
elif command -v sudo >/dev/null 2>&1; then
  as_root=(sudo)
else
  echo "install_deps: not root and no sudo; please install: ${required[*]} ${optional[*]}" >&2
  [[ ${#required[@]} -eq 0 ]] && exit 0 || exit 1
fi

apt_install() {
  DEBIAN_FRONTEND=noninteractive ${as_root[@]+"${as_root[@]}"} apt-get install -y --no-install-recommends "$@"
}

echo "install_deps: installing ${required[*]} ${optional[*]}"
${as_root[@]+"${as_root[@]}"} apt-get update -qq
if [[ ${#required[@]} -gt 0 ]]; then
  apt_install "${required[@]}"
fi
if [[ ${#optional[@]} -gt 0 ]]; then
  apt_install "${optional[@]}" || echo "install_deps: could not install ${optional[*]} (optional); continuing" >&2
fi
