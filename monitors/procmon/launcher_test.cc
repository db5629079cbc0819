#include "launcher.h"

#include <signal.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <string>

#include "internal/daemon.h"

namespace disagg::procmon {
namespace {

TEST_CASE("A program's environment is the caller's, with the element's entries replacing") {
  const std::vector<std::string> merged =
      MergeEnvironment({"A=1", "DISAGG_RACK=/old", "DISAGG_RACKS=kept", "B=2"},
                       {"DISAGG_RACK=/r", "DISAGG_ELEMENT=cpu0"});
  REQUIRE(merged == std::vector<std::string>{"A=1", "DISAGG_RACKS=kept", "B=2", "DISAGG_RACK=/r",
                                             "DISAGG_ELEMENT=cpu0"});
}

// Runs `script` under /bin/sh with SpawnProgram; its stdout and stderr, and its wait status.
struct Ran {
  std::string out, err;
  int status = -1;
};

std::string Drain(int fd) {
  std::string s;
  char buf[4096];
  ssize_t n;
  while ((n = ::read(fd, buf, sizeof(buf))) > 0) s.append(buf, static_cast<size_t>(n));
  ::close(fd);
  return s;
}

Ran Run(const std::string& script, const std::vector<std::string>& env, const std::string& cwd) {
  int in[2], out[2], err[2];
  REQUIRE(::pipe(in) == 0);
  REQUIRE(::pipe(out) == 0);
  REQUIRE(::pipe(err) == 0);
  const int stdio[3] = {in[0], out[1], err[1]};
  absl::StatusOr<pid_t> pid = SpawnProgram({"/bin/sh", "-c", script}, env, cwd, stdio);
  for (int fd : {in[0], in[1], out[1], err[1]}) ::close(fd);
  INFO(pid.status());
  REQUIRE(pid.ok());
  Ran ran;
  ran.out = Drain(out[0]);
  ran.err = Drain(err[0]);
  REQUIRE(::waitpid(*pid, &ran.status, 0) == *pid);
  return ran;
}

TEST_CASE("A spawned program gets its argv, environment, directory and stdio") {
  const Ran ran = Run("pwd; echo \"$FOO\"; echo oops >&2; exit 3", {"FOO=bar"}, "/tmp");
  REQUIRE(ran.out == "/tmp\nbar\n");
  REQUIRE(ran.err == "oops\n");
  REQUIRE(WIFEXITED(ran.status));
  REQUIRE(WEXITSTATUS(ran.status) == 3);
}

TEST_CASE(
    "A spawned program starts with no blocked or ignored signals, in its own group, at "
    "the daemon's original nice") {
  // What the daemon's loop does to itself: SIGTERM blocked, SIGPIPE ignored, a raised nice.
  sigset_t term, old_mask;
  sigemptyset(&term);
  sigaddset(&term, SIGTERM);
  REQUIRE(pthread_sigmask(SIG_BLOCK, &term, &old_mask) == 0);
  auto old_pipe = ::signal(SIGPIPE, SIG_IGN);
  const int old_nice = ::getpriority(PRIO_PROCESS, 0);
  REQUIRE(::setpriority(PRIO_PROCESS, 0, BaseNice() + 5) == 0);
  const Ran ran =
      Run("grep -E '^Sig(Blk|Ign):' /proc/self/status; "
          "[ \"$(ps -o pgid= -p $$ | tr -d ' ')\" = \"$$\" ] && echo own-group; "
          "cut -d' ' -f19 /proc/self/stat",
          {"PATH=/usr/bin:/bin"}, "/");
  (void)::setpriority(PRIO_PROCESS, 0, old_nice);
  ::signal(SIGPIPE, old_pipe);
  pthread_sigmask(SIG_SETMASK, &old_mask, nullptr);
  INFO(ran.err);
  REQUIRE(ran.out == "SigBlk:\t0000000000000000\nSigIgn:\t0000000000000000\nown-group\n" +
                         std::to_string(BaseNice()) + "\n");
}

TEST_CASE("A program that cannot be started is refused, saying why") {
  int null_fd = ::open("/dev/null", O_RDWR);
  REQUIRE(null_fd >= 3);
  const int stdio[3] = {null_fd, null_fd, null_fd};
  absl::StatusOr<pid_t> missing = SpawnProgram({"/no/such/program"}, {}, "/", stdio);
  REQUIRE(absl::IsNotFound(missing.status()));
  REQUIRE_THAT(std::string(missing.status().message()),
               Catch::Contains("cannot run /no/such/program: No such file or directory"));
  absl::StatusOr<pid_t> nowhere = SpawnProgram({"/bin/true"}, {}, "/no/such/dir", stdio);
  REQUIRE(absl::IsNotFound(nowhere.status()));
  REQUIRE_THAT(std::string(nowhere.status().message()),
               Catch::Contains("cannot enter /no/such/dir: No such file or directory"));
  REQUIRE(absl::IsInvalidArgument(SpawnProgram({}, {}, "/", stdio).status()));
  const int low[3] = {0, 1, 2};
  REQUIRE(absl::IsInvalidArgument(SpawnProgram({"/bin/true"}, {}, "/", low).status()));
  ::close(null_fd);
  int status = 0;
  REQUIRE(::waitpid(-1, &status, WNOHANG) <= 0);  // nothing left behind to reap
}

}  // namespace
}  // namespace disagg::procmon
