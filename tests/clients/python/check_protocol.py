"""Checks the wire protocol from Python against a real Redis (run by tests/tests/python_client.rs).

    python3 check_protocol.py enqueue --url redis://127.0.0.1:PORT
        enqueues with dedupe twice, checks the stream, the hash and the refusal of bad input,
        and prints {"id": ...} for the Rust side to run the job;
    python3 check_protocol.py wait --url ... --id ID
        waits on the events stream for the job's end and prints its status.
"""

import argparse
import json
import sys

import redis

from sluice_client import SluiceClient, prefix


def check(cond, what):
    if not cond:
        print("FAILED: " + what, file=sys.stderr)
        sys.exit(1)


def enqueue(client, r):
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "from python"}]}
    created, job_id, state, _ = client.enqueue("py", "mock", "/v1/chat/completions", body,
                                               dedupe_key="py-click-1")
    check(created and state == "queued", "first enqueue creates a queued job")
    again, owner, state2, conflict = client.enqueue("py", "mock", "/v1/chat/completions", body,
                                                    dedupe_key="py-click-1")
    check(not again and owner == job_id, "second enqueue returns the owner's id")
    check(not conflict, "the same request again is a plain duplicate")
    other = dict(body, messages=[{"role": "user", "content": "another request"}])
    again, owner, _, conflict = client.enqueue("py", "mock", "/v1/chat/completions", other,
                                               dedupe_key="py-click-1")
    check(not again and owner == job_id and conflict, "another request under the key: conflict")
    check(r.xlen(prefix("py") + "stream") == 1, "exactly one stream entry")
    status = client.status("py", job_id)
    check(status["state"] == "queued" and status["attempts"] == "0", "hash has state and attempts")
    check(json.loads(status["spec"])["upstream"] == "mock", "hash holds the spec")
    try:
        r.execute_command("FCALL", "sluice_enqueue", 1, prefix("py"), "bad-1", "not json", "", 0, 0, 0)
        check(False, "malformed spec refused")
    except redis.ResponseError as e:
        check(str(e).startswith("SLUICE_INVALID"), "malformed spec refused with SLUICE_INVALID: %s" % e)
    check(client.status("py", "bad-1") is None, "nothing written for a refused job")
    # Numbers are whole numbers in range, and the key must be a queue's (docs/PROTOCOL.md, Limits).
    spec = json.dumps({"upstream": "mock", "request": {"method": "POST", "path": "/v1/x", "body": {}}})
    for key, delay in [(prefix("py"), "nan"), (prefix("py"), "1e300"), ("sluice:{u:mock}:", "0")]:
        try:
            r.execute_command("FCALL", "sluice_enqueue", 1, key, "bad-2", spec, "", 0, delay, 0)
            check(False, "enqueue with key %s and delay %s refused" % (key, delay))
        except redis.ResponseError as e:
            check(str(e).startswith("SLUICE_INVALID"), "refused with SLUICE_INVALID: %s" % e)
    check(client.status("py", "bad-2") is None, "nothing written for refused numbers or keys")
    print(json.dumps({"id": job_id}))


def wait(client, job_id):
    status = client.wait("py", job_id, timeout_s=30)
    check(status is not None, "job exists")
    print(json.dumps({"state": status["state"], "result": status.get("result"),
                      "status": status.get("status")}))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("mode", choices=["enqueue", "wait"])
    ap.add_argument("--url", required=True)
    ap.add_argument("--id")
    args = ap.parse_args()
    r = redis.Redis.from_url(args.url)
    client = SluiceClient(r)
    if args.mode == "enqueue":
        enqueue(client, r)
    else:
        wait(client, args.id)


if __name__ == "__main__":
    main()
