// 01_decode_walkthrough: a multi-layer, multi-step decode of a ragged batch through the host
// (CPU) reference of nosa, no GPU needed.
//
// What it shows, per step and in a final summary:
//   - locality: how many selected blocks changed since the previous step, for NOSA and for
//     InfLLM-V2 on the same inputs, and the mean overlap fraction. Changed blocks are exactly what
//     an offloaded KV cache must move over PCIe, so this is why NOSA offloads well;
//   - accuracy: the relative L2 difference of each sparse output from its dense counterpart
//     (NOSA vs dense attention with the bias, InfLLM-V2 vs dense attention without it), and
//     between the two sparse outputs;
//   - the offload recipe: attend the blocks that were already resident (selected last step) and
//     the newly transferred blocks separately, merge the partials by their lse, and get the same
//     output as attending the whole selection.
// It verifies itself (selection sizes, forced blocks, finite outputs, the merge, and that a
// sparse step whose budget covers every block equals dense attention) and exits nonzero on any
// failure.
//
// Flags: --steps N --batch N --layers N --min-context N --max-context N --rho R --group G
//        --head-dim D --threads N --seed S --quiet --host
//
// Built with CUDA (NOSA_WITH_CUDA=1) and run where a GPU is present, it runs the GPU path instead
// (gpu_path.cu: nosa::Decoder with the KV cache offloaded, checked against this host reference;
// G 8, D 128, contexts 8K-32K unless --min-context/--max-context are given). --host forces the
// host path.
#include <nosa/host.h>

#if defined(NOSA_WITH_CUDA) && NOSA_WITH_CUDA
#include "gpu_path.h"
#endif

#include "../common/synthetic.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

namespace {

using nosa::SelectorKind;
using nosa::SequenceId;
using nosa::host::KVCache;
using nosa::host::StepOptions;
using Real = float;  // the accumulation type of the host reference used here

struct Options {
  int steps = 32;
  int batch = 4;
  int layers = 2;
  long long min_context = 4096;
  long long max_context = 16384;
  double rho = 0.95;  // query drift per step (see SyntheticConfig::rho for measured overlaps)
  int group = 4;
  int head_dim = 64;
  int threads = 0;
  unsigned long long seed = 1;
  bool quiet = false;
  bool host = false;            // --host: the host path even when a GPU is present
  bool context_given = false;   // --min-context / --max-context given
};

[[noreturn]] void usage(const char* argv0, const char* bad) {
  std::fprintf(stderr,
               "%s%s%s"
               "usage: %s [--steps N] [--batch N] [--layers N] [--min-context N] [--max-context N]\n"
               "          [--rho R] [--group G] [--head-dim D] [--threads N] [--seed S] [--quiet] [--host]\n",
               bad ? "bad or unknown argument: " : "", bad ? bad : "", bad ? "\n" : "", argv0);
  std::exit(2);
}

Options parse(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto value = [&]() -> const char* {
      if (i + 1 >= argc) usage(argv[0], argv[i]);
      return argv[++i];
    };
    if (a == "--steps") o.steps = std::atoi(value());
    else if (a == "--batch") o.batch = std::atoi(value());
    else if (a == "--layers") o.layers = std::atoi(value());
    else if (a == "--min-context") o.min_context = std::atoll(value()), o.context_given = true;
    else if (a == "--max-context") o.max_context = std::atoll(value()), o.context_given = true;
    else if (a == "--rho") o.rho = std::atof(value());
    else if (a == "--group") o.group = std::atoi(value());
    else if (a == "--head-dim") o.head_dim = std::atoi(value());
    else if (a == "--threads") o.threads = std::atoi(value());
    else if (a == "--seed") o.seed = std::strtoull(value(), nullptr, 10);
    else if (a == "--quiet") o.quiet = true;
    else if (a == "--host") o.host = true;
    else if (a == "--help" || a == "-h") usage(argv[0], nullptr);
    else usage(argv[0], argv[i]);
  }
  if (o.steps < 1 || o.batch < 1 || o.layers < 1 || o.min_context < 1 || o.max_context < o.min_context ||
      o.group < 1 || o.head_dim < 1 || o.threads < 0 || !(o.rho >= 0 && o.rho <= 1))
    usage(argv[0], "(values out of range)");
  return o;
}

// Counts failed self-checks and prints the first few.
struct Checker {
  int failures = 0;
  void expect(bool ok, const std::string& what) {
    if (ok) return;
    if (++failures <= 10) std::fprintf(stderr, "CHECK FAILED: %s\n", what.c_str());
  }
};

// Sum of squared differences and of squared reference values, for relative L2.
struct L2 {
  double diff = 0, ref = 0;
  void add(const std::vector<Real>& a, const std::vector<Real>& b) {
    for (size_t i = 0; i < a.size(); ++i) {
      const double d = static_cast<double>(a[i]) - b[i];
      diff += d * d;
      ref += static_cast<double>(b[i]) * b[i];
    }
  }
  double rel() const { return ref > 0 ? std::sqrt(diff / ref) : 0.0; }
};

// Validates one selection against DESIGN.md section 2's structural rules.
void check_selection(Checker& check, const std::vector<int>& I, long long T, const nosa::SelectionParams& p, int B,
                     const char* who) {
  const int nb = nosa::detail::num_blocks(T, B);
  const int cur = nb - 1;
  bool ok = static_cast<int>(I.size()) == std::min(p.budget, nb);
  for (size_t i = 0; i < I.size() && ok; ++i) ok = I[i] >= 0 && I[i] < nb && (i == 0 || I[i - 1] < I[i]);
  for (int m = 0; m < nb && ok; ++m)
    if (nosa::detail::is_forced_block(m, cur, p.sink, p.local)) ok = std::binary_search(I.begin(), I.end(), m);
  check.expect(ok, std::string(who) + ": selection of the wrong size, unsorted, or missing a forced block at T = " +
                       std::to_string(T));
}

bool all_finite(const std::vector<Real>& v) {
  return std::all_of(v.begin(), v.end(), [](Real x) { return std::isfinite(x); });
}

}  // namespace

int main(int argc, char** argv) {
  const Options opt = parse(argc, argv);
#if defined(NOSA_WITH_CUDA) && NOSA_WITH_CUDA
  if (!opt.host && walkthrough_gpu::gpu_available()) {
    walkthrough_gpu::GpuOptions g;
    g.steps = opt.steps;
    g.batch = opt.batch;
    g.layers = opt.layers;
    if (opt.context_given) g.min_context = opt.min_context, g.max_context = opt.max_context;
    g.rho = opt.rho;
    g.seed = opt.seed;
    g.quiet = opt.quiet;
    return walkthrough_gpu::run_gpu_path(g);
  }
  if (!opt.host) std::printf("(built with CUDA, but no GPU is present: running the host path)\n");
#endif
  const auto t_start = std::chrono::steady_clock::now();

  // ---- Model geometry and selection parameters (the NOSA release defaults). ----
  constexpr int kBlock = 64;
  const int Hkv = 2, G = opt.group, D = opt.head_dim, Hq = Hkv * G;
  const nosa::Dims dims{kBlock, D, G, nosa::HeadLayout::kNHD};
  const nosa::SelectionParams params;  // c=32, s=16, sink=1, local=16, qk=33, budget=64

  nosa_examples::SyntheticConfig scfg;
  scfg.num_layers = opt.layers;
  scfg.num_kv_heads = Hkv;
  scfg.group_size = G;
  scfg.head_dim = D;
  scfg.block_size = kBlock;
  scfg.rho = opt.rho;
  scfg.seed = opt.seed;
  nosa_examples::SyntheticTrace trace(scfg);

  std::printf("nosa %d.%d.%d decode walkthrough (host reference, %s accumulation)\n", NOSA_VERSION_MAJOR,
              NOSA_VERSION_MINOR, NOSA_VERSION_PATCH, sizeof(Real) == 4 ? "fp32" : "fp64");
  std::printf("  layers %d, batch %d, Hkv %d, G %d, D %d, B %d | window %d stride %d sink %d local %d "
              "query-aware %d budget %d | AR(1) rho %.3f, seed %llu\n",
              opt.layers, opt.batch, Hkv, G, D, kBlock, params.window, params.stride, params.sink, params.local,
              params.query_aware, params.budget, opt.rho, opt.seed);

  // ---- One KV cache per layer; a ragged batch of prompts. ----
  std::vector<KVCache<Real>> caches;
  for (int l = 0; l < opt.layers; ++l) caches.emplace_back(Hkv, dims, params);
  std::vector<SequenceId> batch;
  std::vector<long long> prompt_lengths;
  nosa_examples::Rng len_rng(nosa_examples::mix_seed(opt.seed, 99));
  std::printf("  prompts:");
  for (int b = 0; b < opt.batch; ++b) {
    const SequenceId id = 100 + b;
    const double frac = opt.batch > 1 ? static_cast<double>(b) / (opt.batch - 1) : 0.0;
    long long len = opt.min_context + static_cast<long long>(frac * (opt.max_context - opt.min_context));
    len -= static_cast<long long>(len_rng.next() % 61);  // ragged: not a multiple of the block size
    len = std::max(1LL, len);
    trace.add_sequence(id, len);
    batch.push_back(id);
    prompt_lengths.push_back(len);
    std::printf(" %lld", len);
  }
  std::printf(" tokens\n");

  // Append each prompt in chunks; the compressed keys are maintained incrementally as it goes.
  Checker check;
  {
    std::vector<Real> k, v, bias;
    const long long chunk = 2048;
    for (int l = 0; l < opt.layers; ++l) {
      for (int b = 0; b < opt.batch; ++b) {
        const SequenceId id = batch[b];
        nosa::Status s = caches[l].add_sequence(id);
        check.expect(s.ok(), "add_sequence: " + s.to_string());
        for (long long first = 0; first < prompt_lengths[b]; first += chunk) {
          const long long n = std::min(chunk, prompt_lengths[b] - first);
          k.resize(static_cast<size_t>(n) * Hkv * D);
          v.resize(k.size());
          bias.resize(static_cast<size_t>(n) * Hkv);
          trace.tokens(id, l, first, n, k.data(), v.data(), bias.data());
          s = caches[l].append(id, n, k.data(), v.data(), bias.data());
          check.expect(s.ok(), "append prompt: " + s.to_string());
        }
      }
    }
  }
  const double prefill_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t_start).count();

  // ---- Decode steps. ----
  const size_t heads_total = static_cast<size_t>(opt.layers) * opt.batch * Hkv;  // (layer, seq, kv head)
  std::vector<std::vector<int>> prev_nosa(heads_total), prev_infllm(heads_total);
  const StepOptions nosa_opt = StepOptions::of<nosa::NosaSelector>(opt.threads);
  const StepOptions infllm_opt = StepOptions::of<nosa::InfllmV2Selector>(opt.threads);
  const StepOptions dense_bias_opt = StepOptions::of<nosa::DenseSelector<true>>(opt.threads);
  const StepOptions dense_plain_opt = StepOptions::of<nosa::DenseSelector<false>>(opt.threads);

  double sum_overlap_nosa = 0, sum_overlap_infllm = 0;
  long long sum_changed_nosa = 0, sum_changed_infllm = 0, compared_heads = 0;
  L2 total_nosa, total_infllm, total_between;
  double worst_merge = 0;

  std::vector<Real> q(static_cast<size_t>(opt.batch) * Hq * D), o_nosa(q.size()), o_infllm(q.size()),
      o_dense_b(q.size()), o_dense(q.size());
  std::vector<Real> lse_nosa(static_cast<size_t>(opt.batch) * Hq), lse_infllm(lse_nosa.size()),
      lse_dense_b(lse_nosa.size()), lse_dense(lse_nosa.size());
  std::vector<Real> k1(static_cast<size_t>(Hkv) * D), v1(k1.size()), b1(Hkv);

  if (!opt.quiet)
    std::printf("\n step | tokens (first..last) | NOSA changed  overlap | InfLLM-V2 changed  overlap | "
                "relL2 NOSA/dense+b  InfLLM/dense  NOSA/InfLLM\n");
  for (int step = 0; step < opt.steps; ++step) {
    // The current token of every sequence enters every layer's cache, and queries drift.
    for (SequenceId id : batch) {
      trace.advance(id);
      for (int l = 0; l < opt.layers; ++l) {
        const long long T = caches[l].length(id);
        trace.tokens(id, l, T, 1, k1.data(), v1.data(), b1.data());
        const nosa::Status s = caches[l].append(id, 1, k1.data(), v1.data(), b1.data());
        check.expect(s.ok(), "append decode token: " + s.to_string());
      }
    }
    int step_changed_nosa = 0, step_changed_infllm = 0;
    double step_overlap_nosa = 0, step_overlap_infllm = 0;
    L2 l2_nosa, l2_infllm, l2_between;
    for (int l = 0; l < opt.layers; ++l) {
      for (int b = 0; b < opt.batch; ++b) trace.queries(batch[b], l, q.data() + static_cast<size_t>(b) * Hq * D);
      std::vector<std::vector<int>> sel_nosa, sel_infllm;
      nosa::Status s = nosa::host::decode_step(caches[l], batch, q.data(), o_nosa.data(), lse_nosa.data(), nosa_opt, &sel_nosa);
      check.expect(s.ok(), "decode_step NOSA: " + s.to_string());
      s = nosa::host::decode_step(caches[l], batch, q.data(), o_infllm.data(), lse_infllm.data(), infllm_opt, &sel_infllm);
      check.expect(s.ok(), "decode_step InfLLM-V2: " + s.to_string());
      s = nosa::host::decode_step(caches[l], batch, q.data(), o_dense_b.data(), lse_dense_b.data(), dense_bias_opt);
      check.expect(s.ok(), "decode_step dense+bias: " + s.to_string());
      s = nosa::host::decode_step(caches[l], batch, q.data(), o_dense.data(), lse_dense.data(), dense_plain_opt);
      check.expect(s.ok(), "decode_step dense: " + s.to_string());
      check.expect(all_finite(o_nosa) && all_finite(o_infllm) && all_finite(o_dense_b) && all_finite(o_dense) &&
                       all_finite(lse_nosa) && all_finite(lse_infllm),
                   "non-finite attention output at step " + std::to_string(step));
      l2_nosa.add(o_nosa, o_dense_b);
      l2_infllm.add(o_infllm, o_dense);
      l2_between.add(o_nosa, o_infllm);

      for (int b = 0; b < opt.batch; ++b) {
        const long long T = caches[l].length(batch[b]);
        for (int h = 0; h < Hkv; ++h) {
          const size_t i = static_cast<size_t>(b) * Hkv + h;
          const size_t slot = (static_cast<size_t>(l) * opt.batch + b) * Hkv + h;
          check_selection(check, sel_nosa[i], T, params, kBlock, "NOSA");
          check_selection(check, sel_infllm[i], T, params, kBlock, "InfLLM-V2");
          if (step > 0) {
            int changed_n = 0, changed_i = 0;
            step_overlap_nosa += nosa_examples::overlap_fraction(prev_nosa[slot], sel_nosa[i], &changed_n);
            step_overlap_infllm += nosa_examples::overlap_fraction(prev_infllm[slot], sel_infllm[i], &changed_i);
            step_changed_nosa += changed_n;
            step_changed_infllm += changed_i;

            // The offload recipe on layer 0: resident blocks (selected last step) and newly moved
            // blocks are attended separately and merged by lse; it must equal the whole step.
            if (l == 0) {
              std::vector<int> resident, moved;
              for (int m : sel_nosa[i])
                (std::binary_search(prev_nosa[slot].begin(), prev_nosa[slot].end(), m) ? resident : moved).push_back(m);
              const auto& hs = caches[l].head(batch[b], h);
              const Real* qg = q.data() + i * G * D;
              std::vector<Real> oa(static_cast<size_t>(G) * D), ob(oa.size()), om(oa.size());
              std::vector<Real> la(G), lb(G), lm(G);
              nosa::host::attend_blocks<Real>(qg, G, D, hs.keys.data(), D, hs.values.data(), D, hs.bias.data(), 1, T,
                                              kBlock, resident, oa.data(), la.data());
              nosa::host::attend_blocks<Real>(qg, G, D, hs.keys.data(), D, hs.values.data(), D, hs.bias.data(), 1, T,
                                              kBlock, moved, ob.data(), lb.data());
              nosa::host::merge_partials<Real>(G, D, oa.data(), la.data(), ob.data(), lb.data(), om.data(), lm.data());
              double err = 0, scale = 1e-30;
              for (int x = 0; x < G * D; ++x) {
                err = std::max(err, std::fabs(static_cast<double>(om[x]) - o_nosa[i * G * D + x]));
                scale = std::max(scale, std::fabs(static_cast<double>(o_nosa[i * G * D + x])));
              }
              for (int g = 0; g < G; ++g) err = std::max(err, std::fabs(static_cast<double>(lm[g]) - lse_nosa[i * G + g]));
              worst_merge = std::max(worst_merge, err / std::max(1.0, scale));
            }
          }
          prev_nosa[slot] = sel_nosa[i];
          prev_infllm[slot] = sel_infllm[i];
        }
      }
    }
    total_nosa.diff += l2_nosa.diff;
    total_nosa.ref += l2_nosa.ref;
    total_infllm.diff += l2_infllm.diff;
    total_infllm.ref += l2_infllm.ref;
    total_between.diff += l2_between.diff;
    total_between.ref += l2_between.ref;
    const long long first_T = caches[0].length(batch.front()), last_T = caches[0].length(batch.back());
    if (step > 0) {
      sum_overlap_nosa += step_overlap_nosa;
      sum_overlap_infllm += step_overlap_infllm;
      sum_changed_nosa += step_changed_nosa;
      sum_changed_infllm += step_changed_infllm;
      compared_heads += static_cast<long long>(heads_total);
    }
    if (!opt.quiet) {
      if (step == 0)
        std::printf(" %4d | %7lld..%-7lld      |      (first step)      |        (first step)        | %12.4f  %12.4f  %11.4f\n",
                    step, first_T, last_T, l2_nosa.rel(), l2_infllm.rel(), l2_between.rel());
      else
        std::printf(" %4d | %7lld..%-7lld      | %6d  %13.3f | %8d  %16.3f | %12.4f  %12.4f  %11.4f\n", step, first_T,
                    last_T, step_changed_nosa, step_overlap_nosa / heads_total, step_changed_infllm,
                    step_overlap_infllm / heads_total, l2_nosa.rel(), l2_infllm.rel(), l2_between.rel());
    }
  }
  check.expect(worst_merge < 1e-5, "merging resident and moved partials differs from the whole step by " +
                                       std::to_string(worst_merge));

  // ---- A step whose budget covers every block is dense attention (T <= budget * B). ----
  {
    const long long T = std::min<long long>(params.budget * kBlock - 17, opt.min_context);
    KVCache<Real> small(Hkv, dims, params);
    const SequenceId id = 7;
    nosa_examples::SyntheticTrace t2(scfg);
    t2.add_sequence(id, T);
    std::vector<Real> k(static_cast<size_t>(T) * Hkv * D), v(k.size()), bias(static_cast<size_t>(T) * Hkv);
    t2.tokens(id, 0, 0, T, k.data(), v.data(), bias.data());
    check.expect(small.add_sequence(id).ok() && small.append(id, T, k.data(), v.data(), bias.data()).ok(),
                 "small cache append");
    std::vector<Real> qs(static_cast<size_t>(Hq) * D), on(qs.size()), od(qs.size()), oi(qs.size()), op(qs.size());
    std::vector<Real> ln(Hq), ld(Hq), li(Hq), lp(Hq);
    t2.queries(id, 0, qs.data());
    std::vector<std::vector<int>> sn, si;
    const bool ran = nosa::host::decode_step(small, {id}, qs.data(), on.data(), ln.data(), nosa_opt, &sn).ok() &&
                     nosa::host::decode_step(small, {id}, qs.data(), od.data(), ld.data(), dense_bias_opt).ok() &&
                     nosa::host::decode_step(small, {id}, qs.data(), oi.data(), li.data(), infllm_opt, &si).ok() &&
                     nosa::host::decode_step(small, {id}, qs.data(), op.data(), lp.data(), dense_plain_opt).ok();
    check.expect(ran, "budget >= nb steps ran");
    const int nb = nosa::detail::num_blocks(T, kBlock);
    check.expect(static_cast<int>(sn[0].size()) == nb && static_cast<int>(si[0].size()) == nb,
                 "budget >= nb selects every block");
    check.expect(on == od && ln == ld, "NOSA with budget >= nb equals dense attention with bias");
    check.expect(oi == op && li == lp, "InfLLM-V2 with budget >= nb equals dense attention without bias");
    std::printf("\nbudget >= nb check (T = %lld, nb = %d <= budget %d): NOSA == dense+bias: %s, "
                "InfLLM-V2 == dense: %s\n",
                T, nb, params.budget, on == od && ln == ld ? "yes (bit-exact)" : "NO",
                oi == op && li == lp ? "yes (bit-exact)" : "NO");
  }

  // ---- Summary. ----
  const double total_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t_start).count();
  std::printf("\nsummary over %d steps x %d layers x %d sequences x %d KV heads (budget %d blocks of %d tokens):\n",
              opt.steps, opt.layers, opt.batch, Hkv, params.budget, kBlock);
  if (compared_heads > 0) {
    const double per_head_nosa = static_cast<double>(sum_changed_nosa) / compared_heads;
    const double per_head_infllm = static_cast<double>(sum_changed_infllm) / compared_heads;
    // What an offloaded bf16 cache moves per (sequence, layer, KV head) per step: K and V of each
    // changed block.
    const double block_bytes = 2.0 * kBlock * D * 2;
    std::printf("  mean overlap with the previous step:   NOSA %.3f   InfLLM-V2 %.3f\n",
                sum_overlap_nosa / compared_heads, sum_overlap_infllm / compared_heads);
    std::printf("  changed blocks per head per step:       NOSA %.2f    InfLLM-V2 %.2f   (of %d selected)\n",
                per_head_nosa, per_head_infllm, params.budget);
    std::printf("  bf16 K+V to move per head per step:     NOSA %.1f KiB  InfLLM-V2 %.1f KiB\n",
                per_head_nosa * block_bytes / 1024, per_head_infllm * block_bytes / 1024);
  }
  std::printf("  relative L2 of outputs: NOSA vs dense+bias %.4f, InfLLM-V2 vs dense %.4f, NOSA vs InfLLM-V2 %.4f\n",
              total_nosa.rel(), total_infllm.rel(), total_between.rel());
  std::printf("  (NOSA and InfLLM-V2 differ mostly because NOSA's attention adds the agnostic score b_t)\n");
  std::printf("  resident + moved partials merged by lse vs whole step: max rel. error %.2e\n", worst_merge);
  std::printf("  time: prompts %.2f s, total %.2f s\n", prefill_s, total_s);
  if (check.failures > 0) {
    std::printf("FAILED: %d self-check(s) failed\n", check.failures);
    return 1;
  }
  std::printf("all self-checks passed\n");
  return 0;
}
