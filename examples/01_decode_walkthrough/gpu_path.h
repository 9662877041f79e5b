// 01_decode_walkthrough, GPU path: the same walkthrough through nosa::Decoder on the GPU (only
// compiled when the example is built with CUDA; main.cpp picks it when a GPU is present).
#pragma once

namespace walkthrough_gpu {

struct GpuOptions {
  int steps = 32;           ///< decode steps
  int batch = 4;            ///< sequences
  int layers = 2;           ///< attention layers of the synthetic model
  long long min_context = 8192;
  long long max_context = 32768;
  double rho = 0.95;        ///< AR(1) query drift per step
  int check_every = 8;      ///< steps 0, check_every, 2*check_every, ... and the last are checked
  unsigned long long seed = 1;
  bool quiet = false;
};

/// True when a CUDA device can be used.
bool gpu_available();

/// Runs the GPU walkthrough; returns the process exit code (0 = every check passed).
int run_gpu_path(const GpuOptions& options);

}  // namespace walkthrough_gpu
