#include "rack_peer_driver.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cinttypes>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <thread>
#include <vector>

namespace disagg::testing {

std::string HexAddr(uint64_t addr) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "0x%" PRIx64, addr);
  return buf;
}

Peer::Peer(const std::string& rack_dir, const std::string& element, const std::string& stderr_path)
    : Peer(rack_dir, element, stderr_path, "rack_peer", {}) {}

Peer::Peer(const std::string& rack_dir, const std::string& element, const std::string& stderr_path,
           const std::string& program, const std::vector<std::string>& args,
           const std::vector<std::string>& env) {
  signal(SIGPIPE, SIG_IGN);  // a peer that died must fail the test, not kill it
  int in[2], out[2];
  if (pipe2(in, O_CLOEXEC) != 0 || pipe2(out, O_CLOEXEC) != 0) {
    error_ = "pipe failed";
    return;
  }
  // Built before fork: the child only execs.
  const std::string path = std::string(DISAGG_BIN_DIR) + "/" + program;
  std::vector<char*> argv{const_cast<char*>(program.c_str())};
  for (const std::string& arg : args) argv.push_back(const_cast<char*>(arg.c_str()));
  argv.push_back(nullptr);
  pid_ = fork();
  if (pid_ == 0) {
    dup2(in[0], 0);
    dup2(out[1], 1);
    if (!stderr_path.empty()) {
      const int err = open(stderr_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
      if (err >= 0) dup2(err, 2);
    }
    setenv("DISAGG_RACK", rack_dir.c_str(), 1);
    setenv("DISAGG_ELEMENT", element.c_str(), 1);
    for (const std::string& var : env) putenv(const_cast<char*>(var.c_str()));
    execv(path.c_str(), argv.data());
    _exit(127);
  }
  close(in[0]);
  close(out[1]);
  to_ = in[1];
  from_ = out[0];
  const std::string ready = ReadLine(20000);
  if (ready.rfind("ready ", 0) != 0) {
    error_ = program + " did not join: " + ready;
    return;
  }
  id_ = static_cast<uint32_t>(std::strtoul(ready.c_str() + 6, nullptr, 10));
}

Peer::~Peer() {
  if (to_ >= 0) close(to_);  // end of input: the peer leaves the rack and exits
  if (pid_ > 0) {
    for (int i = 0; i < 500; ++i) {
      if (waitpid(pid_, nullptr, WNOHANG) == pid_) {
        pid_ = -1;
        break;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    if (pid_ > 0) {
      kill(pid_, SIGKILL);
      waitpid(pid_, nullptr, 0);
    }
  }
  if (from_ >= 0) close(from_);
}

std::string Peer::ReadLine(int timeout_ms) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
  while (true) {
    const size_t nl = pending_.find('\n');
    if (nl != std::string::npos) {
      std::string line = pending_.substr(0, nl);
      pending_.erase(0, nl + 1);
      return line;
    }
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) return "";
    struct pollfd fd = {from_, POLLIN, 0};
    if (poll(&fd, 1, static_cast<int>(left.count())) <= 0) continue;
    char buf[4096];
    const ssize_t n = read(from_, buf, sizeof(buf));
    if (n <= 0) return "";
    pending_.append(buf, n);
  }
}

void Peer::Send(const std::string& command) {
  const std::string line = command + "\n";
  (void)!write(to_, line.data(), line.size());
}

std::string Peer::Ask(const std::string& command) {
  Send(command);
  return ReadLine(20000);
}

void Peer::Kill() {
  if (pid_ <= 0) return;
  kill(pid_, SIGKILL);
  waitpid(pid_, nullptr, 0);
  pid_ = -1;
}

int Peer::End(const std::string& command) {
  const std::string line = command + "\n";
  (void)!write(to_, line.data(), line.size());
  int status = -1;
  if (pid_ > 0 && waitpid(pid_, &status, 0) == pid_) pid_ = -1;
  return status;
}

}  // namespace disagg::testing
