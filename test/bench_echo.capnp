@0xcc43495d8d11631a;
# Only for bench_ring's baseline: Cap'n Proto's own two-party RPC.

using Cxx = import "/capnp/c++.capnp";
$Cxx.namespace("disagg::proto");

interface EchoRpc {
  echo @0 (payload :Data) -> (payload :Data);
}
