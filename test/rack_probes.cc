#include "rack_probes.h"

#include <chrono>
#include <thread>

#include "ipc/client.h"
#include "ipc/wire.h"

namespace disagg::testing {

uint64_t Addr(const std::string& hex) { return std::stoull(hex, nullptr, 16); }

std::string Range(uint64_t addr, uint64_t bytes) {
  return HexAddr(addr) + " " + std::to_string(bytes);
}

std::string Rackctl(const TestRack& rack, const std::string& args, int* rc) {
  std::string out;
  const int status =
      RunCommand(std::string(DISAGG_BIN_DIR) + "/rackctl --rack " + rack.dir() + " " + args, &out);
  if (rc != nullptr) *rc = status;
  return out;
}

bool Consistent(const TestRack& rack, std::string* out) {
  int rc = 0;
  *out = Rackctl(rack, "check", &rc);
  return rc == 0 && out->find("consistent:") != std::string::npos;
}

bool WaitForEvent(Peer& peer, const std::string& wanted) {
  for (int i = 0; i < 1000; ++i) {
    if (peer.Ask("events").find(wanted) != std::string::npos) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return false;
}

std::map<uint32_t, MemoryRow> MemoryStatus(const TestRack& rack, const std::string& element) {
  std::map<uint32_t, MemoryRow> rows;
  absl::StatusOr<ipc::Client> client = ipc::Client::Connect(rack.Socket(element), absl::Seconds(5));
  if (!client.ok()) return rows;
  ipc::SmallMessage request;
  auto root = request.Init();
  root.setStatusRequest();
  (void)client->Call(
      request.builder(), root,
      [&](proto::Message::Reader reply) {
        for (auto p : reply.getStatus().getProcesses()) {
          rows[p.getProcessId()] = {p.getMappedBytes(), p.getWritebacks(), p.getRefused(),
                                    p.getFenced()};
        }
        return absl::OkStatus();
      },
      absl::Seconds(5));
  return rows;
}

}  // namespace disagg::testing
