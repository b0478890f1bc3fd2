#!/usr/bin/env bash
# The pause a client sees when a cluster's leader dies: three release-build nodes on
# 127.0.0.1-3; each round SIGKILLs the leader and times, from the kill, `strata append` with
# all three addresses (Strata's own client: it finds the leader by asking each node) until one
# is acknowledged. The killed node is restarted and the cluster settles between rounds.
# Prints every round and the p50 and max.
#
#   cargo build --release --locked -p strata-server
#   bash benches/scripts/cluster-failover.sh            # ROUNDS=20 by default
set -euo pipefail
cd "$(dirname "$0")/../.."
BIN=${BIN:-target/release/strata}
ROUNDS=${ROUNDS:-20}
DIR=$(mktemp -d)
PEERS=1=127.0.0.1:2214,2=127.0.0.2:2214,3=127.0.0.3:2214
SERVERS=http://127.0.0.1:2213,http://127.0.0.2:2213,http://127.0.0.3:2213
declare -A PID
cleanup() { for p in "${PID[@]}"; do kill -9 "$p" 2>/dev/null || true; done; rm -rf "$DIR"; }
trap cleanup EXIT

start() {
  local i=$1; shift
  "$BIN" serve --data-dir "$DIR/n$i" --listen "127.0.0.$i:2213" --node-id "$i" \
    --cluster-listen "127.0.0.$i:2214" --peers "$PEERS" --log-format json "$@" \
    >>"$DIR/n$i.log" 2>&1 &
  PID[$i]=$!
}
# leader: the node that says it leads, once every node is alive in its view.
leader() {
  local i s
  for i in 1 2 3; do
    s=$("$BIN" cluster status --json --timeout 2 --server "http://127.0.0.$i:2213" 2>/dev/null) || continue
    if [[ $s == *'"role":"leader"'* && $s != *'"alive":false'* ]]; then echo "$i"; return; fi
  done
}

start 1 --cluster-init; start 2; start 3
times=()
for round in $(seq 1 "$ROUNDS"); do
  l=
  for _ in $(seq 1 200); do l=$(leader); [[ -n $l ]] && break; sleep 0.1; done
  [[ -n $l ]] || { echo "no settled leader before round $round" >&2; exit 1; }
  "$BIN" append warmup --type W --server "$SERVERS" >/dev/null
  t0=$(date +%s.%N)
  kill -9 "${PID[$l]}"; wait "${PID[$l]}" 2>/dev/null || true
  until "$BIN" append failover --type F --timeout 2 --server "$SERVERS" >/dev/null 2>&1; do :; done
  t1=$(date +%s.%N)
  ms=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%d", (b - a) * 1000 }')
  times+=("$ms")
  echo "round $round: leader node $l killed; first acknowledged append after $ms ms"
  start "$l"
done
printf '%s\n' "${times[@]}" | sort -n | awk '{ a[NR] = $1 } END { printf "p50 %d ms, max %d ms over %d rounds\n", a[int((NR + 1) / 2)], a[NR], NR }'
