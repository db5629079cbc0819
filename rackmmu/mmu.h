// RackMmu: the Rack MMU's service on its event loop: the registry of elements and (later
// issues) placement, page maps, grant and steal. It answers every peer on its Hub.
// Single-threaded, owned by main().
#ifndef DISAGG_RACKMMU_MMU_H_
#define DISAGG_RACKMMU_MMU_H_

#include <string>

#include "ipc/hub.h"
#include "registry.h"

namespace disagg::rackmmu {

class RackMmu : public ipc::Hub::Handler {
 public:
  RackMmu() = default;

  absl::Status OnMessage(ipc::Link& link, proto::Message::Reader message) override;
  void OnClose(ipc::Link& link, const absl::Status& why) override;

  const ElementRegistry& registry() const { return registry_; }

 private:
  absl::Status HandleRegister(ipc::Link& link, uint64_t seq, proto::Register::Reader request);
  absl::Status HandleHealthChange(ipc::Link& link, uint64_t seq,
                                  proto::HealthChange::Reader change);
  absl::Status HandleStatus(ipc::Link& link, uint64_t seq);

  ElementRegistry registry_;
  uint64_t monitor_link_ = 0;  // the rack monitor's connection: the only one trusted on health
};

}  // namespace disagg::rackmmu

#endif  // DISAGG_RACKMMU_MMU_H_
