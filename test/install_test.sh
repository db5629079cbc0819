#!/usr/bin/env bash
# Installs disagg from a build directory into a temporary prefix, builds test/install/app.cc
# outside the tree against it, once with CMake (find_package(disagg)) and once with
# pkg-config, checks that private headers stay private, and runs both builds on a rack
# started by the installed disagg-rack.
#   test/install_test.sh BUILD_DIR
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
build="$(cd "${1:?usage: install_test.sh BUILD_DIR}" && pwd)"
work="$(mktemp -d /tmp/disagg-install-XXXXXX)"
prefix="$work/prefix"
rack="$work/rack"
passed=0 failed=0
cleanup() {
  [ -x "$prefix/bin/disagg-rack" ] && "$prefix/bin/disagg-rack" down --dir "$rack" >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT
check() {  # check NAME COMMAND...: runs COMMAND, counts and reports the outcome
  local name="$1" out
  shift
  if out=$("$@" 2>&1); then
    passed=$((passed + 1))
    echo "install: ok: $name"
  else
    failed=$((failed + 1))
    echo "install: FAILED: $name"
    echo "$out" | tail -n 30
  fi
}

check "cmake --install into a fresh prefix" cmake --install "$build" --prefix "$prefix"
check "an application builds with find_package(disagg)" \
  sh -c "cmake -S '$repo/test/install' -B '$work/app-cmake' -DCMAKE_PREFIX_PATH='$prefix' \
         -DCMAKE_BUILD_TYPE=Release >/dev/null && cmake --build '$work/app-cmake' -j2"
export PKG_CONFIG_PATH="$prefix/lib/pkgconfig"
check "an application builds with pkg-config" \
  sh -c "g++ -std=c++17 '$repo/test/install/app.cc' -o '$work/app-pc' \$(pkg-config --cflags --libs disagg)"
check "private headers are not visible to applications" \
  sh -c "! echo '#include \"ipc/channel.h\"' | g++ -std=c++17 -x c++ -fsyntax-only - \$(pkg-config --cflags disagg)"
check "the application links neither gflags nor daemon start-up code" \
  sh -c "! readelf -d '$work/app-pc' '$prefix/lib/libdisagg.so' | grep -q gflags && \
         ! nm -D '$prefix/lib/libdisagg.so' | grep -q -i InitDaemon"
check "the installed disagg-rack starts a rack" \
  "$prefix/bin/disagg-rack" up --dir "$rack" --compute 1 --memory 1 --pool-size 64M --cache-budget 1M
for built in "CMake:$work/app-cmake/app" "pkg-config:$work/app-pc"; do
  check "the application built with ${built%%:*} runs on the rack" \
    sh -c "'$prefix/bin/rackctl' --rack '$rack' run --on cpu0 -- '${built#*:}' | grep -q ', 0 wrong'"
done
echo "install: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
