#!/usr/bin/env bash
# Local, Docker-free test stack for mds-sink: a single-node Apache Kafka (KRaft,
# combined broker+controller) and a throwaway PostgreSQL cluster, both bound to
# 127.0.0.1 only.
#
# Usage: deploy/local/stack.sh COMMAND
#   up              start both (idempotent; first run downloads Kafka with Maven),
#                   then print the env lines below on stdout
#   down            stop both and delete their data ($MDS_STACK_DIR)
#   status          one line per service; exit 0 only if both are healthy
#   env             print the `export` lines for the stack settings
#   start-kafka | stop-kafka | restart-kafka   one service, data kept
#   start-pg    | stop-pg    | restart-pg
#   kafka-tool CLASS [ARGS...]   run a Kafka CLI class on the broker's classpath,
#                   e.g. kafka-tool org.apache.kafka.tools.TopicCommand \
#                        --bootstrap-server 127.0.0.1:39092 --list
#
# Progress and errors go to stderr; only the env lines go to stdout, so
#   eval "$(deploy/local/stack.sh up)"
# starts the stack and exports its settings into the current shell.
#
# Settings (environment):
#   MDS_STACK_DIR                    data, logs, pid files   (/tmp/mds-sink-stack)
#   MDS_SINK_CACHE                   download cache          (~/.cache/mds-sink)
#   MDS_STACK_KAFKA_VERSION          Kafka release           (4.3.1)
#   MDS_STACK_KAFKA_PORT             client listener         (39092)
#   MDS_STACK_KAFKA_CONTROLLER_PORT  KRaft controller        (39093)
#   MDS_STACK_KAFKA_SASL_PORT        SASL/SCRAM listener     (39094): ACLs apply there (tenant topics);
#                                    the plaintext listener's clients are super users
#   MDS_STACK_PG_PORT                PostgreSQL              (55432)
#   MDS_STACK_PG_SUPERUSER_PASSWORD  password of "postgres", fixed at first init (postgres)
#   MDS_STACK_PG_BINDIR              PostgreSQL bin dir      (auto: /usr/lib/postgresql/15/bin)
#   MDS_STACK_KAFKA_TIMEOUT / MDS_STACK_PG_TIMEOUT  readiness waits in s (90 / 60)
set -euo pipefail
umask 022

SCRIPT_DIR=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd -P)
PROG=stack.sh

log() { printf '[stack] %s\n' "$*" >&2; }
die() { printf '%s: error: %s\n' "$PROG" "$*" >&2; exit 1; }

# ---------------------------------------------------------------- settings
HOST=127.0.0.1
STACK_DIR=$(realpath -m -- "${MDS_STACK_DIR:-/tmp/mds-sink-stack}")
if [[ -z ${HOME:-} ]]; then HOME=$(getent passwd "$(id -u)" | cut -d: -f6); fi
CACHE_DIR=$(realpath -m -- "${MDS_SINK_CACHE:-${HOME:-/root}/.cache/mds-sink}")
KAFKA_VERSION=${MDS_STACK_KAFKA_VERSION:-4.3.1}
KAFKA_PORT=${MDS_STACK_KAFKA_PORT:-39092}
KAFKA_CONTROLLER_PORT=${MDS_STACK_KAFKA_CONTROLLER_PORT:-39093}
KAFKA_SASL_PORT=${MDS_STACK_KAFKA_SASL_PORT:-39094}
PG_PORT=${MDS_STACK_PG_PORT:-55432}
PG_DEFAULT_PASSWORD=${MDS_STACK_PG_SUPERUSER_PASSWORD:-postgres}
KAFKA_TIMEOUT=${MDS_STACK_KAFKA_TIMEOUT:-90}
PG_TIMEOUT=${MDS_STACK_PG_TIMEOUT:-60}
STOP_TIMEOUT=${MDS_STACK_STOP_TIMEOUT:-30}

for _v in KAFKA_PORT KAFKA_CONTROLLER_PORT KAFKA_SASL_PORT PG_PORT KAFKA_TIMEOUT PG_TIMEOUT STOP_TIMEOUT; do
  [[ ${!_v} =~ ^[0-9]+$ ]] || die "$_v must be a number, got '${!_v}'"
done
[[ $KAFKA_VERSION =~ ^[0-9]+(\.[0-9]+)*$ ]] || die "MDS_STACK_KAFKA_VERSION must look like 4.3.1, got '$KAFKA_VERSION'"
[[ $PG_DEFAULT_PASSWORD =~ ^[A-Za-z0-9._~-]+$ ]] \
  || die "MDS_STACK_PG_SUPERUSER_PASSWORD may only use A-Z a-z 0-9 . _ ~ - (it goes into a URL)"
(( KAFKA_PORT != KAFKA_CONTROLLER_PORT && KAFKA_PORT != PG_PORT && KAFKA_CONTROLLER_PORT != PG_PORT
   && KAFKA_SASL_PORT != KAFKA_PORT && KAFKA_SASL_PORT != KAFKA_CONTROLLER_PORT && KAFKA_SASL_PORT != PG_PORT )) \
  || die "the Kafka, Kafka SASL, Kafka controller and PostgreSQL ports must differ"
case $STACK_DIR in
  / | /tmp | /root | /home | /var | /usr | /etc | "$HOME") die "MDS_STACK_DIR=$STACK_DIR is not a dedicated directory" ;;
esac

STACK_MARK=$STACK_DIR/.mds-sink-stack
LOCK_FILE=$STACK_DIR.lock

KAFKA_DIR=$STACK_DIR/kafka
KAFKA_DATA=$KAFKA_DIR/data
KAFKA_LOG=$KAFKA_DIR/kafka.log
KAFKA_PIDFILE=$KAFKA_DIR/kafka.pid
KAFKA_PROPS=$KAFKA_DIR/server.properties
KAFKA_HOME=$CACHE_DIR/kafka-$KAFKA_VERSION
KAFKA_LIBS=$KAFKA_HOME/libs
KAFKA_STAMP=$KAFKA_HOME/libs.complete
# Unique argument on the broker's command line: finds the broker even when the
# pid file is stale or gone.
KAFKA_MARKER=-Dmds.stack.kafka=$STACK_DIR

PG_DIR=$STACK_DIR/pg
PGDATA_DIR=$PG_DIR/data
PG_RUN=$PG_DIR/run
PG_LOG=$PG_DIR/postgres.log
PG_PWFILE=$PG_DIR/superuser.pw
PG_BOOT_STAMP=$PG_DIR/bootstrap.sha256
PG_BINDIR=

IS_ROOT=0
[[ $(id -u) -eq 0 ]] && IS_ROOT=1

# ---------------------------------------------------------------- helpers
# shellcheck source=deploy/local/lib.sh
source "$(dirname -- "${BASH_SOURCE[0]}")/lib.sh"

apt_install() {
  (( IS_ROOT )) || die "missing packages ($*) and not root: install them (apt-get install $*)"
  have apt-get || die "missing packages ($*) and no apt-get on this machine"
  log "installing Debian packages: $*"
  export DEBIAN_FRONTEND=noninteractive
  timeout 900 apt-get update -qq </dev/null >&2 || die "apt-get update failed"
  timeout 1200 apt-get install -y -q -o DPkg::Lock::Timeout=300 "$@" </dev/null >&2 \
    || die "apt-get install $* failed"
}

kafka_libs_complete() {
  [[ -f $KAFKA_STAMP ]] || return 1
  local first name want_pom
  want_pom=$(sha256sum "$SCRIPT_DIR/kafka/pom.xml" | cut -d' ' -f1)
  {
    read -r first || return 1
    [[ $first == "pom $want_pom" ]] || return 1
    while read -r name; do
      [[ -s $KAFKA_LIBS/$name ]] || return 1
    done
  } <"$KAFKA_STAMP"
}

find_pg_bindir() {
  local d v best=
  if [[ -n ${MDS_STACK_PG_BINDIR:-} ]]; then
    [[ -x $MDS_STACK_PG_BINDIR/initdb ]] || die "MDS_STACK_PG_BINDIR=$MDS_STACK_PG_BINDIR has no initdb"
    PG_BINDIR=$MDS_STACK_PG_BINDIR
    return 0
  fi
  if [[ -x /usr/lib/postgresql/15/bin/initdb ]]; then PG_BINDIR=/usr/lib/postgresql/15/bin; return 0; fi
  for d in /usr/lib/postgresql/*/bin; do
    [[ -x $d/initdb ]] || continue
    v=${d#/usr/lib/postgresql/}; v=${v%/bin}
    [[ $v =~ ^[0-9]+$ ]] || continue
    if [[ -z $best ]] || (( v > best )); then best=$v; fi
  done
  if [[ -n $best ]]; then PG_BINDIR=/usr/lib/postgresql/$best/bin; return 0; fi
  if have initdb && have pg_ctl; then PG_BINDIR=$(dirname -- "$(command -v initdb)"); return 0; fi
  return 1
}

# Install what is missing (sequentially, before anything runs in parallel).
ensure_prereqs() { # [kafka] [pg]
  local want_kafka=0 want_pg=0 pkgs=() a
  for a in "$@"; do [[ $a == kafka ]] && want_kafka=1; [[ $a == pg ]] && want_pg=1; done
  for a in flock timeout setsid sha256sum realpath; do
    have "$a" || die "required command '$a' not found (Debian packages util-linux, coreutils)"
  done
  have pgrep || pkgs+=(procps)
  if (( want_kafka )); then
    have java || pkgs+=(default-jre-headless)
    if ! kafka_libs_complete && ! have mvn; then pkgs+=(maven); fi
  fi
  if (( want_pg )) && ! find_pg_bindir; then
    if (( IS_ROOT )) && [[ ! -e /etc/postgresql-common/createcluster.conf ]]; then
      # We only need the binaries: do not let the package create and start its default cluster.
      mkdir -p /etc/postgresql-common
      echo 'create_main_cluster = false' >/etc/postgresql-common/createcluster.conf
    fi
    pkgs+=(postgresql)
  fi
  if (( ${#pkgs[@]} )); then apt_install "${pkgs[@]}"; fi
  if (( want_kafka )); then
    have java || die "java not found"
    local jv
    jv=$(java -XshowSettings:properties -version 2>&1 | sed -n 's/^ *java.specification.version = //p' | head -n1)
    [[ ${jv%%.*} =~ ^[0-9]+$ ]] && (( ${jv%%.*} >= 17 )) || die "Kafka $KAFKA_VERSION needs Java 17+, found '${jv:-?}'"
  fi
  if (( want_pg )); then
    find_pg_bindir || die "PostgreSQL binaries not found even after installing the postgresql package"
    if (( IS_ROOT )) && ! id -u postgres >/dev/null 2>&1; then
      log "creating system user 'postgres'"
      useradd --system --user-group --no-create-home --home-dir /var/lib/postgresql \
        --shell /bin/sh postgres || die "could not create system user postgres"
    fi
  fi
}

prepare_stack_dir() {
  if [[ -d $STACK_DIR && ! -e $STACK_MARK && -n $(ls -A -- "$STACK_DIR" 2>/dev/null) ]]; then
    die "$STACK_DIR exists, is not empty and is not a stack directory; set MDS_STACK_DIR elsewhere"
  fi
  mkdir -p -- "$STACK_DIR" "$KAFKA_DIR"
  chmod 755 -- "$STACK_DIR"   # the postgres user must be able to traverse it
  : >"$STACK_MARK"
}

# ================================================================== Kafka
kafka_pids() { pids_with_arg 'mds\.stack\.kafka=' "$KAFKA_MARKER"; }
kafka_alive() { [[ -n $(kafka_pids) ]]; }

# JVM command line for Kafka CLI classes (StorageTool, TopicCommand, console tools).
kafka_tool_cmd() {
  KAFKA_TOOL=(java -Xmx256m -XX:+UseSerialGC -XX:TieredStopAtLevel=1 -Djava.awt.headless=true
    "-Dlog4j2.configurationFile=$SCRIPT_DIR/kafka/tools-log4j2.properties"
    -cp "$KAFKA_LIBS/*")
}

kafka_tool() {
  [[ -s $KAFKA_LIBS/kafka-tools-$KAFKA_VERSION.jar ]] || die "Kafka jars are not downloaded yet (run: $0 up)"
  kafka_tool_cmd
  "${KAFKA_TOOL[@]}" "$@" 8>&- 9>&-
}

# Accepts connections AND answers a metadata request listing a live broker.
kafka_probe() {
  local rc=2
  if have python3; then
    rc=0
    python3 "$SCRIPT_DIR/kafka/probe.py" "$HOST:$KAFKA_PORT" 2 >/dev/null 2>&1 || rc=$?
  fi
  if (( rc == 2 )); then   # no python3, or a protocol the probe does not speak
    port_open "$KAFKA_PORT" || return 1
    kafka_tool_cmd
    timeout 40 "${KAFKA_TOOL[@]}" org.apache.kafka.tools.TopicCommand \
      --bootstrap-server "$HOST:$KAFKA_PORT" --list </dev/null >/dev/null 2>&1 8>&- 9>&-
    return
  fi
  return "$rc"
}

kafka_healthy() { kafka_alive && kafka_probe; }

kafka_fetch() {
  kafka_libs_complete && return 0
  mkdir -p -- "$CACHE_DIR"
  (
    flock -w 1200 8 || die "timed out waiting for another download of Kafka $KAFKA_VERSION"
    kafka_libs_complete && exit 0
    local tmp
    tmp=$(mktemp -d "$KAFKA_HOME.tmp.XXXXXX")
    log "kafka: downloading Apache Kafka $KAFKA_VERSION jars with Maven into $KAFKA_HOME (first run only)"
    if ! timeout 1200 mvn -B -q -f "$SCRIPT_DIR/kafka/pom.xml" -Dkafka.version="$KAFKA_VERSION" \
        dependency:copy-dependencies -DincludeScope=runtime -DoutputDirectory="$tmp/libs" \
        </dev/null >"$tmp/mvn.log" 2>&1; then
      tail -n 25 "$tmp/mvn.log" >&2 || true
      rm -rf -- "$tmp"
      die "kafka: Maven could not resolve org.apache.kafka:kafka_2.13:$KAFKA_VERSION (see above)"
    fi
    [[ -s $tmp/libs/kafka_2.13-$KAFKA_VERSION.jar && -s $tmp/libs/kafka-tools-$KAFKA_VERSION.jar ]] \
      || { rm -rf -- "$tmp"; die "kafka: Maven finished but the Kafka jars are missing"; }
    {
      echo "pom $(sha256sum "$SCRIPT_DIR/kafka/pom.xml" | cut -d' ' -f1)"
      (cd "$tmp/libs" && ls -1 -- *.jar)
    } >"$tmp/libs.complete.new"
    if [[ -e $KAFKA_HOME ]]; then mv -- "$KAFKA_HOME" "$tmp.old"; fi
    mv -- "$tmp" "$KAFKA_HOME"
    rm -rf -- "$tmp.old"
    mv -- "$KAFKA_HOME/libs.complete.new" "$KAFKA_STAMP"   # written last: marks the cache complete
    log "kafka: cached $(ls -1 "$KAFKA_LIBS" | wc -l) jars ($(du -sh "$KAFKA_LIBS" | cut -f1))"
  ) 8>"$KAFKA_HOME.lock"
}

kafka_write_config() {
  mkdir -p -- "$KAFKA_DIR/logs"
  cp -- "$SCRIPT_DIR/kafka/log4j2.properties" "$KAFKA_DIR/log4j2.properties"
  cat >"$KAFKA_PROPS" <<EOF
# Generated by deploy/local/stack.sh on every start; edits are overwritten.
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@$HOST:$KAFKA_CONTROLLER_PORT
listeners=PLAINTEXT://$HOST:$KAFKA_PORT,SASL_PLAINTEXT://$HOST:$KAFKA_SASL_PORT,CONTROLLER://$HOST:$KAFKA_CONTROLLER_PORT
advertised.listeners=PLAINTEXT://$HOST:$KAFKA_PORT,SASL_PLAINTEXT://$HOST:$KAFKA_SASL_PORT
inter.broker.listener.name=PLAINTEXT
controller.listener.names=CONTROLLER
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT,SASL_PLAINTEXT:SASL_PLAINTEXT
# Kafka's own authorization: SCRAM users (created with the admin API) on the SASL listener are held to
# their ACLs. Every client of the plaintext and controller listeners is ANONYMOUS, a super user: the
# tests and the demo use those as before. Nothing listens beyond 127.0.0.1.
sasl.enabled.mechanisms=SCRAM-SHA-256
listener.name.sasl_plaintext.scram-sha-256.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;
authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer
super.users=User:ANONYMOUS
allow.everyone.if.no.acl.found=false
log.dirs=$KAFKA_DATA
num.partitions=3
default.replication.factor=1
min.insync.replicas=1
auto.create.topics.enable=false
delete.topic.enable=true
offsets.topic.replication.factor=1
offsets.topic.num.partitions=10
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
transaction.state.log.num.partitions=10
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
# Consumer-protocol groups (KIP-848) may ask for sessions as short as the classic protocol allows, as the
# sink's kafka.session_timeout_ms does (the fault tests stall members past a 6 s session).
group.consumer.min.session.timeout.ms=6000
group.consumer.min.heartbeat.interval.ms=1000
num.network.threads=2
num.io.threads=4
num.recovery.threads.per.data.dir=1
log.retention.hours=24
log.segment.bytes=67108864
EOF
}

kafka_format() {
  [[ -f $KAFKA_DATA/meta.properties ]] && return 0
  rm -rf -- "$KAFKA_DATA"
  mkdir -p -- "$KAFKA_DATA"
  local cid=
  if have python3; then
    cid=$(python3 -c 'import base64, uuid
while True:
    s = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
    if not s.startswith("-"):
        print(s); break')
  else
    cid=$(kafka_tool kafka.tools.StorageTool random-uuid)
  fi
  log "kafka: formatting KRaft storage (cluster id $cid)"
  local out
  if ! out=$(kafka_tool kafka.tools.StorageTool format -t "$cid" -c "$KAFKA_PROPS" 2>&1); then
    printf '%s\n' "$out" >&2
    rm -rf -- "$KAFKA_DATA"
    die "kafka: storage format failed"
  fi
}

kafka_fail() {
  log "kafka: last lines of $KAFKA_LOG:"
  tail -n 40 -- "$KAFKA_LOG" >&2 2>/dev/null || true
  die "kafka: $*"
}

kafka_wait_ready() {
  local deadline=$((SECONDS + KAFKA_TIMEOUT))
  while :; do
    kafka_alive || kafka_fail "broker process exited during startup"
    kafka_probe && return 0
    (( SECONDS < deadline )) || kafka_fail "broker not ready after ${KAFKA_TIMEOUT}s (still running; try: $0 restart-kafka)"
    sleep 0.5
  done
}

kafka_start() {
  if kafka_alive; then
    if kafka_probe; then log "kafka: already running on $HOST:$KAFKA_PORT"; return 0; fi
    log "kafka: process is up but not answering yet, waiting"
    kafka_wait_ready
    log "kafka: ready on $HOST:$KAFKA_PORT"
    return 0
  fi
  kafka_fetch   # only while no broker runs from the cache it may replace
  local p
  for p in "$KAFKA_PORT" "$KAFKA_CONTROLLER_PORT" "$KAFKA_SASL_PORT"; do
    port_open "$p" && die "kafka: port $HOST:$p is already in use by $(port_owner "$p") (set MDS_STACK_KAFKA_PORT / MDS_STACK_KAFKA_CONTROLLER_PORT / MDS_STACK_KAFKA_SASL_PORT)"
  done
  kafka_write_config
  kafka_format
  log "kafka: starting broker $KAFKA_VERSION on $HOST:$KAFKA_PORT (log: $KAFKA_LOG)"
  {
    echo
    echo "===== $(date -u '+%Y-%m-%dT%H:%M:%SZ') stack.sh: starting Kafka $KAFKA_VERSION ====="
  } >>"$KAFKA_LOG"
  # setsid+nohup: the broker outlives this shell and its process group (CI steps,
  # test runners). fd 8/9 (locks) are closed so the broker does not hold them.
  setsid nohup java -Xms256m -Xmx512m -server \
    -XX:+UseG1GC -XX:MaxGCPauseMillis=20 -XX:InitiatingHeapOccupancyPercent=35 \
    -XX:+ExplicitGCInvokesConcurrent -XX:+ExitOnOutOfMemoryError -Djava.awt.headless=true \
    "-Dlog4j2.configurationFile=$KAFKA_DIR/log4j2.properties" "-Dkafka.logs.dir=$KAFKA_DIR/logs" \
    "$KAFKA_MARKER" -cp "$KAFKA_LIBS/*" kafka.Kafka "$KAFKA_PROPS" \
    </dev/null >>"$KAFKA_LOG" 2>&1 8>&- 9>&- &
  echo "$!" >"$KAFKA_PIDFILE"
  local t0=$SECONDS
  kafka_wait_ready
  local pid
  pid=$(kafka_pids | head -n1)
  [[ -n $pid ]] && echo "$pid" >"$KAFKA_PIDFILE"
  log "kafka: ready on $HOST:$KAFKA_PORT in $((SECONDS - t0))s (pid $pid)"
}

kafka_stop() { # [fast]
  rm -f -- "$KAFKA_PIDFILE"
  if ! kafka_alive; then log "kafka: not running"; return 0; fi
  local grace=$STOP_TIMEOUT
  [[ ${1:-} == fast ]] && grace=5
  log "kafka: stopping broker"
  kill_pids TERM "$grace" kafka_pids
  log "kafka: stopped"
}

kafka_status() {
  local pids
  pids=$(kafka_pids | tr '\n' ' ')
  if [[ -z $pids ]]; then echo "kafka: stopped (data: $KAFKA_DATA)"; return 1; fi
  if kafka_probe; then
    echo "kafka: running, healthy, $HOST:$KAFKA_PORT, pid ${pids% }, version $KAFKA_VERSION"
  else
    echo "kafka: running, NOT answering on $HOST:$KAFKA_PORT, pid ${pids% }"
    return 1
  fi
}

# ================================================================ Postgres
as_pg() {
  if (( IS_ROOT )); then runuser -u postgres -- "$@"; else "$@"; fi
}

pg_pids() { pids_with_arg 'postgres' "$PGDATA_DIR"; }
pg_alive() { [[ -n $(pg_pids) ]]; }

pg_superuser_password() {
  if [[ -s $PG_PWFILE ]]; then head -n1 -- "$PG_PWFILE"; else echo "$PG_DEFAULT_PASSWORD"; fi
}

pg_psql() { # as superuser over TCP
  PGPASSWORD=$(pg_superuser_password) PGCONNECT_TIMEOUT=5 \
    "$PG_BINDIR/psql" -X -q -h "$HOST" -p "$PG_PORT" -U postgres "$@"
}

# The server on our port is up, accepts the superuser and is *this* cluster.
pg_healthy() {
  pg_alive || return 1
  [[ -n $PG_BINDIR ]] || find_pg_bindir || return 1
  local dd
  dd=$(pg_psql -d postgres -Atc 'SHOW data_directory' 2>/dev/null) || return 1
  [[ $(realpath -m -- "$dd") == "$PGDATA_DIR" ]]
}

pg_fail() {
  log "postgres: last lines of $PG_LOG:"
  tail -n 30 -- "$PG_LOG" >&2 2>/dev/null || true
  die "postgres: $*"
}

pg_prepare_dirs() {
  mkdir -p -- "$PG_DIR" "$PG_RUN"
  chmod 700 -- "$PG_DIR"
  if (( IS_ROOT )); then
    chown -R postgres:postgres -- "$PG_DIR" 2>/dev/null || chown -R postgres -- "$PG_DIR"
    runuser -u postgres -- test -w "$PG_DIR" \
      || die "postgres: user 'postgres' cannot write $PG_DIR (a parent directory is not traversable); put MDS_STACK_DIR under /tmp"
  fi
  (( ${#PG_RUN} + 20 < 107 )) || die "postgres: socket path under $PG_RUN is too long; use a shorter MDS_STACK_DIR"
}

pg_initdb() {
  local ver
  ver=$("$PG_BINDIR/initdb" --version | grep -Eo '[0-9]+' | head -n1)
  if [[ -f $PGDATA_DIR/PG_VERSION ]]; then
    [[ $(<"$PGDATA_DIR/PG_VERSION") == "$ver" ]] \
      || die "postgres: $PGDATA_DIR is a PostgreSQL $(<"$PGDATA_DIR/PG_VERSION") cluster but the binaries are $ver; run: $0 down"
    return 0
  fi
  rm -rf -- "$PGDATA_DIR" "$PG_BOOT_STAMP"
  (umask 077; echo "$PG_DEFAULT_PASSWORD" >"$PG_PWFILE")
  (( IS_ROOT )) && chown postgres -- "$PG_PWFILE"
  log "postgres: initdb ($PG_BINDIR, PostgreSQL $ver) in $PGDATA_DIR"
  local out
  if ! out=$(as_pg "$PG_BINDIR/initdb" -D "$PGDATA_DIR" -U postgres --pwfile="$PG_PWFILE" \
      --auth=scram-sha-256 -E UTF8 --no-locale --no-sync </dev/null 2>&1); then
    printf '%s\n' "$out" >&2
    rm -rf -- "$PGDATA_DIR"
    die "postgres: initdb failed"
  fi
  as_pg tee "$PGDATA_DIR/pg_hba.conf" >/dev/null <<'EOF'
# Generated by deploy/local/stack.sh: password (SCRAM) auth only.
# TYPE  DATABASE  USER  ADDRESS        METHOD
local   all       all                  scram-sha-256
host    all       all   127.0.0.1/32   scram-sha-256
EOF
  as_pg tee -a "$PGDATA_DIR/postgresql.conf" >/dev/null <<'EOF'

# Local test stack settings (regenerated by deploy/local/stack.sh on every start).
include_if_exists = 'mds-stack.conf'
EOF
}

pg_write_config() {
  as_pg tee "$PGDATA_DIR/mds-stack.conf" >/dev/null <<EOF
# Generated by deploy/local/stack.sh on every start; edits are overwritten.
listen_addresses = '$HOST'
port = $PG_PORT
unix_socket_directories = '$PG_RUN'
max_connections = 200
shared_buffers = 256MB
fsync = off
synchronous_commit = off
full_page_writes = off
password_encryption = 'scram-sha-256'
timezone = 'UTC'
log_timezone = 'UTC'
log_line_prefix = '%m [%p] %q%u@%d '
logging_collector = off
EOF
}

pg_bootstrap() {
  local want
  want=$(sha256sum "$SCRIPT_DIR/pg/bootstrap.sql" | cut -d' ' -f1)
  [[ -f $PG_BOOT_STAMP && $(<"$PG_BOOT_STAMP") == "$want" ]] && return 0
  log "postgres: creating roles mds_owner/mds_writer/mds_reader and database mds"
  pg_psql -d postgres -v ON_ERROR_STOP=1 -f "$SCRIPT_DIR/pg/bootstrap.sql" </dev/null >&2 \
    || die "postgres: bootstrap SQL failed"
  echo "$want" >"$PG_BOOT_STAMP"
}

pg_start() {
  find_pg_bindir || die "postgres: PostgreSQL binaries not found (run: $0 up)"
  if pg_healthy; then
    pg_bootstrap
    log "postgres: already running on $HOST:$PG_PORT"
    return 0
  fi
  if ! pg_alive; then
    port_open "$PG_PORT" && die "postgres: port $HOST:$PG_PORT is already in use by $(port_owner "$PG_PORT") (set MDS_STACK_PG_PORT)"
    pg_prepare_dirs
    pg_initdb
    pg_write_config
    # A postmaster that was SIGKILLed leaves postmaster.pid behind. When nothing
    # reaps it (containers whose pid 1 does not), its pid stays a zombie and
    # pg_ctl/postgres take it for a live server. No live postmaster of this
    # cluster exists at this point (pg_alive above), so the file is stale.
    if [[ -f $PGDATA_DIR/postmaster.pid ]]; then
      log "postgres: removing stale postmaster.pid (pid $(head -n1 "$PGDATA_DIR/postmaster.pid"))"
      rm -f -- "$PGDATA_DIR/postmaster.pid"
    fi
    local t0=$SECONDS
    log "postgres: starting on $HOST:$PG_PORT (log: $PG_LOG)"
    # pg_ctl detaches the postmaster (setsid); -w waits until it accepts connections.
    as_pg "$PG_BINDIR/pg_ctl" -D "$PGDATA_DIR" -l "$PG_LOG" -w -t "$PG_TIMEOUT" -s start \
      </dev/null >&2 8>&- 9>&- || pg_fail "pg_ctl start failed"
    log "postgres: started in $((SECONDS - t0))s"
  fi
  local deadline=$((SECONDS + PG_TIMEOUT))
  until "$PG_BINDIR/pg_isready" -q -h "$HOST" -p "$PG_PORT" -t 2; do
    pg_alive || pg_fail "server exited during startup"
    (( SECONDS < deadline )) || pg_fail "server not accepting connections after ${PG_TIMEOUT}s"
    sleep 0.3
  done
  pg_healthy || pg_fail "server on $HOST:$PG_PORT does not accept the stack superuser or is not $PGDATA_DIR"
  pg_bootstrap
  log "postgres: ready on $HOST:$PG_PORT"
}

pg_stop() { # [immediate]
  if ! pg_alive; then log "postgres: not running"; return 0; fi
  local mode=fast
  [[ ${1:-} == immediate ]] && mode=immediate
  log "postgres: stopping ($mode)"
  if [[ -n $PG_BINDIR ]] || find_pg_bindir; then
    if as_pg "$PG_BINDIR/pg_ctl" -D "$PGDATA_DIR" -m "$mode" -w -t "$STOP_TIMEOUT" -s stop </dev/null >&2 2>/dev/null; then
      wait_gone 10 pg_pids || true
    fi
  fi
  # pg_ctl failed (e.g. postmaster.pid gone): signal the postmaster directly.
  # SIGQUIT = immediate shutdown, which also ends the backends.
  pg_alive && kill_pids QUIT 10 pg_pids
  log "postgres: stopped"
}

pg_status() {
  local pids
  pids=$(pg_pids | tr '\n' ' ')
  if [[ -z $pids ]]; then echo "postgres: stopped (data: $PGDATA_DIR)"; return 1; fi
  if pg_healthy; then
    echo "postgres: running, healthy, $HOST:$PG_PORT, pid ${pids% }, $("$PG_BINDIR/postgres" --version)"
  else
    echo "postgres: running, NOT answering on $HOST:$PG_PORT, pid ${pids% }"
    return 1
  fi
}

# ================================================================ commands
print_env() {
  printf 'export %s=%q\n' \
    MDS_SINK_KAFKA__BOOTSTRAP_SERVERS "$HOST:$KAFKA_PORT" \
    MDS_SINK_DATABASE__URL "postgresql://mds_writer:mds_writer@$HOST:$PG_PORT/mds" \
    MDS_SINK_DATABASE__OWNER_URL "postgresql://mds_owner:mds_owner@$HOST:$PG_PORT/mds" \
    MDS_SINK_DATABASE__READER_URL "postgresql://mds_reader:mds_reader@$HOST:$PG_PORT/mds" \
    MDS_SINK_DATABASE__ROLES_URL "postgresql://mds_roles:mds_roles@$HOST:$PG_PORT/postgres" \
    MDS_STACK_PG_SUPERUSER_URL "postgresql://postgres:$(pg_superuser_password)@$HOST:$PG_PORT/postgres" \
    MDS_STACK_KAFKA_SASL_BOOTSTRAP "$HOST:$KAFKA_SASL_PORT" \
    MDS_STACK_KAFKA_LIBS "$KAFKA_LIBS"
}

take_lock() {
  mkdir -p -- "$(dirname -- "$LOCK_FILE")"
  exec 9>"$LOCK_FILE"
  flock -w 1500 9 || die "another stack.sh is still running on $STACK_DIR (lock $LOCK_FILE)"
}

write_env_file() {
  print_env >"$STACK_DIR/env.tmp" && mv -f -- "$STACK_DIR/env.tmp" "$STACK_DIR/env"
}

cmd_up() {
  local t0=$SECONDS krc=0 prc=0 kjob pjob
  ensure_prereqs kafka pg
  prepare_stack_dir
  # Kafka (download/format/JVM start) and PostgreSQL (initdb/start) in parallel.
  kafka_start & kjob=$!
  pg_start & pjob=$!
  trap 'kill $kjob $pjob 2>/dev/null || true' INT TERM
  wait "$kjob" || krc=$?
  wait "$pjob" || prc=$?
  trap - INT TERM
  (( krc == 0 && prc == 0 )) || die "stack did not come up (kafka rc=$krc, postgres rc=$prc)"
  write_env_file
  log "stack up in $((SECONDS - t0))s (dir $STACK_DIR; env in $STACK_DIR/env)"
  print_env
}

cmd_down() {
  local t0=$SECONDS
  kafka_stop fast
  pg_stop immediate
  if [[ -d $STACK_DIR ]]; then
    if [[ -e $STACK_MARK || -z $(ls -A -- "$STACK_DIR" 2>/dev/null) ]]; then
      rm -rf -- "$STACK_DIR"
    else
      die "$STACK_DIR does not look like a stack directory (no $STACK_MARK); not deleting it"
    fi
  fi
  log "stack down in $((SECONDS - t0))s (removed $STACK_DIR)"
}

cmd_status() {
  local rc=0
  find_pg_bindir || true
  kafka_status || rc=1
  pg_status || rc=1
  return "$rc"
}

usage() {
  sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//' >&2
}

main() {
  local cmd=${1:-}
  [[ $# -gt 0 ]] && shift
  case $cmd in
    up)            take_lock; cmd_up ;;
    down)          take_lock; cmd_down ;;
    status)        cmd_status ;;
    env)           print_env ;;
    start-kafka)   take_lock; ensure_prereqs kafka; prepare_stack_dir; kafka_start; write_env_file ;;
    stop-kafka)    take_lock; kafka_stop ;;
    restart-kafka) take_lock; ensure_prereqs kafka; prepare_stack_dir; kafka_stop; kafka_start; write_env_file ;;
    start-pg)      take_lock; ensure_prereqs pg; prepare_stack_dir; pg_start; write_env_file ;;
    stop-pg)       take_lock; find_pg_bindir || true; pg_stop ;;
    restart-pg)    take_lock; ensure_prereqs pg; prepare_stack_dir; pg_stop; pg_start; write_env_file ;;
    kafka-tool)    [[ $# -gt 0 ]] || die "usage: $0 kafka-tool CLASS [ARGS...]"; kafka_tool "$@" ;;
    -h | --help | help) usage ;;
    "")            usage; exit 2 ;;
    *)             usage; die "unknown command '$cmd'" ;;
  esac
}

main "$@"
