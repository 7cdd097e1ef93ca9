import json, subprocess, time, redis, sys, statistics, os, socket
port = 6391
d = "/tmp/luabench-data"; os.makedirs(d, exist_ok=True)
p = subprocess.Popen(["redis-server", "--port", str(port), "--save", "", "--appendonly", "no", "--dir", d], stdout=subprocess.DEVNULL)
time.sleep(0.5)
r = redis.Redis(port=port)
libs = {v: open(f"/tmp/lua_{v}.lua").read().replace("__SLUICE_LIB_VERSION__", v) for v in ["old", "new"]}
filler = ("Summarise this support ticket in one line. " * 3)[:110]
def spec(i):
    return json.dumps({"upstream": "bench", "request": {"method": "POST", "path": "/v1/chat/completions",
        "body": {"i": i, "model": "gpt-4o-mini", "messages": [{"role": "user", "content": filler}], "max_tokens": 16}}}, separators=(",", ":"))
def cpu():
    i = r.info("cpu"); return i["used_cpu_user"] + i["used_cpu_sys"]
res = {"old": [], "new": []}
n = 0
for rnd in range(8):
    for v in (["old", "new"] if rnd % 2 == 0 else ["new", "old"]):
        r.flushall(); r.function_load(libs[v], replace=True)
        c0 = cpu()
        for call in range(40):
            args = ["", "10000"]
            for j in range(500):
                n += 1
                args += ["", spec(n), "", "0", "0", "0"]
            r.fcall("sluice_enqueue_many", 1, "sluice:{bench}:", *args)
        res[v].append((cpu() - c0) / 20000 * 1e6)
p.terminate()
for v in res: print(v, " ".join(f"{x:.1f}" for x in res[v]), "median µs/job", f"{statistics.median(res[v]):.2f}")
print("new/old per round:", " ".join(f"{b/a:.2f}" for a, b in zip(res["old"], res["new"])))
