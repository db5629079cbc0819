// TestRack: a private rack for one test, in its own temporary run directory, started with the
// real scripts/rack and daemons, and always torn down: by the destructor, also when the test
// fails, and by a reaper process when the test process ends without running it.
#ifndef DISAGG_TEST_RACK_HARNESS_H_
#define DISAGG_TEST_RACK_HARNESS_H_

#include <sys/types.h>

#include <map>
#include <string>
#include <vector>

namespace disagg::testing {

// Runs `command` through /bin/sh; returns its exit status and stores stdout+stderr in `output`.
int RunCommand(const std::string& command, std::string* output = nullptr);

// True if `pid` exists and is not a zombie.
bool ProcessAlive(pid_t pid);

struct ElementRow {
  std::string kind;
  pid_t pid = 0;
  std::string state;
  uint64_t capacity_bytes = 0;
  uint64_t used_bytes = 0;
};

struct ProcessRow {
  uint32_t id = 0;
  std::string name;
  uint64_t mapped_bytes = 0;
  uint64_t cached_bytes = 0;
  uint64_t cache_quota_bytes = 0;
  bool dead = false;
};

class TestRack {
 public:
  // Makes a fresh run directory and starts the reaper; the rack is not started yet. Its daemons
  // are the ones in `bin_dir` (by default the build's; the TSan build's tests use the release
  // build's).
  explicit TestRack(std::string bin_dir = DISAGG_DAEMON_BIN_DIR);
  // Stops the rack (by its recorded pids) and removes the run directory.
  ~TestRack();
  TestRack(const TestRack&) = delete;
  TestRack& operator=(const TestRack&) = delete;

  // scripts/rack up --dir <dir> <args>; returns the exit status. Unless `args` name
  // --silence-ms, the rack tolerates 2 s without an answer to heartbeats (not the default 200 ms).
  int Up(const std::string& args = "--compute 2 --memory 2 --pool-size 64M",
         std::string* output = nullptr);
  int Down(std::string* output = nullptr);

  // `rackctl status --json`, parsed into name -> row. Empty if rackctl failed.
  std::map<std::string, ElementRow> Status();
  // The processes `rackctl status --json` lists. Empty if rackctl failed.
  std::vector<ProcessRow> Processes();
  // Polls Status() until element `name` is in `state` or `timeout_ms` passes.
  bool WaitForState(const std::string& name, const std::string& state, int timeout_ms = 10000);
  // The pid recorded in <dir>/pids/<element>.pid, or 0.
  pid_t Pid(const std::string& element) const;
  std::vector<pid_t> AllPids() const;

  const std::string& dir() const { return dir_; }
  std::string Socket(const std::string& element) const { return dir_ + "/" + element + ".sock"; }

 private:
  std::string bin_dir_;
  std::string dir_;
  pid_t reaper_ = -1;     // the shell that tears the rack down if this process dies first
  int reaper_pipe_ = -1;  // its stdin; "done" tells it the destructor did the work
};

}  // namespace disagg::testing

#endif  // DISAGG_TEST_RACK_HARNESS_H_
