#!/usr/bin/env bash
# Redis 7 against Valkey 8 under Sluice, interleaved (round 1 of every server, then round 2, …),
# with medians per server and the ratio to Redis:
# - W2: 50,000 pre-queued jobs drained by one worker at concurrency 50, every job a real HTTP call
#   to an upstream that answers at once (the anchors' W2-http-instant);
# - W4: 10,000 jobs through a fleet limit of 500/s shared by 2 workers.
# Servers: redis (redis-server on PATH or SLUICE_REDIS_SERVER), valkey (8.1.8, the wheel's build),
# valkey-deb (Debian's 8.0.1 build, jemalloc like Debian's Redis), valkey-io2 (8.1.8 with
# --io-threads 2; valkey-io2-all, not run by default: every read and write handed to the I/O
# thread whatever the load). Each run starts its own server with no persistence (sluice-bench run).
#   tests/bench/servers.sh                       # 3 rounds of w2 and w4 on all four
#   ROUNDS=1 WORKLOADS=w2 SERVERS="redis valkey" tests/bench/servers.sh
# Needs the venv tests/run.sh makes (for the wheel); ~2.5 min per round on 2 cores. Run it with
# nothing else on the machine.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROUNDS=${ROUNDS:-3}
WORKLOADS=${WORKLOADS:-w2 w4}
SERVERS=${SERVERS:-redis valkey valkey-deb valkey-io2}
OUT=${OUT:-target/bench-servers}
VENV="${SLUICE_VENV:-target/py-venv}"

# shellcheck source=../../deploy/install-redis.sh
. ./deploy/install-redis.sh
# shellcheck source=../install-valkey.sh
. ./tests/install-valkey.sh
VALKEY_WHEEL="$SLUICE_VALKEY_SERVER"
VALKEY_DEB="$SLUICE_VALKEY_TLS_SERVER"

cargo build --release -q -p sluice-tests --bin sluice-bench
BENCH=target/release/sluice-bench
rm -rf "$OUT" && mkdir -p "$OUT"

for round in $(seq 1 "$ROUNDS"); do
  for w in $WORKLOADS; do
    for s in $SERVERS; do
      case "$s" in
        redis) env SLUICE_TEST_SERVER=redis SLUICE_TEST_SERVER_ARGS= "$BENCH" run "$w" --out "$OUT/$s-$w-$round.json" ;;
        valkey) env SLUICE_TEST_SERVER=valkey SLUICE_VALKEY_SERVER="$VALKEY_WHEEL" SLUICE_TEST_SERVER_ARGS= "$BENCH" run "$w" --out "$OUT/$s-$w-$round.json" ;;
        valkey-deb) env SLUICE_TEST_SERVER=valkey SLUICE_VALKEY_SERVER="$VALKEY_DEB" SLUICE_TEST_SERVER_ARGS= "$BENCH" run "$w" --out "$OUT/$s-$w-$round.json" ;;
        valkey-io2) env SLUICE_TEST_SERVER=valkey SLUICE_VALKEY_SERVER="$VALKEY_WHEEL" SLUICE_TEST_SERVER_ARGS="--io-threads 2" "$BENCH" run "$w" --out "$OUT/$s-$w-$round.json" ;;
        # Every read and write offloaded (a testing knob of Valkey's: threads engage regardless of load).
        valkey-io2-all) env SLUICE_TEST_SERVER=valkey SLUICE_VALKEY_SERVER="$VALKEY_WHEEL" SLUICE_TEST_SERVER_ARGS="--io-threads 2 --events-per-io-thread 0" "$BENCH" run "$w" --out "$OUT/$s-$w-$round.json" ;;
        *) echo "unknown server $s (redis, valkey, valkey-deb, valkey-io2, valkey-io2-all)" >&2; exit 2 ;;
      esac >/dev/null
      echo "round $round $w $s done"
    done
  done
done

python3 - "$OUT" "$SERVERS" <<'PY'
import glob, json, os, statistics, sys

out, servers = sys.argv[1], sys.argv[2].split()
runs = {}
for path in sorted(glob.glob(os.path.join(out, "*.json"))):
    server = os.path.basename(path).rsplit("-", 2)[0]
    data = json.load(open(path))
    for fig in data if isinstance(data, list) else [data]:
        runs.setdefault((fig["case"], server), []).append(fig)

metrics = [
    ("jobs_per_s", "jobs/s", "{:,.0f}"),
    ("pct_of_limit", "% of limit", "{:.1f}%"),
    ("max_starts_any_1s_pct", "busiest 1 s", "{:.1f}%"),
    ("redis_cpu_ms_per_1k", "Redis CPU ms/1k jobs", "{:.1f}"),
    ("redis_cmds_per_job", "cmds/job", "{:.2f}"),
    ("call_to_done_ms_p99", "call→done p99 ms", "{:.1f}"),
]
cases = sorted({c for c, _ in runs})
print("\n| case, metric | " + " | ".join(servers) + " |")
print("|---|" + "---|" * len(servers))
for case in cases:
    for key, label, fmt in metrics:
        cells, base = [], None
        for s in servers:
            vals = [f[key] for f in runs.get((case, s), []) if isinstance(f.get(key), (int, float))]
            if not vals:
                cells.append("—")
                continue
            med = statistics.median(vals)
            base = med if s == servers[0] else base
            cell = fmt.format(med) + " [" + fmt.format(min(vals)) + "–" + fmt.format(max(vals)) + "]"
            if s != servers[0] and base:
                cell += f" ({med / base:.2f}×)"
            cells.append(cell)
        if any(c != "—" for c in cells):
            print(f"| {case} {label} | " + " | ".join(cells) + " |")
print(f"\nmedians [min–max] of {len(next(iter(runs.values())))} runs; (×) = ÷ {servers[0]}")
PY
