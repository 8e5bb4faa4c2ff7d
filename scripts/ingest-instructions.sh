#!/usr/bin/env bash
# The collector's CPU per report, in a form that survives a busy machine: instructions counted by
# callgrind (valgrind) in a `shoal-collector serve --data` on a fresh directory, while
# `shoal-loadgen --addr` posts DEVICES x ROUNDS signed reports over CONNECTIONS connections.
# The counters are zeroed once the collector listens and dumped after the load, so start-up and
# shutdown are not counted. User space only: kernel time (wake-ups, fsync) is not in the count;
# `cpu` instead reads the collector's user+system CPU from /proc (without valgrind, noisy);
# `threads` reads it per thread (user and system µs per report; numbered threads of a pool, such
# as sled-io-0..6, summed), which shows whether one thread's serial path is the limit (its CPU
# plus the flushes it waits on, against 1 s / the rate).
#
#   scripts/ingest-instructions.sh [cg|cpu|threads] COLLECTOR LOADGEN [DEVICES ROUNDS CONNECTIONS]
#
# e.g. scripts/ingest-instructions.sh cg target/server/shoal-collector target/server/shoal-loadgen
# (defaults 300 x 3 reports, 32 connections; about 15 s under valgrind). Needs valgrind for `cg`.
# Stops only the collector it started, by PID, and removes its temp dir.
set -euo pipefail
MODE=${1:?cg or cpu}
COLLECTOR=${2:?path to shoal-collector}
LOADGEN=${3:?path to shoal-loadgen}
DEVICES=${4:-300}
ROUNDS=${5:-3}
CONNECTIONS=${6:-32}
TOKEN=loadgen-enroll-token-000000 # shoal-loadgen's default --enroll-token

DIR=$(mktemp -d /tmp/shoal-ingest-instructions.XXXXXX)
PID=
cleanup() {
  if [ -n "$PID" ] && kill -0 "$PID" 2>/dev/null; then kill -INT "$PID"; wait "$PID" || true; fi
  rm -rf "$DIR"
}
trap cleanup EXIT
echo "$TOKEN" >"$DIR/enroll"
serve=("$COLLECTOR" serve --listen 127.0.0.1:0 --data "$DIR/data" --enroll-token-file "$DIR/enroll")
case $MODE in
  cg) valgrind --tool=callgrind --callgrind-out-file="$DIR/callgrind.out" "${serve[@]}" >"$DIR/out" 2>"$DIR/err" & ;;
  cpu | threads) "${serve[@]}" >"$DIR/out" 2>"$DIR/err" & ;;
  *) echo "mode is cg, cpu or threads, not $MODE" >&2; exit 2 ;;
esac
PID=$!
for _ in $(seq 600); do
  grep -q "listening on" "$DIR/out" 2>/dev/null && break
  kill -0 "$PID" 2>/dev/null || { cat "$DIR/err" >&2; exit 1; }
  sleep 0.2
done
ADDR=$(sed -n 's|^listening on http://||p' "$DIR/out")
[ -n "$ADDR" ] || { echo "the collector did not start:" >&2; cat "$DIR/err" >&2; exit 1; }
ticks() { awk '{print $14 + $15}' "/proc/$PID/stat"; }
# One line per thread: name (spaces made _), user ticks, system ticks.
thread_ticks() {
  for t in /proc/"$PID"/task/*; do
    printf '%s %s\n' "$(tr ' ' _ <"$t/comm")" "$(awk '{print $14, $15}' "$t/stat")"
  done
}

if [ "$MODE" = cg ]; then callgrind_control -z "$PID" >/dev/null 2>&1; else T0=$(ticks); fi
[ "$MODE" = threads ] && thread_ticks >"$DIR/threads0"
"$LOADGEN" --addr "$ADDR" --devices "$DEVICES" --rounds "$ROUNDS" --concurrency "$CONNECTIONS" \
  --enroll-token "$TOKEN" 2>&1 | grep -v '^signing\|^signed'
N=$((DEVICES * ROUNDS))
LOAD=$(cut -d' ' -f1-3 /proc/loadavg)
if [ "$MODE" = cg ]; then
  callgrind_control -d "$PID" >/dev/null 2>&1
  sleep 1
  DUMP=$(ls "$DIR"/callgrind.out.* | head -1)
  TOTAL=$(callgrind_annotate "$DUMP" 2>/dev/null | awk '/PROGRAM TOTALS/ {gsub(",", "", $1); print $1}')
  echo "collector: $TOTAL instructions for $N reports: $((TOTAL / N)) per report (load $LOAD)"
  if [ -n "${KEEP:-}" ]; then cp "$DUMP" "$KEEP" && echo "callgrind profile: $KEEP"; fi
else
  T1=$(ticks)
  echo "collector: $(((T1 - T0) * 10000 / N)) µs CPU per report ($((T1 - T0)) ticks of 10 ms, $N reports, load $LOAD)"
fi
if [ "$MODE" = threads ]; then
  thread_ticks >"$DIR/threads1"
  echo "CPU per report by thread:"
  # Threads are matched by position (/proc lists them in creation order; none start or end
  # during the load); ticks are 10 ms.
  paste -d' ' "$DIR/threads0" "$DIR/threads1" | awk -v n="$N" '
    { name = $1; sub(/-[0-9]+$/, "", name)
      user[name] += $5 - $2; sys[name] += $6 - $3; count[name]++ }
    END { for (t in user) if (user[t] + sys[t] > 0)
            printf "  %-22s x%-2d user %4d µs  system %4d µs\n", t, count[t], user[t] * 10000 / n, sys[t] * 10000 / n }' |
    sort -k4 -n -r
fi
