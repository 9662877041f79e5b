#!/usr/bin/env bash
# per-tile timeline of the register cluster kernel (main's kernel, instrumented), with and without products
d=build-carry/e5
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | tee $OUT/gpu.txt
timeout 60 $d/tiles 2>&1 | tee $OUT/tiles.log
timeout 60 $d/tiles_nocompute 2>&1 | tee $OUT/tiles_nocompute.log
