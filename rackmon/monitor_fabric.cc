// Network faults at the rack monitor: `rackctl partition A B`, `heal` and `delay ELEMENT US`.
// The rules live here and in the fabric file (ipc/fabric.h) that every application process
// consults on its channels to memory elements and the Rack MMU; a rule given `--for` ends by
// itself on the monitor's timer, whatever happens to the rackctl that set it.
#include "absl/strings/str_cat.h"
#include "internal/logging.h"
#include "internal/status_macros.h"
#include "monitor.h"

namespace disagg::rackmon {
namespace {
constexpr absl::Duration kMaxDelay = absl::Seconds(1);
}  // namespace

absl::Status RackMonitor::FabricElement(const std::string& name) {
  if (name == "mmu") return absl::OkStatus();
  return Element(name).status();
}

absl::Status RackMonitor::PublishFabric() {
  if (!fabric_) {
    return absl::FailedPreconditionError(
        "mon: this rack has no fabric file: partitions and delays cannot be injected");
  }
  std::vector<ipc::FabricRule> rules;
  for (const auto& [id, r] : fabric_rules_) rules.push_back(r.rule);
  return fabric_->Set(rules);
}

absl::Status RackMonitor::Partition(const std::string& a, const std::string& b,
                                    absl::Duration for_how_long) {
  if (absl::Status s = FabricElement(a); !s.ok()) return s;
  if (absl::Status s = FabricElement(b); !s.ok()) return s;
  if (a == b) return absl::InvalidArgumentError("mon: an element is not partitioned from itself");
  for (const auto& [id, r] : fabric_rules_) {
    if ((r.rule.a == a && r.rule.b == b) || (r.rule.a == b && r.rule.b == a)) {
      return absl::FailedPreconditionError(
          absl::StrCat("mon: ", a, " and ", b, " are partitioned already"));
    }
  }
  if (fabric_rules_.size() >= ipc::kFabricRules) {
    return absl::ResourceExhaustedError(
        absl::StrCat("mon: at most ", ipc::kFabricRules, " partitions and delays at once"));
  }
  const uint64_t id = next_rule_++;
  ActiveRule& r = fabric_rules_[id];
  r.rule = {a, b, 0};
  if (absl::Status s = PublishFabric(); !s.ok()) {
    fabric_rules_.erase(id);
    return s;
  }
  if (for_how_long > absl::ZeroDuration()) {
    r.timer = loop_.AddTimer(for_how_long, [this, a, b] { (void)Heal(a, b); });
  }
  LOG(WARNING) << "mon: fault injection: partitioned " << a << " from " << b
               << (for_how_long > absl::ZeroDuration()
                       ? absl::StrCat(" for ", absl::FormatDuration(for_how_long))
                       : "");
  return absl::OkStatus();
}

absl::Status RackMonitor::Heal(const std::string& a, const std::string& b) {
  if (a.empty() != b.empty())
    return absl::InvalidArgumentError("mon: heal names two elements or none");
  size_t healed = 0;
  for (auto it = fabric_rules_.begin(); it != fabric_rules_.end();) {
    const ipc::FabricRule& rule = it->second.rule;
    const bool match = !rule.b.empty() &&
                       (a.empty() || (rule.a == a && rule.b == b) || (rule.a == b && rule.b == a));
    if (!match) {
      ++it;
      continue;
    }
    if (it->second.timer != 0) loop_.Unwatch(it->second.timer);
    it = fabric_rules_.erase(it);
    ++healed;
  }
  if (healed == 0) {
    return absl::NotFoundError(a.empty()
                                   ? std::string("mon: nothing is partitioned")
                                   : absl::StrCat("mon: ", a, " and ", b, " are not partitioned"));
  }
  RETURN_IF_ERROR(PublishFabric());
  LOG(WARNING) << "mon: fault injection: healed "
               << (a.empty() ? absl::StrCat(healed, " partitions") : absl::StrCat(a, " and ", b));
  return absl::OkStatus();
}

absl::Status RackMonitor::Delay(const std::string& target, absl::Duration delay,
                                absl::Duration for_how_long) {
  if (absl::Status s = FabricElement(target); !s.ok()) return s;
  if (delay < absl::ZeroDuration() || delay > kMaxDelay) {
    return absl::InvalidArgumentError(absl::StrCat("mon: a delay is 0 to ",
                                                   absl::FormatDuration(kMaxDelay), ", not ",
                                                   absl::FormatDuration(delay)));
  }
  for (auto it = fabric_rules_.begin(); it != fabric_rules_.end(); ++it) {
    if (it->second.rule.a == target && it->second.rule.b.empty()) {
      if (it->second.timer != 0) loop_.Unwatch(it->second.timer);
      fabric_rules_.erase(it);
      break;
    }
  }
  if (delay > absl::ZeroDuration()) {
    if (fabric_rules_.size() >= ipc::kFabricRules) {
      return absl::ResourceExhaustedError(
          absl::StrCat("mon: at most ", ipc::kFabricRules, " partitions and delays at once"));
    }
    const uint64_t id = next_rule_++;
    ActiveRule& r = fabric_rules_[id];
    r.rule = {target, "", static_cast<uint64_t>(absl::ToInt64Nanoseconds(delay))};
    if (for_how_long > absl::ZeroDuration()) {
      r.timer = loop_.AddTimer(for_how_long, [this, target, id] {
        auto it = fabric_rules_.find(id);
        if (it == fabric_rules_.end()) return;
        loop_.Unwatch(it->second.timer);  // a timer repeats: once is all it takes
        fabric_rules_.erase(it);
        (void)PublishFabric();
        LOG(WARNING) << "mon: fault injection: the delay of " << target << " ended";
      });
    }
  }
  RETURN_IF_ERROR(PublishFabric());
  LOG(WARNING) << "mon: fault injection: " << target << "'s channels "
               << (delay > absl::ZeroDuration()
                       ? absl::StrCat("hold each message ", absl::FormatDuration(delay))
                       : std::string("are delayed no more"));
  return absl::OkStatus();
}

}  // namespace disagg::rackmon
