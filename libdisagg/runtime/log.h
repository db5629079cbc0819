// Logging inside the application runtime. libdisagg lives in someone else's program: it logs
// through glog only once the application set glog up itself (google::InitGoogleLogging), so
// a program that never asked for glog sees none of its output (its "Logging before
// InitGoogleLogging" warning included). What an application must hear of, it hears through
// the API: a Status, the memory-fault handler, or the fault message on stderr.
#ifndef DISAGG_RUNTIME_LOG_H_
#define DISAGG_RUNTIME_LOG_H_

#include "internal/logging.h"

#define RLOG(severity) LOG_IF(severity, ::google::IsGoogleLoggingInitialized())
#define RPLOG(severity) PLOG_IF(severity, ::google::IsGoogleLoggingInitialized())

#endif  // DISAGG_RUNTIME_LOG_H_
