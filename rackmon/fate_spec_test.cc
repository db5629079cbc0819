#include "fate_spec.h"

#include <catch2/catch.hpp>
#include <string>

namespace disagg::rackmon {
namespace {

std::string ErrorOf(const std::string& text) {
  absl::StatusOr<FateSpec> spec = ParseFateSpec("app.fate", text);
  return spec.ok() ? "ok" : std::string(spec.status().message());
}

TEST_CASE("A fate spec selects its model and the rest has defaults") {
  SECTION("each model") {
    for (auto [word, model] :
         {std::pair{"complete", FateModel::kComplete}, std::pair{"partial", FateModel::kPartial},
          std::pair{"tainted", FateModel::kTainted}, std::pair{"none", FateModel::kNone}}) {
      absl::StatusOr<FateSpec> spec =
          ParseFateSpec("f", std::string("# a comment\n\n  model ") + word + "   # why\n");
      REQUIRE(spec.ok());
      CHECK(spec->model == model);
      CHECK(spec->notify_groups);
      CHECK_FALSE(spec->notify_app);
      CHECK(spec->taint_stop == TaintStop::kMemory);
      CHECK(spec->handler_argv.empty());
    }
  }
  SECTION("every directive") {
    absl::StatusOr<FateSpec> spec =
        ParseFateSpec("f",
                      "model tainted\r\ntaint-stops-at users\nnotify app groups\n"
                      "handler --on cpu1 ./restart --from-log 7\n");
    REQUIRE(spec.ok());
    CHECK(spec->model == FateModel::kTainted);
    CHECK(spec->taint_stop == TaintStop::kUsers);
    CHECK(spec->notify_app);
    CHECK(spec->notify_groups);
    CHECK(spec->handler_element == "cpu1");
    CHECK(spec->handler_argv == std::vector<std::string>{"./restart", "--from-log", "7"});
    CHECK(spec->handler_line == 4);
  }
  SECTION("notify none") {
    absl::StatusOr<FateSpec> spec = ParseFateSpec("f", "notify none\nmodel partial\n");
    REQUIRE(spec.ok());
    CHECK_FALSE(spec->notify_groups);
    CHECK_FALSE(spec->notify_app);
  }
}

TEST_CASE("A malformed fate spec is refused with its file and line") {
  CHECK(ErrorOf("model complete\nmodle partial\n") ==
        "app.fate:2: unknown directive 'modle' (directives: model, taint-stops-at, notify, "
        "handler)");
  CHECK(ErrorOf("\n\nmodel strong\n") ==
        "app.fate:3: unknown model 'strong' (one of: complete, partial, tainted, none)");
  CHECK(ErrorOf("model\n") == "app.fate:1: model takes one of: complete, partial, tainted, none");
  CHECK(ErrorOf("model partial none\n") ==
        "app.fate:1: model takes one of: complete, partial, tainted, none");
  CHECK(ErrorOf("model none\n# x\nmodel partial\n") ==
        "app.fate:3: model given twice (first at line 1)");
  CHECK(ErrorOf("taint-stops-at users\nmodel partial\n") ==
        "app.fate:1: taint-stops-at applies only to model tainted (the model is partial, line 2)");
  CHECK(ErrorOf("model tainted\ntaint-stops-at disk\n") ==
        "app.fate:2: taint-stops-at takes memory or users");
  CHECK(ErrorOf("model none\nnotify\n") == "app.fate:2: notify needs groups, app or none");
  CHECK(ErrorOf("model none\nnotify app everyone\n") ==
        "app.fate:2: notify: unknown party 'everyone' (groups, app or none)");
  CHECK(ErrorOf("model none\nnotify none app\n") == "app.fate:2: notify: none goes alone");
  CHECK(ErrorOf("model none\nnotify app app\n") == "app.fate:2: notify: 'app' given twice");
  CHECK(ErrorOf("model none\nhandler\n") == "app.fate:2: handler needs a PROGRAM to run");
  CHECK(ErrorOf("model none\nhandler --on\n") ==
        "app.fate:2: handler: --on needs a compute element's name");
  CHECK(ErrorOf("model none\nhandler --on cpu0\n") == "app.fate:2: handler needs a PROGRAM to run");
  CHECK(ErrorOf("model none\nhandler --at cpu0 ./x\n") ==
        "app.fate:2: handler: unknown option '--at' (only --on ELEMENT)");
  CHECK(ErrorOf("model none\nhandler --on a/b ./x\n") ==
        "app.fate:2: handler: 'a/b' is no element name");
  CHECK(ErrorOf(std::string("model none\nnotify app\0\n", 23)) ==
        "app.fate:2: a NUL byte: this is no text");
  CHECK(ErrorOf("# nothing but comments\n\n") ==
        "app.fate: no model line (model complete|partial|tainted|none)");
  CHECK(ErrorOf("") == "app.fate: no model line (model complete|partial|tainted|none)");
  CHECK(ErrorOf(std::string(kMaxFateSpecBytes + 1, '#')) ==
        "app.fate: the spec is 65537 bytes; a spec holds at most 65536");
}

TEST_CASE("Application names are short words") {
  CHECK(ValidAppName("kv-store_2.1"));
  CHECK_FALSE(ValidAppName(""));
  CHECK_FALSE(ValidAppName(".hidden"));
  CHECK_FALSE(ValidAppName("-flag"));
  CHECK_FALSE(ValidAppName("a b"));
  CHECK_FALSE(ValidAppName("a/b"));
  CHECK_FALSE(ValidAppName(std::string(65, 'a')));
}

}  // namespace
}  // namespace disagg::rackmon
