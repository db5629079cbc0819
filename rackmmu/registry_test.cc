#include "registry.h"

#include <catch2/catch.hpp>

namespace disagg::rackmmu {
namespace {

TEST_CASE("The Rack MMU's registry keeps element names rack-unique") {
  ElementRegistry registry;
  auto first = registry.Register("mem0", proto::ElementKind::MEMORY, 100, 1 << 20, 1);
  REQUIRE(first.ok());

  SECTION("a live element's name is refused") {
    auto again = registry.Register("mem0", proto::ElementKind::MEMORY, 101, 1 << 20, 2);
    REQUIRE(absl::IsAlreadyExists(again.status()));
    REQUIRE(registry.elements().at("mem0").pid == 100);
  }
  SECTION("a failed element's name can be taken over by its replacement") {
    REQUIRE(registry.SetHealth("mem0", proto::Health::FAILED).ok());
    auto again = registry.Register("mem0", proto::ElementKind::MEMORY, 101, 1 << 20, 2);
    REQUIRE(again.ok());
    REQUIRE(*again != *first);
    REQUIRE(registry.elements().at("mem0").pid == 101);
    REQUIRE(registry.elements().at("mem0").health == proto::Health::HEALTHY);
  }
  SECTION("a disconnected element's name can be taken over") {
    REQUIRE(registry.Disconnected(1) == "mem0");
    REQUIRE(registry.Register("mem0", proto::ElementKind::MEMORY, 102, 1 << 20, 3).ok());
  }
}

TEST_CASE("The Rack MMU's registry refuses malformed registrations") {
  ElementRegistry registry;
  REQUIRE(absl::IsInvalidArgument(
      registry.Register("", proto::ElementKind::COMPUTE, 1, 0, 1).status()));
  REQUIRE(absl::IsInvalidArgument(
      registry.Register("cpu/0", proto::ElementKind::COMPUTE, 1, 0, 1).status()));
  REQUIRE(absl::IsInvalidArgument(
      registry.Register(std::string(100, 'a'), proto::ElementKind::COMPUTE, 1, 0, 1).status()));
  REQUIRE(absl::IsInvalidArgument(
      registry.Register("mem0", proto::ElementKind::MEMORY, 1, 0, 1).status()));
  REQUIRE(absl::IsInvalidArgument(
      registry.Register("x", proto::ElementKind::CLIENT, 1, 0, 1).status()));
  REQUIRE(registry.elements().empty());
  REQUIRE(absl::IsNotFound(registry.SetHealth("ghost", proto::Health::FAILED)));
}

}  // namespace
}  // namespace disagg::rackmmu
