#!/usr/bin/env bash
# How fast a cluster node that lost its disk catches up: three release-build nodes on
# 127.0.0.1-3, a load of 100-event batches through the leader, then a follower killed, its data
# directory deleted, and the node restarted empty; timed until its committed log end equals
# the leader's. Prints the log size, the time and the rate.
#
#   cargo build --release --locked -p strata-server -p strata-benches
#   bash benches/scripts/cluster-catchup.sh            # SECS=10 of load by default
#   SERVE_ARGS="--snapshot-entries 100000000" bash benches/scripts/cluster-catchup.sh
#                                                      # by replication only, no snapshot
set -euo pipefail
cd "$(dirname "$0")/../.."
BIN=${BIN:-target/release/strata}
LOAD=${LOAD:-target/release/load}
SECS=${SECS:-10}
read -r -a SERVE_EXTRA <<<"${SERVE_ARGS:-}"
DIR=$(mktemp -d)
PEERS=1=127.0.0.1:2214,2=127.0.0.2:2214,3=127.0.0.3:2214
declare -A PID
cleanup() { for p in "${PID[@]}"; do kill -9 "$p" 2>/dev/null || true; done; rm -rf "$DIR"; }
trap cleanup EXIT

start() {
  local i=$1; shift
  "$BIN" serve --data-dir "$DIR/n$i" --listen "127.0.0.$i:2213" --node-id "$i" \
    --cluster-listen "127.0.0.$i:2214" --peers "$PEERS" --log-format json "${SERVE_EXTRA[@]}" "$@" \
    >"$DIR/n$i.log" 2>&1 &
  PID[$i]=$!
}
end_of() { "$BIN" info --server "http://127.0.0.$1:2213" --json 2>/dev/null | sed -n 's/.*"log_end_position":\([0-9]*\).*/\1/p'; }

start 1 --cluster-init; start 2; start 3
leader=""
for _ in $(seq 1 100); do
  for i in 1 2 3; do
    if "$BIN" append probe --type Probe --server "http://127.0.0.$i:2213" >/dev/null 2>&1; then leader=$i; break 2; fi
  done
  sleep 0.2
done
[ -n "$leader" ] || { echo "no leader" >&2; exit 1; }
"$LOAD" --server "http://127.0.0.$leader:2213" --duration "$SECS" --clients 16 --only batch >"$DIR/load.txt"
tail -4 "$DIR/load.txt"
target=$(end_of "$leader")
victim=$(for i in 1 2 3; do [ "$i" != "$leader" ] && echo "$i"; done | tail -1)
for _ in $(seq 1 100); do [ "$(end_of "$victim")" = "$target" ] && break; sleep 0.1; done
bytes=$(du -sb "$DIR/n$victim" | cut -f1)
kill -9 "${PID[$victim]}"; wait "${PID[$victim]}" 2>/dev/null || true
rm -rf "$DIR/n$victim"
t0=$(date +%s.%N)
start "$victim"
while [ "$(end_of "$victim")" != "$target" ]; do sleep 0.05; done
t1=$(date +%s.%N)
if grep -q "installing a snapshot" "$DIR/n$victim.log"; then how="by snapshot transfer"; else how="by replication"; fi
echo "caught up $how"
python3 - "$t0" "$t1" "$bytes" "$target" <<'PY'
import sys
t0, t1, size, end = float(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
s = t1 - t0
print(f"log end {end} (node data {size/1e6:.1f} MB): caught up in {s:.2f} s, {size/1e6/s:.1f} MB/s (process start included)")
PY
