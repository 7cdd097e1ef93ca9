"""The exceptions a Sluice call raises; every one is a SluiceError."""

from __future__ import annotations


class SluiceError(Exception):
    """Any refusal or failure of a Sluice call."""


class InvalidJob(SluiceError):
    """The library refused the job or an argument (SLUICE_INVALID); nothing was written."""


class TooLarge(SluiceError):
    """The job's spec is over the size limit (SLUICE_TOO_LARGE); nothing was written."""


class Denied(SluiceError):
    """This Redis user may not make the call (SLUICE_DENIED, NOPERM)."""


class LibraryMissing(SluiceError):
    """The sluice function library is not loaded in this Redis: run `sluice init` once."""


class Conflict(SluiceError):
    """The dedupe key (or id) belongs to a job enqueued with another request."""

    def __init__(self, job_id: str, state: str) -> None:
        super().__init__(
            "duplicate of %s (%s): its request differs from this one" % (job_id, state)
        )
        self.job_id = job_id
        self.state = state


class JobNotFound(SluiceError):
    """No such job in the queue (never enqueued, or expired after its retention)."""


class WaitTimeout(SluiceError, TimeoutError):
    """The job did not end within the wait's timeout."""


class NotCancellable(SluiceError):
    """Only queued, scheduled or retrying jobs can be cancelled."""

    def __init__(self, job_id: str, state: str) -> None:
        super().__init__("job %s is %s: it cannot be cancelled" % (job_id, state))
        self.state = state


def from_response_error(e: Exception) -> SluiceError:
    """Maps a redis-py ResponseError to the exception its stable code names."""
    text = str(e)
    code = text.split(" ", 1)[0]
    if code == "SLUICE_INVALID":
        return InvalidJob(text)
    if code == "SLUICE_TOO_LARGE":
        return TooLarge(text)
    if code in ("SLUICE_DENIED", "NOPERM"):
        return Denied(text)
    if "Function not found" in text:
        return LibraryMissing(
            "the sluice function library is not loaded in this Redis: run `sluice init` "
            "(or load common/src/lua/sluice.lua with FUNCTION LOAD) (%s)" % text
        )
    return SluiceError(text)
