#!/usr/bin/env bash
# The main job on a fresh Debian machine with Rust: installs redis-server if missing, builds
# Sluice, starts a local Redis, the bundled mock model API and a small worker fleet, enqueues a
# batch with a progress bar, prints what happened, then sends one job over HTTP to sluice-api and
# follows it by Server-Sent Events. Options go to sluice-demo
# (--jobs N, --workers N, --concurrency N).
set -euo pipefail
cd "$(dirname "$0")/.."

# shellcheck source=../deploy/install-redis.sh
. ./deploy/install-redis.sh
echo "== building (release)"
cargo build --release --quiet -p sluice-producer -p sluice-worker -p sluice-tests --bins
# Mark the binaries fresh: cargo relinks only what changed, and the demo would otherwise rebuild an
# unchanged binary it finds older than the newest source file.
touch target/release/sluice target/release/sluice-api target/release/sluice-worker target/release/sluice-demo
exec ./target/release/sluice-demo "$@"
