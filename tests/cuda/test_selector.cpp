// GPU tests of nosa::DeviceSelector against the host reference (host::select_blocks,
// host::CompressedState): compressed state bit for bit, selections exactly (fp32 near-ties in the
// stage-1 scores are detected with a float64 recomputation, skipped and counted), argument checks.
#include "cuda/gpu_test_util.h"
#include "cuda/selector_launch.h"

#include <nosa/host/selector.h>
#include <nosa/types.h>

#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <random>
#include <vector>

using nosa_test::SelCase;
using nosa_test::SelConfig;
using nosa_test::SelectorHandle;

namespace {

std::uint16_t to_bits(float x, bool fp16) { return fp16 ? nosa::to_float16(x).bits : nosa::to_bfloat16(x).bits; }
float from_bits(std::uint16_t b, bool fp16) {
  return fp16 ? nosa::to_float(nosa::float16_t{b}) : nosa::to_float(nosa::bfloat16_t{b});
}

/// One sequence: token-major keys [T][Hkv][D] (2-byte bits) and bias [T][Hkv], with structure so
/// that stage-1 scores spread out (per-block amplitude along a per-head direction).
struct Seq {
  std::vector<std::uint16_t> k;
  std::vector<float> bias;
  long long T = 0;
};

struct Model {
  SelCase c;
  int H = 2;
  std::vector<std::vector<float>> dir;  // [H][D]

  Model(const SelCase& cs, int hkv, unsigned seed) : c(cs), H(hkv) {
    std::mt19937 rng(seed);
    std::normal_distribution<float> n01(0.f, 1.f);
    dir.assign(H, std::vector<float>(c.head_dim));
    for (auto& v : dir)
      for (float& x : v) x = n01(rng);
  }
  Seq make_seq(long long T, unsigned seed) const {
    std::mt19937 rng(seed);
    std::normal_distribution<float> n01(0.f, 1.f);
    std::uniform_real_distribution<float> amp(-1.f, 3.f);
    Seq s;
    s.T = T;
    s.k.resize(static_cast<size_t>(T) * H * c.head_dim);
    s.bias.resize(static_cast<size_t>(T) * H);
    std::vector<float> a;
    for (long long t = 0; t < T; ++t) {
      const long long m = t / c.block_size;
      while (static_cast<long long>(a.size()) <= m * H + H) a.push_back(amp(rng));
      for (int h = 0; h < H; ++h) {
        const float am = a[m * H + h];
        for (int d = 0; d < c.head_dim; ++d)
          s.k[(static_cast<size_t>(t) * H + h) * c.head_dim + d] = to_bits(0.7f * n01(rng) + 0.6f * am * dir[h][d], c.fp16);
        s.bias[static_cast<size_t>(t) * H + h] = 0.8f * std::sin(t / 300.f + h) + 0.3f * n01(rng);
      }
    }
    return s;
  }
  std::vector<std::uint16_t> make_q(int batch, unsigned seed) const {
    std::mt19937 rng(seed);
    std::normal_distribution<float> n01(0.f, 1.f);
    const int G = c.group_size, D = c.head_dim;
    std::vector<std::uint16_t> q(static_cast<size_t>(batch) * H * G * D);
    for (int i = 0; i < batch; ++i)
      for (int h = 0; h < H; ++h)
        for (int g = 0; g < G; ++g)
          for (int d = 0; d < D; ++d)
            q[((static_cast<size_t>(i) * H + h) * G + g) * D + d] = to_bits(0.15f * (dir[h][d] + n01(rng)), c.fp16);
    return q;
  }
};

/// Host compressed state of (seq, head) over its first T tokens, keys rounded to the store type.
struct HostHead {
  std::vector<float> keys;  // [nc][D], already rounded to the store type
  std::vector<unsigned char> key_bytes;
  std::vector<float> cbias;
  int nc = 0;
};

HostHead host_head(const SelCase& c, int H, const Seq& s, int h, long long T, const nosa::SelectionParams& sp) {
  const int D = c.head_dim;
  std::vector<float> k(static_cast<size_t>(T) * D), b(T);
  for (long long t = 0; t < T; ++t) {
    for (int d = 0; d < D; ++d) k[t * D + d] = from_bits(s.k[(static_cast<size_t>(t) * H + h) * D + d], c.fp16);
    b[t] = s.bias[static_cast<size_t>(t) * H + h];
  }
  nosa::host::CompressedState<float> cs(D, sp.window, sp.stride);
  cs.update(k.data(), D, b.data(), 1, T);
  HostHead out;
  out.nc = cs.count();
  out.cbias.assign(cs.scores(), cs.scores() + out.nc);
  out.keys.resize(static_cast<size_t>(out.nc) * D);
  for (size_t e = 0; e < out.keys.size(); ++e) {
    const float v = cs.keys()[e];
    if (c.float_store) {
      out.keys[e] = v;
      unsigned char bytes[4];
      std::memcpy(bytes, &v, 4);
      out.key_bytes.insert(out.key_bytes.end(), bytes, bytes + 4);
    } else {
      const std::uint16_t bits = to_bits(v, c.fp16);
      out.keys[e] = from_bits(bits, c.fp16);
      out.key_bytes.push_back(static_cast<unsigned char>(bits & 0xff));
      out.key_bytes.push_back(static_cast<unsigned char>(bits >> 8));
    }
  }
  return out;
}

/// float64 recomputation of the query-aware ranking: block scores P (Pq of DESIGN.md s.2, +inf
/// forced), the window each took its max from (src, -1 forced) and the block ids ranked
/// "score desc, index asc". k: where the ranking is cut (query_aware or budget, clamped).
struct Ranking {
  std::vector<double> P;
  std::vector<int> src, order;
  int k = 0;
};

Ranking rank_blocks(const SelCase& c, const nosa::SelectionParams& sp, long long T, const float* q, const HostHead& hh) {
  const int D = c.head_dim, G = c.group_size, nc = nosa::detail::num_compressed(T, sp.window, sp.stride);
  const int nb = nosa::detail::num_blocks(T, c.block_size), cur = nb - 1;
  std::vector<double> S(nc, 0.0), lg(nc);
  for (int g = 0; g < G; ++g) {
    double mx = -INFINITY;
    for (int j = 0; j < nc; ++j) {
      double dot = 0;
      for (int d = 0; d < D; ++d) dot += double(q[g * D + d]) * double(hh.keys[static_cast<size_t>(j) * D + d]);
      lg[j] = dot / std::sqrt(double(D));
      mx = std::max(mx, lg[j]);
    }
    double den = 0;
    for (int j = 0; j < nc; ++j) den += std::exp(lg[j] - mx);
    for (int j = 0; j < nc; ++j) S[j] += std::exp(lg[j] - mx) / den;
  }
  Ranking r;
  r.P.assign(nb, -INFINITY);
  r.src.assign(nb, -1);
  for (int m = 0; m < nb; ++m) {
    if (nosa::detail::is_forced_block(m, cur, sp.sink, sp.local)) {
      r.P[m] = INFINITY;
      continue;
    }
    const auto w = nosa::detail::windows_overlapping_block(m, c.block_size, sp.window, sp.stride, nc);
    for (int j = w.first; j <= w.last; ++j)
      if (S[j] > r.P[m]) r.P[m] = S[j], r.src[m] = j;
  }
  r.k = std::min(c.kind == nosa::SelectorKind::kNosa ? sp.query_aware : sp.budget, nb);
  r.order.resize(nb);
  for (int m = 0; m < nb; ++m) r.order[m] = m;
  std::sort(r.order.begin(), r.order.end(), [&](int a, int b) { return r.P[a] > r.P[b] || (r.P[a] == r.P[b] && a < b); });
  return r;
}

/// True when the k-th / (k+1)-th boundary of the query-aware ranking is a near-tie between
/// different windows (fp32 rounding could flip it). An exact tie (the same score in float64:
/// windows with the same keys, so the same fp32 score on both sides) is not one: the tie rule
/// decides it; *exact_tie says so.
bool near_tie(const SelCase& c, const nosa::SelectionParams& sp, long long T, const float* q, const HostHead& hh,
              bool* exact_tie) {
  *exact_tie = false;
  if (c.kind == nosa::SelectorKind::kDense) return false;
  const Ranking r = rank_blocks(c, sp, T, q, hh);
  if (r.k <= 0 || r.k >= static_cast<int>(r.order.size())) return false;
  const int a = r.order[r.k - 1], b = r.order[r.k];
  if (r.P[a] == r.P[b]) {
    *exact_tie = true;
    return false;
  }
  if (!std::isfinite(r.P[a]) || !std::isfinite(r.P[b]) || r.src[a] == r.src[b]) return false;
  return std::fabs(r.P[a] - r.P[b]) <= 2e-5 * std::max(std::fabs(r.P[a]), std::fabs(r.P[b]));
}

struct Tally {
  int compared = 0, skipped = 0;  ///< (entry, head) pairs: compared with the host / skipped near-ties
  int exact_ties = 0;             ///< compared pairs whose query-aware cut fell inside an exact tie
  int global = 0, cluster = 0;    ///< GPU selections compared, per stage-1 path
  int split = 0;                  ///< GPU selections compared on the split path (forced)
  int register_scan = 0;          ///< of the cluster ones: with the register-logit kernel forced
};

/// One GPU run of a step: the stage-1 path it forced and what it returned.
struct PathRun {
  nosa_test::SelPath path;
  int cluster_size;  ///< forced cluster size (0: chosen from the batch)
  int scan;          ///< SelectArgs::cluster_scan (0 auto, 2 register logits forced)
  std::vector<int> ids, counts;
};

struct PathChoice {
  nosa_test::SelPath path;
  int cluster_size, scan;
};

/// The stage-1 paths every selection check runs on the same data: auto, global, the cluster
/// path at its automatic size and at forced sizes (the smallest usable, 5 and the largest), where
/// usable: devices with clusters, 2-byte keys, sparse policies, heads that fit; and each cluster
/// run again with the register-logit kernel forced where it can run (the small batches of the
/// tests fill less than one wave, where auto keeps the shared-logit kernel). Where the split path
/// can run: at its automatic part count and forced to the smallest, a middle and the largest
/// usable one (cluster_size holds head_parts for those).
std::vector<PathChoice> paths_of(const SelectorHandle& sel, int batch) {
  using nosa_test::SelPath;
  std::vector<PathChoice> v = {{SelPath::kAuto, 0, 0}, {SelPath::kGlobal, 0, 0}};
  const std::vector<int> sizes = sel.cluster_sizes(), regs = sel.register_scan_sizes();
  auto has_regs = [&](int c) { return std::find(regs.begin(), regs.end(), c) != regs.end(); };
  if (!sizes.empty()) {
    v.push_back({SelPath::kCluster, 0, 0});
    if (has_regs(sel.cluster_size_for(batch))) v.push_back({SelPath::kCluster, 0, 2});
    std::vector<int> forced = {sizes.front()};
    if (std::find(sizes.begin(), sizes.end(), 5) != sizes.end()) forced.push_back(5);
    forced.push_back(sizes.back());
    forced.erase(std::unique(forced.begin(), forced.end()), forced.end());
    for (int c : forced) {
      v.push_back({SelPath::kCluster, c, 0});
      if (has_regs(c)) v.push_back({SelPath::kCluster, c, 2});
    }
  }
  const std::vector<int> parts = sel.split_parts();
  if (!parts.empty()) {
    v.push_back({SelPath::kSplit, 0, 0});
    std::vector<int> forced = {parts.front(), parts[parts.size() / 2], parts.back()};
    forced.erase(std::unique(forced.begin(), forced.end()), forced.end());
    for (int n : forced) v.push_back({SelPath::kSplit, n, 0});
  }
  return v;
}

/// Selects on the GPU for (slots, lens) on every path of paths_of and compares every
/// (entry, head) of each with the host; idle entries (length 0) must select nothing.
void check_select(SelectorHandle& sel, const Model& model, const nosa::SelectionParams& sp, const std::vector<const Seq*>& seqs,
                  const std::vector<int>& slots, const std::vector<int>& lens, unsigned qseed, Tally* tally,
                  bool graph = false) {
  const SelCase& c = model.c;
  const int H = model.H, G = c.group_size, D = c.head_dim, batch = static_cast<int>(slots.size());
  const int stride = c.kind == nosa::SelectorKind::kDense ? sel.max_blocks() : std::min(sp.budget, sel.max_blocks());
  const std::vector<std::uint16_t> q = model.make_q(batch, qseed);
  int max_len = 0;
  for (int l : lens) max_len = std::max(max_len, l);
  std::vector<PathRun> runs;
  for (const PathChoice& pc : paths_of(sel, batch)) {
    const nosa_test::SelPath path = pc.path;
    const int csize = pc.cluster_size;
    PathRun r{path, csize, pc.scan, {}, {}};
    sel.set_path(path, csize);
    sel.set_cluster_scan(pc.scan);
    nosa::Status st = graph ? sel.select_graph(slots, lens, max_len, q.data(), stride, 3, &r.ids, &r.counts)
                            : sel.select(slots, lens, max_len, q.data(), stride, &r.ids, &r.counts);
    REQUIRE_MESSAGE(st.ok(), "path " << int(path) << " cluster_size " << csize << ": " << st.to_string());
    nosa::Status de = sel.device_errors();
    REQUIRE_MESSAGE(de.ok(), de.to_string());
    runs.push_back(std::move(r));
  }
  sel.set_path(nosa_test::SelPath::kAuto);
  sel.set_cluster_scan(0);
  for (int i = 0; i < batch; ++i) {
    for (int h = 0; h < H; ++h) {
      const long long T = lens[i];
      if (T == 0) {
        for (const PathRun& r : runs)
          CHECK_MESSAGE(r.counts[static_cast<size_t>(i) * H + h] == 0, "idle entry " << i << " head " << h << " path "
                                                                        << int(r.path) << " cluster_size " << r.cluster_size);
        continue;
      }
      const HostHead hh = host_head(c, H, *seqs[i], h, T, sp);
      std::vector<float> qf(static_cast<size_t>(G) * D);
      for (size_t e = 0; e < qf.size(); ++e) qf[e] = from_bits(q[(static_cast<size_t>(i) * H + h) * G * D + e], c.fp16);
      const auto ref = nosa::host::select_blocks<float>(c.kind, sp, c.block_size, T, qf.data(), G, D, hh.keys.data(),
                                                        hh.cbias.data());
      bool exact_tie = false;
      if (near_tie(c, sp, T, qf.data(), hh, &exact_tie)) {
        ++tally->skipped;
        continue;
      }
      ++tally->compared;
      tally->exact_ties += exact_tie;
      for (const PathRun& r : runs) {
        const int cnt = r.counts[static_cast<size_t>(i) * H + h];
        const int* got = r.ids.data() + (static_cast<size_t>(i) * H + h) * stride;
        ++(r.path == nosa_test::SelPath::kCluster ? tally->cluster
           : r.path == nosa_test::SelPath::kSplit ? tally->split
                                                  : tally->global);
        tally->register_scan += r.scan == 2;
        const std::vector<int> g(got, got + std::max(cnt, 0));
        if (g != ref.blocks) {
          size_t at = 0;
          while (at < g.size() && at < ref.blocks.size() && g[at] == ref.blocks[at]) ++at;
          FAIL_CHECK(c.name() << " path " << (r.path == nosa_test::SelPath::kAuto     ? "auto"
                                             : r.path == nosa_test::SelPath::kGlobal ? "global"
                                             : r.path == nosa_test::SelPath::kSplit  ? "split"
                                                                                      : "cluster")
                              << " cluster_size " << r.cluster_size << " scan " << r.scan
                              << " (auto: " << sel.cluster_size_for(batch)
                              << ") entry " << i << " head " << h << " T=" << T << ": count " << cnt << " vs "
                              << ref.blocks.size() << ", first mismatch at " << at << ": gpu "
                              << (at < g.size() ? g[at] : -1) << " host "
                              << (at < ref.blocks.size() ? ref.blocks[at] : -1));
        }
      }
    }
  }
}

void check_state(SelectorHandle& sel, const Model& model, const nosa::SelectionParams& sp, const Seq& s, int slot, long long T) {
  REQUIRE(sel.token_count(slot) == T);
  for (int h = 0; h < model.H; ++h) {
    const HostHead hh = host_head(model.c, model.H, s, h, T, sp);
    std::vector<unsigned char> kb;
    std::vector<float> cb;
    sel.read_state(slot, h, hh.nc, &kb, &cb);
    CHECK_MESSAGE(kb == hh.key_bytes, model.c.name() << " slot " << slot << " head " << h << " T=" << T
                                                    << ": compressed keys differ from host (bitwise)");
    CHECK_MESSAGE(std::memcmp(cb.data(), hh.cbias.data(), cb.size() * 4) == 0,
                  model.c.name() << " slot " << slot << " head " << h << ": compressed scores differ");
  }
}

std::unique_ptr<SelectorHandle> make(const SelCase& c) {
  nosa::Status st;
  auto h = nosa_test::make_selector(c, &st);
  REQUIRE_MESSAGE(h != nullptr, st.to_string());
  return h;
}

/// A selector for case c, created for `entries` sequences (max_sequences = max_batch), H KV heads,
/// max_tokens and selection parameters sp.
std::unique_ptr<SelectorHandle> make_created(const SelCase& c, int entries, int H, long long max_tokens,
                                             const nosa::SelectionParams& sp) {
  auto sel = make(c);
  SelConfig cfg;
  cfg.max_sequences = entries, cfg.num_kv_heads = H, cfg.max_batch = entries, cfg.max_tokens = max_tokens, cfg.params = sp;
  REQUIRE(sel->create(cfg).ok());
  return sel;
}

/// The case the large-batch tests run (one is enough for grid-shape logic): NOSA, blocks of 64,
/// D 128, G 16, bf16 keys.
bool is_nosa_bf16_d128_g16(const SelCase& c) {
  return c.block_size == 64 && c.head_dim == 128 && c.group_size == 16 && c.kind == nosa::SelectorKind::kNosa &&
         !c.fp16 && !c.float_store;
}

}  // namespace

TEST_CASE("DeviceSelector: ragged batch, prompt + decode appends, every compiled case") {
  NOSA_REQUIRE_GPU();
  Tally total;
  for (const SelCase& c : nosa_test::compiled_selector_cases()) {
    for (int variant = 0; variant < 2; ++variant) {
      nosa::SelectionParams sp;
      if (variant == 1) {  // budget beyond the number of blocks, other compression shape
        sp.window = 24, sp.stride = 8, sp.sink = 2, sp.local = 3, sp.query_aware = 20, sp.budget = 200;
      }
      INFO(c.name() << " variant " << variant);
      const int H = 2;
      Model model(c, H, 1234 + variant);
      SelConfig cfg;
      cfg.max_sequences = 5, cfg.num_kv_heads = H, cfg.max_batch = 5, cfg.max_tokens = 4200, cfg.params = sp;
      auto sel = make(c);
      nosa::Status st = sel->create(cfg);
      REQUIRE_MESSAGE(st.ok(), st.to_string());
      MESSAGE(c.name() << " variant " << variant << ": " << sel->cluster_sizes().size()
                       << " usable cluster sizes, auto cluster size for batch 4: " << sel->cluster_size_for(4));
      // final lengths and prompt parts (slot 4 stays unused, slot order permuted in the batch)
      const std::vector<long long> L = {1, 50, 777, 3001};
      const std::vector<long long> prompt = {0, 30, 700, 2991};
      std::vector<Seq> seqs;
      for (int i = 0; i < 4; ++i) seqs.push_back(model.make_seq(L[i] + 4, 77 * i + variant));
      const std::vector<int> slot_of = {3, 0, 4, 1};
      std::vector<long long> len(4, 0);
      for (int i = 0; i < 4; ++i) {
        if (prompt[i] == 0) continue;
        st = sel->append_prompt(slot_of[i], prompt[i], seqs[i].k.data(), seqs[i].bias.data());
        REQUIRE_MESSAGE(st.ok(), st.to_string());
        len[i] = prompt[i];
      }
      const size_t row = static_cast<size_t>(H) * c.head_dim;
      // decode appends: each step batches the sequences that still need tokens
      for (;;) {
        std::vector<int> slots;
        std::vector<std::uint16_t> k;
        std::vector<float> b;
        for (int i = 0; i < 4; ++i)
          if (len[i] < L[i]) {
            slots.push_back(slot_of[i]);
            k.insert(k.end(), seqs[i].k.begin() + len[i] * row, seqs[i].k.begin() + (len[i] + 1) * row);
            b.insert(b.end(), seqs[i].bias.begin() + len[i] * H, seqs[i].bias.begin() + (len[i] + 1) * H);
            ++len[i];
          }
        if (slots.empty()) break;
        st = sel->append_tokens(slots, k.data(), b.data());
        REQUIRE_MESSAGE(st.ok(), st.to_string());
      }
      for (int i = 0; i < 4; ++i) check_state(*sel, model, sp, seqs[i], slot_of[i], L[i]);
      std::vector<const Seq*> ps = {&seqs[2], &seqs[0], &seqs[3], &seqs[1]};
      std::vector<int> slots = {slot_of[2], slot_of[0], slot_of[3], slot_of[1]};
      std::vector<int> lens = {int(L[2]), int(L[0]), int(L[3]), int(L[1])};
      check_select(*sel, model, sp, ps, slots, lens, 99 + variant, &total);
      // a prefill-style row: T below the tokens appended uses the first Nc(T) keys only
      lens[2] = 2500;
      check_select(*sel, model, sp, ps, slots, lens, 100 + variant, &total);
      lens[2] = int(L[3]);
      // three more decode steps, then the same step through a CUDA graph
      for (int step = 0; step < 3; ++step) {
        std::vector<std::uint16_t> k;
        std::vector<float> b;
        for (int e = 0; e < 4; ++e) {
          const Seq& s = *ps[e];
          const long long t = lens[e];
          k.insert(k.end(), s.k.begin() + t * row, s.k.begin() + (t + 1) * row);
          b.insert(b.end(), s.bias.begin() + t * H, s.bias.begin() + (t + 1) * H);
          ++lens[e];
        }
        st = sel->append_tokens(slots, k.data(), b.data());
        REQUIRE_MESSAGE(st.ok(), st.to_string());
        check_select(*sel, model, sp, ps, slots, lens, 200 + step, &total, /*graph=*/step == 2);
      }
      for (int e = 0; e < 4; ++e) check_state(*sel, model, sp, *ps[e], slots[e], lens[e]);
    }
  }
  MESSAGE("compared " << total.compared << " (entry, head) selections; skipped " << total.skipped << " near-ties");
  std::printf("[selector] ragged: compared %d (GPU runs: global/auto %d, cluster %d of which register-logit %d, split %d), near-tie skipped %d\n",
              total.compared, total.global, total.cluster, total.register_scan, total.split, total.skipped);
  CHECK(total.compared > 0);
  // sm_90 code on a device with clusters: the cluster path runs for the 2-byte sparse cases
  if (nosa_test::cluster_path_expected()) CHECK(total.cluster > 0);
  else CHECK(total.cluster == 0);
  if (nosa_test::cluster_path_expected()) CHECK(total.register_scan > 0);  // G <= 16 cases
  // the split path runs wherever the register kernel can (sm_90 code, cooperative launch)
  if (nosa_test::cluster_path_expected()) CHECK(total.split > 0);
  else CHECK(total.split == 0);
}

TEST_CASE("DeviceSelector: incremental appends equal one bulk append (bitwise)") {
  NOSA_REQUIRE_GPU();
  for (const SelCase& c : nosa_test::compiled_selector_cases()) {
    INFO(c.name());
    const int H = 2;
    Model model(c, H, 5);
    nosa::SelectionParams sp;
    SelConfig cfg;
    cfg.max_sequences = 2, cfg.num_kv_heads = H, cfg.max_batch = 2, cfg.max_tokens = 1000, cfg.params = sp;
    const long long T = 611;
    const Seq s = model.make_seq(T, 42);
    auto a = make(c);
    auto b = make(c);
    REQUIRE(a->create(cfg).ok());
    REQUIRE(b->create(cfg).ok());
    REQUIRE(b->append_prompt(1, T, s.k.data(), s.bias.data()).ok());
    // a: uneven chunks (prompt pieces and single decode tokens)
    const size_t row = static_cast<size_t>(H) * c.head_dim;
    long long t = 0;
    const long long pieces[] = {5, 1, 1, 40, 1, 17, 100, 1, 1, 3};
    for (int p = 0; t < T; p = (p + 1) % 10) {
      const long long n = std::min(pieces[p], T - t);
      if (n == 1) REQUIRE(a->append_tokens({1}, s.k.data() + t * row, s.bias.data() + t * H).ok());
      else REQUIRE(a->append_prompt(1, n, s.k.data() + t * row, s.bias.data() + t * H).ok());
      t += n;
    }
    for (int h = 0; h < H; ++h) {
      std::vector<unsigned char> ka, kb;
      std::vector<float> ca, cb;
      const int nc = nosa::detail::num_compressed(T, sp.window, sp.stride);
      a->read_state(1, h, nc, &ka, &ca);
      b->read_state(1, h, nc, &kb, &cb);
      CHECK(ka == kb);
      CHECK(std::memcmp(ca.data(), cb.data(), ca.size() * 4) == 0);
    }
    check_state(*a, model, sp, s, 1, T);
  }
}

TEST_CASE("DeviceSelector: 128K-token contexts (sampled)") {
  NOSA_REQUIRE_GPU();
  Tally total;
  for (const SelCase& c : nosa_test::compiled_selector_cases()) {
    if (!(c.block_size == 64 && c.head_dim == 128 && c.group_size == 16)) continue;  // NOSA, InfLLM-V2, dense
    INFO(c.name());
    const int H = 2;
    Model model(c, H, 9);
    nosa::SelectionParams sp;
    auto sel = make_created(c, 2, H, 131072, sp);
    if (c.kind != nosa::SelectorKind::kDense && !c.float_store) {
      // 8191 compressed keys per head: auto must take a path that keeps the logits on chip (2 jobs:
      // the split path; the cluster path where the split path is not available)
      const std::vector<int> sizes = sel->cluster_sizes();
      CHECK(sizes.empty() == !nosa_test::cluster_path_expected());
      CHECK((sel->cluster_size_for(2) > 0 || sel->split_path_for(2)) == nosa_test::cluster_path_expected());
      if (nosa_test::cluster_path_expected()) CHECK(sel->split_path_for(2));
      MESSAGE(c.name() << " 128K: auto cluster size for batch 2: " << sel->cluster_size_for(2) << "; " << sizes.size()
                       << " usable sizes, largest " << (sizes.empty() ? 0 : sizes.back()));
    }
    const Seq s0 = model.make_seq(131072, 1);
    const Seq s1 = model.make_seq(70001, 2);
    const size_t row = static_cast<size_t>(H) * c.head_dim;
    REQUIRE(sel->append_prompt(0, 100000, s0.k.data(), s0.bias.data()).ok());
    REQUIRE(sel->append_prompt(0, 31071, s0.k.data() + 100000 * row, s0.bias.data() + 100000 * H).ok());
    REQUIRE(sel->append_tokens({0}, s0.k.data() + 131071 * row, s0.bias.data() + 131071 * H).ok());
    REQUIRE(sel->append_prompt(1, 70001, s1.k.data(), s1.bias.data()).ok());
    check_state(*sel, model, sp, s0, 0, 131072);
    check_select(*sel, model, sp, {&s0, &s1}, {0, 1}, {131072, 70001}, 7, &total);
    check_select(*sel, model, sp, {&s1, &s0}, {1, 0}, {70001, 131072}, 8, &total);
  }
  std::printf("[selector] 128K: compared %d (GPU runs: global/auto %d, cluster %d of which register-logit %d, split %d), near-tie skipped %d\n",
              total.compared, total.global, total.cluster, total.register_scan, total.split, total.skipped);
  MESSAGE("128K: compared " << total.compared << ", skipped " << total.skipped << " near-ties");
}

TEST_CASE("DeviceSelector: a batch large enough for the fixed-split scan (two waves of CTAs)") {
  // batch x 8 KV heads x 8 splits of 256 compressed keys >= two waves of resident scan CTAs (the
  // batch is derived from the device's occupancy: 17 on an H100 at 4 CTAs/SM, 25 at 6), so
  // choose_splits takes its fixed 256-key rule here, which the small batches of the other cases
  // never reach.
  NOSA_REQUIRE_GPU();
  Tally total;
  for (const SelCase& c : nosa_test::compiled_selector_cases()) {
    if (!is_nosa_bf16_d128_g16(c)) continue;
    INFO(c.name());
    const int H = 8, kSplits = (2047 + 255) / 256, kMaxBatch = 48;
    Model model(c, H, 21);
    nosa::SelectionParams sp;
    auto sel = make_created(c, kMaxBatch, H, 32768, sp);
    const int resident = sel->resident_scan_ctas();
    const int batch = (2 * resident + H * kSplits - 1) / (H * kSplits);
    MESSAGE("resident scan CTAs " << resident << ", batch " << batch);
    REQUIRE(batch <= kMaxBatch);
    std::vector<Seq> seqs;
    std::vector<int> slots, lens;
    for (int i = 0; i < batch; ++i) {
      const int T = 32768 - 61 * i;
      seqs.push_back(model.make_seq(T, 100 + i));
      REQUIRE(sel->append_prompt(i, T, seqs.back().k.data(), seqs.back().bias.data()).ok());
      slots.push_back(i);
      lens.push_back(T);
    }
    std::vector<const Seq*> ptrs;
    for (const Seq& s : seqs) ptrs.push_back(&s);
    const int splits = sel->scan_splits(batch);
    MESSAGE("scan splits for batch " << batch << ": " << splits);
    CHECK(splits == kSplits);  // the fixed 256-key rule, not the wave model's choice
    MESSAGE("auto cluster size for batch " << batch << ": " << sel->cluster_size_for(batch));
    check_select(*sel, model, sp, ptrs, slots, lens, 31, &total);
  }
  std::printf("[selector] fixed-split batch: compared %d (GPU runs: global/auto %d, cluster %d of which register-logit %d, split %d), near-tie skipped %d\n",
              total.compared, total.global, total.cluster, total.register_scan, total.split, total.skipped);
  MESSAGE("fixed-split batch: compared " << total.compared << ", skipped " << total.skipped << " near-ties");
  CHECK(total.compared > 0);
}

TEST_CASE("DeviceSelector: the persistent register cluster kernel takes many jobs per cluster, idle entries among them") {
  // 64 entries x 8 KV heads = 512 (entry, head) jobs: more than the register kernel's resident
  // clusters at every cluster size; where that is 3 to 6 waves of them, the kernel runs
  // persistent (each cluster takes several jobs, and loads the next one's while the current one
  // ends), elsewhere one cluster per job. Idle entries (length 0) sit among the first jobs of
  // the clusters and among the later ones, which are skipped; one entry has a single token. Run
  // directly and as three replays of a CUDA graph.
  NOSA_REQUIRE_GPU();
  Tally total;
  for (const SelCase& c : nosa_test::compiled_selector_cases()) {
    if (!is_nosa_bf16_d128_g16(c)) continue;
    INFO(c.name());
    const int H = 8, kBatch = 64;
    Model model(c, H, 23);
    nosa::SelectionParams sp;
    auto sel = make_created(c, kBatch, H, 8192, sp);
    const std::vector<int> regs = sel->register_scan_sizes();
    if (regs.empty()) {
      MESSAGE("no register cluster kernel on this device: skipped");
      continue;
    }
    for (int cs : regs) {
      INFO("cluster size " << cs);
      CHECK(sel->resident_register_clusters(cs) < kBatch * H);
    }
    // check_select forces cluster size 5 among others: an H100 holds 94 such clusters at once
    // (measured), 5.4 waves for 512 jobs, so that run is persistent
    const bool five = std::find(regs.begin(), regs.end(), 5) != regs.end();
    const int active5 = five ? sel->resident_register_clusters(5) : 0;
    MESSAGE("cluster size 5: " << active5 << " register clusters at once, persistent for 512 jobs: "
                               << (kBatch * H > 3 * active5 && kBatch * H <= 6 * active5));
    std::vector<Seq> seqs;
    std::vector<int> slots, lens;
    for (int i = 0; i < kBatch; ++i) {
      const int T = i % 5 == 0 ? 0 : i == 7 ? 1 : 8192 - 37 * i;
      seqs.push_back(model.make_seq(std::max(T, 1), 200 + i));
      if (T > 0) REQUIRE(sel->append_prompt(i, T, seqs.back().k.data(), seqs.back().bias.data()).ok());
      slots.push_back(i);
      lens.push_back(T);
    }
    std::vector<const Seq*> ptrs;
    for (const Seq& s : seqs) ptrs.push_back(&s);
    check_select(*sel, model, sp, ptrs, slots, lens, 43, &total);
    check_select(*sel, model, sp, ptrs, slots, lens, 47, &total, /*graph=*/true);
  }
  std::printf("[selector] persistent register kernel: compared %d (GPU runs: global/auto %d, cluster %d of which register-logit %d, split %d), near-tie skipped %d\n",
              total.compared, total.global, total.cluster, total.register_scan, total.split, total.skipped);
  MESSAGE("persistent register kernel: compared " << total.compared << ", skipped " << total.skipped << " near-ties");
  if (nosa_test::cluster_path_expected()) CHECK(total.register_scan > 0);
  if (nosa_test::cluster_path_expected()) CHECK(total.split > 0);  // several jobs per CTA, idle ones among them
}

TEST_CASE("DeviceSelector: a batch selected in parts with the pinned shape equals one call (bitwise)") {
  // What an engine that selects a batch in micro-batches relies on: pin_shape fixes the whole
  // batch's path, cluster size and cluster kernel, so selecting its halves separately gives the
  // same ids and counts. The batch is the smallest whose auto cluster kernel (register logits:
  // more than 1.5 waves) differs from that of its halves where such a batch exists, so the pin is
  // what keeps the parts equal.
  NOSA_REQUIRE_GPU();
  int compared = 0, pinned_differs = 0;
  for (const SelCase& c : nosa_test::compiled_selector_cases()) {
    INFO(c.name());
    const int H = 8, kMaxBatch = 64;
    const long long kTokens = 1024;
    Model model(c, H, 17);
    nosa::SelectionParams sp;
    auto sel = make_created(c, kMaxBatch, H, kTokens, sp);
    int batch = 6;
    for (int b = 2; b <= kMaxBatch; ++b) {
      const int cs = sel->cluster_size_for(b);
      if (cs > 0 && sel->auto_cluster_scan(b, cs) == 2) {
        batch = b;
        break;
      }
    }
    const int half = (batch + 1) / 2, cs = sel->cluster_size_for(batch);
    const bool differs = cs > 0 && sel->auto_cluster_scan(batch, cs) != sel->auto_cluster_scan(half, cs);
    pinned_differs += differs;
    std::vector<Seq> seqs;
    std::vector<int> slots, lens;
    for (int i = 0; i < batch; ++i) {
      const long long T = kTokens - 13 * i;
      seqs.push_back(model.make_seq(T, 300 + i));
      REQUIRE(sel->append_prompt(i, T, seqs.back().k.data(), seqs.back().bias.data()).ok());
      slots.push_back(i);
      lens.push_back(static_cast<int>(T));
    }
    const std::vector<std::uint16_t> q = model.make_q(batch, 77);
    const int stride = sel->max_blocks();
    std::vector<int> ids, counts, part_ids, part_counts;
    REQUIRE(sel->select(slots, lens, static_cast<int>(kTokens), q.data(), stride, &ids, &counts).ok());
    bool per_entry = false;
    REQUIRE(sel->select_in_parts(slots, lens, static_cast<int>(kTokens), q.data(), stride, 2, &part_ids, &part_counts,
                                 &per_entry).ok());
    const bool expect_per_entry = c.kind == nosa::SelectorKind::kDense || (!c.float_store && nosa_test::cluster_path_expected());
    CHECK(per_entry == expect_per_entry);
    MESSAGE("batch " << batch << ", cluster size " << cs << ", halves' auto kernel differs: " << differs
                     << ", per entry: " << per_entry);
    if (!per_entry) continue;
    ++compared;
    CHECK(part_counts == counts);
    CHECK(part_ids == ids);
  }
  std::printf("[selector] pinned parts: compared %d cases, %d where the halves' own auto kernel differs\n", compared,
              pinned_differs);
  CHECK(compared > 0);
}

TEST_CASE("DeviceSelector: exact ties resolve by block index as on the host") {
  // Keys and biases constant within a block, at three levels per head (0, 1, 3: no level is the
  // mean of two others, so a window straddling two blocks never ties with a whole-block one by
  // accident): every whole-block window of a level has the same compressed key and score, so both
  // top-k cuts fall inside runs of exactly equal scores, which the tie rule (lower block id first)
  // decides. Nothing is skipped here.
  NOSA_REQUIRE_GPU();
  Tally total;
  for (const SelCase& c : nosa_test::compiled_selector_cases()) {
    if (c.kind == nosa::SelectorKind::kDense) continue;
    INFO(c.name());
    const int H = 2;
    Model model(c, H, 5);
    nosa::SelectionParams sp;
    sp.query_aware = 12, sp.budget = 40;
    auto sel = make_created(c, 3, H, 8192, sp);
    const std::vector<int> lens = {8192, 3000, 700};
    std::vector<Seq> seqs;
    for (int i = 0; i < 3; ++i) {
      Seq s;
      s.T = lens[i];
      s.k.resize(static_cast<size_t>(s.T) * H * c.head_dim);
      s.bias.resize(static_cast<size_t>(s.T) * H);
      const float levels[3] = {0.f, 1.f, 3.f};
      for (long long t = 0; t < s.T; ++t)
        for (int h = 0; h < H; ++h) {
          const unsigned m = static_cast<unsigned>(t / c.block_size);
          const float key_level = levels[(m * 7u + 3u * h + i) % 3u];
          const float bias_level = levels[(m * 5u + h + 2u * i) % 3u];
          for (int d = 0; d < c.head_dim; ++d)
            s.k[(static_cast<size_t>(t) * H + h) * c.head_dim + d] = to_bits(0.5f * key_level * model.dir[h][d], c.fp16);
          s.bias[static_cast<size_t>(t) * H + h] = 0.25f * bias_level;
        }
      REQUIRE(sel->append_prompt(i, s.T, s.k.data(), s.bias.data()).ok());
      seqs.push_back(std::move(s));
    }
    for (int i = 0; i < 3; ++i) check_state(*sel, model, sp, seqs[i], i, lens[i]);
    check_select(*sel, model, sp, {&seqs[0], &seqs[1], &seqs[2]}, {0, 1, 2}, lens, 41, &total);
  }
  std::printf("[selector] exact ties: compared %d (GPU runs: global/auto %d, cluster %d), cut inside a tie %d, skipped %d\n",
              total.compared, total.global, total.cluster, total.exact_ties, total.skipped);
  CHECK(total.skipped == 0);
  CHECK(total.exact_ties > 0);
}

TEST_CASE("DeviceSelector: bad arguments are refused before any launch") {
  NOSA_REQUIRE_GPU();
  SelCase c;  // NOSA B64 D128 G16 bf16
  nosa::Status st;
  // unsupported geometry: D and G are template parameters (static_assert); the runtime dispatch
  // of this test binary names what is compiled in
  SelCase odd = c;
  odd.head_dim = 96;
  CHECK(nosa_test::make_selector(odd, &st) == nullptr);
  CHECK(st.code() == nosa::StatusCode::kNotSupported);
  CHECK(st.message().find("D96") != std::string::npos);
  MESSAGE(st.to_string());

  auto sel = make(c);
  SelConfig cfg;
  cfg.max_sequences = 2, cfg.num_kv_heads = 2, cfg.max_batch = 2, cfg.max_tokens = 512;
  std::size_t bytes = 0;
  SelConfig big = cfg;
  big.max_tokens = (1LL << 22) + 1;
  st = sel->workspace_bytes(big, &bytes);
  CHECK(st.code() == nosa::StatusCode::kCapacityExceeded);
  CHECK(st.message().find("max_tokens") != std::string::npos);
  SelConfig bad = cfg;
  bad.num_kv_heads = 0;
  CHECK(sel->workspace_bytes(bad, &bytes).code() == nosa::StatusCode::kInvalidArgument);
  bad = cfg;
  bad.params.budget = 3;
  st = sel->workspace_bytes(bad, &bytes);
  CHECK(st.message().find("budget") != std::string::npos);
  REQUIRE(sel->workspace_bytes(cfg, &bytes).ok());
  CHECK(sel->create_raw(cfg, nullptr, bytes).code() == nosa::StatusCode::kInvalidArgument);
  nosa_test::DeviceArray<unsigned char> ws(bytes + 256);
  CHECK(sel->create_raw(cfg, ws.ptr + 4, bytes).code() == nosa::StatusCode::kMisaligned);
  CHECK(sel->create_raw(cfg, ws.ptr, bytes - 1).code() == nosa::StatusCode::kInvalidArgument);

  REQUIRE(sel->create(cfg).ok());
  Model model(c, 2, 3);
  const Seq s = model.make_seq(600, 4);
  REQUIRE(sel->append_prompt(0, 300, s.k.data(), s.bias.data()).ok());
  // append beyond the reserved capacity: refused on the host...
  st = sel->append_prompt(0, 513, s.k.data(), s.bias.data());
  CHECK(st.code() == nosa::StatusCode::kCapacityExceeded);
  // ...or, when only the device knows the length, skipped whole and flagged
  CHECK(sel->append_prompt(0, 300, s.k.data(), s.bias.data()).ok());
  CHECK(sel->device_errors().code() == nosa::StatusCode::kCapacityExceeded);
  CHECK(sel->token_count(0) == 300);
  CHECK(sel->append_prompt(2, 10, s.k.data(), s.bias.data()).code() == nosa::StatusCode::kInvalidArgument);
  CHECK(sel->append_prompt_raw(0, 10, nullptr, s.bias.data()).code() == nosa::StatusCode::kInvalidArgument);
  CHECK(sel->reset(-1).code() == nosa::StatusCode::kInvalidArgument);

  const std::vector<std::uint16_t> q = model.make_q(2, 5);
  std::vector<int> ids, counts;
  st = sel->select({0, 1}, {300, 0}, 300, q.data(), 64, &ids, &counts, 0, /*null_q=*/true);
  CHECK(st.code() == nosa::StatusCode::kInvalidArgument);
  CHECK(st.message().find("q") != std::string::npos);
  CHECK(counts[0] == -7);  // nothing launched: outputs untouched
  st = sel->select({0, 1}, {300, 0}, 300, q.data(), 64, &ids, &counts, /*q_offset=*/1);
  CHECK(st.code() == nosa::StatusCode::kMisaligned);
  CHECK(counts[0] == -7);
  st = sel->select({0, 1}, {300, 0}, 513, q.data(), 64, &ids, &counts);
  CHECK(st.code() == nosa::StatusCode::kCapacityExceeded);
  st = sel->select({0, 1}, {300, 0}, 300, q.data(), 7, &ids, &counts);  // max blocks = 8
  CHECK(st.code() == nosa::StatusCode::kInvalidArgument);
  CHECK(st.message().find("block_stride") != std::string::npos);
  st = sel->select({0, 1, 0}, {300, 0, 1}, 300, q.data(), 64, &ids, &counts);
  CHECK(st.code() == nosa::StatusCode::kInvalidArgument);  // batch > max_batch
  CHECK(counts.size() == 6);
  // device-side: a length beyond what was appended -> count 0 and a flag; idle entry (T=0) is fine
  st = sel->select({0, 1}, {301, 0}, 400, q.data(), 64, &ids, &counts);
  CHECK(st.ok());
  CHECK(counts[0] == 0);
  CHECK(counts[2] == 0);
  CHECK(sel->device_errors().code() == nosa::StatusCode::kInvalidArgument);
  CHECK(sel->device_errors().ok());  // the flag is cleared once reported
  st = sel->select({0, 1}, {300, 0}, 300, q.data(), 64, &ids, &counts);
  CHECK(st.ok());
  CHECK(counts[0] == 5);  // ceil(300/64) blocks, all selected
  CHECK(counts[2] == 0);

  // stage-1 path arguments, refused before any launch
  using nosa_test::SelPath;
  sel->set_path(SelPath::kGlobal, 4);
  st = sel->select({0, 1}, {300, 0}, 300, q.data(), 64, &ids, &counts);
  CHECK(st.code() == nosa::StatusCode::kInvalidArgument);
  CHECK(st.message().find("cluster_size") != std::string::npos);
  CHECK(counts[0] == -7);
  sel->set_path(SelPath::kCluster, 17);
  st = sel->select({0, 1}, {300, 0}, 300, q.data(), 64, &ids, &counts);
  CHECK(st.code() == nosa::StatusCode::kInvalidArgument);
  CHECK(st.message().find("cluster_size") != std::string::npos);
  CHECK(counts[0] == -7);
  sel->set_path(SelPath::kAuto, 0, /*raw path value=*/7);
  st = sel->select({0, 1}, {300, 0}, 300, q.data(), 64, &ids, &counts);
  CHECK(st.code() == nosa::StatusCode::kInvalidArgument);
  CHECK(st.message().find("path") != std::string::npos);
  CHECK(counts[0] == -7);
  sel->set_path(SelPath::kAuto);
  sel->set_cluster_scan(9);
  st = sel->select({0, 1}, {300, 0}, 300, q.data(), 64, &ids, &counts);
  CHECK(st.code() == nosa::StatusCode::kInvalidArgument);
  CHECK(st.message().find("cluster_scan") != std::string::npos);
  CHECK(counts[0] == -7);
  sel->set_path(SelPath::kGlobal);
  sel->set_cluster_scan(2);
  st = sel->select({0, 1}, {300, 0}, 300, q.data(), 64, &ids, &counts);
  CHECK(st.code() == nosa::StatusCode::kInvalidArgument);
  CHECK(st.message().find("cluster_scan") != std::string::npos);
  CHECK(counts[0] == -7);
  sel->set_cluster_scan(0);
  // invalid and idle entries on the forced path: count 0 and the sticky flag, as on the global
  // path; then a good call
  auto expect_entry_errors = [&] {
    st = sel->select({0, 1}, {301, 0}, 400, q.data(), 64, &ids, &counts);
    CHECK(st.ok());
    CHECK(counts[0] == 0);
    CHECK(counts[2] == 0);
    CHECK(sel->device_errors().code() == nosa::StatusCode::kInvalidArgument);
    st = sel->select({1, 2}, {0, 300}, 300, q.data(), 64, &ids, &counts);  // slot 2 >= max_sequences
    CHECK(st.ok());
    CHECK(counts[0] == 0);
    CHECK(counts[2] == 0);
    st = sel->device_errors();
    CHECK(st.code() == nosa::StatusCode::kInvalidArgument);
    CHECK(st.message().find("seq_slots") != std::string::npos);
    st = sel->select({0, 1}, {300, 0}, 300, q.data(), 64, &ids, &counts);
    CHECK(st.ok());
    CHECK(counts[0] == 5);
    CHECK(counts[1] == 5);
    CHECK(counts[2] == 0);
    CHECK(sel->device_errors().ok());
  };
  // the cluster path (both cluster kernels)
  const std::vector<int> sizes = sel->cluster_sizes();
  CHECK(sizes.empty() == !nosa_test::cluster_path_expected());  // sm_90: clusters exist and 8 compressed keys fit
  const std::vector<int> reg_sizes = sel->register_scan_sizes();
  for (int scan : {0, 2})
  for (int csize : {0, sizes.empty() ? 0 : sizes.front(), sizes.empty() ? 0 : sizes.back()}) {
    if (sizes.empty()) break;
    if (scan == 2 && std::find(reg_sizes.begin(), reg_sizes.end(), csize == 0 ? sel->cluster_size_for(2) : csize) == reg_sizes.end())
      continue;
    INFO("cluster path, cluster_size " << csize << " cluster_scan " << scan);
    sel->set_path(SelPath::kCluster, csize);
    sel->set_cluster_scan(scan);
    expect_entry_errors();
  }
  sel->set_path(SelPath::kAuto);
  sel->set_cluster_scan(0);
  // the split path: refused arguments, then invalid and idle entries as on the other paths
  sel->set_path(SelPath::kSplit, 1);
  st = sel->select({0, 1}, {300, 0}, 300, q.data(), 64, &ids, &counts);
  CHECK(st.code() == nosa::StatusCode::kInvalidArgument);
  CHECK(st.message().find("head_parts") != std::string::npos);
  CHECK(counts[0] == -7);
  sel->set_path(SelPath::kSplit, 129);
  st = sel->select({0, 1}, {300, 0}, 300, q.data(), 64, &ids, &counts);
  CHECK(st.code() == nosa::StatusCode::kInvalidArgument);
  CHECK(st.message().find("head_parts") != std::string::npos);
  sel->set_path(SelPath::kSplit, 0);
  sel->set_cluster_scan(2);
  st = sel->select({0, 1}, {300, 0}, 300, q.data(), 64, &ids, &counts);
  CHECK(st.code() == nosa::StatusCode::kInvalidArgument);
  CHECK(st.message().find("cluster_scan") != std::string::npos);
  sel->set_cluster_scan(0);
  const std::vector<int> parts = sel->split_parts();
  CHECK(parts.empty() == !nosa_test::cluster_path_expected());  // 31 compressed keys: 2 parts of 32
  if (parts.empty()) {
    st = sel->select({0, 1}, {300, 0}, 300, q.data(), 64, &ids, &counts);
    CHECK(st.code() == nosa::StatusCode::kNotSupported);
    CHECK(st.message().find("split") != std::string::npos);
  }
  for (int n : {0, parts.empty() ? 0 : parts.back()}) {
    if (parts.empty()) break;
    INFO("split path, head_parts " << n);
    sel->set_path(SelPath::kSplit, n);
    expect_entry_errors();
  }
  sel->set_path(SelPath::kAuto);

  // fp32 keys: no cluster path; forcing it is refused before any launch, auto takes the global path
  SelCase f32 = c;
  f32.group_size = 8;
  f32.float_store = true;
  nosa::Status have;
  if (auto fsel = nosa_test::make_selector(f32, &have)) {
    REQUIRE(fsel->create(cfg).ok());
    CHECK(fsel->cluster_sizes().empty());
    CHECK(fsel->cluster_size_for(2) == 0);
    Model fm(f32, 2, 3);
    const std::vector<std::uint16_t> fq = fm.make_q(2, 5);
    fsel->set_path(SelPath::kCluster);
    st = fsel->select({0, 1}, {0, 0}, 300, fq.data(), 64, &ids, &counts);
    CHECK(st.code() == nosa::StatusCode::kNotSupported);
    CHECK(st.message().find("2-byte") != std::string::npos);
    CHECK(counts[0] == -7);
    MESSAGE(st.to_string());
  }

  // 4M-token capacity: 262143 compressed keys per head do not fit in 16 CTAs; auto takes the
  // global path, and forcing the cluster path is refused
  SelConfig huge = cfg;
  huge.max_sequences = 1, huge.max_batch = 1, huge.max_tokens = 1LL << 22;
  auto hsel = make(c);
  REQUIRE(hsel->create(huge).ok());
  CHECK(hsel->cluster_sizes().empty());
  CHECK(hsel->cluster_size_for(1) == 0);
  REQUIRE(hsel->append_prompt(0, 300, s.k.data(), s.bias.data()).ok());
  st = hsel->select({0}, {300}, 300, q.data(), 64, &ids, &counts);
  CHECK(st.ok());
  CHECK(counts[0] == 5);
  hsel->set_path(SelPath::kCluster);
  st = hsel->select({0}, {300}, 300, q.data(), 64, &ids, &counts);
  CHECK(st.code() == nosa::StatusCode::kNotSupported);
  // the reason names the cause: the head length, or (sm_80 code) the missing cluster support
  CHECK(st.message().find(nosa_test::cluster_path_expected() ? "do not fit" : "compute_") != std::string::npos);
  CHECK(counts[0] == -7);
  MESSAGE(st.to_string());
}
