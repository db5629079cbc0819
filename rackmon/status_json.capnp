@0xb739a311eb523dab;
# The JSON form of `rackctl status --json`: encoded and decoded by Cap'n Proto's JSON codec, so
# its keys (snake_case, below) and shapes are fixed here, whatever order or spacing it prints.
# 64-bit integers are JSON strings (as in Cap'n Proto's and protobuf's JSON mappings): a JSON
# number cannot hold them all exactly.

using Cxx = import "/capnp/c++.capnp";
using Json = import "/capnp/compat/json.capnp";
$Cxx.namespace("disagg::rackctl");

struct StatusJson {
  rack @0 :Text;
  elements @1 :List(ElementJson);
  gracePeriodMs @2 :Float64 $Json.name("grace_period_ms");  # -1: the Rack MMU did not answer
  processes @3 :List(ProcessJson);
}

struct ElementJson {
  name @0 :Text;
  kind @1 :Text;                                           # rackmmu, rackmon, compute, memory
  pid @2 :Int32;
  state @3 :Text;                                          # healthy, suspect, failed
  capacityBytes @4 :UInt64 $Json.name("capacity_bytes");
  usedBytes @5 :UInt64 $Json.name("used_bytes");
  heartbeatAgeMs @6 :Float64 $Json.name("heartbeat_age_ms");  # -1: never heard
}

struct ProcessJson {
  id @0 :UInt32;
  name @1 :Text;
  pid @2 :Int32;
  element @3 :Text;
  mappedBytes @4 :UInt64 $Json.name("mapped_bytes");
  cachedBytes @5 :UInt64 $Json.name("cached_bytes");
  cacheQuotaBytes @6 :UInt64 $Json.name("cache_quota_bytes");
  dead @7 :Bool;                                           # memory held for adoption
  releaseInMs @8 :Float64 $Json.name("release_in_ms");     # when a dead one's memory is freed
  app @9 :Text;                                            # its application ("" if none)
  fate @10 :Text;                                          # its fate model: none, complete, ...
  memory @11 :List(ProcessMemoryJson);                     # what each healthy memory element says
}

struct ProcessMemoryJson {
  element @0 :Text;
  mappedBytes @1 :UInt64 $Json.name("mapped_bytes");       # its pages bound there
  writebacks @2 :UInt64;                                   # write-backs the element accepted
  refused @3 :UInt64;                                      # its requests the element refused
  fenced @4 :Bool;                                         # the element refuses it for good
}
