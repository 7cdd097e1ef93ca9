#!/usr/bin/env bash
# Installs redis-server with apt-get when it is missing (as root, or through sudo).
# Sourced by deploy/demo.sh and tests/run.sh.
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }
if ! command -v redis-server >/dev/null 2>&1; then
  echo "== installing redis-server (apt-get)"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null
fi
