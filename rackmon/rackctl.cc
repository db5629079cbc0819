// rackctl: the rack's command-line client.
//   rackctl status [--json]     one row per element (from the rack monitor)
// The rack is the run directory given by --rack, else $DISAGG_RACK.
#include <gflags/gflags.h>

#include <cstdio>
#include <cstdlib>
#include <string>

#include <capnp/message.h>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "internal/daemon.h"
#include "ipc/client.h"
#include "ipc/wire.h"

DEFINE_string(rack, "", "the rack's run directory (default: $DISAGG_RACK)");
DEFINE_bool(json, false, "status: print one JSON object instead of a table");
DEFINE_int32(timeout_ms, 3000, "how long to wait for the rack's daemons");

namespace disagg::rackctl {
namespace {

constexpr char kUsage[] =
    "usage: rackctl [--rack DIR] COMMAND\n"
    "  status [--json]   show every element of the rack and its health\n";

std::string JsonString(const std::string& s) {
  std::string out = "\"";
  for (unsigned char c : s) {
    if (c == '"' || c == '\\') {
      out += '\\';
      out += c;
    } else if (c < 0x20) {
      out += absl::StrFormat("\\u%04x", c);
    } else {
      out += c;
    }
  }
  return out + "\"";
}

std::string HumanBytes(uint64_t n) {
  const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  double v = n;
  int u = 0;
  while (v >= 1024 && u < 4) {
    v /= 1024;
    ++u;
  }
  return u == 0 ? absl::StrCat(n, " B") : absl::StrFormat("%.1f %s", v, units[u]);
}

std::string HeartbeatAge(int64_t nanos) {
  if (nanos < 0) return "-";
  return absl::StrFormat("%.1f ms", nanos / 1e6);
}

void PrintStatus(proto::RackStatus::Reader status, bool json) {
  if (json) {
    std::string out = absl::StrCat("{\"rack\":", JsonString(status.getRackName()), ",\"elements\":[");
    bool first = true;
    for (auto e : status.getElements()) {
      absl::StrAppend(&out, first ? "" : ",", "{\"name\":", JsonString(e.getName()),
                      ",\"kind\":\"", ipc::KindName(e.getKind()), "\",\"pid\":", e.getPid(),
                      ",\"state\":\"", ipc::HealthName(e.getHealth()),
                      "\",\"capacity_bytes\":", e.getCapacityBytes(),
                      ",\"used_bytes\":", e.getUsedBytes(), ",\"heartbeat_age_ms\":",
                      e.getLastHeartbeatAgeNanos() < 0
                          ? std::string("null")
                          : absl::StrFormat("%.3f", e.getLastHeartbeatAgeNanos() / 1e6),
                      "}");
      first = false;
    }
    out += "]}";
    std::printf("%s\n", out.c_str());
    return;
  }
  std::printf("rack %s\n", status.getRackName().cStr());
  std::printf("%-8s %-8s %8s %-8s %12s %12s %10s\n", "NAME", "KIND", "PID", "STATE", "CAPACITY",
              "USED", "HEARTBEAT");
  for (auto e : status.getElements()) {
    std::printf("%-8s %-8s %8d %-8s %12s %12s %10s\n", e.getName().cStr(),
                ipc::KindName(e.getKind()), e.getPid(), ipc::HealthName(e.getHealth()),
                e.getCapacityBytes() ? HumanBytes(e.getCapacityBytes()).c_str() : "-",
                e.getCapacityBytes() ? HumanBytes(e.getUsedBytes()).c_str() : "-",
                HeartbeatAge(e.getLastHeartbeatAgeNanos()).c_str());
  }
}

absl::Status Status(const std::string& rack) {
  const absl::Duration timeout = absl::Milliseconds(FLAGS_timeout_ms);
  auto client = ipc::Client::Connect(SocketPath(rack, "mon"), timeout);
  if (!client.ok()) {
    return absl::UnavailableError(absl::StrCat("cannot reach the rack monitor of ", rack, ": ",
                                               client.status().message()));
  }
  capnp::MallocMessageBuilder builder;
  auto request = builder.initRoot<proto::Message>();
  request.setStatusRequest();
  return client->Call(
      builder, request,
      [&](proto::Message::Reader reply) {
        if (!reply.isStatus()) return absl::InternalError("rack monitor sent no status");
        PrintStatus(reply.getStatus(), FLAGS_json);
        return absl::OkStatus();
      },
      timeout);
}

int Main(int argc, char** argv) {
  gflags::SetUsageMessage(kUsage);
  gflags::ParseCommandLineFlags(&argc, &argv, true);
  std::string rack = FLAGS_rack;
  if (rack.empty() && std::getenv("DISAGG_RACK") != nullptr) rack = std::getenv("DISAGG_RACK");
  if (argc < 2) {
    std::fputs(kUsage, stderr);
    return 2;
  }
  const std::string command = argv[1];
  if (rack.empty()) {
    std::fprintf(stderr, "rackctl: no rack given: pass --rack DIR or set DISAGG_RACK\n");
    return 2;
  }
  absl::Status status;
  if (command == "status" && argc == 2) {
    status = Status(rack);
  } else {
    std::fprintf(stderr, "rackctl: unknown command or arguments: %s\n%s", command.c_str(), kUsage);
    return 2;
  }
  if (!status.ok()) {
    std::fprintf(stderr, "rackctl: %s\n", std::string(status.message()).c_str());
    return 1;
  }
  return 0;
}

}  // namespace
}  // namespace disagg::rackctl

int main(int argc, char** argv) { return disagg::rackctl::Main(argc, argv); }
