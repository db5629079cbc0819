// Peer: a rack_peer process (test/rack_peer.cc) joined to a test's rack, driven by one-line
// commands. Lets a test play several application processes at once. The destructor ends the
// peer (it leaves the rack on end of input) and reaps it, killing it if it does not end.
#ifndef DISAGG_TEST_RACK_PEER_DRIVER_H_
#define DISAGG_TEST_RACK_PEER_DRIVER_H_

#include <sys/types.h>

#include <cstdint>
#include <string>
#include <vector>

namespace disagg::testing {

class Peer {
 public:
  // Starts rack_peer on compute element `element` of the rack in `rack_dir` and waits until it
  // joined; its standard error goes to `stderr_path` if given. ok() is false (and error()
  // says why) if it could not.
  Peer(const std::string& rack_dir, const std::string& element,
       const std::string& stderr_path = "");
  // Starts `program` (a name in the build's bin directory) with `args` instead: any program
  // that prints "ready ID" once it joined. `env` (NAME=value) is added to its environment.
  Peer(const std::string& rack_dir, const std::string& element, const std::string& stderr_path,
       const std::string& program, const std::vector<std::string>& args,
       const std::vector<std::string>& env = {});
  ~Peer();
  Peer(const Peer&) = delete;
  Peer& operator=(const Peer&) = delete;

  bool ok() const { return id_ != 0; }
  const std::string& error() const { return error_; }
  uint32_t id() const { return id_; }
  pid_t pid() const { return pid_; }

  // Sends `command` and returns its one-line answer ("" if the peer is gone or silent for
  // 20 s).
  std::string Ask(const std::string& command);
  // Ask in two halves, so that several peers can be given commands at once.
  void Send(const std::string& command);
  std::string Answer() { return ReadLine(20000); }
  // The answer if it comes within `ms` milliseconds, else "" (it may still come later).
  std::string AnswerWithin(int ms) { return ReadLine(ms); }
  // Sends a command that ends the peer (crash, quit) and reaps it; returns its wait status.
  int End(const std::string& command);
  // SIGKILLs the peer and reaps it; its output so far can still be read (Answer).
  void Kill();

 private:
  std::string ReadLine(int timeout_ms);

  pid_t pid_ = -1;
  int to_ = -1;
  int from_ = -1;
  uint32_t id_ = 0;
  std::string error_;
  std::string pending_;
};

std::string HexAddr(uint64_t addr);

}  // namespace disagg::testing

#endif  // DISAGG_TEST_RACK_PEER_DRIVER_H_
