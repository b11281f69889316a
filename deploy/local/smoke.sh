#!/usr/bin/env bash
# End-to-end check of a running local stack (deploy/local/stack.sh up):
# logs in as every PostgreSQL role, checks the privilege split, and round-trips
# messages through a fresh Kafka topic with the Kafka console tools.
# Exit 0 when every check passes. Takes ~10 s (mostly JVM starts).
set -euo pipefail
HERE=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd -P)
STACK=$HERE/stack.sh
eval "$("$STACK" env)"
PSQL=${MDS_STACK_PG_BINDIR:-/usr/lib/postgresql/15/bin}/psql
[[ -x $PSQL ]] || PSQL=psql
passed=0 failed=0
ok() { passed=$((passed + 1)); printf 'ok    %s\n' "$1"; }
bad() { failed=$((failed + 1)); printf 'FAIL  %s\n' "$1"; }
check() { local name=$1; shift; if "$@" >/dev/null 2>&1; then ok "$name"; else bad "$name"; fi; }
check_not() { local name=$1; shift; if "$@" >/dev/null 2>&1; then bad "$name"; else ok "$name"; fi; }
q() { PGCONNECT_TIMEOUT=5 "$PSQL" -X -q -v ON_ERROR_STOP=1 -Atc "$2" "$1"; }

check "stack status healthy" "$STACK" status
check "writer logs in to mds" q "$MDS_SINK_DATABASE__URL" 'select 1'
check "owner logs in to mds" q "$MDS_SINK_DATABASE__OWNER_URL" 'select 1'
check "reader logs in to mds" q "$MDS_SINK_DATABASE__READER_URL" 'select 1'
check "superuser logs in" q "$MDS_STACK_PG_SUPERUSER_URL" 'select 1'
check "mds is owned by mds_owner" test "$(q "$MDS_STACK_PG_SUPERUSER_URL" \
  "select pg_get_userbyid(datdba) from pg_database where datname='mds'")" = mds_owner
check "no app role is superuser/bypassrls" test "$(q "$MDS_STACK_PG_SUPERUSER_URL" \
  "select count(*) from pg_roles where rolname like 'mds\_%' and (rolsuper or rolbypassrls)")" = 0
check "owner can create tables" q "$MDS_SINK_DATABASE__OWNER_URL" \
  'create table smoke_t(x int); drop table smoke_t; select 1'
check_not "writer cannot create in schema public" q "$MDS_SINK_DATABASE__URL" 'create table smoke_t(x int)'
check_not "bad password is rejected" q "${MDS_SINK_DATABASE__URL/mds_writer@/wrong@}" 'select 1'

topic=smoke-$$-$RANDOM
bs=$MDS_SINK_KAFKA__BOOTSTRAP_SERVERS
check "kafka: create topic $topic" "$STACK" kafka-tool org.apache.kafka.tools.TopicCommand \
  --bootstrap-server "$bs" --create --topic "$topic" --partitions 3 --replication-factor 1
check "kafka: produce 3 messages" bash -c 'printf "k1:a\nk2:b\nk3:c\n" | "$0" kafka-tool \
  org.apache.kafka.tools.ConsoleProducer --bootstrap-server "$1" --topic "$2" \
  --reader-property parse.key=true --reader-property key.separator=:' "$STACK" "$bs" "$topic"
got=$("$STACK" kafka-tool org.apache.kafka.tools.consumer.ConsoleConsumer --bootstrap-server "$bs" \
  --topic "$topic" --from-beginning --max-messages 3 --timeout-ms 30000 --group "$topic" 2>/dev/null | sort | tr '\n' ' ' || true)
check "kafka: consume them back (got: $got)" test "$got" = "a b c "
check "kafka: delete topic" "$STACK" kafka-tool org.apache.kafka.tools.TopicCommand \
  --bootstrap-server "$bs" --delete --topic "$topic"
check_not "kafka: topic auto-creation is off" bash -c 'echo x | timeout 30 "$0" kafka-tool \
  org.apache.kafka.tools.ConsoleProducer --bootstrap-server "$1" --topic "$2-missing" \
  --producer-property max.block.ms=3000 --sync' "$STACK" "$bs" "$topic"

echo "smoke: $passed passed, $failed failed"
(( failed == 0 ))
