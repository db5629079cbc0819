// FateSpec: an application's fate-sharing spec, the text file given to
// `rackctl run --app NAME --fate FILE` (and `rackctl app NAME --fate FILE`). It chooses which
// failures the application's processes share fate with, who hears of a failure, and which
// fast failure handler runs. One directive per line; `#` starts a comment:
//
//   model complete|partial|tainted|none      required, once
//   taint-stops-at memory|users              tainted only (default memory)
//   notify groups|app|none ...               who hears of a failed process (default groups)
//   handler [--on ELEMENT] PROGRAM [ARGS...] started when one of its processes fails
//
//   complete  any failure of an element the application uses (a compute element one of its
//             processes runs on, a memory element holding its memory) or of one of its
//             processes fails the whole application: all its processes end, its memory is
//             released.
//   partial   a failed process's memory fails with it, at once: it is released, never held
//             for adoption; a process whose memory element fails is ended with it.
//   tainted   memory elements holding write-backs of the failed process that it never saw
//             acknowledged join the failure: the application's memory on them fails (its
//             owners are told, its pages are gone). `users` carries the taint one step
//             further: the application's processes with memory there fail too, and there
//             it stops.
//   none      only the failed element or process; orphaned memory is held for steal.
//
// Parsing is a pure function of the text: the rack monitor validates every spec it is
// given, whatever the client checked.
#ifndef DISAGG_RACKMON_FATE_SPEC_H_
#define DISAGG_RACKMON_FATE_SPEC_H_

#include <cstddef>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "proto/rack.capnp.h"

namespace disagg::rackmon {

enum class FateModel { kNone, kComplete, kPartial, kTainted };
enum class TaintStop { kMemory, kUsers };

struct FateSpec {
  FateModel model = FateModel::kNone;
  TaintStop taint_stop = TaintStop::kMemory;
  bool notify_groups = true;  // the failed process's trust groups hear of it (peerFailed)
  bool notify_app = false;    // every live process of the application does
  // The handler: empty argv for none. argv[0] is the program as written in the spec.
  std::string handler_element;
  std::vector<std::string> handler_argv;
  int handler_line = 0;  // where the handler was given, for errors about it
};

inline constexpr size_t kMaxFateSpecBytes = 64 * 1024;

// Parses `text`, read from `file` (named in errors). INVALID_ARGUMENT "FILE:LINE: why" for
// the first malformed line, or "FILE: why" for what is missing or too large.
absl::StatusOr<FateSpec> ParseFateSpec(const std::string& file, const std::string& text);

// "complete", "partial", "tainted", "none".
const char* FateModelName(FateModel model);
const char* TaintStopName(TaintStop stop);

// The spec as the wire carries it (all but the handler, which the rack monitor keeps).
proto::FateModel ModelToProto(FateModel model);
void SpecToProto(const FateSpec& spec, proto::FateSpec::Builder out);
FateModel ModelFromProto(proto::FateModel model);  // none for a value this build does not know
FateSpec SpecFromProto(proto::FateSpec::Reader in);

// True for an application name: 1-64 bytes of letters, digits, '.', '_' and '-', not
// starting with '.' or '-'.
bool ValidAppName(const std::string& name);

}  // namespace disagg::rackmon

#endif  // DISAGG_RACKMON_FATE_SPEC_H_
