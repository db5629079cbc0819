#include "fate_spec.h"

#include <map>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"

namespace disagg::rackmon {
namespace {

constexpr char kDirectives[] = "model, taint-stops-at, notify, handler";
constexpr char kModels[] = "complete, partial, tainted, none";

struct LineError {
  const std::string& file;
  int line;
  absl::Status operator()(const std::string& why) const {
    return absl::InvalidArgumentError(absl::StrCat(file, ":", line, ": ", why));
  }
};

absl::StatusOr<FateModel> ModelNamed(const std::string& word) {
  if (word == "complete") return FateModel::kComplete;
  if (word == "partial") return FateModel::kPartial;
  if (word == "tainted") return FateModel::kTainted;
  if (word == "none") return FateModel::kNone;
  return absl::InvalidArgumentError(
      absl::StrCat("unknown model '", word, "' (one of: ", kModels, ")"));
}

// One directive's words (the directive first), with its line for errors.
struct Directive {
  std::vector<std::string> words;
  int line;
};

absl::Status ParseNotify(const Directive& d, const LineError& error, FateSpec& spec) {
  if (d.words.size() < 2) return error("notify needs groups, app or none");
  bool groups = false, app = false, none = false;
  for (size_t i = 1; i < d.words.size(); ++i) {
    const std::string& w = d.words[i];
    bool* flag = w == "groups" ? &groups : w == "app" ? &app : w == "none" ? &none : nullptr;
    if (flag == nullptr) {
      return error(absl::StrCat("notify: unknown party '", w, "' (groups, app or none)"));
    }
    if (*flag) return error(absl::StrCat("notify: '", w, "' given twice"));
    *flag = true;
  }
  if (none && (groups || app)) return error("notify: none goes alone");
  spec.notify_groups = groups;
  spec.notify_app = app;
  return absl::OkStatus();
}

absl::Status ParseHandler(const Directive& d, const LineError& error, FateSpec& spec) {
  size_t at = 1;
  if (at < d.words.size() && d.words[at] == "--on") {
    if (at + 1 >= d.words.size()) return error("handler: --on needs a compute element's name");
    spec.handler_element = d.words[at + 1];
    if (spec.handler_element.size() > 32 || spec.handler_element.find('/') != std::string::npos) {
      return error(absl::StrCat("handler: '", spec.handler_element, "' is no element name"));
    }
    at += 2;
  }
  if (at >= d.words.size()) return error("handler needs a PROGRAM to run");
  if (d.words[at].rfind("--", 0) == 0) {
    return error(absl::StrCat("handler: unknown option '", d.words[at], "' (only --on ELEMENT)"));
  }
  spec.handler_argv.assign(d.words.begin() + at, d.words.end());
  spec.handler_line = d.line;
  return absl::OkStatus();
}

}  // namespace

const char* FateModelName(FateModel model) {
  switch (model) {
    case FateModel::kComplete:
      return "complete";
    case FateModel::kPartial:
      return "partial";
    case FateModel::kTainted:
      return "tainted";
    case FateModel::kNone:
      return "none";
  }
  return "?";
}

const char* TaintStopName(TaintStop stop) { return stop == TaintStop::kUsers ? "users" : "memory"; }

proto::FateModel ModelToProto(FateModel model) {
  switch (model) {
    case FateModel::kComplete:
      return proto::FateModel::COMPLETE;
    case FateModel::kPartial:
      return proto::FateModel::PARTIAL;
    case FateModel::kTainted:
      return proto::FateModel::TAINTED;
    case FateModel::kNone:
      break;
  }
  return proto::FateModel::NONE;
}

void SpecToProto(const FateSpec& spec, proto::FateSpec::Builder out) {
  out.setModel(ModelToProto(spec.model));
  out.setTaintStop(spec.taint_stop == TaintStop::kUsers ? proto::TaintStop::USERS
                                                        : proto::TaintStop::MEMORY);
  out.setNotifyGroups(spec.notify_groups);
  out.setNotifyApp(spec.notify_app);
}

FateModel ModelFromProto(proto::FateModel model) {
  switch (model) {
    case proto::FateModel::COMPLETE:
      return FateModel::kComplete;
    case proto::FateModel::PARTIAL:
      return FateModel::kPartial;
    case proto::FateModel::TAINTED:
      return FateModel::kTainted;
    default:  // none, or a value this build does not know
      return FateModel::kNone;
  }
}

FateSpec SpecFromProto(proto::FateSpec::Reader in) {
  FateSpec spec;
  spec.model = ModelFromProto(in.getModel());
  spec.taint_stop =
      in.getTaintStop() == proto::TaintStop::USERS ? TaintStop::kUsers : TaintStop::kMemory;
  spec.notify_groups = in.getNotifyGroups();
  spec.notify_app = in.getNotifyApp();
  return spec;
}

bool ValidAppName(const std::string& name) {
  if (name.empty() || name.size() > 64 || name[0] == '.' || name[0] == '-') return false;
  for (char c : name) {
    if (!absl::ascii_isalnum(static_cast<unsigned char>(c)) && c != '.' && c != '_' && c != '-') {
      return false;
    }
  }
  return true;
}

absl::StatusOr<FateSpec> ParseFateSpec(const std::string& file, const std::string& text) {
  if (text.size() > kMaxFateSpecBytes) {
    return absl::InvalidArgumentError(absl::StrCat(
        file, ": the spec is ", text.size(), " bytes; a spec holds at most ", kMaxFateSpecBytes));
  }
  FateSpec spec;
  std::map<std::string, int> seen;  // directive -> the line it was first given on
  int line = 0;
  int taint_line = 0;
  for (absl::string_view raw : absl::StrSplit(text, '\n')) {
    ++line;
    const LineError error{file, line};
    if (raw.find('\0') != absl::string_view::npos) return error("a NUL byte: this is no text");
    raw = raw.substr(0, raw.find('#'));
    Directive d{{}, line};
    for (absl::string_view w :
         absl::StrSplit(raw, absl::ByAnyChar(" \t\r\v\f"), absl::SkipEmpty())) {
      d.words.emplace_back(w);
    }
    if (d.words.empty()) continue;
    const std::string& what = d.words[0];
    if (what != "model" && what != "taint-stops-at" && what != "notify" && what != "handler") {
      return error(absl::StrCat("unknown directive '", what, "' (directives: ", kDirectives, ")"));
    }
    if (auto [it, first] = seen.emplace(what, line); !first) {
      return error(absl::StrCat(what, " given twice (first at line ", it->second, ")"));
    }
    if (what == "model") {
      if (d.words.size() != 2) return error(absl::StrCat("model takes one of: ", kModels));
      absl::StatusOr<FateModel> model = ModelNamed(d.words[1]);
      if (!model.ok()) return error(std::string(model.status().message()));
      spec.model = *model;
    } else if (what == "taint-stops-at") {
      if (d.words.size() != 2 || (d.words[1] != "memory" && d.words[1] != "users")) {
        return error("taint-stops-at takes memory or users");
      }
      spec.taint_stop = d.words[1] == "users" ? TaintStop::kUsers : TaintStop::kMemory;
      taint_line = line;
    } else if (what == "notify") {
      if (absl::Status s = ParseNotify(d, error, spec); !s.ok()) return s;
    } else {
      if (absl::Status s = ParseHandler(d, error, spec); !s.ok()) return s;
    }
  }
  auto model = seen.find("model");
  if (model == seen.end()) {
    return absl::InvalidArgumentError(
        absl::StrCat(file, ": no model line (model complete|partial|tainted|none)"));
  }
  if (taint_line != 0 && spec.model != FateModel::kTainted) {
    return LineError{file, taint_line}(
        absl::StrCat("taint-stops-at applies only to model "
                     "tainted (the model is ",
                     FateModelName(spec.model), ", line ", model->second, ")"));
  }
  return spec;
}

}  // namespace disagg::rackmon
