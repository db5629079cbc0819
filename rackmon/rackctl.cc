// rackctl: the rack's command-line client.
//   rackctl status [--json]     one row per element (from the rack monitor), one per process
//                               (from the Rack MMU and the compute elements)
//   rackctl run --on cpuN -- PROGRAM ARGS   runs PROGRAM on compute element cpuN (procmon
//                                           starts it; rackctl waits and passes signals on)
//   rackctl check               compares the Rack MMU's map with every memory element's page
//                               table; exit status 0 when they agree
// The rack is the run directory given by --rack, else $DISAGG_RACK.
#include <capnp/compat/json.h>
#include <capnp/message.h>
#include <gflags/gflags.h>
#include <limits.h>
#include <signal.h>
#include <sys/prctl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <map>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "fate_spec.h"
#include "internal/daemon.h"
#include "internal/status_macros.h"
#include "ipc/client.h"
#include "ipc/wire.h"
#include "status_json.capnp.h"

DEFINE_string(rack, "", "the rack's run directory (default: $DISAGG_RACK)");
DEFINE_bool(json, false, "status: print one JSON object instead of a table");
DEFINE_bool(memory_rows, false,
            "status --json: each process's rows from every healthy memory element (mapped "
            "bytes, write-backs, refused, fenced); asks each memory element in turn");
DEFINE_string(on, "", "run, on-failure: the compute element to run the program on, e.g. cpu0");
DEFINE_string(app, "", "run: the application the program belongs to (its fate-sharing spec)");
DEFINE_string(fate, "", "run --app, app: the application's fate-sharing spec (a file)");
DEFINE_int32(timeout_ms, 3000, "how long to wait for the rack's daemons");

namespace disagg::rackctl {
namespace {

constexpr char kUsage[] =
    "usage: rackctl [--rack DIR] COMMAND\n"
    "  status [--json]   show every element of the rack and its health, and its processes\n"
    "  run --on ELEMENT [--app NAME [--fate FILE]] -- PROGRAM [ARGS...]\n"
    "                    run PROGRAM on compute element ELEMENT, as a child of its procmon\n"
    "                    with this terminal's stdio (it joins the rack with libdisagg:\n"
    "                    DISAGG_RACK and DISAGG_ELEMENT are set for it); wait for it and\n"
    "                    end as it ends; signals to rackctl are passed on to it. With --app,\n"
    "                    it belongs to application NAME (DISAGG_APP) and shares fate as\n"
    "                    NAME's spec says; --fate FILE registers that spec first (a\n"
    "                    malformed one is refused with its line number, and nothing runs)\n"
    "  app NAME --fate FILE\n"
    "                    register (or replace) application NAME's fate-sharing spec\n"
    "                    without running anything (the README describes the format)\n"
    "  check             compare the Rack MMU's memory map with every memory element's page\n"
    "                    table: exit status 0 when they agree, else the differences and 1\n"
    "  on-failure NAME [--on ELEMENT] -- PROGRAM [ARGS...]\n"
    "                    a fast failure handler: when a process named NAME fails, the rack\n"
    "                    monitor starts PROGRAM on ELEMENT (or another healthy compute\n"
    "                    element), with this environment and working directory plus\n"
    "                    DISAGG_FAILED_PROCESS (the failed process's rack id, to Steal its\n"
    "                    memory from), DISAGG_FAILED_NAME and DISAGG_FAILED_REASON; its output\n"
    "                    goes to <rack>/on-failure-NAME.log. Without a PROGRAM: removes it\n"
    "fault injection (through the rack monitor):\n"
    "  fail ELEMENT      crash compute or memory element ELEMENT (SIGKILL of its daemon)\n"
    "  kill PROCESS      SIGKILL the application process PROCESS (rack id or name)\n"
    "  pause ELEMENT [--for MS]\n"
    "                    freeze ELEMENT (a compute element with its processes, as a stopped\n"
    "                    blade), for MS milliseconds or until resumed; the monitor declares\n"
    "                    it failed once it has not answered heartbeats for the silence\n"
    "                    limit (scripts/rack --silence-ms, default 200 ms)\n"
    "  resume ELEMENT    thaw a paused element\n"
    "  partition A B [--for MS]\n"
    "                    the channels between elements A and B (compute, memory, or mmu)\n"
    "                    deliver nothing either way until healed (or for MS milliseconds):\n"
    "                    the application processes' calls between them wait, and fail\n"
    "                    UNAVAILABLE at their timeout\n"
    "  heal [A B]        end the partition of A and B (of all, without names)\n"
    "  delay ELEMENT MICROSECONDS [--for MS]\n"
    "                    hold each message on ELEMENT's channels, each way, for MICROSECONDS\n"
    "                    (a rack fabric ~2, a cross-rack hop ~45; 0 ends it)\n";

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

struct ProcessRow {
  uint32_t id = 0;
  std::string name;
  int32_t pid = 0;
  std::string element;
  uint64_t mapped = 0;
  uint64_t cached = 0;
  uint64_t quota = 0;
  bool dead = false;          // its memory is held for adoption
  int64_t release_in_ns = 0;  // ... until then
  std::string app;            // its application ("" if none) and its fate model
  std::string fate;
  struct Memory {
    std::string element;
    uint64_t mapped = 0;
    uint64_t writebacks = 0;
    uint64_t refused = 0;
    bool fenced = false;
  };
  std::vector<Memory> memory;  // what each healthy memory element says of it
};

std::string ProcessState(const ProcessRow& p) {
  if (!p.dead) return "running";
  return absl::StrFormat("dead, held %.1f s", std::max<int64_t>(p.release_in_ns, 0) / 1e9);
}

// The status as one line of JSON (schema: status_json.capnp).
void PrintStatusJson(proto::RackStatus::Reader status, const std::vector<ProcessRow>& processes,
                     int64_t grace_ns) {
  capnp::MallocMessageBuilder message;
  auto out = message.initRoot<StatusJson>();
  out.setRack(status.getRackName());
  auto elements = out.initElements(status.getElements().size());
  size_t i = 0;
  for (auto e : status.getElements()) {
    auto row = elements[i++];
    row.setName(e.getName());
    row.setKind(ipc::KindName(e.getKind()));
    row.setPid(e.getPid());
    row.setState(ipc::HealthName(e.getHealth()));
    row.setCapacityBytes(e.getCapacityBytes());
    row.setUsedBytes(e.getUsedBytes());
    row.setHeartbeatAgeMs(e.getLastHeartbeatAgeNanos() < 0 ? -1
                                                           : e.getLastHeartbeatAgeNanos() / 1e6);
  }
  out.setGracePeriodMs(grace_ns < 0 ? -1 : grace_ns / 1e6);
  auto rows = out.initProcesses(processes.size());
  i = 0;
  for (const ProcessRow& p : processes) {
    auto row = rows[i++];
    row.setId(p.id);
    row.setName(p.name);
    row.setPid(p.pid);
    row.setElement(p.element);
    row.setMappedBytes(p.mapped);
    row.setCachedBytes(p.cached);
    row.setCacheQuotaBytes(p.quota);
    row.setDead(p.dead);
    row.setReleaseInMs(p.dead ? p.release_in_ns / 1e6 : 0);
    row.setApp(p.app);
    row.setFate(p.fate);
    auto memory = row.initMemory(p.memory.size());
    for (size_t m = 0; m < p.memory.size(); ++m) {
      memory[m].setElement(p.memory[m].element);
      memory[m].setMappedBytes(p.memory[m].mapped);
      memory[m].setWritebacks(p.memory[m].writebacks);
      memory[m].setRefused(p.memory[m].refused);
      memory[m].setFenced(p.memory[m].fenced);
    }
  }
  capnp::JsonCodec codec;
  codec.handleByAnnotation<StatusJson>();
  std::printf("%s\n", codec.encode(out.asReader()).cStr());
}

void PrintStatus(proto::RackStatus::Reader status, const std::vector<ProcessRow>& processes,
                 int64_t grace_ns, bool json) {
  if (json) {
    PrintStatusJson(status, processes, grace_ns);
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
  if (processes.empty()) return;
  std::printf("\n%-8s %-16s %8s %-8s %12s %12s %12s  %-20s %s\n", "PROCESS", "NAME", "PID", "ON",
              "MAPPED", "CACHED", "CACHE QUOTA", "APP (FATE)", "STATE");
  uint64_t held = 0;
  for (const ProcessRow& p : processes) {
    const std::string app = p.app.empty() ? "-" : absl::StrCat(p.app, " (", p.fate, ")");
    std::printf("%-8u %-16s %8d %-8s %12s %12s %12s  %-20s %s\n", p.id, p.name.c_str(), p.pid,
                p.element.empty() ? "-" : p.element.c_str(), HumanBytes(p.mapped).c_str(),
                HumanBytes(p.cached).c_str(), HumanBytes(p.quota).c_str(), app.c_str(),
                ProcessState(p).c_str());
    if (p.dead) held += p.mapped;
  }
  if (held > 0) {
    std::printf(
        "\n%s held for adoption (steal) from dead processes, each for %.1f s after its "
        "death\n",
        HumanBytes(held).c_str(), grace_ns / 1e9);
  }
}

// Asks the daemon at `socket` for its status and passes it to `use`; waits at most `timeout`
// (by default --timeout_ms).
absl::Status AskStatus(const std::string& rack, const std::string& daemon,
                       absl::FunctionRef<absl::Status(proto::RackStatus::Reader)> use,
                       absl::Duration timeout = absl::Milliseconds(FLAGS_timeout_ms)) {
  auto client = ipc::Client::Connect(SocketPath(rack, daemon), timeout);
  if (!client.ok()) {
    const std::string who = daemon == "mon"   ? "the rack monitor"
                            : daemon == "mmu" ? "the Rack MMU"
                                              : "element " + daemon;
    return absl::UnavailableError(
        absl::StrCat("cannot reach ", who, " of ", rack, ": ", client.status().message()));
  }
  ipc::SmallMessage request;
  auto root = request.Init();
  root.setStatusRequest();
  return client->Call(
      request.builder(), root,
      [&](proto::Message::Reader reply) {
        if (!reply.isStatus()) return absl::InternalError(absl::StrCat(daemon, " sent no status"));
        return use(reply.getStatus());
      },
      timeout);
}

// The rack's processes: what the Rack MMU knows, with each compute element's cache figures.
// `grace_ns` gets the Rack MMU's grace period for the memory of dead processes (-1: unknown).
std::vector<ProcessRow> Processes(const std::string& rack, proto::RackStatus::Reader elements,
                                  int64_t& grace_ns) {
  std::map<uint32_t, ProcessRow> rows;
  grace_ns = -1;
  absl::Status s = AskStatus(rack, "mmu", [&](proto::RackStatus::Reader status) {
    grace_ns = status.getGracePeriodNanos();
    for (auto p : status.getProcesses()) {
      ProcessRow& row = rows[p.getProcessId()];
      row.id = p.getProcessId();
      row.name = p.getName();
      row.pid = p.getPid();
      row.element = p.getElement();
      row.mapped = p.getMappedBytes();
      row.dead = p.getDead();
      row.release_in_ns = p.getReleaseInNanos();
      row.app = p.getApp();
      row.fate = rackmon::FateModelName(rackmon::ModelFromProto(p.getFate()));
    }
    return absl::OkStatus();
  });
  if (!s.ok()) std::fprintf(stderr, "rackctl: %s\n", std::string(s.message()).c_str());
  // The cache figures come from the compute elements themselves: only from the healthy ones,
  // and briefly, so that a stopped one (not yet suspect) does not hold up the status.
  const absl::Duration figures_timeout =
      std::min(absl::Milliseconds(FLAGS_timeout_ms), absl::Milliseconds(500));
  for (auto e : elements.getElements()) {
    if (e.getHealth() != proto::Health::HEALTHY) continue;
    if (e.getKind() == proto::ElementKind::MEMORY) {
      // What the memory element holds of each process the Rack MMU knows, and how it
      // treats it (the JSON form only: fault runs check that no fenced write lands).
      if (!FLAGS_json || !FLAGS_memory_rows) continue;
      (void)AskStatus(
          rack, e.getName(),
          [&](proto::RackStatus::Reader status) {
            for (auto p : status.getProcesses()) {
              auto row = rows.find(p.getProcessId());
              if (row == rows.end()) continue;
              row->second.memory.push_back({e.getName(), p.getMappedBytes(), p.getWritebacks(),
                                            p.getRefused(), p.getFenced()});
            }
            return absl::OkStatus();
          },
          figures_timeout);
      continue;
    }
    if (e.getKind() != proto::ElementKind::COMPUTE) continue;
    (void)AskStatus(
        rack, e.getName(),
        [&](proto::RackStatus::Reader status) {
          for (auto p : status.getProcesses()) {
            ProcessRow& row = rows[p.getProcessId()];
            row.id = p.getProcessId();
            if (row.name.empty()) row.name = p.getName();
            row.pid = p.getPid();
            row.element = p.getElement();
            row.cached = p.getCachedBytes();
            row.quota = p.getCacheQuotaBytes();
          }
          return absl::OkStatus();
        },
        figures_timeout);
  }
  std::vector<ProcessRow> out;
  for (auto& [id, row] : rows) out.push_back(std::move(row));
  return out;
}

absl::Status Status(const std::string& rack) {
  return AskStatus(rack, "mon", [&](proto::RackStatus::Reader status) {
    int64_t grace_ns;
    std::vector<ProcessRow> processes = Processes(rack, status, grace_ns);
    PrintStatus(status, processes, grace_ns, FLAGS_json);
    return absl::OkStatus();
  });
}

// Asks the Rack MMU to compare its map with the memory elements' page tables; prints the
// outcome. FAILED_PRECONDITION when they differ.
// Asks the rack monitor to inject a fault.
absl::Status Inject(const std::string& rack, proto::FaultAction action, const std::string& target,
                    int64_t for_ms, const std::string& peer = "", int64_t delay_ns = 0) {
  const absl::Duration timeout = absl::Milliseconds(FLAGS_timeout_ms);
  ASSIGN_OR_RETURN(ipc::Client client, ipc::Client::Connect(SocketPath(rack, "mon"), timeout));
  ipc::SmallMessage request;
  auto root = request.Init();
  auto inject = root.initInject();
  inject.setAction(action);
  inject.setTarget(target);
  inject.setForNanos(for_ms * 1000000);
  inject.setPeer(peer);
  inject.setDelayNanos(delay_ns);
  RETURN_IF_ERROR(client.Call(
      request.builder(), root,
      [&](proto::Message::Reader reply) {
        if (!reply.isOk()) return absl::InternalError("the rack monitor sent no answer");
        return absl::OkStatus();
      },
      timeout));
  return absl::OkStatus();
}

absl::Status Check(const std::string& rack) {
  const absl::Duration timeout = absl::Milliseconds(FLAGS_timeout_ms);
  ASSIGN_OR_RETURN(ipc::Client client, ipc::Client::Connect(SocketPath(rack, "mmu"), timeout));
  ipc::SmallMessage request;
  auto root = request.Init();
  root.setCheckRequest();
  size_t differences = 0;
  RETURN_IF_ERROR(client.Call(
      request.builder(), root,
      [&](proto::Message::Reader reply) {
        if (!reply.isCheckResult()) return absl::InternalError("the Rack MMU sent no check result");
        auto result = reply.getCheckResult();
        differences = result.getDifferences().size();
        for (auto d : result.getDifferences()) std::printf("%s\n", d.cStr());
        std::printf("%s: %llu extents on %u memory elements compared, %zu differences\n",
                    differences == 0 ? "consistent" : "INCONSISTENT",
                    static_cast<unsigned long long>(result.getExtents()), result.getElements(),
                    differences);
        return absl::OkStatus();
      },
      timeout));
  if (differences > 0) {
    return absl::FailedPreconditionError(
        "the Rack MMU's map and the memory elements' page tables differ");
  }
  return absl::OkStatus();
}

// The program's path as the shell would find it: as given if it names a directory, else the
// first executable of that name on $PATH.
absl::StatusOr<std::string> FindProgram(const std::string& name) {
  if (name.find('/') != std::string::npos) return name;
  const char* path = std::getenv("PATH");
  for (absl::string_view dir : absl::StrSplit(path != nullptr ? path : "/usr/bin:/bin", ':')) {
    const std::string candidate = absl::StrCat(dir.empty() ? "." : dir, "/", name);
    if (::access(candidate.c_str(), X_OK) == 0) return candidate;
  }
  return absl::NotFoundError(absl::StrCat("cannot run ", name, ": not found on $PATH"));
}

// Set by the signals rackctl passes on to its program.
volatile sig_atomic_t g_pending_signal = 0;
extern "C" void NoteSignal(int sig) { g_pending_signal = sig; }

// The pid of compute element `element`'s procmon, if the rack has that element and it is
// healthy.
absl::StatusOr<pid_t> HealthyComputeElement(const std::string& rack, const std::string& element) {
  pid_t procmon = 0;
  std::string compute;
  RETURN_IF_ERROR(AskStatus(rack, "mon", [&](proto::RackStatus::Reader status) {
    for (auto e : status.getElements()) {
      if (e.getKind() != proto::ElementKind::COMPUTE) continue;
      absl::StrAppend(&compute, compute.empty() ? "" : ", ", e.getName().cStr());
      if (e.getName() == element) {
        if (e.getHealth() != proto::Health::HEALTHY) {
          return absl::UnavailableError(
              absl::StrCat("compute element ", element, " is ", ipc::HealthName(e.getHealth())));
        }
        procmon = static_cast<pid_t>(e.getPid());
      }
    }
    return absl::OkStatus();
  }));
  if (procmon == 0) {
    return absl::NotFoundError(absl::StrCat("the rack has no compute element '", element,
                                            "' (it has: ", compute.empty() ? "none" : compute,
                                            ")"));
  }
  return procmon;
}

// A launch of `program` with the rest of `argv`, this process's environment (with
// DISAGG_APP=`app` instead of its own, if `app` is given), working directory and fds 0-2.
absl::Status BuildLaunch(proto::Launch::Builder launch, const std::string& program, char** argv,
                         const std::string& app = "") {
  size_t argc = 0;
  while (argv[argc] != nullptr) ++argc;
  auto args = launch.initArgv(argc);
  args.set(0, program);
  for (size_t i = 1; i < argc; ++i) args.set(i, argv[i]);
  std::vector<std::string> vars;
  for (size_t i = 0; environ[i] != nullptr; ++i) {
    if (app.empty() || std::strncmp(environ[i], "DISAGG_APP=", 11) != 0) vars.push_back(environ[i]);
  }
  if (!app.empty()) vars.push_back(absl::StrCat("DISAGG_APP=", app));
  auto env = launch.initEnv(vars.size());
  for (size_t i = 0; i < vars.size(); ++i) env.set(i, vars[i]);
  char cwd[PATH_MAX];
  if (::getcwd(cwd, sizeof(cwd)) == nullptr) {
    return absl::FailedPreconditionError(
        absl::StrCat("cannot tell the working directory: ", std::strerror(errno)));
  }
  launch.setCwd(cwd);
  auto stdio = launch.initStdio(3);
  for (int i = 0; i < 3; ++i) stdio.set(i, i);
  return absl::OkStatus();
}

// Registers (or, with no `argv`, removes) the failure handler for processes named `name`.
absl::Status OnFailure(const std::string& rack, const std::string& name, const std::string& element,
                       char** argv) {
  const absl::Duration timeout = absl::Milliseconds(FLAGS_timeout_ms);
  capnp::MallocMessageBuilder builder;
  auto root = builder.initRoot<proto::Message>();
  auto handler = root.initAddFailureHandler();
  handler.setProcessName(name);
  handler.setElement(element);
  if (argv != nullptr && argv[0] != nullptr) {
    ASSIGN_OR_RETURN(const std::string program, FindProgram(argv[0]));
    RETURN_IF_ERROR(BuildLaunch(handler.initLaunch(), program, argv));
  }
  ASSIGN_OR_RETURN(ipc::Client client, ipc::Client::Connect(SocketPath(rack, "mon"), timeout));
  RETURN_IF_ERROR(client.Call(
      builder, root,
      [&](proto::Message::Reader reply) {
        if (!reply.isOk()) return absl::InternalError("the rack monitor sent no answer");
        return absl::OkStatus();
      },
      timeout));
  if (argv != nullptr && argv[0] != nullptr) {
    std::printf("when a process named %s fails, %s starts on %s\n", name.c_str(), argv[0],
                element.empty() ? "a healthy compute element" : element.c_str());
  } else {
    std::printf("removed the failure handler for %s\n", name.c_str());
  }
  return absl::OkStatus();
}

// Registers application `app`'s fate-sharing spec, read from `file`, at the rack monitor.
// A malformed spec is refused here with its line number (and again by the monitor, which
// trusts no client).
absl::Status RegisterApp(const std::string& rack, const std::string& app, const std::string& file) {
  if (!rackmon::ValidAppName(app)) {
    return absl::InvalidArgumentError(
        absl::StrCat("'", app, "' is no application name (1-64 letters, digits, '.', '_' or '-')"));
  }
  std::ifstream in(file, std::ios::binary);
  if (!in)
    return absl::NotFoundError(absl::StrCat("cannot read ", file, ": ", std::strerror(errno)));
  std::ostringstream text;
  text << in.rdbuf();
  if (text.str().size() > rackmon::kMaxFateSpecBytes) {
    return absl::InvalidArgumentError(
        absl::StrCat(file, ": the spec is larger than ", rackmon::kMaxFateSpecBytes, " bytes"));
  }
  ASSIGN_OR_RETURN(const rackmon::FateSpec spec, rackmon::ParseFateSpec(file, text.str()));
  capnp::MallocMessageBuilder builder;
  auto root = builder.initRoot<proto::Message>();
  auto request = root.initRegisterApp();
  request.setApp(app);
  request.setFile(file);
  request.setText(text.str());
  if (!spec.handler_argv.empty()) {
    absl::StatusOr<std::string> program = FindProgram(spec.handler_argv[0]);
    if (program.ok() && ::access(program->c_str(), X_OK) != 0) {
      program =
          absl::NotFoundError(absl::StrCat("cannot run ", *program, ": ", std::strerror(errno)));
    }
    if (!program.ok()) {
      return absl::NotFoundError(
          absl::StrCat(file, ":", spec.handler_line, ": handler: ", program.status().message()));
    }
    std::vector<char*> argv;
    for (const std::string& a : spec.handler_argv) argv.push_back(const_cast<char*>(a.c_str()));
    argv.push_back(nullptr);
    RETURN_IF_ERROR(BuildLaunch(request.initHandler(), *program, argv.data(), app));
    request.setHandlerElement(spec.handler_element);
  }
  const absl::Duration timeout = absl::Milliseconds(FLAGS_timeout_ms);
  ASSIGN_OR_RETURN(ipc::Client client, ipc::Client::Connect(SocketPath(rack, "mon"), timeout));
  return client.Call(
      builder, root,
      [&](proto::Message::Reader reply) {
        if (!reply.isOk()) return absl::InternalError("the rack monitor sent no answer");
        return absl::OkStatus();
      },
      timeout);
}

// How a launched program ended.
struct Ending {
  int exit_code = 0;
  int signal = 0;  // nonzero if a signal ended it
};

// Waits for the program launched by request `seq` to end, passing on the signals NoteSignal
// noted meanwhile.
absl::StatusOr<Ending> WaitForProgram(ipc::Client& client, uint64_t seq,
                                      const std::string& element) {
  std::optional<Ending> ending;
  while (!ending) {
    absl::Status status = client.Await(
        seq,
        [&](proto::Message::Reader reply) {
          if (reply.isExited()) {
            ending = Ending{reply.getExited().getExitCode(), reply.getExited().getSignal()};
          }
          return absl::OkStatus();
        },
        absl::Milliseconds(50));
    if (absl::IsUnavailable(status)) {
      return absl::UnavailableError(
          absl::StrCat("compute element ", element, " is gone; the program ended with it"));
    }
    if (!status.ok() && !absl::IsDeadlineExceeded(status)) return status;
    if (const int sig = g_pending_signal; sig != 0 && !ending) {
      g_pending_signal = 0;
      capnp::MallocMessageBuilder message;
      auto root = message.initRoot<proto::Message>();
      root.initSignalProgram().setSignal(sig);
      RETURN_IF_ERROR(client.Send(message, root).status());
    }
  }
  return *ending;
}

// Runs `argv` on compute element `element` as a child of its procmon, with rackctl's own
// stdin, stdout and stderr, and waits for it: returns its exit code (a program that a signal
// ended ends rackctl with the same signal). SIGINT, SIGTERM, SIGHUP and SIGQUIT are passed on.
absl::StatusOr<int> Run(const std::string& rack, const std::string& element, char** argv,
                        const std::string& app, const std::string& fate) {
  ASSIGN_OR_RETURN(const pid_t procmon, HealthyComputeElement(rack, element));
  ASSIGN_OR_RETURN(const std::string program, FindProgram(argv[0]));
  // The spec only once the program can be started: a mistyped command changes nothing.
  if (!fate.empty()) RETURN_IF_ERROR(RegisterApp(rack, app, fate));
  // The element copies our fds 0-2 for the program (pidfd_getfd); where Yama restricts that
  // to ancestors, this lets the element do it.
  (void)::prctl(PR_SET_PTRACER, procmon, 0, 0, 0);
  ASSIGN_OR_RETURN(ipc::Client client,
                   ipc::Client::Connect(absl::StrCat(rack, "/", element, ".sock")));
  client.set_spin(absl::ZeroDuration());
  capnp::MallocMessageBuilder builder;
  auto root = builder.initRoot<proto::Message>();
  RETURN_IF_ERROR(BuildLaunch(root.initLaunch(), program, argv, app));
  for (int sig : {SIGINT, SIGTERM, SIGHUP, SIGQUIT}) ::signal(sig, NoteSignal);
  ASSIGN_OR_RETURN(const uint64_t seq, client.Send(builder, root));
  RETURN_IF_ERROR(client.Await(seq, [](proto::Message::Reader) { return absl::OkStatus(); }));
  ASSIGN_OR_RETURN(const Ending ending, WaitForProgram(client, seq, element));
  if (ending.signal != 0) {  // end the same way, so that a shell sees what happened
    ::signal(ending.signal, SIG_DFL);
    ::raise(ending.signal);
    return 128 + ending.signal;
  }
  return ending.exit_code;
}

// rackctl's own usage: its commands and its own flags (not the logging library's: those are
// under --helpfull, as gflags programs have them).
void PrintHelp() {
  std::string out = kUsage;
  out += "\nflags:\n";
  std::vector<gflags::CommandLineFlagInfo> flags;
  gflags::GetAllFlags(&flags);
  for (const auto& flag : flags) {
    if (flag.filename.find("rackctl.cc") == std::string::npos) continue;
    absl::StrAppendFormat(&out, "  --%-12s %s (default: %s)\n", flag.name, flag.description,
                          flag.default_value.empty() ? "\"\"" : flag.default_value);
  }
  out += "\nThe logging library's flags: rackctl --helpfull\n";
  std::fputs(out.c_str(), stdout);
}

int Main(int argc, char** argv) {
  gflags::SetUsageMessage(kUsage);
  // --help, -h and `help` show rackctl's own commands and flags; --helpfull shows every flag.
  for (int i = 1; i < argc && std::strcmp(argv[i], "--") != 0; ++i) {
    const char* a = argv[i];
    if (std::strcmp(a, "--help") == 0 || std::strcmp(a, "-help") == 0 ||
        std::strcmp(a, "-h") == 0 || (i == 1 && std::strcmp(a, "help") == 0)) {
      PrintHelp();
      return 0;
    }
  }
  // Everything after "--" is the program `run` starts, untouched by flag parsing.
  char** program = nullptr;
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--") == 0) {
      program = argv + i + 1;
      argv[i] = nullptr;
      argc = i;
      break;
    }
  }
  // pause's --for MS (not a flag of gflags' own: `for` cannot name one).
  std::optional<std::string> for_ms;
  for (int i = 1; i < argc;) {
    std::string a = argv[i];
    int take = 0;
    if (a == "--for" || a == "-for") {
      if (i + 1 >= argc) {
        std::fprintf(stderr, "rackctl: --for needs a number of milliseconds\n");
        return 2;
      }
      for_ms = argv[i + 1];
      take = 2;
    } else if (a.rfind("--for=", 0) == 0) {
      for_ms = a.substr(6);
      take = 1;
    }
    if (take == 0) {
      ++i;
      continue;
    }
    for (int j = i; j + take <= argc; ++j) argv[j] = argv[j + take];
    argc -= take;
  }
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
  if ((!FLAGS_app.empty() && command != "run") ||
      (!FLAGS_fate.empty() && command != "run" && command != "app")) {
    std::fprintf(stderr, "rackctl: --app goes only with run, --fate with run --app and app\n%s",
                 kUsage);
    return 2;
  }
  absl::Status status;
  if (command == "status" && argc == 2) {
    status = Status(rack);
  } else if (command == "check" && argc == 2) {
    status = Check(rack);
  } else if (for_ms && command != "pause" && command != "partition" && command != "delay") {
    std::fprintf(stderr, "rackctl: --for goes only with pause, partition and delay\n%s", kUsage);
    return 2;
  } else if ((command == "fail" || command == "kill" || command == "resume") && argc == 3) {
    const proto::FaultAction action = command == "fail"   ? proto::FaultAction::FAIL
                                      : command == "kill" ? proto::FaultAction::KILL
                                                          : proto::FaultAction::RESUME;
    status = Inject(rack, action, argv[2], 0);
  } else if ((command == "pause" && argc == 3) || (command == "partition" && argc == 4) ||
             (command == "delay" && argc == 4)) {
    int64_t ms = 0;
    if (for_ms && (!absl::SimpleAtoi(*for_ms, &ms) || ms <= 0 || ms > 86400000)) {
      std::fprintf(stderr, "rackctl: --for %s: not a number of milliseconds (1 to 86400000)\n",
                   for_ms->c_str());
      return 2;
    }
    if (command == "pause") {
      status = Inject(rack, proto::FaultAction::PAUSE, argv[2], ms);
    } else if (command == "partition") {
      status = Inject(rack, proto::FaultAction::PARTITION, argv[2], ms, argv[3]);
    } else {
      int64_t us = 0;
      if (!absl::SimpleAtoi(argv[3], &us) || us < 0 || us > 1000000) {
        std::fprintf(stderr, "rackctl: delay %s: not a number of microseconds (0 to 1000000)\n",
                     argv[3]);
        return 2;
      }
      status = Inject(rack, proto::FaultAction::DELAY, argv[2], ms, "", us * 1000);
    }
  } else if (command == "heal" && (argc == 2 || argc == 4)) {
    status = Inject(rack, proto::FaultAction::HEAL, argc == 4 ? argv[2] : "", 0,
                    argc == 4 ? argv[3] : "");
  } else if (command == "on-failure" && argc == 3) {
    status = OnFailure(rack, argv[2], FLAGS_on, program);
  } else if (command == "app" && argc == 3) {
    if (FLAGS_fate.empty() || !FLAGS_on.empty() || program != nullptr) {
      std::fprintf(stderr, "rackctl: app takes NAME and --fate FILE only\n%s", kUsage);
      return 2;
    }
    status = RegisterApp(rack, argv[2], FLAGS_fate);
    if (status.ok())
      std::printf("application %s: fate spec %s registered\n", argv[2], FLAGS_fate.c_str());
  } else if (command == "run" && argc == 2) {
    if (FLAGS_on.empty() || program == nullptr || program[0] == nullptr) {
      std::fprintf(stderr, "rackctl: run needs --on ELEMENT and -- PROGRAM\n%s", kUsage);
      return 2;
    }
    if (!FLAGS_fate.empty() && FLAGS_app.empty()) {
      std::fprintf(stderr, "rackctl: --fate goes with --app NAME\n%s", kUsage);
      return 2;
    }
    if (!FLAGS_app.empty() && !rackmon::ValidAppName(FLAGS_app)) {
      status = absl::InvalidArgumentError(absl::StrCat(
          "'", FLAGS_app, "' is no application name (1-64 letters, digits, '.', '_' or '-')"));
    }
    if (status.ok()) {
      absl::StatusOr<int> code = Run(rack, FLAGS_on, program, FLAGS_app, FLAGS_fate);
      if (code.ok()) return *code;
      status = code.status();
    }
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
