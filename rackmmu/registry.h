// ElementRegistry: the Rack MMU's table of the rack's elements: who registered under which
// name, of what kind and capacity, and what the rack monitor last said of its health.
// Value type; not thread-safe (the Rack MMU's loop owns it).
#ifndef DISAGG_RACKMMU_REGISTRY_H_
#define DISAGG_RACKMMU_REGISTRY_H_

#include <sys/types.h>

#include <cstdint>
#include <map>
#include <string>

#include "absl/status/statusor.h"
#include "proto/rack.capnp.h"

namespace disagg::rackmmu {

struct ElementRecord {
  uint32_t id = 0;
  std::string name;
  proto::ElementKind kind = proto::ElementKind::CLIENT;
  pid_t pid = 0;
  uint64_t capacity_bytes = 0;
  proto::Health health = proto::Health::HEALTHY;
  uint64_t link_id = 0;  // 0 once the element's connection is gone
};

class ElementRegistry {
 public:
  // Records element `name`. Names are rack-unique: ALREADY_EXISTS while a live element holds
  // it; a failed or disconnected element's name may be taken over (a restart). INVALID_ARGUMENT
  // for an empty or overlong name, a client kind, or a memory element with no capacity.
  absl::StatusOr<uint32_t> Register(const std::string& name, proto::ElementKind kind, pid_t pid,
                                    uint64_t capacity_bytes, uint64_t link_id);
  // Records the rack monitor's verdict. NOT_FOUND for an unknown name.
  absl::Status SetHealth(const std::string& name, proto::Health health);
  // The element on connection `link_id` went away. Returns its name, or "" if none.
  std::string Disconnected(uint64_t link_id);

  const std::map<std::string, ElementRecord>& elements() const { return elements_; }

 private:
  uint32_t next_id_ = 1;
  std::map<std::string, ElementRecord> elements_;
};

}  // namespace disagg::rackmmu

#endif  // DISAGG_RACKMMU_REGISTRY_H_
