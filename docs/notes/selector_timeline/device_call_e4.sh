#!/usr/bin/env bash
# static persistent register kernel between 3 and 6 waves (working tree) vs main 7c511d7 (base)
d=build-carry/e4
export LD_LIBRARY_PATH=$d/carry-lib:${LD_LIBRARY_PATH:-}
T0=$(date +%s)
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | tee $OUT/gpu.txt
r() { local n=$1 lim=$2; shift 2; local left=$(( 100 - ($(date +%s) - T0) )); if (( left < 10 )); then echo "$n skipped (time)"; return; fi; (( lim > left )) && lim=$left; local t0=$(date +%s); timeout $lim "$@" > $OUT/$n.log 2>&1; echo "$n rc=$? $(( $(date +%s)-t0 ))s: $(grep -E 'test cases:|ERROR SUMMARY' $OUT/$n.log | tail -2 | tr '\n' ' ')"; }
r test_selector 60 $d/tests/test_cuda_selector
grep -E "ERROR|FAILED|\[selector\]|cluster size 5" $OUT/test_selector.log | grep -v "code for this device" | head -12
F='BM_Stage1/cluster/batch:(16|64|128)/hkv:(2|8)/ctx:(32768|131072)/'
r new 15 $d/bench/bench_selector --benchmark_filter="$F" --benchmark_min_time=0.02 --benchmark_counters_tabular=true
r base 15 $d/base/bench_selector_base --benchmark_filter="$F" --benchmark_min_time=0.02 --benchmark_counters_tabular=true
grep -E "ceiling" $OUT/new.log | head -1
paste <(grep -E "^BM_" $OUT/base.log | awk '{print $1, $2}') <(grep -E "^BM_" $OUT/new.log | awk '{print $2, $9}') | sed 's#/manual_time##; s#/cluster/# #'
echo "total $(( $(date +%s) - T0 ))s"
cd $OUT && tar czf all.tgz *.log gpu.txt && rm -f *.log
