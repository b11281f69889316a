#!/bin/sh
# Mounted into /docker-entrypoint-initdb.d/ of the TimescaleDB image: runs once, on an empty data volume,
# after the image's own scripts. Passwords come from the environment (.env), never from a file in git.
set -eu
: "${MDS_PG_OWNER_PASSWORD:?}" "${MDS_PG_WRITER_PASSWORD:?}" "${MDS_PG_READER_PASSWORD:?}" "${MDS_PG_ROLES_PASSWORD:?}"
psql --no-psqlrc --username "$POSTGRES_USER" --dbname postgres \
  --set owner_password="$MDS_PG_OWNER_PASSWORD" \
  --set writer_password="$MDS_PG_WRITER_PASSWORD" \
  --set reader_password="$MDS_PG_READER_PASSWORD" \
  --set roles_password="$MDS_PG_ROLES_PASSWORD" \
  --file /mds/roles.sql
