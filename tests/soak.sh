#!/usr/bin/env bash
# Soak (by hand, not in CI): the mock's whole fault menu at once under a steady load, with Redis
# link resets, for 10 minutes by default; prints RSS and open descriptors every 10 s and a
# summary (jobs, faults, lost, completed twice, duplicate calls, RSS and fds first/last/max).
#   tests/soak.sh                      # 10 minutes, 200 jobs/s, 3 workers
#   tests/soak.sh --minutes 30 --rate 500 --workers 4
set -euo pipefail
cd "$(dirname "$0")/.."
. ./deploy/install-redis.sh
cargo build --release --quiet -p sluice-worker -p sluice-tests --bin sluice-worker --bin sluice-soak
exec target/release/sluice-soak "$@"
