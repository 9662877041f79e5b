// host::ResidencyModel (nosa/host/residency_model.h): the bookkeeping state machine of the GPU
// slot cache, checked over thousands of random steps against brute-force set arithmetic: the
// transfers are exactly the needed blocks that were not resident, no block sits in two slots,
// the tail block always has a slot, victims are free slots first then least recently needed.
#include <doctest/doctest.h>

#include <nosa/host/residency_model.h>

#include <algorithm>
#include <map>
#include <random>
#include <set>
#include <vector>

using nosa::host::ResidencyModel;

namespace {
std::set<int> resident(const ResidencyModel::Group& g) {
  std::set<int> r;
  for (int b : g.block)
    if (b >= 0) r.insert(b);
  return r;
}
bool no_duplicates(const ResidencyModel::Group& g) {
  std::set<int> r;
  for (int b : g.block)
    if (b >= 0 && !r.insert(b).second) return false;
  return true;
}
}  // namespace

TEST_CASE("residency model: a first step moves every needed block, a repeat moves none") {
  ResidencyModel m(1, 1, 1, 8, 16);
  auto r = m.make_resident(0, 0, 0, 100, {0, 2, 6});  // nb = 7, tail 6 selected
  CHECK(r.moved == std::vector<int>{0, 2, 6});
  CHECK(r.needed == 3);
  CHECK(r.slots == std::vector<int>{0, 1, 2});
  r = m.make_resident(0, 0, 0, 100, {0, 2, 6});
  CHECK(r.moved.empty());
  CHECK(r.slots == std::vector<int>{0, 1, 2});
  r = m.make_resident(0, 0, 0, 100, {1, 2});  // tail 6 not selected: still needed
  CHECK(r.needed == 3);
  CHECK(r.moved == std::vector<int>{1});
  CHECK(r.slots[0] == 3);  // a free slot before evicting anything
}

TEST_CASE("residency model: LRU victim among the unselected") {
  ResidencyModel m(1, 1, 1, 4, 16);
  m.make_resident(0, 0, 0, 64, {0, 1, 2, 3});  // fills 4 slots, stamp 1
  m.make_resident(0, 0, 0, 64, {0, 1, 3});     // 2 not needed: stamp stays 1, others 2
  auto r = m.make_resident(0, 0, 0, 80, {0, 4});  // nb = 5: needs 0, 4 (tail); evict LRU = block 2
  CHECK(r.moved == std::vector<int>{4});
  CHECK(ResidencyModel::find(m.group(0, 0, 0), 2) == -1);
  CHECK(ResidencyModel::find(m.group(0, 0, 0), 1) >= 0);
  CHECK(ResidencyModel::find(m.group(0, 0, 0), 3) >= 0);
}

TEST_CASE("residency model: overflow when more blocks are needed than slots") {
  ResidencyModel m(1, 1, 1, 2, 16);
  auto r = m.make_resident(0, 0, 0, 64, {0, 1});  // + tail 3 = 3 needed, 2 slots
  CHECK(r.overflow);
  CHECK(r.moved.size() == 2);
}

TEST_CASE("residency model: append claims a slot for a new block, loads a partial one") {
  ResidencyModel m(1, 1, 1, 4, 16);
  auto a = m.append(0, 0, 0, 0);  // token 0: new block, nothing to load
  CHECK(a.claimed);
  CHECK_FALSE(a.loaded);
  a = m.append(0, 0, 0, 1);
  CHECK_FALSE(a.claimed);
  auto p = m.prompt_tail(0, 0, 0, 0, 40);  // prompt rewrote blocks 0..2: frees them, loads tail 2
  CHECK(p.claimed);
  CHECK(p.loaded);
  CHECK(resident(m.group(0, 0, 0)) == std::set<int>{2});
  a = m.append(0, 0, 0, 40);
  CHECK_FALSE(a.claimed);
  a = m.append(0, 0, 0, 48);  // block 3 is new
  CHECK(a.claimed);
  CHECK_FALSE(a.loaded);
}

TEST_CASE("residency model: thousands of random steps keep every invariant") {
  const int L = 2, SEQ = 5, H = 2, S = 10, B = 16, BUDGET = 8;
  ResidencyModel m(L, SEQ, H, S, B);
  std::mt19937 rng(42);
  std::map<int, long long> len;  // active sequences
  std::map<std::tuple<int, int, int>, std::vector<int>> prev;
  long long total_moved = 0, total_needed = 0, steps = 0;
  for (int it = 0; it < 4000; ++it) {
    const int seq = static_cast<int>(rng() % SEQ);
    if (!len.count(seq)) {
      const long long T = 1 + rng() % 300;
      m.reset_sequence(seq);
      for (int l = 0; l < L; ++l)
        for (int h = 0; h < H; ++h) {
          auto p = m.prompt_tail(l, seq, h, 0, T);
          REQUIRE(ResidencyModel::find(m.group(l, seq, h), static_cast<int>((T - 1) / B)) == p.slot);
        }
      len[seq] = T;
      continue;
    }
    if (rng() % 50 == 0) {
      m.reset_sequence(seq);
      len.erase(seq);
      for (int l = 0; l < L; ++l)
        for (int h = 0; h < H; ++h) {
          REQUIRE(resident(m.group(l, seq, h)).empty());
          prev.erase({seq, l, h});
        }
      continue;
    }
    const long long T = ++len[seq];
    const int nb = static_cast<int>((T + B - 1) / B);
    const double change = (rng() % 4) * 0.25;
    for (int l = 0; l < L; ++l)
      for (int h = 0; h < H; ++h) {
        auto& g = m.group(l, seq, h);
        const bool had_tail = ResidencyModel::find(g, nb - 1) >= 0;
        auto a = m.append(l, seq, h, T - 1);
        REQUIRE(a.claimed == !had_tail);
        const bool want_load = !had_tail && (T - 1) % B != 0;
        REQUIRE(a.loaded == want_load);
        REQUIRE(g.block[a.slot] == nb - 1);
        // selection: keep part of the previous one, fill randomly; the tail is not always selected
        std::set<int> sel;
        const int cnt = std::min(BUDGET - 1, nb);
        for (int x : prev[{seq, l, h}])
          if (x < nb && static_cast<int>(sel.size()) < cnt && std::uniform_real_distribution<>(0, 1)(rng) >= change) sel.insert(x);
        while (static_cast<int>(sel.size()) < cnt) sel.insert(static_cast<int>(rng() % nb));
        std::vector<int> v(sel.begin(), sel.end());
        prev[{seq, l, h}] = v;
        const std::set<int> before = resident(g);
        const std::vector<int> stamp_before = g.stamp, block_before = g.block;
        auto r = m.make_resident(l, seq, h, T, v);
        std::set<int> needed(v.begin(), v.end());
        needed.insert(nb - 1);
        std::vector<int> expect_moved;
        for (int b : v)
          if (!before.count(b)) expect_moved.push_back(b);
        if (!before.count(nb - 1) && !sel.count(nb - 1)) expect_moved.push_back(nb - 1);
        REQUIRE(r.moved == expect_moved);  // exactly the non-resident needed blocks, in order
        REQUIRE_FALSE(r.overflow);
        REQUIRE(r.needed == static_cast<int>(needed.size()));
        REQUIRE(no_duplicates(g));
        for (int b : needed) REQUIRE(ResidencyModel::find(g, b) >= 0);
        for (size_t i = 0; i < v.size(); ++i) REQUIRE(g.block[r.slots[i]] == v[i]);
        // victims: each evicted slot was free, or no unneeded resident block had an older stamp
        for (size_t k = 0; k < r.moved_slots.size(); ++k) {
          const int s = r.moved_slots[k];
          if (block_before[s] < 0) continue;
          for (int s2 = 0; s2 < S; ++s2) {
            const bool s2_unneeded_survivor = block_before[s2] >= 0 && !needed.count(block_before[s2]) && g.block[s2] == block_before[s2];
            if (s2_unneeded_survivor) REQUIRE(stamp_before[s2] >= stamp_before[s]);
            const bool free_left = block_before[s2] < 0 && g.block[s2] < 0;
            REQUIRE_FALSE(free_left);  // no free slot left unused
          }
        }
        total_moved += static_cast<long long>(r.moved.size());
        total_needed += r.needed;
        ++steps;
      }
  }
  MESSAGE("model steps " << steps << ", hit rate " << 1.0 - double(total_moved) / double(total_needed));
  CHECK(steps > 5000);
  CHECK(total_moved < total_needed);
}
