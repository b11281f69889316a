#!/usr/bin/env bash
# Debian tools the tests use beside the stack: promtool and a Prometheus server (rules and dashboard
# checks against a live /metrics), and docker-compose 1.29 (`config` validates docker-compose.yml).
set -euo pipefail
missing=()
command -v promtool >/dev/null 2>&1 || missing+=(prometheus)
command -v docker-compose >/dev/null 2>&1 || missing+=(docker-compose)
if [ "${#missing[@]}" -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "tools: ${missing[*]} missing; install them (Debian: apt-get install ${missing[*]})" >&2
    exit 1
  fi
  echo "tools: installing ${missing[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >/dev/null
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  # The Debian package starts a Prometheus service of its own; the tests run theirs on loopback.
  if command -v systemctl >/dev/null 2>&1; then systemctl stop prometheus >/dev/null 2>&1 || true; fi
  pkill -x prometheus >/dev/null 2>&1 || true
fi
