// nosa: host-only umbrella header. Everything here compiles with a plain C++17 compiler,
// without CUDA: the reference implementation of DESIGN.md section 2 and the CPU backend.
#pragma once

#include <nosa/config.h>
#include <nosa/geometry.h>
#include <nosa/params.h>
#include <nosa/status.h>
#include <nosa/types.h>
#include <nosa/host/attention.h>
#include <nosa/host/decode.h>
#include <nosa/host/kv_cache.h>
#include <nosa/host/selector.h>
