// nosa::host: a sequential model of the GPU slot cache's bookkeeping (the state machine that the
// residency kernels run in parallel). It holds no K/V bytes, only which block sits in which slot,
// and it makes exactly the choices the kernels make, so tests can compare slot tables and the
// transfer lists one to one. It runs in CI (no GPU).
//
// State: per (layer, sequence slot, KV head) a group of S = slots_per_head slots; slot s holds a
// block id or -1 (free), and a stamp (the group's clock when the block was last needed).
//
// make_resident(group, T, selected):
//   needed   = selected blocks in the given order, then the tail block nb-1 (nb = ceil(T/B)) when
//              it is not selected: the tail always keeps a slot, since appends write there.
//   hits     = needed blocks already in a slot; those slots are kept.
//   missing  = the others, in needed order.
//   victims  = slots not kept, ordered by (occupied, stamp, slot index): free slots first, then
//              the least recently needed block (LRU). With NOSA's static agnostic ranking a block
//              that fell out of the selection rarely returns soon, and the most recently dropped
//              ones are the likeliest to come back, so LRU keeps those.
//   missing[k] goes to victims[k] (a transfer); every needed slot gets stamp = clock + 1; clock++.
//   More missing blocks than victims (needed > S) is an overflow: the surplus gets slot -1.
// append(group, t) (token t written; a decode step appends t = T - 1 before selecting):
//   the tail block t/B keeps its slot; if it has none (a new block, or after a prompt) the first
//   victim over all slots is claimed, stamped with the current clock, and the block's earlier
//   tokens [0, t % B) are loaded from the pool (a transfer, unless t % B == 0).
// prompt_tail(group, first_token, T): after a bulk append of tokens [first_token, T), slots holding
//   blocks >= first_token / B are freed (their bytes changed on the host), then the tail block is
//   claimed like in append and its tokens [0, T - tail*B) are loaded.
#pragma once

#include <nosa/config.h>
#include <nosa/status.h>

#include <algorithm>
#include <cstdint>
#include <string>
#include <vector>

NOSA_NAMESPACE_BEGIN
namespace host {

class ResidencyModel {
 public:
  struct Group {
    std::vector<int> block;  ///< [S] block id per slot, -1 free
    std::vector<int> stamp;  ///< [S]
    int clock = 0;
  };

  struct StepResult {
    std::vector<int> slots;        ///< per selected entry: slot index inside the group (-1: overflow)
    std::vector<int> moved;        ///< blocks transferred, in needed order
    std::vector<int> moved_slots;  ///< their slots
    int needed = 0;                ///< selected + tail if not selected
    bool overflow = false;
  };

  struct AppendResult {
    int slot = -1;
    bool claimed = false;  ///< the tail block had no slot
    bool loaded = false;   ///< earlier tokens of the block were transferred
  };

  ResidencyModel(int num_layers, int max_sequences, int num_kv_heads, int slots_per_head, int block_size)
      : layers_(num_layers), seqs_(max_sequences), heads_(num_kv_heads), S_(slots_per_head), B_(block_size) {
    if (num_layers < 1 || max_sequences < 1 || num_kv_heads < 1 || slots_per_head < 1 || block_size < 1)
      throw Error(invalid_argument("ResidencyModel: every size must be >= 1"));
    groups_.resize(static_cast<size_t>(layers_) * seqs_ * heads_);
    for (auto& g : groups_) reset(g);
  }

  int slots_per_head() const { return S_; }
  int block_size() const { return B_; }

  Group& group(int layer, int seq, int head) { return groups_.at((static_cast<size_t>(layer) * seqs_ + seq) * heads_ + head); }
  const Group& group(int layer, int seq, int head) const {
    return groups_.at((static_cast<size_t>(layer) * seqs_ + seq) * heads_ + head);
  }

  /// Frees every slot of a sequence (all layers and heads): the sequence left, or its slot is reused.
  void reset_sequence(int seq) {
    for (int l = 0; l < layers_; ++l)
      for (int h = 0; h < heads_; ++h) reset(group(l, seq, h));
  }

  /// Slot holding `block` in the group, or -1.
  static int find(const Group& g, int block) {
    for (size_t s = 0; s < g.block.size(); ++s)
      if (g.block[s] == block) return static_cast<int>(s);
    return -1;
  }

  StepResult make_resident(int layer, int seq, int head, long long T, const std::vector<int>& selected) {
    Group& g = group(layer, seq, head);
    StepResult r;
    const int tail = static_cast<int>((T + B_ - 1) / B_) - 1;
    std::vector<int> needed = selected;
    bool tail_in = false;
    for (int b : selected) tail_in = tail_in || b == tail;
    if (!tail_in && tail >= 0) needed.push_back(tail);
    r.needed = static_cast<int>(needed.size());
    std::vector<int> slot_of(needed.size(), -1);
    std::vector<char> keep(S_, 0);
    for (size_t i = 0; i < needed.size(); ++i) {
      slot_of[i] = find(g, needed[i]);
      if (slot_of[i] >= 0) keep[slot_of[i]] = 1;
    }
    std::vector<int> victims = victim_order(g, keep);
    size_t next = 0;
    for (size_t i = 0; i < needed.size(); ++i) {
      if (slot_of[i] >= 0) continue;
      if (next == victims.size()) {
        r.overflow = true;
        continue;
      }
      const int s = victims[next++];
      g.block[s] = needed[i];
      slot_of[i] = s;
      r.moved.push_back(needed[i]);
      r.moved_slots.push_back(s);
    }
    for (size_t i = 0; i < needed.size(); ++i)
      if (slot_of[i] >= 0) g.stamp[slot_of[i]] = g.clock + 1;
    g.clock += 1;
    r.slots.assign(slot_of.begin(), slot_of.begin() + static_cast<long>(selected.size()));
    return r;
  }

  AppendResult append(int layer, int seq, int head, long long t) {
    Group& g = group(layer, seq, head);
    const int blk = static_cast<int>(t / B_);
    AppendResult r;
    r.slot = find(g, blk);
    if (r.slot < 0) {
      r.slot = claim(g, blk);
      r.claimed = true;
      r.loaded = (t % B_) != 0;
    }
    return r;
  }

  AppendResult prompt_tail(int layer, int seq, int head, long long first_token, long long T) {
    Group& g = group(layer, seq, head);
    const int first_block = static_cast<int>(first_token / B_);
    for (int s = 0; s < S_; ++s)
      if (g.block[s] >= first_block) {
        g.block[s] = -1;
        g.stamp[s] = 0;
      }
    AppendResult r;
    if (T <= 0) return r;
    const int tail = static_cast<int>((T - 1) / B_);
    r.slot = find(g, tail);
    if (r.slot < 0) {
      r.slot = claim(g, tail);
      r.claimed = true;
      r.loaded = true;
    }
    return r;
  }

 private:
  void reset(Group& g) {
    g.block.assign(S_, -1);
    g.stamp.assign(S_, 0);
    g.clock = 0;
  }

  /// Non-kept slots ordered by (occupied, stamp, index).
  std::vector<int> victim_order(const Group& g, const std::vector<char>& keep) const {
    std::vector<int> v;
    for (int s = 0; s < S_; ++s)
      if (!keep[s]) v.push_back(s);
    auto key_less = [&](int a, int b) {
      const int oa = g.block[a] >= 0, ob = g.block[b] >= 0;
      if (oa != ob) return oa < ob;
      const int sa = oa ? g.stamp[a] : 0, sb = ob ? g.stamp[b] : 0;
      if (sa != sb) return sa < sb;
      return a < b;
    };
    std::sort(v.begin(), v.end(), key_less);  // a total order: the index breaks every tie
    return v;
  }

  int claim(Group& g, int blk) {
    std::vector<char> keep(S_, 0);
    const int s = victim_order(g, keep).front();
    g.block[s] = blk;
    g.stamp[s] = g.clock;
    return s;
  }

  int layers_, seqs_, heads_, S_, B_;
  std::vector<Group> groups_;
};

}  // namespace host
NOSA_NAMESPACE_END
