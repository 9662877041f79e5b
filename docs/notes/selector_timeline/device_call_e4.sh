#!/usr/bin/env bash
# One device call for the next session (carry build-carry/e4 and build-carry/e5):
# per-tile timelines of main's register kernel (e5), then the branch wip/persistent-static
# (persistent register kernel between 3 and 6 waves; binaries in e4) against main 7c511d7 (base):
# tests, sanitizers, benchmarks, decode step, examples.
d=build-carry/e4
export LD_LIBRARY_PATH=$d/carry-lib:${LD_LIBRARY_PATH:-}
T0=$(date +%s)
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | tee $OUT/gpu.txt
r() { local n=$1 lim=$2; shift 2; local left=$(( 420 - ($(date +%s) - T0) )); if (( left < 15 )); then echo "$n skipped (time)"; return; fi; (( lim > left )) && lim=$left; local t0=$(date +%s); timeout $lim "$@" > $OUT/$n.log 2>&1; echo "$n rc=$? $(( $(date +%s)-t0 ))s: $(grep -E 'test cases:|ERROR SUMMARY|RACECHECK SUMMARY' $OUT/$n.log | tail -2 | tr '\n' ' ')"; }
r tiles 40 build-carry/e5/tiles; cat $OUT/tiles.log
r tiles_nocompute 40 build-carry/e5/tiles_nocompute; cat $OUT/tiles_nocompute.log
r test_selector 70 $d/tests/test_cuda_selector
grep -E "ERROR|FAILED|\[selector\]|cluster size 5" $OUT/test_selector.log | grep -v "code for this device" | head -12
F='BM_(Stage1/cluster/batch:(1|16|64|128)/hkv:(2|8)/ctx:(32768|131072)|Select/cluster/batch:(16|64|128)/hkv:(2|8)/ctx:131072)/'
for rep in 1 2; do
r new_$rep 30 $d/bench/bench_selector --benchmark_filter="$F" --benchmark_min_time=0.03 --benchmark_counters_tabular=true
r base_$rep 30 $d/base/bench_selector_base --benchmark_filter="$F" --benchmark_min_time=0.03 --benchmark_counters_tabular=true
done
grep -E "ceiling" $OUT/new_1.log | head -1
echo "shape base_1 new_1 base_2 new_2 (us) | new_2 pct_ceiling"
paste <(grep -E "^BM_" $OUT/base_1.log | awk '{print $1, $2}') <(grep -E "^BM_" $OUT/new_1.log | awk '{print $2}') <(grep -E "^BM_" $OUT/base_2.log | awk '{print $2}') <(grep -E "^BM_" $OUT/new_2.log | awk '{print $2, $9}') | sed 's#/manual_time##; s#/cluster/# #'
r test_decode_step 60 $d/tests/test_cuda_decode_step
r dstep_new 45 $d/bench/bench_decode_step --benchmark_counters_tabular=true --slots_per_head=0
r dstep_base 45 $d/base/bench_decode_step_base --benchmark_counters_tabular=true --slots_per_head=0
grep -E '^decode_step' $OUT/dstep_base.log | awk '{print "base", $1, $2, $3}'; grep -E '^decode_step' $OUT/dstep_new.log | awk '{print "new ", $1, $2, $3}'
r ex01 20 $d/examples/01_decode_walkthrough
r ex02 20 $d/examples/02_engine_integration
r memcheck 40 compute-sanitizer --tool memcheck --error-exitcode 9 $d/tests/test_cuda_selector -tc="*bad arguments*,*incremental*,*ragged*,*pinned*,*persistent*"
r racecheck 90 compute-sanitizer --tool racecheck --error-exitcode 9 $d/tests/test_cuda_selector -tc="*bad arguments*,*ragged*"
echo "total $(( $(date +%s) - T0 ))s"
cd $OUT && tar czf all.tgz *.log gpu.txt && rm -f *.log
