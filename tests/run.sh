#!/usr/bin/env bash
# Runs Sluice's whole test suite on a fresh Debian machine with Rust:
# installs what is missing (redis-server, Valkey, promtool, a venv with the Python client), checks
# formatting and lints, then runs every test of the workspace on Redis 7 and again on Valkey 8,
# then fuzzes the decoders of untrusted input for a short while (tests/fuzz.sh: cargo-fuzz on
# nightly, 20 s per target). Each test starts its own server on a free port; nothing needs to be
# running beforehand. SLUICE_TEST_SERVER=redis or =valkey runs the tests on that server only.
# Set SLUICE_SKIP_LINT=1 to skip fmt and clippy, SLUICE_SKIP_FUZZ=1 to skip the fuzz run,
# SLUICE_FUZZ_SECS to change its length.
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

# The shipped Python client (producer/python) goes into a venv of the test run's own, never into
# the system Python; tests/tests/python_client.rs runs it with that venv's interpreter.
VENV="${SLUICE_VENV:-target/py-venv}"
if [ -z "${SLUICE_PYTHON:-}" ]; then
  if ! python3 -m venv "$VENV" >/dev/null 2>&1; then
    echo "== installing python3-venv"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null \
      || { as_root apt-get update -qq && as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null; }
    python3 -m venv "$VENV"
  fi
  # Real clients for the API's tests: the official `openai` SDK (tests/tests/api_openai.rs) and
  # `standardwebhooks` to verify webhook signatures (tests/tests/api_webhooks.rs).
  echo "== pip install producer/python openai standardwebhooks into $VENV"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check ./producer/python \
    'openai>=1.50,<4' 'standardwebhooks>=1.0,<2'
  export SLUICE_PYTHON="$PWD/$VENV/bin/python"
fi

# Which servers the suite runs on: both unless SLUICE_TEST_SERVER names one.
SERVERS="${SLUICE_TEST_SERVER:-redis valkey}"
for server in $SERVERS; do
  case "$server" in
    redis | valkey) ;;
    *) echo "SLUICE_TEST_SERVER=$server: expected redis or valkey" >&2; exit 2 ;;
  esac
done
case " $SERVERS " in
  *" valkey "*)
    # shellcheck source=install-valkey.sh
    . ./tests/install-valkey.sh ;;
esac

if [ "${SLUICE_SKIP_LINT:-0}" != 1 ]; then
  echo "== cargo fmt --check"
  cargo fmt --all -- --check
  echo "== cargo clippy --all-targets -- -D warnings"
  cargo clippy --workspace --all-targets --quiet -- -D warnings
fi

# The binaries the tests spawn (sluice-worker, sluice-api, sluice, the mock…). `cargo test` does
# not build another package's binaries, so without this the first test to spawn one builds it
# inside itself (tests/src/bins.rs): on a fresh clone acl.rs took 87-141 s instead of 0.3.
echo "== cargo build --workspace --bins"
cargo build --workspace --bins --quiet

for server in $SERVERS; do
  if [ "$server" = valkey ]; then
    echo "== cargo test --workspace on Valkey: $("$SLUICE_VALKEY_SERVER" --version)"
    echo "   (TLS test: $("$SLUICE_VALKEY_TLS_SERVER" --version))"
  else
    echo "== cargo test --workspace on Redis: $("${SLUICE_REDIS_SERVER:-redis-server}" --version)"
  fi
  SLUICE_TEST_SERVER="$server" cargo test --workspace --all-targets "$@"
done

if [ "${SLUICE_SKIP_FUZZ:-0}" != 1 ]; then
  ./tests/fuzz.sh "${SLUICE_FUZZ_SECS:-20}"
fi
