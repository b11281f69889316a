#!/bin/sh
# One-shot job of docker-compose.yml, run in the Redpanda image (rpk): creates the sink's topics and
# their dead-letter topics, and registers each topic's Avro value schema (subject <topic>-value,
# the subject `mds-sink produce` uses). Safe to run again: existing topics and schemas are kept.
#   MDS_TOPICS      "topic:schema ..." pairs; schema names a file of /schemas (bar -> bar.avsc)
#   MDS_PARTITIONS  partitions of each data topic: the most sink replicas that can share a topic's load
set -eu
: "${MDS_TOPICS:?}" "${MDS_PARTITIONS:?}"
brokers="${MDS_BROKERS:-redpanda:9092}"
registry="${MDS_REGISTRY:-redpanda:8081}"
rpk() { command rpk -X brokers="$brokers" -X registry.hosts="$registry" "$@"; }
# Dead letters are kept 14 days, like the topics the sink creates itself (kafka_io.DLQ_RETENTION_MS).
dlq_retention_ms=$((14 * 24 * 3600 * 1000))

ensure_topic() {  # name partitions [rpk topic create flags...]
  name=$1 partitions=$2
  shift 2
  if rpk topic list | awk 'NR > 1 { print $1 }' | grep -qxF "$name"; then
    echo "topic $name exists"
  else
    rpk topic create "$name" --partitions "$partitions" --replicas 1 "$@"
  fi
}

for pair in $MDS_TOPICS; do
  topic=${pair%%:*} schema=${pair#*:}
  ensure_topic "$topic" "$MDS_PARTITIONS"
  ensure_topic "$topic.dlq" 1 --topic-config retention.ms="$dlq_retention_ms" --topic-config cleanup.policy=delete
  rpk registry schema create "$topic-value" --schema "/schemas/$schema.avsc"
done
echo "topics and schemas ready"
