"""Checks the Python client against a real Redis and real workers (run by
tests/tests/python_client.rs).

    python check_protocol.py enqueue --url redis://127.0.0.1:PORT
        enqueues with dedupe (duplicate, conflict, conflict as an error), an empty id, refusals
        as exceptions with nothing written, a cancel; prints {"id": ...} for the Rust side;
    python check_protocol.py wait --url ... --id ID
        waits for the job's end and prints its state, HTTP status and result.
"""

import argparse
import json
import sys

import redis

from sluice_client import (
    Conflict,
    InvalidJob,
    JobNotFound,
    NotCancellable,
    Sluice,
    SluiceError,
)
from sluice_client.client import prefix


def check(cond, what):
    if not cond:
        print("FAILED: " + what, file=sys.stderr)
        sys.exit(1)


def raises(exc, f, what):
    try:
        f()
    except exc as e:
        return e
    check(False, what + ": expected " + exc.__name__)


def enqueue(client, r):
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "from python"}]}
    path = "/v1/chat/completions"
    first = client.enqueue("py", "mock", path, body, dedupe_key="py-click-1")
    check(first.created and first.state == "queued", "first enqueue creates a queued job")
    again = client.enqueue("py", "mock", path, body, dedupe_key="py-click-1")
    check(again.duplicate and again.id == first.id, "second enqueue returns the owner's id")
    check(not again.conflict, "the same request again is a plain duplicate")
    other = dict(body, messages=[{"role": "user", "content": "another request"}])
    c = client.enqueue("py", "mock", path, other, dedupe_key="py-click-1")
    check(c.duplicate and c.id == first.id and c.conflict, "another request under the key: conflict")
    e = raises(Conflict, lambda: client.enqueue("py", "mock", path, other, dedupe_key="py-click-1",
                                                on_conflict="error"), "on_conflict=error")
    check(e.job_id == first.id, "the conflict names the owner")
    check(r.xlen(prefix("py") + "stream") == 1, "exactly one stream entry")
    status = client.status("py", first.id)
    check(status.state == "queued" and status.attempts == 0, "status has state and attempts")
    check("spec" not in status.fields, "a queued job's hash holds no spec")
    [(_, entry)] = r.xrange(prefix("py") + "stream")
    check(entry.get(b"id", entry.get("id")) in (first.id, first.id.encode()), "the entry names the job")
    spec = entry.get(b"spec", entry.get("spec"))
    check(spec is not None and json.loads(spec)["upstream"] == "mock", "its stream entry holds the spec")

    # An empty id: the library makes one.
    made = client.enqueue("py", "mock", path, body, delay_ms=3_600_000)
    check(made.created and made.id.startswith("j-") and made.state == "scheduled", "generated id")
    check(client.cancel("py", made.id) == "scheduled", "cancel answers the previous state")
    raises(NotCancellable, lambda: client.cancel("py", made.id), "cancel twice")
    raises(JobNotFound, lambda: client.cancel("py", "nope"), "cancel of no job")
    raises(JobNotFound, lambda: client.wait("py", "nope", timeout_s=1), "wait for no job")

    # Refusals are exceptions with stable codes, and nothing is written.
    e = raises(InvalidJob, lambda: client.enqueue("py", "", path, body, job_id="bad-1"),
               "an empty upstream")
    check(str(e).startswith("SLUICE_INVALID"), "the code comes first: %s" % e)
    check(isinstance(e, SluiceError), "every error is a SluiceError")
    check(client.status("py", "bad-1") is None, "nothing written for a refused job")
    e = raises(InvalidJob, lambda: client.enqueue("py", "mock", path, body, delay_ms=-5,
                                                  job_id="bad-2"), "a negative delay")
    check(client.status("py", "bad-2") is None, "nothing written for refused numbers")

    # Tenant and priority: the job waits in its lane, its hash names both.
    urgent = client.enqueue("py", "mock", path, body, tenant="acme", priority="high")
    check(r.xlen(prefix("py") + "stream:high") == 1, "a high job waits in the high lane")
    lane, tenant, entry = r.hmget(prefix("py") + "job:" + urgent.id, "lane", "tenant", "entry")
    check((lane, tenant) == (b"high", b"acme"), "its hash names its lane and tenant")
    check(entry.startswith(b"high/"), "its entry is named with its lane: %r" % entry)
    raises(ValueError, lambda: client.enqueue("py", "mock", path, body, priority="urgent"),
           "an unknown priority")
    e = raises(InvalidJob, lambda: client.enqueue("py", "mock", path, body, tenant="a b",
                                                  job_id="bad-3"), "a tenant with a space")
    check("tenant" in str(e), "the refusal names the tenant: %s" % e)
    print(json.dumps({"id": first.id}))


def wait(client, job_id):
    status = client.wait("py", job_id, timeout_s=60)
    print(json.dumps({"state": status.state, "result": status.result, "status": status.status}))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("mode", choices=["enqueue", "wait"])
    ap.add_argument("--url", required=True)
    ap.add_argument("--id")
    args = ap.parse_args()
    r = redis.Redis.from_url(args.url)
    client = Sluice(r)
    if args.mode == "enqueue":
        enqueue(client, r)
    else:
        wait(client, args.id)


if __name__ == "__main__":
    main()
