#!/usr/bin/env bash
# End-to-end test of the Docker image, needing no registry:
#
#   1. build the image with the multi-stage docker/Dockerfile; where its base images cannot
#      be pulled, build the release binary on the host (unless STRATA_BIN names one) and
#      package it into the Dockerfile's runtime stage on a locally made Debian base image;
#   2. run it on a named volume; append and read through the host CLI;
#   3. `docker stop` while appends run: exit code 0 within the grace period, "store
#      closed cleanly" logged; start it again and find every acknowledged append;
#   4. `docker kill` while appends run; start a new container on the same volume and
#      find every acknowledged append; `strata verify` the log once it is stopped.
#
# Skips (exit 0) when no Docker daemon is reachable. Environment:
#   STRATA_BIN          a prebuilt strata binary (otherwise: cargo build --release --locked -p strata-server)
#   RUNTIME_BASE        runtime base image (otherwise docker/base-image.sh makes one, cached)
#   STRATA_TEST_GRACE   docker stop grace period in seconds (default 30)
#   STRATA_DOCKER_BUILD_TIMEOUT  limit for the multi-stage build in seconds (default 2400)
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

if ! command -v docker >/dev/null 2>&1 || ! docker info >/dev/null 2>&1; then
  echo "docker/test.sh: SKIPPED: no Docker daemon reachable (docker info failed)"
  exit 0
fi

t_start=$SECONDS
grace=${STRATA_TEST_GRACE:-30}
writers=4          # concurrent appender processes
load_seconds=3     # how long appends run before each stop/kill
run_id=strata-dt-$$
image=strata-test:$$
volume=$run_id-data
work=$(mktemp -d /tmp/strata-docker-test.XXXXXX)
# The image runs secure: TLS with the development CA it writes to the volume, and the admin
# password set at the first start. The host CLI reads these for every call.
admin_pw="admin-$run_id"
export STRATA_USER=admin STRATA_PASSWORD=$admin_pw STRATA_TLS_CA=$work/ca.pem
containers=()
writer_pids=()
passed=0

say() { echo "docker-test: $*"; }

cleanup() {
  local rc=$?
  set +e
  touch "$work/stop" 2>/dev/null
  for p in "${writer_pids[@]}"; do kill "$p" 2>/dev/null; done
  wait 2>/dev/null
  for c in "${containers[@]}"; do docker rm -f "$c" >/dev/null 2>&1; done
  docker volume rm -f "$volume" >/dev/null 2>&1
  docker rmi -f "$image" >/dev/null 2>&1
  rm -rf "$work"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

fail() {
  echo "docker-test: FAIL: $*" >&2
  local c
  for c in "${containers[@]}"; do
    echo "---- docker logs $c (last 40 lines) ----" >&2
    docker logs --tail 40 "$c" 2>&1 | sed 's/^/  /' >&2 || true
  done
  echo "docker: $passed passed, 1 failed"
  exit 1
}

# output_has PATTERN CMD...: CMD's output (stdout and stderr) contains PATTERN. The output
# is captured before grep reads it: `cmd | grep -q` fails under pipefail whenever grep
# exits at its first match while cmd is still writing (cmd dies of SIGPIPE).
output_has() {
  local pattern=$1 out
  shift
  out=$("$@" 2>&1) || true
  grep -q -e "$pattern" <<<"$out"
}

ok() {
  passed=$((passed + 1))
  say "ok: $*"
}

# --- 1. binary and image ------------------------------------------------------------

if [[ -z ${STRATA_BIN:-} ]]; then
  say "building the release binary (cargo build --release --locked -p strata-server)"
  cargo build --release --locked -p strata-server
  STRATA_BIN=${CARGO_TARGET_DIR:-$root/target}/release/strata
fi
[[ $STRATA_BIN == /* ]] || STRATA_BIN=$root/$STRATA_BIN
[[ -x $STRATA_BIN ]] || fail "STRATA_BIN=$STRATA_BIN is not an executable"
# A private copy: the image and the host CLI are the same build even if cargo replaces
# target/release/strata while the test runs.
bin=$work/strata
cp "$STRATA_BIN" "$bin"

t_image=$SECONDS
# The README's way first: the multi-stage build (Rust builder image, then the runtime stage).
# Where no registry is reachable its base images cannot be pulled and it fails at once; then
# the host binary goes into the same runtime stage on a locally made Debian base.
build_log=$work/docker-build.log
if timeout "${STRATA_DOCKER_BUILD_TIMEOUT:-2400}" \
    docker build -q -f docker/Dockerfile -t "$image" . >"$build_log" 2>&1; then
  say "image built by the multi-stage Dockerfile (docker build -f docker/Dockerfile .)"
else
  say "the multi-stage build could not run here: $(grep -v '^\s*$' "$build_log" | tail -n 1)"
  say "packaging the host binary into the same runtime stage (docker/build-prebuilt.sh)"
  bash docker/build-prebuilt.sh "$image" "$bin" >/dev/null || fail "image build failed"
fi
size=$(docker image inspect --format '{{.Size}}' "$image")
say "image $image built in $((SECONDS - t_image))s; size $size bytes ($(awk -v s="$size" 'BEGIN { printf "%.1f MB", s / 1e6 }'))"

[[ $(docker image inspect --format '{{.Config.User}}' "$image") == 10001:10001 ]] ||
  fail "image does not run as the strata user"
[[ -n $(docker image inspect --format '{{if .Config.Healthcheck}}{{.Config.Healthcheck.Test}}{{end}}' "$image") ]] ||
  fail "image has no HEALTHCHECK"
output_has '"/var/lib/strata"' docker image inspect --format '{{json .Config.Volumes}}' "$image" ||
  fail "image does not declare the /var/lib/strata volume"
ok "image config: user 10001, HEALTHCHECK, VOLUME /var/lib/strata"

metrics=0
if output_has '--metrics-listen' "$bin" serve --help; then metrics=1; fi

# --- helpers ------------------------------------------------------------------------

docker volume create "$volume" >/dev/null

# run_container NAME [docker run options...]: a new container on the test volume, ports on
# random loopback ports of the host. Health checks every second so waits stay short (the
# check itself is the image's).
run_container() {
  local name=$1
  shift
  containers+=("$name")
  docker run -d --name "$name" \
    -v "$volume:/var/lib/strata" \
    -p 127.0.0.1::2113 -p 127.0.0.1::2114 \
    -e STRATA_INITIAL_ADMIN_PASSWORD="$admin_pw" \
    --health-interval 1s \
    "$@" "$image" >/dev/null
}

# wait_ready NAME: until Docker reports the container healthy and the host CLI agrees.
# Sets url (and metrics_url) for the container's current published ports.
wait_ready() {
  local c=$1 state i
  for ((i = 0; i < 240; i++)); do
    state=$(docker inspect --format '{{.State.Status}} {{if .State.Health}}{{.State.Health.Status}}{{end}}' "$c")
    case $state in
      "running healthy")
        local hp mp
        hp=$(docker port "$c" 2113/tcp | sed -n 1p)
        mp=$(docker port "$c" 2114/tcp | sed -n 1p)
        url=https://127.0.0.1:${hp##*:}
        metrics_url=https://127.0.0.1:${mp##*:}/metrics
        [[ -s $work/ca.pem ]] || docker cp "$c:/var/lib/strata/certs/ca.pem" "$work/ca.pem" >/dev/null 2>&1 || true
        if "$bin" health --server "$url" --timeout 5 >/dev/null 2>&1; then
          return 0
        fi
        ;;
      exited* | dead*)
        fail "container $c exited while starting ($(docker inspect --format '{{.State.ExitCode}}' "$c"))"
        ;;
    esac
    sleep 0.5
  done
  fail "container $c not healthy after 120 s (state: $state)"
}

# appender W URL: append one event per CLI call to stream load-W until $work/stop exists
# (bounded by count and time), writing "REVISION DATA" for every acknowledged append.
appender() {
  local w=$1 u=$2 i=0 out rev
  local deadline=$((SECONDS + 120))
  while [[ ! -e $work/stop ]] && ((i < 100000 && SECONDS < deadline)); do
    i=$((i + 1))
    local data="{\"w\":$w,\"i\":$i,\"run\":\"$run_id\"}"
    if out=$("$bin" append "load-$w" --type Tick --data "$data" --server "$u" --timeout 10 2>>"$work/err-$w"); then
      rev=$(sed -n 's/^appended to [^@]*@\([0-9][0-9]*\) .*/\1/p' <<<"$out")
      echo "$rev $data" >>"$work/acked-$w"
    else
      echo "$i" >>"$work/failed-$w"
      sleep 0.1
    fi
  done
}

start_load() {
  rm -f "$work/stop"
  writer_pids=()
  local w
  for ((w = 1; w <= writers; w++)); do
    appender "$w" "$url" &
    writer_pids+=($!)
  done
}

stop_load() {
  touch "$work/stop"
  local p
  for p in "${writer_pids[@]}"; do wait "$p" || true; done
  writer_pids=()
}

acked_count() { cat "$work"/acked-* 2>/dev/null | wc -l; }

# check_acked: every acknowledged append is in its stream, at the revision it was given.
# Sets acked_total to the number checked.
check_acked() {
  local w total=0 missing
  for ((w = 1; w <= writers; w++)); do
    [[ -s $work/acked-$w ]] || continue
    # Human-readable read output: "STREAM@REV pos=P TYPE ID DATA"; DATA has no spaces.
    "$bin" read "load-$w" --server "$url" >"$work/read-$w" || fail "read load-$w failed"
    awk '{ split($1, a, "@"); print a[2], $NF }' "$work/read-$w" | sort >"$work/have-$w"
    sort "$work/acked-$w" >"$work/want-$w"
    missing=$(comm -23 "$work/want-$w" "$work/have-$w" | wc -l)
    if ((missing > 0)); then
      comm -23 "$work/want-$w" "$work/have-$w" | sed -n 1,5p >&2
      fail "$missing acknowledged appends to load-$w are missing (of $(wc -l <"$work/want-$w"))"
    fi
    total=$((total + $(wc -l <"$work/want-$w")))
  done
  acked_total=$total
}

# check_basic: the three events written first are there, in order.
check_basic() {
  "$bin" read basic-1 --server "$url" >"$work/basic" || fail "read basic-1 failed"
  local got
  got=$(awk '{ print $1, $3, $NF }' "$work/basic" | tr '\n' ';')
  [[ $got == 'basic-1@0 Created {"n":1};basic-1@1 Renamed {"n":2};basic-1@2 Closed {"n":3};' ]] ||
    fail "basic-1 does not read back as written: $got"
}

# --- 2. run, append, read --------------------------------------------------------------

c1=$run_id-a
run_container "$c1"
wait_ready "$c1"
ok "container healthy (docker health check and host 'strata health' on $url)"

output_has 'listening on 0.0.0.0:2113' docker logs "$c1" ||
  fail "server is not listening on 0.0.0.0:2113 inside the container"
[[ $(docker exec "$c1" cat /proc/1/comm) == strata ]] || fail "PID 1 is not strata"
uid=$(docker exec "$c1" awk '/^Uid:/ { print $2 }' /proc/1/status)
[[ $uid == 10001 ]] || fail "server runs as uid $uid, expected 10001"
ok "PID 1 is strata as uid 10001, listening on 0.0.0.0:2113"

output_has 'secure mode: TLS on' docker logs "$c1" || fail "the container does not run secure by default"
set +e
STRATA_USER= STRATA_PASSWORD= "$bin" append anon-1 --type T --server "$url" >/dev/null 2>&1
rc_anon=$?
STRATA_PASSWORD=changeit "$bin" append anon-1 --type T --server "$url" >/dev/null 2>&1
rc_default=$?
set -e
[[ $rc_anon == 10 && $rc_default == 10 ]] ||
  fail "anonymous append exited $rc_anon and default-password append $rc_default, expected 10 (refused)"
ok "secure by default: TLS with the volume's development CA; anonymous and wrong-password appends refused"

"$bin" append basic-1 --type Created --data '{"n":1}' --expected no-stream --server "$url" >/dev/null ||
  fail "first append failed"
"$bin" append basic-1 --type Renamed --data '{"n":2}' --expected 0 --server "$url" >/dev/null ||
  fail "second append failed"
"$bin" append basic-1 --type Closed --data '{"n":3}' --expected 1 --server "$url" >/dev/null ||
  fail "third append failed"
set +e
"$bin" append basic-1 --type Late --expected 1 --server "$url" >/dev/null 2>&1
rc=$?
set -e
[[ $rc == 3 ]] || fail "append with a stale expected revision exited $rc, expected 3"
check_basic
ok "append and read back through the host CLI (and exit 3 on a wrong expected revision)"

if ((metrics)); then
  curl -fsS --max-time 5 --cacert "$work/ca.pem" -u "admin:$admin_pw" "$metrics_url" >"$work/metrics" ||
    fail "GET $metrics_url failed"
  code=$(curl -sS -o /dev/null -w '%{http_code}' --max-time 5 --cacert "$work/ca.pem" "$metrics_url")
  [[ $code == 401 ]] || fail "GET $metrics_url without credentials answered $code, expected 401"
  grep -q '^# TYPE ' "$work/metrics" || fail "$metrics_url is not Prometheus text"
  ok "metrics served on $metrics_url over TLS, to credentials only"
else
  say "strata serve has no --metrics-listen yet: metrics port not checked"
fi

# --- 3. docker stop under load, start again --------------------------------------------

start_load
sleep "$load_seconds"
before=$(acked_count)
t0=$EPOCHREALTIME
docker stop -t "$grace" "$c1" >/dev/null
t1=$EPOCHREALTIME
stop_load
stop_ms=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%d", (b - a) * 1000 }')
code=$(docker inspect --format '{{.State.ExitCode}}' "$c1")
[[ $code == 0 ]] || fail "exit code after docker stop is $code, expected 0"
((stop_ms < grace * 1000)) || fail "docker stop took ${stop_ms} ms, not within the ${grace} s grace period"
output_has 'store closed cleanly' docker logs "$c1" || fail "no 'store closed cleanly' in the logs"
ok "docker stop under load ($before acked appends so far): exit 0 in ${stop_ms} ms, store closed cleanly"

docker start "$c1" >/dev/null
wait_ready "$c1"
check_basic
check_acked
n=$acked_total
((n > 0)) || fail "no append was acknowledged during the load"
n_after_stop=$n
ok "started again on the same volume: basic-1 intact, all $n acknowledged appends present"

# --- 4. docker kill under load, new container on the volume ---------------------------

start_load
sleep "$load_seconds"
docker kill "$c1" >/dev/null
stop_load
[[ $(docker inspect --format '{{.State.ExitCode}}' "$c1") == 137 ]] || fail "docker kill did not SIGKILL the server"
docker rm "$c1" >/dev/null

c2=$run_id-b
# A second container, configured through STRATA_* variables: JSON logs.
run_container "$c2" -e STRATA_LOG_FORMAT=json -e STRATA_DURABILITY=fsync
wait_ready "$c2"
output_has '^{.*listening on' docker logs "$c2" ||
  fail "STRATA_LOG_FORMAT=json did not switch the logs to JSON"
check_basic
check_acked
n=$acked_total
((n > n_after_stop)) || fail "no append was acknowledged during the load before docker kill"
failed=$(cat "$work"/failed-* 2>/dev/null | wc -l)
ok "killed under load, new container on the volume: all $n acknowledged appends present ($failed unacknowledged attempts)"

docker stop -t "$grace" "$c2" >/dev/null
[[ $(docker inspect --format '{{.State.ExitCode}}' "$c2") == 0 ]] || fail "second container did not exit 0 on docker stop"
docker run --rm -v "$volume:/var/lib/strata" "$image" verify >"$work/verify" 2>&1 ||
  { cat "$work/verify" >&2; fail "strata verify found the log damaged"; }
ok "strata verify: the log on the volume is intact"

# --- 5. the README's compose commands ---------------------------------------------------

if docker compose version >/dev/null 2>&1; then
  compose=(docker compose)
elif command -v docker-compose >/dev/null 2>&1; then
  compose=(docker-compose)
else
  compose=()
fi
port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
if ((${#compose[@]} == 0)); then
  say "skipped: compose (neither 'docker compose' nor docker-compose is installed)"
elif port_busy 2113 || port_busy 2114; then
  say "skipped: compose (127.0.0.1:2113 or :2114 is already in use on this host)"
else
  project=$run_id-compose
  export STRATA_ADMIN_PASSWORD=$admin_pw
  dc() { STRATA_IMAGE=$image "${compose[@]}" -p "$project" -f docker/compose.yaml "$@"; }
  compose_down() { dc down -v >/dev/null 2>&1; }
  dc up -d >"$work/compose-up" 2>&1 ||
    { cat "$work/compose-up" >&2; compose_down; fail "compose up failed"; }
  # The README's steps: copy the CA out, then talk TLS to 127.0.0.1:2113 as admin.
  export STRATA_SERVER=https://127.0.0.1:2113 STRATA_TLS_CA=$work/compose-ca.pem
  for _ in $(seq 1 120); do
    cid=$(dc ps -q strata 2>/dev/null)
    if [[ -n $cid ]] && docker cp "$cid:/var/lib/strata/certs/ca.pem" "$STRATA_TLS_CA" >/dev/null 2>&1 &&
      "$bin" health >/dev/null 2>&1; then
      break
    fi
    sleep 0.5
  done
  "$bin" append orders-1 --type OrderPlaced --data '{"total": 42}' >/dev/null ||
    { compose_down; fail "append through the compose port failed"; }
  output_has OrderPlaced "$bin" read orders-1 || { compose_down; fail "read through the compose port failed"; }
  output_has OrderPlaced dc exec -T -e STRATA_SERVER=https://127.0.0.1:2113 \
    -e STRATA_TLS_CA=/var/lib/strata/certs/ca.pem -e STRATA_USER=admin -e STRATA_PASSWORD="$admin_pw" \
    strata strata read orders-1 || { compose_down; fail "read with the CLI inside the compose container failed"; }
  output_has strata_append_events_total \
    curl -fsS --cacert "$STRATA_TLS_CA" -u "admin:$admin_pw" https://127.0.0.1:2114/metrics ||
    { compose_down; fail "compose metrics port does not serve /metrics"; }
  compose_down
  ok "compose: up -d (secure), append and read from the host and inside the container, metrics on 2114, down -v"
fi

# --- 6. the three-node cluster compose file (docker/cluster.yaml) ------------------------

if ((${#compose[@]} == 0)); then
  say "skipped: cluster compose (neither 'docker compose' nor docker-compose is installed)"
elif port_busy 2113 || port_busy 2123 || port_busy 2133; then
  say "skipped: cluster compose (127.0.0.1:2113, :2123 or :2133 is already in use on this host)"
else
  cproject=$run_id-cluster
  dcc() { STRATA_IMAGE=$image STRATA_ADMIN_PASSWORD=$admin_pw "${compose[@]}" -p "$cproject" -f docker/cluster.yaml "$@"; }
  cluster_down() { dcc down -v >/dev/null 2>&1; }
  cluster_fail() {
    dcc logs --tail 30 >&2 2>&1 || true
    cluster_down
    fail "$1"
  }
  dcc up -d >"$work/cluster-up" 2>&1 || { cat "$work/cluster-up" >&2; cluster_fail "cluster compose up failed"; }
  ports=(2113 2123 2133)
  ca=$work/cluster-ca.pem
  # at() PORT ARGS...: the CLI against one node, as admin over TLS.
  at() {
    local port=$1
    shift
    "$bin" "$@" --server "https://127.0.0.1:$port" --tls-ca "$ca" --user admin --password "$admin_pw"
  }
  healthy=0
  for _ in $(seq 1 180); do
    healthy=0
    for n in node1 node2 node3; do
      cid=$(dcc ps -q "$n" 2>/dev/null)
      [[ -n $cid && $(docker inspect --format '{{if .State.Health}}{{.State.Health.Status}}{{end}}' "$cid") == healthy ]] &&
        healthy=$((healthy + 1))
    done
    ((healthy == 3)) && break
    sleep 1
  done
  ((healthy == 3)) || cluster_fail "the cluster's nodes were not all healthy within 180 s"
  docker cp "$(dcc ps -q node1):/certs/ca.pem" "$ca" >/dev/null || cluster_fail "cannot copy the cluster CA out"
  # leader_port: the published port of the node that says it leads (empty if none does).
  leader_port() {
    local p
    for p in "$@"; do
      if output_has '"role":"leader"' at "$p" cluster status --json; then
        echo "$p"
        return
      fi
    done
  }
  leader=
  for _ in $(seq 1 60); do
    leader=$(leader_port "${ports[@]}")
    [[ -n $leader ]] && break
    sleep 0.5
  done
  [[ -n $leader ]] || cluster_fail "no node of the cluster leads"
  output_has '"alive":false' at "$leader" cluster status --json &&
    cluster_fail "the leader reports a member down: $(at "$leader" cluster status)"
  at "$leader" append orders-1 --type OrderPlaced --data '{"total": 7}' >/dev/null ||
    cluster_fail "append through the leader (port $leader) failed"
  for p in "${ports[@]}"; do
    for _ in $(seq 1 20); do
      output_has OrderPlaced at "$p" read orders-1 && break
      sleep 0.25
    done
    output_has OrderPlaced at "$p" read orders-1 || cluster_fail "the event is not readable on port $p"
  done
  # Failover: the leader's container stops; another node takes over and takes appends.
  case $leader in 2113) svc=node1 ;; 2123) svc=node2 ;; *) svc=node3 ;; esac
  dcc stop -t 10 "$svc" >/dev/null 2>&1 || cluster_fail "docker compose stop $svc failed"
  others=()
  for p in "${ports[@]}"; do [[ $p != "$leader" ]] && others+=("$p"); done
  moved=
  for _ in $(seq 1 60); do
    moved=$(leader_port "${others[@]}")
    [[ -n $moved ]] && at "$moved" append orders-1 --type OrderPlaced --data '{"total": 8}' >/dev/null 2>&1 && break
    moved=
    sleep 0.5
  done
  [[ -n $moved ]] || cluster_fail "no append was acknowledged within 30 s after $svc (the leader) stopped"
  cluster_down
  ok "cluster compose: 3 secure nodes healthy, append on the leader read on all, leader stopped and port $moved took over"
fi

say "image size: $size bytes; test took $((SECONDS - t_start))s"
echo "docker: $passed passed, 0 failed"
