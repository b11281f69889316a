#!/usr/bin/env bash
# Local, Docker-free Schema Registry for mds-sink tests: Apicurio Registry
# (Quarkus, in-memory H2 storage) from Maven Central, with its
# Confluent-compatible REST API under /apis/ccompat/v7.
#
# Usage: registry.sh up | down | url | status
#   up      start it in the background on 127.0.0.1 (idempotent; the first run
#           downloads and caches the registry with Maven), wait until
#           GET <url>/subjects answers, then print the URL
#   down    stop it (all its data is in memory and goes with it)
#   url     print the base URL of the Confluent-compatible API
#   status  print "running <url>" (exit 0) or "stopped" (exit 1)
#
# Environment:
#   MDS_STACK_DIR                     pid file and log go to $MDS_STACK_DIR/registry (/tmp/mds-sink-stack)
#   MDS_SINK_CACHE                    download cache, under .../registry        (~/.cache/mds-sink)
#   MDS_STACK_REGISTRY_PORT           HTTP port                                  (38081)
#   MDS_STACK_REGISTRY_MGMT_PORT      3.x only: Quarkus management port          (HTTP port + 1)
#   MDS_STACK_REGISTRY_VERSION        io.apicurio:apicurio-registry-app version  (2.6.13.Final)
#                                     2.x runs on Java 17+, 3.x (e.g. 3.3.3) needs Java 21+
#   MDS_STACK_REGISTRY_JAVA           java binary to use (default: the first suitable one of
#                                     $JAVA_HOME/bin/java, java on PATH, /usr/lib/jvm/*/bin/java)
#   MDS_STACK_REGISTRY_JAVA_OPTS      JVM options (-Xmx384m -XX:+UseSerialGC)
#   MDS_STACK_REGISTRY_TIMEOUT        readiness wait in s                        (90)
#   MDS_STACK_STOP_TIMEOUT            grace before SIGKILL in s                  (30)
set -euo pipefail

PROG=registry.sh
SCRIPT_DIR=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd)

log() { printf '[registry] %s\n' "$*" >&2; }
die() { printf '%s: error: %s\n' "$PROG" "$*" >&2; exit 1; }
# shellcheck source=deploy/local/lib.sh
source "$SCRIPT_DIR/../lib.sh"

# ---------------------------------------------------------------- settings
HOST=127.0.0.1
if [[ -z ${HOME:-} ]]; then HOME=$(getent passwd "$(id -u)" | cut -d: -f6); fi
STACK_DIR=$(realpath -m -- "${MDS_STACK_DIR:-/tmp/mds-sink-stack}")
CACHE_DIR=$(realpath -m -- "${MDS_SINK_CACHE:-${HOME:-/root}/.cache/mds-sink}")/registry
PORT=${MDS_STACK_REGISTRY_PORT:-38081}
VERSION=${MDS_STACK_REGISTRY_VERSION:-2.6.13.Final}
TIMEOUT=${MDS_STACK_REGISTRY_TIMEOUT:-90}
STOP_TIMEOUT=${MDS_STACK_STOP_TIMEOUT:-30}
read -r -a JAVA_OPTS <<<"${MDS_STACK_REGISTRY_JAVA_OPTS:--Xmx384m -XX:+UseSerialGC}"

for _v in PORT TIMEOUT STOP_TIMEOUT; do
  [[ ${!_v} =~ ^[0-9]+$ ]] || die "$_v must be a number, got '${!_v}'"
done
MGMT_PORT=${MDS_STACK_REGISTRY_MGMT_PORT:-$((PORT + 1))}
[[ $MGMT_PORT =~ ^[0-9]+$ ]] || die "MDS_STACK_REGISTRY_MGMT_PORT must be a number, got '$MGMT_PORT'"
[[ $VERSION =~ ^[0-9]+\.[0-9]+\.[0-9]+(\.Final)?$ ]] \
  || die "MDS_STACK_REGISTRY_VERSION must look like 2.6.13.Final or 3.3.3, got '$VERSION'"
case $STACK_DIR in
  / | /tmp | /root | /home | /var | /usr | /etc | "$HOME") die "MDS_STACK_DIR=$STACK_DIR is not a dedicated directory" ;;
esac

case $VERSION in
  2.*) ARCHIVE_TYPE=zip; LAUNCHER=apicurio-registry-app-$VERSION-runner.jar; JAVA_MIN=17 ;;
  3.*) ARCHIVE_TYPE=tar.gz; LAUNCHER=quarkus-run.jar; JAVA_MIN=21 ;;
  *) die "only Apicurio Registry 2.x and 3.x are supported, got $VERSION" ;;
esac

BASE_URL=http://$HOST:$PORT/apis/ccompat/v7
HOME_DIR=$CACHE_DIR/apicurio-registry-app-$VERSION
STAMP=$HOME_DIR/.complete
RUN_DIR=$STACK_DIR/registry
PIDFILE=$RUN_DIR/registry.pid
LOGFILE=$RUN_DIR/registry.log
STACK_MARK=$STACK_DIR/.mds-sink-stack
# Tags our JVM so that it is found even when the pid file is stale or gone.
MARKER=-Dmds.stack.registry=$STACK_DIR

# ---------------------------------------------------------------- helpers
# Live processes one of whose argv entries is exactly $MARKER.
registry_pids() { pids_with_arg 'mds\.stack\.registry=' "$MARKER"; }

# HTTP status of GET URL (000 when nothing answers).
http_status() {
  if have curl; then
    curl -s -o /dev/null -m 5 -w '%{http_code}' -- "$1" 2>/dev/null || true
    return 0
  fi
  # No curl: a bare HTTP/1.0 request over bash's /dev/tcp.
  local rest=${1#http://} hostport path line
  hostport=${rest%%/*}; path=/${rest#*/}
  # shellcheck disable=SC2016
  line=$(timeout 5 bash -c 'exec 3<>"/dev/tcp/$0/$1" || exit 1
    printf "GET %s HTTP/1.0\r\nHost: %s\r\n\r\n" "$2" "$0:$1" >&3; head -n1 <&3' \
    "${hostport%:*}" "${hostport##*:}" "$path" 2>/dev/null || true)
  [[ $line =~ ^HTTP/[0-9.]+\ ([0-9]{3}) ]] && printf '%s' "${BASH_REMATCH[1]}" || printf '000'
}

ready() { [[ $(http_status "$BASE_URL/subjects") == 200 ]]; }

java_major() { # JAVA_BIN -> major version (empty if it does not run)
  local v
  v=$("$1" -XshowSettings:properties -version 2>&1 | sed -n 's/^ *java.specification.version = //p' | head -n1)
  v=${v#1.}; v=${v%%.*}
  [[ $v =~ ^[0-9]+$ ]] && printf '%s' "$v"
}

find_java() {
  local c m
  if [[ -n ${MDS_STACK_REGISTRY_JAVA:-} ]]; then
    m=$(java_major "$MDS_STACK_REGISTRY_JAVA" || true)
    [[ -n $m ]] || die "MDS_STACK_REGISTRY_JAVA=$MDS_STACK_REGISTRY_JAVA does not run"
    (( m >= JAVA_MIN )) || die "Apicurio Registry $VERSION needs Java $JAVA_MIN+, MDS_STACK_REGISTRY_JAVA is Java $m"
    JAVA=$MDS_STACK_REGISTRY_JAVA; return 0
  fi
  local cands=()
  [[ -n ${JAVA_HOME:-} ]] && cands+=("$JAVA_HOME/bin/java")
  have java && cands+=("$(command -v java)")
  for c in /usr/lib/jvm/*/bin/java; do [[ -x $c ]] && cands+=("$c"); done
  for c in "${cands[@]}"; do
    [[ -x $c ]] || continue
    m=$(java_major "$c" || true)
    if [[ -n $m ]] && (( m >= JAVA_MIN )); then JAVA=$c; return 0; fi
  done
  die "Apicurio Registry $VERSION needs Java $JAVA_MIN+ and none was found (set MDS_STACK_REGISTRY_JAVA)"
}

# Download + unpack into the cache once (atomically, under a lock).
ensure_artifact() {
  [[ -f $STAMP && -s $HOME_DIR/$LAUNCHER ]] && return 0
  mkdir -p -- "$CACHE_DIR"
  exec 8>"$CACHE_DIR/.lock"
  flock -w 900 8 || die "timed out waiting for another download into $CACHE_DIR"
  if [[ -f $STAMP && -s $HOME_DIR/$LAUNCHER ]]; then exec 8>&-; return 0; fi
  have mvn || die "mvn not found (apt-get install maven)"
  local tmp mvnlog
  tmp=$(mktemp -d -- "$CACHE_DIR/.tmp-$VERSION.XXXXXX")
  mvnlog=$tmp.mvn.log
  log "downloading io.apicurio:apicurio-registry-app:$VERSION:$ARCHIVE_TYPE:all with Maven (~150 MB, first run only)"
  if ! (cd -- "$tmp" && mvn -B -q -f "$SCRIPT_DIR/pom.xml" dependency:unpack \
        "-Dregistry.version=$VERSION" "-Dregistry.type=$ARCHIVE_TYPE" \
        "-Dregistry.outputDirectory=$tmp/out" </dev/null >"$mvnlog" 2>&1); then
    tail -n 30 -- "$mvnlog" >&2 || true
    rm -rf -- "$tmp" "$mvnlog"
    die "Maven could not fetch io.apicurio:apicurio-registry-app:$VERSION (all.$ARCHIVE_TYPE)"
  fi
  [[ -s $tmp/out/$LAUNCHER ]] || { rm -rf -- "$tmp" "$mvnlog"; die "the downloaded archive has no $LAUNCHER"; }
  rm -rf -- "$HOME_DIR" "$tmp/out/.markers" "$mvnlog"
  : >"$tmp/out/.complete"
  mv -- "$tmp/out" "$HOME_DIR"
  rm -rf -- "$tmp"
  exec 8>&-
}

prepare_run_dir() {
  if [[ -d $STACK_DIR && ! -e $STACK_MARK && -n $(ls -A -- "$STACK_DIR" 2>/dev/null) ]]; then
    die "$STACK_DIR exists, is not empty and is not a stack directory; set MDS_STACK_DIR elsewhere"
  fi
  mkdir -p -- "$RUN_DIR"
  : >"$STACK_MARK"
}

stop_registry() {
  if [[ -n $(registry_pids) ]]; then
    kill_pids TERM "$STOP_TIMEOUT" registry_pids
    log "stopped"
  fi
  rm -f -- "$PIDFILE"
}

start_registry() {
  local pids
  pids=$(registry_pids)
  if [[ -n $pids ]]; then
    if ready; then log "already running (pid ${pids//$'\n'/ })"; return 0; fi
    log "a registry process exists but does not answer; restarting it"
    stop_registry
  fi
  port_open "$PORT" && die "port $PORT on $HOST is already in use by $(port_owner "$PORT")"
  [[ $VERSION == 3.* ]] && port_open "$MGMT_PORT" \
    && die "management port $MGMT_PORT on $HOST is already in use by $(port_owner "$MGMT_PORT")"

  ensure_artifact
  find_java
  prepare_run_dir

  local args=("$JAVA" "$MARKER" "${JAVA_OPTS[@]}" -Djava.awt.headless=true
    "-Dquarkus.http.host=$HOST" "-Dquarkus.http.port=$PORT")
  if [[ $VERSION == 3.* ]]; then
    # sql storage on an in-memory H2 database is 3.x's default; say it anyway.
    args+=(-Dapicurio.storage.kind=sql -Dapicurio.storage.sql.kind=h2
      "-Dquarkus.management.host=$HOST" "-Dquarkus.management.port=$MGMT_PORT")
  fi
  args+=(-jar "$HOME_DIR/$LAUNCHER")

  log "starting Apicurio Registry $VERSION on $HOST:$PORT ($("$JAVA" -version 2>&1 | head -n1))"
  local t0=$SECONDS pid
  (cd -- "$RUN_DIR" && exec setsid "${args[@]}" </dev/null >"$LOGFILE" 2>&1 8>&- 9>&-) &
  pid=$!
  echo "$pid" >"$PIDFILE"
  local deadline=$((SECONDS + TIMEOUT))
  until ready; do
    if ! kill -0 "$pid" 2>/dev/null; then
      tail -n 40 -- "$LOGFILE" >&2 || true
      rm -f -- "$PIDFILE"
      die "the registry exited during startup (log: $LOGFILE)"
    fi
    if (( SECONDS >= deadline )); then
      tail -n 40 -- "$LOGFILE" >&2 || true
      stop_registry
      die "the registry did not answer GET $BASE_URL/subjects within ${TIMEOUT}s (log: $LOGFILE)"
    fi
    sleep 0.5
  done
  log "ready after $((SECONDS - t0))s (pid $pid, log $LOGFILE)"
}

# ================================================================== main
cmd=${1:-}
case $cmd in
  up)
    have pgrep || die "pgrep not found (apt-get install procps)"
    mkdir -p -- "$(dirname -- "$STACK_DIR")"
    exec 9>"$STACK_DIR.registry.lock"
    flock -w 300 9 || die "another $PROG is running"
    start_registry
    echo "$BASE_URL"
    ;;
  down)
    have pgrep || die "pgrep not found (apt-get install procps)"
    if [[ -d $STACK_DIR ]]; then
      exec 9>"$STACK_DIR.registry.lock"
      flock -w 300 9 || die "another $PROG is running"
    fi
    stop_registry
    ;;
  url) echo "$BASE_URL" ;;
  status)
    if [[ -n $(registry_pids) ]] && ready; then echo "running $BASE_URL"; else echo stopped; exit 1; fi
    ;;
  *) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//' >&2; exit 2 ;;
esac
