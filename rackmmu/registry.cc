#include "registry.h"

#include <cctype>

#include "absl/strings/str_cat.h"

namespace disagg::rackmmu {
namespace {

constexpr size_t kMaxNameBytes = 32;

bool ValidName(const std::string& name) {
  if (name.empty() || name.size() > kMaxNameBytes) return false;
  for (char c : name) {
    if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_')) return false;
  }
  return true;
}

}  // namespace

absl::StatusOr<uint32_t> ElementRegistry::Register(const std::string& name, proto::ElementKind kind,
                                                   pid_t pid, uint64_t capacity_bytes,
                                                   uint64_t link_id) {
  if (!ValidName(name)) {
    return absl::InvalidArgumentError(absl::StrCat("element name '", name, "' must be 1-",
                                                   kMaxNameBytes, " letters, digits, '-' or '_'"));
  }
  if (kind == proto::ElementKind::CLIENT || kind == proto::ElementKind::RACKMMU) {
    return absl::InvalidArgumentError(absl::StrCat(
        "element ", name, ": kind ", static_cast<int>(kind), " cannot register as a rack element"));
  }
  if (kind == proto::ElementKind::MEMORY && capacity_bytes == 0) {
    return absl::InvalidArgumentError(absl::StrCat("memory element ", name, " has no pool"));
  }
  auto it = elements_.find(name);
  if (it != elements_.end() && it->second.link_id != 0 &&
      it->second.health != proto::Health::FAILED) {
    return absl::AlreadyExistsError(
        absl::StrCat("element name ", name, " is taken by pid ", it->second.pid));
  }
  ElementRecord& record = elements_[name];
  record =
      ElementRecord{next_id_++, name, kind, pid, capacity_bytes, proto::Health::HEALTHY, link_id};
  return record.id;
}

absl::Status ElementRegistry::SetHealth(const std::string& name, proto::Health health) {
  auto it = elements_.find(name);
  if (it == elements_.end()) {
    return absl::NotFoundError(absl::StrCat("no element named ", name));
  }
  it->second.health = health;
  return absl::OkStatus();
}

std::string ElementRegistry::Disconnected(uint64_t link_id) {
  for (auto& [name, record] : elements_) {
    if (record.link_id == link_id) {
      record.link_id = 0;
      return name;
    }
  }
  return "";
}

}  // namespace disagg::rackmmu
