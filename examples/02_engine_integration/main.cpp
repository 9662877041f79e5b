// 02_engine_integration: how an inference engine integrates nosa.
//
// Who owns what:
//   the engine   the model (here: random q/k/v/bias/o projections of a toy hidden state), its
//                scheduler (requests waiting, running, finished), the prefill computation of a
//                prompt's K/V/bias, and ALL memory: it asks Decoder::sizes() once and allocates
//                the device workspace (cudaMalloc) and the pool (pinned mapped host memory).
//   nosa         per layer: the selector state (compressed keys and scores), the GPU slot cache,
//                the host pool's pages and page table, the block selection, the transfers of
//                missing blocks and the sparse attention. It maps the engine's SequenceIds to its
//                sequence slots.
// Calls:
//   a request joins    add_sequence(id); begin_prefill(id, n); prefill_layer(id, l, k, v, bias)
//                      for l = 0..L-1; end_prefill(id)
//   every decode step  begin_step(ids, batch)  (host bookkeeping, outside any graph)
//                      layer_step(l, q, k, v, bias, o, lse) for l = 0..L-1  (device work only:
//                      capturable; this example captures the loop once per batch size)
//                      end_step()
//   a request leaves   drop_sequence(id)
//
// With CUDA and a GPU (engine.cu) it runs that loop for requests that join and leave, once with
// eager calls and once replaying CUDA graphs, and checks that both give bit-identical outputs.
// Without a GPU it prints the plan and exits 0 (the example stays green in CI).
#include <nosa/config.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>

#if defined(NOSA_WITH_CUDA) && NOSA_WITH_CUDA
#include "engine.h"
#endif

int main(int argc, char** argv) {
  bool verbose = true;
  double prompt_scale = 1.0;  // --prompt-scale X: shorter prompts (quick runs under compute-sanitizer)
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--quiet") == 0) verbose = false;
    else if (std::strcmp(argv[i], "--prompt-scale") == 0 && i + 1 < argc) prompt_scale = std::atof(argv[++i]);
    else {
      std::fprintf(stderr, "usage: %s [--quiet] [--prompt-scale X]\n", argv[0]);
      return 2;
    }
  }
  if (!(prompt_scale > 0 && prompt_scale <= 1)) {
    std::fprintf(stderr, "--prompt-scale must be in (0, 1]\n");
    return 2;
  }
#if defined(NOSA_WITH_CUDA) && NOSA_WITH_CUDA
  if (engine_demo::gpu_available()) return engine_demo::run(verbose, prompt_scale);
  std::printf("02_engine_integration: built with CUDA, but no GPU is present.\n");
#else
  std::printf("02_engine_integration: built without CUDA.\n");
#endif
  std::printf(
      "On a GPU this example would:\n"
      "  1. size the memory: Decoder<bf16, Geometry<64,128,8,kNHD>, NosaSelector, ZeroCopyGather>::sizes(config)\n"
      "     -> the engine allocates device_bytes with cudaMalloc and pool_bytes as pinned mapped host memory;\n"
      "  2. admit requests while sequence slots are free: add_sequence, begin_prefill, prefill_layer per layer\n"
      "     (K/V/bias from the engine's projections), end_prefill;\n"
      "  3. decode: begin_step(ids) ; layer_step(l, ...) for each layer ; end_step(), the layer loop captured\n"
      "     once per batch size as a CUDA graph and replayed, checked bit for bit against eager calls;\n"
      "  4. retire finished requests with drop_sequence, so that waiting ones can join.\n"
      "Nothing to run here: exit 0.\n");
  return 0;
}
