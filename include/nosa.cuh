// nosa: umbrella header (host + CUDA). Host-only code can include <nosa/host.h> instead.
#pragma once

#include <nosa/host.h>

#include <nosa/attention.cuh>
#include <nosa/decode_step.cuh>
#include <nosa/eviction_head.cuh>
#include <nosa/host_pool.h>
#include <nosa/prefill.cuh>
#include <nosa/residency.cuh>
#include <nosa/selector.cuh>
#include <nosa/transfer_policy.h>
#include <nosa/workspace.h>
