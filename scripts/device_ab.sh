#!/usr/bin/env bash
# A/B runs of one benchmark over several prebuilt build directories in one device call, so the
# figures share a GPU, a clock state and a ceiling measurement:
#   scripts/device_ab.sh <bench name> "<benchmark flags>" <build-dir>...
# Writes <dir name>.<bench>.log under $OUT and prints each one's tabular lines last.
set -uo pipefail
bench="${1:?bench}"
flags="${2:-}"
shift 2
out="${OUT:-/tmp/nosa-out}"
mkdir -p "${out}"
export LD_LIBRARY_PATH="${LD_LIBRARY_PATH:-}:/usr/local/cuda/lib64"
cublas=$(find /usr/local /opt -name 'libcublas.so.13*' 2>/dev/null | head -n 1)
[[ -n "${cublas}" ]] && export LD_LIBRARY_PATH="${LD_LIBRARY_PATH}:$(dirname "${cublas}")"
for build in "$@"; do
  name="$(basename "${build}")"
  # shellcheck disable=SC2086
  LD_LIBRARY_PATH="${build}/carry-lib:${LD_LIBRARY_PATH:-}" "${build}/bench/${bench}" ${flags} > "${out}/${name}.${bench}.log" 2>&1
  echo "== ${name}: rc=$?"
  grep -E "^GPU|^BM_|ceiling" "${out}/${name}.${bench}.log"
done
