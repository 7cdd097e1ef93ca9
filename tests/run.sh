#!/usr/bin/env bash
# Runs Sluice's whole test suite on a fresh Debian machine with Rust:
# installs what is missing (redis-server, promtool, redis-py), checks formatting and lints, then runs every
# test of the workspace, then fuzzes the decoders of untrusted input for a short while
# (tests/fuzz.sh: cargo-fuzz on nightly, 20 s per target). Each test starts its own redis-server
# on a free port; nothing needs to be running beforehand. Set SLUICE_SKIP_LINT=1 to skip fmt and
# clippy, SLUICE_SKIP_FUZZ=1 to skip the fuzz run, SLUICE_FUZZ_SECS to change its length.
set -euo pipefail
cd "$(dirname "$0")/.."

# shellcheck source=../deploy/install-redis.sh
. ./deploy/install-redis.sh
# The packaged service is not used by the tests; they start their own servers.

# promtool (Debian's prometheus package) checks a real scrape and the alert rules.
if ! command -v promtool >/dev/null 2>&1; then
  echo "== installing promtool (apt-get install prometheus)"
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null \
    || { as_root apt-get update -qq && as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null; }
fi

# openssl makes the TLS tests' certificates.
if ! command -v openssl >/dev/null 2>&1; then
  echo "== installing openssl"
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends openssl >/dev/null \
    || { as_root apt-get update -qq && as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends openssl >/dev/null; }
fi

PY="${SLUICE_PYTHON:-python3}"
if ! "$PY" -c 'import redis' 2>/dev/null; then
  echo "== installing redis-py for the Python protocol client"
  "$PY" -m pip install --quiet --disable-pip-version-check redis 2>/dev/null \
    || as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-redis >/dev/null \
    || "$PY" -m pip install --quiet --break-system-packages redis
fi

if [ "${SLUICE_SKIP_LINT:-0}" != 1 ]; then
  echo "== cargo fmt --check"
  cargo fmt --all -- --check
  echo "== cargo clippy --all-targets -- -D warnings"
  cargo clippy --workspace --all-targets --quiet -- -D warnings
fi

echo "== cargo test --workspace"
cargo test --workspace --all-targets "$@"

if [ "${SLUICE_SKIP_FUZZ:-0}" != 1 ]; then
  ./tests/fuzz.sh "${SLUICE_FUZZ_SECS:-20}"
fi
