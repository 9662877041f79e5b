#!/usr/bin/env bash
# The GPU check of a session on the lent device machine: runs prebuilt binaries of a build
# directory (built here with -DCMAKE_CUDA_ARCHITECTURES=90a; the device time is for running, not
# compiling), writes every log to $OUT and prints a short summary last.
#
#   scripts/device_run.sh <build-dir> [tests] [sanitize] [examples] [bench:<name>[:<flags>]]...
#
# Libraries the binaries need beyond the CUDA toolkit (libbenchmark) may be carried in
# <build-dir>/carry-lib (added to LD_LIBRARY_PATH).
set -uo pipefail
build="${1:?build dir}"
shift
out="${OUT:-/tmp/nosa-out}"
mkdir -p "${out}"
export LD_LIBRARY_PATH="${build}/carry-lib:${LD_LIBRARY_PATH:-}:/usr/local/cuda/lib64"
# cuBLAS (bench_prefill's matmul ceiling) is too large to carry: use the machine's copy.
cublas=$(find /usr/local /opt -name 'libcublas.so.13*' 2>/dev/null | head -n 1)
[[ -n "${cublas}" ]] && export LD_LIBRARY_PATH="${LD_LIBRARY_PATH}:$(dirname "${cublas}")"
summary="${out}/summary.txt"
: > "${summary}"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee -a "${summary}"

run() {  # run <log name> <timeout s> <command...>: logs, then a one-line verdict in the summary
  local name="$1" limit="$2"
  shift 2
  local start=$(date +%s)
  timeout "${limit}" "$@" > "${out}/${name}.log" 2>&1
  local rc=$?
  local tail_line
  tail_line=$(grep -E "test cases:|ERROR SUMMARY|RACECHECK SUMMARY|FAILED|PASSED|passed|failed" "${out}/${name}.log" | tail -n 2 | tr '\n' ' ')
  printf '%-40s rc=%-3s %4ss  %s\n' "${name}" "${rc}" "$(( $(date +%s) - start ))" "${tail_line}" | tee -a "${summary}"
}

for what in "$@"; do
  case "${what}" in
    tests)
      for t in "${build}"/tests/test_cuda_*; do run "$(basename "$t")" 300 "$t"; done ;;
    sanitize)
      run memcheck_selector 300 compute-sanitizer --tool memcheck --error-exitcode 9 "${build}/tests/test_cuda_selector" -tc="*bad arguments*,*incremental*,*ragged*,*pinned*,*persistent*"
      run racecheck_selector 300 compute-sanitizer --tool racecheck --print-limit 50 --error-exitcode 9 "${build}/tests/test_cuda_selector" -tc="*bad arguments*,*ragged*"
      run memcheck_decode_step 300 compute-sanitizer --tool memcheck --error-exitcode 9 "${build}/tests/test_cuda_decode_step" -tc="*zero-copy*,*bad input*"
      run racecheck_residency 300 compute-sanitizer --tool racecheck --print-limit 50 --error-exitcode 9 "${build}/tests/test_cuda_residency" -tc="*HND host layout*"
      run memcheck_attention 300 compute-sanitizer --tool memcheck --error-exitcode 9 "${build}/tests/test_cuda_attention" -tc="*merge*,split-KV*"
      run racecheck_attention 300 compute-sanitizer --tool racecheck --error-exitcode 9 "${build}/tests/test_cuda_attention" -tc="split-KV*"
      run memcheck_prefill 300 compute-sanitizer --tool memcheck --error-exitcode 9 "${build}/tests/test_cuda_prefill" -tc="*chunked*"
      run memcheck_engine_example 300 compute-sanitizer --tool memcheck --error-exitcode 9 "${build}/examples/02_engine_integration" --quiet --prompt-scale 0.1 ;;
    examples)
      for e in "${build}"/examples/[0-9][0-9]_*; do [[ -x "$e" && -f "$e" ]] && run "$(basename "$e")" 300 "$e"; done ;;
    bench:*)
      spec="${what#bench:}"
      name="${spec%%:*}"
      flags=""
      [[ "${spec}" == *:* ]] && flags="${spec#*:}"
      # shellcheck disable=SC2086
      run "${name}" 400 "${build}/bench/${name}" ${flags} ;;
  esac
done
echo "---- summary ----"
cat "${summary}"
