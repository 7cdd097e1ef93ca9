"""A minimal Sluice client in Python, written only from docs/PROTOCOL.md (wire protocol v1).

It shows that a service in another language can enqueue with dedupe, read a job's state and
wait for its result with nothing but redis-py: no Rust, no Sluice library.
"""

import json
import time
import uuid

TERMINAL = {"completed", "dead", "cancelled"}


def prefix(queue):
    """Every key of a queue starts with this; it is the one key each function call names."""
    return "sluice:{%s}:" % queue


class SluiceClient:
    def __init__(self, redis_client):
        self.r = redis_client

    def enqueue(self, queue, upstream, path, body, dedupe_key="", dedupe_ttl_ms=3_600_000,
                delay_ms=0, job_id=None):
        """Enqueues one job; returns (created, id, state, conflict). A duplicate returns the
        owner's id; `conflict` is true when the owner was enqueued with another request."""
        spec = {
            "upstream": upstream,
            "request": {"method": "POST", "path": path, "body": body},
        }
        job_id = job_id or str(uuid.uuid4())
        reply = self.r.execute_command(
            "FCALL", "sluice_enqueue", 1, prefix(queue),
            job_id, json.dumps(spec, separators=(",", ":")), dedupe_key,
            dedupe_ttl_ms if dedupe_key else 0, delay_ms, 0,
        )
        outcome, owner, state = (_text(v) for v in reply)
        return outcome == "created", owner, state, outcome == "conflict"

    def status(self, queue, job_id):
        """The job hash as a dict of strings, or None when there is no such job."""
        fields = self.r.hgetall(prefix(queue) + "job:" + job_id)
        if not fields:
            return None
        return {_text(k): _text(v) for k, v in fields.items()}

    def wait(self, queue, job_id, timeout_s=30.0):
        """Blocks on the events stream until the job is terminal; returns its status."""
        events = prefix(queue) + "events"
        # Read the state and the stream's last id atomically, so no event falls between.
        pipe = self.r.pipeline(transaction=True)
        pipe.hget(prefix(queue) + "job:" + job_id, "state")
        pipe.xrevrange(events, count=1)
        state, last = pipe.execute()
        if state is None:
            return None
        if _text(state) in TERMINAL:
            return self.status(queue, job_id)
        last_id = last[0][0] if last else "0-0"
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            block_ms = max(1, int(min(5.0, deadline - time.monotonic()) * 1000))
            reply = self.r.xread({events: last_id}, count=1000, block=block_ms)
            for _stream, entries in reply or []:
                for entry_id, fields in entries:
                    last_id = entry_id
                    f = {_text(k): _text(v) for k, v in fields.items()}
                    # One job ("id") or several that reached the state in one call ("ids").
                    named = f.get("id") == job_id or job_id in f.get("ids", "").split(" ")
                    if named and f.get("state") in TERMINAL:
                        return self.status(queue, job_id)
        raise TimeoutError("job %s not finished after %.1f s" % (job_id, timeout_s))


def _text(v):
    return v.decode() if isinstance(v, bytes) else str(v)
