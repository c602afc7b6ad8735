#!/usr/bin/env bash
# A PostgreSQL database for `sweep server` (Debian's package), on this machine only.
#
#   sudo scripts/postgres.sh [DATABASE] [OWNER]      # default: sweep, the user who ran sudo
#   python -m sweep server --backend-store-uri "$(sudo scripts/postgres.sh)"
#
# Installs PostgreSQL if missing, starts Debian's cluster (with room for 4 server workers'
# connections), creates OWNER's role and DATABASE
# if they do not exist, and prints the URI the tracking server connects with: the Unix socket
# and peer authentication, so no password exists to leak. Idempotent; .ci/run calls it.
set -euo pipefail
db=${1:-sweep}
owner=${2:-${SUDO_USER:-$(id -un)}}
if ! command -v pg_ctlcluster >/dev/null 2>&1; then
  apt-get update -qq >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >&2
fi
version=$(ls /usr/lib/postgresql | sort -V | tail -1)
pg_lsclusters -h | awk '{print $1, $2}' | grep -qx "$version main" || pg_createcluster "$version" main >&2
pg_lsclusters -h | awk -v v="$version" '$1 == v && $2 == "main" {print $4}' | grep -qx online ||
  pg_ctlcluster "$version" main start >&2
port=$(pg_lsclusters -h | awk -v v="$version" '$1 == v && $2 == "main" {print $3}')
psql_admin() { runuser -u postgres -- psql -p "$port" -qtAX "$@"; }
# Each `sweep server` worker may hold 80 connections (sweep/record/server.py's POOL): room for 4 workers.
if [ "$(psql_admin -c 'SHOW max_connections')" -lt 400 ]; then
  echo "postgres.sh: raising max_connections to 400 (restarts the cluster)" >&2
  psql_admin -c "ALTER SYSTEM SET max_connections = 400" >&2
  pg_ctlcluster "$version" main restart >&2
fi
[ "$(psql_admin -c "SELECT 1 FROM pg_roles WHERE rolname = '$owner'")" = 1 ] ||
  psql_admin -c "CREATE ROLE \"$owner\" LOGIN" >&2
[ "$(psql_admin -c "SELECT 1 FROM pg_database WHERE datname = '$db'")" = 1 ] ||
  psql_admin -c "CREATE DATABASE \"$db\" OWNER \"$owner\"" >&2
echo "postgresql://$owner@/$db?host=/var/run/postgresql&port=$port"
