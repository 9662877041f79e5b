// 02_engine_integration: the toy engine's entry point (engine.cu, compiled with CUDA only).
#pragma once

namespace engine_demo {

/// True when a CUDA device can be used.
bool gpu_available();

/// Runs the toy engine twice in lockstep (eager layer_step calls, and the layer loop captured in
/// a CUDA graph per batch size and replayed) and compares them; returns the exit code.
/// prompt_scale multiplies every prompt length (e.g. 0.1 for a quick run under compute-sanitizer).
int run(bool verbose, double prompt_scale);

}  // namespace engine_demo
