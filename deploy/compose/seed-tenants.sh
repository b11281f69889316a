#!/bin/sh
# One-shot job of docker-compose.yml, run in the mds-sink image: adds the sample tenants
# ({"name": "uuid", ...}) with `mds-sink admin tenants add`, which is idempotent.
set -eu
file="${1:-/samples/tenants.json}"
pairs=$(python -c 'import json, sys; [print(n, t) for n, t in json.load(open(sys.argv[1])).items()]' "$file")
echo "$pairs" | while read -r name tenant_id; do
  [ -n "$name" ] || continue
  mds-sink admin tenants add "$name" --id "$tenant_id"
done
