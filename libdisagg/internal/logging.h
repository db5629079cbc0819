// The project's one logging header: glog. Include this, never <glog/logging.h> directly.
// LOG(INFO) for lifecycle events, VLOG(n) for per-message traffic.
#ifndef DISAGG_INTERNAL_LOGGING_H_
#define DISAGG_INTERNAL_LOGGING_H_

#include <glog/logging.h>

#endif  // DISAGG_INTERNAL_LOGGING_H_
