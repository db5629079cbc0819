#!/usr/bin/env bash
# scripts/fault-run on private racks of the real daemons: a handful of seeds hold every
# invariant with faults injected; a seed replays the same schedule; different seeds give
# different schedules; sabotaged reads and a program that fails on its own are caught as
# violations; scripts/fate-table shows each model's failure domain; bad arguments are refused.
#   test/fault_run_test.sh BIN_DIR   (the daemons, rackctl, fault_run and fault_worker)
set -uo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
export DISAGG_BIN="$(cd "${1:?usage: fault_run_test.sh BIN_DIR}" && pwd)"
work="$(mktemp -d /tmp/disagg-fault-run-test-XXXXXX)"
trap 'rm -rf "$work"' EXIT
failed=0
fail() { echo "fault-run test: FAILED: $*"; failed=1; }
ok() { echo "fault-run test: ok: $*"; }
json() {  # json FILE KEY...: the values of KEYs in each JSON line of FILE, one line each
  local file="$1"
  shift
  python3 -c '
import json, sys
for line in open(sys.argv[1]):
    if line.startswith("{"):
        d = json.loads(line)
        print(" ".join(str(d[k]) for k in sys.argv[2:]))' "$file" "$@"
}
run() {  # run NAME ARGS...: scripts/fault-run ARGS into $work/NAME.out; sets rc
  local name="$1"
  shift
  rc=0
  "$repo/scripts/fault-run" "$@" >"$work/$name.out" 2>&1 || rc=$?
}
show() {  # every seed's report without its fault timeline (a failing seed may not be the last)
  grep -vE '^ +[0-9]+ ms ' "$work/$1.out" | tail -n 80
}

# Three seeds, each in a fresh rack: every invariant holds, and faults were injected.
run seeds --seed 11 --seeds 3 --seconds 3
rows="$(json "$work/seeds.out" seed faults violations schedule_digest versions_flushed)"
if [ "$rc" != 0 ] || [ "$(echo "$rows" | wc -l)" != 3 ]; then
  fail "seeds 11-13: status $rc, $(echo "$rows" | wc -l) reports"; show seeds
elif echo "$rows" | awk '$2 < 1 || $3 != 0 || $5 < 1 { bad = 1 } END { exit !bad }'; then
  fail "seeds 11-13: a seed without faults or work, or with violations: $rows"; show seeds
elif [ "$(echo "$rows" | awk '{ print $4 }' | sort -u | wc -l)" != 3 ]; then
  # The digest covers the faults drawn, not the seed: three seeds, three schedules.
  fail "seeds 11-13 share a schedule digest: $rows"
elif ! grep -q "all 3 seeds held" "$work/seeds.out"; then
  fail "seeds 11-13: no summary line"; show seeds
else
  ok "seeds 11-13 held every invariant ($(echo "$rows" | awk '{ s += $2 } END { print s }') faults)"
fi

# The replay of seed 11 injects the same schedule: the same digest, the same lines.
run replay --seed 11 --seconds 3
schedule() {  # the schedule lines of seed 11's report in FILE
  awk '/^fault run: seed 11 /{ on = 1; next } on && /^schedule digest/{ exit } on' "$1"
}
first="$(json "$work/seeds.out" seed schedule_digest | awk '$1 == 11 { print $2 }')"
again="$(json "$work/replay.out" schedule_digest)"
if [ "$rc" != 0 ] || [ -z "$first" ] || [ "$first" != "$again" ]; then
  fail "replay of seed 11: status $rc, digest '$again' against '$first'"; show replay
elif [ -z "$(schedule "$work/replay.out")" ] ||
  [ "$(schedule "$work/replay.out")" != "$(schedule "$work/seeds.out")" ]; then
  fail "replay of seed 11 printed another schedule"; show replay
elif ! grep -q "^replay: scripts/fault-run --seed 11 --seconds 3$" "$work/seeds.out"; then
  fail "the report does not name the replay command"; show seeds
else
  ok "seed 11 replays the same schedule ($again)"
fi

# Workers that write words they never announce: the reads invariant must catch them.
run sabotage --seed 5 --seconds 2 --sabotage reads
found="$(json "$work/sabotage.out" violations)"
if [ "$rc" != 1 ] || [ -z "$found" ] || [ "$found" -lt 1 ] || ! grep -q "^reads .*VIOLATED" "$work/sabotage.out"; then
  fail "sabotaged reads: status $rc, violations '$found'"; show sabotage
else
  ok "sabotaged reads are reported ($found violations)"
fi

# A given program: copies that end badly on their own are violations; copies that end
# well are not.
run program-bad --seed 3 --seconds 1 --workers 2 -- false
run_bad=$rc
run program-good --seed 3 --seconds 1 --workers 2 -- "$DISAGG_BIN/hello"
if [ "$run_bad" != 1 ] || [ "$(json "$work/program-bad.out" violations)" != 2 ]; then
  fail "a failing program: status $run_bad"; show program-bad
elif [ "$rc" != 0 ] || ! grep -q "^program  *held" "$work/program-good.out"; then
  fail "hello under faults: status $rc"; show program-good
else
  ok "a given program's own failures are violations, its successes are not"
fi

# scripts/fate-table: each model's failure domain under the failure of cpu0 (two of the four
# workers): complete ends all and frees its memory, partial's failed memory cannot be stolen,
# none's can; every invariant holds under each.
rc=0
"$repo/scripts/fate-table" --seconds 3 >"$work/table.out" 2>&1 || rc=$?
table="$(python3 -c '
import json, sys
lines = [l for l in open(sys.argv[1]) if l.startswith("{")]
m = {r["model"]: r for r in json.loads(lines[-1])["models"]} if lines else {}
bad = []
if sorted(m) != ["complete", "none", "partial", "tainted"]: bad.append("models %s" % sorted(m))
else:
    if m["complete"]["workers_alive_after"] != 0 or m["complete"]["memory_after_bytes"] != 0:
        bad.append("complete left workers or memory")
    for k in ("partial", "tainted", "none"):
        if m[k]["workers_alive_after"] != 2: bad.append("%s: %d alive" % (k, m[k]["workers_alive_after"]))
    if m["partial"]["steals"] != 0: bad.append("partial: a failed region was stolen")
    if m["none"]["steals"] < 1: bad.append("none: no failed region stolen")
    bad += ["%s: %d violations" % (k, r["violations"]) for k, r in m.items() if r["violations"]]
print("; ".join(bad))' "$work/table.out" 2>&1)"
if [ "$rc" != 0 ] || [ -n "$table" ]; then
  fail "fate-table: status $rc: $table"; tail -n 8 "$work/table.out"
else
  ok "fate-table shows each model's failure domain"
fi

# Bad arguments: refused with a reason, status 2, no rack started.
for args in "--runs 0" "--fault abc"; do
  rc=0
  # shellcheck disable=SC2086
  out="$("$repo/scripts/fate-table" $args 2>&1)" || rc=$?
  if [ "$rc" != 2 ] || ! echo "$out" | grep -q "^fate-table: "; then
    fail "fate-table '$args': status $rc: $out"
  fi
done
for args in "--seed x" "--seconds 0" "--sabotage all" "--bogus" "-- /nonexistent/program"; do
  rc=0
  # shellcheck disable=SC2086
  out="$("$repo/scripts/fault-run" $args 2>&1)" || rc=$?
  if [ "$rc" != 2 ] || ! echo "$out" | grep -q "^fault-run: "; then
    fail "'$args': status $rc: $out"
  fi
done
[ "$failed" = 1 ] || ok "bad arguments are refused with a reason"
exit "$failed"
