// Tests of SelectionParams::validate, the geometry types and the Status/Error plumbing.
// Every rule of validate() is hit once with a value just outside its range and once just inside;
// the message must name the parameter so a user can tell which one to fix.
#include <nosa/geometry.h>
#include <nosa/params.h>
#include <nosa/status.h>

#include <doctest/doctest.h>

#include <string>

namespace {

bool mentions(const nosa::Status& s, const std::string& word) {
  return s.message().find(word) != std::string::npos;
}

// A parameter set that is valid for B=64 and far from every boundary.
nosa::SelectionParams base() {
  nosa::SelectionParams p;
  p.window = 32;
  p.stride = 16;
  p.sink = 2;
  p.local = 4;
  p.query_aware = 10;
  p.budget = 20;
  return p;
}

}  // namespace

TEST_CASE("defaults are the NOSA release values and valid") {
  const nosa::SelectionParams p;
  CHECK(p.window == 32);
  CHECK(p.stride == 16);
  CHECK(p.sink == 1);
  CHECK(p.local == 16);
  CHECK(p.query_aware == 33);
  CHECK(p.budget == 64);
  CHECK(p.forced_blocks() == 18);
  for (int B : {16, 32, 64, 128}) CHECK(p.validate(B).ok());
  CHECK(base().validate(64).ok());
}

TEST_CASE("every validate rule rejects with the parameter named") {
  struct Case {
    const char* what;
    void (*mutate)(nosa::SelectionParams&);
    const char* name;
  };
  const Case cases[] = {
      {"window 0", [](nosa::SelectionParams& p) { p.window = 0; }, "window"},
      {"window negative", [](nosa::SelectionParams& p) { p.window = -5; }, "window"},
      {"stride 0", [](nosa::SelectionParams& p) { p.stride = 0; }, "stride"},
      {"stride negative", [](nosa::SelectionParams& p) { p.stride = -1; }, "stride"},
      {"stride > window", [](nosa::SelectionParams& p) { p.stride = p.window + 1; }, "stride"},
      {"sink negative", [](nosa::SelectionParams& p) { p.sink = -1; }, "sink"},
      {"local negative", [](nosa::SelectionParams& p) { p.local = -1; }, "local"},
      {"budget 0", [](nosa::SelectionParams& p) { p.budget = 0; }, "budget"},
      {"budget negative", [](nosa::SelectionParams& p) { p.budget = -64; }, "budget"},
      {"budget < forced", [](nosa::SelectionParams& p) { p.budget = p.forced_blocks() - 1; }, "budget"},
      {"query_aware negative", [](nosa::SelectionParams& p) { p.query_aware = -1; }, "query_aware"},
      {"query_aware > budget", [](nosa::SelectionParams& p) { p.query_aware = p.budget + 1; }, "query_aware"},
  };
  for (const Case& c : cases) {
    CAPTURE(c.what);
    nosa::SelectionParams p = base();
    c.mutate(p);
    const nosa::Status s = p.validate(64);
    CHECK(s.code() == nosa::StatusCode::kInvalidArgument);
    CHECK(mentions(s, std::string("SelectionParams::") + c.name));
    CHECK(s.to_string().rfind("invalid argument: ", 0) == 0);
  }
}

TEST_CASE("boundary values just inside the rules are accepted") {
  nosa::SelectionParams p = base();
  p.stride = p.window;  // non-overlapping windows
  CHECK(p.validate(64).ok());
  p = base();
  p.window = 1;
  p.stride = 1;
  CHECK(p.validate(64).ok());
  p = base();
  p.sink = 0;
  p.local = 0;
  p.budget = 1;  // only the current block is forced
  p.query_aware = 0;
  CHECK(p.validate(64).ok());
  p = base();
  p.budget = p.forced_blocks();
  p.query_aware = p.budget;
  CHECK(p.validate(64).ok());
  p = base();
  p.query_aware = 0;
  CHECK(p.validate(64).ok());
  // Windows larger than a block and blocks of any positive size are legal for the math.
  p = base();
  p.window = 200;
  p.stride = 7;
  CHECK(p.validate(16).ok());
  CHECK(base().validate(1).ok());
}

TEST_CASE("block_size is validated and named") {
  for (int B : {0, -64}) {
    const nosa::Status s = base().validate(B);
    CHECK(s.code() == nosa::StatusCode::kInvalidArgument);
    CHECK(mentions(s, "block_size"));
  }
}

TEST_CASE("the first broken rule wins and the value is in the message") {
  nosa::SelectionParams p = base();
  p.budget = 3;
  p.query_aware = 50;
  const nosa::Status s = p.validate(64);
  CHECK(mentions(s, "budget"));
  CHECK(mentions(s, "3"));
  CHECK(mentions(s, std::to_string(p.forced_blocks())));
}

TEST_CASE("Geometry and Dims") {
  using Geo = nosa::Geometry<64, 128, 16, nosa::HeadLayout::kHND>;
  static_assert(nosa::geometry_check_v<Geo>);
  constexpr nosa::Dims d = nosa::Dims::of<Geo>();
  CHECK(d.block_size == 64);
  CHECK(d.head_dim == 128);
  CHECK(d.group_size == 16);
  CHECK(d.layout == nosa::HeadLayout::kHND);
  CHECK(nosa::Dims::of<nosa::Geometry<16, 64, 1>>().layout == nosa::HeadLayout::kNHD);
  static_assert(nosa::is_supported_group_size_v<7>, "any G in 1..32, not only 16");
  static_assert(!nosa::is_supported_group_size_v<0> && !nosa::is_supported_group_size_v<33>);
  static_assert(!nosa::is_supported_block_size_v<48> && nosa::is_supported_block_size_v<128>);
  static_assert(!nosa::is_supported_head_dim_v<96> && nosa::is_supported_head_dim_v<256>);
  CHECK(std::string(nosa::to_string(nosa::HeadLayout::kNHD)) == "NHD");
}

TEST_CASE("selector policies carry kind and bias flag") {
  static_assert(nosa::NosaSelector::kind == nosa::SelectorKind::kNosa && nosa::NosaSelector::bias_in_attention);
  static_assert(nosa::InfllmV2Selector::kind == nosa::SelectorKind::kInfllmV2 &&
                !nosa::InfllmV2Selector::bias_in_attention);
  static_assert(nosa::DenseSelector<true>::bias_in_attention && !nosa::DenseSelector<false>::bias_in_attention);
  CHECK(std::string(nosa::to_string(nosa::SelectorKind::kInfllmV2)) == "InfLLM-V2");
}

TEST_CASE("Status, Error and NOSA_RETURN_IF_ERROR") {
  CHECK(nosa::Status().ok());
  CHECK(nosa::Status().to_string() == "success");
  const nosa::Status nf = nosa::not_found("sequence 7");
  CHECK_FALSE(nf.ok());
  CHECK(nf.to_string() == "not found: sequence 7");
  try {
    nosa::throw_if_error(nosa::capacity_exceeded("pool"));
    FAIL("throw_if_error did not throw");
  } catch (const nosa::Error& e) {
    CHECK(e.code() == nosa::StatusCode::kCapacityExceeded);
    CHECK(std::string(e.what()) == "capacity exceeded: pool");
  }
  CHECK_NOTHROW(nosa::throw_if_error({}));
  auto chain = [](bool fail) -> nosa::Status {
    NOSA_RETURN_IF_ERROR(fail ? nosa::misaligned("k") : nosa::Status());
    return nosa::not_supported("reached the end");
  };
  CHECK(chain(true).code() == nosa::StatusCode::kMisaligned);
  CHECK(chain(false).code() == nosa::StatusCode::kNotSupported);
}
