#!/usr/bin/env python3
"""Ratio table Sluice ÷ BullMQ from an anchors results.json (one row per workload, medians over
runs; for W2 BullMQ's best variant, default or removeOnComplete). Usage: ratios.py results.json"""
import json
import statistics
import sys


def med(runs, case, system, key):
    xs = [r[key] for r in runs if r.get('case') == case and r.get('system') == system
          and r.get(key) is not None]
    return statistics.median(xs) if xs else None


def main(path):
    runs = json.load(open(path))
    for r in runs:
        if r.get('case') == 'W3-http' and r.get('jobs_per_s') is not None:
            r['pct_of_little'] = 100.0 * r['jobs_per_s'] / 4000.0
    rows = [
        # (label, sluice case, bullmq cases (best), metric, higher is better)
        ('W1 enqueue 50k, bulk: jobs/s', 'W1-bulk', ['W1-bulk'], 'jobs_per_s', True),
        ('W1 bulk: Redis CPU ms/1k', 'W1-bulk', ['W1-bulk'], 'redis_cpu_ms_per_1k', False),
        ('W1 one at a time x50: jobs/s', 'W1-single-c50', ['W1-single-c50'], 'jobs_per_s', True),
        ('W1 one at a time: Redis CPU ms/1k', 'W1-single-c50', ['W1-single-c50'], 'redis_cpu_ms_per_1k', False),
        ('W2 drain 50k: jobs/s', 'W2-drain', ['W2-drain', 'W2-drain-removeOnComplete'], 'jobs_per_s', True),
        ('W2: Redis CPU ms/1k', 'W2-drain', ['W2-drain', 'W2-drain-removeOnComplete'], 'redis_cpu_ms_per_1k', False),
        ('W2: Redis cmds/job', 'W2-drain', ['W2-drain', 'W2-drain-removeOnComplete'], 'redis_cmds_per_job', False),
        ('W2: worker CPU ms/1k', 'W2-drain', ['W2-drain', 'W2-drain-removeOnComplete'], 'worker_cpu_ms_per_1k', False),
        ('W2-http-instant (a real HTTP call per job): jobs/s', 'W2-http-instant', ['W2-http-instant'], 'jobs_per_s', True),
        ('W2-http-instant: Redis CPU ms/1k', 'W2-http-instant', ['W2-http-instant'], 'redis_cpu_ms_per_1k', False),
        ('W2-http-instant: Redis cmds/job', 'W2-http-instant', ['W2-http-instant'], 'redis_cmds_per_job', False),
        ('W2-http-instant: worker CPU ms/1k', 'W2-http-instant', ['W2-http-instant'], 'worker_cpu_ms_per_1k', False),
        ('W2-http-instant: Redis bytes per waiting job', 'W2-http-instant', ['W2-http-instant'], 'redis_bytes_per_queued_job', False),
        ('W3: Redis bytes per waiting job', 'W3-http', ['W3-http'], 'redis_bytes_per_queued_job', False),
        ('W3 HTTP 50 ms x200: jobs/s', 'W3-http', ['W3-http'], 'jobs_per_s', True),
        ('W3: % of the Little limit (4,000/s)', 'W3-http', ['W3-http'], 'pct_of_little', True),
        ('W3: pick→done p99 ms', 'W3-http', ['W3-http'], 'lat_pick_to_done_ms_p99', False),
        ('W3: worker peak RSS MiB', 'W3-http', ['W3-http'], 'worker_peak_rss_mib', False),
        ('W4 500/s limit: % of limit', 'W4-limit500', ['W4-limit500'], 'pct_of_limit', True),
        ('W4: busiest sliding 1 s, % of limit', 'W4-limit500', ['W4-limit500'], 'max_starts_any_1s_pct', False),
        ('W4: Redis CPU ms/1k', 'W4-limit500', ['W4-limit500'], 'redis_cpu_ms_per_1k', False),
        ('W4: Redis cmds/job', 'W4-limit500', ['W4-limit500'], 'redis_cmds_per_job', False),
        ('W5 retry 2,000: lateness p50 ms', 'W5-retry', ['W5-retry'], 'retry_lateness_ms_p50', False),
        ('W5 retry 2,000: lateness p99 ms', 'W5-retry', ['W5-retry'], 'retry_lateness_ms_p99', False),
        ('W5 retry 200: lateness p99 ms', 'W5-retry-200', ['W5-retry-200'], 'retry_lateness_ms_p99', False),
    ]
    print('| workload, metric | sluice | bullmq (best) | sluice ÷ bullmq |')
    print('|---|---|---|---|')
    for label, case, bcases, key, higher in rows:
        s = med(runs, case, 'sluice', key)
        bs = [b for b in (med(runs, c, 'bullmq', key) for c in bcases) if b is not None]
        b = (max(bs) if higher else min(bs)) if bs else None
        ratio = f'{s / b:.2f}' if s is not None and b else '—'
        fmt = lambda v: '—' if v is None else (f'{v:,.0f}' if abs(v) >= 100 else f'{v:.1f}')
        print(f'| {label} | {fmt(s)} | {fmt(b)} | {ratio} |')
    # "In every run": the W5 lateness of each run, not only the median.
    for case in ('W5-retry', 'W5-retry-200'):
        for system in ('sluice', 'bullmq'):
            xs = [r.get('retry_lateness_ms_p99') for r in runs
                  if r.get('case') == case and r.get('system') == system]
            if xs:
                print(f'{case} {system} lateness p99 ms, each run: {xs}')


if __name__ == '__main__':
    main(sys.argv[1])
