// Host pool (nosa/host_pool.h): paging, capacity errors that change nothing, page reuse without
// fragmentation, page-table updates for the device mirror, byte layout of both host layouts.
#include <doctest/doctest.h>

#include <nosa/host_pool.h>

#include <cstdint>
#include <random>
#include <set>
#include <vector>

namespace {
using Geo = nosa::Geometry<16, 64, 1>;
using T = nosa::bfloat16_t;

struct Mem {
  std::vector<std::uint64_t> words;
  explicit Mem(size_t bytes) : words(bytes / 8 + 64) {}
  void* base() {  // 256-aligned
    auto p = reinterpret_cast<std::uintptr_t>(words.data());
    return reinterpret_cast<void*>((p + 255) / 256 * 256);
  }
};
}  // namespace

TEST_CASE("host pool: page format sizes and offsets") {
  using F = nosa::PageFormat<T, 64, 128, nosa::HeadLayout::kNHD>;
  CHECK(F::kv_bytes(2) == 2 * 64 * 128 * 2);
  CHECK(F::page_bytes(2) == (2 * 32768 + 512 + 255) / 256 * 256);
  CHECK(F::kv_offset(2, 1, 3, 5) == (3 * 2 + 1) * 128 + 5);
  CHECK(F::bias_offset(2, 1, 3) == 3 * 2 + 1);
  using G = nosa::PageFormat<T, 64, 128, nosa::HeadLayout::kHND>;
  CHECK(G::kv_offset(2, 1, 3, 5) == (1 * 64 + 3) * 128 + 5);
  CHECK(G::bias_offset(2, 1, 3) == 64 + 3);
}

TEST_CASE("host pool: construction errors") {
  using PoolT = nosa::HostPool<T, Geo>;
  Mem m(1 << 16);
  CHECK_THROWS_AS(PoolT(nosa::HostPoolConfig{0, 1, 1, 1}, m.base(), nullptr, 1 << 16), nosa::Error);
  CHECK_THROWS_AS(PoolT(nosa::HostPoolConfig{1, 1, 1, 1}, nullptr, nullptr, 1 << 16), nosa::Error);
  CHECK_THROWS_AS(PoolT(nosa::HostPoolConfig{1, 1, 1, 1}, static_cast<char*>(m.base()) + 8, nullptr, 1 << 15),
                  nosa::Error);
  CHECK_THROWS_AS(PoolT(nosa::HostPoolConfig{1, 1, 1, 1}, m.base(), nullptr, 100), nosa::Error);
}

TEST_CASE("host pool: reserve, capacity_exceeded changes nothing, release reuses pages") {
  using Pool = nosa::HostPool<T, Geo>;
  const nosa::HostPoolConfig cfg{2, 2, 4, 8};
  const size_t bytes = Pool::bytes_for_blocks(2, 10);
  Mem m(bytes);
  Pool pool(cfg, m.base(), nullptr, bytes);
  CHECK(pool.capacity_blocks() == 10);
  REQUIRE(pool.add_sequence(1).ok());
  CHECK(pool.add_sequence(1).code() == nosa::StatusCode::kInvalidArgument);
  CHECK(pool.add_sequence(4).code() == nosa::StatusCode::kInvalidArgument);
  CHECK(pool.reserve(0, 5).code() == nosa::StatusCode::kNotFound);
  REQUIRE(pool.reserve(1, 33).ok());  // 3 blocks x 2 layers
  CHECK(pool.reserved_blocks(1) == 3);
  CHECK(pool.free_blocks() == 4);
  CHECK(pool.take_page_updates().size() == 6);
  nosa::Status st = pool.reserve(1, 16 * 6);  // 3 more blocks x 2 layers = 6 > 4 free
  CHECK(st.code() == nosa::StatusCode::kCapacityExceeded);
  CHECK(st.message().find("host pool full") != std::string::npos);
  CHECK(pool.reserved_blocks(1) == 3);
  CHECK(pool.free_blocks() == 4);
  CHECK_FALSE(pool.has_page_updates());
  CHECK(pool.reserve(1, 16 * 9).code() == nosa::StatusCode::kCapacityExceeded);  // > max_blocks_per_sequence
  REQUIRE(pool.reserve(1, 16 * 5).ok());
  CHECK(pool.free_blocks() == 0);
  REQUIRE(pool.add_sequence(2).ok());
  CHECK(pool.reserve(2, 1).code() == nosa::StatusCode::kCapacityExceeded);
  std::set<int> pages;
  for (int l = 0; l < 2; ++l)
    for (int b = 0; b < 5; ++b) pages.insert(pool.page(1, l, b));
  CHECK(pages.size() == 10);  // distinct
  CHECK(pool.page(1, 0, 5) == -1);
  pool.take_page_updates();
  REQUIRE(pool.release(1).ok());
  const auto upd = pool.take_page_updates();
  CHECK(upd.size() == 10);
  for (const auto& u : upd) CHECK(u.page == -1);
  CHECK(pool.free_blocks() == 10);
  CHECK(pool.release(1).code() == nosa::StatusCode::kNotFound);
  REQUIRE(pool.reserve(2, 16 * 5).ok());  // the same pages serve the next sequence
  CHECK(pool.free_blocks() == 0);
}

TEST_CASE("host pool: random admit/grow/release never leaks or double-allocates") {
  using Pool = nosa::HostPool<T, Geo>;
  const nosa::HostPoolConfig cfg{3, 2, 8, 20};
  const size_t bytes = Pool::bytes_for_blocks(2, 150);
  Mem m(bytes);
  Pool pool(cfg, m.base(), nullptr, bytes);
  std::mt19937 rng(3);
  for (int it = 0; it < 5000; ++it) {
    const int seq = static_cast<int>(rng() % 8);
    const int op = static_cast<int>(rng() % 3);
    if (!pool.active(seq)) {
      REQUIRE(pool.add_sequence(seq).ok());
    } else if (op == 0) {
      REQUIRE(pool.release(seq).ok());
    } else {
      const long long before_free = pool.free_blocks();
      const int before_blocks = pool.reserved_blocks(seq);
      const long long want = static_cast<long long>(rng() % (16 * 22));
      nosa::Status st = pool.reserve(seq, want);
      if (!st.ok()) {
        CHECK(st.code() == nosa::StatusCode::kCapacityExceeded);
        CHECK(pool.free_blocks() == before_free);
        CHECK(pool.reserved_blocks(seq) == before_blocks);
      }
    }
    long long used = 0;
    std::set<int> seen;
    for (int s = 0; s < 8; ++s)
      for (int l = 0; l < 3; ++l)
        for (int b = 0; b < pool.reserved_blocks(s); ++b) {
          const int p = pool.page(s, l, b);
          REQUIRE(p >= 0);
          REQUIRE(seen.insert(p).second);
          ++used;
        }
    REQUIRE(used + pool.free_blocks() == pool.capacity_blocks());
  }
}

TEST_CASE("host pool: write_tokens puts bytes where PageFormat says, both layouts") {
  auto run = [](auto layout_tag) {
    constexpr nosa::HeadLayout L = decltype(layout_tag)::value;
    using Pool = nosa::HostPool<T, Geo, L>;
    using F = typename Pool::Format;
    const int H = 3;
    const size_t bytes = Pool::bytes_for_blocks(H, 6);
    Mem m(bytes);
    Pool pool(nosa::HostPoolConfig{1, H, 2, 6}, m.base(), nullptr, bytes);
    REQUIRE(pool.add_sequence(0).ok());
    REQUIRE(pool.reserve(0, 40).ok());
    const int n = 37;
    std::vector<T> k(n * H * 64), v(k.size());
    std::vector<float> bias(n * H);
    for (size_t i = 0; i < k.size(); ++i) {
      k[i].bits = static_cast<std::uint16_t>(i * 7 + 1);
      v[i].bits = static_cast<std::uint16_t>(i * 13 + 5);
    }
    for (size_t i = 0; i < bias.size(); ++i) bias[i] = static_cast<float>(i) * 0.5f;
    CHECK(pool.write_tokens(0, 0, 3, n, k.data(), v.data(), bias.data()).ok());
    CHECK(pool.write_tokens(0, 0, 10, 39, k.data(), v.data(), bias.data()).code() == nosa::StatusCode::kCapacityExceeded);
    bool ok = true;
    for (int i = 0; i < n; ++i)
      for (int h = 0; h < H; ++h) {
        const int t = 3 + i;
        const char* pg = pool.host_page(pool.page(0, 0, t / 16));
        const T* pk = reinterpret_cast<const T*>(pg);
        const T* pv = reinterpret_cast<const T*>(pg + F::v_byte_offset(H));
        const float* pb = reinterpret_cast<const float*>(pg + F::bias_byte_offset(H));
        for (int d = 0; d < 64; ++d) {
          ok = ok && pk[F::kv_offset(H, h, t % 16, d)].bits == k[(i * H + h) * 64 + d].bits;
          ok = ok && pv[F::kv_offset(H, h, t % 16, d)].bits == v[(i * H + h) * 64 + d].bits;
        }
        ok = ok && pb[F::bias_offset(H, h, t % 16)] == bias[i * H + h];
      }
    CHECK(ok);
  };
  run(std::integral_constant<nosa::HeadLayout, nosa::HeadLayout::kNHD>{});
  run(std::integral_constant<nosa::HeadLayout, nosa::HeadLayout::kHND>{});
}
