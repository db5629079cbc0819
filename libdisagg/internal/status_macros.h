// Helpers for absl::Status plumbing used across the project. Header-only, thread-safe.
#ifndef DISAGG_INTERNAL_STATUS_MACROS_H_
#define DISAGG_INTERNAL_STATUS_MACROS_H_

#include <cerrno>
#include <cstring>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"

namespace disagg {

// A Status for the current errno, with `what` as context ("connect /tmp/x: No such file").
inline absl::Status ErrnoStatus(absl::string_view what, int error = errno) {
  return absl::ErrnoToStatus(error, what);
}

}  // namespace disagg

#define DISAGG_CONCAT_INNER_(a, b) a##b
#define DISAGG_CONCAT_(a, b) DISAGG_CONCAT_INNER_(a, b)

// Returns from the enclosing function if `expr` (an absl::Status) is not OK.
#define RETURN_IF_ERROR(expr)                        \
  do {                                               \
    ::absl::Status disagg_status_ = (expr);          \
    if (!disagg_status_.ok()) return disagg_status_; \
  } while (0)

// `lhs = value of expr` if expr (an absl::StatusOr) is OK, else returns its status.
#define ASSIGN_OR_RETURN(lhs, expr) \
  ASSIGN_OR_RETURN_IMPL_(DISAGG_CONCAT_(disagg_statusor_, __LINE__), lhs, expr)
#define ASSIGN_OR_RETURN_IMPL_(tmp, lhs, expr) \
  auto tmp = (expr);                           \
  if (!tmp.ok()) return tmp.status();          \
  lhs = std::move(tmp).value()

#endif  // DISAGG_INTERNAL_STATUS_MACROS_H_
