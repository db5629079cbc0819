@0xb7a1c39e5f2d4a10;
# The rack's wire schema: every message between daemons and applications is one `Message`.
# A request carries a fresh nonzero `seq`; its reply echoes it. Messages a daemon sends on
# its own initiative (heartbeats, notices) carry seq 0 unless they expect a reply.

using Cxx = import "/capnp/c++.capnp";
$Cxx.namespace("disagg::proto");

enum ElementKind {
  rackmmu @0;
  rackmon @1;
  compute @2;
  memory @3;
  client @4;     # rackctl, tests, applications: not part of the rack's element table
}

enum Health {
  healthy @0;
  suspect @1;    # missed a heartbeat or more, not yet declared failed
  failed @2;     # declared failed: dead, hung past the limit, or hung up
}

# Sent by an element to the Rack MMU and to the rack monitor as its first message.
struct Register {
  name @0 :Text;            # rack-wide element name: "cpu0", "mem1", ...
  kind @1 :ElementKind;
  capacityBytes @2 :UInt64; # memory element: pool size; compute element: cache budget
}

struct Registered {
  elementId @0 :UInt32;
}

# Mirrors absl::StatusCode so that a daemon's error reaches the caller as the same Status.
struct Error {
  code @0 :UInt32;
  message @1 :Text;
}

struct Ping {
  sentNanos @0 :UInt64;     # sender's CLOCK_MONOTONIC; echoed in the pong
}

struct Pong {
  sentNanos @0 :UInt64;
  usedBytes @1 :UInt64;     # the element's current use of its capacity
}

struct ElementStatus {
  name @0 :Text;
  kind @1 :ElementKind;
  pid @2 :Int32;
  health @3 :Health;
  capacityBytes @4 :UInt64;
  usedBytes @5 :UInt64;
  lastHeartbeatAgeNanos @6 :Int64;  # -1: never heard
}

struct RackStatus {
  rackName @0 :Text;
  elements @1 :List(ElementStatus);
}

# The rack monitor tells the Rack MMU when an element's health changes.
struct HealthChange {
  name @0 :Text;
  health @1 :Health;
  reason @2 :Text;
}

struct Message {
  seq @0 :UInt64;
  union {
    register @1 :Register;
    registered @2 :Registered;
    error @3 :Error;
    ping @4 :Ping;
    pong @5 :Pong;
    statusRequest @6 :Void;
    status @7 :RackStatus;
    healthChange @8 :HealthChange;
    ok @9 :Void;
    echo @10 :Data;          # benchmarks and liveness probes: answered with the same bytes
  }
}

# Only for the benchmark baseline: Cap'n Proto's own two-party RPC.
interface EchoRpc {
  echo @0 (payload :Data) -> (payload :Data);
}
