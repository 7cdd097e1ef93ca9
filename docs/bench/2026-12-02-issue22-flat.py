import json, sys, subprocess, time, os
sys.path.insert(0, '/tmp/sluice-anchors')
os.chdir('/tmp/sluice-anchors')
import harness
harness.RUN_TIMEOUT_S = 900
name = harness.add_system('sluice=/tmp/bench-ack/sluice-bench')
port = 6391
rs = subprocess.Popen(['redis-server', '--port', str(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no'], stdout=subprocess.DEVNULL)
time.sleep(0.5)
try:
    for n in [int(x) for x in sys.argv[1:]]:
        case = (f'W2-http-instant-{n}', 'w3', ['sluice'], {'n': n, 'concurrency': 50, 'kind': 'http', 'mock_delay_ms': 0})
        res = harness.run_case(case, 'sluice', port, f'/tmp/flat/{n}')
        keep = {k: res.get(k) for k in ('case', 'n', 'completed', 'jobs_per_s', 'redis_cmds_per_job', 'redis_cpu_ms_per_1k', 'redis_bytes_per_queued_job', 'worker_cpu_ms_per_1k', 'worker_peak_rss_mib', 'error')}
        keep['prequeue_s'] = res.get('prequeue', {}).get('seconds')
        print(json.dumps(keep), flush=True)
finally:
    rs.terminate()
