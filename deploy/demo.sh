#!/usr/bin/env bash
# The main job on a fresh Debian machine with Rust: installs redis-server if missing, builds
# Sluice, starts a local Redis, the bundled mock model API and a small worker fleet, enqueues a
# batch with a progress bar, and prints what happened. Options go to sluice-demo
# (--jobs N, --workers N, --concurrency N).
set -euo pipefail
cd "$(dirname "$0")/.."

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }
if ! command -v redis-server >/dev/null 2>&1; then
  echo "== installing redis-server (apt-get)"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null
fi
echo "== building (release)"
cargo build --release --quiet -p sluice-producer -p sluice-worker -p sluice-tests --bins
exec ./target/release/sluice-demo "$@"
