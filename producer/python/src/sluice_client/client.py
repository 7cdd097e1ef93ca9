"""The client: enqueue (with dedupe and conflict reporting), status, wait and cancel.

Every state change is one call of a function of the `sluice` library in Redis (FCALL); reads
are plain HGETALL and the events stream. Written from docs/PROTOCOL.md alone.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any, Dict, List, Optional

import redis

from .errors import (
    Conflict,
    JobNotFound,
    NotCancellable,
    SluiceError,
    WaitTimeout,
    from_response_error,
)

#: States a job never leaves.
TERMINAL = frozenset({"completed", "dead", "cancelled"})

#: The consumer group the workers read through (cancel names it).
GROUP = "sluice"


def prefix(queue: str) -> str:
    """Every key of a queue starts with this; it is the one key each function call names."""
    return "sluice:{%s}:" % queue


@dataclass(frozen=True)
class Enqueued:
    """What an enqueue did: `created`, or a duplicate of job `id` (`conflict` when that job was
    enqueued with another request)."""

    id: str
    state: str
    created: bool
    conflict: bool

    @property
    def duplicate(self) -> bool:
        return not self.created


@dataclass(frozen=True)
class JobStatus:
    """A job's hash, typed. `result` is the upstream's answer body (parsed JSON) once completed;
    `status` its HTTP status."""

    id: str
    queue: str
    state: str
    upstream: str
    attempts: int
    status: Optional[int]
    result: Any
    last_error: Optional[str]
    last_status: Optional[int]
    dead_reason: Optional[str]
    fields: Dict[str, str]

    @property
    def done(self) -> bool:
        return self.state in TERMINAL


def _text(v: Any) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


def _int(v: Optional[str]) -> Optional[int]:
    try:
        return int(v) if v not in (None, "") else None
    except ValueError:
        return None


class Sluice:
    """A Sluice client on a redis-py connection (`decode_responses` either way)."""

    def __init__(self, r: "redis.Redis[Any]") -> None:
        self.r = r

    @classmethod
    def from_url(cls, url: str) -> "Sluice":
        return cls(redis.Redis.from_url(url))

    def _fcall(self, function: str, queue: str, *args: Any) -> Any:
        try:
            return self.r.execute_command("FCALL", function, 1, prefix(queue), *args)
        except redis.ResponseError as e:
            raise from_response_error(e) from e

    def enqueue(
        self,
        queue: str,
        upstream: str,
        path: str,
        body: Any,
        *,
        method: str = "POST",
        dedupe_key: str = "",
        dedupe_ttl_ms: int = 3_600_000,
        delay_ms: int = 0,
        run_at_ms: int = 0,
        job_id: str = "",
        on_conflict: str = "report",
        fallbacks: Optional[List[str]] = None,
        tenant: Optional[str] = None,
        priority: str = "normal",
    ) -> Enqueued:
        """Enqueues one job. An empty `job_id` lets the library make one. A duplicate (the
        dedupe key still held, or the id used) returns the existing job; with
        `on_conflict="error"` a duplicate whose request differs raises Conflict. `fallbacks`
        limits the job's fallback chain to these upstreams (each must be in its upstream's
        configured chain, which the workers check; `[]`: none). `tenant` names whose job it is
        (fair shares, budgets; absent: the default tenant); `priority` is its lane: "high",
        "normal" or "low"."""
        if on_conflict not in ("report", "error"):
            raise ValueError("on_conflict: 'report' or 'error'")
        if priority not in ("high", "normal", "low"):
            raise ValueError("priority: 'high', 'normal' or 'low'")
        spec: Dict[str, Any] = {
            "upstream": upstream, "request": {"method": method, "path": path, "body": body}}
        if fallbacks is not None:
            spec["fallbacks"] = list(fallbacks)
        if tenant is not None:
            spec["tenant"] = tenant
        if priority != "normal":
            spec["priority"] = priority
        reply = self._fcall(
            "sluice_enqueue", queue,
            job_id, json.dumps(spec, separators=(",", ":")), dedupe_key,
            dedupe_ttl_ms if dedupe_key else 0, delay_ms, run_at_ms,
        )
        outcome, owner, state = (_text(v) for v in reply)
        if outcome == "conflict" and on_conflict == "error":
            raise Conflict(owner, state)
        return Enqueued(id=owner, state=state, created=outcome == "created",
                        conflict=outcome == "conflict")

    def status(self, queue: str, job_id: str) -> Optional[JobStatus]:
        """The job's status, or None when there is no such job."""
        raw = self.r.hgetall(prefix(queue) + "job:" + job_id)
        if not raw:
            return None
        f = {_text(k): _text(v) for k, v in raw.items()}
        result: Any = None
        if f.get("result"):
            try:
                result = json.loads(f["result"])
            except ValueError:
                result = f["result"]
        return JobStatus(
            id=f.get("id", job_id), queue=queue, state=f.get("state", ""),
            upstream=f.get("upstream", ""), attempts=_int(f.get("attempts")) or 0,
            status=_int(f.get("status")), result=result, last_error=f.get("last_error"),
            last_status=_int(f.get("last_status")), dead_reason=f.get("dead_reason"), fields=f,
        )

    def wait(self, queue: str, job_id: str, timeout_s: float = 60.0) -> JobStatus:
        """Blocks on the queue's events stream until the job has ended; returns its status.
        Raises JobNotFound, or WaitTimeout after `timeout_s`."""
        events = prefix(queue) + "events"
        # The state and the stream's last id in one transaction: no event falls between.
        pipe = self.r.pipeline(transaction=True)
        pipe.hget(prefix(queue) + "job:" + job_id, "state")
        pipe.xrevrange(events, count=1)
        state, last = pipe.execute()
        if state is None:
            raise JobNotFound("no job %s in queue %s" % (job_id, queue))
        if _text(state) in TERMINAL:
            return self._ended(queue, job_id)
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
                        return self._ended(queue, job_id)
            # The events stream is capped: a reader far behind re-reads the state.
            s = self.status(queue, job_id)
            if s is not None and s.done:
                return s
        raise WaitTimeout("job %s not finished after %.1f s" % (job_id, timeout_s))

    def _ended(self, queue: str, job_id: str) -> JobStatus:
        s = self.status(queue, job_id)
        if s is None:
            raise JobNotFound("job %s in queue %s expired" % (job_id, queue))
        return s

    def cancel(self, queue: str, job_id: str) -> str:
        """Cancels a job that has not started (queued, scheduled or retrying); returns the state
        it was in. Needs a worker or operator Redis user."""
        reply = self._fcall("sluice_cancel", queue, GROUP, job_id)
        outcome, state = (_text(v) for v in reply)
        if outcome == "cancelled":
            return state
        if outcome == "refused":
            raise NotCancellable(job_id, state)
        if outcome == "missing":
            raise JobNotFound("no job %s in queue %s" % (job_id, queue))
        raise SluiceError("unexpected reply to sluice_cancel: %r" % (reply,))
