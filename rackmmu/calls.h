// PendingCalls: the Rack MMU's requests to its peers (page-table programming, rebinding,
// releasing, page-table dumps) that await a reply. A reply is matched to its request by
// (link, seq), never recognised by its kind; a link that closes fails its calls with
// UNAVAILABLE. CallBatch runs one callback when all the calls of one operation answered.
// Value types; not thread-safe (the Rack MMU's loop owns them).
#ifndef DISAGG_RACKMMU_CALLS_H_
#define DISAGG_RACKMMU_CALLS_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "proto/rack.capnp.h"

namespace disagg::rackmmu {

class PendingCalls {
 public:
  // The reply (valid only during the call), or the error it carried, or UNAVAILABLE when the
  // link closed first.
  using Callback = std::function<void(const absl::StatusOr<proto::Message::Reader>&)>;

  // A fresh seq for a request about to go out on `link_id`, answered through `callback`.
  uint64_t Add(uint64_t link_id, Callback callback) {
    const uint64_t seq = next_seq_++;
    calls_[Key(link_id, seq)] = std::move(callback);
    return seq;
  }
  // Forgets a call whose request could not be sent.
  // False if the call is not pending (answered already, e.g. by FailLink).
  bool Drop(uint64_t link_id, uint64_t seq) { return calls_.erase(Key(link_id, seq)) > 0; }
  // A reply to `seq` arrived on `link_id`. false if no such call is pending (the caller logs
  // the stray reply).
  bool Complete(uint64_t link_id, uint64_t seq,
                const absl::StatusOr<proto::Message::Reader>& reply) {
    auto it = calls_.find(Key(link_id, seq));
    if (it == calls_.end()) return false;
    Callback callback = std::move(it->second);
    calls_.erase(it);
    callback(reply);
    return true;
  }
  // `link_id` closed: every call pending on it fails with `why`.
  void FailLink(uint64_t link_id, const absl::Status& why) {
    std::vector<Callback> failed;
    for (auto it = calls_.begin(); it != calls_.end();) {
      if (it->first.first == link_id) {
        failed.push_back(std::move(it->second));
        calls_.erase(it++);
      } else {
        ++it;
      }
    }
    for (Callback& callback : failed) callback(why);
  }
  size_t size() const { return calls_.size(); }

 private:
  static std::pair<uint64_t, uint64_t> Key(uint64_t link, uint64_t seq) { return {link, seq}; }
  absl::flat_hash_map<std::pair<uint64_t, uint64_t>, Callback> calls_;
  uint64_t next_seq_ = 1;
};

// Counts the answers of one operation's calls; `done` runs once, with the first error (or
// OK), after Seal() and the last answer, whichever comes later. Shared by the calls'
// callbacks.
class CallBatch {
 public:
  explicit CallBatch(std::function<void(const absl::Status&)> done) : done_(std::move(done)) {}
  static std::shared_ptr<CallBatch> Make(std::function<void(const absl::Status&)> done) {
    return std::make_shared<CallBatch>(std::move(done));
  }
  void Expect() { ++left_; }
  void Answer(const absl::Status& status) {
    if (!status.ok() && first_error_.ok()) first_error_ = status;
    --left_;
    MaybeDone();
  }
  void Seal() {
    sealed_ = true;
    MaybeDone();
  }

 private:
  void MaybeDone() {
    if (!sealed_ || left_ > 0 || !done_) return;
    auto done = std::move(done_);
    done_ = nullptr;
    done(first_error_);
  }
  std::function<void(const absl::Status&)> done_;
  int left_ = 0;
  bool sealed_ = false;
  absl::Status first_error_;
};

}  // namespace disagg::rackmmu

#endif  // DISAGG_RACKMMU_CALLS_H_
