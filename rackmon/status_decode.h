// Reading `rackctl status --json` back: the codec that wrote it, for the tools and tests that
// watch a rack from outside (fault_run, the test harness).
#ifndef DISAGG_RACKMON_STATUS_DECODE_H_
#define DISAGG_RACKMON_STATUS_DECODE_H_

#include <functional>
#include <string>

#include "status_json.capnp.h"

namespace disagg::rackctl {

// Decodes the JSON object in `text` (from its first '{') and passes it to `use`; false if
// there is none or it does not decode.
bool DecodeStatusJson(const std::string& text, const std::function<void(StatusJson::Reader)>& use);

}  // namespace disagg::rackctl

#endif  // DISAGG_RACKMON_STATUS_DECODE_H_
