#!/usr/bin/env bash
# Fuzzes the decoders of untrusted input with cargo-fuzz (libFuzzer): the job decoder, the
# stream-entry decoders and the rate-limit header parsers (tests/fuzz/src/lib.rs).
#
#   tests/fuzz.sh            # 20 s per target (what CI runs, from tests/run.sh)
#   tests/fuzz.sh 600        # 10 minutes per target, by hand
#   tests/fuzz.sh 60 job_spec
#
# Each run starts from tests/fuzz/seeds/<target> and tests/fuzz/regressions/<target> (every crash found so
# far, kept as a regression input; the stable test suite replays them too). A crash fails the
# script and leaves its input in tests/fuzz/artifacts/<target>/: fix it, then copy the input to
# tests/fuzz/regressions/<target>/ and add a unit test.
# Needs a nightly toolchain (rustup toolchain install nightly) and cargo-fuzz (installed here
# if missing).
set -euo pipefail
cd "$(dirname "$0")/fuzz"
SECS="${1:-20}"
shift || true
TARGETS=("$@")
[ ${#TARGETS[@]} -gt 0 ] || TARGETS=(job_spec stream_entry limit_headers)

if ! rustup toolchain list 2>/dev/null | grep -q '^nightly'; then
  echo "== fuzz: no nightly toolchain (rustup toolchain install nightly); skipped" >&2
  exit "${SLUICE_FUZZ_REQUIRED:-0}"
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "== installing cargo-fuzz"
  cargo install --quiet --locked cargo-fuzz
fi
# The fuzz workspace's lock file is generated, not kept: it starts from the main workspace's
# (the same versions the test suite built) and cargo adds the fuzzing crates.
[ -f Cargo.lock ] || cp ../../Cargo.lock Cargo.lock
echo "== cargo +nightly fuzz build -O"
cargo +nightly fuzz build -O 2>&1 | tail -1
for t in "${TARGETS[@]}"; do
  rm -rf "artifacts/$t"
  mkdir -p "corpus/$t"
  cp -n seeds/"$t"/* "corpus/$t/" 2>/dev/null || true
  cp -n regressions/"$t"/* "corpus/$t/" 2>/dev/null || true
  echo "== fuzz $t for ${SECS}s"
  cargo +nightly fuzz run -O "$t" "corpus/$t" -- -max_total_time="$SECS" -print_final_stats=1 2>&1 \
    | grep -E '^(Done|stat::number_of_executed_units|SUMMARY)|panicked|ERROR' || true
  if ls "artifacts/$t"/crash-* >/dev/null 2>&1; then
    echo "== fuzz $t found a crash: $(ls artifacts/"$t"/crash-*)" >&2
    exit 1
  fi
done
