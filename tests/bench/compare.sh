#!/usr/bin/env bash
# Sluice side by side with BullMQ (and, if asked, arq and Celery) on one Redis, through the
# anchors' harness (../shared/anchors): builds sluice-bench (release), copies the anchors to a
# writable directory, runs the cases interleaved (run 1 of every system, then run 2, …) and prints
# the table with the ratio Sluice ÷ BullMQ per workload (BullMQ's best variant for W2).
#   tests/bench/compare.sh                          # 1 run of the headline cases, bullmq + sluice
#   RUNS=3 tests/bench/compare.sh                   # medians of 3
#   SYSTEMS=bullmq,arq CASES=w2 tests/bench/compare.sh
# Needs node/npm (installed by the anchors' run_all.sh with apt) and ~10 min per run on 2 cores.
set -euo pipefail
ROOT=$(cd "$(dirname "$(readlink -f "$0")")/../.." && pwd)
ANCHORS=${ANCHORS:-$ROOT/../shared/anchors}
WORK=${WORK:-/tmp/sluice-anchors}
export RUNS=${RUNS:-1}
export SYSTEMS=${SYSTEMS:-bullmq}
export CASES=${CASES:-W1-bulk,W1-single-c50,W2-drain,W2-drain-removeOnComplete,W2-http-instant,W3-http,W4-limit500,W5-retry,W5-retry-200}
export OUT=${OUT:-results-sluice}

(cd "$ROOT" && cargo build --release -p sluice-tests --bin sluice-bench)
mkdir -p "$WORK"
# Copy the harness, keeping node_modules and venvs a previous run installed.
(cd "$ANCHORS" && tar --exclude=node_modules --exclude=.venv --exclude=.venv-celery -cf - .) | (cd "$WORK" && tar -xf -)
cd "$WORK"
if [ ! -f node_modules/bullmq/package.json ]; then
  command -v npm >/dev/null || { apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y nodejs npm; }
  # Newer npm refuses `npm ci` on this lock file (optional platform packages it lists as
  # missing); `npm install` honours the same pinned versions.
  npm ci --no-audit --no-fund || npm install --no-audit --no-fund
fi
./run_all.sh --system "sluice=$ROOT/target/release/sluice-bench"
python3 "$ROOT/tests/bench/ratios.py" "$WORK/$OUT/results.json"
